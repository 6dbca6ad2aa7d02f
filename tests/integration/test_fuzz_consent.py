"""No unauthorised data in any response: marker strings are planted in the records of people
who have made no consent decision (so a charity sees nothing of them, by the configured
default), then requests of every kind are generated with a charity's token that the scopes
allow (`system/*.rs`), so only consent stands between it and the markers. No marker and no
planted NHS number may appear in any answer, and no search may count what it cannot show."""
from __future__ import annotations

import uuid
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import factories

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
FAMILY_PREFIX = "Qzv"  # searched for by prefix; the marker after it must never come back
PEOPLE = 3


class Planted:
    def __init__(self) -> None:
        self.markers: list[str] = []
        self.ids: dict[str, list[str]] = {"Patient": [], "CarePlan": [], "Goal": [], "RelatedPerson": []}

    def marker(self) -> str:
        value = f"MRK{uuid.uuid4().hex[:16]}"
        self.markers.append(value)
        return value

    def leaked(self, text: str) -> list[str]:
        return [m for m in self.markers if m in text]


@pytest.fixture(scope="module")
def planted(hub_url: str, admin_token: str) -> Planted:
    found = Planted()
    with httpx.Client(base_url=f"{hub_url}/fhir", headers={"Authorization": f"Bearer {admin_token}",
                                                            **FHIR_JSON}) as admin:
        for _ in range(PEOPLE):
            nhs = factories.test_nhs_number()
            found.markers.append(nhs)
            person = factories.patient(family=f"{FAMILY_PREFIX}{found.marker()}", given=found.marker())
            person["identifier"][0]["value"] = nhs
            patient_id = _create(admin, person)
            found.ids["Patient"].append(patient_id)
            ref = f"Patient/{patient_id}"
            found.ids["CarePlan"].append(_create(admin, factories.care_plan(ref, title=found.marker(),
                                                                            description=found.marker())))
            goal = factories.goal(ref, text=found.marker())
            found.ids["Goal"].append(_create(admin, goal))
            carer = factories.carer(ref)
            carer["name"] = [{"family": found.marker(), "given": [found.marker()]}]
            found.ids["RelatedPerson"].append(_create(admin, carer))
        # The detector works: the people's own NHS partner sees the markers.
        shown = admin.get(f"/Patient/{found.ids['Patient'][0]}/$everything").text
        assert len(found.leaked(shown)) >= 4
    return found


def _create(client: httpx.Client, resource: dict) -> str:
    response = client.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text[:500]
    return response.json()["id"]


def requests(planted: Planted) -> st.SearchStrategy[tuple[str, str, dict | None]]:
    """(method, path with query, form) a curious charity might try."""
    types = sorted(planted.ids)
    any_id = st.sampled_from(types).flatmap(lambda t: st.sampled_from(planted.ids[t]).map(lambda i: (t, i)))
    patient = st.sampled_from(planted.ids["Patient"])
    nhs = st.sampled_from([m for m in planted.markers if m.isdigit()])
    search_params = st.one_of(
        any_id.map(lambda ti: (ti[0], {"_id": ti[1]})),
        patient.map(lambda p: ("Patient", {"family": FAMILY_PREFIX})),
        patient.map(lambda p: ("Patient", {"name": FAMILY_PREFIX, "_summary": "count"})),
        nhs.map(lambda n: ("Patient", {"identifier": f"https://fhir.nhs.uk/Id/nhs-number|{n}"})),
        st.tuples(st.sampled_from(["CarePlan", "Goal", "RelatedPerson"]), patient).map(
            lambda tp: (tp[0], {"patient": tp[1]})),
        patient.map(lambda p: ("CarePlan", {"subject": f"Patient/{p}", "_include": "CarePlan:subject"})),
        patient.map(lambda p: ("Patient", {"_id": p, "_revinclude": "CarePlan:subject"})),
        patient.map(lambda p: ("Patient", {"_id": p, "_revinclude": "*", "_total": "accurate"})),
        st.sampled_from(types).map(lambda t: (t, {"_sort": "-_lastUpdated", "_count": "100"})),
        st.sampled_from(types).map(lambda t: (t, {"_elements": "name,title,description"})),
    )
    reads = st.one_of(
        any_id.map(lambda ti: ("GET", f"/{ti[0]}/{ti[1]}", None)),
        any_id.map(lambda ti: ("GET", f"/{ti[0]}/{ti[1]}/_history/1", None)),
        any_id.map(lambda ti: ("GET", f"/{ti[0]}/{ti[1]}/_history", None)),
        any_id.map(lambda ti: ("GET", f"/{ti[0]}/{ti[1]}?_format=xml", None)),
        patient.map(lambda p: ("GET", f"/Patient/{p}/$everything", None)),
        st.sampled_from(types).map(lambda t: ("GET", f"/{t}/_history?_count=100", None)),
        st.just(("GET", "/_history?_count=100", None)),
        st.just(("GET", "/AuditEvent?_count=100", None)),
    )
    searches = search_params.map(lambda tq: ("GET", f"/{tq[0]}?{urlencode(tq[1])}", None))
    posted = search_params.map(lambda tq: ("POST", f"/{tq[0]}/_search", tq[1]))
    return st.one_of(reads, searches, posted)


def test_a_charity_without_consent_never_sees_a_marker(planted, fhir_as):
    charity = fhir_as(partner_class="charity", organisation="1234567", scopes=("system/*.rs",))

    @settings(max_examples=250, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(planted))
    def probe(request) -> None:
        method, path, form = request
        if method == "GET":
            response = charity.get(path)
        else:
            response = charity.post(path, data=form, headers=FORM)
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        asked = path + str(form)  # what the charity sent itself (an NHS number it searched by) is no leak
        leaked = [m for m in planted.leaked(response.text) if m not in asked]
        assert not leaked, (method, path, form, response.status_code, response.text[:500])
        if response.status_code == 200 and "_id=" in path + str(form):
            body = response.json()
            if body.get("resourceType") == "Bundle" and "total" in body:
                assert body["total"] == 0, (path, form, body["total"])  # not even a count

    probe()
