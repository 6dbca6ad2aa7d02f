"""One statement line (CSV with the format's header, as connectors/statements publishes it) →
a transaction Bundle holding its spend line: when, who was paid, how much, what it bought, the
goal or outcome it serves, whose money under which management option. The person is named by
NHS number (the provider never sent them); the recorder points the line at the person the record
holds, and books it to their account for that funder and management option (hub/money)."""
from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from hub.fhir.errors import FhirError
from hub.fhir.identifiers import CANONICAL_BASE, NHS_NUMBER
from hub.fhir.ids import source_id
from hub.fhir.jsontext import FhirDecimal

COLUMNS = ("Provider_Code", "Statement_Reference", "Line_Reference", "NHS_Number", "Funding_Source",
           "Management_Option", "Line_Date", "Line_Type", "Payee", "Amount", "Category", "Description", "Goal",
           "Outcome", "Setting")
SD = f"{CANONICAL_BASE}/StructureDefinition"
CS = f"{CANONICAL_BASE}/CodeSystem"
LINE_ID = f"{CANONICAL_BASE}/Id/statement-line"
KINDS = {"Spend": ("spend", "Spend"), "Refund": ("refund", "Refund"), "Returned": ("returned", "Money returned"),
         "Clawback": ("clawed-back", "Money clawed back")}
CATEGORY_NAMES = {"personal-assistant": "Personal assistant", "agency-care": "Agency care",
                  "equipment": "Equipment and adaptations", "therapy": "Therapy", "transport": "Transport",
                  "respite-and-breaks": "Respite and short breaks", "activities": "Activities",
                  "continuing-healthcare": "Continuing healthcare", "residential-care": "Residential or nursing care",
                  "support-service-fee": "Support service fee", "education-support": "Education support",
                  "other": "Other"}


def _row(payload: bytes) -> dict[str, str]:
    try:
        records = list(csv.reader(io.StringIO(payload.decode("utf-8")), strict=True))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FhirError("structure", f"statement line: the payload is not UTF-8 CSV ({type(exc).__name__})") from None
    if len(records) != 2 or tuple(records[0]) != COLUMNS or len(records[1]) != len(COLUMNS):
        raise FhirError("structure", "statement line: the payload is not the format's header and one row")
    return dict(zip(COLUMNS, records[1], strict=True))


def _coded(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": f"{CS}/{system}", "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def map_line(payload: bytes, source: str) -> dict[str, Any]:
    row = _row(payload)
    if row["Line_Type"] not in KINDS or row["Category"] not in CATEGORY_NAMES:
        raise FhirError("code-invalid", "statement line: an unknown Line_Type or Category")
    try:
        amount = Decimal(row["Amount"])
    except ArithmeticError:
        raise FhirError("value", "statement line: Amount is not a number") from None
    kind, kind_name = KINDS[row["Line_Type"]]
    extensions = [{"url": f"{SD}/spend-kind", "valueCodeableConcept": _coded("ipc-spend-kind", kind, kind_name)},
                  {"url": f"{SD}/funding-source", "valueCodeableConcept": _coded("ipc-funding-source", row["Funding_Source"])},
                  {"url": f"{SD}/management-option",
                   "valueCodeableConcept": _coded("ipc-management-option", row["Management_Option"])}]
    if row["Setting"]:
        extensions.append({"url": f"{SD}/care-setting", "valueCodeableConcept": _coded("ipc-care-setting", row["Setting"])})
    provider = {"identifier": {"system": f"{CANONICAL_BASE}/Id/statement-provider", "value": row["Provider_Code"]},
                "display": f"statement provider {row['Provider_Code']}"}
    code = _coded("ipc-spend-category", row["Category"], CATEGORY_NAMES[row["Category"]])
    if row["Description"]:
        code["text"] = row["Description"]
    line: dict[str, Any] = {
        "resourceType": "ChargeItem", "id": source_id(source, "ChargeItem", row["Line_Reference"]),
        "meta": {"profile": [f"{SD}/ipc-spend-line"]}, "extension": extensions,
        "identifier": [{"system": LINE_ID, "value": row["Line_Reference"], "assigner": provider}],
        "status": "billed", "code": code,
        "subject": {"identifier": {"system": NHS_NUMBER, "value": row["NHS_Number"]}},
        "occurrenceDateTime": row["Line_Date"],
        "priceOverride": {"value": FhirDecimal(f"{amount:.2f}"), "currency": "GBP"},
        "enterer": provider,
    }
    if row["Payee"]:
        line["performer"] = [{"actor": {"display": row["Payee"]}}]
    if row["Outcome"]:
        line["reason"] = [{"text": row["Outcome"]}]
    if row["Goal"]:
        line["supportingInformation"] = [{"reference": f"Goal/{row['Goal']}"}]
    if row["Statement_Reference"]:
        line["note"] = [{"text": f"Statement {row['Statement_Reference']} of provider {row['Provider_Code']}"}]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{line['id']}", "resource": line,
         "request": {"method": "PUT", "url": f"ChargeItem/{line['id']}"}}]}
