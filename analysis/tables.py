"""The numbers of the report: rankings, the cross-model comparison, Pareto fronts, the search's
best-so-far curve, hyperparameter importance and the ranges that won. Pure pandas/scikit-learn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from analysis.load import Results
from analysis.schema import CONFIG_PREFIX, ERROR, STOPPED_EARLY, succeeded

# metric name on the command line -> (column, higher is better)
METRICS = {
    "val_acc": ("best_val_acc", True),
    "val_f1": ("best_val_f1", True),
    "test_acc": ("test_acc", True),
    "wall_clock": ("wall_clock_s", False),
}
SHOWN = ["trial_id", "status", "budget", "best_val_acc", "best_val_f1", "best_val_loss", "train_time_s",
         "wall_clock_s", "params"]


def differing_params(trials: pd.DataFrame) -> list[str]:
    """Config columns whose value is not the same in every trial: the only ones worth showing."""
    cols = [c for c in trials.columns if c.startswith(CONFIG_PREFIX) and c != f"{CONFIG_PREFIX}epochs"]
    return [c for c in cols if trials[c].dropna().astype(str).nunique() > 1]


def with_budget(trials: pd.DataFrame) -> pd.DataFrame:
    """Adds ``budget`` ('2/3 epochs') and ``low_budget`` (True where ASHA or the time budget stopped
    the trial before its full budget: its numbers were never seen at the budget of the others)."""
    planned = trials.get(f"{CONFIG_PREFIX}epochs", pd.Series(np.nan, index=trials.index))
    budget = [f"{int(e)}/{int(p)}" if pd.notna(p) else f"{int(e)}" for e, p in zip(trials["epochs"], planned)]
    return trials.assign(budget=budget, low_budget=trials["status"] == STOPPED_EARLY)


def rank(results: Results, metric: str = "val_acc", top_k: int = 5) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (experiment, model), the top-k trials by ``metric`` with the hyperparameters that differ.

    ``test_acc`` exists only for finalists, so it ranks per model by ``val_acc`` (the selection
    criterion) and the comparison table carries the test numbers.
    """
    column, higher = METRICS["val_acc" if metric == "test_acc" else metric]
    out = {}
    for experiment, model in results.groups:
        trials = with_budget(succeeded(results.trials_of(experiment, model)))
        if trials.empty:
            continue
        ordered = trials.sort_values([column, "wall_clock_s"], ascending=[not higher, True]).head(top_k)
        table = ordered[SHOWN + ["low_budget"] + differing_params(trials)].reset_index(drop=True)
        table.insert(0, "rank", range(1, len(table) + 1))
        out[(experiment, model)] = table
    return out


def comparison(results: Results, metric: str = "test_acc") -> pd.DataFrame:
    """One row per (experiment, model): the finalist's test numbers, its cost, and the search's.

    In the spirit of the lab's table (accuracy, F1, loss, training time per architecture), but from
    the winners' single test evaluation, with the search's total cost beside them.
    """
    rows = []
    finalists = results.finalists.set_index(["experiment", "model"]) if len(results.finalists) else None
    for experiment, model in results.groups:
        trials = results.trials_of(experiment, model)
        counts = trials["status"].value_counts()
        row = dict(experiment=experiment, model=model, trials=len(trials),
                   stopped_early=int(counts.get(STOPPED_EARLY, 0)), errors=int(counts.get(ERROR, 0)),
                   search_trial_s=float(trials["wall_clock_s"].sum(skipna=True)))
        if finalists is not None and (experiment, model) in finalists.index:
            f = finalists.loc[(experiment, model)]
            winner = trials[trials["trial_id"] == f["trial_id"]]
            row.update(trial_id=f["trial_id"], test_acc=f["test_acc"], test_f1=f["test_f1"], test_loss=f["test_loss"],
                       best_val_acc=f["best_val_acc"], train_time_s=f["train_time_s"], wall_clock_s=f["wall_clock_s"],
                       params=f["params"], winner_budget=with_budget(winner)["budget"].iloc[0] if len(winner) else None,
                       winner_low_budget=bool(len(winner) and winner["status"].iloc[0] == STOPPED_EARLY))
        rows.append(row)
    table = pd.DataFrame(rows)
    column, higher = METRICS.get(metric, METRICS["test_acc"])
    if column in table:
        table = table.sort_values(column, ascending=not higher, na_position="last")
    return table.reset_index(drop=True)


def pareto_front(points: pd.DataFrame, cost: str, value: str = "best_val_acc") -> pd.DataFrame:
    """Rows not dominated by any other: no other row is at most as costly and at least as good,
    and strictly better in one. Sorted by cost, so accuracy rises along the front."""
    data = points.dropna(subset=[cost, value]).sort_values([cost, value], ascending=[True, False])
    front, best = [], -np.inf
    for index, row in data.iterrows():
        if row[value] > best:
            front.append(index)
            best = row[value]
    return data.loc[front]


def pareto_fronts(points: pd.DataFrame, cost: str, pool: bool = False) -> pd.DataFrame:
    """The Pareto front of each experiment (a search on MNIST is not compared with one on Fashion-MNIST),
    or, with ``pool``, one front over them all; ``front`` names which front a row belongs to."""
    if pool or points.empty:
        return pareto_front(points, cost).assign(front="all experiments")
    return pd.concat([pareto_front(group, cost).assign(front=experiment)
                      for experiment, group in points.groupby("experiment", sort=True)])


def at_common_budget(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, int | None]:
    """One model's successful trials with ``val_acc_at_budget``: each trial's validation accuracy at
    the largest epoch every one of them reached (the first ASHA rung, usually), so that trials are
    compared at the same budget and not by how long ASHA let them run. Returns that epoch too."""
    ok = succeeded(trials)
    if ok.empty or epochs.empty:
        return ok.iloc[0:0], None
    budget = int(ok["epochs"].min())
    at = epochs[(epochs["epoch"] == budget) & epochs["trial_id"].isin(ok["trial_id"])]
    if "experiment" in at and "experiment" in ok:
        at = at[at["experiment"].isin(ok["experiment"])]
    values = at.drop_duplicates("trial_id", keep="last").set_index("trial_id")["val_acc"]
    return ok.assign(val_acc_at_budget=ok["trial_id"].map(values)).dropna(subset=["val_acc_at_budget"]), budget


def best_so_far(results: Results) -> pd.DataFrame:
    """The search's best validation accuracy per model over the search's own wall clock.

    Time is measured from the experiment's first trial start (``started_at``), so models searched
    in the same experiment share one clock: this is what time-to-accuracy means for a search.
    """
    epochs = results.epochs.merge(results.trials[["experiment", "trial_id", "started_at"]],
                                  on=["experiment", "trial_id"], how="left")
    if "reported_at" not in epochs or epochs["reported_at"].isna().all():
        return pd.DataFrame(columns=["experiment", "model", "search_time_s", "best_val_acc"])
    start = results.trials.groupby("experiment")["started_at"].min()
    epochs = epochs.dropna(subset=["reported_at"]).assign(
        search_time_s=lambda e: e["reported_at"] - e["experiment"].map(start))
    epochs = epochs.sort_values("search_time_s")
    epochs["best_val_acc"] = epochs.groupby(["experiment", "model"])["val_acc"].cummax()
    return epochs[["experiment", "model", "search_time_s", "best_val_acc", "trial_id"]].reset_index(drop=True)


def importance(trials: pd.DataFrame, target: str = "best_val_acc", min_trials: int = 6) -> pd.Series:
    """How much each hyperparameter explains ``target`` across one model's trials.

    A random forest on the configs (categorical values one-hot encoded, missing conditional values
    as their own category), with each parameter's impurity importance summed over its encoded
    columns and normalized to 1. Too few trials, or nothing varied, gives an empty series.
    """
    from sklearn.ensemble import RandomForestRegressor

    ok = succeeded(trials)
    params = differing_params(ok)
    if len(ok) < min_trials or not params:
        return pd.Series(dtype=float)
    features, owners = [], []
    for p in params:
        column = ok[p]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            features.append(column.astype(float).fillna(column.astype(float).median()).rename(p))
            owners.append(p)
        else:
            encoded = pd.get_dummies(column.astype(str), prefix=p).astype(float)
            features += [encoded[c] for c in encoded]
            owners += [p] * encoded.shape[1]
    X = pd.concat(features, axis=1).to_numpy()
    forest = RandomForestRegressor(n_estimators=200, random_state=0, min_samples_leaf=1)
    forest.fit(X, ok[target].to_numpy())
    scores = pd.Series(forest.feature_importances_, index=owners).groupby(level=0).sum()
    total = scores.sum()
    scores = scores / total if total > 0 else scores
    scores.index = [i[len(CONFIG_PREFIX):] for i in scores.index]
    return scores.sort_values(ascending=False)


def winning_ranges(trials: pd.DataFrame, top_fraction: float = 0.25, min_top: int = 2) -> pd.DataFrame:
    """For one model, the values the best trials (top quarter by ``best_val_acc``, at least two)
    used: a range for continuous settings, else the values seen with their counts."""
    ok = succeeded(trials).sort_values("best_val_acc", ascending=False)
    params = differing_params(ok)
    top = ok.head(max(min_top, int(np.ceil(len(ok) * top_fraction))))
    rows = []
    for p in params:
        values = top[p].dropna()
        if values.empty:
            continue
        if pd.api.types.is_float_dtype(values):  # continuous: a range; ints (sizes, counts) read better as values
            shown = f"{values.min():.3g} to {values.max():.3g}"
        else:
            shown = ", ".join(f"{v} ({n})" for v, n in values.astype(str).value_counts().items())
        rows.append(dict(parameter=p[len(CONFIG_PREFIX):], winning=shown, top_trials=len(top)))
    return pd.DataFrame(rows, columns=["parameter", "winning", "top_trials"])


SIGNIFICANCE = 0.05


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test of two classifiers on the same images: (images only ``a`` got right,
    images only ``b`` got right, two-sided p-value). Under "equally accurate" each image one gets
    right and the other wrong is a fair coin's toss, so the p-value is scipy's exact binomial test
    of the first count among the discordant images."""
    from scipy.stats import binomtest

    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(b_correct & ~a_correct))
    if a_only + b_only == 0:
        return 0, 0, 1.0
    return a_only, b_only, float(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def paired_tests(predictions: pd.DataFrame) -> pd.DataFrame:
    """Every pair of models tested in the same experiment, compared on the test images both saw:
    accuracies, the discordant counts, McNemar's exact p-value and whether the gap is significant
    at ``SIGNIFICANCE``."""
    rows = []
    for experiment, group in predictions.groupby("experiment", sort=True):
        correct = {model: rows_.set_index("index").sort_index().eval("label == predicted")
                   for model, rows_ in group.groupby("model", sort=True)}
        for a, b in itertools.combinations(sorted(correct), 2):
            both = correct[a].index.intersection(correct[b].index)
            ca, cb = correct[a].loc[both].to_numpy(bool), correct[b].loc[both].to_numpy(bool)
            a_only, b_only, p = mcnemar_exact(ca, cb)
            rows.append(dict(experiment=experiment, model_a=a, model_b=b, images=len(both),
                             acc_a=ca.mean(), acc_b=cb.mean(), gap=ca.mean() - cb.mean(),
                             only_a_right=a_only, only_b_right=b_only, p_value=p, significant=p < SIGNIFICANCE))
    return pd.DataFrame(rows, columns=["experiment", "model_a", "model_b", "images", "acc_a", "acc_b", "gap",
                                       "only_a_right", "only_b_right", "p_value", "significant"])


def baseline_tests(results: Results) -> pd.DataFrame:
    """Each winner, as bundled (its refit where it was refit: the model a user takes home), against its
    experiment's classical baseline (the one best on validation), on the test images both saw: accuracies,
    discordant counts, McNemar's exact p-value, and whether the winner ``beats`` it (a higher accuracy and a
    significant gap)."""
    rows, bundled = [], results.bundled_predictions()
    for experiment, group in results.baselines.groupby("experiment", sort=True):
        best = group.loc[group["val_acc"].astype(float).idxmax()]
        of = results.baseline_predictions
        base = of[(of["experiment"] == experiment) & (of["model"] == best["model"])].set_index("index").sort_index()
        winners = bundled[bundled["experiment"] == experiment]
        for model, own in winners.groupby("model", sort=True):
            own = own.set_index("index").sort_index()
            both = own.index.intersection(base.index)
            cw = own.loc[both].eval("label == predicted").to_numpy(bool)
            cb = base.loc[both].eval("label == predicted").to_numpy(bool)
            w_only, b_only, p = mcnemar_exact(cw, cb)
            rows.append(dict(experiment=experiment, model=model, baseline=best["model"], images=len(both),
                             acc=cw.mean(), baseline_acc=cb.mean(), gap=cw.mean() - cb.mean(), only_model_right=w_only,
                             only_baseline_right=b_only, p_value=p, beats=bool(cw.mean() > cb.mean() and p < SIGNIFICANCE)))
    return pd.DataFrame(rows, columns=["experiment", "model", "baseline", "images", "acc", "baseline_acc", "gap",
                                       "only_model_right", "only_baseline_right", "p_value", "beats"])


def seed_tests(repeats: pd.DataFrame) -> pd.DataFrame:
    """Every pair of models with repeat runs in the same experiment: their per-seed test accuracies
    compared with Welch's t-test (scipy), which allows the two architectures different spreads over
    seeds; ``significant`` at ``SIGNIFICANCE``. Pairs with fewer than two runs on a side are left out."""
    from scipy.stats import ttest_ind

    rows = []
    for experiment, group in repeats.groupby("experiment", sort=True):
        runs = {model: g["test_acc"].to_numpy(float) for model, g in group.groupby("model", sort=True)}
        for a, b in itertools.combinations([m for m in sorted(runs) if len(runs[m]) >= 2], 2):
            p = float(ttest_ind(runs[a], runs[b], equal_var=False).pvalue)
            p = 1.0 if math.isnan(p) else p  # identical constant runs: no evidence of a difference
            rows.append(dict(experiment=experiment, model_a=a, model_b=b, runs_a=len(runs[a]), runs_b=len(runs[b]),
                             mean_a=runs[a].mean(), mean_b=runs[b].mean(), gap=runs[a].mean() - runs[b].mean(),
                             p_value=p, significant=p < SIGNIFICANCE))
    return pd.DataFrame(rows, columns=["experiment", "model_a", "model_b", "runs_a", "runs_b", "mean_a", "mean_b",
                                       "gap", "p_value", "significant"])


def _classes(results: Results, experiment: str, predictions: pd.DataFrame) -> tuple[list[int], list[str]]:
    """The experiment's class labels and names (from classes.parquet); for results written before it,
    the labels the predictions hold, named by their index."""
    rows = results.classes[results.classes["experiment"] == experiment].sort_values("class")
    if len(rows):
        return rows["class"].astype(int).tolist(), rows["name"].astype(str).tolist()
    labels = list(range(int(max(predictions["label"].max(), predictions["predicted"].max())) + 1))
    return labels, [str(c) for c in labels]


def per_class(results: Results) -> pd.DataFrame:
    """Each tested winner's precision, recall and F1 per class on the test split (scikit-learn),
    with the class's name and its number of test images (``support``)."""
    from sklearn.metrics import precision_recall_fscore_support

    frames = []
    for (experiment, model), group in results.predictions.groupby(["experiment", "model"]):
        labels, names = _classes(results, experiment, group)
        precision, recall, f1, support = precision_recall_fscore_support(
            group["label"], group["predicted"], labels=labels, zero_division=0)
        frames.append(pd.DataFrame(dict(experiment=experiment, model=model, **{"class": labels}, name=names,
                                        precision=precision, recall=recall, f1=f1, support=support)))
    columns = ["experiment", "model", "class", "name", "precision", "recall", "f1", "support"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def confusion(results: Results, experiment: str, model: str) -> tuple[np.ndarray, list[str]]:
    """The winner's confusion matrix on the test split (rows: true class, columns: predicted) and the
    class names, from scikit-learn."""
    from sklearn.metrics import confusion_matrix

    p = results.predictions
    group = p[(p["experiment"] == experiment) & (p["model"] == model)]
    labels, names = _classes(results, experiment, group)
    return confusion_matrix(group["label"], group["predicted"], labels=labels), names


def class_balance(results: Results) -> pd.DataFrame:
    """Per experiment and split: images, classes, and the largest class over the smallest (1 is
    balanced), so an imbalanced data set is visible at a glance."""
    rows = []
    for experiment, group in results.classes.groupby("experiment"):
        for split in ("train", "val", "test"):
            counts = group[split].astype(int)
            rows.append(dict(experiment=experiment, split=split, images=int(counts.sum()), classes=len(counts),
                             smallest=int(counts.min()), largest=int(counts.max()),
                             imbalance=float(counts.max() / counts.min()) if counts.min() > 0 else math.inf))
    return pd.DataFrame(rows)
