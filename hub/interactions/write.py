"""create (and conditional create), update (update-as-create, If-Match, conditional update) and
delete. Before anything is stored, every write passes the same checks on every path — REST and
each transaction or batch entry: the structure and profiles (hub.fhir.resources), literal local
references resolve (hub.store.integrity), one person has one record (hub.identity.duplicates);
and a delete leaves no current resource referring to nothing."""
from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from hub.consent.grants import write_grants
from hub.fhir import jsontext
from hub.fhir.errors import FhirError
from hub.fhir.resources import check_structure, require_valid_id
from hub.identity.duplicates import check_new_identity, queue_review
from hub.interactions import conditional
from hub.interactions import subscriptions as subs
from hub.interactions.context import Context, FhirRequest, Outcome
from hub.interactions.own_record import check_person_update
from hub.interactions.read import version_headers
from hub.money import accounts as money_rules
from hub.store import integrity, resources
from hub.store.resources import version_from_etag


def create_condition(request: FhirRequest) -> list[tuple[str, str]] | None:
    """The criteria of a conditional create: the If-None-Exist header, or criteria on the POST
    URL (`POST /Patient?identifier=…`, which client libraries send); None for a plain create."""
    header = request.headers.get("if-none-exist")
    if header:
        return conditional.criteria_pairs(header)
    pairs = conditional.criteria_pairs(request.query) if request.query else []
    return pairs or None


def _body(request: FhirRequest, res_type: str) -> dict[str, Any]:
    if request.body is None:
        raise FhirError("structure", "the request has no body")
    return check_structure(request.body, res_type)


async def _checked(conn: AsyncConnection, ctx: Context, resource: dict[str, Any], res_type: str,
                   res_id: str, *, update: bool = False) -> bool:
    """The checks that look at the record before a write; True when the Patient written must be
    held apart (it duplicates a person the caller may not see: hub.identity.duplicates). Inside
    a transaction the reference check waits for the last entry (entries may refer to each other
    in any order). References the stored version already makes count as checked only if the
    caller may see that version (to it, a hidden one is absent)."""
    held = False
    if res_type == "Patient":
        held = await check_new_identity(conn, ctx.access, resource, res_id, new=not update or
                                        await resources.current_version(conn, res_type, res_id,
                                                                        access=ctx.access) is None)
    kept = await integrity.current_links(conn, ctx.access, res_type, res_id) if update else frozenset()
    written = integrity.Written(resource, res_type, res_id, ctx.where, kept)
    if ctx.deferred is not None:
        ctx.deferred.append(written)
    else:
        await integrity.check_references(conn, ctx.access, [written])
    return held


async def _reviews(conn: AsyncConnection, ctx: Context, resource: dict[str, Any], res_id: str) -> None:
    """A new person is scored against everyone recorded by the review pass, later (as a feed's
    are), never in the request: whether a look-alike exists — someone the writer may not see,
    perhaps — must show neither in the answer nor in how long it takes."""
    if resource.get("resourceType") == "Patient":
        client = ctx.principal.client_id if ctx.principal is not None else "an API client"
        await queue_review(conn, res_id, client)


async def _money(conn: AsyncConnection, version: resources.Version) -> None:
    """A budget statement keeps one account per allocation; a spend line may put its account's
    spend ahead of plan (hub.money.accounts): written by the hub in the same transaction."""
    if version.res_type in ("CarePlan", "ChargeItem"):
        await money_rules.apply(conn, [version])


async def create(ctx: Context, request: FhirRequest, res_type: str) -> Outcome:
    resource = _body(request, res_type)
    condition = create_condition(request)
    async with ctx.writing(pipelined=True) as conn:
        if condition:
            existing = await conditional.find_one(conn, res_type, condition, access=ctx.access)
            if existing is not None:
                ctx.touched.append(existing)
                return Outcome(200, existing, headers=version_headers(existing), wrote=True)
        res_id = request.assigned_id or resources.new_id()
        if res_type == subs.TYPE:
            headers = subs.sent_headers(resource)
            spec = subs.prepare(ctx, resource, None)
        held = await _checked(conn, ctx, resource, res_type, res_id)
        version = await resources.create(conn, resource, res_id=res_id, access=ctx.access, hold_apart=held)
        if res_type == subs.TYPE:
            await subs.keep(conn, ctx, res_id, resource, spec, headers)
        ctx.wrote(version)
        await _reviews(conn, ctx, resource, version.res_id)
        await _money(conn, version)
    return Outcome(201, version, headers=version_headers(version), created=True, wrote=True)


async def update(ctx: Context, request: FhirRequest, res_type: str, res_id: str) -> Outcome:
    require_valid_id(res_id)
    resource = _body(request, res_type)
    if resource.get("id") is None:
        raise FhirError("invalid", f"the body has no id; an update of {res_type}/{res_id} must carry "
                        f"id '{res_id}'", expression=f"{res_type}.id")
    if resource["id"] != res_id:
        raise FhirError("invalid", f"the body's id '{resource['id']}' does not match the URL's id "
                        f"'{res_id}'", expression=f"{res_type}.id")
    if_match = version_from_etag(request.headers.get("if-match"))
    async with ctx.writing(pipelined=True) as conn:
        return await _store(conn, ctx, res_type, res_id, resource, if_match, chosen=True)


async def conditional_update(ctx: Context, request: FhirRequest, res_type: str) -> Outcome:
    criteria = conditional.criteria_pairs(request.query)
    if not criteria:
        raise FhirError("invalid", f"PUT /{res_type} needs search criteria (conditional update) or "
                        f"an id: PUT /{res_type}/[id]", status=405)
    resource = _body(request, res_type)
    async with ctx.writing() as conn:
        existing = await conditional.find_one(conn, res_type, criteria, access=ctx.access)
        chosen = True
        if existing is None:
            res_id = resource.get("id")
            if res_id is None:
                res_id, chosen = resources.new_id(), False
            else:
                require_valid_id(res_id)
        else:
            res_id = existing.res_id
            if resource.get("id") not in (None, res_id):
                raise FhirError("invalid", f"the body's id '{resource['id']}' is not the id the criteria "
                                f"select ({res_id})", expression=f"{res_type}.id")
        return await _store(conn, ctx, res_type, res_id, resource, None, chosen=chosen)


async def _store(conn: AsyncConnection, ctx: Context, res_type: str, res_id: str, resource: dict[str, Any],
                 if_match: int | None, *, chosen: bool) -> Outcome:
    if res_type == subs.TYPE:
        headers = subs.sent_headers(resource)
        spec = subs.prepare(ctx, resource, await subs.previous_status(conn, res_id))
    await check_person_update(conn, ctx.access, res_type, res_id, resource)
    held = await _checked(conn, ctx, resource, res_type, res_id, update=True)
    version, created = await resources.update(conn, res_type, res_id, resource, if_match=if_match,
                                              access=ctx.access, chosen=chosen, hold_apart=held,
                                              accept_chosen=ctx.settings.client_ids == "accept")
    if res_type == subs.TYPE:
        await subs.keep(conn, ctx, res_id, resource, spec, headers)
    if created:
        # An update that creates needs the create scope too (raised inside the transaction, so
        # nothing is kept).
        ctx.access.require(res_type, "c")
        await _reviews(conn, ctx, resource, res_id)
    ctx.wrote(version)
    await _money(conn, version)
    return Outcome(201 if created else 200, version, headers=version_headers(version), created=created,
                   wrote=True)


async def delete(ctx: Context, request: FhirRequest, res_type: str, res_id: str) -> Outcome:
    if_match = version_from_etag(request.headers.get("if-match"))
    async with ctx.writing() as conn:
        deleted = await resources.delete(conn, res_type, res_id, if_match=if_match, access=ctx.access)
        if deleted is not None and res_type == subs.TYPE:
            await subs.forget(conn, res_id)
        if deleted is not None:
            if ctx.settings.referential_integrity_on_delete:
                if ctx.deferred is not None:
                    ctx.deferred.append(Deleted(res_type, res_id, ctx.where))
                else:
                    await integrity.check_delete(conn, ctx.access, res_type, res_id)
            ctx.wrote(deleted)
    return Outcome(204, headers={"ETag": deleted.etag} if deleted else {}, wrote=True)


class Deleted:
    """A delete inside a transaction, whose referrers are looked for once every entry has run
    (another entry may delete or repoint them)."""

    __slots__ = ("res_type", "res_id", "where")

    def __init__(self, res_type: str, res_id: str, where: str) -> None:
        self.res_type, self.res_id, self.where = res_type, res_id, where


async def run_deferred(conn: AsyncConnection, ctx: Context, deferred: list[Any]) -> None:
    """The checks a transaction kept for its end: every reference its entries wrote resolves
    (against the record, which now holds every entry) and nothing it deleted is still referred
    to."""
    written = [d for d in deferred if isinstance(d, integrity.Written)]
    await integrity.check_references(conn, ctx.access, written)
    for item in deferred:
        if isinstance(item, Deleted):
            await integrity.check_delete(conn, ctx.access, item.res_type, item.res_id, where=item.where)
    # A Consent's grants bind to the identifiers of the Organizations it names: bound again now,
    # so an Organization written by a later entry of the same transaction is bound too.
    for version in ctx.written:
        if version.res_type == "Consent" and not version.deleted and version.content is not None:
            await write_grants(conn, version.res_id, jsontext.loads(version.content), version.patient_id)
