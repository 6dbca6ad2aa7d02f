"""Schema-driven fuzzing: schemathesis generates requests for every operation in the hub's own
/openapi.json and sends them over real HTTP with a valid full-access token. No request may get
a 5xx, and every refusal from the FHIR API must be an OperationOutcome. Deterministic
(derandomize) and bounded so the suite stays fast."""
from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.conftest import bearer

EXAMPLES_PER_OPERATION = 20
FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
                         database=None, suppress_health_check=list(HealthCheck))


def test_no_request_the_schema_allows_gets_a_server_error(hub_url, admin_token):
    document = httpx.get(f"{hub_url}/openapi.json")
    assert document.status_code == 200
    schema = schemathesis.openapi.from_dict(document.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # the FHIR API, AuditEvent, OAuth, health: all described
    broken: dict[str, str] = {}
    for operation in operations:
        try:
            _fuzz(operation, hub_url, admin_token)
        except AssertionError as failure:
            broken[operation.label] = str(failure)[:500]
    assert not broken, broken


def _fuzz(operation, hub_url: str, token: str) -> None:
    @FUZZ_SETTINGS
    @given(case=operation.as_strategy())
    def requests_of(case) -> None:
        response = case.call(base_url=hub_url, headers=bearer(token), timeout=30)
        assert response.status_code < 500, (f"{case.method} {case.formatted_path} {case.query}: "
                                            f"{response.status_code} {response.text[:300]}")
        if case.path.startswith("/fhir") and response.status_code >= 400:
            assert response.json()["resourceType"] == "OperationOutcome", response.text[:300]

    requests_of()
