"""The data held once: statistics streamed over chunks equal the whole array's, splits are memory maps of files
carved once into the cache (no copy in any process), trial processes map the same pages, and data larger than
memory is read in blocks, end to end through a search."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, run_cli
from imagesets.splits import copy_rows
from trainables.batches import block_order, iterate
from imagesets.carving import channel_stats
from trainables.data import Split, load_dataset


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 8 * 8 * 7, 32 * 2**20])
def test_streamed_statistics_equal_the_whole_arrays(chunk_bytes):
    images = np.random.default_rng(0).integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    whole = images.astype(np.float64) / 255.0
    mean, std = channel_stats(images, chunk_bytes)
    assert mean == tuple(round(float(m), 6) for m in whole.mean(axis=(0, 2, 3)))
    assert std == tuple(round(float(s), 6) for s in whole.std(axis=(0, 2, 3)))


def test_rows_are_copied_in_chunks_exactly_as_picked():
    source = np.random.default_rng(1).integers(0, 256, (100, 1, 4, 4), dtype=np.uint8)
    rows = np.random.default_rng(2).permutation(100)[:70]
    out = np.empty((70, 1, 4, 4), np.uint8)
    copy_rows(source, rows, out, chunk_bytes=16 * 9)  # 9 images a chunk
    assert np.array_equal(out, source[rows])


def test_splits_are_memory_maps_of_the_cache_and_caps_are_views(data_dir):
    data = load_dataset("mnist", data_dir, limit=(1_000, 100, 100), download=False)
    for split in (data.train, data.val, data.test):
        array = split.images.numpy()
        full = np.load(split.file, mmap_mode="r")
        assert np.shares_memory(array, full) or array.base is not None  # a view of the file's map
        assert np.array_equal(array, full[: len(split)])


def test_a_pickled_split_names_its_file_and_two_processes_map_the_same_pages(data_dir):
    data = load_dataset("mnist", data_dir, download=False)
    blob = pickle.dumps(data.train)
    assert len(blob) < data.train.nbytes / 50  # the labels and the file's name, not the images
    code = """
import pickle, sys
from pathlib import Path
import torch, trainables.data  # imported first: their own memory is not the data's
def status(field):
    return int(next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(field)).split()[1])
before = status('RssAnon')
split = pickle.loads(sys.stdin.buffer.read())
total = int(split.images.sum())  # every image read
maps = Path('/proc/self/maps').read_text()
print(status('RssAnon') - before, split.file in maps, total)
"""
    answers = [subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=ROOT, check=True)
               .stdout.decode().split() for _ in range(2)]
    expected = str(int(data.train.images.sum()))
    for anon_kib, mapped, total in answers:
        assert mapped == "True" and total == expected
        assert int(anon_kib) * 1024 < 0.1 * data.train.nbytes  # no private copy of the data in either process


def test_a_block_order_reads_every_image_once_in_whole_blocks():
    order = block_order(1_000, 64, torch.Generator().manual_seed(0), mixed=4)
    assert sorted(order.tolist()) == list(range(1_000))
    position = torch.empty(1_000, dtype=torch.int64)
    position[order] = torch.arange(1_000)
    for block in range(0, 1_000, 64):  # a block's images are read within one run of 4 blocks (256 images)
        spots = position[block:block + 64]
        assert int(spots.max() - spots.min()) < 4 * 64
    assert order[:64].tolist() != sorted(order[:64].tolist())  # shuffled within its blocks


def test_a_streamed_split_gives_every_image_once_per_epoch():
    split = Split(torch.arange(300, dtype=torch.uint8).view(300, 1, 1, 1), torch.arange(300) % 3, streamed=True)
    seen = torch.cat([y for _, y in iterate(split, 32, (0.0,), (1.0,), shuffle=True,
                                            generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted((torch.arange(300) % 3).tolist())


@pytest.mark.integration
def test_a_search_larger_than_its_memory_runs_from_the_disk(tmp_path, data_dir):
    proc = run_cli("search.run", "--model", "cnn", "--gpus", "0", "--smoke", "--num-samples", "1", "--max-epochs", "1",
                   "--grace-period", "1", "--storage-path", str(tmp_path), "--name", "disk", "--no-dashboard",
                   "--verbose", "0", "--data-dir", str(data_dir), env={"SEARCH_MEMORY_LIMIT": "1000000"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "trials read it from disk in blocks" in proc.stdout
    assert (tmp_path / "disk" / "models" / "cnn" / "model.onnx").is_file()
