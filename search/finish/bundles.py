"""From a search's winners to models people use: refit (``--refit``), bundle, and cost to run.

Runs on each winner right after its test (``search.finish.finalists``'s ``after``): with ``--refit`` the winner's
configuration is trained again from scratch on the training and validation images for the epochs at which
its trial peaked and tested once; then the model (the refit, or the trial's best checkpoint) is written as a
bundle (``trainables.bundle``) to ``<results>/models/<model>/``. Its cost to run is measured later, on the bundle
as written and alone on its device (``bundle_cost``; ``search.finish.endphase`` decides when). A winner whose bundle fails
keeps its test figures; the finalists' ``bundle_error`` says why.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import models
from analysis.schema import REFIT_STAGE, SEARCH_STAGE
from search.command.settings import Settings
from search.finish.export import dataset_record
from search.finish.finalists import WinnerTest, prediction_rows, test_scores
from trainables import cost
from trainables.bundle import Bundle, write_bundle
from trainables.card import BUNDLE_FORMAT, BUNDLE_VERSION, DECODING, write_card
from trainables.data import Dataset, Split
from trainables.inference import Classifier
from trainables.loop import prepare, train_only
from trainables.runtime import Runtime
from trainables.tune_trial import seed_everything

MODELS_FOLDER = "models"  # <results>/models/<model>/: one bundle per winner


def bundle_folder(results: Path, model: str) -> Path:
    return Path(results) / MODELS_FOLDER / model


def train_and_val(data: Dataset) -> Split:
    """The training and validation images as one split (a refit's training data)."""
    return Split(torch.cat([data.train.images, data.val.images]), torch.cat([data.train.labels, data.val.labels]),
                 norm=data.train.norm)  # the search's normalization: the refit is tested and bundled as the search was


@dataclass
class Refit:
    """A winner's configuration trained again on training + validation images, and its one test."""

    classifier: Classifier
    columns: dict[str, Any]
    predictions: pd.DataFrame
    logits: np.ndarray  # on the test split


def refit(tested: WinnerTest, data: Dataset, runtime: Runtime, weights_dir: str | None) -> Refit:
    """Train ``tested``'s configuration from scratch, at its own seed, on training + validation images for
    the epochs at which its trial peaked (its checkpoint's epoch; the learning-rate schedule planned over
    them), and test it once."""
    model = tested.row["model"]
    spec = models.get(model)
    config = {**tested.config, "epochs": int(tested.epoch)}
    train = train_and_val(data)
    train_runtime = runtime.for_model(spec)
    seed_everything(int(config.get("seed", 0)))  # as a trial: its seed initializes the model
    prepared = prepare(model, config, train, train_runtime, data.shape, weights_dir)
    seconds = train_only(prepared, train.to(runtime.device), train_runtime, seed=int(config.get("seed", 0)))
    norm = data.info.normalization
    classifier = Classifier(prepared.model, norm.mean, norm.std, spec.task, runtime.channels_last)
    scores, scored = test_scores(classifier, data.test)
    columns = {"refit_epochs": int(tested.epoch), "refit_train_images": len(train.subset(
        prepared.train_cfg.max_train_images or None)), "refit_train_s": seconds,
        **{f"refit_{k}": v for k, v in scores.items()}}
    labels = data.test.labels.cpu().numpy()
    return Refit(classifier, columns, prediction_rows(model, tested.row["trial_id"], labels, scored.classes,
                                                      REFIT_STAGE), scored.logits)


def card(tested: WinnerTest, settings: Settings, data: Dataset, runtime: Runtime, stage: str,
         metrics: dict[str, Any], epochs: int, train_images: int) -> dict[str, Any]:
    """The model card of a winner's bundle (before the files, the ONNX check and the cost are added)."""
    winner, model = tested.winner, tested.row["model"]
    spec, origin = models.get(model), models.external.origin(model)
    record = dataset_record(data)
    return {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "model": model, "description": spec.description,
        "task": spec.task.name, "config": {"model": model, **tested.config}, "params": int(tested.row["params"]),
        "input": {"dtype": "uint8", "layout": "NCHW", "channels": data.info.channels,
                  "image_size": data.info.image_size, "range": [0, 255], "decoding": DECODING},
        "normalization": {"mean": list(data.info.mean), "std": list(data.info.std),
                          "computed_on": "the training split", "inside_onnx": True},
        "class_names": list(data.info.class_names),
        "channels_last": runtime.channels_last,
        "data": {k: record[k] for k in ("name", "source", "sizes", "split_seed", "test_carved", "mirror")},
        "metrics": {"val_acc": _number(winner.get("best_val_acc")), "val_f1": _number(winner.get("best_val_f1")),
                    **metrics, "test_images": len(data.test), "test_precision": "fp32"},
        "selection": {"experiment": settings.name, "trial_id": tested.row["trial_id"],
                      "val_acc": _number(winner.get("best_val_acc")),
                      "rule": "the trial with the highest validation accuracy of its model (never the test split)",
                      "folds": _folds(winner)},
        "training": {"stage": stage, "epochs": int(epochs), "trial_epochs": int(winner.get("epochs") or 0),
                     "train_images": int(train_images), "seed": int(tested.config.get("seed", settings.seed)),
                     "precision": winner.get("precision"), "device": winner.get("device"),
                     "pretrained": tested.config.get("pretrained")},
        "command": ["python", "-m", "search.run", *settings.argv],
        # a model of the user's own (--models-from): the file that defined it, loaded again by Bundle.load
        **({"origin": origin} if origin else {}),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _folds(winner: pd.Series) -> int:
    """How the winner was scored: 1 on the validation split, k by k-fold cross-validation (its val_acc the fold mean)."""
    folds = winner.get("folds")
    return 1 if folds is None or pd.isna(folds) else int(folds)


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


@dataclass
class Bundler:
    """``after`` for the finalists' test: refit (if asked), bundle (the cost to run is measured apart)."""

    settings: Settings
    data: Dataset
    runtime: Runtime
    say: Callable[[str], None] = lambda line: None

    def __call__(self, tested: WinnerTest) -> tuple[dict[str, Any], pd.DataFrame | None]:
        model, started = tested.row["model"], time.perf_counter()
        columns: dict[str, Any] = {"bundle": f"{MODELS_FOLDER}/{model}"}
        more = None
        try:
            classifier, stage, logits, metrics = tested.classifier, SEARCH_STAGE, tested.scored.logits, {
                k: tested.row[k] for k in ("test_acc", "test_f1", "test_loss")}
            epochs, train_images = tested.epoch, len(self.data.train)
            if self.settings.refit:
                self.say(f"  {model}: refit on {len(self.data.train) + len(self.data.val):,} training + validation "
                         f"images for {tested.epoch} epoch(s) ...")
                redone = refit(tested, self.data, self.runtime, self.settings.weights_dir)
                classifier, stage, more, logits = redone.classifier, REFIT_STAGE, redone.predictions, redone.logits
                columns.update(redone.columns)
                metrics = {k.removeprefix("refit_"): v for k, v in redone.columns.items() if k.startswith("refit_test")}
                train_images = redone.columns["refit_train_images"]
                self.say(f"  {model}: refit's test accuracy {metrics['test_acc']:.4f} "
                         f"({redone.columns['refit_train_s']:.1f} s of training)")
            # The test's logits are torch's side of the ONNX check when the test ran on the CPU (a GPU's
            # TF32 convolutions may differ from the CPU's by more than the check's tolerance).
            reference = logits if self.runtime.device.type == "cpu" else None
            columns.update(self.write(tested, classifier, stage, metrics, epochs, train_images, reference))
        except Exception as e:  # the winner's test figures are kept whatever happens to its bundle
            columns["bundle_error"] = f"{type(e).__name__}: {e}"
            self.say(f"  {model}: could not be bundled ({columns['bundle_error'][:200]})")
        columns["bundle_s"] = time.perf_counter() - started
        return columns, more

    def write(self, tested: WinnerTest, classifier: Classifier, stage: str, metrics: dict[str, Any], epochs: int,
              train_images: int, reference: np.ndarray | None) -> dict[str, Any]:
        """Write the bundle (its cost to run is measured apart: ``bundle_cost``); the finalists' columns."""
        model = tested.row["model"]
        folder = bundle_folder(self.settings.folder, model)
        written = write_bundle(folder, classifier,
                               card(tested, self.settings, self.data, self.runtime, stage, metrics, epochs, train_images),
                               self.data.test.images.numpy(), reference)
        onnx = written["onnx"]
        self.say(f"  {model}: bundled in {folder} ({stage}; ONNX "
                 + ("exported, checked on " + f"{onnx['parity']['images']:,} test images)" if onnx["exported"]
                    else f"not exported: {onnx['reason'][:120]})"))
        files = written["files"]
        return {"bundled": stage, "weights_mb": files["weights_mb"], "onnx_exported": onnx["exported"],
                "onnx_mb": files["onnx_mb"], "onnx_reason": onnx["reason"]}


def bundle_cost(folder: Path, device: torch.device, weights_dir: str | None = None,
                effort: cost.Effort = cost.FULL) -> tuple[dict[str, Any], str]:
    """Measure the cost to run of the bundle in ``folder`` as a user loads it, on ``device`` (as long as ``effort``
    says), record it in its card (``cost``), and return the finalists' ``cost_`` columns and a line saying it."""
    bundle = Bundle.load(folder, device, weights_dir)
    measured = cost.measure(bundle.classifier, bundle.channels, bundle.image_size, device, effort=effort)
    write_card({**bundle.card, "cost": dataclasses.asdict(measured)}, Path(folder))
    return measured.columns(), (f"  {bundle.card['model']}: runs in {measured.latency_ms:.2f} ms at batch 1, "
                                f"{measured.throughput_ips:,.0f} images/s at batch {measured.bulk_batch} "
                                f"({measured.device}, {measured.threads} threads)")


