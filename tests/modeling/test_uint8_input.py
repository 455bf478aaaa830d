"""uint8 images (our datasets' format) give the model bitwise the results of the same images as float / 255."""

from __future__ import annotations

import pytest
import torch
from modeling_helpers import build_model, needs_ops

FAST = [
    "model.rpn.pre_nms_topk_train=300",
    "model.rpn.post_nms_topk_train=100",
    "model.rpn.pre_nms_topk_test=200",
    "model.rpn.post_nms_topk_test=50",
    "model.roi_heads.batch_size_per_image=64",
    "model.transform.min_size_test=96",
    "model.transform.max_size_test=160",
    "model.roi_heads.score_thresh=0.0",
]


def _uint8_pair(two_samples):
    """The two test images quantized to uint8, and the same images as float32 in [0, 1]."""
    images, targets = two_samples
    as_uint8 = [(img * 255).round().to(torch.uint8) for img in images]
    return as_uint8, [img.float() / 255 for img in as_uint8], targets


def _losses_and_grads(model, images, targets):
    torch.manual_seed(7)  # the RPN and RoI sampling draw from it: the same draws for both inputs
    model.zero_grad(set_to_none=True)
    losses = model(images, targets)
    sum(losses.values()).backward()
    return losses, [p.grad.clone() for p in model.parameters() if p.grad is not None]


@needs_ops
def test_uint8_training_losses_and_gradients_equal_float(two_samples):
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "roi_align", overrides=FAST).train()
    as_uint8, as_float, targets = _uint8_pair(two_samples)
    losses_u8, grads_u8 = _losses_and_grads(model, as_uint8, targets)
    losses_f, grads_f = _losses_and_grads(model, as_float, targets)
    assert set(losses_u8) == set(losses_f) and len(grads_u8) == len(grads_f) > 0
    # Bitwise: the model turns uint8 x into x.to(float32) / 255, exactly what the float input is.
    for k in losses_f:
        assert torch.equal(losses_u8[k], losses_f[k]), k
    for g_u8, g_f in zip(grads_u8, grads_f):
        assert torch.equal(g_u8, g_f)


@needs_ops
def test_uint8_detections_equal_float(two_samples):
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "roi_align", overrides=FAST).eval()
    as_uint8, as_float, _ = _uint8_pair(two_samples)
    with torch.no_grad():
        out_u8, out_f = model(as_uint8), model(as_float)
    for det_u8, det_f, img in zip(out_u8, out_f, as_uint8):
        assert det_f["boxes"].shape[0] > 0  # score_thresh 0: something to compare
        assert det_f["masks"].shape[-2:] == img.shape[-2:]
        for k in ("boxes", "scores", "labels", "masks"):
            assert torch.equal(det_u8[k], det_f[k]), k


def test_other_integer_images_are_refused(two_samples):
    model = build_model("mask_rcnn_r18_fpn_small", "torchvision", overrides=FAST).eval()
    images, _ = two_samples
    with pytest.raises(
        TypeError, match=r"image 1 must be uint8 in \[0, 255\] or floating point in \[0, 1\], got torch.int32"
    ):
        model([images[0], (images[1] * 255).to(torch.int32)])


def test_float_images_keep_their_dtype():
    from maskrcnn.modeling.transform import to_float_image

    x = torch.rand(3, 4, 5, dtype=torch.float64)
    assert to_float_image(x) is x
    u = torch.arange(60, dtype=torch.uint8).reshape(3, 4, 5) * 4
    y = to_float_image(u, dtype=torch.float64)
    assert y.dtype == torch.float64 and torch.equal(y, u.double() / 255)
