"""The local authority extract format, pure: headers decide the kind or refuse the file, each
bad value gets its column and reason, and the service costs add up."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from connectors.la.extract import csv_line
from connectors.la.format import (
    CARERS,
    COST_FREQUENCIES,
    DELIVERY_MECHANISMS,
    EVENTS,
    GENDERS,
    KINDS,
    PEOPLE,
    RELATIONSHIPS,
    SERVICE_COMPONENTS,
    HeaderError,
    check_row,
    kind_of_header,
)
from mappings.la import codes
from mappings.la.costs import PERIODS_PER_YEAR, service_cost, statement_year
from mappings.la.rows import CARER_COLUMNS, EVENT_COLUMNS, PERSON_COLUMNS

SERVICE = {"LA_Code": "E10000024", "Event_Reference": "EV-1", "LA_Person_Unique_Identifier": "P1",
           "Client_Type": "Service User", "Event_Type": "Service", "Event_Start_Date": "2026-03-01",
           "Event_End_Date": "", "Event_Outcome": "", "Service_Type": "Long Term Support: Community",
           "Service_Component": "Home Support", "Delivery_Mechanism": "Direct Payment", "Unit_Cost": "22.50",
           "Cost_Frequency_Unit_Type": "Hourly", "Planned_units_per_week": "10"}
PERSON = {"LA_Code": "E10000024", "LA_Person_Unique_Identifier": "P1", "NHS_Number": "9990000018",
          "Given_Name": "Ann", "Family_Name": "Lee", "Date_of_Birth": "1950-01-01", "Gender": "Female",
          "Postcode": "NG1 1AA", "Date_of_Death": ""}
CARER = {"LA_Code": "E10000024", "Carer_LA_Person_Unique_Identifier": "C1",
         "Cared_For_LA_Person_Unique_Identifier": "P1", "Relationship_To_Cared_For": "Parent",
         "Carer_Assessed": "Y", "Carer_Assessment_Date": "2026-01-01", "NHS_Number": "", "Given_Name": "Bo",
         "Family_Name": "Lee", "Date_of_Birth": "", "Gender": "", "Postcode": ""}


def check(kind, row: dict[str, str], **changes: str):
    values = {**row, **changes}
    return check_row(kind, tuple(range(len(kind.names))), [values[n] for n in kind.names])


def test_the_mapping_reads_the_columns_the_connector_writes():
    assert (PEOPLE.names, CARERS.names, EVENTS.names) == (PERSON_COLUMNS, CARER_COLUMNS, EVENT_COLUMNS)
    assert [k.name for k in KINDS] == ["people", "carers", "events"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_a_header_names_its_kind_in_any_order(kind):
    assert kind_of_header(list(reversed(kind.names))) is kind
    assert kind_of_header([f" {n} " for n in kind.names]) is kind


@pytest.mark.parametrize(("header", "reason"), [
    ([], "empty"),
    (["Name", "Address"], "none of the columns"),
    ([n for n in PEOPLE.names if n != "Family_Name"], "missing Family_Name"),
    ([*PEOPLE.names, "Religion"], "unknown 'Religion'"),
    ([*PEOPLE.names, "Gender"], "repeated Gender"),
    ([n if n != "Event_Type" else "EventType" for n in EVENTS.names], "missing Event_Type; unknown 'EventType'"),
])
def test_a_wrong_header_refuses_the_file_with_its_reason(header, reason):
    with pytest.raises(HeaderError, match=reason):
        kind_of_header(header)


def test_good_rows_pass_trimmed():
    for kind, row in ((PEOPLE, PERSON), (CARERS, CARER), (EVENTS, SERVICE)):
        values, errors = check(kind, row)
        assert errors == [] and values == row
    values, errors = check(PEOPLE, PERSON, Family_Name="  Lee ")
    assert errors == [] and values["Family_Name"] == "Lee"


@pytest.mark.parametrize(("kind", "row", "changes", "column", "reason"), [
    (PEOPLE, PERSON, {"NHS_Number": "9990000019"}, "NHS_Number", "Modulus 11"),
    (PEOPLE, PERSON, {"NHS_Number": "999 000 0018"}, "NHS_Number", "10 digits"),
    (PEOPLE, PERSON, {"Family_Name": ""}, "Family_Name", "required"),
    (PEOPLE, PERSON, {"Family_Name": "Lee\tX"}, "Family_Name", "control character"),
    (PEOPLE, PERSON, {"Family_Name": "L" * 101}, "Family_Name", "longer than 100"),
    (PEOPLE, PERSON, {"Gender": "M"}, "Gender", "not a known code"),
    (PEOPLE, PERSON, {"Postcode": "ng1 1aa"}, "Postcode", "postcode"),
    (PEOPLE, PERSON, {"Date_of_Birth": "01/02/1950"}, "Date_of_Birth", "YYYY-MM-DD"),
    (PEOPLE, PERSON, {"Date_of_Birth": "1950-02-30"}, "Date_of_Birth", "calendar date"),
    (PEOPLE, PERSON, {"Date_of_Birth": "1850-01-01"}, "Date_of_Birth", "before 1900"),
    (PEOPLE, PERSON, {"Date_of_Death": "1949-01-01"}, "Date_of_Death", "before the date of birth"),
    (PEOPLE, PERSON, {"LA_Code": "Nottinghamshire"}, "LA_Code", "ONS"),
    (PEOPLE, PERSON, {"LA_Person_Unique_Identifier": "P 1"}, "LA_Person_Unique_Identifier", "local id"),
    (CARERS, CARER, {"Relationship_To_Cared_For": "Cousin"}, "Relationship_To_Cared_For", "not a known code"),
    (CARERS, CARER, {"Carer_Assessed": "yes"}, "Carer_Assessed", "not a known code"),
    (CARERS, CARER, {"Carer_Assessment_Date": ""}, "Carer_Assessment_Date", "needs the date"),
    (CARERS, CARER, {"Carer_Assessed": "N"}, "Carer_Assessment_Date", "marked not assessed"),
    (CARERS, CARER, {"Cared_For_LA_Person_Unique_Identifier": "C1"}, "Cared_For_LA_Person_Unique_Identifier",
     "their own cared-for"),
    (EVENTS, SERVICE, {"Event_Type": "Visit"}, "Event_Type", "not a known code"),
    (EVENTS, SERVICE, {"Client_Type": "Patient"}, "Client_Type", "not a known code"),
    (EVENTS, SERVICE, {"Event_Reference": "EV 1"}, "Event_Reference", "event reference"),
    (EVENTS, SERVICE, {"Event_End_Date": "2026-02-01"}, "Event_End_Date", "ends before it starts"),
    (EVENTS, SERVICE, {"Event_Outcome": "Went well"}, "Event_Outcome", "not a known code"),
    (EVENTS, SERVICE, {"Service_Type": "Care"}, "Service_Type", "not a known code"),
    (EVENTS, SERVICE, {"Service_Component": "Gardening"}, "Service_Component", "not a known code"),
    (EVENTS, SERVICE, {"Delivery_Mechanism": "Cash"}, "Delivery_Mechanism", "not a known code"),
    (EVENTS, SERVICE, {"Unit_Cost": "£22.50"}, "Unit_Cost", "amount in pounds"),
    (EVENTS, SERVICE, {"Unit_Cost": "22.505"}, "Unit_Cost", "amount in pounds"),
    (EVENTS, SERVICE, {"Cost_Frequency_Unit_Type": "Hourly rate"}, "Cost_Frequency_Unit_Type", "not a known code"),
    (EVENTS, SERVICE, {"Planned_units_per_week": "ten"}, "Planned_units_per_week", "number of units"),
    (EVENTS, SERVICE, {"Planned_units_per_week": ""}, "Planned_units_per_week", "Service event needs"),
    (EVENTS, SERVICE, {"Delivery_Mechanism": ""}, "Delivery_Mechanism", "Service event needs"),
    (EVENTS, SERVICE, {"Cost_Frequency_Unit_Type": "One-off", "Planned_units_per_week": "3"},
     "Planned_units_per_week", "one-off"),
    (EVENTS, {**SERVICE, "Event_Type": "Review", "Service_Type": "", "Service_Component": "",
              "Delivery_Mechanism": "", "Unit_Cost": "", "Cost_Frequency_Unit_Type": "",
              "Planned_units_per_week": ""}, {"Unit_Cost": "10.00"}, "Unit_Cost", "only Service events"),
])
def test_each_bad_value_names_its_column_and_reason(kind, row, changes, column, reason):
    _, errors = check(kind, row, **changes)
    assert [c for c, _ in errors] == [column]
    assert reason in errors[0][1]


def test_every_bad_value_of_a_row_is_reported_not_just_the_first():
    _, errors = check(PEOPLE, PERSON, NHS_Number="123", Gender="X", Postcode="?")
    assert [c for c, _ in errors] == ["NHS_Number", "Gender", "Postcode"]


def test_every_code_the_format_accepts_has_a_translation():
    """A value the connector lets through never fails in the mapper for want of a map entry."""
    for name, system, values in (
        ("cld-gender-to-administrative-gender", codes.GENDER, GENDERS),
        ("cld-delivery-mechanism-to-management-option", codes.DELIVERY_MECHANISM, DELIVERY_MECHANISMS),
        ("cld-service-component-to-life-area", codes.SERVICE_COMPONENT, SERVICE_COMPONENTS),
    ):
        assert {v for v in values if not codes.concept_map(name).translate(system, v)} == set(), name
    unmapped = {v for v in RELATIONSHIPS
                if not codes.concept_map("la-carer-relationship-to-v3-rolecode").translate(codes.RELATIONSHIP, v)}
    assert unmapped == {"Other"}  # deliberately kept as sent
    assert set(PERIODS_PER_YEAR) | {"One-off"} == set(COST_FREQUENCIES)


def test_csv_lines_quote_only_what_needs_it():
    assert csv_line(["a", "b, c", 'd "e"', ""]) == 'a,"b, c","d ""e""",'


YEAR = statement_year(date(2026, 3, 1))


@pytest.mark.parametrize(("cost", "frequency", "units", "weekly", "in_year"), [
    ("22.50", "Hourly", "10", "225.00", "11700.00"),
    ("45.00", "Per session", "2", "90.00", "4680.00"),
    ("3.50", "Daily", "7", "24.50", "1274.00"),
    ("120.00", "Weekly", "1", "120.00", "6240.00"),
    ("400.00", "Fortnightly", "1", "200.00", "10400.00"),
    ("150.00", "4 Weekly", "1", "37.50", "1950.00"),
    ("80.00", "Monthly", "1", "18.46", "960.00"),
    ("2100.00", "Quarterly", "1", "161.54", "8400.00"),
    ("300.00", "Annually", "1", "5.77", "300.00"),
    ("350.00", "One-off", "1", "0.00", "350.00"),
])
def test_a_service_costs_unit_cost_times_units_times_periods(cost, frequency, units, weekly, in_year):
    found = service_cost(cost, frequency, units, YEAR[0], None, YEAR)
    assert (found.weekly, found.in_year) == (Decimal(weekly), Decimal(in_year))


def test_a_service_counts_for_the_part_of_the_statement_year_it_runs():
    half = service_cost("100.00", "Weekly", "1", date(2026, 3, 1), date(2026, 8, 30), YEAR)
    assert half.in_year == Decimal("2607.12")  # 5200 a year × 183 of 365 days
    before = service_cost("100.00", "Weekly", "1", date(2025, 1, 1), date(2025, 12, 31), YEAR)
    assert before.in_year == Decimal("0.00")
    outside = service_cost("350.00", "One-off", "1", date(2027, 6, 1), None, YEAR)
    assert outside.in_year == Decimal("0.00")
