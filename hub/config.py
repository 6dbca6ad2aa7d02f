"""Settings from the environment, all under one prefix (HUB_), so one `env` listing shows
how a hub is configured. Secrets are never logged: `describe()` masks them."""
from __future__ import annotations

from typing import Literal

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    # Without a database URL the hub starts an embedded PostgreSQL in data_dir.
    database_url: str | None = None
    # Without a bootstrap address the hub starts an embedded Kafka-protocol broker (Tansu).
    kafka_bootstrap: str | None = None
    data_dir: Path = Path("./.hub-data")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Port of the embedded broker when the hub starts one.
    embedded_kafka_port: int = 9092
    # Base URL the hub writes into links (Bundle.link, Location); derived from host and port if unset.
    base_url: str | None = None
    # Largest request body the FHIR API accepts, in bytes (413 above it).
    max_body_bytes: int = 16 * 1024 * 1024
    # Search page sizes.
    default_page_size: int = 50
    max_page_size: int = 1000
    # Connections per API process to PostgreSQL.
    db_pool_min: int = 4
    db_pool_max: int = 16
    # uvicorn worker processes for `ipc-hub api`.
    http_workers: int = 1
    log_level: str = "info"
    # Log lines as JSON objects (`json`, for collectors) or plain text (`console`); `auto`: JSON
    # unless standard error is a terminal.
    log_format: str = "auto"
    # The event pipeline (see hub/bus/kafka.py for why these defaults suit Apache Kafka and Tansu).
    topic_prefix: str = "ipc"
    topic_partitions: int = 4
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 1500
    kafka_max_poll_records: int = 500
    dlq_max_consecutive: int = 100
    # Largest record on the bus (a 10 MiB MOD handover document, base64 in its Bundle, fits).
    kafka_max_message_bytes: int = 32 * 1024 * 1024
    # The bus journal (hub/bus/journal.py): `auto` on for the embedded broker, off for Kafka.
    bus_journal: str = "auto"
    retry_max_delay_s: float = 5.0
    # Subscriptions (hub/subscriptions): rest-hook endpoints must be https unless this allows http
    # (a receiver on the same machine, tests); seconds before a POST to a receiver counts as failed;
    # the first retry's delay, doubling up to the largest; how long an endpoint may keep failing
    # before its subscription goes to `error` (at least 24 hours in production).
    subscription_allow_http: bool = False
    subscription_timeout_s: float = 10.0
    subscription_retry_first_s: float = 5.0
    subscription_retry_max_s: float = 3600.0
    subscription_give_up_s: float = 26 * 3600.0
    # Mutual TLS to receivers that ask for it: the hub's client certificate chain and key (PEM);
    # and the CA bundle receivers' certificates are checked against (unset: the system's).
    subscription_tls_cert: Path | None = None
    subscription_tls_key: Path | None = None
    subscription_tls_ca: Path | None = None
    # Mapping modules the mapper loads (comma-separated), besides `ipc_hub.mappings` entry points.
    mappings: str = "mappings.fhir_bundle,mappings.hl7v2,mappings.mod,mappings.la,mappings.statements,mappings.children"
    # The HL7 v2 MLLP listener (`ipc-hub connector hl7v2`, and part of `ipc-hub up`).
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    # TLS: both set → the listener speaks only TLS (PEM certificate chain and private key files).
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    # Largest framed message accepted, in bytes (AR 104 above it), and seconds a silent
    # connection is kept open.
    mllp_max_message_size: int = 1_048_576
    mllp_idle_timeout: float = 300.0
    # Check every message strictly against the HL7 v2 standard with hl7apy (~10 ms a message).
    mllp_strict: bool = False
    # The MOD transition handover connector (`ipc-hub connector mod`): HTTPS POST of handover
    # documents (TLS when both cert and key are set), and a drop folder watched when set.
    mod_host: str = "127.0.0.1"
    mod_port: int = 8443
    mod_tls_cert: Path | None = None
    mod_tls_key: Path | None = None
    mod_max_body_bytes: int = 10 * 1024 * 1024
    mod_drop_dir: Path | None = None
    mod_poll_interval_s: float = 1.0
    mod_source: str = "mod-handover"
    # The JWKS the MOD connector checks bearer tokens against (fetched at start; the hub API
    # serves it), with the issuer and audience of token_issuer() and token_audience().
    auth_jwks_url: str | None = None
    # The local authority CSV connector (`ipc-hub connector la import|watch`, and `ipc-hub up`):
    # the watched drop folder (unset: data_dir/la-drop), the record of imported file contents
    # that catches duplicate uploads (unset: data_dir/la-imports), envelopes awaiting the
    # broker's acknowledgement at most, and seconds between drop folder scans.
    la_drop_dir: Path | None = None
    la_ledger_dir: Path | None = None
    la_max_in_flight: int = 10_000
    la_poll_interval_s: float = 1.0
    # The statements connector (`ipc-hub connector statements import|watch`): its drop folder
    # (unset: data_dir/statements-drop) and its record of imported file contents (unset:
    # data_dir/statement-imports). Envelopes in flight and the poll interval are the LA ones.
    statements_drop_dir: Path | None = None
    statements_ledger_dir: Path | None = None
    # The children's connector (`ipc-hub connector children import|watch`: SEN2- and CIN/CLA-shaped
    # CSV): its drop folder (unset: data_dir/children-drop) and its record of imported file
    # contents (unset: data_dir/children-imports). Envelopes in flight and the poll interval are
    # the LA ones.
    children_drop_dir: Path | None = None
    children_ledger_dir: Path | None = None
    # `ipc-hub up` on the embedded default drops the sample MOD handover and local authority
    # extract into the watched folders on a first start (an empty record), as a demonstration.
    demo_cohort: bool = True
    # Where a worker process serves /metrics, /healthz and /readyz (0: not served).
    worker_http_port: int = 0
    # OAuth2 / SMART (hub/auth, hub/api/security.py). Off only for measuring what security costs.
    auth_enabled: bool = True
    # PEM or JWK/JWKS file with the token signing key(s); the first private key signs, every key
    # stays in the JWKS (rotation). Unset: a key generated once into data_dir/auth (mode 0600).
    auth_signing_key_file: Path | None = None
    # Access token lifetime in seconds, and the issuer/audience (derived from the base URL if unset).
    auth_token_lifetime_s: int = 300
    auth_issuer: str | None = None
    auth_audience: str | None = None
    # Longest lifetime a private_key_jwt client assertion may claim (SMART Backend Services: 5 min).
    auth_assertion_max_lifetime_s: int = 300
    # Refresh tokens (apps acting for a signed-in person, with offline_access):
    # how long one lives unused; each use rotates it.
    auth_refresh_lifetime_s: int = 8 * 3600
    # Staff sign-in (hub/auth, hub/web): lockout after this many failed attempts in a row, for
    # this long; browser sessions end after idle_timeout without a request, and at most after
    # session_lifetime. Cookies are Secure unless this is false (only for plain-http testing).
    signin_max_failures: int = 5
    signin_lockout_s: int = 900
    session_idle_timeout_s: int = 900
    session_lifetime_s: int = 12 * 3600
    session_cookie_secure: bool = True
    # An external OpenID Connect provider for staff (e.g. NHS CIS2): its issuer URL (discovery
    # at /.well-known/openid-configuration), this hub's client id and secret there, the claim
    # whose value names the hub account (`ipc-hub users add --external-subject`), the scopes to
    # ask for and the name on the sign-in button. Unset issuer: local accounts only.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_user_claim: str = "sub"
    oidc_scopes: str = "openid profile email"
    oidc_display_name: str = "your organisation's sign-in"
    # People signing in themselves (issue 18, docs/person.md): an external OpenID Connect provider
    # set up as NHS login is (unset issuer: local citizen accounts only, linked to a Patient by a
    # coordinator). The id_token must carry the identity proofing level claim at or above
    # `person_oidc_min_proofing` (P0 < P5 < P9) and the NHS number claim, matched to exactly one
    # Patient in the hub.
    person_oidc_issuer: str | None = None
    person_oidc_client_id: str | None = None
    person_oidc_client_secret: str | None = None
    person_oidc_scopes: str = "openid profile"
    person_oidc_proofing_claim: str = "identity_proofing_level"
    person_oidc_min_proofing: str = "P9"
    person_oidc_nhs_number_claim: str = "nhs_number"
    person_oidc_display_name: str = "NHS login"
    # A parent's (or guardian's) proxy access to a child's record ends on the young person's
    # birthday at this age, and passes to them (Mental Capacity Act 2005 s.2(5), Family Law
    # Reform Act 1969 s.8: docs/person.md).
    proxy_passes_at_age: int = 16
    # The purposes of use (v3-PurposeOfUse codes) whose requests the person's trail of who looked
    # leaves out (hub/store/audit.py, docs/person.md): a safeguarding enquiry, the law, public
    # health. Which ones the law lets a controller withhold is the controller's judgement.
    person_trail_withheld_purposes: str = "PATSFTY,HLEGAL,LEGAL,PUBHLTH"
    # Per-client token bucket: sustained requests per second and burst size (0 rps: no limit).
    rate_limit_rps: float = 200.0
    rate_limit_burst: int = 400
    # What each partner class sees of a person with no IPC record-sharing consent on record
    # (hub/consent/defaults.py): NHS direct care sees the record, a local authority who the
    # person is, every other class nothing.
    consent_defaults: str = "nhs=*;local-authority=demographics"
    # Who besides the person and their proxy may record a person's record-sharing consent
    # (hub/consent/authority.py): staff roles as partner-class:role pairs, after a recorded
    # conversation with the person. Empty: nobody else.
    consent_recorders: str = "nhs:coordinator,local-authority:coordinator"
    # The key that makes the ids derived from source records unguessable (hub/fhir/ids.py): a
    # file of 32 random bytes in hex. Unset: data_dir/ids/id.key, made on first use. Every
    # process that maps or records must use the same file; never rotate it.
    id_key_file: Path | None = None
    # The plan's life (hub/plans, the plan worker `ipc-hub worker plans`): review intervals by IPC
    # programme (`ipc4v=12mo;ipc-adult=6mo;*=12mo`; unset: the guide's ipc-programme defaults,
    # 12 months), how many days before a review is due its Task is raised, and how often (seconds)
    # the worker looks for reviews falling due (plan changes wake it at once).
    review_intervals: str = ""
    review_task_lead_days: int = 28
    plan_worker_interval_s: float = 60.0
    # Referential integrity (hub/store/integrity.py): a resource that current resources refer to
    # the client may see is not deleted (409 naming them; hidden ones raise a review Task
    # instead: hub/pipeline/dangling.py). False lets the delete go through and leaves the
    # references dangling, as a server without the check would.
    referential_integrity_on_delete: bool = True
    # Client-chosen ids (issue 20): `refuse` (the default) creates nothing under an id a client
    # chooses (PUT to an id nothing it may see holds answers 405, free or held by something hidden
    # alike; CapabilityStatement updateCreate false); `accept` is FHIR's update-as-create, where an
    # id another organisation's hidden resource holds answers 404 and a free one 201 (an inference
    # about ids other clients chose: hub/consent/README.md).
    client_ids: Literal["refuse", "accept"] = "refuse"
    # Audit (hub/audit, hub/api/audit.py): an AuditEvent row per FHIR request, written in batches
    # off the request path; a full queue holds requests back rather than lose records. Off only
    # for measuring what audit costs.
    audit_enabled: bool = True
    audit_queue_size: int = 10_000
    audit_batch_size: int = 500
    # How long the writer gathers records after the first before writing them (one transaction).
    audit_linger_s: float = 0.05
    # Longest a stopping API waits for the audit trail to be written; what is still unwritten
    # then is kept on disk (audit_spill_dir, unset: data_dir/audit) and reported, never lost.
    audit_shutdown_s: float = 10.0
    audit_spill_dir: Path | None = None

    # Bulk Data export ($export; hub/exports): where files are written (unset: data_dir/exports; a
    # folder every API process and export runner shares), how long a finished export's files are
    # kept, at most how many resources one file holds, at most how many exports one client may
    # have waiting or running, whether each API process runs exports itself in a background
    # thread (false: only `ipc-hub worker exporter` processes do; `ipc-hub up` runs one), and how
    # much lower than the rest of its process a runner's thread is scheduled (nice increment:
    # readers of the API come first on a busy machine).
    export_dir: Path | None = None
    export_retention_s: int = 3600
    export_file_resources: int = 100_000
    export_max_active: int = 3
    export_in_api: bool = True
    export_niceness: int = 10
    # Linked datasets for commissioners (Group/[id]/$linked-dataset; hub/datasets): a value in a
    # quasi-identifying column that fewer people share than this is suppressed, and so is a count
    # below it in the summary.
    dataset_min_count: int = 10

    def exports_folder(self) -> Path:
        return self.export_dir or self.data_dir / "exports"

    def public_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.http_host}:{self.http_port}"

    def token_issuer(self) -> str:
        return (self.auth_issuer or self.public_base_url()).rstrip("/")

    def token_audience(self) -> str:
        return (self.auth_audience or f"{self.public_base_url()}/fhir").rstrip("/")

    def describe(self) -> dict[str, str]:
        """The settings as they may be printed: credentials in URLs masked."""
        shown = {}
        for name, value in self.model_dump().items():
            text = "" if value is None else str(value)
            if name == "database_url" and "@" in text:
                scheme, _, rest = text.partition("://")
                text = f"{scheme}://***@{rest.rpartition('@')[2]}"
            if name in ("oidc_client_secret", "person_oidc_client_secret") and text:
                text = "***"
            shown[f"HUB_{name.upper()}"] = text
        return shown


def settings_help() -> str:
    """Every setting as `HUB_NAME  default` lines, for `ipc-hub --help` (read from the model, so
    the list cannot fall behind it)."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else str(default)
        lines.append(f"  HUB_{name.upper():<34} {shown}")
    return "\n".join(lines)


def load_settings() -> Settings:
    return Settings()
