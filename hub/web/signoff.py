"""A commissioner agrees a plan (`POST /app/plans/{id}/agree`): the sign-off request on their
worklist (hub.plans.followups, owned by their organisation or addressed to their role) leads to
the plan, where they record their agreement in the role their organisation's kind answers for
(an NHS commissioner for NHS funding, a council's for local authority funding, education's for
education). The agreement is written on the plan through the API like any edit (If-Match, audit,
Provenance naming who agreed); the store makes the plan active once everyone has agreed, and
the plan worker closes the sign-off request."""
from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from hub.plans import agreement
from hub.plans.model import AGREEMENT, AGREEMENT_ROLE_SYSTEM, CS, concept
from hub.web.access import Workspace, posted, signed_in
from hub.web.errors import PageError

router = APIRouter(include_in_schema=False)

METHOD_SYSTEM = CS + "ipc-agreement-method"


def signing_role(workspace: Workspace, plan: dict[str, Any]) -> str | None:
    """The agreement role this person may record on the plan, if they are a commissioner of a
    kind that funds plans and their role has no live agreement on it yet."""
    user = workspace.user
    role = agreement.ROLE_FOR_FUNDER.get(user.partner_class)
    if user.role != "commissioner" or role is None or role in agreement.agreed_roles(plan):
        return None
    return role


async def _organisation(workspace: Workspace) -> str:
    """The Organization the record holds for this person's organisation (by its identifier),
    else the person themselves: who the agreement names."""
    user = workspace.user
    found = await workspace.record.search("Organization", [
        ("identifier", f"{user.organisation_system}|{user.organisation}"), ("_count", "1")])
    return f"Organization/{found.matches[0]['id']}" if found.matches else user.practitioner


@router.post("/app/plans/{plan_id}/agree")
async def agree(plan_id: str, request: Request) -> Response:
    workspace = await signed_in(request)
    fields = await posted(request, workspace)
    record = workspace.record
    plan = await record.read("CarePlan", plan_id)
    if plan is None:
        raise PageError(404, "Plan not found", "There is no such plan, or it is not shared with your organisation.")
    role = signing_role(workspace, plan)
    if role is None:
        raise PageError(403, "Not yours to agree", "Only a commissioner whose funding the plan needs, and who has "
                        "not agreed it yet, can agree it here.")
    if plan["meta"]["versionId"] != fields.get("version"):
        raise PageError(409, "The plan changed", "Someone saved the plan since you opened it. Open it again, read "
                        "what changed, and agree again if you still do.")
    agreed = copy.deepcopy(plan)
    agreed.setdefault("extension", []).append({"url": AGREEMENT, "extension": [
        {"url": "agreedBy", "valueReference": {"reference": await _organisation(workspace),
                                               "display": workspace.user.display_name}},
        {"url": "role", "valueCodeableConcept": concept(AGREEMENT_ROLE_SYSTEM, role)},
        {"url": "date", "valueDateTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")},
        {"url": "method", "valueCodeableConcept": concept(METHOD_SYSTEM, "electronic", "Electronically")}]})
    written = await record.update(agreed, plan["meta"]["versionId"])
    if written.status != "ok":
        raise PageError(409 if written.status == "conflict" else 422, "Your agreement was not saved",
                        f"{written.message}. Open the plan again and agree again.")
    return RedirectResponse(f"/app/plans/{plan_id}?saved=agreement", status_code=303)
