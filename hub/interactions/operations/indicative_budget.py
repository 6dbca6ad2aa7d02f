"""CarePlan/[id]/$indicative-budget: a budget statement's indicative amount from a resource
allocation system applied to the person's assessment, returned with how it was reached and
recorded on the statement (`indicative-amount` and `indicative-basis`) with a Provenance naming
the assessment and the exact version of the system used (hub/money/allocation.py).

Parameters: `assessment` (a QuestionnaireResponse reference, required) and `system` (the resource
allocation system's canonical, `url` or `url|version`; by default the active system that scores
the assessment's questionnaire). Needs read and update on CarePlan and read on
QuestionnaireResponse; the system and its questionnaire are configuration, read by the hub."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.audit.provenance import agent, build, client_write
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.jsontext import FhirDecimal
from hub.fhir.references import parse_reference
from hub.fhir.resources import check_structure
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.operations.operation import Operation, first, parameters
from hub.money.allocation import Indicative, canonical_of, indicative_budget
from hub.money.statement import INDICATIVE_AMOUNT, SD, is_statement
from hub.search.access import Access
from hub.store import money as money_store
from hub.store import resources

BASIS = f"{SD}/indicative-basis"
RAS_PROFILE = f"{SD}/ipc-resource-allocation"


async def _system(conn: Any, wanted: str | None, questionnaire: str) -> dict[str, Any]:
    """The resource allocation system asked for, or the active one scoring this questionnaire."""
    if wanted:
        url, _, version = wanted.partition("|")
        found = [d for d in await money_store.by_canonical(conn, "ChargeItemDefinition", url)
                 if not version or d.get("version") == version]
    else:
        found = [d for d in await money_store.definitions(conn, RAS_PROFILE) if d.get("status") == "active"
                 and any(e.get("url") == f"{SD}/ras-questionnaire"
                         and (e.get("valueCanonical") or "").split("|")[0] == questionnaire.split("|")[0]
                         for e in d.get("extension") or [])]
    if not found:
        raise FhirError("not-found", f"no resource allocation system {wanted or 'scores ' + repr(questionnaire)}",
                        status=404 if wanted else 422)
    return sorted(found, key=lambda d: str(d.get("version", "")))[-1]


async def _questionnaire(conn: Any, canonical: str) -> dict[str, Any]:
    url, _, version = canonical.partition("|")
    found = [q for q in await money_store.by_canonical(conn, "Questionnaire", url)
             if not version or q.get("version") == version]
    if not found:
        raise FhirError("not-found", f"the questionnaire {canonical!r} is not in the record", status=422)
    return sorted(found, key=lambda q: str(q.get("version", "")))[-1]


def answer(result: Indicative, statement_ref: str, assessment_ref: str) -> dict[str, Any]:
    steps = [{"name": "step", "part": [
        {"name": "kind", "valueCode": step.kind}, {"name": "text", "valueString": step.text},
        *([{"name": "points", "valueDecimal": FhirDecimal(f"{step.points.normalize():f}")}] if step.points is not None else []),
        *([{"name": "amount", "valueMoney": {"value": FhirDecimal(f"{step.amount:.2f}"), "currency": "GBP"}}]
          if step.amount is not None else [])]} for step in result.steps]
    return {"resourceType": "Parameters", "parameter": [
        {"name": "amount", "valueMoney": {"value": FhirDecimal(f"{result.amount:.2f}"), "currency": "GBP"}},
        {"name": "system", "valueCanonical": result.system},
        {"name": "assessment", "valueReference": {"reference": assessment_ref}},
        {"name": "statement", "valueReference": {"reference": statement_ref}},
        {"name": "reasoning", "valueString": result.reasoning()}, *steps]}


async def run(ctx: Context, request: FhirRequest, res_type: str | None, res_id: str | None) -> Outcome:
    assert res_id is not None
    ctx.access.require("CarePlan", "ru")
    ctx.access.require("QuestionnaireResponse", "r")
    pairs, _ = parameters(request)
    assessment = first(pairs, "assessment")
    parsed = parse_reference(assessment or "")
    if not parsed or parsed[0] != "QuestionnaireResponse":
        raise FhirError("required", "$indicative-budget needs `assessment`: a QuestionnaireResponse reference")
    async with ctx.writing() as conn:
        current = await resources.read(conn, "CarePlan", res_id, access=ctx.access)
        statement = jsontext.loads(current.content)
        if not is_statement(statement):
            raise FhirError("business-rule", f"CarePlan/{res_id} is not a budget statement", status=422)
        answered = await resources.read(conn, "QuestionnaireResponse", parsed[1], access=ctx.access)
        ctx.touched += [current, answered]
        response = jsontext.loads(answered.content)
        if (response.get("subject") or {}).get("reference") != (statement.get("subject") or {}).get("reference"):
            raise FhirError("business-rule", "the assessment is not about the person whose statement this is",
                            expression="QuestionnaireResponse.subject", status=422)
        system = await _system(conn, first(pairs, "system"), response.get("questionnaire") or "")
        scored = next((e.get("valueCanonical") for e in system.get("extension") or []
                       if e.get("url") == f"{SD}/ras-questionnaire"), "") or ""
        questionnaire = await _questionnaire(conn, scored)
        result = indicative_budget(system, questionnaire, response)
        assessment_ref = f"QuestionnaireResponse/{answered.res_id}/_history/{answered.version}"
        statement = {k: v for k, v in statement.items() if k != "meta"}
        statement["extension"] = [e for e in statement.get("extension") or []
                                  if e.get("url") not in (INDICATIVE_AMOUNT, BASIS)]
        at = next((i for i, e in enumerate(statement["extension"]) if e.get("url") == f"{SD}/budget-type"), -1) + 1
        statement["extension"][at:at] = [
            {"url": INDICATIVE_AMOUNT, "valueMoney": {"value": FhirDecimal(f"{result.amount:.2f}"), "currency": "GBP"}},
            {"url": BASIS, "extension": [
                {"url": "system", "valueCanonical": canonical_of(system)},
                {"url": "assessment", "valueReference": {"reference": f"QuestionnaireResponse/{answered.res_id}"}},
                {"url": "date", "valueDateTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")},
                {"url": "reasoning", "valueMarkdown": result.reasoning()}]}]
        check_structure(statement, "CarePlan")
        version, _ = await resources.update(conn, "CarePlan", res_id, statement, if_match=current.version,
                                            access=ctx.access)
        # Audited as written; attributed below by the one Provenance that also names the grounds (a
        # second, plain one from Context.writing would share its id: same target).
        ctx.touched.append(version)
        target = f"CarePlan/{version.res_id}/_history/{version.version}"
        systems = await money_store.by_canonical(conn, "ChargeItemDefinition", system["url"])
        stored = next((d for d in systems if d.get("version") == system.get("version")), system)
        system_version = await resources.current_version(conn, "ChargeItemDefinition", stored["id"],
                                                         access=Access.system())
        hub = agent("assembler", {"display": "IPC Hub resource allocation"})
        if ctx.principal is not None:
            proof = client_write([target], "UPDATE", ctx.principal)
            proof["agent"].append(hub)
        else:
            proof = build([target], "UPDATE", [hub])
        proof["reason"] = [{"text": "Indicative budget from the resource allocation system"}]
        proof["entity"] = [{"role": "source", "what": {"reference": assessment_ref}}]
        if system_version is not None:
            proof["entity"].append({"role": "derivation", "what": {
                "reference": f"ChargeItemDefinition/{system_version.res_id}/_history/{system_version.version}"}})
        await resources.update(conn, "Provenance", proof["id"], proof, skip_unchanged=True, access=Access.system())
    return Outcome(200, body=answer(result, target, assessment_ref))


OPERATION = Operation(
    name="indicative-budget",
    definition="https://ipc-hub.example.org/fhir/OperationDefinition/CarePlan-indicative-budget",
    levels=frozenset({"instance"}),
    types=frozenset({"CarePlan"}),
    affects_state=True,
    run=run,
    documentation="A budget statement's indicative amount from a resource allocation system applied to an assessment "
                  "(`assessment`, optional `system`): the figure and each step of how it was reached, recorded on the "
                  "statement with its Provenance.",
)
