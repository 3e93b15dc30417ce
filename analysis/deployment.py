"""What the bundled winners cost to run, and which one to deploy.

Reads the finalists' bundle and ``cost_`` columns (schema 6) and the bundled models' test predictions. The
recommendation is the fastest winner at batch 1 whose test accuracy is not significantly below the most
accurate one's, by McNemar's exact test on the same test images (``tables.mcnemar_exact``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.load import Results
from analysis.schema import REFIT_STAGE
from analysis.tables import SIGNIFICANCE, mcnemar_exact

COST_TABLE_COLUMNS = ["experiment", "model", "bundled", "test_acc", "test_f1", "latency_ms", "throughput_ips",
                      "bulk_batch", "peak_memory_mb", "weights_mb", "params", "onnx", "device", "threads"]


def bundled_metric(finalists: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` (``test_acc``, ``test_f1``) of the model each row bundled: its refit's where it was refit."""
    refit = finalists["bundled"].eq(REFIT_STAGE) if "bundled" in finalists else pd.Series(False, finalists.index)
    own = finalists[metric]
    return own.where(~refit, finalists.get(f"refit_{metric}", own))


def cost_table(results: Results) -> pd.DataFrame:
    """One row per bundled winner with its cost measured: accuracy of the bundled model, batch-1 latency,
    bulk throughput, peak memory, size, the ONNX export, and what it was measured on."""
    f = results.finalists
    if "cost_latency_ms" not in f or f["cost_latency_ms"].isna().all():
        return pd.DataFrame(columns=COST_TABLE_COLUMNS)
    f = f[f["cost_latency_ms"].notna()]
    table = pd.DataFrame({
        "experiment": f["experiment"], "model": f["model"], "bundled": f["bundled"],
        "test_acc": bundled_metric(f, "test_acc"), "test_f1": bundled_metric(f, "test_f1"),
        "latency_ms": f["cost_latency_ms"], "throughput_ips": f["cost_throughput_ips"],
        "bulk_batch": f["cost_bulk_batch"], "peak_memory_mb": f["cost_peak_memory_mb"], "weights_mb": f["weights_mb"],
        "params": f["params"], "onnx": f["onnx_exported"].map({True: "yes", False: "no"}),
        "device": f["cost_device"], "threads": f["cost_threads"]})
    return table.sort_values(["experiment", "latency_ms"], ignore_index=True)


@dataclass
class Recommendation:
    experiment: str
    model: str  # the fastest winner not significantly less accurate than the best
    best: str  # the most accurate winner on the test split
    acc: float
    best_acc: float
    p_value: float  # McNemar's exact test, recommended against best (1 when they are the same model)
    latency_ms: float
    best_latency_ms: float

    def sentence(self) -> str:
        if self.model == self.best:
            return (f"**{self.experiment}: deploy {self.model}**: it is both the most accurate winner on the test split "
                    f"({100 * self.acc:.2f}%) and the fastest among those not significantly less accurate "
                    f"({self.latency_ms:.2f} ms an image at batch 1).")
        return (f"**{self.experiment}: deploy {self.model}**: {100 * self.acc:.2f}% test accuracy against "
                f"{self.best}'s {100 * self.best_acc:.2f}%, not significantly lower (McNemar's exact test on the same "
                f"test images, p = {self.p_value:.3g}), and {self.best_latency_ms / self.latency_ms:.1f}x faster at "
                f"batch 1 ({self.latency_ms:.2f} against {self.best_latency_ms:.2f} ms).")


def recommend(results: Results, costs: pd.DataFrame) -> list[Recommendation]:
    """Per experiment: among the bundled winners, the fastest at batch 1 whose bundled model's test accuracy
    is not significantly below the most accurate one's (p >= ``SIGNIFICANCE``)."""
    predictions = results.bundled_predictions()
    out = []
    for experiment, group in costs.groupby("experiment", sort=True):
        best = group.loc[group["test_acc"].idxmax()]
        seen = predictions[predictions["experiment"] == experiment]
        correct = {m: rows.set_index("index").sort_index().eval("label == predicted") for m, rows in seen.groupby("model")}
        keep = []
        for row in group.itertuples():
            p = _p_value(correct, row.model, best["model"])
            if row.model == best["model"] or (not math.isnan(p) and p >= SIGNIFICANCE) or row.test_acc >= best["test_acc"]:
                keep.append((row.latency_ms, row.model, row.test_acc, 1.0 if row.model == best["model"] else p))
        latency, model, acc, p = min(keep)
        out.append(Recommendation(experiment, model, best["model"], acc, float(best["test_acc"]), p, latency,
                                  float(best["latency_ms"])))
    return out


def _p_value(correct: dict[str, pd.Series], a: str, b: str) -> float:
    """McNemar's exact p-value of ``a`` against ``b`` on the test images both predicted (NaN without them)."""
    if a == b:
        return 1.0
    if a not in correct or b not in correct:
        return math.nan
    both = correct[a].index.intersection(correct[b].index)
    return mcnemar_exact(correct[a].loc[both].to_numpy(bool), correct[b].loc[both].to_numpy(bool))[2]


def bundle_notes(results: Results) -> list[str]:
    """Per winner: where its bundle is and which model it holds, or why it has none or no ONNX graph."""
    f = results.finalists
    if "bundle" not in f:
        return []
    lines = []
    for row in f.itertuples():
        where = f"`{row.experiment}/{row.bundle}`" if isinstance(row.bundle, str) else "no bundle"
        if isinstance(getattr(row, "bundle_error", None), str):
            lines.append(f"- **{row.model}**: not bundled: {row.bundle_error}")
            continue
        held = ("refit on training + validation images for "
                f"{int(row.refit_epochs)} epochs (test accuracy {100 * row.refit_test_acc:.2f}%; the search's winner "
                f"itself {100 * row.test_acc:.2f}%)" if row.bundled == REFIT_STAGE else
                f"the search winner's best checkpoint (epoch {int(row.best_epoch)})")
        onnx = "ONNX exported and checked" if row.onnx_exported is True else f"no ONNX: {row.onnx_reason}"
        lines.append(f"- **{row.model}**: {where}, {held}; {onnx}")
    return lines

