"""The C5 models (Table 2d of the Mask R-CNN paper): RPN and RoI heads on res5, stride 32, with
the FPN-style heads (2-FC box head on 7x7 RoIs, 4-conv mask head on 14x14 RoIs)."""

from __future__ import annotations

import pytest
import torch
from modeling_helpers import build_model, needs_ops

from maskrcnn.modeling import ResNetC5, StandardRoIHeads, TwoMLPHead
from maskrcnn.ops import roi_align_reference, roi_pool_reference

SMALL = "mask_rcnn_r18_c5_small"


def test_small_c5_model_is_res5_with_fpn_style_heads():
    net = build_model(SMALL, "roi_align", num_classes=3)
    assert isinstance(net.backbone, ResNetC5) and hasattr(net.backbone.body, "layer4")
    heads = net.roi_heads
    assert isinstance(heads, StandardRoIHeads) and isinstance(heads.box_head, TwoMLPHead)
    for pooler, size in ((heads.box_pooler, 7), (heads.mask_pooler, 14)):
        assert pooler.in_features == ["res5"] and pooler.scales == [1 / 32] and pooler.output_size == (size, size)
    assert heads.box_head.fc6.in_features == 512 * 7 * 7  # all res5 channels of ResNet-18
    assert len([m for m in heads.mask_head.convs if isinstance(m, torch.nn.Conv2d)]) == 4


@needs_ops
@pytest.mark.parametrize("roi_layer", ["roi_align_max", "roi_pool"])  # Table 2d's two rows
def test_rois_are_pooled_from_res5_at_one_32nd(roi_layer):
    torch.manual_seed(0)
    net = build_model(SMALL, roi_layer, num_classes=3).eval()
    image = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        features = net.backbone(image)
    assert list(features) == ["res5"] and features["res5"].shape == (1, 512, 3, 4)
    res5 = features["res5"].requires_grad_()
    boxes = [torch.tensor([[3.0, 5.0, 70.0, 90.0], [40.0, 10.0, 120.0, 60.0]])]
    rois = torch.cat([torch.zeros(2, 1), boxes[0]], 1)
    box_rois = net.roi_heads.box_pooler(features, boxes)
    mask_rois = net.roi_heads.mask_pooler(features, boxes)
    if roi_layer == "roi_pool":
        expected = roi_pool_reference(res5, rois, 7, 1 / 32)
    else:  # aligned, 2 x 2 samples, max
        expected = roi_align_reference(res5, rois, 7, 1 / 32, 2, True, "max")
    torch.testing.assert_close(box_rois, expected)
    (grad,) = torch.autograd.grad(mask_rois.sum(), res5)
    assert grad.abs().sum() > 0  # the mask branch's gradient reaches res5 through the RoI layer
    with torch.no_grad():
        assert net.roi_heads.box_head(box_rois).shape == (2, 256)
        logits = net.roi_heads.mask_predictor(net.roi_heads.mask_head(mask_rois))
    assert mask_rois.shape == (2, 512, 14, 14)
    assert logits.shape == (2, 4, 28, 28)  # 3 classes + background, 28 x 28 masks


def test_small_c5_model_is_among_the_models_that_train_and_infer():
    # test_model_configs.py::test_small_models_train_and_infer runs a training step (forward and
    # backward) and inference of every *_small model on tiny images; this one must be one of them.
    from test_model_configs import SMALL as SMALL_MODELS

    assert SMALL in SMALL_MODELS
