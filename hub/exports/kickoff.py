"""A Bulk Data export kick-off request (FHIR Bulk Data Access 2.0.0), read and checked before a
job is queued, so every refusal is immediate and specific (400 naming the parameter), never a
failed job later.

Supported: `_outputFormat` (`application/fhir+ndjson`, `application/ndjson`, `ndjson`), `_since`
(a FHIR instant), `_type` and `_typeFilter` (repeatable; a filter's criteria are the hub's own
search parameters, checked strictly), and `patient` (Patient and Group level, by POST). Any other
parameter — the optional `_elements`, `includeAssociatedData`, and anything unknown — is refused
unless the client sent `Prefer: handling=lenient`, when it is ignored and named in a warning (the
specification's rule for parameters a server does not support)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub.fhir.errors import FhirError
from hub.fhir.resources import SUPPORTED_TYPES
from hub.search.access import Access
from hub.search.parse import parse_criteria

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
# Exported only by their own routes, never in bulk: the audit trail is not a resource table.
NOT_EXPORTED = frozenset({"AuditEvent"})
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_KNOWN = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "patient"})


@dataclass(slots=True)
class ExportSpec:
    """What to export, as the job keeps it (`to_params`) and the runner reads it back."""

    level: str  # system, patient, group
    types: list[str] | None = None  # None: every type the client may read
    since: datetime | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)  # type → query strings
    patients: list[str] | None = None  # from `patient` (and, at group level, the members)
    group_id: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_params(self) -> dict[str, Any]:
        return {"types": self.types, "since": self.since.isoformat() if self.since else None,
                "typeFilters": self.type_filters, "patients": self.patients, "group": self.group_id,
                "warnings": self.warnings}

    @staticmethod
    def from_params(level: str, params: dict[str, Any]) -> ExportSpec:
        since = params.get("since")
        return ExportSpec(level, params.get("types"), datetime.fromisoformat(since) if since else None,
                          params.get("typeFilters") or {}, params.get("patients"), params.get("group"),
                          params.get("warnings") or [])


def read_kickoff(level: str, pairs: list[tuple[str, str]], body: dict[str, Any] | None, prefer: str) -> ExportSpec:
    """The export a kick-off asks for. `pairs`: the URL's (or form's, or a Parameters body's
    primitive) parameters; `body`: the Parameters resource if POSTed (for `patient` references);
    `prefer`: the Prefer header."""
    if "respond-async" not in prefer:
        raise FhirError("invalid", "a Bulk Data kick-off needs the header 'Prefer: respond-async'",
                        status=400)
    lenient = "handling=lenient" in prefer
    spec = ExportSpec(level)
    for name, value in pairs:
        if name not in _KNOWN:
            if not lenient:
                raise FhirError("not-supported", f"parameter '{name[:60]}' is not supported by this server's "
                                "$export (send 'Prefer: handling=lenient' to have it ignored)", status=400)
            spec.warnings.append(f"parameter '{name[:60]}' is not supported and was ignored")
    formats = [v for k, v in pairs if k == "_outputFormat"]
    for value in formats:
        if value not in OUTPUT_FORMATS:
            raise FhirError("not-supported", f"_outputFormat '{value[:60]}' is not supported (only "
                            "application/fhir+ndjson)", status=400)
    spec.types = _types(pairs)
    spec.since = _since(pairs)
    spec.type_filters = _type_filters(pairs, spec.types)
    spec.patients = _patients(level, pairs, body)
    return spec


def _types(pairs: list[tuple[str, str]]) -> list[str] | None:
    values = [v for k, v in pairs if k == "_type"]
    if not values:
        return None
    types: list[str] = []
    for value in values:
        for name in (t.strip() for t in value.split(",")):
            if not name:
                continue
            if name not in SUPPORTED_TYPES or name in NOT_EXPORTED:
                raise FhirError("not-supported", f"_type '{name[:60]}' is not a resource type this server exports",
                                status=400)
            if name not in types:
                types.append(name)
    if not types:
        raise FhirError("invalid", "_type names no resource type", status=400)
    return types


def _since(pairs: list[tuple[str, str]]) -> datetime | None:
    values = [v for k, v in pairs if k == "_since"]
    if not values:
        return None
    if len(values) > 1:
        raise FhirError("invalid", "_since may be given once", status=400)
    value = values[0].replace(" ", "+")  # a '+' an unencoded URL turned into a space
    if not _INSTANT.match(value):
        raise FhirError("invalid", f"_since '{value[:40]}' is not a FHIR instant (e.g. 2026-01-31T09:00:00Z)",
                        status=400)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _type_filters(pairs: list[tuple[str, str]], types: list[str] | None) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    # Repeated, or comma-separated (a comma inside a query is sent escaped, as %2C).
    for value in (part for k, v in pairs if k == "_typeFilter" for part in v.split(",")):
        res_type, _, query = value.partition("?")
        if res_type not in SUPPORTED_TYPES or res_type in NOT_EXPORTED:
            raise FhirError("invalid", f"_typeFilter '{value[:80]}' does not start with an exported resource "
                            "type and '?'", status=400)
        if types is not None and res_type not in types:
            raise FhirError("invalid", f"_typeFilter on {res_type}, which _type does not ask for", status=400)
        parse_criteria(res_type, query, where=f"the filter on {res_type}")
        filters.setdefault(res_type, []).append(query)
    return filters


def _patients(level: str, pairs: list[tuple[str, str]], body: dict[str, Any] | None) -> list[str] | None:
    refs = [v for k, v in pairs if k == "patient"]
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for param in body.get("parameter") or []:
            if isinstance(param, dict) and param.get("name") == "patient":
                ref = (param.get("valueReference") or {}).get("reference")
                if not isinstance(ref, str):
                    raise FhirError("invalid", "each 'patient' parameter needs a valueReference to a Patient",
                                    status=400)
                refs.append(ref)
    if not refs:
        return None
    if level == "system":
        raise FhirError("invalid", "'patient' applies to Patient and Group level exports only", status=400)
    ids: list[str] = []
    for ref in refs:
        res_type, _, res_id = ref.partition("/")
        if res_type != "Patient" or not re.match(r"^[A-Za-z0-9\-.]{1,64}$", res_id):
            raise FhirError("invalid", f"'patient' must reference a Patient (Patient/[id]), not '{ref[:60]}'",
                            status=400)
        ids.append(res_id)
    return ids


# --- the caller's access, kept with the job -------------------------------------------------


def access_record(access: Access) -> dict[str, Any]:
    """What the job keeps of the caller's Access, to export exactly what that caller may read."""
    if access.trusted:
        return {"trusted": True}
    return {"partner_class": access.partner_class, "org_code": access.org_code, "org_system": access.org_system,
            "default_parts": list(access.default_parts),
            "scopes": {t: "".join(sorted(letters)) for t, letters in access.scopes.items()},
            # A person's own app exports only their record (a proxy: what the delegation allows).
            "patient": access.patient, "proxy": access.proxy, "proxy_until_age": access.proxy_until_age}


def access_from_record(record: dict[str, Any]) -> Access:
    if record.get("trusted"):
        return Access.system()
    return Access(partner_class=record["partner_class"], org_code=record["org_code"],
                  org_system=record.get("org_system"), default_parts=tuple(record.get("default_parts") or ()),
                  scopes={t: frozenset(letters) for t, letters in (record.get("scopes") or {}).items()},
                  patient=record.get("patient"), proxy=record.get("proxy"),
                  proxy_until_age=int(record.get("proxy_until_age") or 16))
