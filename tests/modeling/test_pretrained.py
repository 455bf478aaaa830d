"""Pretrained weights by torchvision's names, offline: a temporary TORCH_HOME seeded with random
weights under torchvision's own file names (the oracle of which file is read), and the error of a
name that is neither cached nor downloadable."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
import torchvision
from modeling_helpers import build_model

from maskrcnn.modeling import Res5Head, ResNetC4, ResNetFPN
from maskrcnn.modeling.pretrained import PREDICTOR_KEYS, PretrainedError, initialize_detector

MASK_INIT = "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """$TORCH_HOME with ResNet-18 ImageNet and Mask R-CNN COCO weights (random, seeded) under the
    names torchvision downloads them as; returns (torch_home, {file name: state dict})."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    # Random BN statistics, so that loading them is visible.
    for key, value in resnet.items():
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    detector = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    states = {"resnet18-f37072fd.pth": resnet, "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth": detector}
    for name, state in states.items():
        torch.save(state, checkpoints / name)
    return home, states


@pytest.fixture
def torch_home(hub, monkeypatch):
    home, states = hub
    monkeypatch.setenv("TORCH_HOME", str(home))
    return states


@pytest.fixture
def offline(monkeypatch):
    """No network: torch.hub's download fails at once, as it does without a connection."""

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_backbone_weights_by_name_come_from_the_torch_hub_cache(torch_home, offline):
    ref = torch_home["resnet18-f37072fd.pth"]
    for name in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"):
        fpn = ResNetFPN(depth=18, norm="frozen_bn", weights=name, out_channels=16)
        torch.testing.assert_close(fpn.body.layer2[0].conv1.weight, ref["layer2.0.conv1.weight"], rtol=0, atol=0)
        torch.testing.assert_close(fpn.body.bn1.running_var, ref["bn1.running_var"], rtol=0, atol=0)
    # The C4 model's res5 box head takes the same file's layer4.
    c4, res5 = ResNetC4(depth=18, weights="IMAGENET1K_V1"), Res5Head(depth=18, weights="IMAGENET1K_V1")
    torch.testing.assert_close(c4.body.layer3[1].conv2.weight, ref["layer3.1.conv2.weight"], rtol=0, atol=0)
    torch.testing.assert_close(res5.layer4[1].conv2.weight, ref["layer4.1.conv2.weight"], rtol=0, atol=0)


def test_backbone_weights_names_that_do_not_exist_say_what_does():
    with pytest.raises(PretrainedError, match=r"no weights 'IMAGENET1K_V2'.*\['IMAGENET1K_V1'\]"):
        ResNetFPN(depth=18, weights="IMAGENET1K_V2")
    with pytest.raises(PretrainedError, match="ResNet-18.*ResNet18_Weights"):
        ResNetFPN(depth=18, weights="ResNet50_Weights.IMAGENET1K_V2")


def test_offline_and_not_cached_names_the_file_the_url_and_where_to_put_it(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(PretrainedError) as info:
        ResNetFPN(depth=50, weights="IMAGENET1K_V2")
    message = str(info.value)
    assert "\n" not in message
    for part in (
        "model.backbone.weights=ResNet50_Weights.IMAGENET1K_V2",
        "resnet50-11ad3fa6.pth",
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        str(target),
        "failed",
    ):
        assert part in message, part
    with pytest.raises(PretrainedError, match="maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth.*https://download"):
        initialize_detector(torch.nn.Linear(1, 1), MASK_INIT)


@pytest.fixture(scope="module")
def tv_model(hub):
    """torchvision's Mask R-CNN holding the seeded COCO weights: the oracle of what is kept."""
    _, states = hub
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model.load_state_dict(states["maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"])
    return model


def test_coco_init_onto_3_classes_keeps_all_but_the_predictors(torch_home, offline, tv_model, caplog):
    model = build_model("mask_rcnn_r50_fpn_torchvision", num_classes=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k in PREDICTOR_KEYS}
    with caplog.at_level(logging.INFO, logger="maskrcnn.modeling.pretrained"):
        report = initialize_detector(model, MASK_INIT)
    assert sorted(report.new) == sorted(PREDICTOR_KEYS) and not report.unused
    assert len(report.kept) == len(model.state_dict()) - len(PREDICTOR_KEYS)
    state = model.state_dict()
    for key in PREDICTOR_KEYS:  # as the model initialised them, at the 3-class shapes
        torch.testing.assert_close(state[key], fresh[key], rtol=0, atol=0)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
    tv = tv_model.state_dict()
    for ours, theirs in [
        ("backbone.body.layer3.2.conv1.weight", "backbone.body.layer3.2.conv1.weight"),
        ("backbone.inner_blocks.1.0.weight", "backbone.fpn.inner_blocks.1.0.weight"),
        ("rpn.head.conv.weight", "rpn.head.conv.0.0.weight"),
        ("roi_heads.box_head.fc7.weight", "roi_heads.box_head.fc7.weight"),
        ("roi_heads.mask_head.convs.6.weight", "roi_heads.mask_head.3.0.weight"),
        ("roi_heads.mask_predictor.conv5_mask.weight", "roi_heads.mask_predictor.conv5_mask.weight"),
    ]:
        torch.testing.assert_close(state[ours], tv[theirs], rtol=0, atol=0, msg=ours)
    text = caplog.text
    assert f"model.init={MASK_INIT}: kept {len(report.kept)} tensors" in text
    assert "6 new tensors" in text and "roi_heads.box_predictor.cls_score.weight [4, 1024] (source [91, 1024])" in text


def test_coco_init_with_80_classes_keeps_the_rows_of_the_coco_categories(torch_home, offline, tv_model):
    model = build_model("faster_rcnn_r50_fpn_torchvision", num_classes=80)
    report = initialize_detector(model, MASK_INIT)
    assert report.new == [] and all(k.startswith("roi_heads.mask_") for k in report.unused)
    cls = model.state_dict()["roi_heads.box_predictor.cls_score.weight"]
    tv = tv_model.state_dict()["roi_heads.box_predictor.cls_score.weight"]
    # label 1 = person (id 1), label 12 = stop sign (id 13: id 12 is unused), label 80 = toothbrush (id 90)
    for label, category_id in [(0, 0), (1, 1), (12, 13), (80, 90)]:
        torch.testing.assert_close(cls[label], tv[category_id], rtol=0, atol=0)


def test_init_from_files_and_names_that_do_not_fit(torch_home, offline, tmp_path, hub):
    home, _ = hub
    model = build_model("mask_rcnn_r50_fpn_torchvision", num_classes=3)
    # A torchvision state dict by path (the cached file itself) ...
    initialize_detector(model, str(home / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"))
    # ... and our own checkpoint format ({"model": ..., "meta": ...}): all of it is kept.
    ours = tmp_path / "model_final.pt"
    torch.save({"model": model.state_dict(), "meta": {"num_classes": 3}}, ours)
    expected = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.zero_()
    assert initialize_detector(model, str(ours)).new == []
    torch.testing.assert_close(model.roi_heads.box_predictor.cls_score.weight, expected, rtol=0, atol=0)
    with pytest.raises(PretrainedError, match="does not fit this model.*mask_rcnn_r50_fpn_torchvision"):
        initialize_detector(build_model("mask_rcnn_r18_fpn_small"), MASK_INIT)
    with pytest.raises(PretrainedError, match="another architecture"):
        initialize_detector(model, "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
    with pytest.raises(PretrainedError, match="not a torchvision detection weights name"):
        initialize_detector(model, "COCO_V1")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        initialize_detector(model, str(tmp_path / "missing.pth"))
