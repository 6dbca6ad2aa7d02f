"""The payload a CSV file connector publishes (connectors/la and those built on it: the
council's adult and children's extracts): the kind's header and the rows the connector checked.
A mapping reads it again on its own — it trusts the format, not the import path — and refuses
anything that is not exactly that format."""
from __future__ import annotations

import csv
import io

from hub.fhir.errors import FhirError


def read_rows(payload: bytes, columns: tuple[str, ...], what: str = "LA extract") -> list[dict[str, str]]:
    """The rows as column → value (FhirError `structure` naming `what` for anything else)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FhirError("structure", f"{what}: the payload is not UTF-8") from None
    try:
        records = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise FhirError("structure", f"{what}: the payload is not CSV ({exc})") from None
    if not records or tuple(records[0]) != columns:
        raise FhirError("structure", f"{what}: the payload header is not " + ",".join(columns))
    rows = [dict(zip(columns, r, strict=True)) for r in records[1:] if len(r) == len(columns)]
    if len(rows) != len(records) - 1 or not rows:
        raise FhirError("structure", f"{what}: the payload has no rows or a row of the wrong width")
    return rows
