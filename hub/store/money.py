"""The queries behind the money side of the record (hub/money): a person's budget accounts and
spend lines, and the facts a cohort's cost of care is summed from, aggregated in SQL so a cohort
of 100,000 people is a few statements, not a million resources read into Python. Every query
takes the caller's Access and filters with it (consent and scopes), like every read."""
from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection

from hub.fhir import jsontext
from hub.fhir.identifiers import CANONICAL_BASE
from hub.search.access import Access, visible_sql

SD = f"{CANONICAL_BASE}/StructureDefinition"


def _visible(access: Access, alias: str = "r") -> tuple[str, list[object]]:
    found = visible_sql(access, alias)
    return ("", []) if found is None else (f" AND {found[0]}", found[1])


async def of_people(conn: AsyncConnection, res_type: str, patient_ids: list[str], *,
                    access: Access) -> list[dict[str, Any]]:
    """The current resources of one type in these people's records (Account, ChargeItem, …)."""
    access.require(res_type, "r")
    predicate, params = _visible(access)
    cur = await conn.execute(
        "SELECT r.content::text FROM resource r WHERE r.res_type = %s AND r.patient_id = ANY(%s)"
        " AND NOT r.deleted" + predicate + " ORDER BY r.res_id", [res_type, patient_ids, *params])
    return [jsontext.loads(row[0]) for row in await cur.fetchall()]


async def definitions(conn: AsyncConnection, profile: str) -> list[dict[str, Any]]:
    """Every current ChargeItemDefinition claiming `profile` (tariffs): data, not anyone's record."""
    cur = await conn.execute(
        "SELECT r.content::text FROM resource r JOIN idx_uri u ON u.res_type = r.res_type AND u.res_id = r.res_id"
        " AND u.param = '_profile' AND u.uri = %s WHERE r.res_type = 'ChargeItemDefinition' AND NOT r.deleted",
        (profile,))
    return [jsontext.loads(row[0]) for row in await cur.fetchall()]


def _periods(periods: list[tuple[str, date, date]]) -> list[Any]:
    return [[p[0] for p in periods], [p[1] for p in periods], [p[2] for p in periods]]


# Each query reads a row's JSON once: `(SELECT content::jsonb AS j OFFSET 0)` keeps PostgreSQL
# from inlining the cast into every expression that uses it (it cast each row six times or more,
# and again for each period it was joined with: twice as slow over a cohort).
# One extension's coded value, from the rows of jsonb_array_elements(extension) named `e`.
_CODED_EXT = "max(e #>> '{valueCodeableConcept,coding,0,code}') FILTER (WHERE e ->> 'url' = %s)"
# jsonpath for an extension's coded value, and the day a line or encounter happened.
_CODE_OF = "jsonb_path_query_first(j, '$.extension[*] ? (@.url == $u).valueCodeableConcept.coding[0].code', " \
           "jsonb_build_object('u', %s::text)) #>> '{}'"


async def line_totals(conn: AsyncConnection, patient_ids: list[str] | None, periods: list[tuple[str, date, date]],
                      *, access: Access) -> list[tuple[str, str, str, str, str, int]]:
    """(period label, funder, setting, spend kind, total as text, lines) for the spend lines and
    invoices (ChargeItem) of these people (None: everyone the caller may see) in each period."""
    access.require("ChargeItem", "r")
    predicate, params = _visible(access)
    people = "" if patient_ids is None else " AND r.patient_id = ANY(%s)"
    sql = (
        "SELECT p.label, coalesce(c.funder, 'other'), coalesce(c.setting, 'home-and-community'),"
        " coalesce(c.kind, 'spend'), sum(f.amount)::text, count(*)"
        " FROM resource r CROSS JOIN LATERAL (SELECT r.content::jsonb AS j OFFSET 0) x"
        # The three coded extensions in one pass over the line's extensions (a jsonpath query
        # per extension read the array three times: three times slower over a cohort).
        " CROSS JOIN LATERAL (SELECT"
        f"   {_CODED_EXT} AS funder, {_CODED_EXT} AS setting, {_CODED_EXT} AS kind"
        "   FROM jsonb_array_elements(coalesce(x.j -> 'extension', '[]'::jsonb)) e) c"
        " CROSS JOIN LATERAL (SELECT"
        "    abs((x.j #>> '{priceOverride,value}')::numeric) AS amount,"
        "    left(coalesce(x.j ->> 'occurrenceDateTime', x.j #>> '{occurrencePeriod,start}'), 10)::date AS day) f"
        " JOIN unnest(%s::text[], %s::date[], %s::date[]) AS p(label, start, finish)"
        "  ON f.day BETWEEN p.start AND p.finish"
        " WHERE r.res_type = 'ChargeItem' AND NOT r.deleted AND r.patient_id IS NOT NULL"
        "  AND coalesce(x.j ->> 'status', '') NOT IN ('entered-in-error', 'aborted', 'planned')"
        "  AND x.j #>> '{priceOverride,value}' IS NOT NULL" + people + predicate +
        " GROUP BY 1, 2, 3, 4")
    args: list[Any] = [f"{SD}/funding-source", f"{SD}/care-setting", f"{SD}/spend-kind", *_periods(periods)]
    if patient_ids is not None:
        args.append(patient_ids)
    cur = await conn.execute(sql, [*args, *params])
    return [tuple(row) for row in await cur.fetchall()]


async def encounter_counts(conn: AsyncConnection, patient_ids: list[str] | None,
                           periods: list[tuple[str, date, date]], *,
                           access: Access) -> list[tuple[str, str, list[str], date, int]]:
    """(period label, class code, priority codes, day, encounters) for these people's hospital
    encounters beginning in each period (cancelled and entered-in-error ones left out)."""
    access.require("Encounter", "r")
    predicate, params = _visible(access)
    people = "" if patient_ids is None else " AND r.patient_id = ANY(%s)"
    sql = (
        "SELECT p.label, coalesce(x.j #>> '{class,code}', ''),"
        " coalesce(ARRAY(SELECT jsonb_array_elements(x.j #> '{priority,coding}') ->> 'code'), '{}'),"
        " f.day, count(*)"
        " FROM resource r CROSS JOIN LATERAL (SELECT r.content::jsonb AS j OFFSET 0) x"
        " CROSS JOIN LATERAL (SELECT left(x.j #>> '{period,start}', 10)::date AS day) f"
        " JOIN unnest(%s::text[], %s::date[], %s::date[]) AS p(label, start, finish)"
        "  ON f.day BETWEEN p.start AND p.finish"
        " WHERE r.res_type = 'Encounter' AND NOT r.deleted AND r.patient_id IS NOT NULL"
        "  AND coalesce(x.j ->> 'status', '') NOT IN ('cancelled', 'entered-in-error', 'planned')" + people + predicate +
        " GROUP BY 1, 2, 3, 4")
    args: list[Any] = [*_periods(periods)]
    if patient_ids is not None:
        args.append(patient_ids)
    cur = await conn.execute(sql, [*args, *params])
    return [(row[0], row[1], list(row[2]), row[3], row[4]) for row in await cur.fetchall()]


async def unspent_accounts(conn: AsyncConnection, patient_ids: list[str] | None, *,
                           access: Access) -> list[tuple[str, str, str, str, date | None, date | None]]:
    """(funder, management option, allocated amount as text, status, period start, end) of the
    budget accounts of these people that no spend line is booked to (by reference, or by funder
    and option): money a council or the NHS spends on commissioned support without sending lines,
    costed from the allocation itself."""
    access.require("Account", "r")
    predicate, params = _visible(access)
    people = "" if patient_ids is None else " AND r.patient_id = ANY(%s)"
    funder = _CODE_OF.replace("j,", "x.j,")
    sql = (
        "SELECT a.funder, a.option, a.allocated, a.status, a.start, a.finish FROM ("
        " SELECT r.res_id, r.patient_id,"
        f"  {funder} AS funder, x.j #>> '{{type,coding,0,code}}' AS option,"
        "   x.j ->> 'status' AS status,"
        "   (jsonb_path_query_first(x.j, '$.extension[*] ? (@.url == $u).valueMoney.value',"
        "     jsonb_build_object('u', %s::text)) #>> '{}') AS allocated,"
        "   left(x.j #>> '{servicePeriod,start}', 10)::date AS start,"
        "   left(x.j #>> '{servicePeriod,end}', 10)::date AS finish"
        "  FROM resource r CROSS JOIN LATERAL (SELECT r.content::jsonb AS j OFFSET 0) x"
        "  WHERE r.res_type = 'Account' AND NOT r.deleted AND r.patient_id IS NOT NULL" + people + predicate +
        ") a WHERE a.allocated IS NOT NULL AND NOT EXISTS ("
        " SELECT 1 FROM resource c CROSS JOIN LATERAL (SELECT c.content::jsonb AS j OFFSET 0) y"
        " WHERE c.res_type = 'ChargeItem' AND c.patient_id = a.patient_id AND NOT c.deleted AND ("
        "  y.j @> jsonb_build_object('account', jsonb_build_array(jsonb_build_object('reference', 'Account/' || a.res_id)))"
        "  OR (jsonb_path_query_first(y.j, '$.extension[*] ? (@.url == $u).valueCodeableConcept.coding[0].code',"
        "       jsonb_build_object('u', %s::text)) #>> '{}' = a.funder"
        "   AND jsonb_path_query_first(y.j, '$.extension[*] ? (@.url == $u).valueCodeableConcept.coding[0].code',"
        "       jsonb_build_object('u', %s::text)) #>> '{}' = a.option)))")
    args: list[Any] = [f"{SD}/funding-source", f"{SD}/allocated-amount"]
    if patient_ids is not None:
        args.append(patient_ids)
    args += [*params, f"{SD}/funding-source", f"{SD}/management-option"]
    cur = await conn.execute(sql, args)
    return [tuple(row) for row in await cur.fetchall()]


async def by_canonical(conn: AsyncConnection, res_type: str, url: str) -> list[dict[str, Any]]:
    """Current definitions (Questionnaire, ChargeItemDefinition) with this canonical url, any
    version: configuration, not anyone's record."""
    cur = await conn.execute(
        "SELECT r.content::text FROM resource r JOIN idx_uri u ON u.res_type = r.res_type AND u.res_id = r.res_id"
        " AND u.param = 'url' AND u.uri = %s WHERE r.res_type = %s AND NOT r.deleted ORDER BY r.res_id",
        (url, res_type))
    return [jsontext.loads(row[0]) for row in await cur.fetchall()]
