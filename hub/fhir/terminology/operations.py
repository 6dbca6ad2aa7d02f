"""The terminology operations of FHIR R4, as pure functions from their input parameters to the
resource they answer with (Parameters, or a ValueSet for $expand):

- `lookup`: CodeSystem/$lookup (OperationDefinition CodeSystem-lookup);
- `validate_code_in_code_system`: CodeSystem/$validate-code;
- `validate_code_in_value_set`: ValueSet/$validate-code;
- `expand`: ValueSet/$expand, with `filter` and paging by `offset` and `count`.

Inputs come as `Inputs` (from a query string or a Parameters resource: the HTTP edge in
hub/interactions/operations/terminology.py serves them); a request that cannot be answered raises FhirError (400 for a
bad parameter, 404 for an unknown code system, value set or code, 422 for a value set the hub
cannot expand). Nothing here touches the network: every answer comes from a `Terminology`.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from hub.fhir.errors import FhirError
from hub.fhir.terminology import CodeSystem, Expansion, Member, NotExpandable, Terminology, UnknownValueSet

DEFAULT_PAGE = 1000        # codes in one $expand answer when the client sends no count
MAX_PAGE = 10000

# The input parameters of each operation and their FHIR types (R4 OperationDefinitions).
_TYPES = {
    "code": "code", "system": "uri", "version": "string", "coding": "Coding", "date": "dateTime",
    "displayLanguage": "code", "property": "code", "url": "uri", "codeSystem": "CodeSystem",
    "display": "string", "codeableConcept": "CodeableConcept", "abstract": "boolean",
    "valueSet": "ValueSet", "valueSetVersion": "string", "context": "uri", "systemVersion": "string",
    "filter": "string", "offset": "integer", "count": "integer", "includeDesignations": "boolean",
    "includeDefinition": "boolean", "activeOnly": "boolean", "excludeNested": "boolean",
    "excludeNotForUI": "boolean", "excludePostCoordinated": "boolean", "contextDirection": "code",
    "designation": "string", "exclude-system": "canonical", "system-version": "canonical",
    "check-system-version": "canonical", "force-system-version": "canonical",
}


class Inputs:
    """An operation's input parameters by name, each a list of values (strings from a query;
    typed values or resources from a Parameters body)."""

    def __init__(self, values: dict[str, list[Any]]) -> None:
        self.values = values

    @classmethod
    def from_query(cls, pairs: Iterable[tuple[str, str]]) -> Inputs:
        values: dict[str, list[Any]] = {}
        for name, value in pairs:
            if name.startswith("_"):
                continue                    # _format, _pretty: the HTTP edge's
            kind = _TYPES.get(name)
            if kind in ("Coding",):
                system, _, code = value.rpartition("|")
                values.setdefault(name, []).append({"system": system, "code": code} if system else {"code": code})
            elif kind in ("CodeSystem", "ValueSet", "CodeableConcept"):
                raise FhirError("not-supported", f"the parameter {name} can only be sent in a Parameters body (POST)")
            else:
                values.setdefault(name, []).append(value)
        return cls(values)

    @classmethod
    def from_parameters(cls, body: dict[str, Any]) -> Inputs:
        if body.get("resourceType") != "Parameters":
            raise FhirError("invalid", "the body of a terminology operation is a Parameters resource",
                            expression="resourceType")
        values: dict[str, list[Any]] = {}
        for index, parameter in enumerate(body.get("parameter") or []):
            if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
                raise FhirError("invalid", f"Parameters.parameter[{index}] has no name",
                                expression=f"Parameters.parameter[{index}]")
            found = [v for k, v in parameter.items() if k.startswith("value")] or \
                ([parameter["resource"]] if "resource" in parameter else [])
            if len(found) != 1:
                raise FhirError("invalid", f"Parameters.parameter[{index}] ({parameter['name']}) needs one value",
                                expression=f"Parameters.parameter[{index}]")
            values.setdefault(parameter["name"], []).append(found[0])
        return cls(values)

    def one(self, name: str) -> Any:
        found = self.values.get(name) or []
        if len(found) > 1:
            raise FhirError("invalid", f"the parameter {name} may be given once")
        return found[0] if found else None

    def text(self, name: str) -> str | None:
        value = self.one(name)
        if value is not None and not isinstance(value, str):
            raise FhirError("invalid", f"the parameter {name} is a {_TYPES.get(name, 'string')}")
        return value or None

    def boolean(self, name: str) -> bool:
        value = self.one(name)
        if value in (None, False, "false"):
            return False
        if value in (True, "true"):
            return True
        raise FhirError("invalid", f"the parameter {name} is true or false, not {str(value)[:20]!r}")

    def integer(self, name: str) -> int | None:
        value = self.one(name)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
            return int(value)
        raise FhirError("invalid", f"the parameter {name} is a whole number, not {str(value)[:20]!r}")

    def complex(self, name: str, kind: str) -> dict[str, Any] | None:
        value = self.one(name)
        if value is not None and (not isinstance(value, dict) or (
                kind in ("CodeSystem", "ValueSet") and value.get("resourceType") != kind)):
            raise FhirError("invalid", f"the parameter {name} is a {kind}")
        return value

    def texts(self, name: str) -> list[str]:
        return [v for v in self.values.get(name) or [] if isinstance(v, str)]


# --- $lookup --------------------------------------------------------------------------------------

def lookup(terminology: Terminology, inputs: Inputs) -> dict[str, Any]:
    """CodeSystem/$lookup: what the code system says about one code."""
    system, code, version = _system_and_code(inputs)
    cs = _code_system(terminology, system, version)
    concept = cs.find(code)
    if concept is None:
        raise FhirError("not-found", f"'{code}' is not a code of {system}", status=404)
    wanted = set(inputs.texts("property"))
    out: list[dict[str, Any]] = [{"name": "name", "valueString": cs.name}]
    if cs.version:
        out.append({"name": "version", "valueString": cs.version})
    out.append({"name": "display", "valueString": concept.get("display") or concept["code"]})
    for designation in concept.get("designation", []) if not wanted or "designation" in wanted else []:
        parts = [{"name": "language", "valueCode": designation["language"]}] if designation.get("language") else []
        if designation.get("use"):
            parts.append({"name": "use", "valueCoding": designation["use"]})
        parts.append({"name": "value", "valueString": designation.get("value", "")})
        out.append({"name": "designation", "part": parts})
    properties = cs.property_values(concept)
    if concept.get("definition"):
        properties.insert(0, {"code": "definition", "valueString": concept["definition"]})
    for prop in properties:
        if wanted and prop["code"] not in wanted:
            continue
        value = next(((k, v) for k, v in prop.items() if k.startswith("value")), None)
        parts = [{"name": "code", "valueCode": prop["code"]}]
        if value is not None:
            parts.append({"name": "value", value[0]: value[1]})
        out.append({"name": "property", "part": parts})
    return {"resourceType": "Parameters", "parameter": out}


def _system_and_code(inputs: Inputs) -> tuple[str, str, str | None]:
    coding = inputs.complex("coding", "Coding")
    system, code = inputs.text("system"), inputs.text("code")
    if coding is not None:
        system, code = coding.get("system") or system, coding.get("code")
    if not code or not system:
        raise FhirError("required", "$lookup needs a code and its system (code and system, or coding)")
    return system, code, inputs.text("version") or (coding or {}).get("version")


def _code_system(terminology: Terminology, url: str, version: str | None) -> CodeSystem:
    cs = terminology.code_system(url)
    if cs is None:
        raise FhirError("not-found", f"CodeSystem {url} is not known to the hub", status=404)
    if version and cs.version and version != cs.version:
        raise FhirError("not-found", f"the hub holds version {cs.version} of {url}, not {version}", status=404)
    return cs


# --- $validate-code -------------------------------------------------------------------------------

def validate_code_in_code_system(terminology: Terminology, inputs: Inputs,
                                 code_system: dict[str, Any] | None = None) -> dict[str, Any]:
    """CodeSystem/$validate-code: is the code (or coding, or one coding of the concept) in the
    code system given (by `url`, as `codeSystem`, or the instance the operation was called on)?"""
    supplied = code_system or inputs.complex("codeSystem", "CodeSystem")
    if supplied is not None:
        cs = CodeSystem(supplied)
    else:
        url = inputs.text("url") or (inputs.complex("coding", "Coding") or {}).get("system")
        if not url:
            raise FhirError("required", "$validate-code needs the code system: url, codeSystem or an instance")
        cs = _code_system(terminology, url, inputs.text("version"))
    candidates = _candidates(inputs, default_system=cs.url)
    messages = []
    for system, code, display in candidates:
        if system not in (None, cs.url):
            messages.append(f"the coding {system}|{code} is not from {cs.url}")
            continue
        concept = cs.find(code)
        if concept is None:
            messages.append(f"'{code}' is not a code of {cs.url}" + ("" if cs.complete else
                                                                       f" (the hub holds only part of it: {cs.content})"))
            continue
        return _verdict(concept.get("display"), display, concept["code"], cs.is_abstract(concept),
                        inputs.boolean("abstract"))
    return _answer(False, "; ".join(messages))


def validate_code_in_value_set(terminology: Terminology, inputs: Inputs,
                               value_set: dict[str, Any] | None = None) -> dict[str, Any]:
    """ValueSet/$validate-code: is the code (or coding, or one coding of the concept) in the value
    set given (by `url`, as `valueSet`, or the instance the operation was called on)?"""
    expansion, name = _expansion(terminology, inputs, value_set)
    messages = []
    for system, code, display in _candidates(inputs, default_system=None):
        member = expansion.find(system, code)
        if member is None:
            cs = terminology.code_system(system) if system else None
            unknown = cs is not None and cs.complete and cs.find(code) is None
            messages.append(f"'{code}' is not a code of {system}" if unknown else
                            f"{system + '|' if system else ''}{code} is not in {name}")
            continue
        return _verdict(member.display, display, member.code, member.abstract, inputs.boolean("abstract"))
    return _answer(False, "; ".join(messages))


def _candidates(inputs: Inputs, default_system: str | None) -> list[tuple[str | None, str, str | None]]:
    concept = inputs.complex("codeableConcept", "CodeableConcept")
    coding = inputs.complex("coding", "Coding")
    code = inputs.text("code")
    if concept is not None:
        found = [(c.get("system"), c["code"], c.get("display")) for c in concept.get("coding") or []
                 if isinstance(c, dict) and isinstance(c.get("code"), str)]
    elif coding is not None and isinstance(coding.get("code"), str):
        found = [(coding.get("system"), coding["code"], coding.get("display"))]
    elif code:
        found = [(inputs.text("system") or default_system, code, inputs.text("display"))]
    else:
        raise FhirError("required", "$validate-code needs a code (with its system), a coding or a codeableConcept")
    if not found:
        raise FhirError("required", "the codeableConcept has no coding with a code")
    return found


def _verdict(known_display: str | None, given_display: str | None, code: str, abstract: bool,
             abstract_allowed: bool) -> dict[str, Any]:
    if abstract and not abstract_allowed:
        return _answer(False, f"'{code}' is an abstract code: it groups others and is not for use on its own",
                       known_display)
    if given_display and known_display and given_display.strip().lower() != known_display.strip().lower():
        return _answer(False, f"the display '{given_display}' is not the display of '{code}' ('{known_display}')",
                       known_display)
    return _answer(True, None, known_display)


def _answer(result: bool, message: str | None, display: str | None = None) -> dict[str, Any]:
    out: list[dict[str, Any]] = [{"name": "result", "valueBoolean": result}]
    if message:
        out.append({"name": "message", "valueString": message})
    if display:
        out.append({"name": "display", "valueString": display})
    return {"resourceType": "Parameters", "parameter": out}


# --- $expand --------------------------------------------------------------------------------------

def expand(terminology: Terminology, inputs: Inputs, value_set: dict[str, Any] | None = None, *,
           now: datetime | None = None) -> dict[str, Any]:
    """ValueSet/$expand: the value set's codes, narrowed by `filter` (every word of it begins a
    word of the display, or the filter is in the code; case ignored) and paged by `offset` and
    `count` (at most DEFAULT_PAGE codes when count is not given); `total` counts them all."""
    expansion, _ = _expansion(terminology, inputs, value_set)
    definition = _definition(terminology, inputs, value_set)
    text = inputs.text("filter")
    offset = inputs.integer("offset") or 0
    count = inputs.integer("count")
    if count is not None and count > MAX_PAGE:
        raise FhirError("too-costly", f"count is at most {MAX_PAGE}", status=422)
    members = expansion.members
    if inputs.boolean("activeOnly"):
        members = [m for m in members if not m.inactive]
    if text:
        members = [m for m in members if _matches(m, text)]
    page = members[offset:offset + (DEFAULT_PAGE if count is None else count)]
    used: list[dict[str, Any]] = []
    if text:
        used.append({"name": "filter", "valueString": text})
    if offset or inputs.one("offset") is not None:
        used.append({"name": "offset", "valueInteger": offset})
    if count is not None:
        used.append({"name": "count", "valueInteger": count})
    body: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "total": len(members),
        "offset": offset,
    }
    if used:
        body["parameter"] = used
    designations = inputs.boolean("includeDesignations")
    if page:
        body["contains"] = [_contains(m, designations) for m in page]
    out = {k: definition[k] for k in ("resourceType", "id", "url", "version", "name", "title", "status")
           if k in definition}
    out.setdefault("resourceType", "ValueSet")
    out.setdefault("status", "active")
    if inputs.boolean("includeDefinition") and "compose" in definition:
        out["compose"] = definition["compose"]
    out["expansion"] = body
    return out


def _contains(member: Member, designations: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"system": member.system}
    if member.version:
        item["version"] = member.version
    if member.abstract:
        item["abstract"] = True
    if member.inactive:
        item["inactive"] = True
    item["code"] = member.code
    if member.display:
        item["display"] = member.display
    if designations and member.designation:
        item["designation"] = list(member.designation)
    return item


def _matches(member: Member, text: str) -> bool:
    wanted = text.lower().split()
    words = (member.display or "").lower().replace("-", " ").replace("/", " ").split()
    if all(any(w.startswith(part) for w in words) for part in wanted):
        return True
    return text.lower() in member.code.lower()


def _expansion(terminology: Terminology, inputs: Inputs,
               value_set: dict[str, Any] | None) -> tuple[Expansion, str]:
    supplied = value_set or inputs.complex("valueSet", "ValueSet")
    try:
        if supplied is not None:
            return terminology.expand(supplied), supplied.get("url") or "the value set"
        url = inputs.text("url")
        if not url:
            raise FhirError("required", "the operation needs the value set: url, valueSet or an instance")
        return terminology.expansion(url), url
    except UnknownValueSet as exc:
        raise FhirError("not-found", str(exc), status=404) from None
    except NotExpandable as exc:
        raise FhirError("not-supported", f"the hub cannot list this value set's codes: {exc}", status=422) from None


def _definition(terminology: Terminology, inputs: Inputs, value_set: dict[str, Any] | None) -> dict[str, Any]:
    supplied = value_set or inputs.complex("valueSet", "ValueSet")
    if supplied is not None:
        return supplied
    return terminology.value_set(inputs.text("url") or "") or {}
