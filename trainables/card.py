"""A model bundle's card: what it is and how to feed it, readable without torch.

``card.json`` (and the ``README.md`` rendered from it) say everything another program needs to use the
bundle's weights or ONNX graph; ``trainables.bundle`` writes and loads bundles, and ``trainables.predict`` reads
cards to choose one and to decode images before torch is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from imagesets.atomic import write_text

WEIGHTS_FILE, CARD_FILE, ONNX_FILE, README_FILE = "weights.safetensors", "card.json", "model.onnx", "README.md"
BUNDLE_FORMAT = "hpsearch-bundle"
BUNDLE_VERSION = 1
DECODING = ("each file opened with Pillow and converted once: gray by Pillow's ITU-R 601-2 luma ('L') or RGB, "
            "transparency laid over black, then resized to image_size x image_size bilinearly (Pillow, antialiased "
            "when shrinking; the aspect ratio is not kept); arrays of a registered data set go through the same calls "
            "(imagesets.decode.conform)")


class BundleError(ValueError):
    """A bundle that cannot be read: the message names the folder and what is wrong."""


def write_card(card: dict[str, Any], folder: Path) -> None:
    """``card.json`` and the ``README.md`` rendered from it."""
    for name, text in ((README_FILE, render_readme(card)), (CARD_FILE, json.dumps(card, indent=2, default=_plain))):
        write_text(folder / name, text)  # a reader sees the old card or the new one, never half of one


def _plain(value: Any) -> Any:
    """numpy scalars and other JSON strangers as plain values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.2f}%"


def render_readme(card: dict[str, Any]) -> str:
    """A short human-readable page for a bundle, from its card alone."""
    data, metrics, onnx = card["input"], card["metrics"], card["onnx"]
    names = card["class_names"]
    config = ", ".join(f"{k}={v}" for k, v in sorted(card["config"].items()) if k != "model")
    lines = [f"# {card['model']}: {card.get('description', '')}", "",
             f"Trained by hpsearch on **{card['data']['name']}** ({card['data']['source']}); "
             f"{'refit on training + validation images' if card['training']['stage'] == 'refit' else 'the search winner'}"
             f" (trial {card['selection']['trial_id']}, experiment {card['selection']['experiment']}).", "",
             "| | |", "|---|---|",
             f"| validation accuracy (what the search chose it on) | {_pct(card['selection']['val_acc'])} |",
             f"| test accuracy / macro F1 | {_pct(metrics.get('test_acc'))} / {metrics.get('test_f1', float('nan')):.4f} |",
             f"| epochs trained | {card['training']['epochs']} |",
             f"| parameters | {card['params']:,} |", "",
             f"**Input**: uint8 images, {data['channels']} x {data['image_size']} x {data['image_size']} "
             f"({'gray' if data['channels'] == 1 else 'RGB'}), values 0-255: {DECODING}.", "",
             f"**Normalization** (inside the ONNX graph and `Bundle`): per channel (x / 255 - mean) / std with mean "
             f"{card['normalization']['mean']} and std {card['normalization']['std']}.", "",
             f"**Classes** ({len(names)}, in label order): {', '.join(map(str, names[:50]))}"
             + (" ..." if len(names) > 50 else ""), "",
             f"**Configuration**: {config}", ""]
    if onnx["exported"]:
        lines += [f"**ONNX** (`{ONNX_FILE}`): input `images` uint8 (batch, {data['channels']}, {data['image_size']}, "
                  f"{data['image_size']}), output `logits` (batch, {len(names)}); checked against torch on "
                  f"{onnx['parity']['images']:,} test images (largest logit difference "
                  f"{onnx['parity']['max_abs_logit_diff']:.2g}, every predicted class the same).", ""]
    else:
        lines += [f"**ONNX**: not exported: {onnx['reason']}. Use the safetensors weights through `Bundle.load`.", ""]
    lines += ["```python", "from trainables.bundle import Bundle", "",
              "bundle = Bundle.load('.')  # this folder", "table = bundle.classify(['image.png'])  "
              "# path, predicted, probability, top-k", "```", "",
              f"Command line: `{' '.join(card.get('command') or [])}`", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), ""]
    return "\n".join(lines)


def read_card(folder: Path) -> dict[str, Any]:
    """A bundle's card, or a ``BundleError`` naming the folder and what is missing."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise BundleError(f"{folder} holds no {CARD_FILE}: not a model bundle (they are in <results>/models/<model>/)")
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} cannot be read ({e}); the bundle is damaged, write it again from its search") from None
    if card.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not an hpsearch model card (format {card.get('format')!r})")
    if not (Path(folder) / WEIGHTS_FILE).is_file():
        raise BundleError(f"{folder} lacks {WEIGHTS_FILE}; the bundle is incomplete")
    return card
