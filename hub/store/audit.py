"""The audit table: batches written by COPY (through a staging table, so a batch retried after
a lost commit acknowledgement is stored once), and the AuditEvent search (patient, entity,
agent, date, outcome, action, subtype) over its indexed columns.

The writer keeps one connection of its own, outside the API's pool: audit writes never take a
connection a request is waiting for, and a database restart costs a reconnect here, retried by
the caller (`hub.audit.writer`)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE
from hub.search.access import Access, visible_sql
from hub.search.parse import PREFIXES, split_unescaped, unescape
from hub.search.values import date_range

# The table's columns, in the order of hub.audit.record.AuditRecord's fields.
COLUMNS = ("id", "recorded", "interaction", "action", "outcome", "status", "method", "path", "query",
           "client_id", "organisation", "organisation_system", "partner_class", "purpose_of_use",
           "token_id", "address", "patients", "entities", "user_ref", "kind", "policy")
_COLUMN_LIST = ", ".join(COLUMNS)
_SELECT = f"SELECT id::text, {', '.join(COLUMNS[1:])} FROM audit_event"

_COPY = f"COPY audit_event ({_COLUMN_LIST}) FROM STDIN"
# A batch retried after a failure may already be stored (the commit reached the server, its
# acknowledgement did not): it goes through a staging table and skips the ids already there.
_STAGE = (f"CREATE TEMP TABLE IF NOT EXISTS audit_stage ON COMMIT DELETE ROWS "
          f"AS SELECT {_COLUMN_LIST} FROM audit_event WITH NO DATA")
_COPY_STAGED = f"COPY audit_stage ({_COLUMN_LIST}) FROM STDIN"
_MERGE = (f"INSERT INTO audit_event ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM audit_stage "
          "ON CONFLICT (id) DO NOTHING")


def text_array(values: list[str]) -> str:
    """`values` as a PostgreSQL array literal: COPY hands the column its text form, and psycopg's
    Python list dumper costs as much per row as the rest of the row together."""
    if not values:
        return "{}"
    return "{" + ",".join(['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]) + "}"


def refused(exc: BaseException) -> bool:
    """Whether the database refused a batch for what it holds (a value no column can take, a
    constraint), rather than being away: retrying it as it is would fail forever
    (hub.audit.writer splits the batch and sets the offending record aside)."""
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError | psycopg.ProgrammingError)


class AuditStore:
    """Writes audit rows over one dedicated connection, opened on first use and again after any
    failure (a restarted database, a dropped socket)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: AsyncConnection | None = None

    async def write(self, rows: list[tuple], *, retry: bool = False) -> None:
        """Store `rows` (values in COLUMNS order; the arrays as lists or as `text_array`
        literals) in one transaction, or raise and store none. `retry`: some of them may be
        stored already; store each once."""
        conn = await self._connection()
        try:
            async with conn.transaction(), conn.cursor() as cur:
                if retry:
                    await cur.execute(_STAGE)
                async with cur.copy(_COPY_STAGED if retry else _COPY) as copy:
                    for row in rows:
                        await copy.write_row(row)
                if retry:
                    await cur.execute(_MERGE)
        except Exception:
            await self._drop()
            raise

    async def close(self) -> None:
        await self._drop()

    async def _connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5)
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                await conn.close()
            except psycopg.Error:
                pass


# --- what a reader may see (hub/api/audit.py) ---------------------------------------------


def own_organisation(access: Access) -> tuple[str, list[Any]]:
    """The search condition: records of requests `access`'s organisation made."""
    return ("(organisation = %s AND organisation_system IS NOT DISTINCT FROM %s)",
            [access.org_code, access.org_system or None])


# What a person (or their proxy) is not shown of the trail of who looked at their record
# (docs/person.md, "Who has looked at my record"): a request made for a withheld purpose of use
# (HUB_PERSON_TRAIL_WITHHELD_PURPOSES: by default a safeguarding enquiry, the law, public health),
# and a request that touched anything of their record they may not see themselves (a safeguarding
# record; for a proxy, the parts their delegation does not cover), since even "the council read
# something at 10:02" would tell them an enquiry exists. The purposes are an operator's setting
# because which purposes the law lets a controller withhold from a subject is the controller's
# judgement (UK GDPR art. 15 with the Data Protection Act 2018 sch. 2 exemptions), not the hub's.
DEFAULT_WITHHELD_PURPOSES = "PATSFTY,HLEGAL,LEGAL,PUBHLTH"


class TrailSettingError(ValueError):
    """A HUB_PERSON_TRAIL_WITHHELD_PURPOSES the hub cannot apply exactly (stops start-up)."""


def withheld_purposes(text: str | None) -> tuple[str, ...]:
    """The purposes of use (v3-PurposeOfUse codes, comma-separated) whose requests the person's
    trail leaves out. Empty withholds none by purpose (the hidden-resource rule still applies); a
    value that is not a code stops the hub at start-up rather than withhold less than meant."""
    codes = tuple(c.strip() for c in (text or "").split(",") if c.strip())
    for code in codes:
        if not (code.isascii() and code.isalnum() and code.isupper() and len(code) <= 20):
            raise TrailSettingError(f"HUB_PERSON_TRAIL_WITHHELD_PURPOSES: '{code[:30]}' is not a "
                                    "v3-PurposeOfUse code (upper-case letters, e.g. PATSFTY)")
    return codes


def person_trail(access: Access, purposes: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The search condition for a person's own app: events that disclosed or wrote their record,
    less what is withheld from them (above; `purposes`: withheld_purposes of the setting).
    `access.patient` must be set."""
    predicate, params = visible_sql(access, "r") or ("TRUE", [])
    condition = ("(patients && %s::text[] AND NOT (coalesce(purpose_of_use, '') = ANY(%s::text[])) AND NOT EXISTS ("
                 "SELECT 1 FROM unnest(entities) AS e(ref) JOIN resource r ON r.res_type = split_part(e.ref, '/', 1) "
                 f"AND r.res_id = split_part(e.ref, '/', 2) WHERE NOT ({predicate})))")
    return condition, [[access.patient], list(purposes), *params]


async def visible_references(conn: AsyncConnection, access: Access, refs: set[str]) -> set[str]:
    """Those of `refs` (`Type/id`) that name a stored resource `access` may see."""
    if not refs or access.trusted:
        return set(refs)
    predicate, params = visible_sql(access, "r") or ("TRUE", [])
    pairs = sorted(tuple(ref.split("/", 1)) for ref in refs if "/" in ref)
    cur = await conn.execute(
        "SELECT r.res_type, r.res_id FROM resource r JOIN unnest(%s::text[], %s::text[]) AS k(res_type, res_id) "
        f"USING (res_type, res_id) WHERE {predicate}",
        [[t for t, _ in pairs], [i for _, i in pairs], *params])
    return {f"{t}/{i}" for t, i in await cur.fetchall()}


# --- consent changes ------------------------------------------------------------------------

_CONSENT_CHANGE = (f"INSERT INTO audit_event ({_COLUMN_LIST}) VALUES "
                   f"({', '.join(['%s'] * len(COLUMNS))})")
_ACTIONS = {"POST": ("create", "C"), "PUT": ("update", "U"), "DELETE": ("delete", "D")}


async def record_consent_change(conn: AsyncConnection, *, consent_id: str, version: int, method: str,
                                patient_ids: list[str], policy: str, client_id: str | None,
                                organisation: str | None, organisation_system: str | None,
                                partner_class: str | None, user_ref: str | None) -> None:
    """An audit row for one change of a person's record-sharing consent, in the Consent's own
    transaction (so the change and its record commit together, or neither does): who made it
    (client, organisation, the signed-in person or the feed) and on what authority (`policy`)."""
    interaction, action = _ACTIONS.get(method, ("update", "U"))
    entity = f"Consent/{consent_id}"
    await conn.execute(_CONSENT_CHANGE, (
        str(uuid.uuid4()), datetime.now(UTC), interaction, action, 0, 0, method,
        f"{entity}/_history/{version}", "", client_id, organisation, organisation_system, partner_class,
        None, None, None, sorted(set(patient_ids)), [entity], user_ref, "consent", policy))


async def record_account_link(conn: AsyncConnection, *, patient_id: str, linked: str, account_user_id: str,
                              policy: str, client_id: str | None, organisation: str | None,
                              organisation_system: str | None, partner_class: str | None, user_ref: str | None,
                              how_checked: str) -> None:
    """An audit row (kind `account`) for a citizen account linked to a person's record in the
    workspace (hub/web/person_access.py): who linked it (the coordinator's Practitioner, client and
    organisation), on what authority (`policy`), the Patient or RelatedPerson the account signs in
    as, and how the coordinator checked who they are. In the link's own transaction."""
    await conn.execute(_CONSENT_CHANGE, (
        str(uuid.uuid4()), datetime.now(UTC), "create", "C", 0, 0, "POST",
        f"/app/people/{patient_id}/access", f"account={account_user_id}&identity-checked={how_checked}", client_id,
        organisation, organisation_system, partner_class, None, None, None, [patient_id], [linked], user_ref,
        "account", policy))


# --- search ---------------------------------------------------------------------------------

# `recorded` (a point in time) against the searched range [low, high): the SQL and which bounds.
_DATE_SQL = {
    "eq": ("(recorded >= %s AND recorded < %s)", "lh"), "ap": ("(recorded >= %s AND recorded < %s)", "lh"),
    "ne": ("(recorded < %s OR recorded >= %s)", "lh"),
    "gt": ("recorded >= %s", "h"), "sa": ("recorded >= %s", "h"), "le": ("recorded < %s", "h"),
    "ge": ("recorded >= %s", "l"), "lt": ("recorded < %s", "l"), "eb": ("recorded < %s", "l"),
}
_TOKEN_COLUMNS = {"outcome": "outcome::text", "action": "action::text", "subtype": "interaction",
                  "agent-role": "partner_class"}
# A token's system, where the hub's AuditEvent writes one (hub.audit.events): a value naming
# another system matches nothing. The others carry bare codes and are matched on the code.
_TOKEN_SYSTEMS = {"agent-role": f"{CANONICAL_BASE}/CodeSystem/ipc-consent-partner"}  # as hub.audit.events writes
SUPPORTED = frozenset({"patient", "entity", "agent", "date", *_TOKEN_COLUMNS})
# `:not` (FHIR R4 search, token modifiers): the resources whose value is none of those given,
# including those with no value. A person's app asks `agent-role:not=person` to leave out the
# visits made by people themselves (theirs and their proxies') in the query, so paging shows the
# organisations' (hub/web/me.py).
_NEGATABLE = frozenset(_TOKEN_COLUMNS)


@dataclass(slots=True)
class AuditQuery:
    """An AuditEvent search: SQL conditions (ANDed) with their parameters, and the page."""
    conditions: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    summary_count: bool = False
    # Paging links carry the last record written when the first page was taken: records written
    # since (this search's own among them) would otherwise shift every later page.
    snapshot: int | None = None
    kept: list[tuple[str, str]] = field(default_factory=list)  # for paging links
    ignored: list[str] = field(default_factory=list)
    named: list[str] = field(default_factory=list)  # the `Type/id`s patient and entity criteria name


def parse_audit_query(pairs: list[tuple[str, str]], *, default_count: int, max_count: int,
                      strict: bool = False) -> AuditQuery:
    """The search a client asked for. Repeated parameters AND, commas within one OR (FHIR);
    a bad value is refused naming the parameter, an unknown parameter ignored (or refused
    when `strict`)."""
    query = AuditQuery(count=default_count)
    for name, value in pairs:
        if value == "":
            continue
        if name == "_count":
            query.count = min(_whole(name, value), max_count)
        elif name == "_offset":
            query.offset = _whole(name, value)
        elif name == "_summary":
            if value not in ("count", "false"):
                raise FhirError("not-supported", f"_summary={value[:20]} is not supported on AuditEvent "
                                "(use count)", expression="_summary")
            query.summary_count = value == "count"
            query.kept.append((name, value))
        elif name == "_snapshot":
            query.snapshot = _whole(name, value)
        elif name in ("_format", "_pretty"):
            query.kept.append((name, value))
        elif name.partition(":")[0] in SUPPORTED:
            _criterion(query, name, value)
            query.kept.append((name, value))
        elif strict:
            raise FhirError("not-supported", f"unknown search parameter for AuditEvent: '{name[:60]}'",
                            expression=name[:60])
        else:
            query.ignored.append(name[:60])
    return query


def _whole(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise FhirError("invalid", f"{name} '{value[:20]}' is not a whole number", expression=name)
    return int(value)


def _criterion(query: AuditQuery, name: str, value: str) -> None:
    name, _, modifier = name.partition(":")
    if modifier and not (modifier == "not" and name in _NEGATABLE):
        raise FhirError("not-supported", f"the modifier ':{modifier[:20]}' is not supported on AuditEvent's "
                        f"'{name}' (only ':not', on {', '.join(sorted(_NEGATABLE))})", expression=f"{name}:{modifier[:20]}")
    values = [unescape(v) for v in split_unescaped(value, ",")]
    if name == "date":
        ors = [_date_condition(v, query.params) for v in values]
        query.conditions.append("(" + " OR ".join(ors) + ")")
    elif name == "patient":
        ids = [_reference_id(name, v, "Patient") for v in values]
        query.conditions.append("patients && %s")
        query.params.append(ids)
        query.named += [f"Patient/{i}" for i in ids]
    elif name == "entity":
        refs = [_reference(name, v) for v in values]
        patients = [r.split("/", 1)[1] for r in refs if r.startswith("Patient/")]
        query.conditions.append("(entities && %s OR patients && %s)")
        query.params += [refs, patients]
        query.named += refs
    elif name == "agent":  # a client id or organisation code, bare, as a token, or as Device/<id>;
        # or a signed-in user as Practitioner/<id> (staff), Patient/<id> or RelatedPerson/<id> (a
        # person, or someone acting for them)
        codes = [v.rpartition("|")[2].rpartition("/")[2] for v in values]
        users = [v for v in values if v.startswith(("Practitioner/", "Patient/", "RelatedPerson/"))]
        query.conditions.append("(client_id = ANY(%s) OR organisation = ANY(%s) OR user_ref = ANY(%s))")
        query.params += [codes, codes, users]
    else:
        system = _TOKEN_SYSTEMS.get(name)
        codes = [code for v in values for found_system, bar, code in [v.rpartition("|")]
                 if not bar or system is None or found_system in ("", system)]
        if modifier == "not":
            query.conditions.append(f"NOT (coalesce({_TOKEN_COLUMNS[name]}, '') = ANY(%s))")
        else:
            query.conditions.append(f"{_TOKEN_COLUMNS[name]} = ANY(%s)")
        query.params.append(codes)


def _date_condition(raw: str, params: list[Any]) -> str:
    prefix, text = "eq", raw
    if len(raw) > 2 and raw[:2].isalpha():
        if raw[:2] not in PREFIXES:
            raise FhirError("invalid", f"'date={raw[:40]}': unknown prefix '{raw[:2]}'", expression="date")
        prefix, text = raw[:2], raw[2:]
    found = date_range(text) if text[:1].isdigit() else None
    if found is None:
        raise FhirError("invalid", f"'date={raw[:40]}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD or an "
                        "instant, with an optional prefix such as ge)", expression="date")
    sql, bounds = _DATE_SQL[prefix]
    params += [found[0] if bound == "l" else found[1] for bound in bounds]
    return sql


def _reference(name: str, raw: str) -> str:
    """`Type/id` from a relative or absolute reference."""
    parts = raw.rstrip("/").split("/")
    if len(parts) < 2 or not parts[-2][:1].isupper() or not parts[-1]:
        raise FhirError("invalid", f"'{name}={raw[:60]}' is not a reference such as Patient/123",
                        expression=name)
    return f"{parts[-2]}/{parts[-1]}"


def _reference_id(name: str, raw: str, res_type: str) -> str:
    if "/" not in raw:
        return raw
    ref = _reference(name, raw)
    if not ref.startswith(f"{res_type}/"):
        raise FhirError("invalid", f"'{name}={raw[:60]}' must name a {res_type}", expression=name)
    return ref.split("/", 1)[1]


async def search(conn: AsyncConnection, query: AuditQuery) -> tuple[list[tuple], int]:
    """(rows of this page in COLUMNS order, newest first; total matching)."""
    conditions, params = list(query.conditions), list(query.params)
    if query.snapshot is not None:
        conditions.append("seq <= %s")
        params.append(query.snapshot)
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(f"SELECT count(*) FROM audit_event{where}", params)
        total = (await cur.fetchone())[0]
        if query.summary_count or query.count == 0 or query.offset >= total:
            return [], total
        await cur.execute(f"{_SELECT}{where} ORDER BY recorded DESC, id LIMIT %s OFFSET %s",
                          [*params, query.count, query.offset])
        return await cur.fetchall(), total


async def last_written(conn: AsyncConnection) -> int:
    """The newest record's place in write order (0 when there is none): a search's snapshot."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT coalesce((SELECT last_value FROM audit_event_seq_seq), 0)")
        return (await cur.fetchone())[0]


async def read(conn: AsyncConnection, event_id: str, only: tuple[str, list[Any]] | None = None) -> tuple | None:
    """One row by id, or None (a malformed id cannot name a row); `only`: a further condition
    (a person's own trail)."""
    if not _is_uuid(event_id):
        return None
    condition, params = only or ("TRUE", [])
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(f"{_SELECT} WHERE id = %s AND {condition}", (event_id, *params))
        return await cur.fetchone()


def _is_uuid(text: str) -> bool:
    return len(text) == 36 and all(c in "0123456789abcdef-" for c in text.lower())

