"""The efficiency figures from a hand-made timeline whose answers are known."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.efficiency import describe, efficiency


def timeline() -> pd.DataFrame:
    """Two slots, command started at t=0. Trials (begin, setup, end, train seconds, process):
    a: 10-20 and b: 10-30 start together; c takes a's slot at 21 (setup 1 s: trains from 22), ends 30;
    d takes the next freed slot (b's, at 30) at 32, trains from 33, ends 40."""
    rows = [("a", 10, 1, 20, 8, "p1", 1), ("b", 10, 1, 30, 18, "p2", 1), ("c", 21, 1, 30, 7, "p1", 2),
            ("d", 32, 1, 40, 6, "p2", 2)]
    return pd.DataFrame([dict(experiment="e", trial_id=t, train_started_at=b + s, setup_s=s, ended_at=end,
                              train_time_s=train, process=p, trial_in_process=n, slots=2, search_started_at=0.0)
                         for t, b, s, end, train, p, n in rows])


def test_figures_match_the_timeline():
    row = efficiency(timeline()).iloc[0]
    assert row["span_s"] == 30 and row["max_at_once"] == 2
    # Running: 2 from 10 to 20, 1 from 20 to 21, 2 from 21 to 30, 0 from 30 to 32, 1 from 32 to 40: 47/30.
    assert row["mean_at_once"] == pytest.approx(47 / 30)
    assert row["slot_share"] == pytest.approx((8 + 18 + 7 + 6) / (30 * 2))
    assert row["startup_s"] == 11  # the first batch trained, counted from the command's start
    assert row["mean_gap_s"] == pytest.approx(((22 - 20) + (33 - 30)) / 2)
    assert (row["processes"], row["reused"]) == (2, 2)
    assert row["tail_s"] == 40 - 32  # the last trial began at 32; the search's last report came at 40
    line = describe(row)
    assert "2 slots: 1.6 trials at once (max 2)" in line and "65% of slot-time training" in line
    assert "8.0 s from the last trial's start to the search's end" in line


def test_results_exported_before_the_efficiency_columns_say_so():
    old = timeline().drop(columns=["train_started_at", "setup_s", "ended_at", "slots", "search_started_at"])
    row = efficiency(old).iloc[0]
    assert pd.isna(row["slots"]) and "not recorded" in describe(row)
