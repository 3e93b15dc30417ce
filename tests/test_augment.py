"""The augmentation policies on batches: photos cropped and resized back, TrivialAugment, and CutMix/MixUp
trained on as the cross-entropy of the mixed labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import models
from models.task import CLASSIFICATION
from trainables.augment import CROP_SCALE, augment, mix, random_resized_crop
from trainables.batches import iterate
from trainables.data import Normalization, Split
from trainables.loop import make_optimizer, train_one_epoch
from trainables.runtime import Runtime
from models.config import TrainConfig


def gradient_photos(n: int = 64, size: int = 32) -> torch.Tensor:
    """RGB images whose red channel rises left to right (0 to 248) and whose green channel rises top to bottom."""
    ramp = torch.arange(size, dtype=torch.uint8) * (248 // (size - 1))
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 0] = ramp[None, None, :]
    images[:, 1] = ramp[None, :, None]
    return images


def test_a_random_resized_crop_zooms_into_its_own_part_of_each_photo():
    photos = gradient_photos()
    cropped = random_resized_crop(photos, torch.Generator().manual_seed(0))
    assert cropped.shape == photos.shape and cropped.dtype == torch.float32
    red_span = cropped[:, 0, 0, -1] - cropped[:, 0, 0, 0]  # how much of the left-right ramp each crop kept
    green_span = cropped[:, 1, -1, 0] - cropped[:, 1, 0, 0]
    full = 248.0
    assert (red_span <= full + 1e-3).all() and (green_span <= full + 1e-3).all()
    # each crop keeps at least CROP_SCALE[0] of the area: its sides' product, as shares of the ramps, too
    assert ((red_span / full) * (green_span / full) >= CROP_SCALE[0] * 0.8).all()
    assert len({round(float(s), 1) for s in red_span}) > 10  # every image its own crop
    assert (cropped[:, 2] == 0).all()  # a channel without content stays without


def test_photos_are_cropped_and_flipped_digits_shifted_and_strong_adds_trivial_augment():
    torch.manual_seed(0)  # TrivialAugment draws from torch's global generator, as a trial seeds it
    photos, digits = gradient_photos(), gradient_photos()[:, :1, :28, :28]
    light = augment(photos, "light", mirror=True, generator=torch.Generator().manual_seed(1))
    assert light.dtype == torch.float32 and not torch.equal(light, photos.float())
    shifted = augment(digits, "light", mirror=False, generator=torch.Generator().manual_seed(1))
    assert shifted.dtype == torch.uint8  # a digit is shifted by whole pixels, not resampled
    assert torch.equal(augment(photos, "none", mirror=True), photos)
    strong = augment(photos, "strong", mirror=False, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(strong, light) and strong.shape == photos.shape
    # TrivialAugment changes colours, which a crop never does: the empty blue channel lights up in some groups
    torch.manual_seed(0)
    seen = [(augment(photos, "strong", False, torch.Generator().manual_seed(s))[:, 2] > 0).any() for s in range(10)]
    assert any(seen)


def test_mixed_batches_train_on_the_cross_entropy_of_the_mixed_labels():
    """MixUp blends whole images, CutMix pastes a box; either way the loss is the cross-entropy against
    ``lam`` of an image's own label and the rest of its partner's."""
    x = torch.randn(32, 3, 32, 32)
    labels = torch.arange(32)  # one class an image: a label names its image
    kinds = set()
    for seed in range(12):
        mixed, other, lam = mix(x, labels, torch.Generator().manual_seed(seed))
        assert 0.0 <= lam <= 1.0
        if torch.allclose(mixed, lam * x + (1 - lam) * x[other], atol=1e-6):
            kinds.add("mixup")
        else:  # CutMix: a box of the partner's, the rest the image's own; lam is the share left as it was
            kinds.add("cutmix")
            moved = labels != other
            kept = (mixed == x).all(1).flatten(1).float().mean(1)
            pasted = (mixed == x[other]).all(1).flatten(1).float().mean(1)
            assert torch.allclose(kept[moved], torch.full_like(kept[moved], lam), atol=1e-6)
            assert torch.allclose(pasted[moved], 1 - kept[moved])
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 32))
        soft = lam * F.one_hot(labels, 32).float() + (1 - lam) * F.one_hot(other, 32).float()
        expected = F.cross_entropy(model(mixed), soft, label_smoothing=0.1)
        got = CLASSIFICATION.loss(model, mixed, labels, 0.1, (other, lam))
        assert math.isclose(got.item(), expected.item(), rel_tol=1e-5)
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize("policy", ["light", "strong", "strong-mix"])
def test_a_model_trains_on_photos_under_every_policy(policy):
    """One epoch of the CNN on 64 RGB photos of 32 px: a finite loss, every image seen, and the weights moved."""
    torch.manual_seed(0)
    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), mirror=True)
    split = Split(gradient_photos(), torch.arange(64) % 4, norm=norm)
    spec = models.get("cnn")
    shape = models.DataShape(3, 32, 4)
    config = {**spec.defaults_for(shape), "augment": policy, "batch_size": 16}
    model = spec.build(config, models.BuildContext(shape, norm.mean, norm.std))
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__})
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_one_epoch(model, split, make_optimizer(model, cfg), None, cfg, Runtime(torch.device("cpu")),
                            torch.Generator().manual_seed(0))
    assert math.isfinite(stats.loss) and stats.samples == 64
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    plain = torch.cat([x for x, _ in iterate(split, 16, norm.mean, norm.std)])
    assert plain.shape == (64, 3, 32, 32)  # evaluation batches stay unaugmented
