"""SQL text and parameters for a parsed search: psycopg 3, `%s` placeholders, every value a
parameter. Table and column names come only from the fixed maps below, never from the query.

The page query selects the current, non-deleted versions of one type and applies each clause
as an `EXISTS` semi-join on its index table (`_id` and `_lastUpdated` read `resource` columns).
Default order: `r.last_updated DESC, r.res_id` (newest first, stable: ids break ties), which the
(res_type, last_updated) index can deliver without sorting every match.

Comparison semantics (R4 search, prefixes):

* dates: the resource value is a range [low, high); the search value is its precision range
  [sL, sH). eq: the search range contains the resource range; ne: it does not; gt: the
  resource range reaches past sH; lt: it starts before sL; ge: gt or eq; le: lt or eq;
  sa: it starts at/after sH; eb: it ends at/before sL; ap: the ranges overlap.
  `_lastUpdated` is the same with the stored instant as a 1 µs range.
* numbers and quantities: the resource value is the centre of its stored range (its written
  value; for a Range, the centre). eq/ne: within / outside the search value's implicit
  precision (100 → [99.5, 100.5)); gt/lt/ge/le: compared with the search value exactly, as R4's
  number section says; sa/eb: the stored range starts at/after sH / ends at/before sL;
  ap: within 10 % of the search value (at least its precision range).
  Quantity units: `|system|code` must both match; `||code` matches code or unit; none: any.
* phonetic: each word's Metaphone key equals a name part's (hub.search.values.phonetic_keys).
* strings: default = prefix of the normalised value (`~>=~`/`~<~` on the text_pattern_ops
  index, which works with generic plans too); :exact = equal as written; :contains = anywhere.
* token :text: the normalised display/text starts with the value, or one of its words does.
* token :not, reference/… :missing: NOT EXISTS (a resource with no value matches :not).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from hub.search.access import Access, visible_sql
from hub.search.definitions import resource_types
from hub.search.extract import IDENTIFIER_SUFFIX
from hub.search.parse import (
    Clause,
    DateValue,
    Include,
    MissingValue,
    NumberValue,
    PhoneticValue,
    QuantityValue,
    ReferenceValue,
    SearchRequest,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
)

TABLES = {
    "token": "idx_token",
    "string": "idx_string",
    "reference": "idx_reference",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
}

# Columns the page query returns, in order.
RESULT_COLUMNS = "r.res_id, r.version, r.last_updated, r.content::text, r.patient_id"
# Columns the include / revinclude queries return, in order.
INCLUDED_COLUMNS = "t.res_type, t.res_id, t.version, t.last_updated, t.content::text, t.patient_id"

# The greatest code point: `prefix + _TOP` bounds every string that starts with `prefix`.
_TOP = "\U0010ffff"
_APPROX = Decimal("0.1")


class _Sql:
    """SQL text and its parameters, built together so they cannot drift apart."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[object] = []

    def add(self, text: str, *params: object) -> None:
        self.parts.append(text)
        self.params.extend(params)

    def text(self) -> str:
        return "".join(self.parts)


def build_search_sql(req: SearchRequest, *, with_total: bool = False, extra_row: bool = False,
                     access: Access) -> tuple[str, list]:
    """The page query for `req`: rows of (res_id, version, last_updated, content text,
    patient id), ordered, `LIMIT count OFFSET offset`; only rows `access` may see.

    `with_total` adds a final `total` column (`count(*) OVER ()`): one round trip, but every
    match is counted and sorted before the limit, so prefer `build_count_sql` when a total is
    needed only sometimes. `extra_row` fetches count + 1 rows so the caller can tell whether a
    next page exists without counting. With `_summary=count` this returns the count query.
    """
    if req.summary == "count":
        return build_count_sql(req, access=access)
    sql = _Sql()
    sql.add(f"SELECT {RESULT_COLUMNS}")
    if with_total:
        sql.add(", count(*) OVER () AS total")
    sql.add(" FROM resource r")
    _where(sql, req, access)
    _order_by(sql, req.sort)
    sql.add(" LIMIT %s OFFSET %s", req.count + (1 if extra_row else 0), req.offset)
    return sql.text(), sql.params


def build_count_sql(req: SearchRequest, *, access: Access) -> tuple[str, list]:
    """`SELECT count(*)` of every match of `req` (one row, one column) that `access` may see:
    a total must never count what the page would hide."""
    sql = _Sql()
    sql.add("SELECT count(*) AS total FROM resource r")
    _where(sql, req, access)
    return sql.text(), sql.params


def known_total(req: SearchRequest, rows_returned: int) -> int | None:
    """The total implied by a page without counting: a short, non-empty (or first) page ends the
    results. None when only a count query can tell."""
    if rows_returned < req.count and (rows_returned > 0 or req.offset == 0):
        return req.offset + rows_returned
    return None


def build_include_sql(res_type: str, ids: Sequence[str], includes: Sequence[Include], *,
                      access: Access) -> tuple[str, list] | None:
    """Resources referred to by the matches (`_include`): rows of (res_type, res_id, version,
    last_updated, content text), each once. Includes whose source type is not `res_type` are
    skipped; None when none applies (nothing to run)."""
    filters = [
        [("i.param", None if inc.param == "*" else inc.param), ("i.target_type", inc.target_type)]
        for inc in includes if inc.source_type in ("*", res_type)
    ]
    return _reference_hop_sql(
        res_type, ids, filters, hop="i.target_type, i.target_id",
        start="i.res_type = %s AND i.res_id = ANY(%s) AND i.target_id IS NOT NULL", access=access,
    )


def build_revinclude_sql(res_type: str, ids: Sequence[str], revincludes: Sequence[Include], *,
                         access: Access) -> tuple[str, list] | None:
    """Resources that refer to the matches (`_revinclude=Source:param[:Target]`): same columns
    as build_include_sql. Revincludes whose target type is set and is not `res_type` are
    skipped; None when none applies."""
    filters = [
        [("i.res_type", None if inc.source_type == "*" else inc.source_type),
         ("i.param", None if inc.param == "*" else inc.param)]
        for inc in revincludes if inc.target_type in (None, res_type)
    ]
    return _reference_hop_sql(
        res_type, ids, filters, hop="i.res_type, i.res_id",
        start="i.target_type = %s AND i.target_id = ANY(%s)", access=access,
    )


def _reference_hop_sql(
    res_type: str, ids: Sequence[str], filters: list[list[tuple[str, str | None]]], *, hop: str, start: str,
    access: Access,
) -> tuple[str, list] | None:
    """One hop along idx_reference from the matches (`start`) to the resources at the other end
    (`hop`), keeping index rows that satisfy any of `filters` (each a list of column = value,
    None meaning any value). Only resources of types `access` may read and that it may
    see: an include must never add what a read would refuse."""
    if not filters or not ids:
        return None
    conditions: list[str] = []
    params: list[object] = []
    for columns in filters:
        parts = [f"{column} = %s" for column, value in columns if value is not None]
        params += [value for _, value in columns if value is not None]
        conditions.append("(" + " AND ".join(parts) + ")" if parts else "TRUE")
    sql = (
        f"SELECT {INCLUDED_COLUMNS} FROM resource t WHERE NOT t.deleted AND (t.res_type, t.res_id) IN ("
        f"SELECT {hop} FROM idx_reference i WHERE {start} AND (" + " OR ".join(conditions) + "))"
    )
    args: list[object] = [res_type, list(ids), *params]
    readable = access.types_with("r", sorted(resource_types()))
    if readable is not None:
        sql += " AND t.res_type = ANY(%s)"
        args.append(readable)
    visible = visible_sql(access, "t")
    if visible is not None:
        sql += f" AND {visible[0]}"
        args += visible[1]
    return sql, args


def build_rows_sql(res_type: str, columns: str, *, access: Access, filters: Sequence[SearchRequest] = (),
                   since: datetime | None = None, patients: Sequence[str] | None = None,
                   in_a_record: bool = False, deleted: bool = False) -> tuple[str, list]:
    """Every current row of one type (`columns` from alias r, no paging, no order) that `access`
    may see: for a Bulk Data export and for cohort criteria. `filters` (parsed searches on
    `res_type`) are ORed, each one's clauses ANDed, as `_typeFilter` says; `since` keeps rows
    changed at or after it; `patients` keeps rows in those people's records, `in_a_record` rows
    in anyone's. `deleted` selects the deleted resources instead (their last version's place)."""
    sql = _Sql()
    sql.add(f"SELECT {columns} FROM resource r WHERE r.res_type = %s AND ", res_type)
    sql.add("r.deleted" if deleted else "NOT r.deleted")
    visible = visible_sql(access, "r")
    if visible is not None:
        sql.add(f" AND {visible[0]}", *visible[1])
    if since is not None:
        sql.add(" AND r.last_updated >= %s", since)
    if patients is not None:
        sql.add(" AND r.patient_id = ANY(%s)", list(patients))
    elif in_a_record:
        sql.add(" AND r.patient_id IS NOT NULL")
    if filters and not deleted:
        sql.add(" AND (")
        for n, req in enumerate(filters):
            sql.add(" OR (TRUE" if n else "(TRUE")
            for clause in req.clauses:
                sql.add(" AND ")
                _clause(sql, res_type, clause)
            sql.add(")")
        sql.add(")")
    return sql.text(), sql.params


# --------------------------------------------------------------------------------------------
# WHERE


def _where(sql: _Sql, req: SearchRequest, access: Access) -> None:
    sql.add(" WHERE r.res_type = %s AND NOT r.deleted", req.res_type)
    visible = visible_sql(access, "r")
    if visible is not None:
        sql.add(f" AND {visible[0]}", *visible[1])
    for clause in req.clauses:
        sql.add(" AND ")
        _clause(sql, req.res_type, clause)


def _clause(sql: _Sql, res_type: str, clause: Clause) -> None:
    if clause.param.code == "_id":
        _id_clause(sql, clause)
    elif clause.param.code == "_lastUpdated":
        _last_updated_clause(sql, clause)
    else:
        _index_clause(sql, res_type, clause)


def _id_clause(sql: _Sql, clause: Clause) -> None:
    ids = [v.code for v in clause.values if isinstance(v, TokenValue) and v.code is not None]
    sql.add("NOT (r.res_id = ANY(%s))" if clause.modifier == "not" else "r.res_id = ANY(%s)", ids)


def _last_updated_clause(sql: _Sql, clause: Clause) -> None:
    sql.add("(")
    for n, value in enumerate(clause.values):
        assert isinstance(value, DateValue)
        sql.add(" OR " if n else "")
        _point_in_time(sql, value)
    sql.add(")")


def _point_in_time(sql: _Sql, v: DateValue) -> None:
    """Prefix semantics for an instant t (a 1 µs range) against [sL, sH)."""
    prefix = v.prefix
    if prefix in ("eq", "ap"):
        sql.add("(r.last_updated >= %s AND r.last_updated < %s)", v.low, v.high)
    elif prefix == "ne":
        sql.add("NOT (r.last_updated >= %s AND r.last_updated < %s)", v.low, v.high)
    elif prefix in ("gt", "sa"):
        sql.add("r.last_updated >= %s", v.high)
    elif prefix in ("lt", "eb"):
        sql.add("r.last_updated < %s", v.low)
    elif prefix == "ge":
        sql.add("r.last_updated >= %s", v.low)
    else:  # le
        sql.add("r.last_updated < %s", v.high)


def _index_clause(sql: _Sql, res_type: str, clause: Clause) -> None:
    param, modifier = clause.param, clause.modifier
    table, code = TABLES[param.type], param.code
    if modifier == "identifier":
        table, code = "idx_token", code + IDENTIFIER_SUFFIX
    elif modifier == "text":
        table = "idx_token"
    negate = modifier == "not"
    if modifier == "missing":
        value = clause.values[0]
        assert isinstance(value, MissingValue)
        negate = value.missing
    sql.add("NOT EXISTS (" if negate else "EXISTS (")
    sql.add(f"SELECT 1 FROM {table} i WHERE i.res_type = %s AND i.res_id = r.res_id AND i.param = %s",
            res_type, code)
    if modifier != "missing":
        sql.add(" AND (")
        _value_conditions(sql, clause)
        sql.add(")")
    sql.add(")")


def _value_conditions(sql: _Sql, clause: Clause) -> None:
    values = clause.values
    if all(isinstance(v, TokenValue) and v.any_system for v in values):
        sql.add("i.code = ANY(%s)", [v.code for v in values])  # type: ignore[union-attr]
        return
    for n, value in enumerate(values):
        sql.add(" OR " if n else "")
        _VALUE_SQL[type(value)](sql, value, clause.modifier)


def _token(sql: _Sql, v: TokenValue, modifier: str | None) -> None:
    if v.any_system:
        sql.add("i.code = %s", v.code)
    elif v.system is None:
        sql.add("(i.system IS NULL AND i.code = %s)", v.code)
    elif v.code is None:
        sql.add("i.system = %s", v.system)
    else:
        sql.add("(i.system = %s AND i.code = %s)", v.system, v.code)


def _string(sql: _Sql, v: StringValue, modifier: str | None) -> None:
    if modifier == "exact":
        sql.add("i.value_exact = %s", v.text)
    elif modifier == "contains":
        sql.add("i.value_norm LIKE %s", "%" + like_escape(v.norm) + "%")
    elif modifier == "text":  # token :text, on idx_token.text
        sql.add("(i.text LIKE %s OR i.text LIKE %s)", like_escape(v.norm) + "%", "% " + like_escape(v.norm) + "%")
    else:
        sql.add("(i.value_norm ~>=~ %s AND i.value_norm ~<~ %s)", v.norm, v.norm + _TOP)


def _phonetic(sql: _Sql, v: PhoneticValue, modifier: str | None) -> None:
    """Every word sounds like one of the resource's name parts (Metaphone keys, equal)."""
    sql.add("(i.value_norm = %s", v.keys[0])
    for key in v.keys[1:]:
        sql.add(" AND EXISTS (SELECT 1 FROM idx_string j WHERE j.res_type = i.res_type AND j.res_id = i.res_id"
                " AND j.param = i.param AND j.value_norm = %s)", key)
    sql.add(")")


def _date(sql: _Sql, v: DateValue, modifier: str | None) -> None:
    low, high, prefix = v.low, v.high, v.prefix
    if prefix == "eq":
        sql.add("(i.low >= %s AND i.high <= %s)", low, high)
    elif prefix == "ne":
        sql.add("NOT (i.low >= %s AND i.high <= %s)", low, high)
    elif prefix == "gt":
        sql.add("i.high > %s", high)
    elif prefix == "lt":
        sql.add("i.low < %s", low)
    elif prefix == "ge":
        sql.add("(i.high > %s OR (i.low >= %s AND i.high <= %s))", high, low, high)
    elif prefix == "le":
        sql.add("(i.low < %s OR (i.low >= %s AND i.high <= %s))", low, low, high)
    elif prefix == "sa":
        sql.add("i.low >= %s", high)
    elif prefix == "eb":
        sql.add("i.high <= %s", low)
    else:  # ap: overlap
        sql.add("(i.low < %s AND i.high > %s)", high, low)


_CENTRE = "((i.low + i.high) / 2)"


def _numeric(sql: _Sql, v: NumberValue | QuantityValue) -> None:
    prefix = v.prefix
    if prefix == "eq":
        sql.add(f"({_CENTRE} >= %s AND {_CENTRE} < %s)", v.low, v.high)
    elif prefix == "ne":
        sql.add(f"NOT ({_CENTRE} >= %s AND {_CENTRE} < %s)", v.low, v.high)
    elif prefix in ("gt", "lt", "ge", "le"):
        operator = {"gt": ">", "lt": "<", "ge": ">=", "le": "<="}[prefix]
        sql.add(f"{_CENTRE} {operator} %s", v.value)
    elif prefix == "sa":
        sql.add("i.low >= %s", v.high)
    elif prefix == "eb":
        sql.add("i.high <= %s", v.low)
    else:  # ap
        margin = abs(v.value) * _APPROX
        sql.add(f"({_CENTRE} >= %s AND {_CENTRE} < %s)", min(v.low, v.value - margin), max(v.high, v.value + margin))


def _number(sql: _Sql, v: NumberValue, modifier: str | None) -> None:
    _numeric(sql, v)


def _quantity(sql: _Sql, v: QuantityValue, modifier: str | None) -> None:
    sql.add("(")
    _numeric(sql, v)
    if v.system is not None and v.code is not None:
        sql.add(" AND i.system = %s AND i.code = %s", v.system, v.code)
    elif v.system is not None:
        sql.add(" AND i.system = %s", v.system)
    elif v.code is not None:
        sql.add(" AND (i.code = %s OR i.unit = %s)", v.code, v.code)
    sql.add(")")


def _reference(sql: _Sql, v: ReferenceValue, modifier: str | None) -> None:
    if v.url is not None:
        # A canonical without |version matches every version of it.
        sql.add("(i.url = %s OR starts_with(i.url, %s))", v.url, v.url + "|")
    elif v.target_type is not None:
        sql.add("(i.target_type = %s AND i.target_id = %s)", v.target_type, v.target_id)
    else:
        sql.add("i.target_id = %s", v.target_id)


def _uri(sql: _Sql, v: UriValue, modifier: str | None) -> None:
    if modifier == "below":
        sql.add("starts_with(i.uri, %s)", v.uri)
    elif modifier == "above":
        sql.add("starts_with(%s, i.uri)", v.uri)
    else:
        sql.add("i.uri = %s", v.uri)


_VALUE_SQL: dict[type, Callable[[_Sql, Any, str | None], None]] = {
    TokenValue: _token,
    StringValue: _string,
    PhoneticValue: _phonetic,
    DateValue: _date,
    NumberValue: _number,
    QuantityValue: _quantity,
    ReferenceValue: _reference,
    UriValue: _uri,
}


def like_escape(text: str) -> str:
    """`text` as a literal inside a LIKE pattern (default escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --------------------------------------------------------------------------------------------
# ORDER BY

# Per parameter type: (table, ascending key, descending key). Ascending uses each resource's
# lowest value, descending its highest, as R4 says for multi-valued sort parameters.
_SORT_KEYS = {
    "string": ("idx_string", "min(i.value_norm)", "max(i.value_norm)"),
    "token": ("idx_token", "min(i.code)", "max(i.code)"),
    "date": ("idx_date", "min(i.low)", "max(i.high)"),
    "number": ("idx_number", "min(i.low)", "max(i.high)"),
    "quantity": ("idx_quantity", "min(i.low)", "max(i.high)"),
    "uri": ("idx_uri", "min(i.uri)", "max(i.uri)"),
    "reference": (
        "idx_reference",
        "min(coalesce(i.target_type || '/' || i.target_id, i.url))",
        "max(coalesce(i.target_type || '/' || i.target_id, i.url))",
    ),
}


def _order_by(sql: _Sql, sort: list[SortKey]) -> None:
    if not sort:
        sql.add(" ORDER BY r.last_updated DESC, r.res_id")
        return
    sql.add(" ORDER BY ")
    for n, key in enumerate(sort):
        sql.add(", " if n else "")
        direction = " DESC" if key.descending else ""
        if key.code == "_id":
            sql.add("r.res_id" + direction)
        elif key.code == "_lastUpdated":
            sql.add("r.last_updated" + direction)
        else:
            table, ascending, descending = _SORT_KEYS[key.param.type]
            sql.add(f"(SELECT {descending if key.descending else ascending} FROM {table} i "
                    "WHERE i.res_type = r.res_type AND i.res_id = r.res_id AND i.param = %s)"
                    f"{direction} NULLS LAST", key.code)
    if all(k.code != "_id" for k in sort):
        sql.add(", r.res_id")
