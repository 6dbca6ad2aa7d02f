"""The children's extract format: a council's children with special educational needs and
disabilities, and its children's social care, as three CSV files (documented for people in
README.md beside it).

Shaped like the returns councils already make to the Department for Education, so an extract is
a by-product of them: **children** (the child's details, as the SEN2 and Children in Need census
child modules carry them), **ehc** (one row per EHC needs assessment request and the plan it led
to: the SEN2 request, assessment and plan modules) and **episodes** (children in need, child
protection plans and looked-after episodes: the CIN census and SSDA903). Checked row by row with
the council extracts' machinery (connectors/la: columns, code lists, one cheap check per value;
the same reader, error files, duplicate ledger and publication)."""
from __future__ import annotations

from connectors.la.format import (
    Column,
    FileKind,
    check_date,
    check_la_code,
    check_local_id,
    check_nhs_number,
    check_postcode,
    check_text,
    matching,
    one_of,
)

SEXES = frozenset({"M", "F", "U"})   # SEN2 and the CIN census: male, female, unknown
# SEN2 request outcome: the council decided to assess, or not to.
DECISIONS = frozenset({"Assess", "Not assess"})
# SEN2 assessment outcome: a plan was issued, or not.
ASSESSMENT_OUTCOMES = frozenset({"Plan issued", "No plan"})
SEN_TYPES = frozenset({"SPLD", "MLD", "SLD", "PMLD", "SEMH", "SLCN", "HI", "VI", "MSI", "PD", "ASD", "OTH", "NSA"})
# SEN2 placement (the kind of establishment named in the plan), shortened to what the plan needs.
PLACEMENTS = frozenset({"Mainstream school", "Resourced provision", "Special school", "Independent special school",
                        "Alternative provision", "Further education", "Apprenticeship", "Early years", "Other"})
EPISODE_TYPES = frozenset({"CIN", "CPP", "CLA"})
PRIMARY_NEEDS = frozenset({f"N{n}" for n in range(1, 10)})   # CIN census primary need
# SSDA903 legal status of a looked-after child.
LEGAL_STATUSES = frozenset({"C1", "C2", "D1", "E1", "J1", "J2", "J3", "L1", "L2", "L3", "V2", "V3", "V4"})

check_upn = matching(r"^[A-Z]\d{11}[0-9A-Z]$", "not a unique pupil number (a letter, 11 digits and a check character)")
check_urn = matching(r"^\d{6,8}$", "not an establishment URN or UKPRN (6 to 8 digits)")


def _child_rule(row: dict[str, str]) -> tuple[str, str] | None:
    if row["Continuing_Care_From"] and row["Continuing_Care_From"] < row["Date_of_Birth"]:
        return "Continuing_Care_From", "continuing care starts before the child was born"
    return None


def _in_order(row: dict[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """Each date given is on or after the one before it in `names` (the assessment's steps)."""
    previous = ""
    for name in names:
        if row[name]:
            if previous and row[name] < row[previous]:
                return name, f"{name} is before {previous}"
            previous = name
    return None


_STEPS = ("Request_Received_Date", "Decision_Date", "Advice_Date", "Draft_Plan_Date", "Final_Plan_Date")


def _ehc_rule(row: dict[str, str]) -> tuple[str, str] | None:
    if broken := _in_order(row, _STEPS):
        return broken
    if row["Decision"] and not row["Decision_Date"]:
        return "Decision_Date", "a decision needs its date"
    if row["Decision_Date"] and not row["Decision"]:
        return "Decision", "a decision date needs the decision"
    if row["Decision"] == "Not assess" and (row["Final_Plan_Date"] or row["Assessment_Outcome"]):
        return "Decision", "no assessment was made, so there is no assessment outcome or plan"
    if row["Final_Plan_Date"] and row["Assessment_Outcome"] != "Plan issued":
        return "Assessment_Outcome", "a final plan date needs the outcome 'Plan issued'"
    if row["Assessment_Outcome"] == "Plan issued":
        for name in ("Final_Plan_Date", "SEN_Type"):
            if not row[name]:
                return name, "an issued plan needs this column"
    if row["Last_Review_Date"] and (not row["Final_Plan_Date"] or row["Last_Review_Date"] < row["Final_Plan_Date"]):
        return "Last_Review_Date", "a review is of an issued plan, on or after its date"
    if row["Plan_Ceased_Date"] and (not row["Final_Plan_Date"] or row["Plan_Ceased_Date"] < row["Final_Plan_Date"]):
        return "Plan_Ceased_Date", "a plan ceases on or after it was issued"
    if row["Date_of_Birth"] and row["Date_of_Birth"] > row["Request_Received_Date"]:
        return "Request_Received_Date", "the request is before the child was born"
    return None


def _episode_rule(row: dict[str, str]) -> tuple[str, str] | None:
    if row["End_Date"] and row["End_Date"] < row["Start_Date"]:
        return "End_Date", "the episode ends before it starts"
    if row["Episode_Type"] == "CLA" and not row["Legal_Status"]:
        return "Legal_Status", "a looked-after episode needs its legal status"
    if row["Episode_Type"] != "CLA" and row["Legal_Status"]:
        return "Legal_Status", "only a looked-after episode has a legal status"
    return None


CHILDREN = FileKind("children", "children-person", (
    Column("LA_Code", True, check_la_code),
    Column("Child_Id", True, check_local_id),
    Column("UPN", False, check_upn),
    Column("NHS_Number", False, check_nhs_number),
    Column("Forename", False, check_text),
    Column("Surname", True, check_text),
    Column("Date_of_Birth", True, check_date),
    Column("Sex", False, one_of(SEXES)),
    Column("Postcode", False, check_postcode),
    Column("Continuing_Care_From", False, check_date),
), "Child_Id", _child_rule)

EHC = FileKind("ehc", "children-ehc", (
    Column("LA_Code", True, check_la_code),
    Column("Child_Id", True, check_local_id),
    Column("Date_of_Birth", True, check_date),
    Column("Request_Id", True, check_local_id),
    Column("Request_Received_Date", True, check_date),
    Column("Decision", False, one_of(DECISIONS)),
    Column("Decision_Date", False, check_date),
    Column("Advice_Date", False, check_date),
    Column("Draft_Plan_Date", False, check_date),
    Column("Assessment_Outcome", False, one_of(ASSESSMENT_OUTCOMES)),
    Column("Final_Plan_Date", False, check_date),
    Column("SEN_Type", False, one_of(SEN_TYPES)),
    Column("Placement_URN", False, check_urn),
    Column("Placement_Type", False, one_of(PLACEMENTS)),
    Column("Last_Review_Date", False, check_date),
    Column("Plan_Ceased_Date", False, check_date),
), "Child_Id", _ehc_rule)

EPISODES = FileKind("episodes", "children-episode", (
    Column("LA_Code", True, check_la_code),
    Column("Child_Id", True, check_local_id),
    Column("Episode_Id", True, check_local_id),
    Column("Episode_Type", True, one_of(EPISODE_TYPES)),
    Column("Start_Date", True, check_date),
    Column("End_Date", False, check_date),
    Column("Primary_Need", True, one_of(PRIMARY_NEEDS)),
    Column("Legal_Status", False, one_of(LEGAL_STATUSES)),
), "Child_Id", _episode_rule)

KINDS = (CHILDREN, EHC, EPISODES)   # also the order an extract is published in
