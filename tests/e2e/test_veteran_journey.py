"""A veteran's whole journey through the hub, end to end, against the real running parts: the
session's embedded PostgreSQL and Tansu broker, mapper and recorder as `ipc-hub worker` processes,
`ipc-hub connector mod` (HTTP POST with a defence client's token), `ipc-hub connector hl7v2` (a
real MLLP socket), `ipc-hub connector la import` (a real CSV import), and the FHIR API on a socket
used by an NHS commissioner and the lead charity with their own tokens.

The journey (issue 6, "How it is checked"): the MOD hands over a service leaver; the GP practice
registers him over HL7 v2, which completes the handover; the council imports its extract (his
carer assessed, services with delivery mechanisms and unit costs); the commissioner adds the NHS
share of his personal budget, as a direct payment; the lead charity records the support it offers,
its action on the plan and progress on a goal, and sees only what he consented to share; his
direct payment support service sends a month's statement (a real `ipc-hub connector statements
import`). Then the one record is checked: one person, one plan, one budget statement whose NHS and
council shares add up to the agreed amount, one account per allocation and management option, the
month's spend computed from its lines, every resource valid against the IPC profiles, and where
every fact came from.

Then the plan's life (issue 13), with the plan worker running as `ipc-hub worker plans`: the
plan (which the council's extract agreed for its part) waits in draft with a sign-off request to
the ICB; he agrees, then the ICB (with its own token, finding the request by the standard
search); the last agreement makes the plan active with its next review date a year on and
closes the request; his review meeting moves the plan to 'review'
and back, and the plan's next version carries the new review date while the agreed version stays
readable in its history."""
from __future__ import annotations

import csv
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.hl7v2 import frame
from hub.fhir import jsontext
from hub.fhir.identifiers import (
    CANONICAL_BASE,
    CHARITY_NUMBER,
    LOCAL_AUTHORITY_PERSON_ID,
    MOD_SERVICE_NUMBER,
    NHS_NUMBER,
    SOURCE_SYSTEM,
)
from hub.fhir.validation import validate
from tests.pipeline.conftest import IPC_HUB, wait_for, worker_env
from tests.pipeline.test_hl7v2_pipeline import Stack, exchange
from tests.pipeline.test_mod_pipeline import HANDOVER, SAMPLES, ModConnector

pytestmark = pytest.mark.integration

SD = f"{CANONICAL_BASE}/StructureDefinition"
CS = f"{CANONICAL_BASE}/CodeSystem"
CLIENT_ID = "https://ipc-hub.example.org/fhir/Id/client-id"
FHIR_JSON = {"Content-Type": "application/fhir+json"}

# The veteran and his mother (test-range NHS numbers, Modulus 11 valid).
VETERAN_NHS, MOTHER_NHS = "9994571001", "9994571028"
SERVICE_NO = "30557711"
GP_PRACTICE, GP_SENDER, GP_MRN = "C84001", "EMIS|C84001", "GP-557711"
COUNCIL = "E10000024"
VETERAN_LA_ID, MOTHER_LA_ID = "V300001", "V300002"
LEAD_CHARITY = "1123456"  # Forces Together Midshire, as the handover sample names it
CHARITY = {"identifier": {"system": CHARITY_NUMBER, "value": LEAD_CHARITY},
           "display": "Forces Together Midshire"}
COMMISSIONER = "QT1"  # NHS Nottingham and Nottinghamshire ICB
COMMISSIONER_CLIENT, CHARITY_CLIENT = "journey-icb-commissioner", "journey-lead-charity"
NHS_SHARE = Decimal("12000.00")
# His direct payment support service's statement for September 2026: four weeks of personal
# assistant wages, a shower chair, and a refund of a delivery charged twice.
DP_PROVIDER = "DPSS-MIDSHIRE"
SEPTEMBER = [("2026-09-04", "Spend", "Personal assistant (payroll PA-3)", "180.00", "personal-assistant"),
             ("2026-09-11", "Spend", "Personal assistant (payroll PA-3)", "180.00", "personal-assistant"),
             ("2026-09-18", "Spend", "Personal assistant (payroll PA-3)", "180.00", "personal-assistant"),
             ("2026-09-25", "Spend", "Personal assistant (payroll PA-3)", "180.00", "personal-assistant"),
             ("2026-09-14", "Spend", "Able Living Ltd", "350.00", "equipment"),
             ("2026-09-21", "Refund", "Able Living Ltd", "20.00", "equipment")]
SEPTEMBER_SPEND = Decimal("1050.00")  # 4 × 180 + 350 − 20
# Home support by direct payment, £20/hour for 6 hours a week, and day care the council
# commissions, £40 a session once a week, both from 17 Aug 2026 for the statement's whole year.
COUNCIL_SHARE = Decimal("20.00") * 6 * 52 + Decimal("40.00") * 1 * 52


# --- what each source sends ------------------------------------------------------------------

def handover_document() -> bytes:
    """The MOD's handover of this service leaver: the full sample, made his. His consent names
    the ICB (which commissions his NHS care and shares his budget) and the lead charity, which
    may see who he is, his plan and his care team, and nothing of his health or his Service."""
    document = json.loads((SAMPLES / "handover-full.json").read_text())
    document["handoverId"] = "HO-2026-005577"
    document["person"].update(serviceNumber=SERVICE_NO, nhsNumber=VETERAN_NHS, birthDate="1991-03-08",
                              name={"prefix": "LCpl", "given": ["Daniel"], "family": "Rees"}, otherNames=[])
    document["consentToShare"]["share"] = [
        {"partner": "nhs", "organisation": {"name": "NHS Nottingham and Nottinghamshire ICB", "odsCode": COMMISSIONER},
         "parts": ["demographics", "care-support-plan", "budget", "carers", "care-team", "health",
                   "armed-forces-service"]},
        {"partner": "local-authority", "parts": ["demographics", "care-support-plan", "carers", "budget"]},
        {"partner": "lead-charity", "parts": ["demographics", "care-support-plan", "care-team"]},
    ]
    assert document["leadCharity"]["charityNumber"] == LEAD_CHARITY
    return json.dumps(document).encode()


def gp_registration() -> bytes:
    """The receiving practice's system registers him (ADT^A28 with PD1 naming the practice)."""
    return ("\r".join([
        f"MSH|^~\\&|EMIS|{GP_PRACTICE}|IPC|HUB|20260720091500||ADT^A28^ADT_A05|J557711|P|2.4",
        "EVN|A28|20260720091500",
        f"PID|1||{GP_MRN}^^^{GP_PRACTICE}^MR~{VETERAN_NHS}^^^NHS^NH||Rees^Daniel||19910308|M",
        f"PD1|||Chapel Street Surgery^^{GP_PRACTICE}|G1234567^Patel^Asha",
    ]) + "\r").encode()


def council_extract(folder: Path) -> list[Path]:
    """The council's extract for him: his mother, assessed as his carer, and his services."""
    people = [("LA_Code", "LA_Person_Unique_Identifier", "NHS_Number", "Given_Name", "Family_Name", "Date_of_Birth",
               "Gender", "Postcode", "Date_of_Death"),
              (COUNCIL, VETERAN_LA_ID, VETERAN_NHS, "Daniel", "Rees", "1991-03-08", "Male", "NG18 1AA", "")]
    carers = [("LA_Code", "Carer_LA_Person_Unique_Identifier", "Cared_For_LA_Person_Unique_Identifier",
               "Relationship_To_Cared_For", "Carer_Assessed", "Carer_Assessment_Date", "NHS_Number", "Given_Name",
               "Family_Name", "Date_of_Birth", "Gender", "Postcode"),
              (COUNCIL, MOTHER_LA_ID, VETERAN_LA_ID, "Parent", "Y", "2026-08-10", MOTHER_NHS, "Margaret", "Rees",
               "1962-11-02", "Female", "NG18 2BB")]
    no_service = ("",) * 6
    events = [("LA_Code", "Event_Reference", "LA_Person_Unique_Identifier", "Client_Type", "Event_Type",
               "Event_Start_Date", "Event_End_Date", "Event_Outcome", "Service_Type", "Service_Component",
               "Delivery_Mechanism", "Unit_Cost", "Cost_Frequency_Unit_Type", "Planned_units_per_week"),
              (COUNCIL, "JR-0001", VETERAN_LA_ID, "Service User", "Request", "2026-07-21", "2026-07-22",
               "Progress to Assessment", *no_service),
              (COUNCIL, "JR-0002", VETERAN_LA_ID, "Service User", "Assessment", "2026-07-28", "2026-08-05",
               "Progress to Support Planning / Services", *no_service),
              (COUNCIL, "JR-0003", VETERAN_LA_ID, "Service User", "Service", "2026-08-17", "", "",
               "Long Term Support: Community", "Home Support", "Direct Payment", "20.00", "Hourly", "6"),
              (COUNCIL, "JR-0004", VETERAN_LA_ID, "Service User", "Service", "2026-08-17", "", "",
               "Long Term Support: Community", "Day Care", "CASSR Commissioned Support only", "40.00",
               "Per session", "1"),
              (COUNCIL, "JR-0005", MOTHER_LA_ID, "Carer", "Assessment", "2026-08-10", "2026-08-10",
               "Progress to Support Planning / Services", *no_service)]
    folder.mkdir()
    files = []
    for name, rows in (("people.csv", people), ("carers.csv", carers), ("events.csv", events)):
        with open(folder / name, "w", newline="", encoding="utf-8") as out:
            csv.writer(out, lineterminator="\n").writerows(rows)
        files.append(folder / name)
    return files


# --- the running stack -----------------------------------------------------------------------

@pytest.fixture()
def stack(clean_db, bus, hub_api, tmp_path):
    """Mapper, recorder, the MLLP listener and the MOD connector, as real processes."""
    running = Stack(bus, clean_db, tmp_path)
    env = worker_env(bus, clean_db)
    running.workers.start("mapper", env)
    running.workers.start("recorder", env)
    running.workers.start("plans", env)   # the plan worker: sign-off requests, review meetings
    running.start_connector()
    mod = ModConnector(bus, clean_db, hub_api, tmp_path, running.workers)
    yield running, mod
    running.workers.stop_all()


def import_extract(bus, database_url: str, files: list[Path], ledger: Path) -> str:
    """`ipc-hub connector la import` as the council's operator runs it."""
    result = subprocess.run([IPC_HUB, "connector", "la", "import", *map(str, files)],
                            env=worker_env(bus, database_url, HUB_LA_LEDGER_DIR=str(ledger)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- reading the record ----------------------------------------------------------------------

def found(client: httpx.Client, path: str, **params) -> list[dict[str, Any]]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") != "outcome"]


def one(client: httpx.Client, path: str, **params) -> dict[str, Any] | None:
    matches = found(client, path, **params)
    assert len(matches) <= 1, [m["id"] for m in matches]
    return matches[0] if matches else None


def plan_of(client: httpx.Client, patient_id: str, kind: str) -> dict[str, Any] | None:
    return one(client, "/CarePlan", subject=f"Patient/{patient_id}", category=f"{CS}/ipc-plan-category|{kind}",
               status="draft,active")


def allocations(budget: dict[str, Any]) -> dict[str, Decimal]:
    """Each funding source's amount in a budget statement (all its management options)."""
    out: dict[str, Decimal] = {}
    for allocation in (e for e in budget.get("extension", []) if e["url"] == f"{SD}/budget-allocation"):
        parts = {e["url"]: e for e in allocation["extension"]}
        source = parts["fundingSource"]["valueCodeableConcept"]["coding"][0]["code"]
        out[source] = out.get(source, Decimal(0)) + Decimal(str(parts["amount"]["valueMoney"]["value"]))
    return out


def management(budget: dict[str, Any]) -> set[tuple[str, str]]:
    """(funding source, management option) of each allocation: one funder may have several."""
    out = set()
    for allocation in (e for e in budget.get("extension", []) if e["url"] == f"{SD}/budget-allocation"):
        parts = {e["url"]: e["valueCodeableConcept"]["coding"][0]["code"] for e in allocation["extension"]
                 if e["url"] in ("fundingSource", "managementOption")}
        out.add((parts["fundingSource"], parts["managementOption"]))
    return out


def agreed(budget: dict[str, Any]) -> Decimal:
    return Decimal(str(next(e for e in budget["extension"] if e["url"] == f"{SD}/agreed-amount")
                       ["valueMoney"]["value"]))


def statement_file(folder: Path) -> Path:
    """His direct payment support service's statement for September, as it sends it."""
    header = ("Provider_Code", "Statement_Reference", "Line_Reference", "NHS_Number", "Funding_Source",
              "Management_Option", "Line_Date", "Line_Type", "Payee", "Amount", "Category", "Description", "Goal",
              "Outcome", "Setting")
    rows = [header] + [(DP_PROVIDER, "2026-09", f"{DP_PROVIDER}-2026-09-{n:04d}", VETERAN_NHS, "nhs", "direct-payment",
                        day, kind, payee, amount, category, "", "", "", "")
                       for n, (day, kind, payee, amount, category) in enumerate(SEPTEMBER, 1)]
    folder.mkdir()
    path = folder / "september.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        csv.writer(out, lineterminator="\n").writerows(rows)
    return path


def put(client: httpx.Client, resource: dict[str, Any], version: str) -> httpx.Response:
    return client.put(f"/{resource['resourceType']}/{resource['id']}", content=jsontext.dumps(resource),
                      headers={**FHIR_JSON, "If-Match": f'W/"{version}"'})


def profile_errors(resource: dict[str, Any]) -> list[str]:
    return [f"{resource['resourceType']}/{resource.get('id')}: {i.diagnostics}" for i in validate(resource)
            if i.severity == "error"]


def every_page(client: httpx.Client, path: str, **params) -> list[dict[str, Any]]:
    """All matches of a search, following its `next` links."""
    out, response = [], client.get(path, params=params)
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        out += [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome"]
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            return out
        response = client.get(following[0])


def sources_by_version(provenances: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The source systems (feeds) and API clients each resource version's Provenance names
    (`Type/id/_history/n`)."""
    out: dict[str, set[str]] = {}
    for provenance in provenances:
        named = {a["who"]["identifier"]["value"] for a in provenance["agent"]
                 if a["who"].get("identifier", {}).get("system") in (SOURCE_SYSTEM, CLIENT_ID)}
        for target in provenance["target"]:
            out.setdefault(target["reference"], set()).update(named)
    return out


def sources_of(by_version: dict[str, set[str]], reference: str) -> set[str]:
    """The source systems that wrote any version of one resource (`Type/id`)."""
    return set().union(*(named for target, named in by_version.items() if target.startswith(f"{reference}/")))


# --- the journey, step by step ---------------------------------------------------------------

class Journey:
    """What the steps share: the admin view of the record (`fhir`, to observe), the ids learnt
    on the way, and the partners' own clients."""

    def __init__(self, fhir: httpx.Client, fhir_as, mllp: Stack, mod: ModConnector) -> None:
        self.fhir, self.fhir_as, self.mllp, self.mod = fhir, fhir_as, mllp, mod
        self.patient_id = ""
        self.ids: dict[str, str] = {}

    def handover(self) -> dict[str, Any] | None:
        person = one(self.fhir, "/Patient", identifier=f"{MOD_SERVICE_NUMBER}|{SERVICE_NO}")
        return person and one(self.fhir, "/Task", code=HANDOVER, subject=f"Patient/{person['id']}")

    def mod_handover(self, defence_token: str) -> None:
        """1. The MOD hands him over: HTTP POST with a defence client's token."""
        posted = self.mod.post(handover_document(), defence_token)
        assert posted.status_code == 202, posted.text
        task = wait_for(self.handover, 30, "the handover Task in the record")
        assert task["status"] == "requested"
        self.patient_id = task["for"]["reference"].removeprefix("Patient/")
        self.ids["task"] = task["id"]

    def gp_registration(self) -> None:
        """2. His practice registers him over HL7 v2 (the real MLLP listener): the handover completes."""
        [ack] = exchange(self.mllp.port, [frame(gp_registration())])
        assert "MSA|AA|J557711" in ack, ack
        task = wait_for(lambda: (t := self.handover()) and t["status"] == "completed" and t, 30,
                        "the handover completed")
        assert task["output"][0]["valueReference"]["reference"].startswith("Organization/")

    def council_extract(self, bus, database_url: str, tmp_path: Path) -> None:
        """3. The council's extract (a real `ipc-hub connector la import`): his carer and services."""
        import_extract(bus, database_url, council_extract(tmp_path / "extract"), tmp_path / "ledger")

        def with_services() -> dict[str, Any] | None:
            budget = plan_of(self.fhir, self.patient_id, "budget-statement")
            plan = plan_of(self.fhir, self.patient_id, "care-support-plan")
            activities = {a.get("id") for a in (plan or {}).get("activity", [])}
            return budget if budget and {"la-event-JR-0003", "la-event-JR-0004"} <= activities else None

        budget = wait_for(with_services, 30, "the council's services and budget in his plan")
        assert allocations(budget) == {"local-authority": COUNCIL_SHARE}
        # The council's mix is kept: home support by direct payment, day care it commissions.
        assert management(budget) == {("local-authority", "direct-payment"), ("local-authority", "notional")}
        self.ids["budget"] = budget["id"]
        mother = wait_for(lambda: one(self.fhir, "/Patient", identifier=f"{NHS_NUMBER}|{MOTHER_NHS}"), 30,
                          "his mother's own record")
        wait_for(lambda: plan_of(self.fhir, mother["id"], "care-support-plan"), 30, "his mother's own plan")
        self.ids["mother"] = mother["id"]

    def nhs_allocation(self) -> None:
        """4. The commissioner adds the NHS share of his personal budget, as a direct payment: read,
        change, PUT If-Match. NHS and council money together make it an integrated personal budget."""
        icb = self.fhir_as(partner_class="nhs", organisation=COMMISSIONER, client_id=COMMISSIONER_CLIENT,
                           scopes=["system/CarePlan.rus", "system/Patient.rs"])
        read = icb.get(f"/CarePlan/{self.ids['budget']}")
        assert read.status_code == 200, read.text
        # Read as FHIR decimals, so the council's pence go back exactly as written (8320.00).
        statement, version = jsontext.loads(read.content), etag_version(read)
        kept = [e for e in statement["extension"] if e["url"] not in (f"{SD}/agreed-amount", f"{SD}/budget-type")]
        statement["extension"] = [
            {"url": f"{SD}/budget-type", "valueCodeableConcept": {"coding": [
                {"system": f"{CS}/ipc-budget-type", "code": "integrated-personal-budget"}]}},
            *kept,
            {"url": f"{SD}/budget-allocation", "extension": [
                {"url": "fundingSource", "valueCodeableConcept": {"coding": [
                    {"system": f"{CS}/ipc-funding-source", "code": "nhs", "display": "NHS"}]}},
                {"url": "managementOption", "valueCodeableConcept": {"coding": [
                    {"system": f"{CS}/ipc-management-option", "code": "direct-payment", "display": "Direct payment"}]}},
                {"url": "amount", "valueMoney": money(NHS_SHARE)},
                {"url": "contingency", "valueMoney": money(Decimal("500.00"))},
                {"url": "purpose", "valueString": "Personal health budget: personal assistants and adapted equipment"}]},
            {"url": f"{SD}/agreed-amount", "valueMoney": money(COUNCIL_SHARE + NHS_SHARE)}]
        written = put(icb, statement, version)
        assert written.status_code == 200, written.text
        assert put(icb, statement, version).status_code == 412  # a stale version is refused, not lost

    def lead_charity(self) -> None:
        """5. The lead charity, with its own token: what it may not see, then its work."""
        charity = self.fhir_as(partner_class="charity", organisation=LEAD_CHARITY, client_id=CHARITY_CLIENT,
                               scopes=["system/Patient.rs", "system/CarePlan.rus", "system/Goal.rus",
                                       "system/ServiceRequest.crs", "system/Condition.rs", "system/CareTeam.rs"])
        plan = plan_of(charity, self.patient_id, "care-support-plan")
        assert plan is not None
        self._sees_only_what_he_shared(charity, plan)

        offered = charity.post("/ServiceRequest", content=json.dumps(support_offered(self.patient_id, plan["id"])),
                               headers=FHIR_JSON)
        assert offered.status_code == 201, offered.text
        self.ids["offer"] = offered.json()["id"]

        goals = [charity.get(f"/{r['reference']}").json() for r in plan["goal"]]
        housing = next(g for g in goals if "adapted flat" in g["description"]["text"])
        self.ids["goal"] = housing["id"]
        current = charity.get(f"/CarePlan/{plan['id']}")
        plan = current.json()
        plan["activity"] = [*plan.get("activity", []), charity_action(housing["id"])]
        updated = put(charity, plan, etag_version(current))
        assert updated.status_code == 200, updated.text

        current = charity.get(f"/Goal/{housing['id']}")
        housing = current.json()
        housing["achievementStatus"] = {"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/goal-achievement", "code": "improving"}]}
        housing["note"] = [*housing.get("note", []), {"text": "Viewed two adapted flats; one fits."}]
        progressed = put(charity, housing, etag_version(current))
        assert progressed.status_code == 200, progressed.text

    def direct_payment_statement(self, bus, database_url: str, tmp_path: Path) -> None:
        """6. His direct payment support service's statement for September (a real `ipc-hub
        connector statements import`): the month's lines land in his record, booked to the NHS
        direct payment account, and its spend to date is computed from them."""
        result = subprocess.run([IPC_HUB, "connector", "statements", "import", str(statement_file(tmp_path / "dp"))],
                                env=worker_env(bus, database_url, HUB_STATEMENTS_LEDGER_DIR=str(tmp_path / "stmt-ledger")),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        def recorded() -> list[dict[str, Any]] | None:
            lines = found(self.fhir, "/ChargeItem", subject=f"Patient/{self.patient_id}", _count=50)
            return lines if len(lines) == len(SEPTEMBER) else None

        lines = wait_for(recorded, 30, "the month's spend lines in his record")
        assert {line["occurrenceDateTime"] for line in lines} == {day for day, *_ in SEPTEMBER}

        def spent() -> Decimal | None:
            answer = self.fhir.get(f"/CarePlan/{self.ids['budget']}/$budget-position", params={"date": "2026-09-30"})
            assert answer.status_code == 200, answer.text
            for account in (p["part"] for p in answer.json()["parameter"] if p["name"] == "account"):
                values = {p["name"]: p for p in account}
                if (values["fundingSource"]["valueCode"], values["managementOption"]["valueCode"]) == (
                        "nhs", "direct-payment") and values["lines"]["valueInteger"] == len(SEPTEMBER):
                    return Decimal(str(values["spent"]["valueMoney"]["value"]))
            return None

        assert wait_for(spent, 30, "the month's spend on his NHS direct payment account") == SEPTEMBER_SPEND

    def agreement(self) -> None:
        """6. The plan is agreed: draft with a sign-off request to each commissioner until he, the
        ICB (its own client) and the council have all agreed; then active, reviewed yearly."""
        plan = plan_of(self.fhir, self.patient_id, "care-support-plan")
        self.ids["plan"] = plan["id"]
        assert plan["status"] == "draft" and stage(plan) == "record-and-agree"
        # The council's extract recorded its own agreement (services arranged); the ICB has not agreed.
        assert [a for a in plan["extension"] if a["url"] == f"{SD}/plan-agreement"
                and "local-authority-commissioner" in json.dumps(a)]
        wait_for(lambda: sign_offs(self.fhir, plan["id"]) == {"nhs-commissioner": "requested"}, 60,
                 "a sign-off request to the ICB")
        plan = self._agreed_by("person", f"Patient/{self.patient_id}", "2026-08-20T10:00:00Z", self.fhir)
        assert plan["status"] == "draft"   # the ICB funds part of his budget and has not agreed
        icb = self.fhir_as(partner_class="nhs", organisation=COMMISSIONER, client_id=COMMISSIONER_CLIENT,
                           scopes=["system/CarePlan.rus", "system/Task.rs"])
        icb_org = created_org(self.fhir, COMMISSIONER)
        [request] = found(icb, "/Task", code=f"{CS}/ipc-plan-task|plan-sign-off",
                          performer=f"{CS}/ipc-agreement-role|nhs-commissioner", status="requested")
        assert request["focus"] == {"reference": f"CarePlan/{plan['id']}"}
        plan = self._agreed_by("nhs-commissioner", f"Organization/{icb_org['id']}", "2026-08-24T09:30:00Z", icb)
        assert plan["status"] == "active"
        assert next_review(plan) == "2027-08-24"   # IPC for Veterans: yearly from the last agreement
        wait_for(lambda: sign_offs(self.fhir, plan["id"]) == {"nhs-commissioner": "completed"}, 60,
                 "the ICB's sign-off request closed by its agreement")
        self.ids["agreed-version"] = plan["meta"]["versionId"]

    def _agreed_by(self, role: str, who: str, when: str, client: httpx.Client) -> dict[str, Any]:
        current = client.get(f"/CarePlan/{self.ids['plan']}")
        assert current.status_code == 200, current.text
        plan = jsontext.loads(current.content)
        plan["extension"].append({"url": f"{SD}/plan-agreement", "extension": [
            {"url": "agreedBy", "valueReference": {"reference": who}},
            {"url": "role", "valueCodeableConcept": {"coding": [{"system": f"{CS}/ipc-agreement-role", "code": role}]}},
            {"url": "date", "valueDateTime": when},
            {"url": "method", "valueCodeableConcept": {"coding": [
                {"system": f"{CS}/ipc-agreement-method", "code": "written"}]}}]})
        written = put(client, plan, etag_version(current))
        assert written.status_code == 200, written.text
        return written.json()

    def review(self) -> None:
        """7. His review: the meeting in progress moves the plan to 'review'; finished, back to
        'make it happen' with the next review a year from the meeting, in a new plan version."""
        current = self.fhir.get(f"/CarePlan/{self.ids['plan']}")
        plan = current.json()
        plan["extension"] = [e for e in plan["extension"] if e["url"] != f"{SD}/ipc-stage"] + [
            {"url": f"{SD}/ipc-stage", "valueCodeableConcept": {"coding": [
                {"system": f"{CS}/ipc-stage", "code": "make-it-happen"}]}}]
        assert put(self.fhir, plan, etag_version(current)).status_code == 200
        coordinator = next(e for e in plan["extension"] if e["url"] == f"{SD}/care-coordinator")["valueReference"]
        meeting = {"resourceType": "Encounter", "meta": {"profile": [f"{SD}/ipc-plan-meeting"]},
                   "extension": [{"url": f"{SD}/care-plan", "valueReference": {"reference": f"CarePlan/{self.ids['plan']}"}},
                                 {"url": f"{SD}/plan-change", "extension": [
                                     {"url": "description", "valueString": "Day care down to fortnightly; gym added"}]}],
                   "status": "in-progress",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                   "type": [{"coding": [{"system": f"{CS}/ipc-plan-contact-type", "code": "plan-review"}]}],
                   "subject": {"reference": f"Patient/{self.patient_id}"},
                   "participant": [{"individual": {"reference": coordinator["reference"]}}],
                   "period": {"start": "2027-02-10T10:00:00Z"}}
        posted = self.fhir.post("/Encounter", content=json.dumps(meeting), headers=FHIR_JSON)
        assert posted.status_code == 201, posted.text
        wait_for(lambda: stage(self.fhir.get(f"/CarePlan/{self.ids['plan']}").json()) == "review", 60,
                 "the plan at 'review'")
        held = posted.json()
        held.update(status="finished", period={"start": "2027-02-10T10:00:00Z", "end": "2027-02-10T11:00:00Z"})
        assert put(self.fhir, held, held["meta"]["versionId"]).status_code == 200
        reviewed = wait_for(lambda: (p := self.fhir.get(f"/CarePlan/{self.ids['plan']}").json())
                            and stage(p) == "make-it-happen" and next_review(p) == "2028-02-10" and p,
                            60, "the plan reviewed")
        assert reviewed["status"] == "active"
        agreed = self.fhir.get(f"/CarePlan/{self.ids['plan']}/_history/{self.ids['agreed-version']}").json()
        assert next_review(agreed) == "2027-08-24" and int(reviewed["meta"]["versionId"]) > int(self.ids["agreed-version"])

    def _sees_only_what_he_shared(self, charity: httpx.Client, plan: dict[str, Any]) -> None:
        """His plan, yes; his budget and his Service-attributable conditions, no: absent from
        reads (404, never 403), from search results and from totals, and not writable (an update
        answers 404 as for an absent id: issue 20)."""
        assert [p["id"] for p in found(charity, "/CarePlan", subject=f"Patient/{self.patient_id}")] == [plan["id"]]
        budget = self.fhir.get(f"/CarePlan/{self.ids['budget']}")
        assert charity.get(f"/CarePlan/{self.ids['budget']}").status_code == 404
        assert put(charity, jsontext.loads(budget.content), etag_version(budget)).status_code == 404  # absent, to it
        conditions = [r["reference"] for r in plan["addresses"]]
        assert conditions and all(charity.get(f"/{r}").status_code == 404 for r in conditions)
        searched = charity.get("/Condition", params={"subject": f"Patient/{self.patient_id}", "_total": "accurate"})
        assert searched.status_code == 200, searched.text
        assert searched.json()["total"] == 0 and not searched.json().get("entry")
        assert len(found(self.fhir, "/Condition", subject=f"Patient/{self.patient_id}")) == len(conditions)


def stage(plan: dict[str, Any]) -> str | None:
    found_ = [e for e in plan.get("extension", []) if e["url"] == f"{SD}/ipc-stage"]
    return found_[0]["valueCodeableConcept"]["coding"][0]["code"] if found_ else None


def next_review(plan: dict[str, Any]) -> str | None:
    found_ = [e for e in plan.get("extension", []) if e["url"] == f"{SD}/next-review-date"]
    return found_[0]["valueDate"] if found_ else None


def sign_offs(client: httpx.Client, plan_id: str) -> dict[str, str]:
    """The plan's sign-off requests: the commissioner role each goes to → its status."""
    return {t["performerType"][0]["coding"][0]["code"]: t["status"]
            for t in found(client, "/Task", code=f"{CS}/ipc-plan-task|plan-sign-off", focus=f"CarePlan/{plan_id}")}


def created_org(client: httpx.Client, ods: str) -> dict[str, Any]:
    """The commissioner as an Organization the agreement can name."""
    ods_system = "https://fhir.nhs.uk/Id/ods-organization-code"
    made = client.post("/Organization", headers={**FHIR_JSON, "If-None-Exist": f"identifier={ods_system}|{ods}"},
                       content=json.dumps({
        "resourceType": "Organization", "name": f"Commissioner {ods}",
        "identifier": [{"system": ods_system, "value": ods}]}))
    assert made.status_code in (200, 201), made.text
    return made.json()


def support_offered(patient_id: str, plan_id: str) -> dict[str, Any]:
    """The support the lead charity offers him: made for his plan (`basedOn`), so it is part of
    the plan he shares with the charity (a request for nothing in particular would be health,
    which he did not share with it)."""
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "proposal",
            "code": {"text": "Peer support group and help finding an adapted flat"},
            "subject": {"reference": f"Patient/{patient_id}"}, "basedOn": [{"reference": f"CarePlan/{plan_id}"}],
            "requester": CHARITY, "performer": [CHARITY]}


def charity_action(goal_id: str) -> dict[str, Any]:
    """The lead charity's action on his plan, towards his housing goal."""
    return {"id": f"charity-{LEAD_CHARITY}-housing", "detail": {
        "kind": "ServiceRequest", "status": "in-progress", "code": {"text": "Housing support"},
        "description": "Weekly peer support, and viewing adapted flats in Mansfield with Daniel",
        "scheduledPeriod": {"start": "2026-08-20"}, "goal": [{"reference": f"Goal/{goal_id}"}],
        "performer": [CHARITY]}}


def money(amount: Decimal) -> dict[str, Any]:
    return {"value": jsontext.FhirDecimal(f"{amount:.2f}"), "currency": "GBP"}


def etag_version(response: httpx.Response) -> str:
    return response.headers["ETag"].split('"')[1]


# --- the one record ----------------------------------------------------------------------------

def check_one_person(fhir: httpx.Client, journey: Journey) -> dict[str, Any]:
    """One Patient for him, found by every source's identifier; his mother is the only other."""
    [person] = found(fhir, "/Patient", identifier=f"{NHS_NUMBER}|{VETERAN_NHS}")
    assert person["id"] == journey.patient_id
    assert fhir.get("/Patient", params={"_summary": "count"}).json()["total"] == 2
    for identifier in (f"{MOD_SERVICE_NUMBER}|{SERVICE_NO}", f"{LOCAL_AUTHORITY_PERSON_ID}|{VETERAN_LA_ID}"):
        assert [p["id"] for p in found(fhir, "/Patient", identifier=identifier)] == [person["id"]], identifier
    assert GP_MRN in {i["value"] for i in person["identifier"]}
    assert person["generalPractitioner"]
    return person


def check_one_plan(fhir: httpx.Client, journey: Journey) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One open plan: the MOD's goals (one progressed by the charity), the council's services and
    the charity's action; his care team with his coordinator and the lead charity."""
    patient = f"Patient/{journey.patient_id}"
    [plan] = found(fhir, "/CarePlan", subject=patient, category=f"{CS}/ipc-plan-category|care-support-plan")
    assert plan["status"] in ("draft", "active")
    activities = {a["id"] for a in plan["activity"]}
    assert {"la-event-JR-0003", "la-event-JR-0004", f"charity-{LEAD_CHARITY}-housing"} <= activities
    goals = [fhir.get(f"/{r['reference']}").json() for r in plan["goal"]]
    assert len(goals) == 3 and {g["resourceType"] for g in goals} == {"Goal"}
    progress = {g["id"]: g.get("achievementStatus", {}).get("coding", [{}])[0].get("code") for g in goals}
    assert progress[journey.ids["goal"]] == "improving"
    [team] = [fhir.get(f"/{r['reference']}").json() for r in plan["careTeam"]]
    roles = {c["code"] for p in team["participant"] for r in p["role"] for c in r["coding"]}
    assert {"care-coordinator", "lead-charity"} <= roles
    return plan, goals


def check_budget(fhir: httpx.Client, journey: Journey, plan: dict[str, Any]) -> dict[str, Any]:
    """One budget statement, part of his plan, whose NHS and council shares add up to the agreed
    amount (ipc-bud-1), with one account per allocation and management option."""
    [budget] = found(fhir, "/CarePlan", subject=f"Patient/{journey.patient_id}",
                     category=f"{CS}/ipc-plan-category|budget-statement")
    assert budget["partOf"] == [{"reference": f"CarePlan/{plan['id']}"}]
    assert allocations(budget) == {"local-authority": COUNCIL_SHARE, "nhs": NHS_SHARE}
    held = {("local-authority", "direct-payment"), ("local-authority", "notional"), ("nhs", "direct-payment")}
    assert management(budget) == held
    assert agreed(budget) == COUNCIL_SHARE + NHS_SHARE
    accounts = found(fhir, "/Account", subject=f"Patient/{journey.patient_id}")
    assert {(next(e for e in a["extension"] if e["url"] == f"{SD}/funding-source")["valueCodeableConcept"]["coding"][0]
             ["code"], a["type"]["coding"][0]["code"]) for a in accounts} == held
    as_sent = fhir.get(f"/CarePlan/{budget['id']}").text  # the pence as each source wrote them
    council_parts = (Decimal("20.00") * 6 * 52, Decimal("40.00") * 52)  # home support, day care
    assert all(f"{amount:.2f}" in as_sent for amount in (*council_parts, NHS_SHARE, COUNCIL_SHARE + NHS_SHARE))
    return budget


def check_carer(fhir: httpx.Client, journey: Journey) -> dict[str, Any]:
    """His mother as his carer, assessed: her own record and her own plan."""
    [carer] = found(fhir, "/RelatedPerson", patient=f"Patient/{journey.patient_id}")
    own = {e["url"]: e["valueReference"]["reference"] for x in carer["extension"]
           if x["url"] == f"{SD}/carer-own-record" for e in x["extension"]}
    assert own["person"] == f"Patient/{journey.ids['mother']}"
    assert own["plan"] == f"CarePlan/{plan_of(fhir, journey.ids['mother'], 'care-support-plan')['id']}"
    return carer


def check_valid(fhir: httpx.Client, journey: Journey, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything in his record is valid against the IPC profiles, and his plans by `$validate`."""
    everything = every_page(fhir, f"/Patient/{journey.patient_id}/$everything", _count=100)
    held = {f"{r['resourceType']}/{r['id']}" for r in everything}
    assert {"Patient", "CarePlan", "Goal", "CareTeam", "RelatedPerson", "Task", "Consent", "Condition",
            "ServiceRequest", "Procedure", "Provenance", "Account", "ChargeItem"} <= {r["resourceType"] for r in everything}
    assert {f"Task/{journey.ids['task']}", f"ServiceRequest/{journey.ids['offer']}"} <= held
    assert [e for r in everything for e in profile_errors(r)] == []
    for plan in plans:
        stored = fhir.get(f"/CarePlan/{plan['id']}").content
        checked = fhir.post("/CarePlan/$validate", content=stored, headers=FHIR_JSON)
        assert checked.status_code == 200, checked.text
        assert [i for i in checked.json()["issue"] if i["severity"] == "error"] == []
    return everything


def check_provenance(fhir: httpx.Client, journey: Journey, plan, budget, carer, goals) -> None:
    """Every feed's part is attributed to it; the handover's completion to the GP feed's word."""
    provenances = every_page(fhir, "/Provenance", _count=100)
    by_version = sources_by_version(provenances)
    assert {"mod-handover", GP_SENDER, f"la-{COUNCIL}"} <= sources_of(by_version, f"Patient/{journey.patient_id}")
    assert {"mod-handover", f"la-{COUNCIL}"} <= sources_of(by_version, f"CarePlan/{plan['id']}")
    assert f"la-{COUNCIL}" in sources_of(by_version, f"CarePlan/{budget['id']}")
    lines = found(fhir, "/ChargeItem", subject=f"Patient/{journey.patient_id}", _count=50)
    assert lines and all(sources_of(by_version, f"ChargeItem/{line['id']}") == {f"stmt-{DP_PROVIDER}"} for line in lines)
    assert f"la-{COUNCIL}" in sources_of(by_version, f"RelatedPerson/{carer['id']}")
    assert all("mod-handover" in sources_of(by_version, f"Goal/{g['id']}") for g in goals)
    # Raised by the MOD feed; completed by the hub on the strength of the Patient version that
    # names his GP, which the GP's HL7 v2 feed wrote.
    task = fhir.get(f"/Task/{journey.ids['task']}").json()
    assert "mod-handover" in sources_of(by_version, f"Task/{task['id']}")
    current = {"reference": f"Task/{task['id']}/_history/{task['meta']['versionId']}"}
    [completion] = [p for p in provenances if current in p["target"]]
    grounds = [e["what"]["reference"] for e in completion.get("entity", []) if e["role"] == "derivation"]
    assert grounds and all(by_version[g] == {GP_SENDER} for g in grounds), completion
    # What partners wrote over the API is attributed to them the same way.
    assert CHARITY_CLIENT in sources_of(by_version, f"CarePlan/{plan['id']}")
    assert CHARITY_CLIENT in sources_of(by_version, f"Goal/{journey.ids['goal']}")
    assert CHARITY_CLIENT in sources_of(by_version, f"ServiceRequest/{journey.ids['offer']}")
    assert COMMISSIONER_CLIENT in sources_of(by_version, f"CarePlan/{budget['id']}")


def check_api_writers_audited(fhir_as, journey: Journey, plan: dict[str, Any]) -> None:
    """Their writes are also in the person's audit trail, found by patient (written off the
    request path, so awaited)."""
    auditor = fhir_as(partner_class="nhs", organisation="X26", scopes=["system/AuditEvent.rs"])
    expected = {
        COMMISSIONER_CLIENT: {("update", f"CarePlan/{journey.ids['budget']}")},
        CHARITY_CLIENT: {("update", f"CarePlan/{plan['id']}"), ("update", f"Goal/{journey.ids['goal']}"),
                         ("create", f"ServiceRequest/{journey.ids['offer']}")},
    }
    seen: dict[str, set[tuple[str, str]]] = {}

    def written_by(client_id: str) -> bool:
        events = every_page(auditor, "/AuditEvent", patient=f"Patient/{journey.patient_id}", agent=client_id,
                            _count=100)
        seen[client_id] = {(e["subtype"][0]["code"], entity["what"]["reference"].split("/_history")[0])
                           for e in events if e["outcome"] == "0"
                           for entity in e.get("entity", []) if "reference" in entity.get("what", {})}
        return expected[client_id] <= seen[client_id]

    for client_id in expected:
        try:
            wait_for(lambda who=client_id: written_by(who), 20, f"{client_id}'s writes in the audit trail", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; found {sorted(seen.get(client_id, ()))}") from None


def test_a_veterans_journey_makes_one_shared_record(stack, fhir, fhir_as, token_for, clean_db, bus, tmp_path):
    journey = Journey(fhir, fhir_as, *stack)
    journey.mod_handover(token_for(partner_class="defence", organisation="D1A", scopes=["system/*.c"]))
    journey.gp_registration()
    journey.council_extract(bus, clean_db, tmp_path)
    journey.nhs_allocation()
    journey.lead_charity()
    journey.direct_payment_statement(bus, clean_db, tmp_path)

    check_one_person(fhir, journey)
    plan, goals = check_one_plan(fhir, journey)
    budget = check_budget(fhir, journey, plan)
    carer = check_carer(fhir, journey)
    check_valid(fhir, journey, [plan, budget])
    assert fhir.get(f"/Task/{journey.ids['task']}").json()["status"] == "completed"
    check_provenance(fhir, journey, plan, budget, carer, goals)
    check_api_writers_audited(fhir_as, journey, plan)

    journey.agreement()
    journey.review()
    check_valid(fhir, journey, [fhir.get(f"/CarePlan/{plan['id']}").json()])
