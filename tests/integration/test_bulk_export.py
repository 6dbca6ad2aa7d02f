"""Bulk Data export ($export, Bulk Data Access 2.0.0) over the real API: kick-off, status,
manifest, files, cancel and expiry; `_type`, `_since`, `_typeFilter`; and consent — an export
holds exactly what the client may read, as its own searches would find."""
from __future__ import annotations

import uuid

import httpx
import pytest

from hub.fhir.jsontext import dumps
from tests.integration.access_cases import JSON, lead_charity_consent, make_person
from tests.integration.bulk_client import KICKOFF_HEADERS, export, kick_off, wait_complete
from tests.integration.conftest import bearer

SNOMED = "http://snomed.info/sct"


def _post(fhir: httpx.Client, resource: dict) -> dict:
    r = fhir.post(f"/{resource['resourceType']}", content=dumps(resource), headers=JSON)
    assert r.status_code == 201, r.text
    return r.json()


def _people(fhir: httpx.Client, n: int) -> tuple[list[str], list[str]]:
    """n people, each with a Condition (diabetes for even ones, asthma for odd); their ids."""
    tag = uuid.uuid4().hex[:8]
    patients, conditions = [], []
    for i in range(n):
        p = _post(fhir, {"resourceType": "Patient", "name": [{"family": f"Bulk{tag}", "given": [f"P{i}"]}],
                         "birthDate": f"19{50 + i:02d}-02-0{1 + i % 9}"})
        code = ("44054006", "Diabetes type 2") if i % 2 == 0 else ("195967001", "Asthma")
        c = _post(fhir, {"resourceType": "Condition", "subject": {"reference": f"Patient/{p['id']}"},
                         "code": {"coding": [{"system": SNOMED, "code": code[0], "display": code[1]}]}})
        patients.append(p["id"])
        conditions.append(c["id"])
    return patients, conditions


def test_patient_export_round_trip_follows_the_specification(fhir):
    patients, conditions = _people(fhir, 6)
    r = kick_off(fhir, "/Patient/$export", {"_type": "Patient,Condition", "_outputFormat": "application/fhir+ndjson"})
    assert r.status_code == 202, r.text
    assert r.headers["Content-Location"].startswith(str(fhir.base_url).rstrip("/") + "/bulk-export/")
    assert r.json()["resourceType"] == "OperationOutcome"
    done = wait_complete(fhir, r.headers["Content-Location"])
    assert done.status_code == 200
    assert "Expires" in done.headers
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True
    assert "Patient/$export" in manifest["request"] and "_type=Patient%2CCondition" in manifest["request"]
    assert manifest["transactionTime"].endswith("Z")
    assert manifest["error"] == [] and "deleted" not in manifest  # no _since: no deleted array
    assert {item["type"] for item in manifest["output"]} <= {"Patient", "Condition"}
    found = export(fhir, "/Patient/$export", {"_type": "Patient,Condition"})
    assert set(patients) <= found.ids("Patient")
    assert set(conditions) <= found.ids("Condition")
    # Each line is the stored resource, as a read returns it.
    one = next(r for r in found.resources["Condition"] if r["id"] == conditions[0])
    assert one == fhir.get(f"/Condition/{conditions[0]}").json()


def test_files_are_served_only_to_the_client_that_asked(fhir, fhir_as, hub_url):
    _people(fhir, 2)
    found = export(fhir, "/Patient/$export", {"_type": "Patient"})
    file_url = found.manifest["output"][0]["url"]
    other = fhir_as(partner_class="nhs", organisation="RX1", scopes=["system/*.rs"])  # same organisation
    assert other.get(found.status_url).status_code == 404
    assert other.get(file_url).status_code == 404
    assert other.delete(found.status_url).status_code == 404
    assert httpx.get(file_url).status_code == 401  # requiresAccessToken
    assert fhir.get(file_url).status_code == 200


def test_since_exports_only_what_changed_and_names_what_was_deleted(fhir):
    patients, conditions = _people(fhir, 4)
    first = export(fhir, "/Patient/$export", {"_type": "Patient,Condition"})
    since = first.manifest["transactionTime"]
    changed = fhir.get(f"/Condition/{conditions[1]}").json()
    changed["note"] = [{"text": "Reviewed at the annual check"}]
    assert fhir.put(f"/Condition/{conditions[1]}", content=dumps(changed), headers=JSON).status_code == 200
    assert fhir.delete(f"/Condition/{conditions[2]}").status_code == 204
    later = export(fhir, "/Patient/$export", {"_type": "Patient,Condition", "_since": since})
    assert later.ids("Condition") == {conditions[1]}
    assert later.ids("Patient") == set()
    deleted = [e["request"] for b in later.deleted for e in b["entry"]]
    assert {"method": "DELETE", "url": f"Condition/{conditions[2]}"} in deleted
    assert all(b["type"] == "transaction" for b in later.deleted)


def test_type_filter_selects_within_a_type(fhir):
    patients, conditions = _people(fhir, 4)
    found = export(fhir, "/Patient/$export", [("_type", "Condition"),
                                                 ("_typeFilter", f"Condition?code={SNOMED}|44054006")])
    mine = found.ids("Condition") & set(conditions)
    assert mine == {conditions[0], conditions[2]}  # the diabetes ones
    assert all(r["code"]["coding"][0]["code"] == "44054006" for r in found.resources["Condition"])


def test_a_charitys_export_holds_only_what_it_may_read(clean_db, fhir, fhir_as, recorder):
    shared, private = make_person(fhir), make_person(fhir)
    lead_charity_consent(recorder, shared)  # the lead charity: who they are and their plan only
    charity = fhir_as(partner_class="charity", organisation=shared.charity_number, scopes=["system/*.read"])
    found = export(charity, "/Patient/$export")
    exported = {f"{t}/{r['id']}" for t, rs in found.resources.items() for r in rs}
    # Who recorded what it may see comes with it (a Provenance sits where its target does).
    assert {e for e in exported if not e.startswith("Provenance/")} == {shared.ids["patient"], shared.ids["goal"]}
    for hidden in ("condition", "flag", "observation", "carer"):
        assert shared.ids[hidden] not in exported
    assert private.ids["patient"] not in exported
    # The same as its own searches find, type by type.
    for res_type in ("Patient", "Goal", "Condition", "Flag", "Observation", "RelatedPerson"):
        searched = charity.get(f"/{res_type}", params={"_count": 100}).json()
        assert {e["resource"]["id"] for e in searched.get("entry", [])} == found.ids(res_type)
    for provenance in found.ids("Provenance"):  # each one it may read, about what it may see
        assert charity.get(f"/Provenance/{provenance}").status_code == 200


def test_group_export_holds_only_its_members(fhir):
    patients, conditions = _people(fhir, 4)
    group = _post(fhir, {"resourceType": "Group", "type": "person", "actual": True, "member": [
        {"entity": {"reference": f"Patient/{patients[0]}"}},
        {"entity": {"reference": f"Patient/{patients[3]}"}},
        {"entity": {"reference": f"Patient/{patients[1]}"}, "inactive": True}]})
    found = export(fhir, f"/Group/{group['id']}/$export", {"_type": "Patient,Condition"})
    assert found.ids("Patient") == {patients[0], patients[3]}
    assert found.ids("Condition") == {conditions[0], conditions[3]}


def test_scopes_choose_the_types(fhir, fhir_as):
    _people(fhir, 2)
    narrow = fhir_as(partner_class="nhs", organisation="RX1", scopes=["system/Patient.rs"])
    assert kick_off(narrow, "/Patient/$export", {"_type": "Condition"}).status_code == 403
    found = export(narrow, "/Patient/$export")
    assert set(found.resources) == {"Patient"}


@pytest.mark.parametrize("params, headers, status, words", [
    ({"_type": "Patient"}, {"Prefer": ""}, 400, "respond-async"),
    ({"_outputFormat": "text/csv"}, {}, 400, "_outputFormat"),
    ({"_since": "yesterday"}, {}, 400, "instant"),
    ({"_type": "Nonsense"}, {}, 400, "_type"),
    ({"_type": "AuditEvent"}, {}, 400, "_type"),
    ({"_typeFilter": "Condition?colour=blue"}, {}, 400, "colour"),
    ({"_type": "Patient", "_typeFilter": "Condition?code=1"}, {}, 400, "_type"),
    ({"_typeFilter": "Condition?_count=5"}, {}, 400, "criterion"),
    ({"_elements": "id"}, {}, 400, "handling=lenient"),
])
def test_kickoff_refusals_are_specific(fhir, params, headers, status, words):
    r = fhir.get("/Patient/$export", params=params, headers={**KICKOFF_HEADERS, **headers})
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert words in r.json()["issue"][0]["diagnostics"]


def test_lenient_handling_ignores_what_is_not_supported_and_says_so(fhir):
    r = kick_off(fhir, "/Patient/$export", {"_type": "Patient", "_elements": "id"},
                 Prefer="respond-async, handling=lenient")
    assert r.status_code == 202
    assert any("_elements" in i["diagnostics"] and i["severity"] == "warning" for i in r.json()["issue"])
    done = wait_complete(fhir, r.headers["Content-Location"])
    assert any("_elements" in i["diagnostics"] for o in [done.json()] for _ in o["error"] for i in
               fhir.get(o["error"][0]["url"]).json()["issue"])


@pytest.mark.parametrize("path", ["/Group/$export", "/Patient/abc/$export", "/Condition/$export"])
def test_export_is_offered_only_where_the_specification_puts_it(fhir, path):
    r = kick_off(fhir, path)
    assert r.status_code in (404, 405)  # no such operation there, or no route for the method
    assert r.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_lists_the_export_operations(hub_url):
    cs = httpx.get(f"{hub_url}/fhir/metadata", headers={"Accept": "application/fhir+json"}).json()
    rest = cs["rest"][0]
    assert {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}.items() \
        <= next(o for o in rest["operation"] if o["name"] == "export").items()
    by_type = {r["type"]: r for r in rest["resource"]}
    assert any(o["name"] == "export" and o["definition"].endswith("patient-export")
               for o in by_type["Patient"]["operation"])
    assert any(o["name"] == "export" and o["definition"].endswith("group-export")
               for o in by_type["Group"]["operation"])


def test_cancel_stops_an_export_and_its_status_is_gone(fhir):
    _people(fhir, 2)
    r = kick_off(fhir, "/Patient/$export", {"_type": "Patient"})
    status_url = r.headers["Content-Location"]
    cancelled = fhir.delete(status_url)
    assert cancelled.status_code == 202
    assert fhir.get(status_url).status_code == 404
    assert fhir.delete(status_url).status_code == 404


def test_a_finished_export_expires(fhir, start_api, admin_token):
    _people(fhir, 1)
    api = start_api(export_retention_s=0)
    with httpx.Client(base_url=f"{api.url}/fhir", headers=bearer(admin_token), timeout=30) as client:
        r = kick_off(client, "/Patient/$export", {"_type": "Patient"})
        status_url = r.headers["Content-Location"]
        done = wait_complete(client, status_url)
        # Expired at once: the runner's next sweep removes it, and then it is unknown.
        if done.status_code == 200:
            assert wait_complete(client, status_url).status_code in (200, 404)
        from tests.pipeline.conftest import wait_for
        wait_for(lambda: client.get(status_url).status_code == 404, 30, "the expired export to be removed")


def test_download_is_in_each_persons_audit_trail(fhir, token_for):
    patients, _ = _people(fhir, 3)
    found = export(fhir, "/Patient/$export", {"_type": "Patient"})
    auditor = httpx.Client(base_url=str(fhir.base_url), headers=bearer(token_for(scopes=["system/AuditEvent.rs"])))
    from tests.pipeline.conftest import wait_for
    url = found.manifest["output"][0]["url"]
    path = url[url.index("/fhir/"):]

    def seen() -> bool:
        events = auditor.get("/AuditEvent", params={"patient": f"Patient/{patients[2]}", "_count": 50}).json()
        return any(path in str(e["resource"]) for e in events.get("entry", []))

    wait_for(seen, 30, "the download's AuditEvent naming the person")


def test_round_trip_with_smart_fetch_a_real_bulk_data_client(fhir, hub_url, pg_url, tmp_path):
    """SMART Fetch (the SMART team's bulk export tool, on cumulus-fhir-support) as a partner
    would run it: SMART Backend Services (a signed client assertion, `system/*.rs` scopes from
    the discovery document), kick-off, polling and download, all its own."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from joserfc.jwk import RSAKey

    from tests.integration.test_auth_oauth import add_client

    patients, conditions = _people(fhir, 3)
    key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:8], "alg": "RS384"})
    client = add_client(pg_url, jwks={"keys": [key.as_dict(private=False)]}, partner_class="nhs",
                        organisation="RX1", scopes="system/Patient.rs system/Condition.rs")
    key_file = tmp_path / "key.jwks"
    key_file.write_text(json.dumps({"keys": [{**key.as_dict(private=True), "key_ops": ["sign"]}]}))
    out = tmp_path / "export"
    tool = str(Path(sys.executable).with_name("smart-fetch"))
    run = subprocess.run(
        [tool, "export", "--fhir-url", f"{hub_url}/fhir", "--smart-client-id", client.record.client_id,
         "--smart-key", str(key_file), "--type", "Patient,Condition", "--export-mode", "bulk",
         "--hydration-tasks", "none", "--no-compression", str(out)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found: dict[str, set[str]] = {}
    for path in out.rglob("*.ndjson"):
        if path.name == "log.ndjson":  # its own log of the export (the bulk logging format)
            log = [json.loads(line) for line in path.read_text().splitlines()]
            assert {"kickoff", "status_complete", "export_complete"} <= {e["eventId"] for e in log}
            continue
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            found.setdefault(resource["resourceType"], set()).add(resource["id"])
    assert set(patients) <= found.get("Patient", set())
    assert set(conditions) <= found.get("Condition", set())
