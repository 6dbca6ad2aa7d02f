"""The conditional interactions' shared step: the one resource a set of search criteria selects
(conditional create, conditional update, a transaction's conditional references)."""
from __future__ import annotations

from urllib.parse import parse_qsl

from psycopg import AsyncConnection

from hub.fhir.errors import FhirError
from hub.identity.duplicates import refuse_placeholder_criteria
from hub.search.access import Access
from hub.search.parse import parse_search
from hub.store import searching
from hub.store.resources import Version

# Query parameters that shape the answer, never the criteria.
_NOT_CRITERIA = frozenset({"_format", "_pretty", "_summary", "_elements"})


def criteria_pairs(criteria: str | list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Criteria as given (`identifier=sys|1&…`, with or without `Type?`, or as pairs), less the
    parameters that shape an answer."""
    if isinstance(criteria, str):
        text = criteria.split("?", 1)[1] if "?" in criteria else criteria
        criteria = parse_qsl(text, keep_blank_values=True)
    return [(k, v) for k, v in criteria if k not in _NOT_CRITERIA]


async def find_one(conn: AsyncConnection, res_type: str, criteria: str | list[tuple[str, str]], *,
                   access: Access) -> Version | None:
    """The one resource the criteria select that `access` may see, None if none; 412 if several.

    Takes a transaction-scoped advisory lock on the criteria so two concurrent conditional
    creates with the same criteria cannot both create. Criteria that would identify a person by
    a placeholder NHS number are refused: such a number names no one in particular."""
    pairs = criteria_pairs(criteria)
    if not pairs:
        raise FhirError("invalid", "a conditional interaction needs search criteria")
    refuse_placeholder_criteria(res_type, pairs)
    key = "&".join(f"{k}={v}" for k, v in pairs)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{res_type}?{key}",))
    query = parse_search(res_type, pairs + [("_count", "2")], default_count=2, max_count=2, strict=True)
    result = await searching.search(conn, query, access=access, with_total=False)
    if len(result.matches) > 1:
        raise FhirError("multiple-matches", f"the criteria {res_type}?{key[:200]} match more than one "
                        "resource", status=412)
    return result.matches[0] if result.matches else None
