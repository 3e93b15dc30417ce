"""Classify image files with a search's winner.

    python -m trainables.predict results/<name> photo.jpg more/ 'scans/**/*.png' [--model M] [--top-k K] [--out F.csv]

RESULTS is a search's results folder (its bundles are in models/<model>/) or one bundle's folder. The default
model is the search's best winner by validation accuracy (never by test). Files, folders (recursively) and
globs are decoded the way the search decoded its data. A table is printed and a CSV written; a single folder in
ImageFolder layout (class folders named like the training classes) is also scored: accuracy, macro F1, the
weakest classes and a confusion matrix. Exit status: 0, or 1 when some files could not be read (they are named),
2 when none could (or the command line is wrong).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EXIT_SOME_FAILED, EXIT_BAD_INPUT = 1, 2
MAX_NAMED = 10  # unreadable files named one by one; the rest are counted
SHOWN_ROWS = 10  # rows of the printed table
WEAKEST = 5  # classes listed as the weakest when the images are labelled
DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class PredictError(ValueError):
    """Input the command cannot work with; the message says what and how to fix it."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.predict", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("results", metavar="RESULTS", help="a search's results folder (<storage-path>/<name>), or a bundle's")
    p.add_argument("paths", metavar="PATH", nargs="+",
                   help="image files, folders (searched recursively) or globs ('**' reaches into subfolders)")
    p.add_argument("--model", default=None, help="which winner's bundle (default: the best by validation accuracy)")
    p.add_argument("--top-k", type=int, default=3, help="most probable classes listed per image")
    p.add_argument("--out", default="predictions.csv", help="CSV written with a row per image")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: a GPU if there is one)")
    return p


def bundle_choices(results: Path) -> dict[str, dict[str, Any]]:
    """The bundles a results folder holds, by model, each with its card."""
    from trainables.card import BundleError, read_card

    found = {}
    for folder in sorted((results / "models").glob("*/")) if (results / "models").is_dir() else []:
        try:
            found[folder.name] = {"folder": folder, "card": read_card(folder)}
        except BundleError:
            continue  # a model whose bundle failed is named in finalists.parquet's bundle_error
    return found


def choose_bundle(results: Path, model: str | None) -> tuple[Path, dict[str, Any]]:
    """(bundle folder, its card): ``results`` itself if it is a bundle, else ``model``'s bundle in it, else the
    one whose search trial had the best validation accuracy."""
    from trainables.card import CARD_FILE, read_card

    if not results.is_dir():
        raise PredictError(f"{results} is not a folder; give a search's results folder (<storage-path>/<name>)")
    if (results / CARD_FILE).is_file():
        return results, read_card(results)
    choices = bundle_choices(results)
    if not choices:
        raise PredictError(f"{results} holds no model bundles (models/<model>/card.json): pass the folder a search "
                           "wrote; searches from before bundles existed (results schema 6) have none")
    if model is not None:
        if model not in choices:
            raise PredictError(f"--model {model}: no bundle of it in {results}; bundled: {', '.join(choices)}")
        return choices[model]["folder"], choices[model]["card"]
    best = max(choices, key=lambda m: choices[m]["card"]["selection"]["val_acc"] or float("-inf"))
    return choices[best]["folder"], choices[best]["card"]


@dataclass
class Inputs:
    """The files to classify, their true classes where the images are labelled, and paths that matched nothing."""

    files: list[str]
    labels: list[int] | None
    missing: list[tuple[str, str]]


def labelled_folder(path: Path, class_names: Sequence[str]) -> bool:
    """Whether ``path`` is an ImageFolder tree of the training classes: only class folders at its top, each
    named like a training class."""
    from imagesets.folder import is_image_name

    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    folders = [e for e in entries if e.is_dir()]
    return bool(folders) and all(f.name in class_names for f in folders) and not any(
        e.is_file() and is_image_name(e.name) for e in entries)


def gather(paths: Sequence[str], class_names: Sequence[str]) -> Inputs:
    """Expand files, folders (recursively: files named like images) and globs, in the order given."""
    from imagesets.folder import walk

    if len(paths) == 1 and Path(paths[0]).expanduser().is_dir() and labelled_folder(Path(paths[0]).expanduser(),
                                                                                     class_names):
        root = Path(paths[0]).expanduser()
        files, labels = [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found = walk(folder)[0]
            files += found
            labels += [list(class_names).index(folder.name)] * len(found)
        return Inputs(files, labels, [])
    files, missing = [], []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            files += walk(path)[0]
        elif path.is_file():
            files.append(str(path))
        elif glob.has_magic(text):
            matched = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            for match in matched:
                files += walk(Path(match))[0] if Path(match).is_dir() else [match]
            if not matched:
                missing.append((text, "the pattern matched no file"))
        else:
            missing.append((text, "no such file or folder"))
    return Inputs(list(dict.fromkeys(files)), None, missing)


def failure_lines(failed: Sequence[tuple[str, str]]) -> list[str]:
    """Up to ``MAX_NAMED`` unreadable files with why, then how many more."""
    lines = [f"  {path}: {reason}" for path, reason in failed[:MAX_NAMED]]
    if len(failed) > MAX_NAMED:
        lines.append(f"  ... and {len(failed) - MAX_NAMED} more")
    return lines


def scored_lines(table: pd.DataFrame, labels: np.ndarray, class_names: Sequence[str], out: Path) -> list[str]:
    """Accuracy, macro F1 (scikit-learn), the weakest classes; the confusion matrix written beside ``out``."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    names = list(class_names)
    predicted = np.array([names.index(p) for p in table["predicted"]])
    every = list(range(len(names)))
    present = sorted(set(labels.tolist()))
    _, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=present, zero_division=0)
    weakest = sorted(zip(f1, present, recall, support))[:WEAKEST]
    matrix = pd.DataFrame(confusion_matrix(labels, predicted, labels=every), index=names, columns=names)
    matrix.index.name = "true \\ predicted"
    confusion = out.with_name(out.stem + ".confusion.csv")
    write_csv(matrix, confusion, index=True)
    return [f"Accuracy {float((predicted == labels).mean()):.4f}, macro F1 "
            f"{f1_score(labels, predicted, labels=present, average='macro', zero_division=0):.4f} on {len(labels):,} "
            "labelled images",
            "Weakest classes (F1, recall, images): " + "; ".join(
                f"{names[c]} {f:.3f}, {r:.3f}, {n}" for f, c, r, n in weakest),
            f"Confusion matrix (rows: true class): {confusion}"]


def load_bundle(folder: Path, device: str | None):
    """The bundle in ``folder`` on ``device``; a bundle whose files are damaged is a ``PredictError`` naming it."""
    from trainables.bundle import Bundle

    try:
        return Bundle.load(folder, device)
    except Exception as e:  # safetensors' and torch's errors for a truncated or mismatched weights file
        raise PredictError(f"the bundle in {folder} could not be loaded ({type(e).__name__}: {str(e)[:300]}): its "
                           "files are damaged or from another version; pick another --model, or rerun the "
                           "search") from None


def write_csv(table: pd.DataFrame, path: Path, index: bool = False) -> None:
    """Write ``table`` to ``path`` through a temporary file: a reader never sees half of it."""
    from imagesets.atomic import staged_file

    with staged_file(path) as tmp:
        table.to_csv(tmp, index=index)


def shown(table: pd.DataFrame) -> str:
    """The first rows of the table, for the terminal."""
    columns = ["path", "predicted", "probability"] + (["label"] if "label" in table else [])
    head = table[columns].head(SHOWN_ROWS).copy()
    head["probability"] = head["probability"].map(lambda p: f"{p:.3f}")
    text = head.to_string(index=False)
    return text + (f"\n... {len(table) - SHOWN_ROWS:,} more rows in the CSV" if len(table) > SHOWN_ROWS else "")


def check_out(text: str) -> Path:
    """``--out`` as a path the CSV can be written to, checked before any image is decoded (its folder is made)."""
    out = Path(text).expanduser()
    if out.is_dir():
        raise PredictError(f"--out {text} is a folder: name a file in it, e.g. --out {out / 'predictions.csv'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.with_name(f".{out.name}.probe")
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise PredictError(f"--out {text}: cannot write there ({e.strerror or e}); choose a file in a folder you "
                           "can write to") from None
    return out


def check_device(text: str | None) -> None:
    """Refuse a ``--device`` this machine cannot run on, before any image is decoded."""
    if text is None or text == "cpu":
        return
    if not DEVICE.fullmatch(text):
        raise PredictError(f"--device {text}: not a device; use cpu, cuda or cuda:N (N counts from 0)")
    import torch

    count = torch.cuda.device_count()  # 0 without a driver, without raising
    index = int(text.partition(":")[2] or 0)
    if index >= count:
        have = f"{count} GPU(s) torch can use (cuda:0 to cuda:{count - 1})" if count else "no GPU torch can use"
        raise PredictError(f"--device {text}: this machine has {have}; use " + ("--device cpu" if not count else
                                                                                  "one of those, or --device cpu"))


def run(args: argparse.Namespace) -> int:
    from imagesets.decode import decode_files

    started = time.perf_counter()
    out = check_out(args.out)
    check_device(args.device)
    folder, card = choose_bundle(Path(args.results).expanduser(), args.model)
    names = card["class_names"]
    inputs = gather(args.paths, names)
    # Decoded before torch loads: the decoding workers fork from a small process and start at once.
    images, failed = decode_files(inputs.files, card["input"]["channels"], card["input"]["image_size"])
    failed = inputs.missing + failed
    bad = {p for p, _ in failed}
    kept = [i for i, p in enumerate(inputs.files) if p not in bad]
    if failed:
        print(f"error: {len(failed)} of {len(inputs.files) + len(inputs.missing)} input(s) could not be read and are "
              "left out:", file=sys.stderr)
        print("\n".join(failure_lines(failed)), file=sys.stderr)
    if not kept:
        print("error: no image could be read" + ("" if inputs.files or failed else
              f": {', '.join(args.paths)} hold(s) no files named like images (.png, .jpg, ...)"), file=sys.stderr)
        return EXIT_BAD_INPUT
    bundle = load_bundle(folder, args.device)
    table = bundle.table([inputs.files[i] for i in kept], bundle.predict(images), args.top_k)
    lines = []
    if inputs.labels is not None:
        labels = np.asarray(inputs.labels)[kept]
        table.insert(1, "label", [names[c] for c in labels])
        lines = scored_lines(table, labels, names, out)
    write_csv(table, out)
    seconds = time.perf_counter() - started
    print(f"{bundle.card['model']} ({folder}): {len(table):,} images classified in {seconds:.1f} s "
          f"({len(table) / seconds:,.0f} images/s, decoding and start-up included) on {bundle.device}")
    print(shown(table))
    print("\n".join(lines + [f"Predictions: {args.out}"]))
    return EXIT_SOME_FAILED if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        print(f"error: --top-k must be 1 or more, got {args.top_k}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from trainables.card import BundleError

    try:
        return run(args)
    except (PredictError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
