"""The analysis module on small result tables that the tests write: rankings, Pareto set, plots,
report, and the errors a user can run into."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main as analysis_main
from analysis.load import AnalysisError, load
from analysis.tables import (at_common_budget, best_so_far, comparison, importance, pareto_front, pareto_fronts, rank,
                             succeeded, winning_ranges)
from analysis.schema import SCHEMA_VERSION
from search.finish.export import TrialRecord, epochs_table, trials_table, write_atomic

T0 = 1_700_000_000.0


def curve(accs, start, epoch_s):
    n = len(accs)
    return pd.DataFrame({
        "epoch": range(1, n + 1), "train_loss": [0.5] * n, "val_loss": [1 - a for a in accs], "val_acc": accs,
        "val_f1": [a - 0.005 for a in accs], "epoch_time_s": [epoch_s] * n,
        "train_time_s": [epoch_s * (i + 1) for i in range(n)], "elapsed_s": [epoch_s * (i + 1) for i in range(n)],
        "params": [1000] * n, "device": ["cpu"] * n, "precision": ["fp32"] * n, "started_at": [T0 + start] * n,
        "reported_at": [T0 + start + epoch_s * (i + 1) for i in range(n)],
    })


def cnn(trial_id, accs, lr, batch, start=0.0, epoch_s=10.0, error=None, params=1000):
    h = curve(accs, start, epoch_s) if accs else pd.DataFrame()
    if len(h):
        h["params"] = params
    return TrialRecord(trial_id, {"model": "cnn", "epochs": 3, "lr": lr, "batch_size": batch, "optimizer": "adamw"},
                       h, error)


def vit(trial_id, accs, width, start=0.0, epoch_s=30.0):
    return TrialRecord(trial_id, {"model": "vit", "epochs": 3, "lr": 1e-3, "width": width}, curve(accs, start, epoch_s),
                       None)


RECORDS = [
    cnn("c1", [0.95, 0.97, 0.98], 0.01, 256),                        # completed, 30 s
    cnn("c2", [0.96, 0.985, 0.99], 0.005, 128, start=5, epoch_s=20),  # completed, best, 60 s
    cnn("c3", [0.991], 0.02, 512, start=12, epoch_s=5),              # stopped early at 1/3 epochs, highest val_acc
    cnn("c4", [0.90], 0.1, 64, start=20, epoch_s=8),                 # stopped early, weak
    cnn("c5", [], 9.0, 64, start=25, error="DivergedError: training loss became nan"),
    vit("v1", [0.7, 0.9, 0.95], 64),
    vit("v2", [0.6, 0.8, 0.97], 128, start=3, epoch_s=40),
]


def write_experiment(folder, records=RECORDS, name="exp-mnist", dataset="mnist"):
    trials = trials_table(records, name, dataset, 0)
    finalists = pd.DataFrame([
        {"model": "cnn", "trial_id": "c3", "test_acc": 0.989, "test_f1": 0.988, "test_loss": 0.04,
         "best_val_acc": 0.991, "train_time_s": 5.0, "wall_clock_s": 5.0, "params": 1000, "config.lr": 0.02},
        {"model": "vit", "trial_id": "v2", "test_acc": 0.968, "test_f1": 0.967, "test_loss": 0.1,
         "best_val_acc": 0.97, "train_time_s": 120.0, "wall_clock_s": 120.0, "params": 1000, "config.width": 128},
    ])
    write_atomic({"trials": trials, "epochs": epochs_table(records), "finalists": finalists}, folder)
    return folder


@pytest.fixture
def results(tmp_path):
    return load([write_experiment(tmp_path / "exp")])


def test_ranking_order_and_low_budget_marks(results):
    ranks = rank(results, "val_acc", top_k=3)
    cnn_rank = ranks[("exp-mnist", "cnn")]
    assert cnn_rank["trial_id"].tolist() == ["c3", "c2", "c1"]  # the errored c5 is never ranked
    assert cnn_rank["low_budget"].tolist() == [True, False, False]
    assert cnn_rank["budget"].tolist() == ["1/3", "3/3", "3/3"]
    assert {"config.lr", "config.batch_size"} <= set(cnn_rank.columns)
    assert "config.optimizer" not in cnn_rank  # the same in every trial: not worth a column
    by_clock = rank(results, "wall_clock", top_k=2)[("exp-mnist", "cnn")]
    assert by_clock["trial_id"].tolist() == ["c3", "c4"]


def test_comparison_flags_a_winner_seen_only_at_a_low_budget(results):
    table = comparison(results).set_index("model")
    assert table.loc["cnn", "test_acc"] == 0.989 and table.loc["cnn", "errors"] == 1
    assert table.loc["cnn", "winner_low_budget"] and table.loc["cnn", "winner_budget"] == "1/3"
    assert not table.loc["vit", "winner_low_budget"]
    assert comparison(results).iloc[0]["model"] == "cnn"  # sorted by test accuracy


def test_pareto_front_keeps_only_undominated_trials():
    points = pd.DataFrame({"wall_clock_s": [10, 20, 15, 40, 40, 5], "best_val_acc": [0.9, 0.95, 0.85, 0.99, 0.97, 0.5],
                           "trial_id": list("abcdef")})
    assert pareto_front(points, "wall_clock_s")["trial_id"].tolist() == ["f", "a", "b", "d"]


def test_best_so_far_runs_on_the_search_clock(results):
    curve = best_so_far(results)
    cnn_curve = curve[curve["model"] == "cnn"]
    assert cnn_curve["search_time_s"].is_monotonic_increasing
    assert cnn_curve["best_val_acc"].is_monotonic_increasing
    # c3 started 12 s into the search and reported 0.991 after 5 s.
    assert cnn_curve.loc[cnn_curve["best_val_acc"] >= 0.991, "search_time_s"].min() == pytest.approx(17.0)


def test_importance_and_winning_ranges():
    records = [cnn(f"t{i}", [0.90 + (0.01 if lr < 0.01 else 0.0) + 0.001 * i], lr, 128)
               for i, lr in enumerate([0.001, 0.002, 0.05, 0.1, 0.003, 0.2, 0.004, 0.3])]
    records = [TrialRecord(r.trial_id, {**r.config, "batch_size": 64 if i % 2 else 128}, r.history, None)
               for i, r in enumerate(records)]
    trials = trials_table(records, "e", "mnist", 0)
    scores = importance(trials)
    assert scores.index[0] == "lr" and scores.sum() == pytest.approx(1.0)
    ranges = winning_ranges(trials).set_index("parameter")
    assert ranges.loc["lr", "winning"] == "0.003 to 0.004"  # the best quarter (2 of 8) used small rates
    assert ranges.loc["batch_size", "winning"] == "128 (2)"


def test_report_is_written_with_plots_and_tables(tmp_path, capsys):
    folder = write_experiment(tmp_path / "exp")
    assert analysis_main([str(folder), "--top-k", "2"]) == 0
    report = folder / "report"
    text = (report / "report.md").read_text()
    assert "## Comparison of the models" in text and "| cnn |" in text.replace("| exp-mnist ", "")
    assert "stopped early at 1/3 epochs" in text  # the low-budget winner is called out
    for png in ("pareto_time.png", "pareto_params.png", "learning_curves.png", "best_so_far.png"):
        data = (report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200
        assert f"({png})" in text
    ranked = pd.read_parquet(report / "rankings.parquet")
    assert set(ranked["model"]) == {"cnn", "vit"} and (ranked.groupby("model").size() == 2).all()
    assert pd.read_csv(report / "comparison.csv")["model"].tolist() == ["cnn", "vit"]
    assert str(report / "report.md") in capsys.readouterr().out


def test_the_analysis_command_needs_neither_torch_nor_ray(tmp_path):
    """Results copied off a cluster are analysed on a laptop: ``python -m analysis`` reads Parquet
    and the schema, and never imports torch or Ray (``-X importtime`` lists every module imported)."""
    import subprocess
    import sys

    folder = write_experiment(tmp_path / "exp")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "analysis", str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "pandas" in imported and "analysis.schema" in imported  # the listing is complete
    assert not {name for name in imported if name.split(".")[0] in ("torch", "ray", "torchvision")}


def test_two_experiments_are_compared(tmp_path):
    a = write_experiment(tmp_path / "a", name="run-mnist")
    b = write_experiment(tmp_path / "b", name="run-fashion", dataset="fashion_mnist")
    results = load([a, b])
    assert sorted(comparison(results)["experiment"].unique()) == ["run-fashion", "run-mnist"]
    assert analysis_main([str(a), str(b), "--out", str(tmp_path / "both")]) == 0
    assert "run-fashion" in (tmp_path / "both" / "report.md").read_text()


def test_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert analysis_main([str(tmp_path / "empty")]) == 2
    assert "has no results" in capsys.readouterr().err

    write_experiment(tmp_path / "store" / "exp1")
    with pytest.raises(AnalysisError, match="it holds experiments: exp1"):
        load([tmp_path / "store"])

    newer = write_experiment(tmp_path / "newer")
    table = pd.read_parquet(newer / "trials.parquet")
    table.attrs["schema_version"] = SCHEMA_VERSION + 1
    table.to_parquet(newer / "trials.parquet")
    with pytest.raises(AnalysisError, match="newer than this analysis understands"):
        load([newer])

    with pytest.raises(AnalysisError, match="alexnet not in these results; present: cnn, vit"):
        load([tmp_path / "store" / "exp1"], models=["alexnet"])

    none = tmp_path / "none"
    write_atomic({"trials": trials_table([], "x", "mnist", 0), "epochs": pd.DataFrame(),
                  "finalists": pd.DataFrame()}, none)
    with pytest.raises(AnalysisError, match="holds no trials"):
        load([none])


def test_a_model_whose_trials_all_failed_is_reported_not_crashed(tmp_path):
    records = [cnn("c1", [0.9, 0.95, 0.97], 0.01, 256),
               TrialRecord("v1", {"model": "vit", "epochs": 3}, pd.DataFrame(), "OutOfMemoryError: CUDA")]
    folder = tmp_path / "exp"
    finalists = pd.DataFrame([{"model": "cnn", "trial_id": "c1", "test_acc": 0.97, "test_f1": 0.97, "test_loss": 0.1,
                               "best_val_acc": 0.97, "train_time_s": 30.0, "wall_clock_s": 30.0, "params": 1000}])
    write_atomic({"trials": trials_table(records, "e", "mnist", 0), "epochs": epochs_table(records),
                  "finalists": finalists}, folder)
    assert analysis_main([str(folder)]) == 0
    assert "**vit** (e): no successful trial (1 errors of 1)" in (folder / "report" / "report.md").read_text()


def test_fronts_are_per_experiment_unless_pooled(tmp_path):
    fashion = [cnn("f1", [0.80, 0.85, 0.88], 0.01, 256, epoch_s=1.0)]  # cheaper and worse: its own data set
    results = load([write_experiment(tmp_path / "m"), write_experiment(tmp_path / "f", fashion, "exp-fashion",
                                                                       "fashion_mnist")])
    ok = succeeded(results.trials)
    apart = pareto_fronts(ok, "wall_clock_s")
    assert set(apart["front"]) == {"exp-mnist", "exp-fashion"}
    assert (apart["front"] == apart["experiment"]).all()  # no front mixes data sets
    assert "f1" in set(apart["trial_id"]) and "c3" in set(apart["trial_id"])
    pooled = pareto_fronts(ok, "wall_clock_s", pool=True)
    assert set(pooled["front"]) == {"all experiments"}
    assert analysis_main([str(tmp_path / "m"), str(tmp_path / "f"), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "of each experiment (data set) on its own" in text


def test_importance_is_fitted_at_the_budget_every_trial_reached():
    # lr decides the first epoch's accuracy; which trials ASHA let run on (and their later, higher
    # accuracy) must not be what importance learns.
    records = []
    for i, lr in enumerate([0.001, 0.002, 0.05, 0.1, 0.003, 0.2, 0.004, 0.3]):
        first = 0.95 if lr < 0.01 else 0.90
        accs = [first, 0.99, 0.995] if i % 2 else [first]  # odd trials ran on, whatever their lr
        records.append(TrialRecord(f"t{i}", {"model": "cnn", "epochs": 3, "lr": lr, "batch_size": 64 if i % 2 else 128},
                                   curve(accs, 0.0, 10.0), None))
    trials = trials_table(records, "e", "mnist", 0)
    at, budget = at_common_budget(trials, epochs_table(records))
    assert budget == 1 and at.set_index("trial_id")["val_acc_at_budget"].to_dict()["t1"] == 0.95
    assert importance(at, target="val_acc_at_budget").index[0] == "lr"
    assert importance(trials).index[0] == "batch_size"  # best_val_acc across rungs learns who ran longer


def test_mcnemar_on_two_fixed_prediction_vectors_gives_the_known_answer():
    """80 images both got right, 10 only A, 2 only B, 8 neither: under "equally accurate" the 12
    discordant images split 10/2 or worse with probability 2 * (1 + 12 + 66) / 2**12 = 0.03857."""
    from analysis.tables import paired_tests

    labels = np.zeros(100, dtype=int)
    a = np.r_[np.zeros(80), np.zeros(10), np.ones(2), np.ones(8)].astype(int)
    b = np.r_[np.zeros(80), np.ones(10), np.zeros(2), np.ones(8)].astype(int)
    rows = [pd.DataFrame({"experiment": "e", "model": name, "trial_id": name, "index": np.arange(100),
                          "label": labels, "predicted": predicted}) for name, predicted in (("cnn", a), ("vit", b))]
    table = paired_tests(pd.concat(rows, ignore_index=True))
    row = table.iloc[0]
    assert (row["model_a"], row["model_b"], row["only_a_right"], row["only_b_right"]) == ("cnn", "vit", 10, 2)
    assert row["p_value"] == pytest.approx(158 / 4096) and bool(row["significant"])
    assert row["acc_a"] == pytest.approx(0.90) and row["acc_b"] == pytest.approx(0.82)
    even = paired_tests(pd.concat([rows[0], rows[0].assign(model="vit")], ignore_index=True))
    assert even["p_value"].iloc[0] == 1.0 and not even["significant"].iloc[0]  # identical predictions


def test_report_says_which_winners_differ_significantly(tmp_path):
    folder = write_experiment(tmp_path / "exp")
    labels = np.arange(200) % 10
    cnn = labels.copy()
    vit = np.where(np.arange(200) < 40, (labels + 1) % 10, labels)  # wrong on the first 40 images
    predictions = pd.concat([pd.DataFrame({"model": m, "trial_id": m, "index": np.arange(200), "label": labels,
                                           "predicted": p}) for m, p in (("cnn", cnn), ("vit", vit))])
    write_atomic({"predictions": predictions}, folder)
    assert analysis_main([str(folder)]) == 0
    text = (folder / "report" / "report.md").read_text()
    assert "## Is the difference real?" in text and "McNemar's exact test" in text
    table = pd.read_csv(folder / "report" / "significance.csv")
    assert table[["model_a", "model_b", "only_a_right", "only_b_right"]].values.tolist() == [["cnn", "vit", 40, 0]]
    assert table["significant"].tolist() == [True]
