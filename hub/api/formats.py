"""FHIR on the wire: which format a client asked for (`_format`, then Accept), reading a
request body in JSON or XML within the size limit, and writing resources back in the chosen
format. Resources are held as JSON text from the store to the socket; XML is produced only
when asked for."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.xml import json_to_xml, xml_to_json

JSON = "application/fhir+json"
XML = "application/fhir+xml"
_JSON_TYPE = f"{JSON}; charset=utf-8"
_XML_TYPE = f"{XML}; charset=utf-8"

_FORMAT_ALIASES = {
    "json": JSON, "application/json": JSON, "application/fhir+json": JSON, "text/json": JSON,
    "application/json+fhir": JSON,
    "xml": XML, "application/xml": XML, "application/fhir+xml": XML, "text/xml": XML,
    "application/xml+fhir": XML,
}


def response_format(request: Request) -> str:
    """JSON unless the client asks for XML by `_format` or by Accept."""
    wanted = request.query_params.get("_format")
    if wanted:
        chosen = _FORMAT_ALIASES.get(wanted.split(";")[0].strip().lower())
        if chosen is None:
            raise FhirError("not-supported", f"_format '{wanted}' is not supported; use json or xml",
                            status=406)
        return chosen
    accept = request.headers.get("accept")
    if not accept:
        return JSON
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[media]
        if media in ("*/*", "application/*", "application/fhir"):
            return JSON
    if "html" in accept:
        return JSON  # a browser asking for a page still gets readable JSON
    raise FhirError("not-supported", f"cannot answer in any of: {accept[:120]}; "
                    "use application/fhir+json or application/fhir+xml", status=406)


async def read_body(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's resource as a JSON object; 413, 415 or 400 with a reason otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    kind = _FORMAT_ALIASES.get(media)
    if kind is None:
        raise FhirError("not-supported", f"Content-Type '{media or 'none'}' is not supported; "
                        "send application/fhir+json or application/fhir+xml", status=415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    if not body:
        raise FhirError("structure", "the request has no body")
    if kind == XML:
        return xml_to_json(bytes(body))
    try:
        parsed = jsontext.parse(bytes(body))
    except ValueError as exc:  # JSONDecodeError, not UTF-8, a property twice, NaN, too deep
        raise FhirError("structure", f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise FhirError("structure", "the body must be a JSON object holding one FHIR resource")
    return parsed


def _too_large(max_bytes: int) -> FhirError:
    return FhirError("too-long", f"the request body is larger than {max_bytes} bytes", status=413)


def wants_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty") == "true"


def render_text(json_text: str | bytes, fmt: str, *, pretty: bool = False) -> bytes:
    """Serialise a resource held as JSON text in the chosen format (as-is for plain JSON)."""
    if fmt == XML:
        return json_to_xml(jsontext.loads(json_text))
    if pretty:
        return jsontext.dumps(jsontext.loads(json_text), pretty=True)
    return json_text.encode() if isinstance(json_text, str) else json_text


def render(resource: dict[str, Any], fmt: str, *, pretty: bool = False) -> bytes:
    if fmt == XML:
        return json_to_xml(resource)
    return jsontext.dumps(resource, pretty=pretty)


def fhir_response(
    body: bytes,
    fmt: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(body, status_code=status, headers=headers,
                    media_type=_XML_TYPE if fmt == XML else _JSON_TYPE)
