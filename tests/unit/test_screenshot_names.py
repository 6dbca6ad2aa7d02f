"""The browser tests keep one screenshot per page under a number (tests/browser/screenshots):
each number names one page, so a reviewer reading the folder in order sees each page once."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

BROWSER = Path(__file__).resolve().parents[1] / "browser"


def test_every_screenshot_has_its_own_number():
    names = [m for f in sorted(BROWSER.glob("*.py")) for m in re.findall(r'check_page\(\w+, "([^"]+)"\)', f.read_text())]
    assert len(names) >= 10   # the pattern still finds the screenshots
    numbered = Counter(re.match(r"(.*?\d+)-", n).group(1) for n in names if re.match(r".*?\d+-", n))
    assert [n for n, count in numbered.items() if count > 1] == []
    assert len(set(names)) == len(names)
