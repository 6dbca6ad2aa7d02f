"""Topic-based Subscriptions (Subscriptions R5 Backport for R4) end to end: a real API, the real
broker and PostgreSQL, the outbox relay and the notifier worker on threads of the test, and real
HTTP receivers started by the tests (one healthy, one that fails for a while, one that never
recovers). Consent is judged when each notification is sent, with the subscriber's access."""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from hub.config import Settings
from hub.fhir.jsontext import dumps
from hub.pipeline.service import Relay
from hub.subscriptions.delivery import Notifier
from tests.integration.access_cases import JSON, give_consent, lead_charity_consent, make_person, permit
from tests.integration.conftest import bearer, start_api  # noqa: F401 (fixture)
from tests.pipeline.conftest import count, wait_for

pytestmark = pytest.mark.integration

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://ipc-hub.example.org/fhir/SubscriptionTopic/"
IPC = "https://ipc-hub.example.org/fhir/"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
SECRET = "Bearer receiver-secret-1"
HEADER = f"Authorization: {SECRET}"


class Receiver:
    """A real HTTP endpoint: answers each POST with `answer(n)` (n counts from 1) and keeps
    every notification it took (2xx)."""

    def __init__(self, answer: Callable[[int], int] = lambda n: 200, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.taken: list[dict] = []
        self.auth: list[str | None] = []
        self.requests: list[tuple[str, str, bytes]] = []  # every request taken: method, path, body
        self.tries = 0
        # A notification `hold` picks is answered only once `released` is set (a slow endpoint).
        self.hold: Callable[[dict], bool] | None = None
        self.released = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hold is not None and body and receiver.hold(json.loads(body)):
                    receiver.released.wait(300)  # outside the lock: other requests go on
                with receiver.lock:
                    receiver.tries += 1
                    status = receiver.answer(receiver.tries)
                    if 200 <= status < 300:
                        receiver.requests.append((self.command, self.path, body))
                        if body:
                            receiver.taken.append(json.loads(body))
                        receiver.auth.append(self.headers.get("Authorization"))
                        peer = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
                        if peer:
                            receiver.peers.append(dict(x[0] for x in peer["subject"])["commonName"])
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST  # noqa: N815 (a classic rest-hook PUTs the resource)

            def log_message(self, *args) -> None:
                return None

        self.peers: list[str] = []  # the client certificate's CN, for each request over mutual TLS
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, kind: str) -> list[dict]:
        with self.lock:
            return [b for b in self.taken if b.get("resourceType") == "Bundle" and status_of(b)["type"] == kind]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def status_of(bundle: dict) -> dict:
    """The SubscriptionStatus Parameters (first entry) as name → value (notification-events as lists)."""
    params = bundle["entry"][0]["resource"]
    assert params["meta"]["profile"] == [STATUS_PROFILE]
    out: dict = {"events": []}
    for p in params["parameter"]:
        if p["name"] == "notification-event":
            out["events"].append({part["name"]: next(v for k, v in part.items() if k.startswith("value"))
                                  for part in p["part"]})
        else:
            out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return out


def subscription(topic: str, endpoint: str, payload: str = "full-resource", filters: tuple[str, ...] = (),
                 headers: tuple[str, ...] = (HEADER,)) -> dict:
    resource = {
        "resourceType": "Subscription", "status": "requested", "reason": "Tell us as it happens",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "criteria": TOPIC + topic,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "header": list(headers),
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": payload}]}},
    }
    if filters:
        resource["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f}
                                               for f in filters]}
    return resource


def ipc_plan(patient: str, description: str) -> dict:
    """A draft IPC care and support plan (record part care-support-plan), at the conversation stage."""
    return {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
            "meta": {"profile": [IPC + "StructureDefinition/ipc-care-plan"]},
            "extension": [{"url": IPC + "StructureDefinition/ipc-stage", "valueCodeableConcept": {
                "coding": [{"system": IPC + "CodeSystem/ipc-stage", "code": "conversation"}]}}],
            "category": [{"coding": [{"system": IPC + "CodeSystem/ipc-plan-category", "code": "care-support-plan"}]}],
            "title": "My plan", "period": {"start": "2026-01-01", "end": "2026-12-31"},
            "subject": {"reference": f"Patient/{patient}"}, "description": description}


class Running:
    """The relay and the notifier on threads of the test, stopped at its end."""

    def __init__(self, bus, database_url: str, settings: Settings) -> None:
        self.stop = threading.Event()
        notifier = Notifier(bus, database_url, settings)
        self.threads = [threading.Thread(target=Relay(bus, database_url).run, args=(self.stop,), daemon=True),
                        threading.Thread(target=notifier.run, args=(self.stop, f"{bus.topic_prefix}.notifier"),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.fixture()
def api(start_api):
    return start_api(subscription_allow_http=True)


@pytest.fixture()
def run_notifier(clean_db, bus, api):
    started: list[Running] = []

    def start(**overrides) -> Running:
        values = dict(database_url=clean_db, base_url=api.settings.base_url, consent_defaults=api.settings.consent_defaults,
                      subscription_retry_first_s=0.05, subscription_retry_max_s=0.2, subscription_give_up_s=3600.0,
                      subscription_timeout_s=5.0)
        values.update(overrides)
        running = Running(bus, clean_db, Settings(**values))
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


@pytest.fixture()
def receivers():
    made: list[Receiver] = []

    def make(answer: Callable[[int], int] = lambda n: 200, tls: ssl.SSLContext | None = None) -> Receiver:
        made.append(Receiver(answer, tls))
        return made[-1]

    yield make
    for r in made:
        r.close()


def client(api, token_for, **claims) -> httpx.Client:
    return httpx.Client(base_url=f"{api.url}/fhir", timeout=30,
                        headers={"Accept": "application/fhir+json", **bearer(token_for(**claims))})


def post(fhir: httpx.Client, resource: dict) -> dict:
    r = fhir.post(f"/{resource['resourceType']}", content=dumps(resource), headers=JSON)
    assert r.status_code == 201, r.text
    return r.json()


def test_handshake_then_full_resource_notification_with_status_first(api, token_for, run_notifier, receivers):
    receiver = receivers()
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-nhs-full")
    sub = post(nhs, subscription("plan-changed", receiver.url))
    assert sub["status"] == "requested"
    assert sub["channel"]["header"] != [HEADER]  # the receiver's secret is not kept in the record
    run_notifier()
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    assert receiver.auth[0] == SECRET
    wait_for(lambda: nhs.get(f"/Subscription/{sub['id']}").json()["status"] == "active", 30, "the status active")

    person = post(nhs, {"resourceType": "Patient", "name": [{"family": "Pushed"}]})
    plan = post(nhs, ipc_plan(person["id"], "First version"))
    wait_for(lambda: receiver.of_type("event-notification"), 30, "the plan notification")
    bundle = receiver.of_type("event-notification")[0]
    assert bundle["type"] == "history"
    status = status_of(bundle)
    assert status["subscription"]["reference"].endswith(f"/Subscription/{sub['id']}")
    assert status["topic"] == TOPIC + "plan-changed"
    assert status["status"] == "active"
    assert status["events-since-subscription-start"] == "1"
    assert [e["event-number"] for e in status["events"]] == ["1"]
    assert status["events"][0]["focus"]["reference"].endswith(f"/CarePlan/{plan['id']}")
    focus = bundle["entry"][1]
    assert focus["resource"]["id"] == plan["id"] and focus["resource"]["description"] == "First version"
    assert focus["request"] == {"method": "POST", "url": "CarePlan"}
    # The Patient written before it matched no topic: nothing was sent for it.
    assert all(e.get("resource", {}).get("resourceType") != "Patient" for b in receiver.taken for e in b["entry"])

    # $status and $events answer the owner.
    found = nhs.get(f"/Subscription/{sub['id']}/$status").json()
    assert found["type"] == "searchset"
    assert status_of(found)["type"] == "query-status" and status_of(found)["events-since-subscription-start"] == "1"
    events = nhs.get(f"/Subscription/{sub['id']}/$events", params={"eventsSinceNumber": "1",
                                                                  "content": "id-only"}).json()
    assert status_of(events)["type"] == "query-event"
    assert [e["event-number"] for e in status_of(events)["events"]] == ["1"]
    assert "resource" not in events["entry"][1] and events["entry"][1]["fullUrl"].endswith(f"/CarePlan/{plan['id']}")


def test_a_client_sees_only_its_own_subscriptions(api, token_for, receivers, clean_db):
    receiver = receivers()
    mine = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-owner")
    other = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-other")
    sub = post(mine, subscription("plan-changed", receiver.url))
    assert other.get(f"/Subscription/{sub['id']}").status_code == 404
    assert other.get(f"/Subscription/{sub['id']}/$status").status_code == 404
    assert other.get(f"/Subscription/{sub['id']}/$events").status_code == 404
    assert other.delete(f"/Subscription/{sub['id']}").status_code == 404
    assert other.get("/Subscription").json().get("total") == 0
    assert mine.get("/Subscription").json()["total"] == 1
    assert other.get("/Subscription/_history").status_code == 405
    history = other.get("/_history", params={"_count": "100"}).json()
    assert all(e["resource"]["resourceType"] != "Subscription" for e in history.get("entry", []) if "resource" in e)
    assert mine.delete(f"/Subscription/{sub['id']}").status_code == 204
    # Creating one needs the Subscription scope: a client granted only reads of plans may not.
    reader = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-no-scope",
                    scopes=["system/CarePlan.rs"])
    refused = reader.post("/Subscription", content=dumps(subscription("plan-changed", receiver.url)), headers=JSON)
    assert refused.status_code == 403, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(("change", "element"), [
    (lambda s: s.update(criteria="https://ipc-hub.example.org/fhir/SubscriptionTopic/no-such-topic"),
     "Subscription.criteria"),
    (lambda s: s.update(criteria="Observation?no-such-parameter=1"), "Subscription.criteria"),
    (lambda s: s.update(criteria="NoSuchType?code=1"), "Subscription.criteria"),
    (lambda s: s["channel"].update(type="websocket"), "Subscription.channel.type"),
    (lambda s: s["channel"].update(endpoint="ftp://example.org/x"), "Subscription.channel.endpoint"),
    (lambda s: s["channel"].pop("_payload"), "Subscription.channel.payload"),
    (lambda s: s.update(_criteria={"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                                  "valueString": "CarePlan?status=active"}]}),
     "Subscription.criteria.extension[0]"),
    (lambda s: s.update(status="error"), "Subscription.status"),
])
def test_a_subscription_the_hub_cannot_deliver_is_refused_naming_the_element(api, token_for, receivers,
                                                                              change, element):
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1")
    body = subscription("plan-changed", receivers().url)
    change(body)
    r = nhs.post("/Subscription", content=dumps(body), headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == [element]


def test_http_endpoints_are_refused_unless_allowed(fhir):
    r = fhir.post("/Subscription", content=dumps(subscription("plan-changed", "http://127.0.0.1:9/x")),
                  headers=JSON)
    assert r.status_code == 422
    assert "https" in r.json()["issue"][0]["diagnostics"]


def test_capability_statement_lists_the_topics_and_operations(fhir):
    statement = fhir.get("/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    topics = {e["valueCanonical"] for e in entry["extension"]
              if e["url"] == BACKPORT + "capabilitystatement-subscriptiontopic-canonical"}
    assert {TOPIC + t for t in ("plan-changed", "plan-agreed", "budget-statement-changed", "encounter-admission",
                                "encounter-discharge", "encounter-transfer", "mod-handover-received",
                                "patient-merged", "handover-overdue", "review-due", "review-overdue")} == topics
    assert {"status", "events"} <= {op["name"] for op in entry["operation"]}
    assert "history-type" not in {i["code"] for i in entry["interaction"]}


def test_consent_at_delivery_charity_told_only_what_the_person_shared(api, token_for, run_notifier, receivers,
                                                                      fhir, recorder):
    shared, private = make_person(fhir), make_person(fhir)
    private.charity_number = shared.charity_number  # the same charity, one consent each
    lead_charity_consent(recorder, shared)
    receiver = receivers()
    charity = client(api, token_for, partner_class="charity", organisation=shared.charity_number,
                     client_id="sub-charity", scopes=["system/CarePlan.rs", "system/Subscription.cruds"])
    sub = post(charity, subscription("plan-changed", receiver.url, payload="full-resource"))
    run_notifier()
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    private_plan = post(fhir, ipc_plan(private.patient, "Not shared with the charity"))
    shared_plan = post(fhir, ipc_plan(shared.patient, "Shared with the charity"))
    r = fhir.put(f"/CarePlan/{private_plan['id']}", content=dumps(dict(private_plan, description="Not shared, v2")),
                 headers=JSON)
    assert r.status_code == 200, r.text
    shared_plan = fhir.put(f"/CarePlan/{shared_plan['id']}", content=dumps(dict(shared_plan, description="Shared, v2")),
                           headers=JSON).json()
    # Four events matched; the two the charity may not read were withheld without a number, so
    # the two it was told are numbered 1 and 2: no gap says that something was hidden from it.
    wait_for(lambda: _settled(sub["id"], 4), 30, "all four events judged and settled")
    status = status_of(charity.get(f"/Subscription/{sub['id']}/$status").json())
    assert status["events-since-subscription-start"] == "2"
    told = [(e["event-number"], b["entry"][1 + i]["resource"]["description"])
            for b in receiver.of_type("event-notification") for i, e in enumerate(status_of(b)["events"])]
    assert told == [("1", "Shared with the charity"), ("2", "Shared, v2")]
    assert all("Not shared" not in json.dumps(b) for b in receiver.taken)
    events = charity.get(f"/Subscription/{sub['id']}/$events", params={"eventsSinceNumber": "1"}).json()
    assert [e["event-number"] for e in status_of(events)["events"]] == ["1", "2"]

    # The person withdraws consent: the next change of the shared plan is not sent, at once.
    give_consent(recorder, shared, [permit("lead-charity", ["demographics"], shared.charity)])
    changed = dict(shared_plan, description="Changed after consent was withdrawn")
    assert fhir.put(f"/CarePlan/{shared_plan['id']}", content=dumps(changed), headers=JSON).status_code == 200
    wait_for(lambda: _settled(sub["id"], 5), 30, "the fifth event judged")
    assert status_of(charity.get(f"/Subscription/{sub['id']}/$status").json())["events-since-subscription-start"] \
        == "2"
    assert all("withdrawn" not in json.dumps(b) for b in receiver.taken)
    # $events, asked now, shows none of the plans: the charity may read neither at this moment.
    events = charity.get(f"/Subscription/{sub['id']}/$events", params={"eventsSinceNumber": "1"}).json()
    assert status_of(events)["events"] == [] and len(events["entry"]) == 1


def _settled(sub_id: str, matched: int) -> bool:
    """`matched` events were queued, each was judged (numbered or withheld), and every numbered
    one was delivered."""
    return count(_DB[0], "SELECT count(*) FROM subscription WHERE id = %s AND matched = %s AND judged = matched "
                 "AND delivered_through = events_since_start", sub_id, matched) == 1


_DB: list[str] = []


@pytest.fixture(autouse=True)
def _database(clean_db):
    _DB[:] = [clean_db]


def test_failing_endpoint_gets_every_event_once_in_order_after_it_recovers(api, token_for, run_notifier,
                                                                           receivers, fhir):
    # The handshake is taken; then four refusals; then it recovers.
    receiver = receivers(lambda n: 200 if n == 1 or n > 5 else 503)
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-flaky")
    sub = post(nhs, subscription("plan-changed", receiver.url, payload="id-only"))
    run_notifier()
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Flaky"}]})
    plan = post(fhir, ipc_plan(person["id"], "v1"))
    for n in range(2, 6):
        plan = fhir.put(f"/CarePlan/{plan['id']}", content=dumps(dict(plan, description=f"v{n}")),
                        headers=JSON).json()
    wait_for(lambda: sum(len(status_of(b)["events"]) for b in receiver.of_type("event-notification")) >= 5, 60,
             "all five events")
    numbers = [int(e["event-number"]) for b in receiver.of_type("event-notification") for e in status_of(b)["events"]]
    assert numbers == [1, 2, 3, 4, 5]
    assert receiver.tries > len(receiver.taken)  # some POSTs were refused and tried again
    row = nhs.get(f"/Subscription/{sub['id']}").json()
    assert row["status"] == "active"


def test_dead_endpoint_goes_to_error_and_events_stay_for_events_operation(api, token_for, run_notifier,
                                                                          receivers, fhir):
    receiver = receivers(lambda n: 200 if n == 1 else 500)
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-dead")
    sub = post(nhs, subscription("plan-changed", receiver.url, payload="id-only"))
    run_notifier(subscription_give_up_s=1.0)
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Dead"}]})
    made = post(fhir, ipc_plan(person["id"], "never told"))
    wait_for(lambda: nhs.get(f"/Subscription/{sub['id']}").json()["status"] == "error", 60, "the error status")
    stored = nhs.get(f"/Subscription/{sub['id']}").json()
    assert "HTTP 500" in stored["error"]
    status = status_of(nhs.get(f"/Subscription/{sub['id']}/$status").json())
    assert status["status"] == "error" and "HTTP 500" in status["error"]["text"]
    events = nhs.get(f"/Subscription/{sub['id']}/$events").json()
    assert [e["event-number"] for e in status_of(events)["events"]] == ["1"]
    assert events["entry"][1]["fullUrl"].endswith(f"/CarePlan/{made['id']}")
    assert receiver.of_type("event-notification") == []


def test_slow_endpoint_does_not_delay_another(api, token_for, run_notifier, receivers, fhir):
    slow_receiver, quick_receiver = receivers(), receivers()
    # Its event notifications are held until the test has seen the other receiver told (by the
    # notification's type, so a retried handshake or a heartbeat is not mistaken for one).
    slow_receiver.hold = lambda bundle: bundle.get("resourceType") == "Bundle" and \
        status_of(bundle)["type"] == "event-notification"
    release = slow_receiver.released
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-speed")
    post(nhs, subscription("plan-changed", slow_receiver.url))
    post(nhs, subscription("plan-changed", quick_receiver.url))
    run_notifier()
    wait_for(lambda: slow_receiver.of_type("handshake") and quick_receiver.of_type("handshake"), 30, "handshakes")
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Speed"}]})
    post(fhir, ipc_plan(person["id"], "told quickly"))
    try:
        wait_for(lambda: quick_receiver.of_type("event-notification"), 30, "the quick receiver's notification")
        assert slow_receiver.of_type("event-notification") == []  # still held by its own slow endpoint
    finally:
        release.set()
    wait_for(lambda: slow_receiver.of_type("event-notification"), 30, "the slow receiver's notification")


def test_classic_criteria_rest_hook_empty_post_and_full_resource_put(api, token_for, run_notifier, receivers, fhir):
    pinged, pushed = receivers(), receivers()
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-classic")
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Classic"}]})
    criteria = f"CarePlan?subject=Patient/{person['id']}&status=draft"
    classic = {"resourceType": "Subscription", "status": "requested", "reason": "R4 rest-hook",
               "criteria": criteria, "channel": {"type": "rest-hook", "endpoint": pinged.url, "header": [HEADER]}}
    ping = post(nhs, classic)
    push = post(nhs, dict(classic, channel={"type": "rest-hook", "endpoint": pushed.url,
                                            "payload": "application/fhir+json"}))
    run_notifier()
    wait_for(lambda: nhs.get(f"/Subscription/{push['id']}").json()["status"] == "active", 30, "active")
    other = post(fhir, {"resourceType": "Patient", "name": [{"family": "NotWatched"}]})
    post(fhir, ipc_plan(other["id"], "another person's plan"))           # not this search's
    plan = post(fhir, ipc_plan(person["id"], "watched"))
    wait_for(lambda: pinged.requests and pushed.requests, 30, "the classic notifications")
    assert pinged.requests == [("POST", "/notify", b"")] and pinged.auth == [SECRET]
    method, path, body = pushed.requests[0]
    assert (method, path) == ("PUT", f"/notify/CarePlan/{plan['id']}")
    assert json.loads(body)["description"] == "watched"
    assert nhs.get(f"/Subscription/{ping['id']}").json()["status"] == "active"


def _certificate(folder, name: str) -> tuple[str, str]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_delivery_over_https_with_mutual_tls_and_heartbeat(api, token_for, run_notifier, receivers, tmp_path):
    server_cert, server_key = _certificate(tmp_path, "receiver")
    hub_cert, hub_key = _certificate(tmp_path, "ipc-hub-notifier")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_cert, server_key)
    tls.verify_mode = ssl.CERT_REQUIRED          # the receiver asks for the hub's certificate
    tls.load_verify_locations(hub_cert)
    receiver = receivers(tls=tls)
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-mtls")
    body = subscription("plan-changed", receiver.url)
    body["channel"]["extension"] = [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 1}]
    sub = post(nhs, body)
    run_notifier(subscription_tls_ca=server_cert, subscription_tls_cert=hub_cert, subscription_tls_key=hub_key)
    wait_for(lambda: receiver.of_type("heartbeat"), 30, "a heartbeat after a quiet period")
    assert receiver.of_type("handshake") and receiver.peers[0] == "ipc-hub-notifier"
    assert status_of(receiver.of_type("heartbeat")[0])["subscription"]["reference"].endswith(sub["id"])
    assert all(a == SECRET for a in receiver.auth)


def test_fhirpy_subscribes_with_empty_payload_and_metrics_count_per_subscription(api, token_for, run_notifier,
                                                                                  receivers, fhir):
    """A real FHIR client library (fhirpy) creates the Subscription and asks `$status` and
    `$events`; an `empty` notification names its event numbers and nothing else; the notifier's
    /metrics (served as `ipc-hub worker notifier` serves it) counts per subscription."""
    from fhirpy import SyncFHIRClient

    from hub.bus.metrics import serve_health

    receiver = receivers()
    token = bearer(token_for(partner_class="nhs", organisation="RX1", client_id="sub-fhirpy"))["Authorization"]
    library = SyncFHIRClient(f"{api.url}/fhir", authorization=token)
    sub = library.resource("Subscription", **subscription("plan-changed", receiver.url, payload="empty"))
    sub.save()
    assert sub.id and sub["status"] == "requested"
    run_notifier()
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Library"}]})
    post(fhir, ipc_plan(person["id"], "told emptily"))
    wait_for(lambda: receiver.of_type("event-notification"), 30, "the empty notification")
    bundle = receiver.of_type("event-notification")[0]
    assert len(bundle["entry"]) == 1   # the status alone: no focus, no resource
    assert status_of(bundle)["events"][0]["event-number"] == "1" and "focus" not in status_of(bundle)["events"][0]
    status = library.execute(f"Subscription/{sub.id}/$status", method="get")
    assert status_of(status)["events-since-subscription-start"] == "1"
    events = library.execute(f"Subscription/{sub.id}/$events", method="get", params={"eventsSinceNumber": "1"})
    assert [e["event-number"] for e in status_of(events)["events"]] == ["1"]

    server = serve_health("127.0.0.1", 0, lambda: True, lambda: True)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=10).text
    finally:
        server.shutdown()
    assert f'ipc_subscription_events_delivered_total{{subscription="{sub.id}"}} 1.0' in text
    assert f'ipc_subscription_lag{{subscription="{sub.id}"}} 0.0' in text


def test_back_off_doubles_and_error_comes_only_after_a_day_of_failures(clean_db):
    """The retry schedule on the real delivery state: each failure doubles the wait (from
    HUB_SUBSCRIPTION_RETRY_FIRST_S), and the subscription goes to `error` only once its endpoint
    has failed for longer than HUB_SUBSCRIPTION_GIVE_UP_S, which by default is over 24 hours."""
    import asyncio

    from psycopg import AsyncConnection

    from hub.store import subscriptions as state

    give_up = Settings(database_url=clean_db).subscription_give_up_s
    assert give_up >= 24 * 3600

    async def schedule() -> None:
        async with await AsyncConnection.connect(clean_db, autocommit=True) as conn:
            owner = state.Owner("sub-backoff", "nhs", "RX1", "", ("system/Subscription.cruds",))
            await state.save(conn, "backoff-1", owner, topic=TOPIC + "plan-changed", filters=[],
                             endpoint="https://receiver.example.org/notify", headers=[], payload="id-only",
                             heartbeat_s=None, max_count=20, status="active")

            async def fail() -> str:
                return await state.failed(conn, "backoff-1", "the endpoint answered HTTP 503", first_delay_s=5.0,
                                          max_delay_s=3600.0, give_up_s=give_up)

            waits = []
            for _ in range(6):
                assert await fail() == "active"
                cur = await conn.execute("SELECT extract(epoch FROM next_attempt_at - now()) FROM subscription "
                                         "WHERE id = 'backoff-1'")
                waits.append(round(float((await cur.fetchone())[0])))
            assert waits == [5, 10, 20, 40, 80, 160]
            await conn.execute("UPDATE subscription SET first_failure_at = now() - interval '24 hours' "
                               "WHERE id = 'backoff-1'")
            assert await fail() == "active"   # a day of failures is not yet enough
            await conn.execute("UPDATE subscription SET first_failure_at = now() - make_interval(secs => %s + 60) "
                               "WHERE id = 'backoff-1'", (give_up,))
            assert await fail() == "error"
            row = await state.get(conn, "backoff-1")
            assert row is not None and row.status == "error" and "HTTP 503" in (row.error or "")

    asyncio.run(schedule())


def test_a_subscriptions_own_timeout_fails_a_slow_attempt_and_it_is_retried(api, token_for, run_notifier,
                                                                             receivers, fhir, clean_db):
    """`backport-timeout` on the channel: the hub waits that long for this endpoint (here 1 s,
    against a hub-wide 120 s), counts the attempt failed and retries it; once the endpoint
    answers, the event arrives, numbered as before."""
    receiver = receivers()
    receiver.hold = lambda bundle: bundle.get("resourceType") == "Bundle" and \
        status_of(bundle)["type"] == "event-notification" and not receiver.released.is_set()
    nhs = client(api, token_for, partner_class="nhs", organisation="RX1", client_id="sub-timeout")
    body = subscription("plan-changed", receiver.url, payload="id-only")
    body["channel"]["extension"] = [{"url": BACKPORT + "backport-timeout", "valueUnsignedInt": 1}]
    sub = post(nhs, body)
    run_notifier(subscription_timeout_s=120.0)
    wait_for(lambda: receiver.of_type("handshake"), 30, "the handshake")
    person = post(fhir, {"resourceType": "Patient", "name": [{"family": "Timeout"}]})
    post(fhir, ipc_plan(person["id"], "told after a timeout"))
    try:
        wait_for(lambda: count(clean_db, "SELECT retried_count FROM subscription WHERE id = %s", sub["id"]) >= 1, 60,
                 "the slow attempt counted failed by the subscription's own timeout")
    finally:
        receiver.released.set()
    wait_for(lambda: receiver.of_type("event-notification"), 30, "the event after the endpoint answered")
    assert [e["event-number"] for b in receiver.of_type("event-notification") for e in status_of(b)["events"]][0] == "1"
