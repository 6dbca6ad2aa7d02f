"""LA extract rows → FHIR, pure: every column lands somewhere in the record, every resource is
valid against the IPC profiles, ids are deterministic, and what cannot be mapped is refused
with a FHIR issue code."""
from __future__ import annotations

from typing import Any

import pytest

from connectors.la.extract import envelope_for
from connectors.la.format import CARERS, EVENTS, PEOPLE
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.identifiers import LOCAL_AUTHORITY_PERSON_ID, NHS_NUMBER
from hub.fhir.ids import source_id
from hub.fhir.resources import check_structure
from hub.fhir.validation import validate
from mappings.la import MAPPINGS
from tests.unit.test_la_format import CARER, PERSON, SERVICE

SOURCE = "la-E10000024"
SD = "https://ipc-hub.example.org/fhir/StructureDefinition"


def mapped(kind, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    envelope = envelope_for(kind, rows, "0" * 64, 2)
    bundle = MAPPINGS[envelope.kind](envelope.payload, envelope.source)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    for e in bundle["entry"]:
        assert e["request"] == {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
    return [e["resource"] for e in bundle["entry"]]


def assert_valid(resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        check_structure(jsontext.loads(jsontext.dumps(resource)))
        assert [i.diagnostics for i in validate(resource) if i.severity == "error"] == []


def by_type(resources, res_type):
    return [r for r in resources if r["resourceType"] == res_type]


def ext(resource, name):
    return [e for e in resource.get("extension", []) if e["url"] == f"{SD}/{name}"]


def sub(extension, name):
    return [e for e in extension["extension"] if e["url"] == name]


def test_every_person_column_lands_on_the_patient():
    [patient] = mapped(PEOPLE, [{**PERSON, "Given_Name": "Ann Marie", "Date_of_Death": "2026-05-01"}])
    assert patient["id"] == source_id(SOURCE, "Patient", "P1")
    assert patient["meta"]["profile"] == [f"{SD}/ipc-patient"]
    nhs, local = patient["identifier"]
    assert nhs == {"system": NHS_NUMBER, "value": "9990000018"}
    assert local["system"] == LOCAL_AUTHORITY_PERSON_ID and local["value"] == "P1"
    assert local["assigner"]["identifier"]["value"] == "E10000024"  # LA_Code
    assert patient["name"] == [{"use": "official", "family": "Lee", "given": ["Ann", "Marie"]}]
    assert (patient["birthDate"], patient["gender"], patient["deceasedDateTime"]) == ("1950-01-01", "female", "2026-05-01")
    assert patient["address"] == [{"use": "home", "postalCode": "NG1 1AA"}]
    assert_valid([patient])


def test_a_person_without_nhs_number_keeps_the_council_id_only():
    [patient] = mapped(PEOPLE, [{**PERSON, "NHS_Number": "", "Gender": "Unknown"}])
    assert [i["system"] for i in patient["identifier"]] == [LOCAL_AUTHORITY_PERSON_ID]
    assert patient["gender"] == "unknown"
    assert_valid([patient])


def test_an_assessed_carer_gets_a_carer_record_their_own_record_and_their_own_plan():
    row = {**CARER, "NHS_Number": "9990000026", "Date_of_Birth": "2010-02-03", "Gender": "Male", "Postcode": "NG5 1AB"}
    related, own, plan = mapped(CARERS, [row])
    assert related["meta"]["profile"] == [f"{SD}/ipc-carer"]
    assert related["patient"] == {"reference": f"Patient/{source_id(SOURCE, 'Patient', 'P1')}"}
    assert related["relationship"][0]["coding"][0]["code"] == "Carer"
    assert {c["code"] for c in related["relationship"][1]["coding"]} == {"Parent", "PRN"}
    assert (related["name"][0]["family"], related["birthDate"], related["gender"]) == ("Lee", "2010-02-03", "male")
    assert related["address"][0]["postalCode"] == "NG5 1AB"
    assert related["identifier"][0]["value"] == "C1"
    [carer_type] = ext(related, "carer-type")
    assert carer_type["valueCodeableConcept"]["coding"][0]["code"] == "young-carer"  # 15 at the assessment
    [own_record] = ext(related, "carer-own-record")
    assert sub(own_record, "person")[0]["valueReference"]["reference"] == f"Patient/{own['id']}"
    assert sub(own_record, "plan")[0]["valueReference"]["reference"] == f"CarePlan/{plan['id']}"
    assert own["id"] == source_id(SOURCE, "Patient", "C1")
    assert {"system": NHS_NUMBER, "value": "9990000026"} in own["identifier"]
    assert plan["subject"] == {"reference": f"Patient/{own['id']}"}
    assert plan["period"] == {"start": "2026-01-01"}  # Carer_Assessment_Date
    assert plan["meta"]["profile"] == [f"{SD}/ipc-care-plan"]
    assert_valid([related, own, plan])


def test_a_carer_not_assessed_is_a_carer_record_only():
    [related] = mapped(CARERS, [{**CARER, "Carer_Assessed": "N", "Carer_Assessment_Date": "",
                                 "Relationship_To_Cared_For": "Other"}])
    assert not ext(related, "carer-own-record") and not ext(related, "carer-type")
    assert related["relationship"][1] == {"coding": [{"system": "https://ipc-hub.example.org/fhir/CodeSystem/la-carer-relationship",
                                                      "code": "Other", "display": "Other"}], "text": "Other"}
    assert_valid([related])


def event(ref: str, kind: str, **values: str) -> dict[str, str]:
    base = {**SERVICE, "Event_Reference": ref, "Event_Type": kind}
    if kind != "Service":
        base.update(Service_Type="", Service_Component="", Delivery_Mechanism="", Unit_Cost="",
                    Cost_Frequency_Unit_Type="", Planned_units_per_week="")
    return {**base, **values}


EVENTS_OF_ONE = [
    event("EV-1", "Request", Event_Start_Date="2026-01-10", Event_End_Date="2026-01-12",
          Event_Outcome="Progress to Assessment"),
    event("EV-2", "Assessment", Event_Start_Date="2026-01-20", Event_End_Date="2026-02-10",
          Event_Outcome="Progress to Support Planning / Services"),
    event("EV-3", "Service"),  # home support, direct payment, 22.50 an hour, 10 hours a week
    event("EV-4", "Service", Service_Component="Day Care", Delivery_Mechanism="CASSR Managed Personal Budget",
          Unit_Cost="45.00", Cost_Frequency_Unit_Type="Per session", Planned_units_per_week="2"),
    event("EV-5", "Service", Service_Type="Short Term Support: ST-Max", Service_Component="Equipment",
          Delivery_Mechanism="CASSR Commissioned Support only", Unit_Cost="350.00",
          Cost_Frequency_Unit_Type="One-off", Planned_units_per_week="1", Event_End_Date="2026-03-02",
          Event_Outcome="Service ended as planned"),
    event("EV-6", "Review", Event_Start_Date="2026-09-01"),
]


def test_a_persons_events_become_plan_activities_a_budget_statement_and_records():
    resources = mapped(EVENTS, EVENTS_OF_ONE)
    assert_valid(resources)
    plan, budget = by_type(resources, "CarePlan")
    subject = {"reference": f"Patient/{source_id(SOURCE, 'Patient', 'P1')}"}
    # Services → plan activities, keyed by the council's event reference.
    assert [a["id"] for a in plan["activity"]] == ["la-event-EV-3", "la-event-EV-4", "la-event-EV-5"]
    home = plan["activity"][0]["detail"]
    assert {c["code"] for c in home["code"]["coding"]} == {"Home Support", "Long Term Support: Community",
                                                          "domestic-assistance"}
    assert home["status"] == "in-progress" and home["scheduledPeriod"] == {"start": "2026-03-01"}
    assert "delivered as Direct Payment" in home["description"] and "£225.00 a week" in home["description"]
    equipment = plan["activity"][2]
    assert equipment["detail"]["status"] == "completed"
    assert equipment["detail"]["scheduledPeriod"] == {"start": "2026-03-01", "end": "2026-03-02"}
    assert equipment["outcomeCodeableConcept"][0]["text"] == "Service ended as planned"
    # Reviews → the plan's next review date; stage from where the person is.
    assert ext(plan, "next-review-date")[0]["valueDate"] == "2026-09-01"
    assert ext(plan, "ipc-stage")[0]["valueCodeableConcept"]["coding"][0]["code"] == "review"
    agreement = ext(plan, "plan-agreement")[0]
    assert sub(agreement, "date")[0]["valueDateTime"] == "2026-03-01"
    assert plan["subject"] == subject and plan["period"] == {"start": "2026-01-10"}
    # Costs → the council's allocations of the budget statement: its mix of management options kept.
    assert budget["meta"]["profile"] == [f"{SD}/ipc-budget-statement"]
    assert budget["partOf"] == [{"reference": f"CarePlan/{plan['id']}"}]
    direct, notional = ext(budget, "budget-allocation")
    assert {sub(a, "fundingSource")[0]["valueCodeableConcept"]["coding"][0]["code"] for a in (direct, notional)} == {
        "local-authority"}
    assert sub(direct, "managementOption")[0]["valueCodeableConcept"]["coding"][0]["code"] == "direct-payment"
    assert sub(notional, "managementOption")[0]["valueCodeableConcept"]["coding"][0]["code"] == "notional"
    assert str(sub(direct, "amount")[0]["valueMoney"]["value"]) == "11700.00"
    assert str(sub(notional, "amount")[0]["valueMoney"]["value"]) == "5030.00"  # 4680 managed + 350 commissioned
    assert str(ext(budget, "agreed-amount")[0]["valueMoney"]["value"]) == "16730.00"
    assert ext(budget, "indicative-amount") == []      # an estimate comes from the resource allocation system
    assert "direct payment £11700.00" in sub(direct, "purpose")[0]["valueString"]
    assert "council-managed personal budget £4680.00" in sub(notional, "purpose")[0]["valueString"]
    assert budget["period"] == {"start": "2026-03-01", "end": "2027-02-28"}
    # Requests, assessments, reviews → ServiceRequest and Procedures, linked from the plan.
    [request] = by_type(resources, "ServiceRequest")
    assert request["status"] == "completed" and request["authoredOn"] == "2026-01-10"
    assert request["note"] == [{"text": "Outcome: Progress to Assessment"}]
    assessment, review = by_type(resources, "Procedure")
    assert assessment["outcome"]["text"] == "Progress to Support Planning / Services"
    assert (assessment["status"], review["status"]) == ("completed", "in-progress")
    assert {r["reference"] for r in plan["supportingInfo"]} == {
        f"ServiceRequest/{request['id']}", f"Procedure/{assessment['id']}", f"Procedure/{review['id']}"}
    assert request["identifier"][0]["value"] == "EV-1" and request["subject"] == subject


def test_every_event_column_lands():
    """Each column's value can be found in the mapped resources (LA_Code as the council)."""
    text = jsontext.dumps(mapped(EVENTS, EVENTS_OF_ONE)).decode()
    for row in EVENTS_OF_ONE:
        for column, value in row.items():
            if column in ("LA_Person_Unique_Identifier", "Client_Type", "Unit_Cost", "Cost_Frequency_Unit_Type"):
                continue  # the subject's id; the procedure's name; the description below
            assert not value or value in text, (column, value)
    assert "£45.00 per session, 2 planned units a week" in text


def test_mapping_is_deterministic_so_a_reimport_changes_nothing():
    assert mapped(EVENTS, EVENTS_OF_ONE) == mapped(EVENTS, EVENTS_OF_ONE)
    assert mapped(CARERS, [CARER]) == mapped(CARERS, [CARER])


def test_a_carers_events_use_carer_wording_and_a_person_with_only_a_request_is_at_preparation():
    resources = mapped(EVENTS, [event("EV-9", "Assessment", Client_Type="Carer")])
    assert by_type(resources, "Procedure")[0]["code"]["text"] == "Carer's assessment"
    [plan] = by_type(resources, "CarePlan")  # no services: no budget statement
    assert ext(plan, "ipc-stage")[0]["valueCodeableConcept"]["coding"][0]["code"] == "conversation"
    [plan] = by_type(mapped(EVENTS, [event("EV-8", "Request")]), "CarePlan")
    assert ext(plan, "ipc-stage")[0]["valueCodeableConcept"]["coding"][0]["code"] == "preparation"
    assert_valid(resources)


@pytest.mark.parametrize(("kind", "payload", "code"), [
    ("la-cld-person", b"Name\nAnn\n", "structure"),
    ("la-cld-person", b"\xff\xfe", "structure"),
    ("la-cld-person", ",".join(PEOPLE.names).encode() + b"\n", "structure"),
    ("la-cld-person", ",".join(PEOPLE.names).encode() + b"\nE10000024,P1,9990000019,A,B,,,,\n", "value"),
    ("la-cld-person", ",".join(PEOPLE.names).encode() + b"\nE10000024,P1,,A,B,,Male-ish,,\n", "code-invalid"),
    ("la-cld-events", ",".join(EVENTS.names).encode()
     + b"\nE10000024,EV-1,P1,Service User,Request,2026-01-01,,,,,,,,"
     + b"\nE10000024,EV-2,P2,Service User,Request,2026-01-01,,,,,,,,\n", "structure"),
    ("la-cld-events", ",".join(EVENTS.names).encode()
     + b"\nE10000024,EV-1,P1,Service User,Service,2026-01-01,,,Long Term Support: Community,Gardening,"
     + b"Direct Payment,1.00,Hourly,1\n", "code-invalid"),
])
def test_what_cannot_be_mapped_is_refused_with_an_issue_code(kind, payload, code):
    with pytest.raises(FhirError) as caught:
        MAPPINGS[kind](payload, SOURCE)
    assert caught.value.code == code


def test_an_event_sent_twice_in_a_file_is_one_event_the_later_row_winning():
    corrected = event("EV-3", "Service", Unit_Cost="30.00")
    [plan, budget] = by_type(mapped(EVENTS, [event("EV-3", "Service"), corrected]), "CarePlan")
    assert [a["id"] for a in plan["activity"]] == ["la-event-EV-3"]
    assert "£30.00 hourly" in plan["activity"][0]["detail"]["description"]
    assert str(ext(budget, "agreed-amount")[0]["valueMoney"]["value"]) == "15600.00"  # 30 × 10 × 52
