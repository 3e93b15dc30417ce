"""What taking a winner home costs (a benchmark, not a test).

    python benchmarks/take_home.py [--repeats 3] [--out benchmarks/results/take_home.json]

Two figures, each in fresh processes as a user meets them, median of --repeats:

- bundling: ``trainables.bundle.write_bundle`` for the CNN and the ViT at their registered default
  configurations on MNIST (safetensors, card, ONNX export and its check with ONNX Runtime against the torch
  logits of the test on all 10,000 test images, as the search does after its test), in a fresh interpreter (so
  the exporter's imports are counted, as for the search's first winner); the test itself (``test_s``) and the
  cost-to-run measurement the search adds (``trainables.cost.measure``, ``cost_s``) are timed apart. The weights are the
  default configuration's initialization: the work (export, parity over the test split, timing) does not
  depend on what they learnt.
- predicting: ``python -m trainables.predict`` on the 10,000 MNIST test images written as 28x28 PNG files in class
  folders (so it also scores them), with the CNN's bundle, wall clock of the whole command (start-up, decoding,
  prediction, the CSV and the confusion matrix).

Needs MNIST under $SEARCH_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py: a script's folder is on its path

ROOT = Path(__file__).resolve().parents[1]

BUNDLE = """
import json, sys, time
import torch, models
from trainables.bundle import write_bundle
from trainables.cost import measure
from trainables.data import load_dataset
from trainables.inference import Classifier, score
name, folder = sys.argv[1], sys.argv[2]
data = load_dataset("mnist", download=False)
spec = models.get(name)
torch.manual_seed(0)
net = spec.build(spec.defaults_for(data.shape), models.BuildContext(data.shape, data.info.mean, data.info.std))
classifier = Classifier(net.to(memory_format=torch.channels_last), data.info.mean, data.info.std, spec.task, True)
card = {"format": "hpsearch-bundle", "format_version": 1, "model": name, "description": spec.description,
        "task": "classification", "config": {"model": name, **spec.defaults_for(data.shape)}, "params": 0,
        "input": {"dtype": "uint8", "channels": 1, "image_size": 28, "decoding": ""},
        "normalization": {"mean": list(data.info.mean), "std": list(data.info.std)},
        "class_names": list(data.info.class_names), "channels_last": True, "data": {"name": "mnist", "source": "mnist"},
        "metrics": {"val_acc": None, "test_acc": None, "test_f1": float("nan")},
        "selection": {"experiment": "benchmark", "trial_id": "-", "val_acc": 0.0},
        "training": {"stage": "search", "epochs": 0}, "command": []}
started = time.perf_counter()
reference = score(classifier, data.test.images).logits  # the search's test computes these before bundling
tested = time.perf_counter() - started
started = time.perf_counter()
written = write_bundle(folder, classifier, card, data.test.images.numpy(), reference)
bundled = time.perf_counter() - started
started = time.perf_counter()
cost = measure(classifier, 1, 28, "cpu")
print(json.dumps({"bundle_s": bundled, "test_s": tested, "cost_s": time.perf_counter() - started, "onnx": written["onnx"]["exported"],
                  "parity_images": written["onnx"]["parity"]["images"], "latency_ms": cost.latency_ms,
                  "throughput_ips": cost.throughput_ips, "threads": cost.threads}))
"""


def bundle_once(name: str, folder: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", BUNDLE, name, str(folder)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_pngs(root: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from trainables.data import load_dataset

    test = load_dataset("mnist", download=False).test
    for i, (image, label) in enumerate(zip(test.images.numpy(), test.labels.numpy())):
        path = root / str(int(label)) / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(path)
    return len(test)


def predict_once(bundle: Path, images: Path, out: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trainables.predict", str(bundle), str(images), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, proc.stdout.splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "take_home.json"))
    args = parser.parse_args()
    record: dict = {"machine": describe(), "command": "python benchmarks/take_home.py --repeats "
                    f"{args.repeats}", "bundle": {}, "predict": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("cnn", "vit"):
            runs = [bundle_once(name, tmp / f"{name}-{i}") for i in range(args.repeats)]
            record["bundle"][name] = {
                "bundle_s_median": statistics.median(r["bundle_s"] for r in runs),
                "test_s_median": statistics.median(r["test_s"] for r in runs),
                "cost_s_median": statistics.median(r["cost_s"] for r in runs), "runs": runs}
            print(name, json.dumps(record["bundle"][name]["bundle_s_median"]), "s to bundle", flush=True)
        count = write_pngs(tmp / "pngs")
        times, lines = zip(*(predict_once(tmp / "cnn-0", tmp / "pngs", tmp / "p.csv") for _ in range(args.repeats)))
        record["predict"] = {"images": count, "seconds": list(times), "seconds_median": statistics.median(times),
                             "images_per_s": count / statistics.median(times), "first_line": lines[-1]}
        print("predict:", record["predict"]["seconds_median"], "s for", count, "PNG images", flush=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if not os.environ.get("SEARCH_DATA_DIR"):
        sys.exit("set SEARCH_DATA_DIR to the folder holding MNIST/raw")
    main()
