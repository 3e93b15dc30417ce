"""The search-quality benchmark's pipeline (benchmarks/search_quality.py): its analysis on runs whose
answers are known, and the whole benchmark on a tiny budget. The benchmark itself is not a test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark imports its neighbour machine.py
_spec = importlib.util.spec_from_file_location("search_quality", ROOT / "benchmarks" / "search_quality.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def run(arm: str, seed: int, accs: list[float]) -> dict:
    """A search whose epochs ended with these validation accuracies, one second each."""
    best = [max(accs[: i + 1]) for i in range(len(accs))]
    return dict(arm=arm, seed=seed, curve=best, seconds=[float(i + 1) for i in range(len(accs))], trials=4,
                stopped_early=0, test_acc=0.9, per_trial={"a": {"1": accs[0], "3": accs[-1]}})


def test_regret_areas_and_the_paired_test_follow_the_curves():
    runs = []
    for seed in range(8):
        runs.append(run("random", seed, [0.5, 0.6, 0.7, 0.8]))
        runs.append(run("tpe+asha", seed, [0.7, 0.9, 0.9, 0.9 + seed / 1000]))  # ahead at every seed
    summary = bench.summarize(runs, budget=4)
    rows = {r["arm"]: r for r in summary["table"]}
    assert summary["pooled_best"] == pytest.approx(0.907)
    assert rows["random"]["regret_final_median"] == pytest.approx(0.907 - 0.8)
    assert rows["tpe+asha"]["regret_half_median"] == pytest.approx(0.907 - 0.9)
    assert rows["tpe+asha"]["area_lower_than_random"] == 8
    assert rows["tpe+asha"]["area_vs_random_p"] == pytest.approx(1 / 256)  # one-sided, 8 of 8 pairs the same way
    assert bench.verdict(summary).count("met") == 2 and "NOT" not in bench.verdict(summary)


def test_asha_rungs():
    assert bench.rungs(9, 1, 3) == [1, 3, 9]
    assert bench.rungs(4, 1, 2) == [1, 2, 4]


@pytest.mark.integration
def test_the_benchmark_runs_end_to_end_on_a_tiny_budget(tmp_path, data_dir):
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/search_quality.py", "--seeds", "0", "1", "--arms", "random", "tpe+asha",
         "--budget", "4", "--max-epochs", "2", "--grace-period", "1", "--reduction-factor", "2", "--dataset", "mnist",
         "--train-size", "256", "--keep", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "SEARCH_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["arm"] for r in result["summary"]["table"]] == ["random", "tpe+asha"]
    assert len(result["runs"]) == 4 and out.with_suffix(".png").stat().st_size > 0
    assert result["rank_correlations"][0]["rung"] == 1 and result["rank_correlations"][0]["schedule"] == "all"
    assert "Wilcoxon" in proc.stdout
