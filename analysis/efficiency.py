"""How much of a search's machine time went to training, from the exported tables alone.

Every trial row says when its process began it, when training began (after data placement and model
build), when it last reported, which process ran it, and how many trials the search admitted at once
(``slots``); ``search_started_at`` is when the command started. From these:

- ``mean_at_once`` / ``max_at_once``: trials running at once (setup included), time-weighted over the
  span from the first trial's start to the last trial's last report;
- ``slot_share``: ``sum(train_time_s) / (span x slots)``, the share of slot-time spent in training
  passes (evaluation, setup, process starts and idle slots are the rest);
- ``startup_s``: from the command's start (its process's) to the first batch any trial trained: the
  search's fixed cost (imports, Ray's start, the first worker processes, data placement); after
  ``--resume`` the resuming command's (the other figures then span both runs);
- ``mean_gap_s``: the mean time between a slot freeing (a trial's last report) and the next trial
  training in it (slots are handed to trials in order of their start, earliest-freed first; with
  models of different sizes in one search a slot is an approximation);
- ``processes`` / ``reused``: worker processes that ran trials, and trials that ran in a process
  an earlier trial had used;
- ``tail_s``: from the last trial's start to the last trial's last report, the search's tail, when fewer
  and fewer slots have a trial to run (the search starts the longest trials first to keep it short).

Pure pandas: no torch, no Ray.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

COLUMNS = ["experiment", "trials", "slots", "span_s", "mean_at_once", "max_at_once", "slot_share", "startup_s",
           "mean_gap_s", "processes", "reused", "tail_s"]
_NEEDED = ("train_started_at", "setup_s", "ended_at", "slots")


def efficiency(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment with the figures above; experiments exported before these columns
    existed (results schema < 3) get a row of gaps."""
    rows = [{"experiment": experiment, "trials": len(group), **_one(group)}
            for experiment, group in trials.groupby("experiment", sort=True)]
    return pd.DataFrame(rows, columns=COLUMNS)


def _one(trials: pd.DataFrame) -> dict[str, float | int | None]:
    if any(c not in trials for c in _NEEDED):
        return {}
    ran = trials.dropna(subset=["train_started_at", "setup_s", "ended_at"])
    if ran.empty:
        return {}
    begin = (ran["train_started_at"] - ran["setup_s"]).to_numpy(float)
    train_begin = ran["train_started_at"].to_numpy(float)
    end = ran["ended_at"].to_numpy(float)
    slots = int(ran["slots"].max())
    span = float(end.max() - begin.min())
    mean_at_once, max_at_once = _at_once(begin, end)
    search_start = trials["search_started_at"].max() if "search_started_at" in trials else np.nan
    # After --resume, trials that trained before the resuming command started belong to the
    # interrupted run and say nothing of this command's start-up.
    after = train_begin[train_begin >= search_start] if pd.notna(search_start) else train_begin
    first = after.min() if len(after) else np.nan
    processes = ran["process"].dropna()
    return dict(
        slots=slots, span_s=span, mean_at_once=mean_at_once, max_at_once=max_at_once,
        slot_share=float(ran["train_time_s"].sum() / (span * slots)) if span > 0 and slots else None,
        startup_s=float(first - search_start) if pd.notna(search_start) and pd.notna(first) else None,
        mean_gap_s=_mean_gap(begin, train_begin, end, slots),
        processes=int(processes.nunique()),
        reused=int((ran["trial_in_process"].fillna(1) > 1).sum()) if "trial_in_process" in ran else 0,
        tail_s=float(end.max() - begin.max()),
    )


def _at_once(begin: np.ndarray, end: np.ndarray) -> tuple[float, int]:
    """Time-weighted mean and maximum of the number of intervals [begin, end) open at once."""
    times = np.concatenate([begin, end])
    steps = np.concatenate([np.ones(len(begin)), -np.ones(len(end))])
    order = np.lexsort((steps, times))  # at equal times an end (-1) comes before a start (+1)
    times, running = times[order], np.cumsum(steps[order])
    span = times[-1] - times[0]
    if span <= 0:
        return float(len(begin)), int(len(begin))
    mean = float(np.sum(running[:-1] * np.diff(times)) / span)
    return mean, int(running.max())


def _mean_gap(begin: np.ndarray, train_begin: np.ndarray, end: np.ndarray, slots: int) -> float | None:
    """Mean seconds a slot freed by a trial waited until the next trial trained in it."""
    free: list[tuple[float, bool]] = [(-np.inf, True)] * max(slots, 1)  # (free since, never used)
    gaps = []
    for i in np.argsort(begin, kind="stable"):
        since, initial = heapq.heappop(free)
        if not initial:
            gaps.append(max(0.0, train_begin[i] - since))
        heapq.heappush(free, (end[i], False))
    return float(np.mean(gaps)) if gaps else None


def describe(row: pd.Series) -> str:
    """One line for the leaderboard: ``4 slots: 3.6 trials at once (max 4), 83% of slot-time training, ...``."""
    if pd.isna(row.get("slots")):
        return "efficiency: not recorded (results exported before schema 3)"
    parts = [f"{int(row['slots'])} slots: {row['mean_at_once']:.1f} trials at once (max {int(row['max_at_once'])})"]
    if pd.notna(row.get("slot_share")):
        parts.append(f"{row['slot_share']:.0%} of slot-time training")
    if pd.notna(row.get("startup_s")):
        parts.append(f"training began {row['startup_s']:.1f} s after the command started")
    if pd.notna(row.get("mean_gap_s")):
        parts.append(f"{row['mean_gap_s']:.1f} s from a slot freeing to its next trial training")
    parts.append(f"{int(row['processes'])} processes for {int(row['trials'])} trials")
    if pd.notna(row.get("tail_s")):
        parts.append(f"{row['tail_s']:.1f} s from the last trial's start to the search's end")
    return "efficiency: " + ", ".join(parts)
