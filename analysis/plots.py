"""PNG plots of the report (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on servers and in CI without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import Results  # noqa: E402
from analysis.schema import STOPPED_EARLY, succeeded  # noqa: E402


def _label(experiment: str, model: str, several: bool) -> str:
    return f"{model} ({experiment})" if several else model


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_plot(results: Results, fronts: pd.DataFrame, cost: str, xlabel: str, path: Path,
                log_x: bool = False) -> Path:
    """Every successful trial by model, early-stopped ones hollow, and each Pareto front (``fronts``,
    from ``tables.pareto_fronts``) as a line."""
    trials = succeeded(results.trials)
    several = trials["experiment"].nunique() > 1
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (experiment, model), group in trials.groupby(["experiment", "model"]):
        full = group[group["status"] != STOPPED_EARLY]
        early = group[group["status"] == STOPPED_EARLY]
        points = ax.scatter(full[cost], full["best_val_acc"], label=_label(experiment, model, several), s=28)
        ax.scatter(early[cost], early["best_val_acc"], facecolors="none", edgecolors=points.get_facecolor(), s=28)
    for name, front in fronts.groupby("front", sort=True):
        label = "Pareto front" + (f" ({name})" if fronts["front"].nunique() > 1 else "")
        ax.step(front[cost], front["best_val_acc"], where="post", lw=1, label=label,
                color="black" if fronts["front"].nunique() == 1 else None, linestyle="--")
    ax.set_xlabel(xlabel + (" (log)" if log_x else ""))
    ax.set_ylabel("best validation accuracy")
    if log_x:
        ax.set_xscale("log")
    ax.set_title("accuracy versus cost (hollow: stopped early)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves(results: Results, rankings: dict, path: Path) -> Path:
    """Validation accuracy per epoch of each model's top-ranked trials."""
    groups = [g for g in results.groups if g in rankings]
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4 * max(len(groups), 1), 3.5), squeeze=False)
    for ax, (experiment, model) in zip(axes[0], groups):
        top = rankings[(experiment, model)]["trial_id"].tolist()
        epochs = results.epochs[(results.epochs["experiment"] == experiment) & results.epochs["trial_id"].isin(top)]
        for trial_id in top:
            curve = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
            ax.plot(curve["epoch"], curve["val_acc"], marker="o", ms=3, label=trial_id)
        ax.set_title(_label(experiment, model, len({g[0] for g in groups}) > 1), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("validation accuracy")
        ax.legend(fontsize=7)
    return _save(fig, path)


def best_so_far_plot(curve: pd.DataFrame, path: Path) -> Path:
    """The search's best validation accuracy per model over the search's wall clock."""
    fig, ax = plt.subplots(figsize=(7, 4))
    several = curve["experiment"].nunique() > 1
    for (experiment, model), group in curve.groupby(["experiment", "model"]):
        ax.step(group["search_time_s"], group["best_val_acc"], where="post", label=_label(experiment, model, several))
    ax.set_xlabel("search wall clock (s)")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title("time to accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def importance_plot(scores: dict[str, pd.Series], path: Path) -> Path:
    """Horizontal bars of hyperparameter importance, one panel per model."""
    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 3.5), squeeze=False)
    for ax, (name, series) in zip(axes[0], scores.items()):
        series.sort_values().plot.barh(ax=ax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("importance (share)")
    return _save(fig, path)


def confusion_plot(matrix, names: list[str], title: str, path: Path) -> Path:
    """A confusion matrix with class names on both axes, each row scaled to the share of its true
    class (so a small class reads as clearly as a large one), counts written in where they fit."""
    import numpy as np

    k = len(names)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(max(4.5, 0.45 * k + 2), 24)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    step = max(1, k // 40)  # at most about 40 names per axis stay legible
    ticks = list(range(0, k, step))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90 if k > 10 else 45, ha="right" if k <= 10 else "center")
    ax.set_yticks(ticks, [names[i] for i in ticks])
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _save(fig, path)


def cost_plot(costs: pd.DataFrame, path: Path) -> Path:
    """Each bundled winner's test accuracy against its latency at batch 1 (log scale), labelled by model."""
    several = costs["experiment"].nunique() > 1
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in costs.itertuples():
        ax.scatter(row.latency_ms, row.test_acc, s=36)
        ax.annotate(_label(row.experiment, row.model, several), (row.latency_ms, row.test_acc),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency at batch 1 (ms, log)")
    ax.set_ylabel("test accuracy (bundled model)")
    ax.set_title("accuracy versus cost to run")
    return _save(fig, path)
