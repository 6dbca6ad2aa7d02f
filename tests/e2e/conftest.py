"""The running parts an end-to-end journey needs, shared with the pipeline and integration tests:
the session's embedded PostgreSQL (tests/conftest.py), its Tansu broker and worker helpers
(tests/pipeline/conftest.py), and the real API on a socket with its token fixtures
(tests/integration/conftest.py)."""
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    admin_token,
    fhir,
    fhir_as,
    hub_api,
    hub_url,
    signing_key_file,
    signing_keys,
    token_for,
)
from tests.pipeline.conftest import bus, kafka, workers  # noqa: F401 (fixtures)
