"""Data sets a user brings: folders of images in both layouts, the registered sets, the decode-once
cache, and every refusal of bad input (before Ray starts, naming the file or folder and the fix)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import imagesets
from helpers import search_command
from imagesets.registry import DataError
from trainables.data import load_dataset


def write_folder(root, classes=3, per_class=12, size=(32, 32), modes=("RGB",), formats=("png",), seed=0):
    """``root/<class>/<i>.<format>``: images whose mean brightness depends on their class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(40 + 60 * c, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels).convert(modes[i % len(modes)])
            image.save(folder / f"{i:03d}.{formats[i % len(formats)]}")
    return root


def test_a_flat_folder_of_mixed_formats_and_modes_becomes_one_rgb_cache(tmp_path):
    root = write_folder(tmp_path / "pets", classes=4, per_class=15, modes=("RGB", "RGBA", "P", "L"),
                        formats=("jpg", "png", "png", "bmp"))
    (root / "class_0" / "README.txt").write_text("not an image")
    (root / "LICENSE").write_text("not an image either")
    data = load_dataset(str(root), cache_dir=tmp_path / "cache", split_seed=3)
    info = data.info
    assert (info.name, info.channels, info.image_size) == ("pets", 3, 32)
    assert info.class_names == ("class_0", "class_1", "class_2", "class_3") and info.skipped == 2
    assert info.test_carved and info.split_seed == 3 and info.source == str(root.resolve())
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    assert sum(data.full_sizes.values()) == 60
    counts = data.class_counts()
    assert counts["test"] == [3, 3, 3, 3] and min(counts["val"]) >= 1  # stratified, every class in every split
    assert len(info.mean) == len(info.std) == 3 and info.mean[0] == pytest.approx(
        data.train.images[:, 0].float().mean().item() / 255, abs=1e-4)  # per channel, of the training split
    # The same images in the same order, whatever the seed of a later run of the same split seed.
    again = load_dataset(str(root), cache_dir=tmp_path / "cache", split_seed=3)
    assert again.info.from_cache and torch.equal(again.test.images, data.test.images)


def test_gray_images_of_odd_sizes_need_an_image_size_and_stay_gray(tmp_path):
    root = tmp_path / "scans"
    write_folder(root, classes=3, per_class=6, size=(20, 20), modes=("L",))
    write_folder(root, classes=3, per_class=2, size=(37, 23), modes=("L",), seed=1)  # overwrites some: mixed sizes
    with pytest.raises(DataError, match=f"{root}.*different sizes.*37x23.*--image-size N"):
        load_dataset(str(root), cache_dir=tmp_path / "cache")
    data = load_dataset(str(root), cache_dir=tmp_path / "cache", image_size=16)
    assert data.info.channels == 1 and data.train.images.shape[1:] == (1, 16, 16)


def test_train_val_test_folders_keep_their_own_splits(tmp_path):
    for split, n in (("train", 10), ("val", 3), ("test", 4)):
        write_folder(tmp_path / "set" / split, classes=3, per_class=n, size=(12, 12), seed=len(split))
    data = load_dataset(str(tmp_path / "set"), cache_dir=tmp_path / "cache")
    assert (len(data.train), len(data.val), len(data.test)) == (30, 9, 12) and not data.info.test_carved
    assert data.class_counts()["test"] == [4, 4, 4]


def test_a_damaged_image_is_named_and_no_cache_is_left_behind(tmp_path):
    root = write_folder(tmp_path / "set", classes=2, per_class=8)
    good = (root / "class_1" / "003.png").read_bytes()
    (root / "class_1" / "003.png").write_bytes(good[: len(good) // 2])  # header reads, pixels do not
    (root / "class_0" / "005.png").write_bytes(b"not a png at all")
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load_dataset(str(root), cache_dir=cache)
    assert "class_0/005.png" in str(error.value) and "Remove or replace them" in str(error.value)
    (root / "class_0" / "005.png").write_bytes(good)
    with pytest.raises(DataError, match="damaged.*class_1/003.png"):
        load_dataset(str(root), cache_dir=cache)
    assert not [p for p in cache.rglob("meta.json")], "a half-written cache must never be left to read"
    (root / "class_1" / "003.png").write_bytes(good)
    assert len(load_dataset(str(root), cache_dir=cache).train) > 0


def test_at_most_ten_bad_files_are_listed(tmp_path):
    root = write_folder(tmp_path / "set", classes=2, per_class=14)
    for i in range(13):
        (root / "class_0" / f"{i:03d}.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="13 image file\\(s\\) cannot be read.*and 3 more"):
        load_dataset(str(root), cache_dir=tmp_path / "cache")


def test_an_image_past_the_decompression_bomb_limit_is_refused(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "set", classes=2, per_class=4)
    Image.new("L", (300, 300)).save(root / "class_1" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(DataError, match="huge.png.*300x300 = 90,000 pixels, past Pillow's decompression-bomb limit"):
        load_dataset(str(root), cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("make,needle", [
    (lambda r: write_folder(r, classes=1), "at least 2 class folders.*found one \\(class_0\\)"),
    (lambda r: (write_folder(r, classes=2), (r / "empty").mkdir()), "empty: class folder holds no images"),
    (lambda r: (write_folder(r / "train", classes=3), write_folder(r / "test", classes=2)),
     "test: its classes differ.*lacks class_2"),
    (lambda r: (write_folder(r, classes=2), write_folder(r / "rare", classes=1, per_class=2)),
     "class .rare. has only 2 images.*at least 3 per class"),
])
def test_folders_that_cannot_be_searched_are_refused_naming_what_to_fix(tmp_path, make, needle):
    root = tmp_path / "set"
    root.mkdir()
    make(root)
    with pytest.raises(DataError, match=needle):
        load_dataset(str(root), cache_dir=tmp_path / "cache")


def test_a_data_set_the_disk_cannot_hold_is_refused_before_decoding_with_the_size_that_fits(tmp_path, monkeypatch):
    import imagesets.cache as cache

    root = write_folder(tmp_path / "set", classes=2, per_class=10, size=(64, 64))
    # 20 images of 3x64x64 take 245,760 bytes, twice that with their splits
    monkeypatch.setattr(cache, "free_disk", lambda folder: 400_000)
    with pytest.raises(DataError, match="480.0 KiB of decoded images .* 390.6 KiB free.*--cache-dir.*"
                                        "--image-size 56 would fit"):
        load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("meta.json"))


def test_a_data_set_larger_than_memory_is_searched_from_disk_not_refused(tmp_path, monkeypatch):
    import imagesets.cache as cache

    root = write_folder(tmp_path / "set", classes=2, per_class=10, size=(64, 64))
    monkeypatch.setattr(cache, "available_memory", lambda: 100_000)
    data = load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert data.train.streamed and not data.val.streamed and data.train.file.endswith("train_images.npy")
    assert cache.fits_in_memory(1_000, available=10_000) and not cache.fits_in_memory(8_000, available=10_000)


def test_the_cache_is_reused_and_redone_when_a_file_changes_and_the_data_folder_is_only_read(tmp_path):
    root = write_folder(tmp_path / "set", classes=2, per_class=6)
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    first = imagesets.prepare(str(root), cache_dir=tmp_path / "cache")
    assert not first.from_cache and imagesets.prepare(str(root), cache_dir=tmp_path / "cache").from_cache
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before, "nothing is written to the data"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(root / "class_0" / "000.png")
    changed = imagesets.prepare(str(root), cache_dir=tmp_path / "cache")
    assert not changed.from_cache and changed.cache != first.cache
    assert (changed.splits["train"][0][0] == np.array([255, 0, 0])[:, None, None]).all()
    resized = imagesets.prepare(str(root), cache_dir=tmp_path / "cache", image_size=16)
    assert not resized.from_cache and resized.splits["train"][0].shape[1:] == (3, 16, 16)


def test_idx_files_and_the_same_images_as_png_give_the_identical_cache(tmp_path, data_dir):
    idx = imagesets.prepare("fashion_mnist", data_dir, tmp_path / "cache")
    for split, n in (("train", 300), ("test", 100)):
        images, labels = idx.splits[split][0][:n], idx.splits[split][1][:n]
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = tmp_path / "png" / split / f"{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(folder / f"{i:05d}.png")
    png = imagesets.prepare(str(tmp_path / "png"), cache_dir=tmp_path / "cache")
    assert png.channels == 1 and png.image_size == 28
    for split, n in (("train", 300), ("test", 100)):
        order = np.argsort(idx.splits[split][1][:n], kind="stable")  # the folder lists class by class
        assert np.array_equal(png.splits[split][0], idx.splits[split][0][:n][order])
        assert np.array_equal(png.splits[split][1], idx.splits[split][1][:n][order])


def test_cifar10_is_read_by_torchvisions_own_reader_from_its_layout(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 20).tolist()
        written[name] = (rows, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    # The files are CIFAR's format but not CIFAR's bytes: torchvision's MD5 check is the one thing bypassed.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    data = imagesets.prepare("cifar10", tmp_path / "data", tmp_path / "cache", download=False)
    assert (data.channels, data.image_size, data.class_names, data.mirror) == (3, 32, tuple(names), True)
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.splits["train"][0], train)
    assert data.splits["test"][1].tolist() == written["test_batch"][1]


def test_missing_cifar_files_say_where_they_go(tmp_path):
    with pytest.raises(DataError, match="CIFAR100: missing .*train.* in .*cifar-100-python.*downloading is turned off"):
        imagesets.prepare("cifar100", tmp_path, tmp_path / "cache", download=False)


def test_digits_ship_with_scikit_learn_and_get_a_carved_stratified_test_split(tmp_path):
    data = load_dataset("digits", cache_dir=tmp_path)
    assert (data.info.channels, data.info.image_size, data.info.num_classes) == (1, 8, 10)
    assert sum(data.full_sizes.values()) == 1797 and data.info.test_carved and len(data.test) == 359
    assert data.train.images.max() == 255  # 16 ink levels spread over uint8
    counts = data.class_counts()
    assert all(abs(t / 359 - tr / len(data.train)) < 0.02 for t, tr in zip(counts["test"], counts["train"]))


def test_a_registered_data_set_is_one_small_module(tmp_path):
    spec = imagesets.ImageSetSpec(
        "two_blobs", locate=lambda root, download: [],
        read=lambda root: imagesets.Raw({"train": (np.repeat(np.arange(2, dtype=np.uint8) * 200, 40)[:, None, None]
                                                   .repeat(8, 1).repeat(8, 2), np.repeat(np.arange(2), 40))},
                                        ("dark", "light")))
    imagesets.register(spec)
    try:
        with pytest.raises(ValueError, match="already registered"):
            imagesets.register(spec)
        data = load_dataset("two_blobs", cache_dir=tmp_path)
        assert data.info.class_names == ("dark", "light") and data.info.shape.image_size == 8
    finally:
        imagesets.unregister("two_blobs")


def test_the_search_refuses_bad_data_before_ray_starts(tmp_path, capsys):
    folder = write_folder(tmp_path / "one", classes=1)
    proc = search_command(capsys, "--model", "cnn", "--dataset", str(folder), "--storage-path", str(tmp_path / "out"),
                          "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 2 and "at least 2 class folders" in proc.stderr
    odd = write_folder(tmp_path / "odd", classes=2, per_class=4, size=(29, 29))
    proc = search_command(capsys, "--model", "cnn,vit", "--dataset", str(odd), "--storage-path", str(tmp_path / "out"),
                          "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 2
    assert "vit cannot search" in proc.stderr and "--image-size 28 or 30" in proc.stderr and "--model cnn" in proc.stderr
    proc = search_command(capsys, "--model", "cnn", "--dataset", str(odd), "--image-size", "4",
                          "--storage-path", str(tmp_path / "out"))
    assert proc.returncode == 2 and "--image-size 4: choose a size between 8 and 512" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_folder_is_saved_as_an_absolute_path_so_resume_finds_it_from_anywhere(tmp_path, monkeypatch):
    from search.resume.command import absolute_dataset

    write_folder(tmp_path / "photos", classes=2, per_class=3)
    monkeypatch.chdir(tmp_path)
    assert absolute_dataset(["--model", "cnn", "--dataset", "photos"]) == ["--model", "cnn", "--dataset",
                                                                         str(tmp_path / "photos")]
    assert absolute_dataset(["--dataset=photos"]) == [f"--dataset={tmp_path / 'photos'}"]
    assert absolute_dataset(["--dataset", "mnist", "--name", "photos"]) == ["--dataset", "mnist", "--name", "photos"]
