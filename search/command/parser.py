"""The search command's flags (``python -m search.run --help``): what each means and its default. Their values are
checked in ``search.command.settings.ask``."""

from __future__ import annotations

import argparse

import models
from imagesets.options import add_data_arguments
from search.command.space import SAMPLERS
from search.command.settings import SMOKE

DESCRIPTION = "Search every chosen architecture's hyperparameters with Ray Tune, Optuna TPE and ASHA."


def pretrained_models() -> list[str]:
    """The registered models that start from pretrained weights."""
    return [name for name in models.names() if models.get(name).pretrained_weights is not None]


def smoke_help() -> str:
    """What --smoke does, with the settings it pins for each model, read from the registry."""
    train, val, test = SMOKE["limit"]
    pins = "; ".join(f"{name} " + ", ".join(f"{k}={v}" for k, v in models.get(name).smoke_config.items())
                     for name in models.builtin_names() if models.get(name).smoke_config)
    return (f"the whole path (training, early stopping, checkpoints, finalists, exports, report) on tiny data in "
            f"minutes, not for accuracy: {train:,}/{val:,}/{test:,} train/val/test images, {SMOKE['num_samples']} "
            f"trials a model, {SMOKE['max_epochs']} epochs; pinned per model: {pins}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.run", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="cnn",
                   help=f"a name, a comma list, or 'all' ({', '.join(models.builtin_names())}); timm's architectures "
                        f"as timm:<name> (any of timm.list_models(); registered with measured settings: "
                        f"{', '.join(n for n in models.names() if n.startswith('timm:'))})")
    p.add_argument("--models-from", action="append", default=[], metavar="FILE.py|MODULE",
                   help="a file or importable module of your own whose models.register(...) calls add architectures "
                        "for --model (repeatable; the README's 'A network of your own')")
    p.add_argument("--gpus", type=int, default=0, help="GPUs to use; 0 runs on CPUs")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for trials (default: all cores)")
    p.add_argument("--gpu-per-trial", default=None, metavar="F|MODEL=F,...",
                   help="share of a GPU each trial takes, for every model or per model, e.g. cnn=0.5,vgg16=1 "
                        "(default: each model's own: cnn 0.25, vit 0.5, vgg16 1 ...)")
    p.add_argument("--cpu-per-trial", default=None, metavar="N|MODEL=N,...",
                   help="CPUs each trial takes, for every model or per model (default: each model's own, 1)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="run on an existing Ray cluster instead of starting Ray here; --storage-path must then "
                        "be reachable by every node (a shared filesystem path)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="run at most N trials at once (default: as many as the CPUs/GPUs hold, per model)")
    p.add_argument("--fresh-processes", action="store_true",
                   help="start a new process for every trial instead of reusing a finished trial's (slower: "
                        "each pays the torch import, CUDA context and data copy again)")
    p.add_argument("--num-samples", type=int, default=None, help="trials per model (default 8; 2 with --smoke)")
    p.add_argument("--max-epochs", default=None, metavar="N|MODEL=N,...",
                   help="ASHA's epoch budget: N for every model, or per model, e.g. vit=20,cnn=3 "
                        "(default: each model's own; 2 with --smoke)")
    p.add_argument("--grace-period", default=None, metavar="N|MODEL=N,...",
                   help="ASHA's first rung in epochs, for every model or per model (default: each model's own)")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA keeps 1/this of trials per rung")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                   help="how each study picks the next configuration: Optuna's TPE, or random search (a baseline; "
                        "with --grace-period equal to --max-epochs nothing is stopped early either)")
    add_data_arguments(p)
    p.add_argument("--storage-path", default="results",
                   help="where <name>/ with the results is written: a folder (on a cluster, one every node "
                        "reaches) or a URI Ray Tune accepts (s3://, gs://, file://; exports are also kept in ./results)")
    p.add_argument("--name", default=None, help="experiment name (default: models, dataset and time)")
    p.add_argument("--seed", type=int, default=0, help="seeds Optuna's samplers and the trials")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; running trials stop when it is spent")
    p.add_argument("--epoch-budget", type=int, default=None, metavar="N",
                   help="training epochs the whole search may spend, counted over every trial of every model; "
                        "when it is spent, running trials stop and no new one starts (searches compared at an "
                        "equal budget: benchmarks/search_quality.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pin a setting in every trial of the models that have it (e.g. --set batch_size=256); "
                        "the rest is searched")
    p.add_argument("--repeats", type=int, default=0, metavar="K",
                   help="after the search, train each model's winning configuration K more times at other seeds "
                        "(full budget, same machinery) and test each run: repeats.parquet, and the mean, spread "
                        "and 95%% interval of the winner's test accuracy and F1 in finalists.parquet")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="score each trial by stratified K-fold cross-validation over the training and validation "
                        "images (the fold mean is what the search maximizes and ASHA judges; every fold trains, so "
                        "a trial costs K times as much); 1: on the validation split (default: 5 where the validation "
                        "split has fewer than 500 images, one of which moves accuracy by over 0.2 points, else 1)")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                   help="after the search, train each winner's configuration again from scratch on the training and "
                        "validation images, for the epochs at which its trial peaked, test it once and bundle it "
                        "(models/<model>/); finalists.parquet keeps both test figures (default: on for a data set "
                        "of fewer than 10,000 training images, whose validation images are too many to leave out; "
                        "else off, bundling the trial's best checkpoint)")
    p.add_argument("--retries", type=int, default=0, help="times a failed trial is restarted (from its checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name in --storage-path after a crash or kill, with its "
                        "original settings: finished trials are kept, running ones go on from their checkpoint; "
                        "with --num-samples N, grow a search (finished or not) to N trials per model, each "
                        "model's study learning from the earlier ones (a changed data set or space is refused)")
    p.add_argument("--smoke", action="store_true", help=smoke_help())
    p.add_argument("--weights-dir", default=None,
                   help="folder holding pretrained weight files under torchvision's names, searched before "
                        "torchvision's cache ($TORCH_HOME/hub/checkpoints); on a cluster, a path every node has")
    p.add_argument("--no-pretrained", action="store_true",
                   help=f"train the models that start from pretrained weights ({', '.join(pretrained_models())}) "
                        "from random initialization (pretrained=False)")
    p.add_argument("--compare-scratch", action="store_true",
                   help="search pretrained=True/False as a hyperparameter of fine-tunable models")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    p.add_argument("--dashboard-host", default="127.0.0.1",
                   help="interface the dashboard listens on; 0.0.0.0 exposes it to the network (token "
                        "authentication stays on)")
    p.add_argument("--dashboard-port", type=int, default=None,
                   help="the dashboard's port (default: 8265, or the next free one when another search holds it)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast (by default on where the GPU or CPU has fast bf16)")
    p.add_argument("--no-channels-last", action="store_true", help="keep convolutions in NCHW layout")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Tune's output: 0 quiet, 1 table, 2 all")
    return p
