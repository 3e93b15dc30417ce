"""The results schema: the contract between the search that writes the Parquet files and the
analysis that reads them (documented in docs/schema.md; ``SCHEMA_VERSION`` changes with it).

Plain data and pandas only, so that reading results never imports torch or Ray.
"""

from __future__ import annotations

import pandas as pd

# 12: ``config.augment`` names the augmentation policy (none, light, strong, strong-mix) instead of a boolean
# (True was the shift and flip, now "light"; models.config.augment_policy reads both);
# 11: ``cost_latency_runs`` in finalists (the timed calls the latency is the median of: fewer in a smoke search);
# 10: the end phase's clock in finalists (``end_started_at``, ``end_s``, ``cost_s``): each model's winner tested and
# bundled as Ray work as soon as its study is done (search.finish.endphase);
# 9: how each classical baseline was chosen and fitted, as the search's networks were: ``folds`` (1: on the
# validation split; k: by the mean over the search's k folds) and ``refit`` (fitted on training + validation
# for its test) in baselines;
# 8: how trials were scored and how long they trained: ``folds`` (1: the validation split; k: k-fold
# cross-validation, whose fold mean is val_acc), ``train_images`` (images an epoch trained on: a fold's under
# cross-validation) in trials, and ``val_acc_se`` (val_acc's standard error: over the folds, or binomial on one
# split) in epochs, ``best_val_acc_se`` in trials;
# 7: baselines.parquet and baseline_predictions.parquet (a classical baseline, tested once, in every search);
# 6: the model bundles: in finalists, each winner's checkpoint epoch, bundle, ONNX export, cost to run and (with
# --refit) the refit's test; predictions' ``stage`` (the search's winner, or its refit);
# 5: classes.parquet (class names and per-split counts) and dataset.json (what the data was and how it
# was split and normalized); 4: predictions.parquet (the tested winners' test predictions),
# repeats.parquet and the repeat statistics in finalists (with --repeats); 3: the efficiency columns in trials
SCHEMA_VERSION = 12
# no_box_rate: share of validation images a detector found no box in (empty for classifiers)
EPOCH_COLUMNS = ["trial_id", "model", "epoch", "train_loss", "val_loss", "val_acc", "val_f1",
                 "epoch_time_s", "elapsed_s", "reported_at", "no_box_rate", "node", "val_acc_se"]
TRIAL_COLUMNS = ["experiment", "trial_id", "model", "status", "epochs", "best_val_acc", "best_val_f1",
                 "best_val_loss", "train_time_s", "wall_clock_s", "time_to_best_s", "params", "device", "node",
                 "precision", "dataset", "seed", "pretrained", "error", "started_at",
                 # where and when it ran, for the search's efficiency (analysis.efficiency)
                 "process", "trial_in_process", "setup_s", "train_started_at", "ended_at", "slots",
                 "search_started_at",
                 # how it was scored (schema 8)
                 "folds", "train_images", "best_val_acc_se"]
FINALIST_COLUMNS = ["model", "trial_id", "test_acc", "test_f1", "test_loss", "best_val_acc", "train_time_s",
                    "wall_clock_s", "params", "best_epoch"]
# What the search hands over (schema 6): each winner's bundle (<folder>/models/<model>/), which model it holds
# ("search": the trial's best checkpoint, "refit": retrained on train + validation), its ONNX export, and what
# it costs to run on the search's device (trainables.cost.RunCost, prefixed cost_).
BUNDLE_COLUMNS = ["bundle", "bundled", "bundle_s", "bundle_error", "weights_mb", "onnx_exported", "onnx_mb",
                  "onnx_reason", "refit_epochs", "refit_train_images", "refit_train_s", "refit_test_acc",
                  "refit_test_f1", "refit_test_loss",
                  # schema 10: when the model's end phase (test, refit, bundle) began on the search's clock, its
                  # seconds, and the seconds its cost-to-run task took (search.finish.endphase)
                  "end_started_at", "end_s", "cost_s"]
COST_COLUMNS = ["cost_device", "cost_threads", "cost_latency_ms", "cost_latency_p90_ms", "cost_latency_runs",
                "cost_throughput_ips", "cost_bulk_batch", "cost_peak_memory_mb", "cost_memory_kind"]
FINALIST_COLUMNS = FINALIST_COLUMNS + BUNDLE_COLUMNS + COST_COLUMNS
# --repeats: one row per run of a winner's configuration at another seed, and, in finalists, the
# statistics over a model's runs (mean, sample standard deviation, Student's t 95% interval).
REPEAT_COLUMNS = ["model", "trial_id", "seed", "test_acc", "test_f1", "test_loss", "best_val_acc", "train_time_s",
                  "wall_clock_s"]
REPEAT_STAT_COLUMNS = ["repeats"] + [f"{metric}_{stat}" for metric in ("test_acc", "test_f1")
                                     for stat in ("mean", "std", "low", "high")]
# One row per tested winner and test image: what it predicted (paired comparisons of the winners).
PREDICTION_COLUMNS = ["model", "trial_id", "index", "label", "predicted", "stage"]
SEARCH_STAGE, REFIT_STAGE = "search", "refit"  # a prediction's model: the search's winner, or its refit (--refit)
BASELINE_STAGE = "baseline"  # ... or a classical baseline (search.finish.baseline), model named after it
# One row per classical baseline (scikit-learn on the raw pixels): its grid's choice (params, JSON) on the
# validation split or over ``folds`` folds, whether it was refit on training + validation, the images it was fitted
# on (capped: fewer than those) and features, its metrics.
BASELINE_COLUMNS = ["model", "params", "folds", "refit", "train_images", "features", "capped", "val_acc", "test_acc",
                    "test_f1", "seconds"]
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
