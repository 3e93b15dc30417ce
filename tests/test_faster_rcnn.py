"""Faster R-CNN as a digit classifier: its targets, its predictions with and without detections, its
metrics through the shared loop, its COCO weights from a local file, and a smoke search."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torchvision.models import detection
from torchvision.ops.misc import FrozenBatchNorm2d

import models
from helpers import run_cli, search_command
from models.faster_rcnn import BACKBONES, DETECTION
from models.nets.faster_rcnn import object_boxes
from models.finetune import WeightsError, tv_builder, tv_weights, weights_file_name
from trainables.loop import evaluate, train_one_epoch
from trainables.runtime import Runtime
from models.config import TrainConfig

SPEC = models.get("faster_rcnn")
MEAN, STD = (0.1307,), (0.3081,)


def normalized(gray: torch.Tensor) -> torch.Tensor:
    """(B, H, W) intensities in [0, 1] -> (B, 1, H, W) as the batches arrive."""
    return ((gray - MEAN[0]) / STD[0]).unsqueeze(1)


def scratch(**settings) -> torch.nn.Module:
    return SPEC.build({"pretrained": False, "input_size": 64, **settings}).eval()


def test_target_box_is_the_digits_own_bounding_box_and_labels_are_shifted():
    gray = torch.zeros(3, 28, 28)
    gray[0, 5:20, 8:12] = 1.0  # rows 5..19, columns 8..11
    gray[1, 0:28, 27] = 0.9  # touches the right and both horizontal edges
    gray[1, 3, 3] = 0.1  # below the threshold: not part of the digit
    # image 2 stays blank
    boxes = object_boxes(gray)
    assert boxes.tolist() == [[8, 5, 12, 20], [27, 0, 28, 28], [0, 0, 28, 28]]
    assert ((boxes >= 0) & (boxes <= 28)).all() and (boxes[:, 2:] > boxes[:, :2]).all()

    model = scratch()
    targets = model.targets(normalized(gray), torch.tensor([0, 7, 9]))
    assert [t["labels"].tolist() for t in targets] == [[1], [8], [10]]  # 0 is the background
    assert torch.allclose(targets[0]["boxes"], boxes[:1], atol=1e-4)


def test_targets_of_real_digits_lie_inside_the_image(mnist_small):
    gray = mnist_small.train.images[:256, 0].float() / 255
    boxes = object_boxes(gray)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert ((boxes >= 0) & (boxes <= 28)).all()
    assert (width >= 1).all() and (height >= 10).all()  # every MNIST digit is at least 10 pixels tall


def test_colour_images_of_k_classes_take_the_whole_image_as_their_box():
    shape = models.DataShape(channels=3, image_size=32, num_classes=5)
    ctx = models.BuildContext(shape, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    model = SPEC.build({"pretrained": False, "input_size": 64}, ctx).eval()
    x = torch.randn(3, 3, 32, 32)
    targets = model.targets(x, torch.tensor([0, 2, 4]))
    assert [t["boxes"].tolist() for t in targets] == [[[0, 0, 32, 32]]] * 3
    assert [t["labels"].tolist() for t in targets] == [[1], [3], [5]]
    images = model.images(x)
    assert torch.allclose(images[0][1], (x[0, 1] * 0.2 + 0.4).clamp(0, 1))  # each channel un-normalized by its own
    with torch.no_grad():
        out = DETECTION.predict(model, x)
    assert out.logits.shape == (3, 5) and out.classes.max() < 5


def test_class_is_the_best_detection_when_there_is_one():
    torch.manual_seed(0)
    model = scratch(box_score_thresh=0.0)
    x = normalized(torch.rand(4, 28, 28))
    with torch.no_grad():
        out = DETECTION.predict(model, x)
        detections = model.detector(model.images(x))  # torchvision's own inference path
    assert int(out.counts["no_box_rate"]) == 0
    expected = [int(d["labels"][d["scores"].argmax()]) - 1 for d in detections]
    assert out.classes.tolist() == expected


def test_without_detections_every_image_still_gets_the_proposals_best_class():
    torch.manual_seed(0)
    model = scratch(box_score_thresh=0.99)  # an untrained detector is never that sure
    x = normalized(torch.rand(4, 28, 28))
    with torch.no_grad():
        out = DETECTION.predict(model, x)
    assert int(out.counts["no_box_rate"]) == 4
    assert out.classes.tolist() == out.logits.argmax(dim=1).tolist()
    assert torch.isfinite(out.logits).all() and out.logits.shape == (4, 10)


def test_loss_and_metrics_through_the_shared_loop(mnist_small):
    model = scratch()
    train, val = mnist_small.train.subset(64), mnist_small.val.subset(48)
    runtime = Runtime(torch.device("cpu"), amp=False, channels_last=False)
    cfg = TrainConfig(optimizer="sgd", lr=0.01, batch_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    stats = train_one_epoch(model, train, optimizer, None, cfg, runtime, task=DETECTION)
    assert stats.samples == 64 and stats.loss > 0  # the detector's summed losses
    scores = evaluate(model, val, runtime, task=DETECTION)
    assert 0.0 <= scores.acc <= 1.0 and 0.0 <= scores.f1 <= 1.0 and scores.loss > 0
    assert set(scores.rates) == {"no_box_rate"} and 0.0 <= scores.rates["no_box_rate"] <= 1.0
    assert len(scores.predictions) == 48


@pytest.fixture
def coco_file(tmp_path):
    """A COCO-shaped checkpoint of the small backbone, written by the test (no download here)."""
    builder, weights, _ = BACKBONES["mobilenet_v3_large_320"]
    torch.manual_seed(1)
    state = tv_builder(builder)(weights=None, weights_backbone=None, num_classes=91).state_dict()
    torch.save(state, tmp_path / weights_file_name(weights))
    return tmp_path, state


def test_coco_weights_load_from_the_weights_folder_with_frozen_early_layers(coco_file):
    folder, state = coco_file
    model = SPEC.build({"pretrained": True, "backbone": "mobilenet_v3_large_320", "trainable_backbone_layers": 0},
                       models.BuildContext(weights_dir=str(folder)))
    loaded = model.detector.state_dict()
    key = "backbone.body.0.0.weight"
    assert torch.equal(loaded[key], state[key])
    assert torch.equal(loaded["rpn.head.conv.0.0.weight"], state["rpn.head.conv.0.0.weight"])
    assert model.detector.roi_heads.box_predictor.cls_score.out_features == 11  # replaced: background + 10
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())  # torchvision's fine-tuning setup
    assert not any(p.requires_grad for p in model.detector.backbone.body.parameters())


def test_a_trained_detector_is_rebuilt_for_its_weights_without_the_coco_file(coco_file, monkeypatch):
    folder, _ = coco_file
    config = {"pretrained": True, "backbone": "mobilenet_v3_large_320", "input_size": 64}
    with_file = SPEC.build(config, models.BuildContext(weights_dir=str(folder))).eval()

    def no_file(*args, **kwargs):
        raise AssertionError("the COCO file was asked for")

    monkeypatch.setattr("models.nets.faster_rcnn.ensure_weights", no_file)
    without = SPEC.build(config, models.BuildContext(load_weights=False)).eval()  # a finalist's test, a bundle
    norms = [[(type(m).__name__, getattr(m, "eps", None)) for m in net.modules() if "Norm" in type(m).__name__]
             for net in (with_file, without)]
    assert norms[0] == norms[1] and ("FrozenBatchNorm2d", 1e-5) in norms[0]
    without.load_state_dict(with_file.state_dict())  # strict: the same weights and buffers
    x = normalized(torch.rand(2, 28, 28))
    with torch.no_grad():
        assert torch.equal(without(x), with_file(x))


def test_missing_coco_weights_name_the_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    weights = SPEC.weights_for({"backbone": "resnet50"})
    assert tv_weights(weights) is detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    with pytest.raises(WeightsError, match=f"{weights_file_name(weights)}.*--no-pretrained"):
        SPEC.build({"pretrained": True, "backbone": "resnet50"}, models.BuildContext(weights_dir=str(tmp_path)))


def test_search_refuses_to_start_without_every_backbone_it_may_draw(tmp_path, coco_file, capsys, monkeypatch):
    folder, _ = coco_file  # holds the small backbone's file only
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    proc = search_command(capsys, "--model", "faster_rcnn", "--weights-dir", str(folder),
                          "--storage-path", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "fasterrcnn_mobilenet_v3_large_fpn" in proc.stderr or "fasterrcnn_resnet50_fpn" in proc.stderr
    assert "--set backbone=" in proc.stderr and "--no-pretrained" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.integration
@pytest.mark.xdist_group("every-model")  # with test_take_home's: one worker runs conftest's search
def test_smoke_search_records_accuracy_f1_loss_time_and_no_box_rate(searched):
    folder, _ = searched  # conftest: a --smoke --no-pretrained search of every model
    trials = pd.read_parquet(folder / "trials.parquet").query("model == 'faster_rcnn'")
    epochs = pd.read_parquet(folder / "epochs.parquet").query("model == 'faster_rcnn'")
    finalists = pd.read_parquet(folder / "finalists.parquet").query("model == 'faster_rcnn'")
    assert trials["status"].tolist() == ["completed"] and not trials["pretrained"].any()
    assert trials[["best_val_acc", "best_val_f1", "best_val_loss", "train_time_s"]].notna().all().all()
    assert epochs["no_box_rate"].between(0, 1).all() and epochs["train_loss"].gt(0).all()
    assert finalists["model"].tolist() == ["faster_rcnn"] and finalists["test_acc"].between(0, 1).all()


def test_loading_from_the_weights_folder_leaves_torchs_cache_setting_alone(coco_file, tmp_path, monkeypatch):
    folder, _ = coco_file
    SPEC.build({"pretrained": True}, models.BuildContext(weights_dir=str(folder)))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    assert torch.hub.get_dir() == str(tmp_path / "elsewhere" / "hub")


@pytest.mark.integration
def test_pretrained_winner_is_tested_offline_with_the_searchs_weights_folder(tmp_path, coco_file, data_dir):
    folder, _ = coco_file  # the only copy of the COCO file; torch's cache is empty
    proc = run_cli("search.run", "--model", "faster_rcnn", "--gpus", "0", "--smoke", "--num-samples", "1",
                   "--max-epochs", "1", "--grace-period", "1", "--set", "backbone=mobilenet_v3_large_320",
                   "--weights-dir", str(folder), "--storage-path", str(tmp_path / "out"), "--name", "coco",
                   "--no-dashboard", "--verbose", "0", "--data-dir", str(data_dir),
                   env={"TORCH_HOME": str(tmp_path / "empty-torch-home")}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "out" / "coco" / "trials.parquet")
    finalists = pd.read_parquet(tmp_path / "out" / "coco" / "finalists.parquet")
    assert trials["pretrained"].all() and finalists["model"].tolist() == ["faster_rcnn"]


def test_the_hub_folder_moves_for_the_block_and_comes_back_pinned_or_not(tmp_path, monkeypatch):
    """torchvision reads a --weights-dir file through torch.hub's folder, moved for the block without
    writing torch's private state: $TORCH_HOME where nothing pinned it, set_dir and back where it was."""
    import torch

    from models.nets.faster_rcnn import hub_folder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "user-home"))
    with hub_folder(tmp_path / "inside"):
        assert torch.hub.get_dir() == str(tmp_path / "inside" / "hub")
    assert torch.hub.get_dir() == str(tmp_path / "user-home" / "hub")  # $TORCH_HOME still decides
    pinned = str(tmp_path / "pinned")
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # set_dir has no undo: the test's own, after it
    torch.hub.set_dir(pinned)
    with hub_folder(tmp_path / "inside"):
        assert torch.hub.get_dir() == str(tmp_path / "inside" / "hub")
    assert torch.hub.get_dir() == pinned
