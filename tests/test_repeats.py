"""Repeats (--repeats K): each winner's configuration trained K more times at other seeds, each run
tested once; the statistics over them, and whether two architectures differ over seeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import run_cli


def test_repeat_seeds_are_new_and_the_statistics_follow_the_runs():
    from search.finish.repeats import interval, repeat_seeds, with_repeat_statistics

    assert repeat_seeds(7, 3) == [1007, 2007, 3007]  # never the search's own seed
    runs = pd.DataFrame({"model": ["cnn"] * 3 + ["vit"], "test_acc": [0.990, 0.992, 0.994, 0.98],
                         "test_f1": [0.989, 0.991, 0.993, 0.97]})
    mean, std, low, high = interval(runs["test_acc"][:3])
    assert mean == pytest.approx(0.992) and std == pytest.approx(0.002)
    assert (low, high) == pytest.approx((0.992 - 4.302653 * 0.002 / 3 ** 0.5, 0.992 + 4.302653 * 0.002 / 3 ** 0.5))
    finalists = pd.DataFrame({"model": ["cnn", "vit", "vgg16"], "trial_id": ["a", "b", "c"], "test_acc": [0.99] * 3,
                              "config.lr": [0.1, 0.2, 0.3]})
    table = with_repeat_statistics(finalists, runs).set_index("model")
    assert table.loc["cnn", "repeats"] == 3 and table.loc["cnn", "test_f1_mean"] == pytest.approx(0.991)
    assert table.loc["vit", "repeats"] == 1 and np.isnan(table.loc["vit", "test_acc_std"])  # one run: no spread
    assert table.loc["vgg16", "repeats"] == 0 and table.loc["vgg16", "config.lr"] == 0.3  # its row is kept


def test_welch_test_tells_a_consistent_gap_from_seed_noise():
    from analysis.tables import seed_tests

    def runs(model, accs):
        return pd.DataFrame({"experiment": "e", "model": model, "test_acc": accs})

    clear = seed_tests(pd.concat([runs("cnn", [0.990, 0.991, 0.992]), runs("vit", [0.980, 0.981, 0.982])]))
    assert clear[["model_a", "model_b"]].values.tolist() == [["cnn", "vit"]]
    assert clear["p_value"].iloc[0] < 0.001 and clear["significant"].iloc[0]
    assert clear["gap"].iloc[0] == pytest.approx(0.010)
    noise = seed_tests(pd.concat([runs("cnn", [0.990, 0.980, 0.995]), runs("vit", [0.985, 0.992, 0.979])]))
    assert noise["p_value"].iloc[0] > 0.5 and not noise["significant"].iloc[0]
    alone = seed_tests(pd.concat([runs("cnn", [0.99, 0.98]), runs("vit", [0.98])]))
    assert alone.empty  # one run of vit: no spread to test against


@pytest.mark.integration
def test_repeats_train_each_winner_again_at_other_seeds_and_test_every_run(tmp_path, data_dir):
    proc = run_cli("search.run", "--model", "cnn,vit", "--gpus", "0", "--smoke", "--repeats", "2", "--seed", "3",
                   "--storage-path", str(tmp_path), "--name", "rep", "--no-dashboard", "--verbose", "0",
                   "--data-dir", str(data_dir), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = tmp_path / "rep"
    repeats = pd.read_parquet(folder / "repeats.parquet")
    finalists = pd.read_parquet(folder / "finalists.parquet").set_index("model")
    trials = pd.read_parquet(folder / "trials.parquet")
    assert sorted(repeats["model"]) == ["cnn", "cnn", "vit", "vit"]
    assert sorted(set(repeats["seed"])) == [1003, 2003] and (trials["config.seed"] == 3).all()
    assert not set(repeats["trial_id"]) & set(trials["trial_id"])  # new runs, not the search's
    for model, runs in repeats.groupby("model"):
        winner = finalists.loc[model]
        assert winner["repeats"] == 2
        assert winner["test_acc_mean"] == pytest.approx(runs["test_acc"].mean())
        assert winner["test_acc_std"] == pytest.approx(runs["test_acc"].std(ddof=1))
        assert winner["test_acc_low"] <= winner["test_acc_mean"] <= winner["test_acc_high"]
        # the winner's configuration trained again (Tune's record of each run): all but the seed is the winner's
        own = {k: v for k, v in winner.items() if k.startswith("config.") and not pd.isna(v)}
        for trial_id in runs["trial_id"]:
            params = json.loads(next(next(folder.glob("repeats-*")).glob(f"*_{trial_id}/params.json")).read_text())
            assert {f"config.{k}": v for k, v in params.items() if k not in ("model", "seed")} == \
                {k: v for k, v in own.items() if k != "config.seed"}
    assert "repeats: 2 seeds, test_acc" in proc.stdout  # the leaderboard gives mean +- std
    report = (folder / "report" / "report.md").read_text()
    assert "The winners' configurations over seeds" in report and "Welch" in report
