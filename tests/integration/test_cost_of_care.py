"""The cost of care of a cohort of 1,000 before and after (hub/money/costing.py, the function the
commissioners' reports call), from the real store: A&E attendances priced by the tariff loaded as
data, direct payment spend lines, and council allocations nobody sends lines for; and only what
the caller may see of each person's record is counted."""
from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal

from psycopg import AsyncConnection

from hub.money.costing import cost_of_care
from hub.search.access import Access
from tests.money.cohort import COUNCIL_ALLOCATION, SPEND, write_cohort

PERIODS = [("before", date(2025, 4, 1), date(2026, 3, 31)), ("after", date(2026, 4, 1), date(2026, 6, 29))]
A_AND_E_2025 = Decimal("252")  # the illustrative 2025/26 tariff's A&E attendance


def test_a_cohort_of_a_thousand_costed_before_and_after_by_funder_and_setting(clean_db, guide_served):
    async def run():
        async with await AsyncConnection.connect(clean_db) as conn:
            people = await write_cohort(conn, 1000)
            everyone = await cost_of_care(conn, people, PERIODS, access=Access.system())
            half = await cost_of_care(conn, people[:500], PERIODS, access=Access.system())
            council_only = Access("local-authority", "E10000024", None, ("demographics", "budget"),
                                  {"*": frozenset("rs")})
            as_council = await cost_of_care(conn, people, PERIODS, access=council_only)
            return everyone, half, as_council

    everyone, half, as_council = asyncio.run(run())
    assert everyone.by("before") == {("nhs", "emergency-department"): A_AND_E_2025 * 1000}
    # 90 days of £10 a day for the 100 people with a council account; a month of spend each.
    assert everyone.by("after") == {("nhs", "home-and-community"): SPEND * 1000,
                                    ("local-authority", "home-and-community"): Decimal("900.00") * 100}
    assert everyone.total("after") == SPEND * 1000 + Decimal("90000.00")
    assert everyone.per_week("after") == (everyone.total("after") * 7 / 90).quantize(Decimal("0.01"))
    assert everyone.counts[("before", "emergency-attendance")] == 1000 and everyone.unpriced == 0
    assert half.by("before") == {("nhs", "emergency-department"): A_AND_E_2025 * 500}
    assert half.by("after")[("local-authority", "home-and-community")] == Decimal("900.00") * 50
    # A council, without consent to the people's health record, sees their budget but not their
    # hospital activity: the A&E attendances are not counted for it.
    assert as_council.by("before") == {}
    assert as_council.total("after") == everyone.total("after")
    assert COUNCIL_ALLOCATION == Decimal("3650.00")
