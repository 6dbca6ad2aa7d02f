"""The statement line format: one CSV row per line of a direct payment account, an individual
service fund or a provider's invoice, as a direct payment support service, a managed account
provider, a third party or a continuing healthcare provider sends them (documented for people in
README.md beside it). Checked row by row with the council extracts' machinery
(connectors/la/format.py: columns, code lists, one cheap check per value)."""
from __future__ import annotations

import re

from connectors.la.format import Column, FileKind, check_date, check_nhs_number, check_text, matching, one_of

FUNDING_SOURCES = frozenset({"nhs", "local-authority", "education", "other"})
MANAGEMENT_OPTIONS = frozenset({"direct-payment", "notional", "third-party"})
LINE_TYPES = {"Spend": "spend", "Refund": "refund", "Returned": "returned", "Clawback": "clawed-back"}
CATEGORIES = frozenset({"personal-assistant", "agency-care", "equipment", "therapy", "transport",
                        "respite-and-breaks", "activities", "continuing-healthcare", "residential-care",
                        "support-service-fee", "education-support", "other"})
SETTINGS = frozenset({"hospital-inpatient", "emergency-department", "hospital-outpatient", "residential-care",
                      "nursing-care", "home-and-community", "education", "other"})

_AMOUNT = re.compile(r"^\d{1,7}(\.\d{1,2})?$")


check_provider = matching(r"^[A-Za-z0-9][A-Za-z0-9\-.]{0,19}$", "not a provider code (1-20 letters, digits, - .)")
check_reference = matching(r"^[A-Za-z0-9][A-Za-z0-9\-./_]{0,49}$", "not a reference (1-50 letters, digits, - . / _)")
check_goal = matching(r"^[A-Za-z0-9\-.]{1,64}$", "not a Goal id of the shared record (1-64 letters, digits, - .)")


def check_amount(v: str) -> str | None:
    if not _AMOUNT.match(v):
        return f"{v!r} is not an amount in pounds (e.g. 120.50, no £, no minus sign: Line_Type says which way)"
    return "an amount of zero is not a line" if float(v) == 0 else None


def _line_rule(row: dict[str, str]) -> tuple[str, str] | None:
    if row["Line_Type"] == "Spend" and not row["Payee"]:
        return "Payee", "a Spend line names who was paid"
    return None


LINES = FileKind("statement lines", "statement-line", (
    Column("Provider_Code", True, check_provider),
    Column("Statement_Reference", False, check_reference),
    Column("Line_Reference", True, check_reference),
    Column("NHS_Number", True, check_nhs_number),
    Column("Funding_Source", True, one_of(FUNDING_SOURCES)),
    Column("Management_Option", True, one_of(MANAGEMENT_OPTIONS)),
    Column("Line_Date", True, check_date),
    Column("Line_Type", True, one_of(frozenset(LINE_TYPES))),
    Column("Payee", False, check_text),
    Column("Amount", True, check_amount),
    Column("Category", True, one_of(CATEGORIES)),
    Column("Description", False, check_text),
    Column("Goal", False, check_goal),
    Column("Outcome", False, check_text),
    Column("Setting", False, one_of(SETTINGS)),
), "NHS_Number", _line_rule)
KINDS = (LINES,)
