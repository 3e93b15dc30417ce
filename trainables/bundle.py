"""A trained winner as a bundle that stands alone: safetensors weights, a model card, an ONNX graph.

``<results>/models/<model>/`` holds

- ``weights.safetensors``: the network's weights (no optimizer state, no pickle);
- ``card.json`` (and ``README.md`` rendered from it): the architecture and its whole configuration, the
  input (channels, size, how images were decoded and resized), the per-channel normalization, the class
  names in label order, metrics, epochs, seed, the command line and versions; everything needed to use it;
- ``model.onnx``: uint8 (N, C, S, S) images in (the normalization is inside the graph), logits out, with a
  dynamic batch; checked against torch on the test split when written. Where a model cannot be exported
  (Faster R-CNN's detector), the card says why and the safetensors bundle serves everything else.

``Bundle.load(folder)`` is the Python entry point; ``trainables.predict`` the command line.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import models
from imagesets.atomic import staged_folder
from trainables.card import (BUNDLE_FORMAT, BUNDLE_VERSION, CARD_FILE, DECODING, ONNX_FILE, WEIGHTS_FILE,  # noqa: F401
                             BundleError, read_card, write_card)
from trainables.batches import eval_batch
from trainables.inference import Classifier, Scored, score

LOGIT_TOLERANCE = 1e-3  # ONNX Runtime against torch, fp32
PARITY_IMAGES = 10_000  # test images the ONNX check runs (all of a test split up to this size)


def versions() -> dict[str, str]:
    """The library versions a bundle was made with."""
    import torchvision

    found = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}
    for name in ("onnx", "onnxruntime", "safetensors", "timm"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def own_model(card: dict[str, Any]) -> models.ModelSpec:
    """The spec of a bundle's model of the user's own: registered already, or loaded from the file the card names
    (a warning where the file changed since the bundle was made); a clear error where that file is gone."""
    from models import external

    origin = card["origin"]
    if card["model"] not in models.names():
        module = origin.get("module")
        if module and external.importable(module):  # as it was loaded: its package's imports work
            external.load(module)
        elif Path(origin["file"]).is_file():
            external.load(origin["file"])
        else:
            raise FileNotFoundError(f"this bundle's model {card['model']!r} is defined in {origin['file']}, which is not "
                                    "there: put that file back, or load it first (--models-from)")
    if Path(origin["file"]).is_file() and external.sha256(origin["file"]) != origin["sha256"]:
        print(f"warning: {origin['file']} changed since this bundle was made (SHA-256 {origin['sha256'][:12]}...)",
              file=sys.stderr)
    return models.get(card["model"])


def save_weights(network: torch.nn.Module, path: Path) -> None:
    """The network's weights and buffers as safetensors (tied weights stored once; any memory layout)."""
    from safetensors.torch import save_model

    save_model(network, str(path), metadata={"format": "pt"}, force_contiguous=True)


def export_onnx(classifier: Classifier, path: Path, channels: int, size: int) -> None:
    """``classifier`` (on the CPU, fp32) as ONNX: input ``images`` uint8 (batch, C, S, S), output ``logits``."""
    example = torch.zeros((2, channels, size, size), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=65_536)
    # The exporter prints its progress, and a graph it cannot export in full (pages of it): the card keeps
    # what matters (``export_failure``), the search's output stays readable.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(classifier, (example,), str(path), dynamo=True, input_names=["images"],
                          output_names=["logits"], dynamic_shapes={"images": {0: batch}}, external_data=False,
                          verbose=False)


def onnx_session(path: Path):
    """An ONNX Runtime session on the CPU for ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits of uint8 (N, C, S, S) ``images`` from an ONNX Runtime session, ``batch_size`` at a time (fewer
    for large images, as the evaluation loop: ``eval_batch``)."""
    size = eval_batch(images, batch_size)
    parts = [session.run(None, {"images": np.ascontiguousarray(images[i:i + size])})[0]
             for i in range(0, len(images), size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def parity(torch_logits: np.ndarray, onnx_logits: np.ndarray) -> dict[str, Any]:
    """How ONNX Runtime's logits agree with torch's: the largest difference, and the images whose predicted
    class differs although torch's two best scores are further apart than twice that difference (within the
    tolerance): a real disagreement, not a tie that rounding breaks either way."""
    diff = float(np.abs(torch_logits - onnx_logits).max()) if len(torch_logits) else 0.0
    top2 = np.sort(torch_logits, axis=1)[:, -2:] if torch_logits.shape[1] > 1 else np.zeros((len(torch_logits), 2))
    margin = top2[:, 1] - top2[:, 0]
    differ = torch_logits.argmax(1) != onnx_logits.argmax(1)
    ties = int((differ & (margin <= 2 * min(diff, LOGIT_TOLERANCE))).sum())
    return {"images": int(len(torch_logits)), "max_abs_logit_diff": diff, "tolerance": LOGIT_TOLERANCE,
            "classes_differ": int(differ.sum()) - ties, "ties": ties,
            "passed": bool(diff <= LOGIT_TOLERANCE and int(differ.sum()) - ties == 0)}


def export_checked(classifier: Classifier, folder: Path, channels: int, size: int, test_images: np.ndarray,
                   reference: np.ndarray | None = None) -> dict[str, Any]:
    """Export ``classifier`` to ``folder/model.onnx`` and check it against torch (fp32) on up to
    ``PARITY_IMAGES`` test images: against ``reference``, the logits its test computed on the CPU, where given,
    else against the classifier run on the CPU now. Returns the card's ``onnx`` entry; a model that cannot be
    exported, or whose graph disagrees, leaves no file and the entry says why."""
    cpu = copy.deepcopy(classifier).cpu().float().eval()
    cpu.network.to(memory_format=torch.contiguous_format)
    cpu.channels_last = False
    path = folder / ONNX_FILE
    try:
        export_onnx(cpu, path, channels, size)
        images = test_images[:PARITY_IMAGES]
        expected = reference[:PARITY_IMAGES] if reference is not None else score(cpu, images, "cpu").logits
        check = parity(expected, run_onnx(onnx_session(path), images))
    except Exception as e:  # torch.export refuses data-dependent graphs; onnx may be missing
        path.unlink(missing_ok=True)
        return {"file": None, "exported": False, "reason": export_failure(e)}
    if not check["passed"]:
        path.unlink(missing_ok=True)
        return {"file": None, "exported": False, "parity": check,
                "reason": f"ONNX Runtime disagrees with torch on the test split (largest logit difference "
                          f"{check['max_abs_logit_diff']:.2g}, {check['classes_differ']} predicted classes differ)"}
    return {"file": ONNX_FILE, "exported": True, "reason": None, "parity": check,
            "input": {"name": "images", "dtype": "uint8", "shape": ["batch", channels, size, size]},
            "output": {"name": "logits", "dtype": "float32", "shape": ["batch", "classes"]}}


def export_failure(error: BaseException) -> str:
    """The root cause of a failed export in one line (torch.export wraps it in pages of advice)."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    first = next((line.strip() for line in str(root).splitlines() if line.strip()), "")
    if type(root).__name__ == "GuardOnDataDependentSymNode":
        return ("torch.export cannot trace this graph: its shapes depend on the data (a detector keeps a different "
                f"number of proposals and detections per image): {first[:200]}")
    if isinstance(root, ImportError):
        return f"ONNX export needs the onnx and onnxscript packages ({first[:200]}); pip install onnx onnxscript"
    return f"{type(root).__name__}: {first[:300]}"


def write_bundle(folder: Path, classifier: Classifier, card: dict[str, Any], test_images: np.ndarray,
                 reference: np.ndarray | None = None) -> dict[str, Any]:
    """Write the bundle of ``classifier`` to ``folder`` (replacing an earlier one only once the new one is
    complete); ``card`` is completed with the files, the ONNX check (against ``reference``, the test's CPU
    logits, where given) and the versions, and returned."""
    with staged_folder(Path(folder)) as staging:
        save_weights(copy.deepcopy(classifier.network).cpu(), staging / WEIGHTS_FILE)
        channels, size = card["input"]["channels"], card["input"]["image_size"]
        card = {**card, "onnx": export_checked(classifier, staging, channels, size, test_images, reference),
                "versions": versions()}
        card["files"] = {"weights": WEIGHTS_FILE, "onnx": card["onnx"]["file"], "card": CARD_FILE,
                         "weights_mb": (staging / WEIGHTS_FILE).stat().st_size / 2**20,
                         "onnx_mb": (staging / ONNX_FILE).stat().st_size / 2**20 if card["onnx"]["exported"] else None}
        write_card(card, staging)
    return card


@dataclass
class Bundle:
    """A bundle loaded for prediction: ``classifier`` on ``device``, its card, and what it expects."""

    folder: Path
    card: dict[str, Any]
    classifier: Classifier
    device: torch.device

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device | None = None,
             weights_dir: str | None = None) -> "Bundle":
        """Read the bundle in ``folder`` onto ``device`` (default: the first GPU if any, else the CPU).
        ``weights_dir`` is needed only by a pretrained detector, whose architecture torchvision builds
        from its COCO file (the card says so)."""
        from safetensors.torch import load_model

        folder = Path(folder)
        card = read_card(folder)
        device = torch.device(device) if device else torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        spec = models.get(card["model"]) if "origin" not in card else own_model(card)
        data = card["input"]
        shape = models.DataShape(data["channels"], data["image_size"], len(card["class_names"]))
        mean, std = tuple(card["normalization"]["mean"]), tuple(card["normalization"]["std"])
        network = spec.build(card["config"], models.BuildContext(shape, mean, std, weights_dir, load_weights=False))
        load_model(network, str(folder / WEIGHTS_FILE), strict=True)
        channels_last = bool(card.get("channels_last", True))
        network = network.to(device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        return cls(folder, card, Classifier(network, mean, std, spec.task, channels_last).eval(), device)

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    @property
    def channels(self) -> int:
        return int(self.card["input"]["channels"])

    @property
    def image_size(self) -> int:
        return int(self.card["input"]["image_size"])

    def predict(self, images: np.ndarray | torch.Tensor) -> Scored:
        """Logits, probabilities and classes of uint8 (N, C, S, S) ``images`` (as decoded)."""
        images = np.asarray(images) if not isinstance(images, torch.Tensor) else images
        if tuple(images.shape[1:]) != (self.channels, self.image_size, self.image_size) or images.dtype not in (
                np.uint8, torch.uint8):
            raise ValueError(f"expected uint8 images of shape (N, {self.channels}, {self.image_size}, "
                             f"{self.image_size}), got {images.dtype} {tuple(images.shape)}; decode files with "
                             "Bundle.classify, or imagesets.decode.decode_files")
        return score(self.classifier, images, self.device)

    def decode(self, paths: Sequence[str]) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
        """(images of the files that decoded, their paths, the files that did not with why), decoded the way
        the search decoded its data."""
        from imagesets.decode import decode_files

        paths = [str(p) for p in paths]
        images, failed = decode_files(paths, self.channels, self.image_size)
        bad = {p for p, _ in failed}
        return images, [p for p in paths if p not in bad], failed

    def classify(self, paths: Sequence[str], top_k: int = 3) -> pd.DataFrame:
        """A table with a row per readable file: ``path``, ``predicted`` (the class name), ``probability``,
        then ``top<i>``/``top<i>_probability`` for the ``top_k`` most probable classes. Unreadable files are
        left out (``decode`` names them)."""
        images, kept, _ = self.decode(paths)
        return self.table(kept, self.predict(images), top_k)

    def table(self, paths: Sequence[str], scored: Scored, top_k: int = 3) -> pd.DataFrame:
        """``classify``'s table for images already scored."""
        names = np.asarray(self.class_names, dtype=object)
        probs = scored.probabilities
        k = max(1, min(top_k, len(names)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(probs))
        table = pd.DataFrame({"path": list(paths), "predicted": names[scored.classes] if len(probs) else [],
                              "probability": probs[rows, scored.classes] if len(probs) else []})
        for i in range(k):
            table[f"top{i + 1}"] = names[order[:, i]] if len(probs) else []
            table[f"top{i + 1}_probability"] = probs[rows, order[:, i]] if len(probs) else []
        return table
