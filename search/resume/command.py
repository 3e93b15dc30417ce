"""The command line an experiment was started with, saved in its folder (``command.json``), is what --resume
continues: read back here, grown by ``--resume --num-samples N``, with a folder given to ``--dataset`` saved as an
absolute path so that it is found from any working directory. No torch, no Ray: read before the flags are checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import imagesets
from search.command import storage
from search.command.settings import COMMAND_FILE, DEFAULT_SAMPLES, SMOKE, UsageError


def resumed_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
    """The saved command line of the experiment ``--name`` (what --resume continues), parsed by ``parser``, with
    ``--num-samples`` raised if this command line gives a larger one."""
    if not args.name:
        raise UsageError("--resume needs the --name of the experiment to continue")
    if storage.is_uri(args.storage_path):
        folder = storage.join(args.storage_path, args.name)
        try:
            saved = storage.read_text(storage.join(folder, COMMAND_FILE))
        except storage.StorageError as e:
            raise UsageError(str(e)) from None
    else:
        folder = Path(args.storage_path).expanduser().resolve() / args.name
        saved = (folder / COMMAND_FILE).read_text() if (folder / COMMAND_FILE).is_file() else None
    if saved is None:
        raise UsageError(f"nothing to resume: {folder} holds no experiment started by this tool "
                         f"({COMMAND_FILE} missing); check --name and --storage-path, or start it without --resume")
    argv = json.loads(saved)["argv"]
    original = parser.parse_args(argv)
    # Where it was found is where it is, whatever the working directory was when it started.
    original.resume, original.name, original.storage_path = True, args.name, args.storage_path
    if args.num_samples is not None:  # --resume --num-samples N: grow the search to N trials per model
        argv = grown(original, argv, args.num_samples)
        original.num_samples = args.num_samples
    return original, argv


def grown(original: argparse.Namespace, argv: list[str], num_samples: int) -> list[str]:
    """The saved command line with ``--num-samples`` raised to ``num_samples``; fewer is refused."""
    before = original.num_samples or (SMOKE["num_samples"] if original.smoke else DEFAULT_SAMPLES)
    if num_samples < before:
        raise UsageError(f"--resume --num-samples {num_samples}: the search already has {before} trials per model; "
                         "a search can grow, not shrink (give a larger number, or leave --num-samples out)")
    out, skip = [], False
    for word in argv:  # drop the saved --num-samples, in either spelling
        if skip:
            skip = False
        elif word == "--num-samples":
            skip = True
        elif not word.startswith("--num-samples="):
            out.append(word)
    return [*out, "--num-samples", str(num_samples)]


def absolute_dataset(argv: list[str]) -> list[str]:
    """The command line with a folder given to ``--dataset``, and a file given to ``--models-from``, as absolute paths
    (saved for --resume, which may run from another working directory)."""
    out = list(argv)
    for i, word in enumerate(out):
        flag, eq, value = word.partition("=")
        if flag in ("--dataset", "--models-from") and (eq or i + 1 < len(out)):
            j, value = (i, value) if eq else (i + 1, out[i + 1])
            folder = flag == "--dataset" and not imagesets.is_registered(value) and Path(value).expanduser().is_dir()
            if folder or (flag == "--models-from" and Path(value).expanduser().is_file()):
                absolute = str(Path(value).expanduser().resolve())
                out[j] = f"{flag}={absolute}" if eq else absolute
    return out
