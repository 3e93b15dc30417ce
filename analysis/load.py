"""Reading one or more exported result folders, with clear errors for what cannot be analysed."""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.schema import (BASELINE_COLUMNS, CLASS_COLUMNS, DATASET_FILE, PREDICTION_COLUMNS, REFIT_STAGE,
                             REPEAT_COLUMNS, SCHEMA_VERSION, SEARCH_STAGE)

TABLES = ("trials", "epochs", "finalists")


class AnalysisError(ValueError):
    """Results that cannot be analysed; the message says which folder and what to do."""


@dataclass
class Results:
    """Every experiment's tables, concatenated; ``experiment`` tells the experiments apart."""

    trials: pd.DataFrame
    epochs: pd.DataFrame
    finalists: pd.DataFrame
    folders: list[Path]
    # The tested winners' test predictions (empty for results written before schema version 4).
    predictions: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=PREDICTION_COLUMNS))
    # The winners' repeat runs at other seeds (empty without --repeats).
    repeats: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=REPEAT_COLUMNS))
    # Each experiment's classes (names, images per split; empty before schema version 5) and its
    # dataset.json (what the data was, how it was split and normalized), by experiment.
    classes: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=CLASS_COLUMNS))
    datasets: dict[str, dict] = dataclasses.field(default_factory=dict)
    # With --refit, each winner's refit's test predictions (``predictions`` holds the search winners' own).
    refit_predictions: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=PREDICTION_COLUMNS))
    # The classical baselines (search.finish.baseline) and their test predictions (empty before schema version 7).
    baselines: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=BASELINE_COLUMNS))
    baseline_predictions: pd.DataFrame = dataclasses.field(
        default_factory=lambda: pd.DataFrame(columns=PREDICTION_COLUMNS))

    def bundled_predictions(self) -> pd.DataFrame:
        """The test predictions of the models that were bundled: a winner's refit where it was refit
        (``finalists.bundled == "refit"``), else the winner itself."""
        f = self.finalists
        if "bundled" not in f or self.refit_predictions.empty:
            return self.predictions
        refit = f.loc[f["bundled"] == REFIT_STAGE, ["experiment", "model"]]

        def refit_rows(table: pd.DataFrame) -> pd.Series:
            return pd.MultiIndex.from_frame(table[["experiment", "model"]]).isin(pd.MultiIndex.from_frame(refit))

        search, refits = self.predictions, self.refit_predictions
        return pd.concat([search[~refit_rows(search)], refits[refit_rows(refits)]], ignore_index=True)

    @property
    def groups(self) -> list[tuple[str, str]]:
        """(experiment, model) pairs, in a stable order."""
        return sorted(set(zip(self.trials["experiment"], self.trials["model"])))

    def trials_of(self, experiment: str, model: str) -> pd.DataFrame:
        t = self.trials
        return t[(t["experiment"] == experiment) & (t["model"] == model)]


def _schema_version(table: pd.DataFrame) -> int:
    return int(table.attrs.get("schema_version", 1))


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.parquet"
    table = pd.read_parquet(path)
    version = _schema_version(table)
    if version > SCHEMA_VERSION:
        raise AnalysisError(f"{path} has results schema version {version}, newer than this analysis "
                            f"understands ({SCHEMA_VERSION}); upgrade this project to read it")
    return table


def _hint(folder: Path) -> str:
    inside = sorted(p.parent.name for p in folder.glob("*/trials.parquet"))
    if inside:
        return f"; it holds experiments: {', '.join(inside)} (pass {folder}/<name>)"
    return "; pass the folder a search wrote (<storage-path>/<name>/ of python -m search.run)"


def _optional(folder: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """A table only some searches write (older ones, or without --repeats): empty if absent."""
    return _read(folder, name) if (folder / f"{name}.parquet").is_file() else pd.DataFrame(columns=columns)


def load_folder(folder: Path) -> tuple[pd.DataFrame, ...]:
    """The tables of one experiment folder: trials, epochs, finalists, predictions, repeats, classes, refit
    predictions, baselines and their predictions (empty where it has none); all but ``trials`` gain ``experiment``."""
    if not folder.is_dir():
        raise AnalysisError(f"{folder} is not a folder" + _hint(folder.parent if folder.parent.is_dir() else folder))
    missing = [name for name in TABLES if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise AnalysisError(f"{folder} has no results ({', '.join(m + '.parquet' for m in missing)} missing)"
                            + _hint(folder))
    trials, epochs, finalists = (_read(folder, name) for name in TABLES)
    if trials.empty:
        raise AnalysisError(f"{folder}/trials.parquet holds no trials: the search ended before any trial ran")
    experiment = str(trials["experiment"].iloc[0])
    epochs = epochs.assign(experiment=experiment)
    finalists = finalists.assign(experiment=experiment)
    predictions = _optional(folder, "predictions", PREDICTION_COLUMNS).assign(experiment=experiment)
    refit = predictions["stage"].eq(REFIT_STAGE) if "stage" in predictions else pd.Series(False, predictions.index)
    repeats = _optional(folder, "repeats", REPEAT_COLUMNS).assign(experiment=experiment)
    classes = _optional(folder, "classes", CLASS_COLUMNS).assign(experiment=experiment)
    baselines = _optional(folder, "baselines", BASELINE_COLUMNS).assign(experiment=experiment)
    baseline_predictions = _optional(folder, "baseline_predictions", PREDICTION_COLUMNS).assign(experiment=experiment)
    return (trials, epochs, finalists, predictions[~refit].assign(stage=SEARCH_STAGE), repeats, classes,
            predictions[refit], baselines, baseline_predictions)


def dataset_record(folder: Path) -> dict:
    """An experiment's dataset.json, or an empty record for results written before it existed."""
    path = folder / DATASET_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load(folders: Sequence[str | Path], models: Sequence[str] | None = None) -> Results:
    """Read and concatenate experiment folders, optionally keeping only some models.

    A model asked for but absent from every folder is an error naming the models present.
    """
    paths = [Path(f).expanduser().resolve() for f in folders]
    if not paths:
        raise AnalysisError("no results folder given")
    parts = [load_folder(p) for p in paths]
    names = [str(part[0]["experiment"].iloc[0]) for part in parts]
    if len(set(names)) != len(names):
        raise AnalysisError(f"the same experiment was given twice ({', '.join(names)})")
    trials, epochs, finalists, predictions, repeats, classes, refit, baselines, baseline_predictions = (
        pd.concat([p[i] for p in parts], ignore_index=True) for i in range(9))
    datasets = {name: dataset_record(path) for name, path in zip(names, paths)}
    if models:
        absent = sorted(set(models) - set(trials["model"]))
        if absent:
            raise AnalysisError(f"model(s) {', '.join(absent)} not in these results; present: "
                                f"{', '.join(sorted(set(trials['model'])))}")
        trials, epochs, finalists, predictions, repeats, refit = (t[t["model"].isin(models)] for t in
                                                                  (trials, epochs, finalists, predictions, repeats, refit))
    return Results(trials.reset_index(drop=True), epochs.reset_index(drop=True), finalists.reset_index(drop=True),
                   paths, predictions.reset_index(drop=True), repeats.reset_index(drop=True), classes, datasets,
                   refit.reset_index(drop=True), baselines, baseline_predictions)
