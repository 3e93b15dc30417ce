"""The results schema: the contract between the search that writes the Parquet files and the
analysis that reads them (documented in docs/schema.md; ``SCHEMA_VERSION`` changes with it).

Plain data and pandas only, so that reading results never imports torch or Ray.
"""

from __future__ import annotations

import pandas as pd

# 5: classes.parquet (class names and per-split counts) and dataset.json (what the data was and how it
# was split and normalized); 4: predictions.parquet (the tested winners' test predictions),
# repeats.parquet and the repeat statistics in finalists (with --repeats); 3: the efficiency columns in trials
SCHEMA_VERSION = 5
# no_box_rate: share of validation images a detector found no box in (empty for classifiers)
EPOCH_COLUMNS = ["trial_id", "model", "epoch", "train_loss", "val_loss", "val_acc", "val_f1",
                 "epoch_time_s", "elapsed_s", "reported_at", "no_box_rate", "node"]
TRIAL_COLUMNS = ["experiment", "trial_id", "model", "status", "epochs", "best_val_acc", "best_val_f1",
                 "best_val_loss", "train_time_s", "wall_clock_s", "time_to_best_s", "params", "device", "node",
                 "precision", "dataset", "seed", "pretrained", "error", "started_at",
                 # where and when it ran, for the search's efficiency (analysis.efficiency)
                 "process", "trial_in_process", "setup_s", "train_started_at", "ended_at", "slots",
                 "search_started_at"]
FINALIST_COLUMNS = ["model", "trial_id", "test_acc", "test_f1", "test_loss", "best_val_acc", "train_time_s",
                    "wall_clock_s", "params"]
# --repeats: one row per run of a winner's configuration at another seed, and, in finalists, the
# statistics over a model's runs (mean, sample standard deviation, Student's t 95% interval).
REPEAT_COLUMNS = ["model", "trial_id", "seed", "test_acc", "test_f1", "test_loss", "best_val_acc", "train_time_s",
                  "wall_clock_s"]
REPEAT_STAT_COLUMNS = ["repeats"] + [f"{metric}_{stat}" for metric in ("test_acc", "test_f1")
                                     for stat in ("mean", "std", "low", "high")]
# One row per tested winner and test image: what it predicted (paired comparisons of the winners).
PREDICTION_COLUMNS = ["model", "trial_id", "index", "label", "predicted"]
# One row per class: its index (the label in predictions), its name, and its images in each split.
CLASS_COLUMNS = ["class", "name", "train", "val", "test"]
DATASET_FILE = "dataset.json"
CONFIG_PREFIX = "config."  # a trial's settings, one column each: config.lr, config.batch_size ...

# A trial's status: it trained its whole budget, ASHA (or the time budget) stopped it, or it raised.
COMPLETED, STOPPED_EARLY, ERROR = "completed", "stopped_early", "error"


def succeeded(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not fail and have a validation accuracy: the candidates for a winner."""
    return trials[(trials["status"] != ERROR) & trials["best_val_acc"].notna()]


def config_names(table: pd.DataFrame) -> list[str]:
    """The table's ``config.`` columns, sorted."""
    return sorted(c for c in table.columns if str(c).startswith(CONFIG_PREFIX))
