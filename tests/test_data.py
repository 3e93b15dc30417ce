"""Reading IDX files, checking them, carving the validation split, and the batches built from the splits."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from imagesets.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from imagesets.carving import stratified_split
from trainables.data import DataError, Split, load_dataset, resolve_data_dir
from trainables.augment import random_flip, random_shift
from trainables.batches import iterate


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
        load_dataset("mnist", tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_missing_files_error_lists_them_and_where_they_go(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", tmp_path, download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


def test_offline_download_failure_is_explained(tmp_path, monkeypatch):
    from imagesets.idx import IdxSet

    def offline(self, root):
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(IdxSet, "_download", offline)
    with pytest.raises(DataError, match="downloading them with torchvision failed.*--data-dir"):
        load_dataset("mnist", tmp_path)


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(DataError, match="neither a registered name.*cifar10.*digits.*mnist.*fashion_mnist.*kmnist.*nor an existing folder"):
        load_dataset("imagenet", tmp_path)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SEARCH_DATA_DIR", str(tmp_path))
    assert resolve_data_dir("elsewhere").name == "elsewhere"
    assert resolve_data_dir(None) == tmp_path.resolve()
    monkeypatch.delenv("SEARCH_DATA_DIR")
    assert resolve_data_dir(None).name == "data"


def test_real_mnist_splits(data_dir, tmp_path):
    data = load_dataset("mnist", data_dir, download=False, cache_dir=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (55_000, 5_000, 10_000)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 28, 28)
    counts = torch.bincount(torch.cat([data.train.labels, data.val.labels]), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    val_counts = torch.bincount(data.val.labels, minlength=10)
    assert (abs(val_counts / 5_000 - counts / 60_000) < 0.001).all(), "validation is stratified"
    assert data.info.mean == pytest.approx((0.1307,), abs=0.001) and data.info.std == pytest.approx((0.3081,), abs=0.001)
    again = load_dataset("mnist", data_dir, download=False, cache_dir=tmp_path)
    assert again.info.from_cache
    assert torch.equal(data.val.labels, again.val.labels), "the validation split must not move between runs"


def test_stratified_split_is_disjoint_proportional_and_fixed_by_its_seed():
    labels = np.repeat(np.arange(3), [60, 30, 10])
    held, rest = stratified_split(labels, 10, seed=0, class_names=("a", "b", "c"), what="validation")
    assert len(held) == 10 and len(rest) == 90 and not set(held) & set(rest)
    assert np.bincount(labels[held]).tolist() == [6, 3, 1]
    assert np.array_equal(held, stratified_split(labels, 10, 0, ("a", "b", "c"), "validation")[0])
    with pytest.raises(DataError, match="'c' \\(1\\).*too few images"):
        stratified_split(np.array([0, 0, 1, 1, 2]), 2, 0, ("a", "b", "c"), "validation")


def test_batches_cover_every_image_once_and_are_normalized_per_channel():
    images = torch.full((10, 3, 8, 8), 255, dtype=torch.uint8)
    images[:, 1] = 0
    split = Split(images, torch.arange(10))
    seen = []
    for x, y in iterate(split, 4, mean=(0.5, 0.5, 0.0), std=(0.5, 0.25, 1.0), shuffle=True,
                        generator=torch.Generator().manual_seed(0)):
        assert x.shape[1:] == (3, 8, 8) and x.dtype == torch.float32
        assert torch.allclose(x[:, 0], torch.ones(1)) and torch.allclose(x[:, 1], torch.full((1,), -2.0))
        assert torch.allclose(x[:, 2], torch.ones(1))
        seen += y.tolist()
    assert sorted(seen) == list(range(10))


def test_random_shift_moves_content_but_keeps_it_in_every_channel():
    image = torch.zeros(1, 3, 28, 28, dtype=torch.uint8)
    image[0, :, 10:18, 10:18] = torch.tensor([200, 100, 50], dtype=torch.uint8)[:, None, None]
    shifted = random_shift(image.expand(64, 3, 28, 28), 2, torch.Generator().manual_seed(0))
    assert (shifted.sum(dim=(2, 3)) == image.sum(dim=(2, 3))).all()  # a 2-pixel shift never crops this square
    assert len({tuple(s[0].nonzero()[0].tolist()) for s in shifted}) > 1
    assert torch.equal(shifted[:, 1] * 2, shifted[:, 0])  # the channels move together


def test_augmentation_leaves_images_too_small_to_shift_as_they_are():
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    split = Split(images, torch.arange(32) % 10)
    plain = torch.cat([x for x, _ in iterate(split, 8, mean=(0.5,), std=(0.25,))])
    augmented = torch.cat([x for x, _ in iterate(split, 8, mean=(0.5,), std=(0.25,), augment="light")])
    assert torch.equal(plain, augmented)
    big = Split(torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8), torch.arange(32) % 10)
    shifted = torch.cat([x for x, _ in iterate(big, 8, mean=(0.5,), std=(0.25,), augment="light",
                                               generator=torch.Generator().manual_seed(0))])
    assert not torch.equal(shifted, torch.cat([x for x, _ in iterate(big, 8, mean=(0.5,), std=(0.25,))]))


def test_random_flip_mirrors_about_half_and_only_left_to_right():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(200, 1, 4, 4)
    flipped = random_flip(image, torch.Generator().manual_seed(0))
    mirrored = (flipped == image.flip(-1)).flatten(1).all(1)
    assert 60 < int(mirrored.sum()) < 140
    assert ((flipped == image).flatten(1).all(1) | mirrored).all()
