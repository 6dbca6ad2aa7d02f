"""The workspace in a real browser (Debian's Chromium, headless, driven by Playwright) against
`ipc-hub up` with its demonstration cohort: signing in locally and through a real OpenID Connect
provider, the caseload, a person's record, the plan (goal progress, versions, the audit trail
naming the person; two people editing at once), the budget, what a charity may not see, an
operator replaying a dead letter, the commissioners' cohort figures, sign-out and CSRF. Every page is checked with axe-core and
kept as a screenshot (tests/browser/screenshots, not committed)."""
from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.browser.conftest import EXTERNAL_SUBJECT, check_page, sign_in
from tests.pipeline.conftest import wait_for

pytestmark = pytest.mark.integration

VETERAN = "Whitfield"
VETERAN_NHS = "9994500007"
# How the recorder explains a council event for a person the council has not sent yet.
LATE_EVENT = "has not sent and the record does not hold"


def open_veteran(page, hub) -> str:
    """From the caseload to the veteran's record; the Patient id."""
    page.goto(f"{hub.base}/app")
    page.click(f"a:has-text('{VETERAN}')")
    page.wait_for_selector("h2:has-text('Who they are')")
    return page.url.rsplit("/", 1)[1]


def open_plan(page, hub) -> str:
    open_veteran(page, hub)
    page.click("a:has-text('care and support plan'), a:has-text('plan')")
    page.wait_for_selector("h2:has-text('One-page profile')")
    return page.url.rsplit("/", 1)[1].split("?")[0]


def test_sign_in_locally_and_the_caseload_shows_the_demonstration_veteran(hub, new_page):
    page = new_page()
    sign_in(page, hub, "demo.coordinator", screenshot="01-sign-in")
    page.wait_for_selector("h1:has-text('Your caseload')")
    row = page.locator("tr", has_text=VETERAN)
    assert row.count() == 1
    assert VETERAN_NHS in row.inner_text() and "30112233" in row.inner_text()
    assert "Karen Hughes" in page.inner_text("header")
    check_page(page, "02-caseload")
    page.fill("#q", "30112233")
    page.click("button:has-text('Search')")
    assert page.locator("tr", has_text=VETERAN).count() == 1
    page.fill("#q", "nobody-like-this")
    page.click("button:has-text('Search')")
    assert "Nobody in your caseload matches" in page.inner_text("main")


def test_a_persons_record_shows_where_each_fact_came_from(hub, new_page):
    page = new_page()
    sign_in(page, hub, "demo.coordinator")
    open_veteran(page, hub)
    conditions = page.inner_text("#conditions")
    assert "No conditions" not in conditions
    assert "From MOD transition handover" in conditions
    assert "Armed Forces service" in page.inner_text("main")
    check_page(page, "03-person")


def test_record_goal_progress_and_see_the_new_version_and_the_audit_naming_the_user(hub, new_page):
    page = new_page()
    sign_in(page, hub, "demo.coordinator")
    open_plan(page, hub)
    check_page(page, "04-plan")
    card = page.locator(".nhsuk-card").first
    goal_id = card.get_attribute("id").removeprefix("goal-")
    before = int(re.search(r"version (\d+)", card.inner_text()).group(1))
    card.locator("select").select_option("improving")
    note = f"Started the access course ({time.time():.0f})"
    card.locator("textarea").fill(note)
    card.locator("button:has-text('Record progress')").click()
    page.wait_for_selector("text=Progress recorded")
    card = page.locator(f"#goal-{goal_id}")
    text = card.inner_text()
    assert "Improving" in text and note in text
    assert f"version {before + 1}" in text

    def trail_names_the_change():
        # The audit trail is written off the request path (a background writer), so the change
        # can reach it a moment after the page that made it: look again until it is there.
        page.reload()
        trail = page.locator(f"#goal-{goal_id} table", has_text="Who has looked at or changed this goal")
        return trail.locator("tr", has_text="Karen Hughes").filter(has_text="changed").count() >= 1

    wait_for(trail_names_the_change, 20, "the change in the goal's audit trail", interval=0.2)
    trail = page.locator(f"#goal-{goal_id} table", has_text="Who has looked at or changed this goal")
    assert "ipc-hub-workspace" in trail.inner_text()


def test_two_people_editing_one_plan_nothing_is_overwritten(hub, new_page):
    first, second = new_page(), new_page()
    sign_in(first, hub, "demo.coordinator")
    sign_in(second, hub, "demo.commissioner")
    plan_id = open_plan(first, hub)
    second.goto(f"{hub.base}/app/plans/{plan_id}")
    ours, theirs = f"First edit {time.time():.0f}", f"Second edit {time.time():.0f}"
    first.fill("#description", ours)
    second.fill("#description", theirs)
    first.click("button:has-text('Save the plan')")
    first.wait_for_selector("text=The plan is saved")
    second.click("button:has-text('Save the plan')")
    second.wait_for_selector("#conflict")
    warning = second.inner_text("#conflict")
    assert "Someone else changed this plan" in warning and ours in warning
    assert second.input_value("#description") == theirs  # what they typed is kept for them
    check_page(second, "05-plan-conflict")
    first.reload()
    assert ours in first.inner_text("main") and theirs not in first.inner_text("main")


def _a_statement_for_the_council_direct_payment(hub) -> float:
    """What a direct payment support service sends: a statement file with £123.45 of PA wages
    for the LA sample's person (NHS number 9990000018), dropped into the statements connector's
    folder under `up`, dated inside the council's direct payment account; returns the amount
    once the line is in the record."""
    auth = hub.bearer()
    [person] = httpx.get(f"{hub.base}/fhir/Patient", params={"identifier": "P100001"}, headers=auth).json()["entry"]
    subject = f"Patient/{person['resource']['id']}"
    accounts = httpx.get(f"{hub.base}/fhir/Account", params={"subject": subject}, headers=auth).json()["entry"]
    [account] = [a["resource"] for a in accounts if a["resource"]["type"]["coding"][0]["code"] == "direct-payment"]
    day = account["servicePeriod"]["start"][:10]
    statement = ("Provider_Code,Statement_Reference,Line_Reference,NHS_Number,Funding_Source,Management_Option,"
                 "Line_Date,Line_Type,Payee,Amount,Category,Description,Goal,Outcome,Setting\n"
                 f"DPSS02,S1,DPSS02-S1-1,9990000018,local-authority,direct-payment,{day},Spend,"
                 "Personal assistant (payroll PA-1),123.45,personal-assistant,PA wages,,,\n")
    partial = hub.data_dir / "statements-drop" / "statement.csv.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(statement, encoding="utf-8")
    partial.rename(partial.with_suffix(""))
    wait_for(lambda: httpx.get(f"{hub.base}/fhir/ChargeItem", params={"subject": subject}, headers=auth)
             .json().get("total", 0) == 1, 90, "the statement's line in the record")
    return 123.45


def test_the_budget_statement_with_its_chart(hub, new_page):
    spent = _a_statement_for_the_council_direct_payment(hub)
    page = new_page()
    sign_in(page, hub, "demo.coordinator")
    page.goto(f"{hub.base}/app?find=P100001")
    page.click("main ul a")
    page.wait_for_selector("h2:has-text('Plans')")
    page.click("a:has-text('udget')")
    page.wait_for_selector("svg.hub-chart")
    assert page.locator("svg.hub-chart rect").count() >= 2
    assert "£" in page.inner_text("table")
    # Spend comes from the spend lines (a statement never holds it): the line just written.
    assert page.inner_text("#spent").startswith(f"£{spent:,.2f}")
    row = page.locator("table tr", has_text="Direct payment").inner_text()
    assert f"£{spent:,.2f}" in row
    check_page(page, "06-budget")


def test_a_charity_user_cannot_see_conditions_the_veteran_did_not_share(hub, new_page):
    nhs, charity = new_page(), new_page()
    sign_in(nhs, hub, "demo.coordinator")
    patient_id = open_veteran(nhs, hub)
    assert "No conditions" not in nhs.inner_text("#conditions")
    sign_in(charity, hub, "demo.charity")
    charity.goto(f"{hub.base}/app?find={VETERAN_NHS}")
    charity.click(f"main ul a:has-text('{VETERAN}')")
    charity.wait_for_selector("h2:has-text('Who they are')")
    assert charity.url.endswith(f"/app/people/{patient_id}")
    assert "No conditions you may see" in charity.inner_text("#conditions")
    condition_names = [line for line in nhs.inner_text("#conditions").splitlines() if line.strip()][:1]
    assert condition_names and condition_names[0] not in charity.inner_text("main")
    check_page(charity, "07-person-as-charity")


def test_worklist_shows_the_handover_for_the_organisation(hub, new_page):
    page = new_page()
    sign_in(page, hub, "demo.commissioner")
    page.goto(f"{hub.base}/app/worklist")
    page.wait_for_selector("h1:has-text('Your worklist')")
    assert "GP registration handover" in page.inner_text("main")
    check_page(page, "08-worklist")


def test_an_operator_replays_a_dead_letter_and_sees_it_land(hub, new_page):
    drop = hub.data_dir / "la-drop"
    header = ("LA_Code,Event_Reference,LA_Person_Unique_Identifier,Client_Type,Event_Type,Event_Start_Date,"
              "Event_End_Date,Event_Outcome,Service_Type,Service_Component,Delivery_Mechanism,Unit_Cost,"
              "Cost_Frequency_Unit_Type,Planned_units_per_week\n")
    (drop / ".late-event.part").write_text(header + "E10000024,EV-9001,P777001,Service User,Request,2026-05-01,"
                                           "2026-05-02,Progress to Assessment,,,,,,\n")
    (drop / ".late-event.part").rename(drop / "late-event.csv")
    page = new_page()
    sign_in(page, hub, "demo.operator")

    def letter_shown() -> bool:
        page.goto(f"{hub.base}/app/operations")
        return page.locator(".nhsuk-card", has_text=LATE_EVENT).count() > 0

    wait_for(letter_shown, 90, "the dead letter on the operations page", interval=0.5)
    assert page.locator("#feeds tr", has_text="la-E10000024").count() == 1
    check_page(page, "09-operations")
    people = ("LA_Code,LA_Person_Unique_Identifier,NHS_Number,Given_Name,Family_Name,Date_of_Birth,Gender,"
              "Postcode,Date_of_Death\nE10000024,P777001,,Robin,Ashdown,1961-02-03,Female,NG2 3CD,\n")
    (drop / ".late-person.part").write_text(people)
    (drop / ".late-person.part").rename(drop / "late-person.csv")
    auth = hub.bearer()
    wait_for(lambda: httpx.get(f"{hub.base}/fhir/Patient", params={"identifier": "P777001"},
                               headers=auth).json().get("total"), 60, "the late person")
    card = page.locator(".nhsuk-card", has_text=LATE_EVENT)
    assert card.count() == 1 and "not-found" in card.inner_text()
    card.locator("button:has-text('Replay')").click()
    page.wait_for_selector("text=was put back on its topic")

    def landed() -> bool:
        page.goto(f"{hub.base}/app/operations")
        return page.locator(".nhsuk-card", has_text=LATE_EVENT).locator("text=Recorded").count() > 0

    wait_for(landed, 60, "the replayed message in the record", interval=0.5)
    status = page.locator(".nhsuk-card", has_text=LATE_EVENT).locator(".letter-status").inner_text()
    assert "by you" in status


def test_sign_in_through_the_external_openid_connect_provider(hub, new_page):
    hub.cli("users", "add", "ext.coordinator", "--name", "Priya Shah", "--role", "coordinator",
            "--partner-class", "nhs", "--organisation", "QT1", "--external-subject", EXTERNAL_SUBJECT)
    page = new_page()
    page.goto(f"{hub.base}/app")
    page.click("a:has-text('Sign in with NHS Care Identity (test provider)')")
    page.wait_for_selector("input[name=login]")
    assert page.url.startswith("http://127.0.0.1:") and f"{hub.base}/" not in page.url
    page.fill("input[name=login]", EXTERNAL_SUBJECT)
    page.fill("input[name=password]", "anything")
    page.click("button[type=submit]")
    page.wait_for_selector("button:has-text('Continue')")
    page.click("button:has-text('Continue')")
    page.wait_for_selector("h1:has-text('Your caseload')")
    assert "Priya Shah" in page.inner_text("header")


def test_an_external_identity_without_a_hub_account_is_refused(hub, new_page):
    page = new_page()
    page.goto(f"{hub.base}/app")
    page.click("a:has-text('Sign in with NHS Care Identity (test provider)')")
    page.fill("input[name=login]", "someone-the-hub-does-not-know")
    page.fill("input[name=password]", "anything")
    page.click("button[type=submit]")
    page.click("button:has-text('Continue')")
    page.wait_for_selector("h1:has-text('No hub account')")
    check_page(page, "13-no-account")


def test_sign_out_ends_the_session(hub, new_page):
    page = new_page()
    sign_in(page, hub, "demo.coordinator")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["hub_workspace"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    page.click("button:has-text('Sign out')")
    page.wait_for_selector("h1:has-text('You have signed out')")
    check_page(page, "11-signed-out")
    assert "hub_workspace" not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{hub.base}/app")
    page.wait_for_selector("h1:has-text('Sign in to IPC Hub')")  # not signed in any more, anywhere
    # The old cookie, replayed, opens nothing.
    page.context.add_cookies([{**session, "sameSite": "Lax"}])
    page.goto(f"{hub.base}/app")
    page.wait_for_selector("h1:has-text('Sign in to IPC Hub')")


def test_a_form_with_a_wrong_csrf_token_is_refused(hub, new_page):
    page = new_page()
    sign_in(page, hub, "demo.coordinator")
    open_plan(page, hub)
    before = page.inner_text("main")
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.value = 'forged')")
    page.fill("#description", "Forged change")
    page.click("button:has-text('Save the plan')")
    page.wait_for_selector("h1:has-text('This form has expired')")
    check_page(page, "12-csrf-refused")
    page.go_back()
    page.reload()
    assert "Forged change" not in page.inner_text("main") and "One-page profile" in before


def _a_cohort_of_twelve(hub) -> str:
    """Twelve people with two long-term conditions each (three of them with a learning disability
    too), written through the API; the multiple-conditions and complex-needs cohorts evaluated.
    Returns the tag in their names."""
    from tests.factories import patient
    from tests.pipeline.cohort_cases import LEARNING_DISABILITY, LONG_TERM, complex_needs, condition, multiple_conditions

    auth = {**hub.bearer(), "Content-Type": "application/fhir+json"}
    tag = f"Cmsn{int(time.time())}"
    entries = []
    for n in range(12):
        url = f"urn:uuid:00000000-0000-4000-9000-{n:012d}"
        entries.append({"fullUrl": url, "resource": patient(family=f"{tag}{n}", given="Test"),
                        "request": {"method": "POST", "url": "Patient"}})
        codes = [*LONG_TERM[:2], *([LEARNING_DISABILITY] if n < 3 else [])]
        entries += [{"resource": condition(url, code, "active"), "request": {"method": "POST", "url": "Condition"}}
                    for code in codes]
    reply = httpx.post(f"{hub.base}/fhir", headers=auth, timeout=60,
                       json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert reply.status_code == 200, reply.text[:400]
    for definition in (multiple_conditions("def-browser-mltc"), complex_needs("def-browser-complex")):
        # Created by POST: the hub assigns ids (no update-as-create under an id a client chooses).
        body = {k: v for k, v in definition.items() if k != "id"}
        made = httpx.post(f"{hub.base}/fhir/Group", headers=auth, json=body)
        assert made.status_code == 201, made.text[:400]
        found = httpx.post(f"{hub.base}/fhir/Group/{made.json()['id']}/$evaluate-cohort", headers=auth, timeout=120,
                           json={"resourceType": "Parameters"})
        assert found.status_code == 200, found.text[:400]
    return tag


def test_the_commissioners_page_charts_each_cohort_and_downloads_the_summary(hub, new_page):
    tag = _a_cohort_of_twelve(hub)
    page = new_page()
    sign_in(page, hub, "demo.commissioner")
    page.click("header a:has-text('Commissioning')")
    page.wait_for_selector("h1:has-text('Commissioning')")
    population = httpx.get(f"{hub.base}/fhir/Patient", headers=hub.bearer(), params={"_summary": "count"}).json()["total"]
    assert page.inner_text("#population") == f"{population:,}"
    mltc = page.locator("section.hub-cohort", has=page.locator("h2", has_text="Multiple long-term conditions"))
    # The twelve (the demonstration people have none of these conditions): a bar and a table row each.
    assert mltc.locator("tr[data-measure='identified'] td").nth(1).inner_text() == "12"
    assert mltc.locator("tr[data-measure='offered'] td").nth(1).inner_text() == "12"
    assert mltc.locator("svg.hub-chart rect").count() >= 2
    assert "people in the cohort now: 12" in mltc.locator("svg desc").text_content()
    # Three people with complex needs: fewer than ten, withheld in the table and the chart alike.
    complex_ = page.locator("section.hub-cohort", has=page.locator("h2", has_text="Complex needs"))
    assert complex_.locator("tr[data-measure='identified'] td").nth(1).inner_text() == "suppressed"
    assert "people in the cohort now: suppressed" in complex_.locator("svg desc").text_content()
    assert tag not in page.inner_text("main")   # nobody is named
    check_page(page, "10-commissioning")
    download = page.context.request.get(f"{hub.base}/app/commissioning/summary.csv")
    assert download.status == 200 and download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    text = download.text()
    assert "Multiple long-term conditions,identified,people in the cohort now,12," in text
    assert "Complex needs,identified,people in the cohort now,suppressed," in text
    assert f"people you may see,{population}," in text and tag not in text
    # Only commissioners: a coordinator is refused the page and the download, with no figures.
    other = new_page()
    sign_in(other, hub, "demo.coordinator")
    assert other.locator("header a:has-text('Commissioning')").count() == 0
    answer = other.goto(f"{hub.base}/app/commissioning")
    assert answer.status == 403 and "Not available to your role" in other.inner_text("main")
    assert other.context.request.get(f"{hub.base}/app/commissioning/summary.csv").status == 403


def test_the_childrens_worklist_shows_each_childs_steps_with_their_age_and_filters(hub, new_page):
    """The council's children's extract dropped into the folder `up` watches; the coordinator's
    children's worklist lists the EHC assessment steps and the growing-up steps the plan worker
    raised, each with the child's name and age, overdue ones marked, filtered by kind and name."""
    from datetime import date
    from pathlib import Path

    import connectors.children
    from hub.fhir.ages import age_on

    samples = Path(connectors.children.__file__).parent / "samples"
    drop = hub.data_dir / "children-drop"
    for name in ("children.csv", "ehc.csv"):
        (drop / f"{name}.part").write_bytes((samples / name).read_bytes())
        (drop / f"{name}.part").rename(drop / name)
    auth = hub.bearer()
    tasks = "https://ipc-hub.example.org/fhir/CodeSystem/ipc-children-task"

    def raised(code: str) -> int:
        return httpx.get(f"{hub.base}/fhir/Task", headers=auth, params={"code": f"{tasks}|{code}"}).json().get("total", 0)

    wait_for(lambda: raised("ehc-final") == 2, 90, "the children's EHC timeline")
    wait_for(lambda: raised("adult-transfer") == 1, 90, "Ellie's transfer to adult services from the plan worker")

    page = new_page()
    sign_in(page, hub, "demo.coordinator")
    page.click("a.nhsuk-header__navigation-link:has-text('Children')")
    page.wait_for_selector("h1:has-text('Children and young people')")
    today = date.today()
    sams_final = page.locator("tr", has_text="Final EHC plan issued").filter(has_text="Sam Okafor")
    assert sams_final.count() == 1
    cells = sams_final.locator("td").all_inner_texts()
    assert cells[1] == str(age_on(date(2015, 11, 2), today))
    assert ("Overdue" in cells[3]) == (date(2026, 7, 20) < today)      # 20 weeks after 2 March 2026
    ellie = page.locator("tr", has_text="Ellie Turner")
    hers = "\n".join(ellie.all_inner_texts())
    assert "Transfer to adult services" in hers and "Continuing care to NHS Continuing Healthcare check" in hers
    assert ellie.first.locator("td").nth(1).inner_text() == str(age_on(date(2009, 5, 14), today))
    check_page(page, "14-children")

    page.select_option("#kind", "transition")
    page.click("button:has-text('Show')")
    page.wait_for_url(re.compile(r"kind=transition"))
    shown = page.inner_text("main")
    assert "Transfer to adult services" in shown and "Final EHC plan issued" not in shown
    page.select_option("#kind", "all")
    page.fill("#name", "sam")
    page.click("button:has-text('Show')")
    page.wait_for_url(re.compile(r"name=sam"))
    children = set(page.locator("tbody tr td:first-child").all_inner_texts())
    assert children == {"Sam Okafor"}

    # A commissioner has no children's worklist.
    other = new_page()
    sign_in(other, hub, "demo.commissioner")
    assert other.goto(f"{hub.base}/app/children").status == 403
