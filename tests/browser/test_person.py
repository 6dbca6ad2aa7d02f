"""The person and their family in a real browser (issue 18): Debian's Chromium, headless, against
`ipc-hub up` with its demonstration cohort, and the local test OpenID Connect provider standing in
for NHS login. The veteran signs in with NHS login, sees his plan and goals, adds a note, sees that
the GP practice and the lead charity looked, stops sharing with the charity (whose next read is
refused), asks for a review (it reaches the coordinator's worklist) and downloads his record; NHS
login refusals; a parent with proxy sees the child's plan and not another's; a proxy whose
delegation expired is refused. Every page is checked with axe-core."""
from __future__ import annotations

import re
from datetime import date

import httpx
import pytest

from hub.auth.keys import load_signing_keys
from hub.config import Settings
from hub.fhir.jsontext import dumps
from tests.browser.conftest import check_page, sign_in
from tests.integration.conftest import mint_token

pytestmark = pytest.mark.integration

VETERAN_NHS = "9994500007"
VETERAN_GOAL = "adapted flat in Mansfield"
GP_PRACTICE, CHARITY = "C84001", "1123456"  # the sample handover's GP practice and lead charity
JSON = {"Content-Type": "application/fhir+json"}
IPC = "https://ipc-hub.example.org/fhir/"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
PASSWORD = "a proxy's long passphrase"


def client_token(hub, partner_class: str, organisation: str) -> dict[str, str]:
    """A backend client registered with `ipc-hub clients add`, and a bearer header for it."""
    out = hub.cli("clients", "add", "--partner-class", partner_class, "--organisation", organisation,
                  "--scopes", "system/*.rs").stdout
    client_id = re.search(r"client_id:\s+(\S+)", out).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", out).group(1)
    token = httpx.post(f"{hub.base}/auth/token", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret)).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def veteran_plan(hub, auth: dict[str, str]) -> str:
    patient = httpx.get(f"{hub.base}/fhir/Patient", params={"identifier": VETERAN_NHS}, headers=auth).json()
    pid = patient["entry"][0]["resource"]["id"]
    plans = httpx.get(f"{hub.base}/fhir/CarePlan", headers=auth, params={
        "subject": f"Patient/{pid}", "category": f"{IPC}CodeSystem/ipc-plan-category|care-support-plan"}).json()
    return plans["entry"][0]["resource"]["id"]


def nhs_login(page, hub, login: str) -> None:
    """From /me through the sign-in page to the test provider, as `login` (e.g. P9-<NHS number>)."""
    page.goto(f"{hub.base}/me")
    page.wait_for_selector("h1:has-text('Sign in to IPC Hub')")
    page.click("a:has-text('Continue with NHS login (test provider)')")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "anything")
    page.click("button[type=submit]")
    page.wait_for_selector("button:has-text('Continue')")
    page.click("button:has-text('Continue')")


def citizen_sign_in(page, hub, username: str, password: str) -> None:
    """From /me through the hub's own sign-in page, with a local citizen account."""
    page.goto(f"{hub.base}/me")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button:has-text('Sign in')")


def test_a_veteran_uses_his_own_record(hub, new_page):
    gp, charity = client_token(hub, "nhs", GP_PRACTICE), client_token(hub, "charity", CHARITY)
    plan = veteran_plan(hub, hub.bearer())
    assert httpx.get(f"{hub.base}/fhir/CarePlan/{plan}", headers=gp).status_code == 200
    assert httpx.get(f"{hub.base}/fhir/CarePlan/{plan}", headers=charity).status_code == 200

    page = new_page()
    nhs_login(page, hub, f"P9-{VETERAN_NHS}")
    page.wait_for_selector("h1:has-text('Your plan')")
    assert VETERAN_GOAL in page.inner_text("main")
    check_page(page, "person-01-plan")

    card = page.locator(".nhsuk-card", has_text=VETERAN_GOAL)
    card.locator("textarea").fill("I have been to see two flats this week")
    card.locator("button:has-text('Add note')").click()
    page.wait_for_selector("text=Your note has been added")
    assert "I have been to see two flats this week" in page.locator(".nhsuk-card", has_text=VETERAN_GOAL).inner_text()

    page.goto(f"{hub.base}/me?view=easy-read")
    page.wait_for_selector("h1:has-text('Your plan in easy read')")
    easy = page.inner_text("main")
    assert "This is your plan." in easy
    assert re.search(r"You want to: [^\n]*" + VETERAN_GOAL, easy), easy
    assert "Karen Hughes is your coordinator" in easy and "look at the plan again" in easy, easy
    check_page(page, "person-02-easy-read")

    for _ in range(4):  # the veteran looks at his own pages again and again
        page.goto(f"{hub.base}/me")
    page.goto(f"{hub.base}/me/who-looked")
    looked = page.inner_text("#looked")
    assert "Chapel Street Surgery" in looked or f"organisation {GP_PRACTICE}" in looked, looked
    assert "charit" in looked.lower(), looked
    who = page.locator("#looked tbody tr td:nth-child(2)").all_inner_texts()
    assert who and not any(w.startswith("You") for w in who), who  # his own visits are not listed
    check_page(page, "person-03-who-looked")

    page.goto(f"{hub.base}/me/sharing")
    stop = page.locator("button", has_text="Stop sharing with Forces Together Midshire")  # the lead charity
    assert stop.count() == 1, page.inner_text("#choices")
    check_page(page, "person-04-sharing")
    stop.first.click()
    page.wait_for_selector("text=Your choice is saved")
    assert httpx.get(f"{hub.base}/fhir/CarePlan/{plan}", headers=charity).status_code == 404
    assert httpx.get(f"{hub.base}/fhir/CarePlan/{plan}", headers=gp).status_code == 200

    page.goto(f"{hub.base}/me")
    page.fill("#why", "I have found a flat and want to change my support hours")
    page.click("button:has-text('Ask for a review')")
    page.wait_for_selector("#review-sent")

    page.goto(f"{hub.base}/me/download")
    page.wait_for_selector("h1:has-text('Your record')")
    check_page(page, "person-05-download")
    bundle = page.request.get(f"{hub.base}/me/download?format=json").json()
    patients = {e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"}
    assert bundle["resourceType"] == "Bundle" and len(patients) == 1

    staff = new_page()
    sign_in(staff, hub, "demo.coordinator", start="/app/worklist")
    staff.goto(f"{hub.base}/app/worklist")
    assert "I have found a flat and want to change my support hours" in staff.inner_text("main")


def test_nhs_login_refuses_a_low_proofing_level_and_an_unknown_nhs_number(hub, new_page):
    page = new_page()
    nhs_login(page, hub, f"P5-{VETERAN_NHS}")
    page.wait_for_selector("h1:has-text('We need to confirm who you are first')")
    check_page(page, "person-06-not-proofed")
    other = new_page()
    nhs_login(other, hub, "P9-9990000999")
    other.wait_for_selector("h1:has-text('We could not find your record')")
    # Two records holding the veteran's NHS number (a duplicate not yet resolved: the API refuses
    # to make one, so it is put straight into the database, and taken out again for the module's
    # later tests): nothing is opened, and the person is told to ask their coordinator.
    import psycopg

    from hub.runtime.embedded import running_postgres_url

    copy_id = "duplicate-of-the-veteran"
    with psycopg.connect(running_postgres_url(hub.data_dir), autocommit=True) as conn:
        original = conn.execute(
            "SELECT r.res_id FROM idx_token t JOIN resource r USING (res_type, res_id) WHERE t.res_type = 'Patient'"
            " AND t.param = 'identifier' AND t.code = %s AND r.owner IS NULL AND NOT r.deleted", (VETERAN_NHS,)).fetchone()[0]
        conn.execute("INSERT INTO resource (res_type, res_id, version, last_updated, deleted, content, patient_id, part, owner)"
                     " SELECT res_type, %s, version, last_updated, deleted, content, %s, part, owner FROM resource"
                     " WHERE res_type = 'Patient' AND res_id = %s", (copy_id, copy_id, original))
        conn.execute("INSERT INTO idx_token (res_type, res_id, param, system, code, text) SELECT res_type, %s, param,"
                     " system, code, text FROM idx_token WHERE res_type = 'Patient' AND res_id = %s AND param = 'identifier'",
                     (copy_id, original))
        try:
            twice = new_page()
            nhs_login(twice, hub, f"P9-{VETERAN_NHS}")
            twice.wait_for_selector("h1:has-text('We could not open your record')")
            assert "matches more than one record" in twice.content()
            assert "Whitfield" not in twice.content()  # nothing of either record is shown
        finally:
            conn.execute("DELETE FROM idx_token WHERE res_type = 'Patient' AND res_id = %s", (copy_id,))
            conn.execute("DELETE FROM resource WHERE res_type = 'Patient' AND res_id = %s", (copy_id,))


def test_a_parent_sees_the_childs_plan_and_an_expired_delegation_is_refused(hub, new_page):
    """The council's demonstration person stands in for a nine-year-old child (their birth date is
    moved); the veteran is the other person the parent must not see."""
    keys = load_signing_keys(None, hub.data_dir)
    settings = Settings(http_port=int(hub.base.rsplit(":", 1)[1]))
    coordinator = {"Authorization": "Bearer " + mint_token(
        keys, settings, partner_class="nhs", organisation="QT1", scopes=["user/*.cruds"],
        user="Practitioner/test-coordinator", user_role="coordinator"), **JSON}
    fhir = f"{hub.base}/fhir"
    child = httpx.get(f"{fhir}/Patient", params={"identifier": "P100001"}, headers=coordinator).json()["entry"][0]["resource"]
    child["birthDate"] = f"{date.today().year - 9}-03-01"
    assert httpx.put(f"{fhir}/Patient/{child['id']}", content=dumps(child), headers=coordinator).status_code == 200

    def related(code: str) -> str:
        made = httpx.post(f"{fhir}/RelatedPerson", headers=coordinator, content=dumps({
            "resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{child['id']}"},
            "relationship": [{"coding": [{"system": ROLE, "code": code}]}], "name": [{"family": "Whitfield",
                                                                                      "given": ["Pat"]}]}))
        assert made.status_code == 201, made.text
        return made.json()["id"]

    def delegate(proxy: str, code: str, end: str) -> None:
        made = httpx.post(f"{fhir}/Consent", headers=coordinator, content=dumps({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "proxy-delegation"}]}],
            "patient": {"reference": f"Patient/{child['id']}"}, "dateTime": "2026-01-15T10:00:00Z",
            "policyRule": {"text": "Parental responsibility"},
            "sourceAttachment": {"contentType": "application/pdf", "title": "Birth certificate seen by the coordinator"},
            "verification": [{"verified": True, "verifiedWith": {"reference": f"RelatedPerson/{proxy}"},
                              "verificationDate": "2026-01-15"}],
            "provision": {"type": "permit", "period": {"start": "2020-01-01", "end": end},
                          "actor": [{"role": {"coding": [{"system": ROLE, "code": code}]},
                                     "reference": {"reference": f"RelatedPerson/{proxy}"}}],
                          "code": [{"coding": [{"system": IPC + "CodeSystem/ipc-record-part", "code": part}]}
                                   for part in ("demographics", "care-support-plan", "budget")]}}))
        assert made.status_code == 201, made.text

    father, mother = related("FTH"), related("MTH")
    delegate(father, "FTH", "2099-01-01")
    delegate(mother, "MTH", "2021-01-01")
    hub.cli("users", "add-person", "pat.father", "--name", "Pat Whitfield", "--related-person", father,
            "--password", PASSWORD)
    hub.cli("users", "add-person", "pat.mother", "--name", "Sam Whitfield", "--related-person", mother,
            "--password", PASSWORD)

    page = new_page()
    citizen_sign_in(page, hub, "pat.father", PASSWORD)
    page.wait_for_selector("h1:has-text('Your plan')")
    text = page.inner_text("main")
    assert "acting for them" in text and "Graham" in text
    assert VETERAN_GOAL not in text
    assert "No budget has been set yet" not in text  # the council's allocations are in the delegation
    check_page(page, "person-07-proxy")

    expired = new_page()
    citizen_sign_in(expired, hub, "pat.mother", PASSWORD)
    expired.wait_for_selector("h1:has-text('You cannot see this record now')")


def submit(page, button: str, expected: str) -> None:
    """Press a form's button and wait for the page it leads to, which must show `expected` (else
    the test fails with what the page said instead)."""
    with page.expect_navigation():
        page.click(f"button:has-text('{button}')")
    assert page.locator(expected).count() == 1, page.inner_text("main")


def test_a_coordinator_gives_an_attorney_sign_in_for_two_people_who_switches_and_a_delegation_ends(hub, new_page):
    """The coordinator, in the workspace, adds Alex Whitfield to two people's records (the council's
    Graham and Susan Whitfield, Alex holding a lasting power of attorney for each), records each
    delegation with its evidence and gives Alex one account that opens both; Alex signs in, chooses
    whose record, reads Graham's plan in easy read, switches to Susan's, and is refused once the
    coordinator ends that delegation. Graham then sees, apart from the organisations, that Alex
    looked."""
    fhir = f"{hub.base}/fhir"
    auth = hub.bearer()

    def by_nhs_number(number: str) -> dict:
        return httpx.get(f"{fhir}/Patient", params={"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{number}"},
                         headers=auth).json()["entry"][0]["resource"]

    graham, susan = by_nhs_number("9990000018"), by_nhs_number("9990000026")
    staff = new_page()
    sign_in(staff, hub, "demo.coordinator")
    lpa = "Lasting power of attorney (health and welfare)"

    def give_access(patient_id: str, parts: list[str], evidence: str, existing: bool) -> str:
        staff.goto(f"{hub.base}/app/people/{patient_id}")
        staff.click("#access-link")
        staff.wait_for_selector("h1:has-text('Sign-in and acting for')")
        staff.fill("#given", "Alex")
        staff.fill("#family", "Whitfield")
        staff.select_option("#related-role", "HPOWATT")
        submit(staff, "Add to the record", "text=They have been added to the record")
        staff.select_option("#related", label=f"Alex Whitfield ({lpa})")
        staff.select_option("#role", "HPOWATT")
        for part in parts:
            staff.check(f"#part-{part}")
        staff.fill("#evidence", evidence)
        submit(staff, "Record delegation", "#delegation-recorded")
        assert "Alex Whitfield" in staff.inner_text("#delegations")
        staff.select_option("#who", label=f"Alex Whitfield ({lpa}), acting for them")
        staff.fill("#username", "alex.whitfield")
        if existing:
            staff.check("#existing")
        staff.select_option("#checked", "photo-id")
        submit(staff, "Give sign-in", "#account-issued")
        assert "alex.whitfield" in staff.inner_text("#accounts")
        return "" if existing else staff.inner_text("#issued-password")

    password = give_access(graham["id"], ["demographics", "care-support-plan", "budget"],
                           "Registered LPA, reference 7000-1234-5678", existing=False)
    check_page(staff, "person-08-coordinator-gives-access")
    give_access(susan["id"], ["demographics", "care-support-plan"], "Registered LPA, reference 7000-8765-4321",
                existing=True)

    alex = new_page()
    citizen_sign_in(alex, hub, "alex.whitfield", password)
    alex.wait_for_selector("h1:has-text('Whose record do you want to see?')")
    check_page(alex, "person-09-choose-whose-record")
    alex.check(f"#choose-{graham['id']}")
    alex.click("button:has-text('Open this record')")
    alex.wait_for_selector("#whose-record")
    assert "Graham" in alex.inner_text("#whose-record")
    alex.goto(f"{hub.base}/me?view=easy-read")  # in easy read, about Graham by name
    easy = alex.inner_text("main")
    assert re.search(r"Graham [\w ]+ has £[\d,.]+ for care and support\.", easy) and "comes from" in easy, easy
    check_page(alex, "person-10-easy-read-for-someone")
    alex.click("button:has-text('Switch to another person')")
    alex.wait_for_selector("h1:has-text('Whose record do you want to see?')")
    alex.check(f"#choose-{susan['id']}")
    alex.click("button:has-text('Open this record')")
    alex.wait_for_selector("#whose-record")
    assert "Susan" in alex.inner_text("#whose-record") and "Graham" not in alex.inner_text("#whose-record")
    check_page(alex, "person-11-switched")

    staff.goto(f"{hub.base}/app/people/{susan['id']}/access")
    with staff.expect_navigation():
        staff.locator("#delegations tr", has_text="Alex Whitfield").locator("button:has-text('End delegation')").click()
    assert staff.locator("#delegation-ended").count() == 1, staff.inner_text("main")
    alex.goto(f"{hub.base}/me")
    alex.wait_for_selector("h1:has-text('You cannot see this record now')")
    # the account still opens Graham's record (that delegation did not end)
    alex.goto(f"{hub.base}/me/sign-in")
    alex.wait_for_selector("h1:has-text('Whose record do you want to see?')")

    person = new_page()
    nhs_login(person, hub, "P9-9990000018")
    person.wait_for_selector("h1:has-text('Your plan')")
    person.goto(f"{hub.base}/me/who-looked")
    assert "Alex Whitfield" in person.inner_text("#acting-looked")
    assert "Alex Whitfield" not in person.inner_text("#looked")
