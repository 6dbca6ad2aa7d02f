"""Reading the IPC guide's shapes for display: plan extensions (stage, coordinator, next review,
agreements), budget allocations, a person's identifiers by kind, and where a fact came from
(Provenance). Pure functions over FHIR JSON; the pages call them on what the API returned."""
from __future__ import annotations

from datetime import date
from typing import Any

from hub.fhir.identifiers import (
    CANONICAL_BASE,
    CLIENT_ID,
    LOCAL_AUTHORITY_PERSON_ID,
    MOD_SERVICE_NUMBER,
    NHS_NUMBER,
    SOURCE_SYSTEM,
)

SD = f"{CANONICAL_BASE}/StructureDefinition"
CS = f"{CANONICAL_BASE}/CodeSystem"
PLAN_CATEGORY = f"{CS}/ipc-plan-category"
STAGE_SYSTEM = f"{CS}/ipc-stage"
LIFE_AREA = f"{CS}/ipc-life-area"
TRANSITION = f"{CS}/ipc-transition"
TASK_CODE = f"{CS}/task-code"
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"

# The six stages of care and support planning (IPC4V framework, Annex A), in order.
STAGES = [("context", "Context"), ("preparation", "Preparation"), ("conversation", "Conversation"),
          ("record-and-agree", "Record and agree"), ("make-it-happen", "Make it happen"),
          ("review", "Review")]
ACHIEVEMENTS = [("in-progress", "In progress"), ("improving", "Improving"), ("worsening", "Worsening"),
                ("no-change", "No change"), ("achieved", "Achieved"), ("sustaining", "Sustaining"),
                ("not-achieved", "Not achieved"), ("no-progress", "No progress"), ("not-attainable", "Not attainable")]
IDENTIFIER_LABELS = {NHS_NUMBER: "NHS number", MOD_SERVICE_NUMBER: "Service number",
                     LOCAL_AUTHORITY_PERSON_ID: "Council person id"}


def extension(resource: dict[str, Any], name: str) -> list[dict[str, Any]]:
    url = f"{SD}/{name}"
    return [e for e in resource.get("extension") or [] if e.get("url") == url]


def ext_value(resource: dict[str, Any], name: str) -> Any:
    for found in extension(resource, name):
        for key, value in found.items():
            if key.startswith("value"):
                return value
    return None


def sub_values(ext: dict[str, Any], name: str) -> list[Any]:
    return [v for e in ext.get("extension") or [] if e.get("url") == name
            for k, v in e.items() if k.startswith("value")]


def code_of(concept: dict[str, Any] | None, system: str | None = None) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if system is None or coding.get("system") == system:
            return coding.get("code")
    return None


def stage(plan: dict[str, Any]) -> tuple[str | None, str]:
    concept = ext_value(plan, "ipc-stage")
    code = code_of(concept, STAGE_SYSTEM)
    return code, dict(STAGES).get(code or "", "Not recorded")


def next_review(plan: dict[str, Any]) -> str | None:
    return ext_value(plan, "next-review-date")


def is_overdue(day: str | None, today: date | None = None) -> bool:
    if not day:
        return False
    try:
        return date.fromisoformat(day[:10]) < (today or date.today())
    except ValueError:
        return False


def coordinator(plan: dict[str, Any]) -> str | None:
    value = ext_value(plan, "care-coordinator")
    return (value or {}).get("reference")


def agreements(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for ext in extension(plan, "plan-agreement"):
        who = (sub_values(ext, "agreedBy") or [{}])[0]
        role = (sub_values(ext, "role") or [{}])[0]
        when = (sub_values(ext, "date") or [None])[0]
        found.append({"who": who.get("display") or who.get("reference", ""), "role": role, "date": when})
    return found


ONE_PAGE_SECTIONS = (("appreciation", "What people like and admire about me"),
                     ("important", "What is important to me"), ("support", "How best to support me"))


def one_page_profile(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The one-page profile's sections that are filled in, as (heading, text), in their order."""
    found = extension(plan, "one-page-profile")
    if not found:
        return []
    return [(heading, text) for name, heading in ONE_PAGE_SECTIONS
            for text in sub_values(found[0], name)[:1] if isinstance(text, str) and text.strip()]


def needs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Needs by life area (`life-area-need`): the area, what is working and what is not."""
    return [{"area": (sub_values(ext, "lifeArea") or [{}])[0],
             "working": (sub_values(ext, "working") or [""])[0],
             "not_working": (sub_values(ext, "notWorking") or [""])[0]}
            for ext in extension(plan, "life-area-need")]


def has_category(resource: dict[str, Any], code: str) -> bool:
    return any(c.get("system") == PLAN_CATEGORY and c.get("code") == code
               for cat in resource.get("category") or [] for c in cat.get("coding") or [])


def identifiers(patient: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) for each identifier, the known kinds named."""
    return [(IDENTIFIER_LABELS.get(i.get("system", ""), i.get("system", "identifier")), i.get("value", ""))
            for i in patient.get("identifier") or [] if i.get("value")]


def matches(patient: dict[str, Any], query: str) -> bool:
    """Whether a caseload search (name, NHS number, service number, council id) finds this person."""
    wanted = query.strip().lower().replace(" ", "")
    if not wanted:
        return True
    names = " ".join(" ".join([*(n.get("given") or []), n.get("family", ""), n.get("text", "")])
                     for n in patient.get("name") or []).lower()
    ids = [str(i.get("value", "")).lower().replace(" ", "") for i in patient.get("identifier") or []]
    return wanted in names.replace(" ", "") or any(wanted in value for value in ids)


def allocations(budget: dict[str, Any], position: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per allocation of a budget statement; with its `$budget-position`, each row's spend
    and balance as computed from the spend lines of its account (a statement never holds spend).
    Without one (the accounts are not shared with this person) spend and balance are None."""
    accounts = {}
    for part in (p["part"] for p in (position or {}).get("parameter") or [] if p.get("name") == "account"):
        values = {p["name"]: p for p in part}
        key = (values["fundingSource"].get("valueCode"), values["managementOption"].get("valueCode"))
        accounts[key] = {name: float(values[name]["valueMoney"]["value"]) for name in ("spent", "balance")}
    rows = []
    for ext in extension(budget, "budget-allocation"):
        source = (sub_values(ext, "fundingSource") or [{}])[0]
        option = (sub_values(ext, "managementOption") or [{}])[0]
        amount = (sub_values(ext, "amount") or [{}])[0].get("value")
        held = accounts.get((code_of(source), code_of(option))) if position is not None else None
        rows.append({"source": source, "source_code": code_of(source) or "other", "option": option,
                     "amount": float(amount or 0), "spent": held["spent"] if held else (0.0 if position else None),
                     "balance": held["balance"] if held else (float(amount or 0) if position else None),
                     "purpose": (sub_values(ext, "purpose") or [""])[0]})
    return rows


def chart(rows: list[dict[str, Any]], indicative: float | None) -> dict[str, Any]:
    """A horizontal bar chart of each funder's allocation with its spend, as SVG geometry."""
    top = max([indicative or 0.0, *(r["amount"] for r in rows), 1.0])
    width, bar, gap, label = 560, 22, 18, 200
    bars = []
    for i, r in enumerate(rows):
        y = 10 + i * (2 * bar + gap)
        bars.append({"y": y, "label": r["source"], "code": r["source_code"],
                     "w": round((width - label) * r["amount"] / top, 1),
                     "spent_w": round((width - label) * max(r["spent"] or 0.0, 0.0) / top, 1), "amount": r["amount"],
                     "spent": r["spent"]})
    return {"width": width, "label": label, "bar": bar, "height": 20 + len(rows) * (2 * bar + gap),
            "bars": bars}


def provenance_by_target(provenances: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`Type/id` → what says where it came from, for the latest Provenance naming it: who (a feed,
    a partner's client, a person), acting for whom, and when."""
    found: dict[str, dict[str, Any]] = {}
    for record in sorted(provenances, key=lambda p: p.get("recorded", "")):
        source = _source(record)
        for target in record.get("target") or []:
            reference = target.get("reference", "")
            key = "/".join(reference.split("/")[:2])
            found[key] = {"source": source, "recorded": record.get("recorded")}
    return found


def _source(record: dict[str, Any]) -> str:
    for agent in record.get("agent") or []:
        role = code_of(agent.get("type"))
        who = agent.get("who") or {}
        identifier = who.get("identifier") or {}
        if role != "author" and len(record.get("agent") or []) > 1:
            continue
        if who.get("reference", "").startswith("Practitioner/"):
            return f"{who.get('display') or who['reference']} (signed in)"
        if identifier.get("system") == SOURCE_SYSTEM:
            return feed_name(identifier.get("value", ""))
        if identifier.get("system") == CLIENT_ID:
            return f"partner app {identifier.get('value')}"
        return who.get("display") or "unknown"
    return "unknown"


def feed_name(source: str) -> str:
    """A source system as staff would name it."""
    if source.startswith("mod"):
        return f"MOD transition handover ({source})"
    if source.startswith("la-"):
        return f"council extract ({source})"
    if source.startswith("ipc-hub"):
        return "IPC Hub"
    return f"GP or hospital HL7 v2 feed ({source})" if source else "a feed"


_ACTIONS = {"C": "created", "R": "read", "U": "changed", "D": "deleted", "E": "searched"}


def audit_rows(events: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, str]]:
    """Who looked at or changed a resource: the signed-in person (by name where known) and the
    app they used, what they did and when."""
    rows = []
    for event in events:
        person = app = ""
        for agent in event.get("agent") or []:
            who = agent.get("who") or {}
            if who.get("reference", "").startswith("Practitioner/"):
                person = names.get(who["reference"], who["reference"])
            elif (who.get("identifier") or {}).get("system") == CLIENT_ID:
                app = who["identifier"].get("value", "")
        rows.append({"when": event.get("recorded", ""), "person": person or "an app acting for its organisation",
                     "app": app, "action": _ACTIONS.get(event.get("action", ""), event.get("action", "")),
                     "outcome": "refused" if event.get("outcome") not in ("0", None) else "done"})
    return rows


def practitioners_named(events: list[dict[str, Any]]) -> set[str]:
    return {agent["who"]["reference"] for event in events for agent in event.get("agent") or []
            if (agent.get("who") or {}).get("reference", "").startswith("Practitioner/")}
