"""GET /fhir/metadata: the CapabilityStatement, built from what the code actually does (the
supported types, each type's supported search parameters, the interactions the routes serve)
so that it cannot claim more than the hub does."""
from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from fastapi import APIRouter, Request
from starlette.responses import Response

from hub.subscriptions.requests import PROFILE as SUBSCRIPTION_PROFILE
from hub.subscriptions.topics import TOPICS
from hub.api.formats import fhir_response, render, response_format, wants_pretty
from hub.fhir.identifiers import CANONICAL_BASE
from hub.fhir.resources import SUPPORTED_TYPES
from hub.fhir.validation import Guide, profiles_for
from hub.interactions.operations import OPERATIONS
from hub.search.definitions import is_supported, params_for
from hub.store.audit import SUPPORTED as AUDIT_PARAMS

router = APIRouter(prefix="/fhir")

_TYPE_INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "history-type",
                      "create", "search-type"]
_RESULT_PARAMS = [
    ("_count", "number", "Page size (the server caps it)"),
    ("_offset", "number", "Where a page starts; the server writes it into next/previous links"),
    ("_sort", "string", "Sort by _id, _lastUpdated or a search parameter; '-' for descending"),
    ("_include", "string", "Also return resources this result references"),
    ("_revinclude", "string", "Also return resources that reference this result"),
    ("_summary", "token", "true, text, data (each entry tagged SUBSETTED), count (only the total) or false"),
    ("_elements", "string", "Only these top-level elements (and the mandatory ones), tagged SUBSETTED"),
    ("_total", "token", "none, estimate or accurate"),
]

# The IPC implementation guide the hub enforces (its profiles are in supportedProfile).
IMPLEMENTATION_GUIDE = f"{CANONICAL_BASE}/ImplementationGuide/ipc-hub"


def implementation_guide(guide: Guide) -> dict:
    """The guide as an ImplementationGuide resource, so the CapabilityStatement's canonical
    resolves on this server (written at start-up with the guide's other resources)."""
    resources = [{"reference": {"reference": f"{r['resourceType']}/{r['id']}"}, "exampleBoolean": False}
                 for r in guide.conformance_resources()]
    return {
        "resourceType": "ImplementationGuide", "id": "ipc-hub", "url": IMPLEMENTATION_GUIDE,
        "version": "0.1.0", "name": "IPCHub", "title": "IPC Hub implementation guide", "status": "active",
        "publisher": "IPC Hub", "packageId": "ipc-hub.example.fhir", "license": "Apache-2.0",
        "fhirVersion": ["4.0.1"], "definition": {"resource": resources},
    }


def _operations(level: str, res_type: str | None = None) -> list[dict]:
    return [op.capability(res_type) for op in OPERATIONS.values() if op.offered(level, res_type)]


@lru_cache(maxsize=1)
def capability_statement(base_url: str, token_endpoint: str | None = None,
                         revocation_endpoint: str | None = None, authorization_endpoint: str | None = None,
                         *, update_create: bool = False) -> dict:
    resources = [_resource_entry(t, update_create) for t in sorted(SUPPORTED_TYPES)]
    return {
        "resourceType": "CapabilityStatement",
        "id": "ipc-hub",
        "url": f"{base_url}/metadata",
        "name": "IPCHub",
        "title": "IPC Hub FHIR R4 server",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "publisher": "IPC Hub",
        "kind": "instance",
        "software": {"name": "IPC Hub", "version": "0.1.0"},
        "implementation": {"description": "IPC Hub shared record", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json", "xml", "application/fhir+json", "application/fhir+xml"],
        "implementationGuide": [IMPLEMENTATION_GUIDE],
        "rest": [{
            "mode": "server",
            **_security(token_endpoint, revocation_endpoint, authorization_endpoint),
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            **({"operation": system_operations} if (system_operations := _operations("system")) else {}),
        }],
    }


def _security(token_endpoint: str | None, revocation_endpoint: str | None,
              authorization_endpoint: str | None = None) -> dict:
    """SMART on FHIR's `oauth-uris` extension: where a client sends a person to sign in, and
    gets and revokes tokens (the full story is in .well-known/smart-configuration)."""
    if token_endpoint is None:
        return {}
    uris = [{"url": "token", "valueUri": token_endpoint}]
    if authorization_endpoint:
        uris.insert(0, {"url": "authorize", "valueUri": authorization_endpoint})
    if revocation_endpoint:
        uris.append({"url": "revoke", "valueUri": revocation_endpoint})
    return {"security": {
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": uris}],
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "description": "SMART App Launch 2 (standalone launch, authorization code with PKCE S256, OpenID "
                       "Connect, user/ scopes, rotated refresh tokens) for apps used by staff, and SMART "
                       "Backend Services (client credentials with client_secret_basic or private_key_jwt)",
    }}


def _audit_entry() -> dict:
    """AuditEvent is the hub's own trail (hub.api.audit): read and searched, never written by
    clients, so no partner can forge or erase who looked at a record."""
    params = [{"name": code, "definition": p.url, "type": p.type}
              for code, p in sorted(params_for("AuditEvent").items()) if code in AUDIT_PARAMS]
    params += [{"name": name, "type": kind, "documentation": doc} for name, kind, doc in _RESULT_PARAMS
               if name in ("_count", "_offset", "_summary")]
    return {"type": "AuditEvent", "interaction": [{"code": "read"}, {"code": "search-type"}],
            "documentation": "The hub's audit trail of every read, search and write; written by the hub alone. "
                             "Needs a scope naming AuditEvent (system/AuditEvent.rs).",
            "searchParam": params}


def _resource_entry(res_type: str, update_create: bool = False) -> dict:
    if res_type == "AuditEvent":
        return _audit_entry()
    params = [
        {"name": code, "definition": p.url, "type": p.type}
        for code, p in sorted(params_for(res_type).items()) if is_supported(p)
    ]
    params += [{"name": name, "type": kind, "documentation": doc} for name, kind, doc in _RESULT_PARAMS]
    entry = {
        "type": res_type,
        "interaction": [{"code": code} for code in _TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": update_create,   # HUB_CLIENT_IDS (hub.store.resources.unknown_id, issue 20)
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalRead": "not-match",
        "conditionalDelete": "not-supported",
        "referencePolicy": ["literal", "logical", "local", "enforced"],
        "searchInclude": ["*"],
        "searchRevInclude": ["*"],
        "searchParam": params,
    }
    profiles = profiles_for(res_type)
    if profiles:
        entry["supportedProfile"] = profiles
    if res_type == "Subscription":
        _subscription_entry(entry)
    operations = _operations("type", res_type) + [op for op in _operations("instance", res_type)
                                                  if op not in _operations("type", res_type)]
    if operations:
        entry["operation"] = operations
    return entry


TOPIC_CANONICAL = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "capabilitystatement-subscriptiontopic-canonical")


def _subscription_entry(entry: dict) -> None:
    """Topic-based subscriptions (Subscriptions R5 Backport): the topics the hub publishes, by
    canonical, and what a client sees (its own Subscriptions only, so no type history)."""
    entry["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": topic.url} for topic in TOPICS]
    entry["interaction"] = [i for i in entry["interaction"] if i["code"] != "history-type"]
    entry["supportedProfile"] = [*entry.get("supportedProfile", []), SUBSCRIPTION_PROFILE]
    entry["documentation"] = (
        "Topic-based subscriptions (Subscriptions R5 Backport for R4): criteria is one of the topics listed "
        "in this entry's extensions, channel rest-hook (https) with payload application/fhir+json and "
        "backport-payload-content empty, id-only or full-resource; or classic R4 rest-hook subscriptions whose "
        "criteria is a search. A client sees only its own Subscriptions. "
        "Each notification carries only what the subscribing client may read when it is sent. "
        + " ".join(f"{t.url}: {t.description}" for t in TOPICS))


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    fmt = response_format(request)
    auth = request.app.state.auth
    statement = capability_statement(request.app.state.base_url, *(
        (auth.token_endpoint, auth.revocation_endpoint, auth.authorization_endpoint) if auth.enabled else ()),
        update_create=request.app.state.settings.client_ids == "accept")
    return fhir_response(render(statement, fmt, pretty=wants_pretty(request)), fmt)
