"""Our Mask / Faster R-CNN with weights converted from torchvision's gives torchvision's detections.

torchvision's model is built as ``maskrcnn_resnet50_fpn`` builds it for pretrained weights
(FrozenBatchNorm2d with eps 0, three trainable stages) with random weights; the predictor biases
are perturbed so that random weights produce confident, well-separated detections. Images are
small (min_size 160) to keep the test fast.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from modeling_helpers import build_model, needs_ops
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn.modeling.torchvision_compat import convert_torchvision_state_dict

NUM_CLASSES = 4  # foreground classes; torchvision's num_classes counts the background too
MIN_SIZE, MAX_SIZE = 160, 256
SCORE_THRESH, DETS = 0.02, 40


def _torchvision_model(mask: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3)
    cls = MaskRCNN if mask else FasterRCNN
    model = cls(
        backbone,
        num_classes=NUM_CLASSES + 1,
        min_size=MIN_SIZE,
        max_size=MAX_SIZE,
        box_score_thresh=SCORE_THRESH,
        box_detections_per_img=DETS,
    )
    overwrite_eps(model, 0.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():  # non-trivial frozen BN statistics
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.numel()
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
        for conv in model.backbone.fpn.layer_blocks:  # FPN outputs of order 1, not 100s
            conv[0].weight.mul_(0.01)
        pred = model.roi_heads.box_predictor
        pred.cls_score.bias.copy_(torch.tensor([0.0, 2.0, 1.5, 1.0, 0.5]) * 3)
        pred.cls_score.weight.mul_(3)
        pred.bbox_pred.weight.mul_(2)
        model.rpn.head.cls_logits.weight.mul_(50)
        model.rpn.head.bbox_pred.weight.mul_(5)
    return model.eval()


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    a = torch.rand(3, 120, 150, generator=g)
    a[:, 30:90, 20:100] = 0.9
    b = torch.rand(3, 140, 100, generator=g)
    b[0, 10:70, 10:60] = 1.0
    return [a, b]


def _ours(model_name: str, tv_model: torch.nn.Module, arch: str, backend: str):
    overrides = [
        f"model.transform.min_size_test={MIN_SIZE}",
        f"model.transform.max_size_test={MAX_SIZE}",
        f"model.roi_heads.score_thresh={SCORE_THRESH}",
        f"model.roi_heads.detections_per_img={DETS}",
        f"model.roi_heads.box_pooler.roi_layer.backend={backend}",
    ]
    if "mask" in model_name:
        overrides.append(f"model.roi_heads.mask_pooler.roi_layer.backend={backend}")
    ours = build_model(model_name, num_classes=NUM_CLASSES, overrides=overrides)
    state = convert_torchvision_state_dict(tv_model.state_dict(), arch=arch)
    ours.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    return ours.eval()


def _compare(ref: list[dict], out: list[dict], mask: bool) -> dict[str, float]:
    worst = {"boxes": 0.0, "scores": 0.0, "masks": 0.0}
    for r, o in zip(ref, out):
        assert r["boxes"].shape[0] > 3, "the random model should detect something"
        assert o["boxes"].shape == r["boxes"].shape
        torch.testing.assert_close(o["labels"], r["labels"], rtol=0, atol=0)
        torch.testing.assert_close(o["boxes"], r["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(o["scores"], r["scores"], rtol=0, atol=1e-5)
        worst["boxes"] = max(worst["boxes"], (o["boxes"] - r["boxes"]).abs().max().item())
        worst["scores"] = max(worst["scores"], (o["scores"] - r["scores"]).abs().max().item())
        if mask:
            assert o["masks"].shape == r["masks"].shape
            torch.testing.assert_close(o["masks"], r["masks"], rtol=0, atol=1e-4)
            worst["masks"] = max(worst["masks"], (o["masks"] - r["masks"]).abs().max().item())
    return worst


@pytest.fixture(scope="module")
def tv_mask():
    model = _torchvision_model(mask=True)
    with torch.no_grad():
        return model, model(_images())


@pytest.mark.parametrize("backend", ["torchvision", pytest.param("ours", marks=needs_ops)])
def test_mask_rcnn_matches_torchvision(tv_mask, backend):
    tv_model, ref = tv_mask
    ours = _ours("mask_rcnn_r50_fpn_torchvision", tv_model, "maskrcnn_resnet50_fpn", backend)
    with torch.no_grad():
        out = ours(_images())
    worst = _compare(ref, out, mask=True)
    print("worst abs differences", worst)


def test_faster_rcnn_matches_torchvision():
    tv_model = _torchvision_model(mask=False)
    ours = _ours("faster_rcnn_r50_fpn_torchvision", tv_model, "fasterrcnn_resnet50_fpn", "torchvision")
    with torch.no_grad():
        ref = tv_model(_images())
        out = ours(_images())
    _compare(ref, out, mask=False)
