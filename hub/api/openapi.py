"""The OpenAPI document, made precise enough to drive clients and schema-based fuzzing.

FastAPI only sees what handlers declare, and the FHIR handlers read their query, headers and
bodies from the request (cheaper on the hot path), so the generated document says "a string"
for every resource type and nothing about search parameters or bodies. This adds what the
routes really take: the supported resource types, the FHIR id grammar, the common and result
search parameters, FHIR JSON bodies, and the bearer token, without touching the handlers."""
from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hub.fhir.resources import SUPPORTED_TYPES

_ID = {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"}
_PATH_SCHEMAS = {
    "res_type": {"type": "string", "enum": sorted(SUPPORTED_TYPES)},
    "res_id": _ID, "patient_id": _ID,
    "event_id": {"type": "string", "format": "uuid"},
    "version_id": {"type": "string", "pattern": "^[0-9]{1,9}$"},
}
_PAGE = [("_count", {"type": "integer", "minimum": 0, "maximum": 1000}),
         ("_offset", {"type": "integer", "minimum": 0})]
_SEARCH = _PAGE + [
    ("_id", {"type": "string"}), ("_lastUpdated", {"type": "string"}), ("_sort", {"type": "string"}),
    ("_summary", {"type": "string", "enum": ["true", "text", "data", "count", "false"]}),
    ("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}),
    ("_include", {"type": "string"}), ("_revinclude", {"type": "string"}), ("_elements", {"type": "string"}),
    ("identifier", {"type": "string"}), ("name", {"type": "string"}), ("family", {"type": "string"}),
    ("birthdate", {"type": "string"}), ("subject", {"type": "string"}), ("patient", {"type": "string"}),
    ("status", {"type": "string"}), ("category", {"type": "string"}), ("date", {"type": "string"}),
    ("code", {"type": "string"}),
]
_HISTORY = _PAGE + [("_since", {"type": "string", "format": "date-time"})]
_AUDIT = _PAGE + [
    ("patient", {"type": "string"}), ("entity", {"type": "string"}), ("agent", {"type": "string"}),
    ("date", {"type": "string"}), ("outcome", {"type": "string", "enum": ["0", "4", "8", "12"]}),
    ("action", {"type": "string", "enum": ["C", "R", "U", "D", "E"]}), ("subtype", {"type": "string"}),
    ("_summary", {"type": "string", "enum": ["count", "false"]}),
]
_RESOURCE_BODY = {"required": True, "content": {
    "application/fhir+json": {"schema": {
        "type": "object", "required": ["resourceType"], "additionalProperties": True,
        "properties": {"resourceType": {"type": "string"}, "id": _ID}}},
}}
_FORM_BODY = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "additionalProperties": {"type": "string"},
    "properties": {name: schema for name, schema in _SEARCH}}}}}
# Reachable without a token (hub.api.security.OPEN_PATHS).
_OPEN = ("/fhir/metadata", "/healthz", "/readyz", "/metrics", "/auth/", "/.well-known/")


def describe(app: FastAPI) -> None:
    """Serve the precise document at the app's openapi_url (built once, on first request)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def refine(document: dict[str, Any]) -> dict[str, Any]:
    """The generated document with what the FHIR routes really take."""
    doc = copy.deepcopy(document)
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from /auth/token (client credentials, SMART v2 system scopes)"}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            _refine_operation(path, method, operation)
    return doc


def _refine_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path" and parameter["name"] in _PATH_SCHEMAS:
            parameter["schema"] = _PATH_SCHEMAS[parameter["name"]]
    if not path.startswith(_OPEN):
        operation["security"] = [{"bearer": []}]
    query = _query_parameters(path, method)
    if query:
        declared = {p["name"] for p in operation.get("parameters", [])}
        operation.setdefault("parameters", []).extend(
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in query if name not in declared)
    body = _body(path, method)
    if body and "requestBody" not in operation:
        operation["requestBody"] = body


def _query_parameters(path: str, method: str) -> list[tuple[str, dict]]:
    if method != "get":
        return []
    if path == "/fhir/AuditEvent":
        return _AUDIT
    if path.endswith("/_history"):
        return _HISTORY
    if path == "/fhir/{res_type}":
        return _SEARCH
    return []


def _body(path: str, method: str) -> dict[str, Any] | None:
    if path.endswith("/_search") and method == "post":
        return _FORM_BODY
    if path.startswith("/fhir") and path != "/fhir/AuditEvent/_search" and (
            (method == "post" and not path.endswith("/_search")) or method == "put"):
        return _RESOURCE_BODY
    return None
