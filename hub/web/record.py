"""The pages' one way into the shared record: the hub's own FHIR API and OAuth endpoints, called
in-process (httpx over ASGI, no socket) with the signed-in person's access token.

Every read and write a page makes is therefore the API's: the same scopes, consent filter
and audit trail (an AuditEvent naming the person and the workspace app, Provenance on writes),
so a page can show nothing the API would hide and do nothing the API would not record. The
calls are few and named after what the pages need (`search`, `read`, `update`, `history`,
`audit_trail`, …): if the API's core is moved behind another interface, only this module changes.

The person's network address is passed through, so the audit trail records where they were."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request

from hub.web.pages import person_name

_FHIR_JSON = "application/fhir+json"
# httpx logs every request's URL at INFO; the pages' URLs carry search values such as NHS numbers,
# which must never reach a log.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(max(logging.getLogger(_name).level, logging.WARNING))


@dataclass
class Found:
    """A searchset read back: the matches and what `_include` brought, by `Type/id`."""
    matches: list[dict[str, Any]] = field(default_factory=list)
    included: dict[str, dict[str, Any]] = field(default_factory=dict)
    total: int | None = None


@dataclass
class Written:
    """The answer to a write: `ok` (the stored resource), `conflict` (someone else saved first:
    the version now current), or `refused` (the API's OperationOutcome text)."""
    status: str
    resource: dict[str, Any] | None = None
    message: str | None = None


def _transport(request: Request) -> httpx.ASGITransport:
    client = request.client
    return httpx.ASGITransport(app=request.app, client=(client.host if client else "127.0.0.1", 0))


def _base(request: Request) -> str:
    return request.app.state.settings.public_base_url()


async def oauth_post(request: Request, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a form to the hub's own OAuth endpoint (token, revoke), as any app would."""
    async with httpx.AsyncClient(transport=_transport(request), base_url=_base(request)) as client:
        answer = await client.post(path, data=form)
    try:
        body = answer.json() if answer.content else {}
    except ValueError:
        body = {}
    return answer.status_code, body


class Record:
    """The FHIR API as one signed-in person's app sees it."""

    def __init__(self, request: Request, access_token: str) -> None:
        self._request = request
        self._headers = {"Authorization": f"Bearer {access_token}", "Accept": _FHIR_JSON}

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(transport=_transport(self._request), base_url=f"{_base(self._request)}/fhir",
                                     timeout=60, headers=self._headers) as client:
            return await client.request(method, path, **kwargs)

    async def search(self, res_type: str, params: list[tuple[str, str]]) -> Found:
        answer = await self._call("GET", f"/{res_type}", params=params)
        if answer.status_code != 200:
            return Found()
        return _found(answer.json())

    async def read(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        answer = await self._call("GET", f"/{res_type}/{res_id}")
        return answer.json() if answer.status_code == 200 else None

    async def names(self, references: set[str]) -> dict[str, str]:
        """Display names for references to people and organisations this person may see."""
        by_type: dict[str, list[str]] = {}
        for reference in references:
            res_type, _, res_id = reference.partition("/")
            if res_type in ("Practitioner", "Organization", "Patient", "RelatedPerson") and res_id:
                by_type.setdefault(res_type, []).append(res_id)
        names: dict[str, str] = {}
        for res_type, ids in by_type.items():
            found = await self.search(res_type, [("_id", ",".join(sorted(ids))), ("_count", "100")])
            for resource in found.matches:
                name = resource.get("name")
                names[f"{res_type}/{resource['id']}"] = name if isinstance(name, str) else person_name(resource)
        return names

    async def read_version(self, res_type: str, res_id: str, version: str) -> dict[str, Any] | None:
        answer = await self._call("GET", f"/{res_type}/{res_id}/_history/{version}")
        return answer.json() if answer.status_code == 200 else None

    async def everything(self, patient_id: str) -> Found:
        """The person's record as far as this person may see it ($everything)."""
        answer = await self._call("GET", f"/Patient/{patient_id}/$everything", params={"_count": "1000"})
        return _found(answer.json()) if answer.status_code == 200 else Found()

    async def budget_position(self, statement_id: str) -> dict[str, Any] | None:
        """Where a budget statement's money stands ($budget-position: each account's spend from
        its lines); None if this person may not see the accounts or their lines."""
        answer = await self._call("GET", f"/CarePlan/{statement_id}/$budget-position")
        return answer.json() if answer.status_code == 200 else None

    async def cohort_report(self, group_id: str) -> dict[str, Any] | None:
        """A cohort's summary figures (`$cohort-report`, a MeasureReport); None if this person
        may not see the cohort."""
        answer = await self._call("GET", f"/Group/{group_id}/$cohort-report")
        return answer.json() if answer.status_code == 200 else None

    async def history(self, res_type: str, res_id: str) -> list[dict[str, Any]]:
        answer = await self._call("GET", f"/{res_type}/{res_id}/_history")
        if answer.status_code != 200:
            return []
        return [e["resource"] for e in answer.json().get("entry") or [] if "resource" in e]

    async def audit_trail(self, reference: str) -> list[dict[str, Any]]:
        """Who changed one resource (the last ten changes) and who last looked at it (the last
        ten reads and searches), newest first; empty if this person's role may not see the trail."""
        found: dict[str, dict[str, Any]] = {}
        for params in ({"entity": reference, "action": "C,U,D", "_count": "10"}, {"entity": reference, "_count": "10"}):
            answer = await self._call("GET", "/AuditEvent", params=params)
            if answer.status_code != 200:
                return []
            for entry in answer.json().get("entry") or []:
                if "resource" in entry:
                    found[entry["resource"]["id"]] = entry["resource"]
        return sorted(found.values(), key=lambda event: event.get("recorded", ""), reverse=True)

    async def update(self, resource: dict[str, Any], version: str | None) -> Written:
        headers = {"Content-Type": _FHIR_JSON}
        if version:
            headers["If-Match"] = f'W/"{version}"'
        answer = await self._call("PUT", f"/{resource['resourceType']}/{resource['id']}", json=resource,
                                        headers=headers)
        return await self._written(answer, resource)

    async def create(self, resource: dict[str, Any]) -> Written:
        answer = await self._call("POST", f"/{resource['resourceType']}", json=resource,
                                         headers={"Content-Type": _FHIR_JSON})
        return await self._written(answer, resource)

    async def transaction(self, entries: list[tuple[dict[str, Any], str]]) -> Written:
        """Update several resources at once, each only if still at the given version: all or none."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}",
                                               "ifMatch": f'W/"{version}"'}} for resource, version in entries]}
        answer = await self._call("POST", "", json=bundle, headers={"Content-Type": _FHIR_JSON})
        if answer.status_code == 200:
            return Written("ok", answer.json())
        if answer.status_code == 412:
            return Written("conflict", None, "someone else changed one of these records first")
        return Written("refused", None, _outcome_text(answer))

    async def _written(self, answer: httpx.Response, sent: dict[str, Any]) -> Written:
        if answer.status_code in (200, 201):
            return Written("ok", answer.json())
        if answer.status_code == 412:
            current = await self.read(sent["resourceType"], sent["id"])
            return Written("conflict", current, "someone else saved a newer version first")
        return Written("refused", None, _outcome_text(answer))


def _found(bundle: dict[str, Any]) -> Found:
    found = Found(total=bundle.get("total"))
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource")
        if not resource or resource.get("resourceType") == "OperationOutcome":
            continue
        if (entry.get("search") or {}).get("mode") == "include":
            found.included[f"{resource['resourceType']}/{resource['id']}"] = resource
        else:
            found.matches.append(resource)
    return found


def _outcome_text(answer: httpx.Response) -> str:
    try:
        issues = answer.json().get("issue") or []
    except ValueError:
        return f"the record refused the change (HTTP {answer.status_code})"
    text = "; ".join(i.get("diagnostics", "") for i in issues if i.get("diagnostics"))
    return text or f"the record refused the change (HTTP {answer.status_code})"
