"""The small Mask R-CNN end to end: training losses, overfitting, inference outputs, RoI layers."""

from __future__ import annotations

import pytest
import torch
from modeling_helpers import build_model, needs_ops, synthetic_sample

from maskrcnn.events import recording

LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
# Fewer proposals and RoIs keep every test step cheap on two CPU cores.
FAST = [
    "model.rpn.pre_nms_topk_train=300",
    "model.rpn.post_nms_topk_train=100",
    "model.rpn.pre_nms_topk_test=200",
    "model.rpn.post_nms_topk_test=50",
    "model.roi_heads.batch_size_per_image=64",
    "model.transform.min_size_test=96",
    "model.transform.max_size_test=160",
]


def _step(model, images, targets, opt=None):
    losses = model(images, targets)
    total = sum(losses.values())
    if opt is not None:
        opt.zero_grad()
        total.backward()
        opt.step()
    return losses, total


@needs_ops
def test_train_losses_finite_and_complete(two_samples):
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "roi_align", overrides=FAST).train()
    images, targets = two_samples
    with recording() as events:
        losses, total = _step(model, images, targets)
    assert set(losses) == LOSS_KEYS
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    stats = events.scalars
    assert stats["roi/num_fg"] >= 3  # the GT boxes themselves are appended to the proposals
    assert stats["rpn/num_pos"] > 0


@needs_ops
def test_overfits_two_images(two_samples):
    torch.manual_seed(0)
    # The ResNet trunk is frozen to keep the steps cheap; FPN, RPN and both heads must still learn.
    model = build_model("mask_rcnn_r18_fpn_small", "roi_align", overrides=FAST + ["model.backbone.freeze_at=5"])
    model.train()
    images, targets = two_samples
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    first = None
    history = []
    for _ in range(20):
        losses, total = _step(model, images, targets, opt)
        history.append(total.item())
        first = first if first is not None else {k: v.item() for k, v in losses.items()}
    start, end = history[0], min(history[-3:])
    assert end < 0.4 * start, history
    assert losses["loss_mask"].item() < 0.6 * first["loss_mask"]
    assert losses["loss_classifier"].item() < 0.5 * first["loss_classifier"]


def test_image_without_boxes_trains():
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "torchvision", overrides=FAST).train()
    img, tgt = synthetic_sample(64, 80, [], [], seed=4)
    img2, tgt2 = synthetic_sample(64, 64, [[5, 5, 40, 30]], [2], seed=5)
    losses, total = _step(model, [img, img2], [tgt, tgt2])
    assert set(losses) == LOSS_KEYS and torch.isfinite(total)
    losses, total = _step(model, [img], [tgt])  # a batch with no object at all
    assert torch.isfinite(total)
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_box_reg"].item() == 0
    assert losses["loss_mask"].item() == 0
    total.backward()


@pytest.mark.parametrize(
    "roi_layer",
    [
        "torchvision",
        pytest.param("roi_align", marks=needs_ops),
        pytest.param("roi_align_unaligned", marks=needs_ops),
        pytest.param("roi_align_max", marks=needs_ops),
        pytest.param("roi_pool", marks=needs_ops),
    ],
)
def test_every_roi_layer_trains_a_step(two_samples, roi_layer):
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", roi_layer, overrides=FAST).train()
    assert model.roi_heads.box_pooler.roi_layer.name == roi_layer
    assert model.roi_heads.mask_pooler.roi_layer.name == roi_layer
    before = model.roi_heads.box_head.fc6.weight.detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses, total = _step(model, *two_samples, opt)
    assert set(losses) == LOSS_KEYS and torch.isfinite(total)
    # The RoI features reached the box head: its weights moved.
    assert not torch.equal(before, model.roi_heads.box_head.fc6.weight)
    # Gradients flowed through the RoI layer into the FPN.
    assert model.backbone.layer_blocks[0][0].weight.grad.abs().sum() > 0


def test_inference_outputs_well_formed(two_samples):
    torch.manual_seed(0)
    model = build_model(
        "mask_rcnn_r18_fpn_small", "torchvision", overrides=FAST + ["model.roi_heads.score_thresh=0.0"]
    ).eval()
    images, _ = two_samples
    images = images + [torch.rand(3, 150, 50)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == len(images)
    for img, det in zip(images, out):
        h, w = img.shape[-2:]
        d = det["boxes"].shape[0]
        assert d > 0
        assert det["boxes"].dtype == torch.float32 and det["boxes"].shape == (d, 4)
        assert det["labels"].dtype == torch.int64 and det["labels"].shape == (d,)
        assert det["labels"].min() >= 1 and det["labels"].max() <= 3
        assert det["scores"].shape == (d,) and (det["scores"] >= 0).all() and (det["scores"] <= 1).all()
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w + 1e-3).all() and (b[:, 1] >= 0).all()
        assert (b[:, 3] <= h + 1e-3).all() and (b[:, 2] >= b[:, 0]).all()
        assert det["masks"].shape == (d, 1, h, w)
        assert det["masks"].min() >= 0 and det["masks"].max() <= 1
        assert d <= 50  # detections_per_img of the small config


def test_faster_rcnn_has_no_mask(two_samples):
    torch.manual_seed(0)
    model = build_model(
        "mask_rcnn_r18_fpn_small",
        "torchvision",
        overrides=FAST
        + ["~model.roi_heads.mask_pooler", "~model.roi_heads.mask_head", "~model.roi_heads.mask_predictor"],
    )
    losses = model.train()(*two_samples)
    assert set(losses) == LOSS_KEYS - {"loss_mask"}
    with torch.no_grad():
        out = model.eval()(two_samples[0])
    assert "masks" not in out[0]


def test_bad_targets_are_reported(two_samples):
    model = build_model("mask_rcnn_r18_fpn_small", "torchvision", overrides=FAST).train()
    images, targets = two_samples
    bad = [dict(t) for t in targets]
    bad[0]["boxes"] = torch.tensor([[10.0, 10.0, 5.0, 20.0], [1, 1, 9, 9]])
    with pytest.raises(ValueError, match="positive width"):
        model(images, bad)
    bad = [dict(t) for t in targets]
    del bad[1]["masks"]
    with pytest.raises(ValueError, match="masks"):
        model(images, bad)
    with pytest.raises(ValueError, match="targets"):
        model(images)


@needs_ops
def test_bfloat16_autocast_train_and_infer(two_samples):
    """Under autocast the RoI boxes, losses and outputs stay float32 (the engine's amp=bf16)."""
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "roi_align", overrides=FAST + ["model.roi_heads.score_thresh=0.0"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(*two_samples)
        assert set(losses) == LOSS_KEYS
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        with torch.no_grad():
            out = model.eval()(two_samples[0])
    assert out[0]["boxes"].dtype == torch.float32 and out[0]["boxes"].shape[0] > 0
    assert out[0]["masks"].dtype == torch.float32
