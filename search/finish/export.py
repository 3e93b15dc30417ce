"""Turn Tune's results into the three Parquet files that are the contract with ``analysis/``.

The columns are ``analysis.schema``'s (documented in docs/schema.md).
Files are written under a temporary name and renamed, so a reader sees either the previous
complete file or the new complete file, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import models
from analysis.schema import (CLASS_COLUMNS, CONFIG_PREFIX, COMPLETED, DATASET_FILE, EPOCH_COLUMNS, ERROR,
                             SCHEMA_VERSION, STOPPED_EARLY, TRIAL_COLUMNS, config_names)
from imagesets.atomic import staged_files, write_text
from models.config import MODEL_KEY, ConfigError, TrainConfig, from_flat
from trainables.data import Dataset

_TRIAL_DIR = re.compile(r"^(?P<model>.+?)_(?P<trial_id>[0-9a-f]{5,}(?:_\d+)?)$")


def effective_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The complete config a trial trained with: what was searched or set, plus the defaults that
    filled the rest (e.g. ``padding`` when the space did not suggest it). Exports record this, so a
    row says everything that shaped its result. An invalid config is returned as it was given."""
    try:
        spec = models.get(flat[MODEL_KEY])
        return {MODEL_KEY: spec.name, **asdict(from_flat(spec.config_cls, flat)), **asdict(from_flat(TrainConfig, flat))}
    except (KeyError, ConfigError):
        return dict(flat)


def trial_dirname(trial) -> str:
    """Trial folders (and names in the progress table) say model and id: ``cnn_3f2a1_00004``."""
    return f"{trial.config[MODEL_KEY]}_{trial.trial_id}"


@dataclass
class TrialRecord:
    """What the export needs from one Tune result, independent of Ray's classes."""

    trial_id: str
    config: dict[str, Any]
    history: pd.DataFrame  # one row per reported epoch (may be empty)
    error: str | None


def trial_id_of(result) -> str:
    """A ``ray.tune.Result``'s trial id, from the folder ``trial_dirname`` named. Not from its metrics: for a trial
    that never reported, Tune keeps the metrics it asked of the trial's process when the trial was placed there,
    and a process reused from an earlier trial can answer with that trial's id (seen in CI: the winner's id twice
    in trials.parquet, the second row without epochs, and so without a checkpoint to test)."""
    match = _TRIAL_DIR.match(Path(result.path).name)
    return match["trial_id"] if match else (result.metrics or {}).get("trial_id") or Path(result.path).name


def last_metrics(result) -> dict[str, Any]:
    """A result's last reported metrics; empty where they are not its trial's own (``trial_id_of``)."""
    metrics, own = result.metrics or {}, trial_id_of(result)
    return dict(metrics) if metrics.get("trial_id", own) == own else {}


def record_from_result(result, known: Mapping[str, Mapping[str, Any]] | None = None) -> TrialRecord:
    """Read a ``ray.tune.Result``: its trial's id (``trial_id_of``), configuration, epochs and error. The
    configuration is the one in its own metrics; for a trial that never reported, the one Tune gave it (``known``:
    trial id -> config, as the search's callbacks saw it), since ``Result.config`` then comes from the metrics its
    process gave, an earlier trial's in a reused process."""
    trial_id, own = trial_id_of(result), last_metrics(result)
    config = own.get("config") or (known or {}).get(trial_id) or result.config or {}
    return record_from_history(trial_id, effective_config(config), result.metrics_dataframe, short_error(result.error))


def record_from_history(trial_id: str, config: dict[str, Any], history: pd.DataFrame | list[dict] | None,
                        error: str | None) -> TrialRecord:
    """A trial's record from its reported results (a table, or the result dicts as Tune handed them over)."""
    history = pd.DataFrame(history) if history is not None else pd.DataFrame()
    if "epoch" in history:
        # A trial resumed from its best checkpoint reports the epochs after it again: the later
        # report of an epoch is the one its checkpoint and the final numbers come from.
        history = history.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last")
    return TrialRecord(trial_id, config, history, error)


def short_error(error: BaseException | None) -> str | None:
    """The last meaningful line of an error (Ray wraps the trial's exception in a traceback)."""
    if error is None:
        return None
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text[:500]


def status_of(record: TrialRecord) -> str:
    """``error`` if the trial raised; ``completed`` if it trained its whole budget; else
    ``stopped_early`` (ASHA, or the experiment's time budget, stopped it)."""
    if record.error is not None:
        return ERROR
    budget = record.config.get("epochs")
    done = int(record.history["epoch"].max()) if len(record.history) else 0
    return COMPLETED if budget is not None and done >= int(budget) else STOPPED_EARLY


def trial_row(record: TrialRecord, experiment: str, dataset: str, seed: int,
              search: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One row of ``trials.parquet``. The ``best_*`` values are those of the best epoch (highest
    ``val_acc``): the epoch whose weights are checkpointed and re-evaluated for finalists.
    ``search`` holds the columns every trial of the search shares (``slots``, ``search_started_at``)."""
    h = record.history
    row: dict[str, Any] = dict(
        experiment=experiment, trial_id=record.trial_id, model=record.config.get(MODEL_KEY),
        status=status_of(record), epochs=int(h["epoch"].max()) if len(h) else 0,
        best_val_acc=None, best_val_f1=None, best_val_loss=None, train_time_s=None, wall_clock_s=None,
        time_to_best_s=None, params=None, device=None, node=None, precision=None, dataset=dataset, seed=seed,
        pretrained=record.config.get("pretrained"), error=record.error, started_at=None,
        process=None, trial_in_process=None, setup_s=None, train_started_at=None, ended_at=None,
        folds=None, train_images=None, best_val_acc_se=None, **(search or {}),
    )
    if len(h):
        best = h.loc[h["val_acc"].idxmax()]
        last = h.loc[h["epoch"].idxmax()]
        row.update(
            best_val_acc=float(best["val_acc"]), best_val_f1=float(best["val_f1"]),
            best_val_loss=float(best["val_loss"]), train_time_s=float(last["train_time_s"]),
            wall_clock_s=float(last["elapsed_s"]), time_to_best_s=float(best["elapsed_s"]),
            params=int(last["params"]), device=last.get("device"), node=last.get("node"), precision=last.get("precision"),
            started_at=_number(last, "started_at"), process=last.get("process"),
            trial_in_process=_number(last, "trial_in_process", int), setup_s=_number(last, "setup_s"),
            train_started_at=_number(last, "train_started_at"), ended_at=_number(last, "reported_at"),
            folds=_number(last, "folds", int), train_images=_number(last, "train_images", int),
            best_val_acc_se=_number(best, "val_acc_se"),
        )
    row.update(config_columns(record.config))
    return row


def _number(row: pd.Series, column: str, kind: type = float) -> Any:
    """``row[column]`` as ``kind``, or None where the trial did not report it (older trainables)."""
    value = row.get(column)
    return None if value is None or pd.isna(value) else kind(value)


def config_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"lr": 0.01, ...}`` -> ``{"config.lr": 0.01, ...}`` (``model`` has its own column)."""
    return {f"{CONFIG_PREFIX}{k}": v for k, v in sorted(config.items()) if k != MODEL_KEY}


def epoch_rows(record: TrialRecord) -> pd.DataFrame:
    """Rows of ``epochs.parquet`` for one trial."""
    if not len(record.history):
        return pd.DataFrame(columns=EPOCH_COLUMNS)
    h = record.history.copy()
    h["trial_id"] = record.trial_id
    h["model"] = record.config.get(MODEL_KEY)
    h["epoch"] = h["epoch"].astype(int)
    return h.reindex(columns=EPOCH_COLUMNS)


def trials_table(records: Iterable[TrialRecord], experiment: str, dataset: str, seed: int,
                 search: Mapping[str, Any] | None = None) -> pd.DataFrame:
    rows = [trial_row(r, experiment, dataset, seed, search) for r in records]
    table = pd.DataFrame(rows)
    return table.reindex(columns=TRIAL_COLUMNS + config_names(table)).sort_values(["model", "trial_id"], ignore_index=True)


def epochs_table(records: Iterable[TrialRecord]) -> pd.DataFrame:
    frames = [epoch_rows(r) for r in records]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=EPOCH_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(["model", "trial_id", "epoch"], ignore_index=True)


def write_atomic(tables: Mapping[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Write each table to ``folder/<name>.parquet``, all whole (``imagesets.atomic``): every file is staged before
    any is renamed into place, so a failure while writing leaves the previous files untouched; the schema version
    is stored in each file's metadata."""
    finals = [folder / f"{name}.parquet" for name in tables]
    with staged_files(finals) as staging:
        for tmp, table in zip(staging, tables.values()):
            table.attrs["schema_version"] = SCHEMA_VERSION
            table.to_parquet(tmp, index=False)
    return finals


def classes_table(data: Dataset) -> pd.DataFrame:
    """``classes.parquet``: each class's index and name, and how many images of it each split holds
    (the splits as searched and tested, after any --train-size or --smoke cap)."""
    counts = data.class_counts()
    return pd.DataFrame({"class": range(data.info.num_classes), "name": list(data.info.class_names),
                         **counts}).reindex(columns=CLASS_COLUMNS)


def dataset_record(data: Dataset) -> dict[str, Any]:
    """What the search trained and tested on: the data set, its source, its size and channels, its
    per-channel normalization (of the training split), how it was split and with which seed."""
    info = dataclasses.asdict(data.info)
    return {**info, "cache": str(info["cache"]), "class_names": list(info["class_names"]), "mean": list(info["mean"]), "std": list(info["std"]),
            "num_classes": data.info.num_classes, "sizes": {k: len(getattr(data, k)) for k in ("train", "val", "test")},
            "sizes_before_caps": data.full_sizes, "schema_version": SCHEMA_VERSION}


def write_dataset_record(data: Dataset, folder: Path) -> Path:
    """``dataset.json`` (``dataset_record``), written atomically like the tables."""
    return write_text(folder / DATASET_FILE, json.dumps(dataset_record(data), indent=2))
