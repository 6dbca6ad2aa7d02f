"""The HTTPS endpoint: `POST /handover` with one handover document as UTF-8 JSON.

What a sender gets, in the order it is checked: 401 without a valid bearer token, 403 for a
client that is not a defence partner, 415 for anything but `application/json` in UTF-8, 413
over the size limit (read no further), 400 for bytes that are not UTF-8 JSON, 422 listing every
schema violation (each issue's `location` and `expression` are the JSON pointer of the value at
fault), 503 when Kafka did not take it (send again), and 202 with the envelope id once Kafka has
acknowledged the envelope. Errors are FHIR OperationOutcomes. A small Starlette app: the
connector runs apart from the FHIR API and needs none of its machinery."""
from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.mod.intake import Intake
from hub.auth.tokens import TokenVerifier, bearer_token
from hub.fhir.errors import FhirError

PARTNER_CLASS = "defence"
FHIR_JSON = "application/fhir+json"


def create_app(intake: Intake, verifier: TokenVerifier, max_body_bytes: int) -> Starlette:
    async def handover(request: Request) -> Response:
        try:
            authorise(verifier, request.headers.get("authorization"))
            require_json(request.headers.get("content-type"))
            body = await read_body(request, max_body_bytes)
            envelope_id = await intake.accept(body)
        except FhirError as error:
            return refusal(error)
        return JSONResponse({"envelopeId": envelope_id}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/handover", handover, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])])


def authorise(verifier: TokenVerifier, authorization: str | None) -> None:
    principal = verifier.verify(bearer_token(authorization))
    if principal.partner_class != PARTNER_CLASS:
        raise FhirError("forbidden", "only Ministry of Defence clients (partner class 'defence') may send "
                        "handover documents", status=403)


def require_json(content_type: str | None) -> None:
    media, _, params = (content_type or "").partition(";")
    charset = ""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8", "utf8"):
        raise FhirError("not-supported", f"send the handover as application/json in UTF-8, not "
                        f"{content_type or 'no content type'}", status=415)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> FhirError:
    return FhirError("too-long", f"the handover is larger than {limit} bytes", status=413)


def refusal(error: FhirError) -> Response:
    outcome: dict[str, Any] = error.outcome()
    for issue in outcome["issue"]:
        if issue.get("expression"):
            issue["location"] = list(issue["expression"])
    return Response(json.dumps(outcome), status_code=error.status, media_type=FHIR_JSON, headers=error.headers)
