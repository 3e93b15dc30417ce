"""``report.md``, its plots and its tables, written from the exported Parquet files alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.deployment import bundle_notes, cost_table, recommend
from analysis.efficiency import efficiency
from analysis.load import Results
from analysis.tables import (SIGNIFICANCE, at_common_budget, baseline_tests, best_so_far, class_balance, comparison,
                             confusion, importance, paired_tests, pareto_fronts, per_class, rank, seed_tests,
                             succeeded, winning_ranges)
from imagesets.atomic import staged_folder


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if value.is_integer():  # sizes and counts read back as floats when a column has gaps
            return f"{int(value)}"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (readable as plain text in a terminal too)."""
    header = [str(c).removeprefix("config.") for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


COMPARISON_COLUMNS = ["experiment", "model", "test_acc", "test_f1", "test_loss", "best_val_acc", "train_time_s",
                      "wall_clock_s", "params", "winner_budget", "trials", "stopped_early", "errors", "search_trial_s"]


def _overview(results: Results) -> list[str]:
    t = results.trials
    lines = ["# Search report", ""]
    for experiment, group in t.groupby("experiment"):
        devices = ", ".join(sorted(map(str, group["device"].dropna().unique()))) or "unknown"
        lines.append(f"- **{experiment}**: dataset {', '.join(group['dataset'].astype(str).unique())}, "
                     f"{len(group)} trials of {', '.join(sorted(group['model'].unique()))}, seed "
                     f"{', '.join(map(str, group['seed'].unique()))}, ran on {devices}")
    lines += ["", "Validation numbers come from the split the search optimized; test numbers from one evaluation "
              "of each model's winner on the test split.", *_selection(t), ""]
    return lines


def _selection(trials: pd.DataFrame) -> list[str]:
    """How each experiment scored its trials: on the validation split, or by k-fold cross-validation."""
    if "folds" not in trials or trials["folds"].isna().all():
        return []  # results written before schema 8
    lines = []
    for experiment, group in trials.groupby("experiment"):
        folds = int(group["folds"].dropna().max())
        se = group.loc[group["best_val_acc"].idxmax(), "best_val_acc_se"] if group["best_val_acc"].notna().any() else None
        where = (f"stratified {folds}-fold cross-validation over the training and validation images (the validation "
                 "split alone was too small to select on): `val_acc` is the mean over the folds"
                 if folds > 1 else "the validation split")
        lines.append(f"- **{experiment}** scored its trials on {where}"
                     + (f"; the best trial's standard error {100 * se:.2f} points" if se is not None and pd.notna(se) else ""))
    return ["", *lines]


def _data(results: Results, folder: Path) -> list[str]:
    """What each experiment trained and tested on, and how its classes are spread over the splits."""
    lines = []
    for experiment, record in sorted(results.datasets.items()):
        if not record:
            continue
        carved = ("test and validation splits carved" if record.get("test_carved")
                  else "validation split carved, the test split its own")
        lines.append(f"- **{experiment}**: {record['name']} ({record['source']}): {record['num_classes']} classes, "
                     f"{record['channels']}x{record['image_size']}x{record['image_size']} pixels, "
                     f"{record['sizes']['train']:,} train / {record['sizes']['val']:,} val / {record['sizes']['test']:,} "
                     f"test images ({carved}; stratified, split seed {record['split_seed']}); normalized per channel "
                     f"with mean {_floats(record['mean'])} and std {_floats(record['std'])} of the training split")
    balance = class_balance(results)
    if balance.empty:
        return []
    balance.to_csv(folder / "class_balance.csv", index=False)
    results.classes.to_csv(folder / "classes.csv", index=False)
    lines += ["", markdown_table(balance), "",
              "`imbalance`: images of the largest class over the smallest (1 is balanced; above about 3, macro F1, "
              "which weighs every class alike, says more than accuracy). Each class's count per split: `classes.csv`."]
    return ["## The data", "", *lines, ""]


def _floats(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _per_class(results: Results, folder: Path) -> list[str]:
    """Each tested winner's precision, recall and F1 per class, and its confusion matrix."""
    table = per_class(results)
    if table.empty:
        return []
    table.to_csv(folder / "per_class.csv", index=False)
    lines = ["## Per class (each winner on the test split)", "",
             "Precision, recall and F1 of every class (scikit-learn), the weakest classes first; every class is in "
             "`per_class.csv`. Each confusion matrix's rows are the true classes, scaled to their share.", ""]
    several = results.trials["experiment"].nunique() > 1
    for (experiment, model), group in table.groupby(["experiment", "model"]):
        title = f"{model} ({experiment})" if several else model
        worst = group.sort_values(["f1", "class"]).head(10)
        matrix, names = confusion(results, experiment, model)
        image = f"confusion_{model}{'_' + experiment if several else ''}.png"
        plots.confusion_plot(matrix, names, f"{title}: test split", folder / image)
        lines += [f"### {title}", "", markdown_table(worst[["class", "name", "precision", "recall", "f1", "support"]]),
                  "", f"![confusion matrix of {title}]({image})", ""]
    return lines


def _warnings(compare: pd.DataFrame, results: Results) -> list[str]:
    lines = []
    for row in compare.itertuples():
        if getattr(row, "winner_low_budget", False) is True:
            lines.append(f"- **{row.model}** ({row.experiment}): the winner was stopped early at "
                         f"{row.winner_budget} epochs; its configuration was never seen at the full budget.")
        if pd.isna(getattr(row, "test_acc", float("nan"))):
            lines.append(f"- **{row.model}** ({row.experiment}): no successful trial "
                         f"({row.errors} errors of {row.trials}); see the `error` column of trials.parquet.")
    return (["## Warnings", "", *lines, ""]) if lines else []


def _efficiency(results: Results, folder: Path) -> list[str]:
    """How full each search kept its slots (``analysis.efficiency`` defines every figure)."""
    table = efficiency(results.trials)
    table.to_csv(folder / "efficiency.csv", index=False)
    return ["## How full the machine was kept", "",
            markdown_table(table), "",
            "`slots`: trials the search admitted at once (what the CPUs/GPUs hold, or `--max-concurrent`); "
            "`mean_at_once`/`max_at_once`: trials running at once, setup included, over `span_s` (first trial's "
            "start to last report); `slot_share`: training passes' share of span x slots; `startup_s`: command "
            "start to the first batch any trial trained; `mean_gap_s`: a freed slot's wait until its next trial trains; "
            "`processes`/`reused`: worker processes, and trials that ran in a process another trial had used.", ""]


MCNEMAR_NOTE = ("McNemar's exact test on each pair of tested winners: the images one got right and the other wrong "
                "(`only_a_right`, `only_b_right`) would split like a fair coin if the two were equally accurate; "
                f"`p_value` is scipy's exact binomial test of that split, and `significant` marks p < {SIGNIFICANCE:g}. "
                "It is paired, so it sees more than the two accuracies alone; it says nothing of a winner's seed "
                "luck (one training run each).")
WELCH_NOTE = ("Welch's t-test on the test accuracies of each configuration's repeat runs (one run per seed, "
              "independent): it allows two architectures different spreads over seeds, and with a few runs each "
              f"it is the t distribution, not the normal, that fits; `significant` marks p < {SIGNIFICANCE:g}. "
              "This is the test for 'is this architecture better on this data', since it includes the luck of "
              "the seed.")


def _significance(results: Results, folder: Path) -> list[str]:
    """Whether each pair of winners differs by more than chance: on the same test images (McNemar),
    and over seeds where the search made repeats (Welch)."""
    parts = [(paired_tests(results.predictions), "significance.csv", "The winners on the same test images",
              MCNEMAR_NOTE),
             (seed_tests(results.repeats), "significance_seeds.csv",
              "The winners' configurations over seeds (--repeats)", WELCH_NOTE)]
    lines = []
    for table, name, title, note in parts:
        if not table.empty:
            table.to_csv(folder / name, index=False)
            lines += [f"### {title}", "", markdown_table(table), "", note, ""]
    return ["## Is the difference real?", "", *lines] if lines else []


COST_NOTE = ("`latency_ms`: median of 50 calls at batch 1 after 10 warm-up calls; `throughput_ips`: images a second at "
             "`bulk_batch`; `peak_memory_mb`: on a GPU, CUDA's maximum allocated during the bulk calls, on a CPU, the "
             "weights plus the resident-set growth during them; all measured on `device` with `threads` CPU threads, "
             "uint8 images in (normalization included), fp32, at the end of the search. `test_acc`/`test_f1` are the "
             "bundled model's (its refit's where `bundled` is refit).")


BASELINE_NOTE = ("scikit-learn on the raw pixels (scaled to [0, 1], each image averaged down to at most 32x32), each "
                 "model's small grid chosen as the search's trials were (on the validation split, or by the mean over "
                 "the search's own `folds` folds: `val_acc`), fitted on the training images (`refit`: on training + "
                 "validation, as the winners were), tested once on the winners' test images; `capped`: fitted on the "
                 "first `train_images` images only (an SVC's fit grows with the square of its images). Below, each "
                 "winner as bundled (its refit where it was refit) against the baseline best on validation "
                 "(McNemar's exact test on the same test images); `beats`: a higher accuracy and a significant gap.")


def _baseline(results: Results, folder: Path) -> list[str]:
    """The classical baselines beside the winners, and whether any searched model beats them."""
    if results.baselines.empty:
        return []
    shown = results.baselines.drop(columns=["seconds"], errors="ignore")
    tests = baseline_tests(results)
    tests.to_csv(folder / "baseline.csv", index=False)
    lines = ["## A classical baseline", "", markdown_table(shown), "", markdown_table(tests), "", BASELINE_NOTE, ""]
    for experiment, group in tests.groupby("experiment", sort=True):
        base = group.iloc[0]
        if not group["beats"].any():
            lines.append(f"**No searched model beats the classical baseline** in {experiment}: {base['baseline']} "
                         f"reached {base['baseline_acc']:.2%} test accuracy; the best winner "
                         f"{group['acc'].max():.2%}. A longer search, more data or another architecture is needed "
                         "before a searched network is worth its cost here.")
        else:
            beaten = ", ".join(f"{r.model} ({r.acc:.2%})" for r in group.itertuples() if r.beats)
            lines.append(f"In {experiment}, beating the classical baseline ({base['baseline']}, "
                         f"{base['baseline_acc']:.2%}) significantly: {beaten}.")
        lines.append("")
    return lines


def _deployment(results: Results, folder: Path) -> list[str]:
    """The bundles (where, which model, ONNX or why not), their cost to run, a plot and the recommendation."""
    notes = bundle_notes(results)
    if not notes:
        return []
    lines = ["## Using the winners", "", "Each winner is bundled (`models/<model>/`: safetensors weights, `card.json`, "
             "`model.onnx`); `python -m trainables.predict <results> IMAGES...` classifies new images with the best one.", "",
             *notes, ""]
    costs = cost_table(results)
    if len(costs):
        costs.to_csv(folder / "cost_to_run.csv", index=False)
        plots.cost_plot(costs, folder / "cost_to_run.png")
        lines += ["### What each costs to run", "", markdown_table(costs.drop(columns=["experiment"])
                                                                    if costs["experiment"].nunique() == 1 else costs),
                  "", COST_NOTE, "", "![test accuracy against latency](cost_to_run.png)", ""]
        lines += [r.sentence() for r in recommend(results, costs)] + [""]
    return lines


def write_report(results: Results, out: Path, metric: str = "val_acc", top_k: int = 5, pool: bool = False) -> Path:
    """Write ``report.md``, PNG plots and ranking tables (Parquet and CSV) into ``out``.

    Everything is written into a temporary folder first and then moved into place, so an
    interrupted run leaves the previous report, not half of a new one.
    """
    with staged_folder(Path(out)) as staging:
        _write(results, staging, metric, top_k, pool)
    return Path(out) / "report.md"


def _importances(results: Results) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Per model, importance for its validation accuracy at the largest epoch all its trials reached."""
    scores, budgets = {}, {}
    several = results.trials["experiment"].nunique() > 1
    for e, m in results.groups:
        trials, budget = at_common_budget(results.trials_of(e, m), results.epochs[results.epochs["experiment"] == e])
        series = importance(trials, target="val_acc_at_budget") if budget else pd.Series(dtype=float)
        if len(series):
            name = f"{m} ({e})" if several else m
            scores[name], budgets[name] = series, budget
    return scores, budgets


def _write(results: Results, folder: Path, metric: str, top_k: int, pool: bool = False) -> None:
    rankings = rank(results, metric, top_k)
    compare = comparison(results, metric)
    ok = succeeded(results.trials)
    curve = best_so_far(results)
    scores, budgets = _importances(results)

    lines = _overview(results)
    lines += _data(results, folder)
    lines += _warnings(compare, results)
    lines += _efficiency(results, folder)
    lines += ["## Comparison of the models (winners on the test split)", "",
              markdown_table(compare.reindex(columns=[c for c in COMPARISON_COLUMNS if c in compare])), "",
              "`search_trial_s`: the trials' wall clock added up (what the search of that model cost).", ""]
    compare.to_csv(folder / "comparison.csv", index=False)
    compare.to_parquet(folder / "comparison.parquet", index=False)
    lines += _significance(results, folder)
    lines += _baseline(results, folder)
    lines += _deployment(results, folder)
    lines += _per_class(results, folder)

    lines += [f"## Top {top_k} configurations per model (by {metric})", "",
              "Only hyperparameters that differ between a model's trials are shown. `low_budget` marks trials "
              "stopped early (by ASHA or the time budget): their numbers are from fewer epochs than the others'.", ""]
    all_ranks = []
    for (experiment, model), table in rankings.items():
        lines += [f"### {model} ({experiment})", "", markdown_table(table), ""]
        all_ranks.append(table.assign(experiment=experiment, model=model))
    if all_ranks:
        ranked = pd.concat(all_ranks, ignore_index=True)
        ranked.to_csv(folder / "rankings.csv", index=False)
        ranked.to_parquet(folder / "rankings.parquet", index=False)

    front_time = pareto_fronts(ok, "wall_clock_s", pool)
    front_params = pareto_fronts(ok, "params", pool)
    columns = ["experiment", "model", "trial_id", "status", "best_val_acc", "wall_clock_s", "params"]
    per = "over every experiment given (--pool-fronts)" if pool else "of each experiment (data set) on its own"
    lines += ["## Accuracy versus cost", "",
              f"Pareto front {per} (no other trial is both cheaper and more accurate) of validation accuracy "
              "versus a trial's wall clock:", "", markdown_table(front_time[columns]), "",
              "![accuracy versus wall clock](pareto_time.png)", "",
              "and versus the number of parameters:", "", markdown_table(front_params[columns]), "",
              "![accuracy versus parameters](pareto_params.png)", ""]
    pd.concat([front_time.assign(cost="wall_clock_s"), front_params.assign(cost="params")]).to_csv(
        folder / "pareto.csv", index=False)
    plots.pareto_plot(results, front_time, "wall_clock_s", "trial wall clock (s)", folder / "pareto_time.png")
    plots.pareto_plot(results, front_params, "params", "parameters", folder / "pareto_params.png", log_x=True)

    if rankings:
        plots.learning_curves(results, rankings, folder / "learning_curves.png")
        lines += ["## Learning curves of the top trials", "", "![learning curves](learning_curves.png)", ""]
    if len(curve):
        plots.best_so_far_plot(curve, folder / "best_so_far.png")
        reach = curve.groupby(["experiment", "model"])["best_val_acc"].max()
        lines += ["## Time to accuracy", "", "The search's best validation accuracy per model over the search's "
                  "own wall clock (from its first trial's start):", "", "![best so far](best_so_far.png)", ""]
        lines += [f"- {m} ({e}): {acc:.4f} reached at {_first_time(curve, e, m, acc):.0f} s" for (e, m), acc in reach.items()]
        lines.append("")

    lines += ["## What mattered", ""]
    if scores:
        plots.importance_plot(scores, folder / "importance.png")
        lines += ["Hyperparameter importance (random forest on the trials' configs, scikit-learn; shares sum to 1) "
                  "for each trial's validation accuracy at one budget: the largest epoch every trial of the model "
                  "reached (ASHA's first rung, usually), so that it explains accuracy rather than which trials "
                  "ASHA let run longer:", "", "![importance](importance.png)", ""]
        for name, series in scores.items():
            lines.append(f"- **{name}** (val_acc at epoch {budgets[name]}): "
                         + ", ".join(f"{p} {v:.2f}" for p, v in series.head(5).items()))
        lines.append("")
    else:
        lines += ["Too few successful trials per model (6 or more) to estimate importance.", ""]
    for experiment, model in results.groups:
        ranges = winning_ranges(results.trials_of(experiment, model))
        if len(ranges):
            lines += [f"Ranges of the best trials of **{model}** ({experiment}):", "", markdown_table(ranges), ""]
    (folder / "report.md").write_text("\n".join(lines))


def _first_time(curve: pd.DataFrame, experiment: str, model: str, acc: float) -> float:
    rows = curve[(curve["experiment"] == experiment) & (curve["model"] == model) & (curve["best_val_acc"] >= acc)]
    return float(rows["search_time_s"].min())
