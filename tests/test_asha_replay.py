"""The ASHA replay (benchmarks/asha_replay.py) on hand-made learning curves whose rung decisions are worked out by
hand, and the table of learning curves it reads (benchmarks/learning_curves.py): complete, the search's own
configurations, and refused with a message when truncated or corrupted."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks import their neighbour machine.py


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


replay_mod = _load("asha_replay")
curves_mod = _load("learning_curves")

# Four epochs a configuration; configuration 0 is the default. Rungs at 1, 2 and 4 epochs (grace 1, factor 2).
CURVES = {
    0: [0.50, 0.60, 0.70, 0.80],
    1: [0.60, 0.70, 0.80, 0.90],
    2: [0.40, 0.50, 0.60, 0.70],
    3: [0.55, 0.65, 0.66, 0.67],
    4: [0.90, 0.30, 0.20, 0.10],
}


def frame(curves=CURVES, seconds=None) -> pd.DataFrame:
    rows = [{"config_id": c, "epoch": e + 1, "val_acc": v, "seconds": (seconds or {}).get(c, 1.0), "config.lr": 0.1 * (c + 1)}
            for c, values in curves.items() for e, v in enumerate(values)]
    return pd.DataFrame(rows)


def in_order(*rows: int):
    order = iter(rows)
    return lambda: next(order)


def test_one_worker_stops_below_the_rungs_median_and_promotes_the_rest():
    """Trials in turn: at rung 1 the 0.4 of configuration 2 is below the median of (0.5, 0.6) and stops; at rung 2
    the 0.3 of configuration 4 is below the median of (0.6, 0.7, 0.65); configuration 3's 0.65 equals its rung's
    median (0.6, 0.7) and goes on; every other trial trains to the last epoch."""
    table = replay_mod.table_from(frame())
    run = replay_mod.replay(table, in_order(0, 1, 2, 3, 4), budget_epochs=100, workers=1,
                            asha=replay_mod.Asha(reduction_factor=2, grace_period=1), max_trials=5)
    assert run.trials == [0, 1, 2, 3, 4]
    assert run.reached == {0: 4, 1: 4, 2: 1, 3: 4, 4: 2}
    assert run.curve == [0.5, 0.6, 0.7, 0.8] + [0.8, 0.8, 0.8, 0.9] + [0.9] * 7
    assert run.seconds == list(map(float, range(1, 16)))
    assert run.regret(table.best, 3).tolist() == pytest.approx([0.4, 0.3, 0.2])


def test_a_rung_decides_only_once_it_holds_enough_results():
    """Configuration 2 second: at rung 1 it is below the default's 0.5, but a rung of two results waits for three
    (the search's default for factor 3); Ray's ASHA (one result is enough) stops it there."""
    table = replay_mod.table_from(frame())
    waits = replay_mod.replay(table, in_order(0, 2), 100, 1, replay_mod.Asha(2, 1, min_results=3), max_trials=2)
    assert waits.reached == {0: 4, 1: 4}
    rays = replay_mod.replay(table, in_order(0, 2), 100, 1, replay_mod.Asha(2, 1, min_results=1), max_trials=2)
    assert rays.reached == {0: 4, 1: 1}


def test_the_default_is_never_stopped_and_workers_overlap_in_time():
    """Two workers: the default (2 s an epoch) reaches rung 1 after configuration 4 (1 s an epoch) and is worse, yet
    trains on; configuration 2 starts when 4 ends, and every epoch is handed over in the order it ends."""
    bad_default = {**CURVES, 0: [0.10, 0.10, 0.10, 0.10]}
    table = replay_mod.table_from(frame(bad_default, seconds={0: 2.0}))
    run = replay_mod.replay(table, in_order(0, 4, 2), 100, 2, replay_mod.Asha(2, 1, min_results=1), max_trials=3)
    # t=1: 4 at rung 1 (first there) goes on; t=2: the default at rung 1, below 0.9, exempt; 4 at rung 2 first there
    # goes on; t=3: 4's epoch 3; t=4: 4 ends (max_t), 2 starts; the default at rung 2 (0.1 < 0.3), exempt;
    # t=5: 2 at rung 1: 0.4 against (0.9, 0.1): the median 0.5, stopped.
    assert run.reached == {0: 4, 1: 4, 2: 1}
    assert run.seconds == [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 6.0, 8.0]


def test_the_budget_ends_the_search_as_its_epochs_are_spent():
    table = replay_mod.table_from(frame())
    run = replay_mod.replay(table, in_order(0, 1, 2, 3, 4), budget_epochs=6, workers=1, asha=replay_mod.Asha(2, 1))
    assert len(run.curve) == 6 and sum(run.reached.values()) == 6
    whole = replay_mod.replay(table, in_order(0, 1, 2, 3, 4), 100, 1, replay_mod.Asha(None), max_trials=5)
    assert set(whole.reached.values()) == {4}  # without ASHA every trial trains its whole budget


@pytest.mark.parametrize("damage, says", [
    (lambda f: f[~((f["config_id"] == 3) & (f["epoch"] == 4))], "lack epochs of 1..4"),
    (lambda f: f.drop(columns="seconds"), "no seconds column"),
    (lambda f: f.assign(val_acc=f["val_acc"].where(f["epoch"] != 2, np.nan)), "val_acc must be accuracies"),
    (lambda f: f.assign(**{"config.lr": np.where(f["epoch"] == 3, 9.0, f["config.lr"])}), "config.lr changes"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "twice"),
])
def test_a_damaged_table_is_refused_with_what_is_wrong(tmp_path, damage, says):
    path = tmp_path / "curves.parquet"
    damage(frame()).to_parquet(path)
    with pytest.raises(replay_mod.TableError, match=says) as refused:
        replay_mod.load_table(path)
    assert str(path) in str(refused.value) and "learning_curves.py" in str(refused.value)


def test_a_cut_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "curves.parquet"
    frame().to_parquet(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(replay_mod.TableError, match="cannot be read as Parquet"):
        replay_mod.load_table(path)


def test_the_tables_configurations_are_the_ones_the_search_samples(data_dir, monkeypatch):
    """The default first, then draws of the CNN's space as the search plans it for this data: every one a complete,
    valid configuration for the data's shape, trained for the table's epochs without restarts."""
    import models
    from imagesets.carving import carve_data
    from imagesets.options import DataOptions
    from models.config import split_config

    monkeypatch.setenv("SEARCH_DATA_DIR", str(data_dir))
    carved = carve_data(DataOptions(dataset="fashion_mnist", limit=(5000, None, None)))
    shape = models.DataShape(1, 28, 10, carved.sizes["train"])
    plan = curves_mod.search_plan("cnn", 9, "fashion_mnist", 5000, shape, carved.sizes["val"], carved.full_sizes["train"])
    configs = curves_mod.sampled_configs(plan, 30, seed=0)
    spec = models.get("cnn")
    assert {k: configs[0][k] for k in spec.defaults_for(plan.shape)} == spec.defaults_for(plan.shape)
    for config in configs:
        cfg = split_config(config, spec.config_cls, "cnn")
        spec.check_fits(config, plan.shape)
        assert cfg.epochs == 9 and cfg.restart_epochs == () and config["model"] == "cnn"
    assert len({config["lr"] for config in configs}) == 30  # draws, not copies
    assert curves_mod.sampled_configs(plan, 30, seed=0) == configs  # the seed makes the table's rows again
    # The committed table (benchmarks/results) holds exactly these configurations, every one with its 9 epochs.
    table = replay_mod.load_table()
    assert len(table.configs) >= 200 and table.max_epochs == 9 and table.attrs["train_images"] == 5000
    assert table.configs == curves_mod.sampled_configs(plan, len(table.configs), seed=0)
