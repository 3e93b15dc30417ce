"""Results storage given as a URI (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/...``): any
filesystem pyarrow resolves, which is what Ray Tune's ``storage_path`` accepts.

Tune writes its experiment state and the trials' checkpoints there itself, from whichever node a
trial runs on. This project's own files (the Parquet exports, the report, the Optuna journal,
``command.json``) are written locally first, complete, under ``./results/<name>/``, and then
uploaded file by file, so the remote folder never holds half of an export.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs


class StorageError(ValueError):
    """A storage URI that cannot be used; the message says why and what to do."""


def is_uri(text: str) -> bool:
    return "://" in text


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of ``uri``, or a ``StorageError`` naming the problem."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # unknown scheme, missing credentials or driver: all mean "cannot use it"
        raise StorageError(f"--storage-path {uri} cannot be opened ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                           "use a shared filesystem path or a URI pyarrow can open (s3://, gs://, file://) "
                           "with its credentials set") from None


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def names_in(folder: str) -> list[str]:
    """The names of what is directly in ``folder`` (a URI or an absolute local path); [] if it is not there."""
    fs, path = resolve(folder)
    return [Path(info.path).name for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))]


def check_writable(uri: str) -> None:
    """Create the folder and write, then delete, a probe file: credentials and permissions, now."""
    fs, path = resolve(uri)
    probe = f"{path.rstrip('/')}/.write-test"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"")
        fs.delete_file(probe)
    except Exception as e:
        raise StorageError(f"--storage-path {uri} is not writable ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def read_text(uri: str) -> str | None:
    """The text of the file at ``uri``, or None if there is none."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def upload(local: Path, uri: str) -> None:
    """Copy the files of the local folder ``local`` (recursively) into the folder ``uri``."""
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def check_experiment_place(local: Path, folder: Path, remote: str | None, tune_folder: str, name: str,
                           resume: bool) -> None:
    """Raise ``StorageError`` unless the results folder ``local`` (and the ``remote`` URI) can be written and,
    unless resuming, hold no experiment ``name`` yet (its ``folder`` here, its ``tune_folder`` there)."""
    taken_remotely = False
    if remote:
        check_writable(remote)
        taken_remotely = exists(tune_folder)
    if (folder.exists() or taken_remotely) and not resume:
        raise StorageError(f"an experiment named {name!r} already exists in {remote or local}; continue it with "
                           f"--resume --name {name}, or choose another --name (results are never overwritten)")
    try:
        local.mkdir(parents=True, exist_ok=True)
        probe = local / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"--storage-path {local} is not writable ({e.strerror}); choose a folder you can "
                           "write to") from None
