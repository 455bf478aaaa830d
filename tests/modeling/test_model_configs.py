"""Every model config composes with every RoI layer; the models build and the small ones run."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from modeling_helpers import CONFIGS, build_model, compose_model_cfg, needs_ops

from maskrcnn.modeling import GeneralizedRCNN, RoILayerSpec

MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
ROI_LAYERS = sorted(p.stem for p in (CONFIGS / "roi_layer").glob("*.yaml"))
SMALL = [m for m in MODELS if m.endswith("_small")]


def test_expected_configs_exist():
    for name in [
        "mask_rcnn_r50_fpn",
        "faster_rcnn_r50_fpn",
        "mask_rcnn_r50_c4",
        "faster_rcnn_r50_c4",
        "mask_rcnn_r50_fpn_torchvision",
        "faster_rcnn_r50_fpn_torchvision",
        "mask_rcnn_r18_fpn_small",
        "mask_rcnn_r18_c4_small",
        "faster_rcnn_r18_fpn_small",
        "faster_rcnn_r18_c4_small",
        "mask_rcnn_r50_c5",
        "mask_rcnn_r18_c5_small",
    ]:
        assert name in MODELS
    assert set(ROI_LAYERS) == {
        "roi_pool",
        "roi_align",
        "roi_align_unaligned",
        "roi_align_max",
        "roi_warp",
        "roi_warp_avg",
        "torchvision",
    }


@pytest.mark.parametrize("roi_layer", ROI_LAYERS)
def test_roi_layer_configs(roi_layer):
    cfg = compose_model_cfg("mask_rcnn_r50_fpn", roi_layer)
    spec = instantiate(cfg.roi_layer)
    assert isinstance(spec, RoILayerSpec) and spec.name == roi_layer
    assert cfg.model.roi_heads.box_pooler.roi_layer.name == roi_layer


@pytest.mark.parametrize("model", MODELS)
def test_model_configs_compose_with_every_roi_layer(model):
    for roi_layer in ROI_LAYERS:
        cfg = compose_model_cfg(model, roi_layer, num_classes=7)
        m = cfg.model
        assert m.roi_heads.box_predictor.num_classes == 7
        if "torchvision" not in model:  # the *_torchvision configs pin torchvision's RoI Align settings
            assert m.roi_heads.box_pooler.roi_layer.name == roi_layer
        if m.roi_heads.get("mask_pooler") is not None:
            assert m.roi_heads.mask_pooler.roi_layer.name == m.roi_heads.box_pooler.roi_layer.name


@pytest.mark.parametrize("model", [m for m in MODELS if not m.endswith("_small")])
def test_full_size_models_build(model):
    net = build_model(model, "roi_align", num_classes=80)
    assert isinstance(net, GeneralizedRCNN)
    assert net.roi_heads.box_predictor.cls_score.out_features == 81
    assert net.mask_on == model.startswith("mask")
    n = sum(p.numel() for p in net.parameters())
    if "_c5" in model:
        # RoIs keep res5's 2048 channels: fc6 has 2048 * 7 * 7 * 1024 = 103M weights and the RPN's
        # 3x3 conv on res5 2048 * 2048 * 9 = 38M, on top of the 23.5M of the ResNet-50 trunk.
        assert 165e6 < n < 180e6, n
    else:
        assert 30e6 < n < 60e6, n  # ResNet-50 detectors (torchvision's Mask R-CNN: 44.4M)


@pytest.mark.parametrize("model", SMALL)
def test_small_models_train_and_infer(model, two_samples):
    torch.manual_seed(0)
    # Few RoIs: the C4 head runs the whole res5 stage on every RoI.
    net = build_model(
        model,
        "torchvision",
        overrides=[
            "model.rpn.pre_nms_topk_train=300",
            "model.rpn.post_nms_topk_train=50",
            "model.rpn.pre_nms_topk_test=100",
            "model.rpn.post_nms_topk_test=20",
            "model.roi_heads.batch_size_per_image=16",
            "model.transform.min_size_test=96",
            "model.roi_heads.score_thresh=0.0",
            "model.roi_heads.detections_per_img=10",
        ],
    )
    mask_on = model.startswith("mask_rcnn")
    assert net.mask_on == mask_on
    images, targets = two_samples
    if not mask_on:  # the box-only models train on box-only targets
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    losses = net.train()(images, targets)
    box_losses = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert set(losses) == box_losses | ({"loss_mask"} if mask_on else set())
    sum(losses.values()).backward()
    with torch.no_grad():
        out = net.eval()(images)
    for img, det in zip(images, out):
        assert det["boxes"].shape[0] > 0
        if mask_on:
            assert det["masks"].shape == (det["boxes"].shape[0], 1) + tuple(img.shape[-2:])
        else:
            assert "masks" not in det


@needs_ops
def test_default_roi_layer_runs_our_kernels(two_samples):
    net = build_model(
        "mask_rcnn_r18_c4_small",
        "roi_align_max",
        overrides=["model.transform.min_size_test=96", "model.rpn.post_nms_topk_test=20"],
    )
    assert net.roi_heads.box_pooler.roi_layer.backend == "ours"
    with torch.no_grad():
        out = net.eval()(two_samples[0])
    assert len(out) == 2


@needs_ops
def test_roi_warp_trains_through_the_fpn_poolers(two_samples):
    # Four levels: each RoI rounded on its own level, one fused call; gradients reach the pyramid.
    # (roi_warp_avg differs in the mode only, which tests/ops/test_roi_layer_configs.py covers.)
    torch.manual_seed(0)
    net = build_model(
        "mask_rcnn_r18_fpn_small",
        "roi_warp",
        overrides=["model.rpn.post_nms_topk_train=30", "model.roi_heads.batch_size_per_image=16"],
    )
    assert net.roi_heads.box_pooler.roi_layer.op == net.roi_heads.mask_pooler.roi_layer.op == "roi_warp"
    losses = net.train()(*two_samples)
    assert all(torch.isfinite(v) for v in losses.values()) and "loss_mask" in losses
    sum(losses.values()).backward()
    assert net.backbone.layer_blocks[0][0].weight.grad.abs().sum() > 0  # P2, through the RoI layer


def test_mask_model_on_box_only_data_names_the_box_only_configs(two_samples):
    net = build_model("mask_rcnn_r18_fpn_small", "torchvision").train()
    images, targets = two_samples
    box_only = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    with pytest.raises(ValueError, match="model=faster_rcnn_r18_fpn_small or faster_rcnn_r18_c4_small"):
        net(images, box_only)
