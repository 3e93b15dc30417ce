"""The export contract with analysis/: statuses, best-epoch values, atomic writes, leaderboard."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.leaderboard import leaderboard
from analysis.schema import EPOCH_COLUMNS, TRIAL_COLUMNS
from search.finish.export import TrialRecord, epochs_table, short_error, trials_table, write_atomic
from search.finish.finalists import pick_winners


def history(accs, epoch_s=2.0):
    return pd.DataFrame({
        "epoch": range(1, len(accs) + 1), "train_loss": [1.0] * len(accs), "val_loss": [1 - a for a in accs],
        "val_acc": accs, "val_f1": [a - 0.01 for a in accs], "epoch_time_s": [epoch_s] * len(accs),
        "train_time_s": [epoch_s * (i + 1) for i in range(len(accs))],
        "elapsed_s": [epoch_s * (i + 1) + 0.5 for i in range(len(accs))], "params": [1234] * len(accs),
        "device": ["cpu"] * len(accs), "precision": ["fp32"] * len(accs),
        "started_at": [1000.0] * len(accs), "reported_at": [1000.0 + epoch_s * (i + 1) for i in range(len(accs))],
    })


RECORDS = [
    TrialRecord("a_00000", {"model": "cnn", "epochs": 3, "lr": 0.01}, history([0.9, 0.97, 0.95]), None),
    TrialRecord("b_00001", {"model": "cnn", "epochs": 3, "lr": 0.1}, history([0.5]), None),
    TrialRecord("c_00002", {"model": "cnn", "epochs": 3, "lr": 9.0}, pd.DataFrame(), "DivergedError: diverged"),
]


def test_statuses_and_best_epoch_values():
    table = trials_table(RECORDS, "exp", "mnist", 7)
    assert list(table.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    table = table.set_index("trial_id")
    assert table["status"].to_dict() == {"a_00000": "completed", "b_00001": "stopped_early", "c_00002": "error"}
    a = table.loc["a_00000"]
    # The best epoch is the 2nd (0.97), not the last: its values are the ones reported.
    assert (a["best_val_acc"], a["best_val_loss"], a["time_to_best_s"]) == pytest.approx((0.97, 0.03, 4.5))
    assert (a["train_time_s"], a["wall_clock_s"], a["epochs"]) == pytest.approx((6.0, 6.5, 3))
    c = table.loc["c_00002"]
    assert c["error"] == "DivergedError: diverged" and pd.isna(c["best_val_acc"]) and c["epochs"] == 0
    assert table["config.lr"].tolist() == [0.01, 0.1, 9.0] and "config.model" not in table


def test_epochs_table_has_one_row_per_trial_and_epoch():
    epochs = epochs_table(RECORDS)
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert epochs.groupby("trial_id").size().to_dict() == {"a_00000": 3, "b_00001": 1}


def test_winner_ignores_errors_and_leaderboard_says_so():
    trials = trials_table(RECORDS, "exp", "mnist", 7)
    assert pick_winners(trials)["trial_id"].tolist() == ["a_00000"]
    finalists = pd.DataFrame([{"model": "cnn", "trial_id": "a_00000", "test_acc": 0.96, "test_f1": 0.95,
                               "test_loss": 0.1, "best_val_acc": 0.97, "train_time_s": 6.0, "wall_clock_s": 6.5,
                               "params": 1234, "config.lr": 0.01}])
    board = leaderboard(trials, finalists)
    assert "cnn" in board and "0.9600" in board and "lr=0.01" in board
    only_errors = trials_table(RECORDS[2:], "exp", "mnist", 7)
    assert "no finished trial" in leaderboard(only_errors, finalists.iloc[0:0])


def test_atomic_write_keeps_previous_files_when_a_table_fails(tmp_path):
    good = trials_table(RECORDS, "exp", "mnist", 7)
    write_atomic({"trials": good}, tmp_path)
    before = (tmp_path / "trials.parquet").read_bytes()
    unwritable = pd.DataFrame({"x": [object()]})  # pyarrow cannot store an arbitrary object
    with pytest.raises(Exception):
        write_atomic({"trials": good.head(1), "epochs": unwritable}, tmp_path)
    assert (tmp_path / "trials.parquet").read_bytes() == before
    assert not (tmp_path / "epochs.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.parquet"]


def test_short_error_keeps_the_last_meaningful_line():
    err = RuntimeError("Traceback (most recent call last):\n  File x\nDivergedError: training loss became nan\n\n")
    assert short_error(err) == "DivergedError: training loss became nan"
    assert short_error(None) is None


def test_a_winner_that_cannot_be_tested_is_reported_and_the_others_still_are(tmp_path, mnist_small):
    import models
    from search.finish.finalists import pick_winners, test_runs
    from trainables.runtime import Runtime
    from trainables.tune_trial import CHECKPOINT_FILE

    configs = {"c1": {"model": "cnn", **models.get("cnn").default_config},
               "v1": {"model": "vit", **models.get("vit").default_config}}
    torch.manual_seed(0)
    cnn = models.get("cnn").build(configs["c1"], models.BuildContext())
    (tmp_path / "c1").mkdir()
    torch.save({"model": cnn.state_dict(), "epoch": 1}, tmp_path / "c1" / CHECKPOINT_FILE)
    trials = pd.DataFrame([
        dict(trial_id="c1", model="cnn", status="completed", best_val_acc=0.9, train_time_s=1.0, wall_clock_s=1.0,
             params=1),
        dict(trial_id="v1", model="vit", status="completed", best_val_acc=0.8, train_time_s=1.0, wall_clock_s=1.0,
             params=1),
    ])
    runtime = Runtime(torch.device("cpu"))
    tested = test_runs(pick_winners(trials), {"c1": tmp_path / "c1", "v1": tmp_path / "v1"}, configs,
                       mnist_small.test, runtime, mnist_small.info.shape)
    table, predictions = tested.finalists, tested.predictions
    assert table["model"].tolist() == ["cnn"] and table["test_acc"].between(0, 1).all()
    assert list(tested.problems) == ["vit"] and "model.pt" in tested.problems["vit"]
    assert "winner not tested" in leaderboard(trials.assign(experiment="e", epochs=1), table)
    # Every test image's prediction is kept, and they make the reported accuracy.
    assert len(predictions) == len(mnist_small.test) and set(predictions["model"]) == {"cnn"}
    assert predictions["index"].tolist() == list(range(len(mnist_small.test)))
    assert (predictions["label"] == predictions["predicted"]).mean() == pytest.approx(table["test_acc"].iloc[0])


def test_each_trial_is_tested_from_the_last_checkpoint_it_reported_even_where_tune_did_not_register_it(tmp_path):
    """An --epoch-budget spent by a trial's last result stops the search before Tune registers that result's
    checkpoint (seen in CI: the winner "left no checkpoint to test"; another trial kept its first epoch's as best)."""
    from types import SimpleNamespace

    from ray import tune

    from search.finish.wrapup import best_checkpoints

    def trial(name: str, names: list, on_disk: list, registered=None):
        for folder in on_disk:
            (tmp_path / name / folder).mkdir(parents=True)
            (tmp_path / name / folder / "model.pt").write_bytes(b"weights")
        (tmp_path / name / "checkpoint_000009").mkdir(parents=True)  # a copy cut short: no weights in it
        rows = pd.DataFrame({"epoch": range(1, len(names) + 1), "checkpoint_dir_name": names})
        stale = tune.Checkpoint.from_directory(str(tmp_path / name / registered)) if registered else None
        return SimpleNamespace(path=str(tmp_path / name), metrics_dataframe=rows, best_checkpoints=[],
                               checkpoint=stale)

    results = [trial("unregistered", ["checkpoint_000000", "checkpoint_000001"], ["checkpoint_000001"]),
               trial("stale", ["checkpoint_000000", "checkpoint_000001", None], ["checkpoint_000000", "checkpoint_000001"],
                     registered="checkpoint_000000"),
               trial("elsewhere", ["checkpoint_000000"], [], registered="checkpoint_000000"),
               trial("last gone", ["checkpoint_000000", "checkpoint_000001", "checkpoint_000009"], ["checkpoint_000000"])]
    records = [SimpleNamespace(trial_id=name) for name in ("unregistered", "stale", "elsewhere", "last gone")]
    chosen = {k: Path(v.path).relative_to(tmp_path).as_posix() for k, v in best_checkpoints(records, results).items()}
    assert chosen == {"unregistered": "unregistered/checkpoint_000001", "stale": "stale/checkpoint_000001",
                      "elsewhere": "elsewhere/checkpoint_000000",  # a folder not readable here: Tune's record
                      "last gone": "last gone/checkpoint_000000"}  # the newest whole folder it reported


def test_a_trial_that_never_reported_in_a_reused_process_keeps_its_own_id_and_the_winner_its_checkpoint(tmp_path):
    """A trial placed in a process an earlier trial used, stopped by --epoch-budget before it reported, has as
    Tune's last result the metrics its process gave, with that earlier trial's id (seen in CI: the winner's id
    twice in trials.parquet and the winner "left no checkpoint to test")."""
    from types import SimpleNamespace

    from search.finish.export import last_metrics, record_from_result
    from search.finish.wrapup import best_checkpoints

    (tmp_path / "cnn_551bca4b" / "checkpoint_000001").mkdir(parents=True)
    (tmp_path / "cnn_551bca4b" / "checkpoint_000001" / "model.pt").write_bytes(b"weights")
    (tmp_path / "cnn_9f482202").mkdir()
    rows = history([0.6, 0.7]).assign(checkpoint_dir_name=["checkpoint_000000", "checkpoint_000001"])
    config = {"model": "cnn", "epochs": 2, "lr": 0.01}
    winner = SimpleNamespace(path=str(tmp_path / "cnn_551bca4b"), config=config, error=None, checkpoint=None,
                             metrics={"trial_id": "551bca4b", "epoch": 2, "val_acc": 0.7}, metrics_dataframe=rows,
                             best_checkpoints=[])
    # Tune's Result.config is the config in those metrics: the earlier trial's, another model's (seen in CI: a ViT
    # trial that failed in VGG16's process was recorded as VGG16's); the search's callbacks saw the trial's own.
    earlier = {"model": "vit", "epochs": 2, "lr": 0.001}
    unreported = SimpleNamespace(path=str(tmp_path / "cnn_9f482202"), config=earlier, error=None, checkpoint=None,
                                 metrics={"trial_id": "551bca4b", "config": earlier}, metrics_dataframe=None,
                                 best_checkpoints=[])
    records = [record_from_result(r, {"9f482202": {**config, "lr": 0.1}}) for r in (winner, unreported)]
    assert [(r.config["model"], r.config["lr"]) for r in records] == [("cnn", 0.01), ("cnn", 0.1)]
    trials = trials_table(records, "e", "mnist", 0)
    assert sorted(trials["trial_id"]) == ["551bca4b", "9f482202"]
    assert pick_winners(trials)["trial_id"].tolist() == ["551bca4b"]
    chosen = best_checkpoints(records, [winner, unreported])
    assert Path(chosen["551bca4b"].path).name == "checkpoint_000001" and chosen["9f482202"] is None
    assert last_metrics(winner)["val_acc"] == 0.7 and last_metrics(unreported) == {}  # told to its study as pruned
