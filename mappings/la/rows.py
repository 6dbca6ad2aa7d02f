"""The envelope payload the LA connector publishes: CSV with the kind's header and the rows
it checked. The mapping reads it again on its own (it must not trust the connector's import
path, only its format) and refuses anything that is not that format."""
from __future__ import annotations

import csv
import io

from hub.fhir.errors import FhirError

_DETAILS = ("NHS_Number", "Given_Name", "Family_Name", "Date_of_Birth", "Gender", "Postcode")
PERSON_COLUMNS = ("LA_Code", "LA_Person_Unique_Identifier", *_DETAILS, "Date_of_Death")
CARER_COLUMNS = ("LA_Code", "Carer_LA_Person_Unique_Identifier", "Cared_For_LA_Person_Unique_Identifier",
                 "Relationship_To_Cared_For", "Carer_Assessed", "Carer_Assessment_Date", *_DETAILS)
EVENT_COLUMNS = ("LA_Code", "Event_Reference", "LA_Person_Unique_Identifier", "Client_Type", "Event_Type",
                 "Event_Start_Date", "Event_End_Date", "Event_Outcome", "Service_Type", "Service_Component",
                 "Delivery_Mechanism", "Unit_Cost", "Cost_Frequency_Unit_Type", "Planned_units_per_week")


def read_rows(payload: bytes, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FhirError("structure", "LA extract: the payload is not UTF-8") from None
    try:
        records = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise FhirError("structure", f"LA extract: the payload is not CSV ({exc})") from None
    if not records or tuple(records[0]) != columns:
        raise FhirError("structure", "LA extract: the payload header is not " + ",".join(columns))
    rows = [dict(zip(columns, r, strict=True)) for r in records[1:] if len(r) == len(columns)]
    if len(rows) != len(records) - 1 or not rows:
        raise FhirError("structure", "LA extract: the payload has no rows or a row of the wrong width")
    return rows
