"""A table of learning curves: random configurations of a model's space, each trained to a generous maximum of
epochs, its validation accuracy and seconds recorded after every epoch (a benchmark's data, not a test).

    SEARCH_DATA_DIR=../shared/data python benchmarks/learning_curves.py [--configs 200] [--epochs 9]
        [--model cnn] [--dataset fashion_mnist] [--train-size 5000] [--workers 2] [--seed 0]
        [--out benchmarks/results/learning_curves_cnn.parquet]

The configurations are the ones the search would sample: the model's registered default first (every study's
first trial), then draws of Optuna's random sampler from the model's space as the search plans it for this data
(``search.command.space.plan_space``: the same constraints). Each trains on the search's own splits of
``--dataset`` at ``--train-size`` (the training images a fixed subset, the validation split the search's 5,000),
at the search's seed 0, for ``--epochs`` epochs under its own schedule planned over those epochs, without
restarts at any rung: one table replays every ASHA setting (``benchmarks/asha_replay.py``). ``--workers``
processes train side by side, one thread each, as a search's trials do on this many cores.

The table has one row per configuration and epoch: ``config_id``, ``epoch``, ``val_acc``, ``val_loss``,
``val_f1``, ``train_loss``, ``seconds`` (the epoch's wall clock, training and validation), ``train_seconds``, and
``config.<name>`` for every setting trained. Its ``attrs`` say how it was made. Finished configurations are kept
in ``<out>.partial.jsonl`` (not committed) as they end, so an interrupted run, or a later one asking for more
configurations with the same settings, continues where it stopped; the Parquet file is written whole at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (benchmarks/machine.py: a script's folder is on its path)

TABLE_VERSION = 1


def search_plan(model: str, epochs: int, dataset: str, train_size: int, shape, val_images: int, full_train: int):
    """The plan ``python -m search.run --model MODEL --max-epochs EPOCHS --dataset ... --train-size ...`` makes for
    data of ``shape``: its space and default, as the search would sample them."""
    from search.command.parser import build_parser
    from search.command.plan import plan
    from search.command.settings import ask

    flags = ["--model", model, "--max-epochs", str(epochs), "--gpus", "0", "--dataset", dataset,
             "--train-size", str(train_size)]
    return plan(ask(build_parser().parse_args(flags)), shape, val_images, full_train).plans[0]


def sampled_configs(plan, count: int, seed: int) -> list[dict]:
    """The plan's default, then ``count - 1`` random draws of its space (``search.command.space.plan_space``), each a
    complete flat configuration trained for the plan's epochs without restarts, at the search's seed 0."""
    import optuna

    from models.config import params_to_config
    from search.command.space import default_params, plan_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = [params_to_config(default_params(plan))]
    while len(configs) < count:
        trial = study.ask()
        constants = plan_space(plan, trial)  # suggests first: trial.params then holds the draw
        configs.append({**params_to_config(trial.params), **constants})
    return [{**c, "model": plan.name, "epochs": plan.max_epochs, "restarts": "", "seed": 0} for c in configs]


def train_curve(job: tuple[int, dict, dict]) -> dict:
    """One configuration trained in this worker process: its per-epoch rows."""
    config_id, config, data_args = job
    import torch

    import models
    from trainables.data import load_dataset
    from trainables.loop import fit, prepare
    from trainables.runtime import Runtime

    torch.set_num_threads(1)
    global _DATA
    if "_DATA" not in globals():  # once a worker process: the splits are memory maps of the cache's files
        _DATA = load_dataset(**data_args)
    torch.manual_seed(config["seed"])
    spec = models.get(config["model"])
    runtime = Runtime(torch.device("cpu")).for_model(spec)
    prepared = prepare(config["model"], config, _DATA.train, runtime, _DATA.info.shape)
    rows, last = [], time.perf_counter()
    for metrics in fit(prepared, _DATA.train, _DATA.val, runtime, seed=config["seed"]):
        now = time.perf_counter()
        rows.append({"config_id": config_id, "epoch": int(metrics["epoch"]), "val_acc": metrics["val_acc"],
                     "val_loss": metrics["val_loss"], "val_f1": metrics["val_f1"], "train_loss": metrics["train_loss"],
                     "seconds": now - last, "train_seconds": metrics["epoch_time_s"]})
        last = now
    return {"config_id": config_id, "config": config, "rows": rows}


def finished(partial: Path) -> dict[int, dict]:
    """The configurations an earlier run finished (its complete lines; a line cut by a kill is dropped)."""
    done = {}
    if partial.is_file():
        for line in partial.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[int(entry["config_id"])] = entry
    return done


def write_table(entries: list[dict], out: Path, attrs: dict) -> None:
    import pandas as pd

    from imagesets.atomic import staged_file

    rows = [{**row, **{f"config.{k}": v for k, v in entry["config"].items()}} for entry in entries for row in entry["rows"]]
    table = pd.DataFrame(rows).sort_values(["config_id", "epoch"], ignore_index=True)
    table.attrs.update(attrs)
    with staged_file(out) as staged:
        table.to_parquet(staged, index=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--configs", type=int, default=200)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_curves_cnn.parquet")
    args = p.parse_args()

    import models
    from imagesets.carving import carve_data
    from imagesets.options import DataOptions

    data_args = dict(name=args.dataset, limit=(args.train_size, None, None))
    carved = carve_data(DataOptions(dataset=args.dataset, limit=(args.train_size, None, None)))
    decoded, sizes = carved.decoded, carved.sizes
    shape = models.DataShape(decoded.channels, decoded.image_size, len(decoded.class_names), sizes["train"])
    plan = search_plan(args.model, args.epochs, args.dataset, args.train_size, shape, sizes["val"],
                       carved.full_sizes["train"])
    configs = sampled_configs(plan, args.configs, args.seed)
    partial = args.out.with_name(args.out.name + ".partial.jsonl")
    done = finished(partial)
    for config_id, entry in done.items():
        if entry["config"] != json.loads(json.dumps(configs[config_id])):
            raise SystemExit(f"{partial} was made with other settings (configuration {config_id} differs): remove it "
                             "or give the same --model, --epochs, --train-size and --seed")
    todo = [(i, c, data_args) for i, c in enumerate(configs) if i not in done]
    print(f"{describe()}; {args.model}: {len(configs)} configurations x {args.epochs} epochs on {args.dataset} "
          f"({sizes['train']} training, {sizes['val']} validation images), {len(done)} already done, "
          f"{args.workers} workers", flush=True)
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool, partial.open("a") as log:
        for k, entry in enumerate(pool.imap_unordered(train_curve, todo), 1):
            log.write(json.dumps(entry) + "\n")
            log.flush()
            last = entry["rows"][-1]
            print(f"[{k}/{len(todo)}] config {entry['config_id']}: val_acc {last['val_acc']:.4f} after "
                  f"{last['epoch']} epochs, {sum(r['seconds'] for r in entry['rows']):.0f} s "
                  f"({time.monotonic() - start:.0f} s so far)", flush=True)
    entries = sorted(finished(partial).values(), key=lambda e: e["config_id"])
    write_table(entries, args.out, {
        "table_version": TABLE_VERSION, "model": args.model, "dataset": args.dataset, "train_images": sizes["train"],
        "val_images": sizes["val"], "full_train_images": carved.full_sizes["train"],
        "shape": [shape.channels, shape.image_size, shape.num_classes], "max_epochs": args.epochs, "configs": len(entries), "sampler_seed": args.seed,
        "schedule": "each configuration's own, planned over max_epochs, no restarts", "workers": args.workers,
        "machine": describe(), "command": "python benchmarks/learning_curves.py " + " ".join(sys.argv[1:])})
    print(f"wrote {args.out} ({len(entries)} configurations) in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
