"""The search-quality benchmark's pipeline (benchmarks/search_quality.py): its analysis on runs whose
answers are known, and the whole benchmark on a tiny budget. The benchmark itself is not a test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark imports its neighbour machine.py
_spec = importlib.util.spec_from_file_location("search_quality", ROOT / "benchmarks" / "search_quality.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
_spec = importlib.util.spec_from_file_location("asha_replay", ROOT / "benchmarks" / "asha_replay.py")
replay = sys.modules["asha_replay"] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up there
_spec.loader.exec_module(replay)


def run(arm: str, seed: int, accs: list[float], default: float = 0.75) -> dict:
    """A search whose epochs ended with these validation accuracies, one second each; its first trial (the
    default configuration) reached ``default`` at its last epoch, 3, a second trial was cut at epoch 1."""
    best = [max(accs[: i + 1]) for i in range(len(accs))]
    return dict(arm=arm, seed=seed, curve=best, seconds=[float(i + 1) for i in range(len(accs))], trials=4,
                stopped_early=0, test_acc=0.9, default_final=default, default_trial="a_00000",
                per_trial={"a_00000": {"1": 0.5, "3": default}, "a_00001": {"1": accs[0]}})


def test_regret_areas_paired_tests_and_the_default_follow_the_curves():
    runs = []
    for seed in range(8):
        runs.append(run("random", seed, [0.5, 0.6, 0.7, 0.8]))
        runs.append(run("tpe", seed, [0.5, 0.6, 0.7, 0.7 + seed / 1000], default=0.71))
        runs.append(run("tpe+asha", seed, [0.7, 0.9, 0.9, 0.9 + seed / 1000]))  # ahead at every seed
    summary = bench.summarize(runs, budget=4, max_epochs=3)
    rows = {r["arm"]: r for r in summary["table"]}
    tests = {(t["arm"], t["against"]): t for t in summary["tests"]}
    assert summary["pooled_best"] == pytest.approx(0.907)
    assert rows["random"]["regret_final_median"] == pytest.approx(0.907 - 0.8)
    assert rows["tpe+asha"]["regret_half_median"] == pytest.approx(0.907 - 0.9)
    # Areas are identical at every seed for random: its IQM and its whole bootstrap interval are that value.
    assert rows["random"]["area_iqm"] == pytest.approx(0.907 - 0.65)
    assert rows["random"]["area_ci"] == pytest.approx([0.907 - 0.65] * 2)
    # 8 of 8 pairs the same way: two-sided p = 2/256; Holm multiplies the smallest of the 3 comparisons by 3.
    assert tests["tpe+asha", "random"]["lower"] == 8 and tests["tpe+asha", "random"]["p"] == pytest.approx(2 / 256)
    assert tests["tpe+asha", "tpe"]["lower"] == 8 and tests["tpe", "random"]["higher"] == 8
    assert sorted(t["p_holm"] for t in summary["tests"]) == pytest.approx([3 * 2 / 256, 3 * 2 / 256, 3 * 2 / 256])
    # The default's result at a seed is the median over the arms (0.75, 0.71, 0.75): tpe's best 0.70x is below it.
    assert summary["defaults"]["0"] == pytest.approx(0.75)
    assert rows["tpe"]["below_default"] == 8 and rows["tpe+asha"]["above_default"] == 8
    assert rows["tpe+asha"]["gain_over_default_median"] == pytest.approx(0.9035 - 0.75)
    # Epochs to trials by the epoch they reached: the default's 3 and a cut trial's 1 at every seed.
    assert rows["random"]["epochs_by_reach"] == {"1": 0.25, "3": 0.75}
    # Random search's other draws never reached the last epoch here: none to place the default among.
    assert summary["default_position"] == {"draws": 0}
    said = bench.verdict(summary)
    assert all("NOT" not in line for line in said) and len(said) == 5


def test_the_defaults_place_among_random_draws():
    runs = [dict(run("random", seed, [0.5]), default_trial="d", per_trial={"d": {"3": 0.80}, "x": {"3": 0.795},
                                                                          "y": {"3": 0.70}, "z": {"3": 0.81}, "cut": {"1": 0.2}})
            for seed in range(2)]
    for r in runs:
        r["default_final"] = 0.80
    position = bench.default_position(runs, max_epochs=3)
    assert position["draws"] == 6 and position["within_1pt"] == pytest.approx(4 / 6) and position["above"] == pytest.approx(2 / 6)


def test_holm_adjusts_step_down_and_stays_monotone():
    assert bench.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert bench.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_interquartile_mean_leaves_out_an_odd_seed():
    rows = np.array([[0.1], [0.1], [0.1], [0.1], [0.1], [0.1], [0.1], [5.0]])
    mid, lo, hi = bench.iqm_interval(rows, np.random.default_rng(0))
    assert mid[0] == pytest.approx(0.1) and lo[0] == pytest.approx(0.1) and hi[0] >= mid[0]


def test_asha_rungs():
    assert bench.rungs(9, 1, 3) == [1, 3, 9]
    assert bench.rungs(4, 1, 2) == [1, 2, 4]


@pytest.mark.integration
def test_the_benchmark_runs_end_to_end_on_a_tiny_budget(tmp_path, data_dir):
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/search_quality.py", "--seeds", "0", "--arms", "random", "tpe+asha",
         "--budget", "6", "--max-epochs", "2", "--grace-period", "1", "--reduction-factor", "2", "--dataset", "mnist",
         "--train-size", "256", "--keep", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "SEARCH_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["arm"] for r in result["summary"]["table"]] == ["random", "tpe+asha"]
    assert len(result["runs"]) == 2 and out.with_suffix(".png").stat().st_size > 0
    assert result["rank_correlations"][0]["rung"] == 1 and result["rank_correlations"][0]["schedule"] == "all"
    assert "default's result" in proc.stdout  # one seed: no paired test (test_regret_areas_paired_tests_... has them)
    # The replay (benchmarks/asha_replay.py) of the ASHA runs' reported epochs makes the rung decisions they made.
    for folder in sorted((tmp_path / "runs").glob("tpe+asha-seed*")):
        checked = replay.check_run(folder)
        assert checked["trials"] >= 2 and not checked["unexplained"], checked
    # Run again on the same --keep folder (as after an interruption): the finished searches are read, none rerun.
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/finalists.parquet")}
    again = subprocess.run(proc.args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "SEARCH_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(before) == 2 and before == {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/finalists.parquet")}
    assert json.loads(out.read_text())["summary"]["table"] == result["summary"]["table"]
