"""Property: whatever resource the hub accepts can be read back unchanged and passes $validate, and
whatever it refuses, $validate finds an error in. Resources are drawn by hypothesis from a small
grammar of Patients, Observations and CarePlans that mixes valid values with the faults the base
specification forbids (unknown codes, empty strings and arrays, NUL characters, periods ending
before they start, unsafe narratives, extensions with a value and children)."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hub.fhir.jsontext import dumps, loads

JSON = {"Content-Type": "application/fhir+json"}
XHTML = "http://www.w3.org/1999/xhtml"

texts = st.text(max_size=8)
dates = st.sampled_from(["2020-01-01", "2021-06-30", "2021-06-30T10:00:00Z", "2019", "2022-02"])
narratives = st.sampled_from([
    f'<div xmlns="{XHTML}"><p>Seen at home</p></div>',
    f'<div xmlns="{XHTML}"><p onclick="x()">Seen</p></div>',
    f'<div xmlns="{XHTML}"><script>x()</script>Seen</div>',
    f'<div xmlns="{XHTML}"> </div>',
    f'<div xmlns="{XHTML}"><table><tr><td>a</td></tr></table></div>',
])


def optional(**fields: st.SearchStrategy) -> st.SearchStrategy[dict[str, Any]]:
    """A dict with any subset of the fields."""
    return st.fixed_dictionaries({}, optional=fields)


periods = optional(start=dates, end=dates)
extensions = st.lists(st.one_of(
    st.fixed_dictionaries({"url": st.just("https://example.org/fhir/x"), "valueString": texts}),
    st.fixed_dictionaries({"url": st.just("https://example.org/fhir/x"), "valueString": texts,
                           "extension": st.just([{"url": "y", "valueBoolean": True}])}),
), max_size=2)
patients = optional(
    gender=st.sampled_from(["male", "female", "other", "unknown", "banana", ""]),
    birthDate=st.sampled_from(["1980-01-01", "1980", "1980-13-01", ""]),
    active=st.booleans(),
    name=st.lists(optional(family=texts, given=st.lists(texts, max_size=2)), max_size=2),
    telecom=st.lists(optional(system=st.sampled_from(["phone", "email", "fax-machine"]), value=texts,
                              period=periods), max_size=2),
    contact=st.lists(optional(name=optional(family=texts), period=periods,
                              gender=st.sampled_from(["female", "nope"])), max_size=1),
    text=st.fixed_dictionaries({"status": st.sampled_from(["generated", "additional", "made-up"]),
                                "div": narratives}),
    extension=extensions,
).map(lambda fields: {"resourceType": "Patient", **fields})
observations = optional(
    valueQuantity=optional(value=st.decimals(-1000, 1000, places=2).map(str).map(loads),
                           comparator=st.sampled_from(["<", ">=", "~~"]), unit=texts,
                           code=st.sampled_from(["kg", "mm[Hg]"]), system=st.just("http://unitsofmeasure.org")),
    dataAbsentReason=st.just({"text": "not asked"}),
    effectivePeriod=periods,
    category=st.lists(st.fixed_dictionaries({"coding": st.lists(optional(
        system=st.just("http://terminology.hl7.org/CodeSystem/observation-category"),
        code=st.sampled_from(["vital-signs", "social-history", "not-a-category"])), max_size=1)}), max_size=1),
).map(lambda fields: {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, **fields})
care_plans = optional(
    period=periods,
    activity=st.lists(optional(reference=st.just({"reference": "ServiceRequest/x"}),
                               detail=optional(status=st.sampled_from(["scheduled", "someday"]),
                                               description=texts)), max_size=2),
    extension=extensions,
).map(lambda fields: {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
                      "subject": {"display": "Dee Okafor"}, **fields})


def _dangling(outcome: dict[str, Any]) -> bool:
    """Refused only because a local reference resolves to nothing in the record (hub.store.integrity)."""
    return all(i["code"] == "processing" and "in the record" in i.get("diagnostics", "")
               for i in _errors(outcome)) and bool(_errors(outcome))


def _errors(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(resource=st.one_of(patients, observations, care_plans))
def test_what_is_accepted_reads_back_and_validates_and_what_is_refused_does_not(fhir, resource):
    res_type = resource["resourceType"]
    body = dumps(resource)
    written = fhir.post(f"/{res_type}", content=body, headers=JSON)
    checked = fhir.post(f"/{res_type}/$validate", content=body, headers=JSON)
    assert checked.status_code == 200
    event(f"written {written.status_code}")
    if written.status_code == 201:
        assert _errors(checked.json()) == []
        stored = written.json()
        read = loads(fhir.get(f"/{res_type}/{stored['id']}").content)
        assert {k: v for k, v in read.items() if k not in ("id", "meta")} == resource
        again = fhir.get(f"/{res_type}/{stored['id']}/$validate").json()
        assert _errors(again) == []
    else:
        assert written.status_code in (400, 422), written.text
        if _dangling(written.json()):
            return  # a reference to nothing: the store's referential integrity, not content $validate judges
        assert _errors(checked.json()), (written.json(), checked.json())
