"""The per-model leaderboard printed at the end of a search, from the exported tables alone."""

from __future__ import annotations

import textwrap

import pandas as pd

from analysis.efficiency import describe, efficiency
from analysis.schema import CONFIG_PREFIX, ERROR


def short_config(row: pd.Series) -> str:
    """``blocks=2 channels=16 lr=0.01 ...``: the row's hyperparameters, floats to 3 significant digits."""
    parts = []
    for column, value in row.items():
        if not str(column).startswith(CONFIG_PREFIX) or value is None or (isinstance(value, float) and pd.isna(value)):
            continue
        name = str(column)[len(CONFIG_PREFIX):]
        if name == "epochs":
            continue
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def repeat_summary(winner: pd.Series) -> str:
    """``repeats: 3 seeds, test_acc 0.9912 +- 0.0008 (95%: 0.9892-0.9932), test_f1 ...``"""
    parts = [f"repeats: {int(winner['repeats'])} seed{'s' if winner['repeats'] > 1 else ''},"]
    for metric in ("test_acc", "test_f1"):
        mean, std = winner[f"{metric}_mean"], winner[f"{metric}_std"]
        if pd.isna(std):
            parts.append(f"{metric} {mean:.4f}")
        else:
            parts.append(f"{metric} {mean:.4f} +- {std:.4f} (95%: {winner[f'{metric}_low']:.4f}-"
                         f"{winner[f'{metric}_high']:.4f})")
    return " ".join(parts)


def leaderboard(trials: pd.DataFrame, finalists: pd.DataFrame) -> str:
    """One block per model: its trial counts, and its winner's validation and test numbers; then
    how full the machine was kept (``analysis.efficiency``)."""
    lines = []
    header = f"{'model':<12} {'trials':>6} {'early':>5} {'error':>5} {'val_acc':>8} {'test_acc':>8} {'test_f1':>8} " \
             f"{'train_s':>8} {'wall_s':>8}"
    lines.append(header)
    lines.append("-" * len(header))
    by_model = finalists.set_index("model") if len(finalists) else pd.DataFrame()
    for model, group in trials.groupby("model", sort=True):
        counts = group["status"].value_counts()
        prefix = f"{model:<12} {len(group):>6} {counts.get('stopped_early', 0):>5} {counts.get('error', 0):>5}"
        if model not in by_model.index:
            tested = "winner not tested" if (group["status"] != ERROR).any() else "no finished trial"
            lines.append(f"{prefix} {tested:>44}")
            continue
        w = by_model.loc[model]
        lines.append(f"{prefix} {w['best_val_acc']:>8.4f} {w['test_acc']:>8.4f} {w['test_f1']:>8.4f} "
                     f"{w['train_time_s']:>8.1f} {w['wall_clock_s']:>8.1f}")
        lines += textwrap.wrap(short_config(w), width=len(header), initial_indent=" " * 13 + "best: ",
                               subsequent_indent=" " * 19)
        if w.get("repeats", 0) > 0:
            lines += textwrap.wrap(repeat_summary(w), width=len(header), initial_indent=" " * 13,
                                   subsequent_indent=" " * 22)
    if len(trials):
        lines += [""] + textwrap.wrap(describe(efficiency(trials).iloc[0]), width=len(header),
                                      subsequent_indent=" " * 12)
    return "\n".join(lines)
