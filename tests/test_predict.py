"""``trainables.predict`` given bad input: every case exits 2 (1 where some images were still classified) with a
message naming the file or flag at fault, before any work where the flag alone is wrong, and never a
traceback. The bundle is written here (an untrained CNN), so no search runs."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from trainables.predict import main
from test_bundles import card_for, cnn_classifier
from trainables.bundle import write_bundle
from trainables.card import CARD_FILE, WEIGHTS_FILE


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A results folder with one CNN bundle; a folder of good PNGs; broken bundles beside them."""
    root = tmp_path_factory.mktemp("predict")
    bundle = root / "results" / "models" / "cnn"
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8).numpy()
    write_bundle(bundle, cnn_classifier(), card_for(), images)
    good = root / "good"
    good.mkdir()
    for i in range(6):
        Image.fromarray(images[i, 0]).save(good / f"{i}.png")
    broken = {}
    for name, damage in (("bad-card", lambda f: (f / CARD_FILE).write_text("{ not json")),
                         ("no-weights", lambda f: (f / WEIGHTS_FILE).unlink()),
                         ("truncated-weights", lambda f: (f / WEIGHTS_FILE).write_bytes(
                             (f / WEIGHTS_FILE).read_bytes()[:500]))):
        shutil.copytree(bundle, root / name)
        damage(root / name)
        broken[name] = root / name
    yield root, broken
    shutil.rmtree(root, ignore_errors=True)


def predict(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def test_twenty_bad_inputs_each_exit_with_a_message_naming_the_file_or_flag(place, capsys, tmp_path):
    root, broken = place
    results, good = str(root / "results"), root / "good"
    out = str(tmp_path / "p.csv")
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("hello")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "truncated.png").write_bytes((good / "0.png").read_bytes()[:40])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "a-file").write_text("x")
    cases = [  # (arguments, exit status, what the message must name)
        ([str(tmp_path / "nowhere"), str(good)], 2, "nowhere"),
        ([str(tmp_path / "a-file"), str(good)], 2, "a-file"),
        ([str(tmp_path / "empty"), str(good)], 2, "holds no model bundles"),
        ([results, str(good), "--model", "vit"], 2, "--model vit"),
        ([results, str(tmp_path / "missing.png")], 2, "missing.png"),
        ([results, str(tmp_path / "*.jpeg")], 2, "*.jpeg"),
        ([results, str(tmp_path / "empty")], 2, "empty"),
        ([results, str(tmp_path / "texts")], 2, "texts"),
        ([results, str(tmp_path / "text.png")], 2, "text.png"),
        ([results, str(tmp_path / "truncated.png")], 2, "truncated.png"),
        ([results, str(tmp_path / "zero.png")], 2, "zero.png"),
        ([results, str(good), "--out", "/proc/forbidden/p.csv"], 2, "--out /proc/forbidden/p.csv"),
        ([results, str(good), "--out", str(tmp_path)], 2, f"--out {tmp_path}"),
        ([results, str(good), "--device", "cuda:7"], 2, "--device cuda:7"),
        ([results, str(good), "--device", "gpu0"], 2, "--device gpu0"),
        ([results, str(good), "--top-k", "0"], 2, "--top-k"),
        ([str(broken["bad-card"]), str(good)], 2, "bad-card"),
        ([str(broken["no-weights"]), str(good)], 2, "no-weights"),
        ([str(broken["truncated-weights"]), str(good)], 2, "truncated-weights"),
        ([results, str(good), str(tmp_path / "text.png"), str(tmp_path / "gone.png")], 1, "gone.png"),
    ]
    if torch.cuda.is_available():  # a lent GPU machine: cuda:7 is what it lacks; cuda:0 works there
        cases[13] = ([results, str(good), "--device", f"cuda:{torch.cuda.device_count()}"], 2, "--device cuda:")
    for args, status, named in cases:
        code, err = predict(capsys, *args, *([] if "--out" in args else ["--out", out]))
        assert (code, named in err, "Traceback" in err) == (status, True, False), (args, code, err)
    # The last case classified the six good images and named both bad inputs.
    assert len(pd.read_csv(out)) == 6 and "text.png" in err


def test_a_bad_flag_is_refused_before_any_image_is_decoded(place, capsys, monkeypatch):
    import imagesets.decode

    root, _ = place
    decoded = []
    monkeypatch.setattr(imagesets.decode, "decode_files", lambda *a, **k: decoded.append(a) or (np.zeros(0), []))
    for flags in (["--device", "cuda:7"], ["--out", "/proc/forbidden/p.csv"]):
        if flags[0] == "--device" and torch.cuda.device_count() > 7:
            continue
        code, err = predict(capsys, str(root / "results"), str(root / "good"), *flags)
        assert code == 2 and flags[1] in err
    assert decoded == []
