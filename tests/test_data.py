"""Reading IDX files, checking them, and carving the validation split."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from trainables.data import (IMAGES_MAGIC, LABELS_MAGIC, DataError, Split, carve_validation, load_dataset,
                             read_idx, resolve_data_dir)
from trainables.batches import iterate, random_shift


def write_idx(path, array: np.ndarray, magic: int, compress: bool = False, cut: int = 0) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = (header + array.astype(np.uint8).tobytes())[: -cut or None]
    (gzip.open if compress else open)(path, "wb").write(body)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_images_plain_and_gzip(tmp_path, compress):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28) % 256
    path = tmp_path / ("img.gz" if compress else "img")
    write_idx(path, images, IMAGES_MAGIC, compress)
    assert np.array_equal(read_idx(path, IMAGES_MAGIC, 3), images)


def test_truncated_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28)), IMAGES_MAGIC, cut=100)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path, IMAGES_MAGIC, 4)


def test_wrong_magic_and_wrong_count_are_errors(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.zeros(5), LABELS_MAGIC)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path, IMAGES_MAGIC)
    with pytest.raises(DataError, match="holds 5 items, expected 60000"):
        read_idx(path, LABELS_MAGIC, 60_000)


def test_corrupted_gzip_is_an_error_naming_it(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        read_idx(path, LABELS_MAGIC)


def test_corrupted_file_in_a_data_directory_stops_loading(tmp_path, data_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    blob = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(blob[:-5000]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_dataset("mnist", tmp_path, download=False)


def test_missing_files_error_lists_them_and_where_they_go(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", tmp_path, download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


def test_offline_download_failure_is_explained(tmp_path, monkeypatch):
    import trainables.data as data

    def offline(info, root):
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DataError, match="downloading them with torchvision failed.*--data-dir"):
        load_dataset("mnist", tmp_path)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="mnist, fashion_mnist"):
        load_dataset("cifar10")


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SEARCH_DATA_DIR", str(tmp_path))
    assert resolve_data_dir("elsewhere").name == "elsewhere"
    assert resolve_data_dir(None) == tmp_path.resolve()
    monkeypatch.delenv("SEARCH_DATA_DIR")
    assert resolve_data_dir(None).name == "data"


def test_real_mnist_splits(data_dir):
    data = load_dataset("mnist", data_dir, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (28, 28)
    counts = torch.bincount(torch.cat([data.train.labels, data.val.labels]), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    again = load_dataset("mnist", data_dir, download=False)
    assert torch.equal(data.val.labels, again.val.labels), "the validation split must not move between runs"


def test_validation_is_disjoint_from_training():
    images = torch.arange(100, dtype=torch.uint8)[:, None, None].expand(100, 28, 28).contiguous()
    train, val = carve_validation(Split(images, torch.arange(100)), 10, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert not set(val.labels.tolist()) & set(train.labels.tolist())


def test_batches_cover_every_image_once_and_are_normalized():
    split = Split(torch.full((10, 28, 28), 255, dtype=torch.uint8), torch.arange(10))
    seen = []
    for x, y in iterate(split, 4, mean=0.5, std=0.5, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
        assert torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5
        seen += y.tolist()
    assert sorted(seen) == list(range(10))


def test_random_shift_moves_content_but_keeps_it():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 10:18, 10:18] = 200
    shifted = random_shift(image.expand(64, 28, 28), 2, torch.Generator().manual_seed(0))
    assert (shifted.sum(dim=(1, 2)) == image.sum()).all()  # a 2-pixel shift never crops this square
    assert len({tuple(s.nonzero()[0].tolist()) for s in shifted}) > 1
