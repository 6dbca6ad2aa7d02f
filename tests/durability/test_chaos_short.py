"""The short chaos run inside `make test` (the long one is `make chaos`): a few hundred
envelopes from all four sources while parts of the hub are killed with kill -9; every
acknowledged message must be recorded exactly once (tests/chaos/run.py checks and prints)."""
from __future__ import annotations

import pytest

from tests.chaos.run import run

pytestmark = pytest.mark.integration


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path, capsys):
    code = run(envelopes=600, kills=4, seed=7, data_dir=tmp_path / "hub-data", settle_s=240)
    printed = capsys.readouterr().out
    assert "chaos: PASS" in printed, printed
    assert code == 0
