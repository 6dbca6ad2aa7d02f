"""What every interaction takes and gives: the plain request (no HTTP), the caller's context,
and the outcome — so the HTTP routes and every Bundle entry go through the same code."""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from hub.audit.provenance import client_write
from hub.auth.principal import Principal
from hub.consent.placement import Place
from hub.config import Settings
from hub.search.access import Access
from hub.store import resources
from hub.store.resources import Version



@dataclass(slots=True)
class FhirRequest:
    """One FHIR interaction as data: what an HTTP request or a Bundle entry asks."""

    method: str  # GET, POST, PUT, DELETE
    path: str  # below the FHIR base, no leading slash: "Patient/1/_history/2", "Patient", ""
    query: list[tuple[str, str]] = field(default_factory=list)
    # Lower-case names: if-match, if-none-match, if-none-exist, prefer. (Starlette's Headers
    # are case-insensitive already; a Bundle entry's request gives a plain dict.)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    # A create inside a transaction: the id the Bundle gave it beforehand, so that the other
    # entries' references to its fullUrl already name it.
    assigned_id: str | None = None

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Outcome:
    """What an interaction answers. `version` is a stored resource (its JSON text served as is);
    `body` anything else (a Bundle as JSON text, an OperationOutcome or Parameters as a dict).
    `created` asks for a Location; `wrote` marks the answer to a write interaction (Prefer:
    return=… applies), a conditional create that found its resource included."""

    status: int
    version: Version | None = None
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    created: bool = False
    wrote: bool = False


class Database:
    """Where an interaction gets its connection: from the pool (a top-level request: reads on an
    autocommit connection, writes in a transaction of their own) or one connection whose
    transaction the caller owns (the entries of a transaction or batch Bundle)."""

    __slots__ = ("pool", "conn")

    def __init__(self, pool: AsyncConnectionPool | None = None, conn: AsyncConnection | None = None) -> None:
        self.pool = pool
        self.conn = conn

    @property
    def bound(self) -> bool:
        return self.conn is not None

    def connection(self) -> Any:
        """An async context manager giving a connection: the pool's own (no wrapper: the read is
        the hottest path), or the bound one."""
        if self.conn is not None:
            return _Bound(self.conn)
        return self.pool.connection()  # type: ignore[union-attr]


class _Bound:
    __slots__ = ("conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def __aenter__(self) -> AsyncConnection:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass(slots=True)
class Context:
    """Who asks and where: the caller's access (scopes and consent, always explicit), the
    principal to attribute writes to (None only with authorisation off), settings, the public
    base URL, and the database. Collects what the request disclosed or wrote, for audit and
    Provenance."""

    access: Access
    settings: Settings
    base: str
    database: Database
    principal: Principal | None = None
    touched: list[Version] = field(default_factory=list)
    written: list[Version] = field(default_factory=list)
    # Set inside a transaction Bundle: checks that must see every entry's write (references,
    # deletes) are queued here and run when the last entry has run.
    deferred: list[Any] | None = None
    # Where in the request the interaction sits (`Bundle.entry[3]`), for locations in errors.
    where: str = ""

    def bound_to(self, conn: AsyncConnection, *, deferred: list[Any] | None = None, where: str = "") -> Context:
        """The same caller on one connection (a Bundle's entries), sharing what it collects."""
        return Context(self.access, self.settings, self.base, Database(conn=conn), self.principal,
                       self.touched, self.written, deferred, where)

    def wrote(self, version: Version) -> None:
        self.touched.append(version)
        self.written.append(version)

    def reading(self) -> Any:
        """A connection for reading: `async with ctx.reading() as conn`."""
        return self.database.connection()

    @asynccontextmanager
    async def writing(self, *, pipelined: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction. At top level the interaction commits or rolls back whole,
        and what it wrote is attributed (Provenance) inside that transaction; bound to a Bundle's
        connection, the Bundle does both once for all its entries.

        `pipelined` (the plain REST create and update): the whole transaction in one pipeline, so
        the writes that need no answer, the Provenance and the commit share round trips with the
        statements that do (hub.store.resources.unanswered). Not for work that uses COPY or a
        server-side cursor (the recorder's batch writer, cohort evaluation), which a pipeline
        cannot carry."""
        if self.database.conn is not None:
            yield self.database.conn
            return
        async with self.database.pool.connection() as conn:  # type: ignore[union-attr]
            async with conn.pipeline() if pipelined else nullcontext(), conn.transaction():
                yield conn
                await attribute(conn, self.principal, self.written)


_ACTIVITY = {"POST": "CREATE", "PUT": "UPDATE", "DELETE": "DELETE"}


async def attribute(conn: AsyncConnection, principal: Principal | None, written: list[Version]) -> None:
    """Provenance naming the client, its organisation and partner class for what one request
    wrote, in the write's own transaction (one per kind of write and place in the record: a
    Provenance is exactly as private as what it is about), as the recorder names the feed for
    what a message wrote: so every fact in the record can be traced to whoever said it.
    Written by the hub itself (trusted access): the client may hold no Provenance scope."""
    if principal is None or not written:
        return  # only with authentication switched off, to measure what it costs
    by_activity: dict[tuple[str, str, str, str], list[str]] = {}
    for v in written:
        if v.method in _ACTIVITY:
            key = (_ACTIVITY[v.method], v.patient_id or "", v.part or "", v.owner or "")
            by_activity.setdefault(key, []).append(f"{v.res_type}/{v.res_id}/_history/{v.version}")
    for (activity, patient_id, part, owner), targets in sorted(by_activity.items()):
        proof = client_write(targets, activity, principal)
        await resources.insert_attribution(conn, proof, Place(patient_id or None, part or None, owner or None))
