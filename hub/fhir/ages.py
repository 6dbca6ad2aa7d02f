"""A person's birthdays and age from a FHIR `birthDate`, the way English law counts them.

Used wherever an age decides something (an EHC plan ends by the 25th birthday, a young person's
transition to adult services, a young carer's reassessment): one reading of the rules, here.
A person attains an age at the start of the anniversary of their birth; someone born on
29 February has their birthday on 1 March in a year without one (the common legal reading in
England and Wales, and what schools and councils use)."""
from __future__ import annotations

from datetime import date


def birthday(born: date, age: int) -> date:
    """The day `born` attains `age`."""
    year = born.year + age
    try:
        return born.replace(year=year)
    except ValueError:   # 29 February in a year without one
        return date(year, 3, 1)


def day_before_birthday(born: date, age: int) -> date:
    """The last day before `born` attains `age` (an EHC plan runs at most to the day before the
    25th birthday)."""
    return date.fromordinal(birthday(born, age).toordinal() - 1)


def age_on(born: date, day: date) -> int:
    """Whole years of age on `day` (0 before the first birthday)."""
    age = day.year - born.year
    return age if day >= birthday(born, age) else age - 1


def parse_birth_date(text: str | None) -> date | None:
    """A full FHIR date (YYYY-MM-DD) as a date; None for a partial or missing one, from which no
    age-based rule may be decided."""
    if not isinstance(text, str) or len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def start_of_year_9(born: date) -> date:
    """1 September of the school year in which a child turns 14 (England: a school year runs
    1 September to 31 August, and a child is in the year group of those born 1 September to
    31 August 14 years before its end)."""
    return date(born.year + (14 if born.month >= 9 else 13), 9, 1)
