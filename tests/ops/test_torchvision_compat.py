"""Our RoI ops as a drop-in for torchvision.ops: the same calls (positional and keyword forms,
tensor and list rois, empty rois, modules and their repr, MultiScaleRoIAlign in torchvision's
Mask R-CNN) give torchvision's outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from ops_helpers import assorted_rois, feature_map

from maskrcnn import ops

tv = torchvision.ops
SCALE = 0.5


def value_and_grad(fn, x, *args, **kwargs):
    x = x.detach().clone().requires_grad_()
    y = fn(x, *args, **kwargs)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # a fixed, non-uniform output gradient
    (gx,) = torch.autograd.grad(y, x, g) if y.numel() else (torch.zeros_like(x),)
    return y.detach(), gx


def assert_same(ours, theirs, x, *args, **kwargs):
    y, gx = value_and_grad(ours, x, *args, **kwargs)
    y_tv, gx_tv = value_and_grad(theirs, x, *args, **kwargs)
    assert y.shape == y_tv.shape and y.dtype == y_tv.dtype
    torch.testing.assert_close(y, y_tv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_tv, rtol=1e-12, atol=1e-12)


X = feature_map()  # (3, 4, 13, 17) float64
ROIS = assorted_rois(3, 13, 17, SCALE)
BOXES = [ROIS[ROIS[:, 0] == i, 1:] for i in range(3)]

ALIGN_CALLS = {
    "defaults": lambda f, x, r: f(x, r, 5),
    "positional": lambda f, x, r: f(x, r, (3, 2), SCALE, 2),
    "positional aligned": lambda f, x, r: f(x, r, [4, 3], SCALE, -1, True),
    "keywords": lambda f, x, r: f(
        input=x, boxes=r, output_size=3, spatial_scale=SCALE, sampling_ratio=0, aligned=False
    ),
    "keywords aligned": lambda f, x, r: f(x, r, output_size=(2, 5), spatial_scale=0.25, aligned=True),
}
POOL_CALLS = {
    "defaults": lambda f, x, r: f(x, r, 5),
    "positional": lambda f, x, r: f(x, r, (3, 2), SCALE),
    "keywords": lambda f, x, r: f(input=x, boxes=r, output_size=[4, 3], spatial_scale=0.25),
}
RO_IS = {"tensor": ROIS, "list": BOXES, "empty tensor": ROIS[:0], "empty list": [b[:0] for b in BOXES]}


@pytest.mark.parametrize("rois", list(RO_IS))
@pytest.mark.parametrize("call", list(ALIGN_CALLS))
def test_roi_align_calls(call, rois):
    c = ALIGN_CALLS[call]
    assert_same(lambda x, r: c(ops.roi_align, x, r), lambda x, r: c(tv.roi_align, x, r), X, RO_IS[rois])


@pytest.mark.parametrize("rois", list(RO_IS))
@pytest.mark.parametrize("call", list(POOL_CALLS))
def test_roi_pool_calls(call, rois):
    c = POOL_CALLS[call]
    assert_same(lambda x, r: c(ops.roi_pool, x, r), lambda x, r: c(tv.roi_pool, x, r), X, RO_IS[rois])


MODULES = {
    "RoIAlign positional": lambda m: m.RoIAlign((5, 5), 1.0, -1),
    "RoIAlign positional aligned": lambda m: m.RoIAlign(3, SCALE, 2, True),
    "RoIAlign keywords": lambda m: m.RoIAlign(output_size=[2, 3], spatial_scale=0.25, sampling_ratio=0, aligned=False),
    "RoIPool positional": lambda m: m.RoIPool((5, 5), 1.0),
    "RoIPool keywords": lambda m: m.RoIPool(output_size=3, spatial_scale=SCALE),
}


@pytest.mark.parametrize("rois", ["tensor", "list"])
@pytest.mark.parametrize("name", list(MODULES))
def test_modules(name, rois):
    ours, theirs = MODULES[name](ops), MODULES[name](tv)
    # torchvision's repr; ours adds the mode RoI Align averages or maxes with.
    expected = repr(theirs) if "Pool" in name else repr(theirs)[:-1] + ", mode='avg')"
    assert repr(ours) == expected
    assert_same(ours, theirs, X, RO_IS[rois])


def fpn_features(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # A batch padded to 128 x 160: levels 2..5 of an FPN ('pool' is not pooled from).
    sizes = {"0": (32, 40), "1": (16, 20), "2": (8, 10), "3": (4, 5), "pool": (2, 3)}
    return {k: torch.randn(2, 3, h, w, generator=g, dtype=torch.float64).to(dtype) for k, (h, w) in sizes.items()}


def fpn_boxes(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (25, 0) if seed else (25, 17):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 110 - 5
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) ** 2 * 130 + 0.5  # every level, some tiny
        out.append(torch.cat([xy, xy + wh], 1).to(dtype))
    return out


@pytest.mark.parametrize("seed", [0, 1])  # seed 1: an image without boxes
@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((["0", "1", "2", "3"], 7, 2), {}),
        ((["0", "2", "3"], (4, 3), 0), {"canonical_scale": 160}),
        ((["1"], 5, -1), {"canonical_level": 3}),
    ],
)
def test_multiscale_roi_align(args, kwargs, seed):
    feats, boxes, shapes = fpn_features(seed), fpn_boxes(seed), [(128, 150), (120, 160)]
    ours, theirs = ops.MultiScaleRoIAlign(*args, **kwargs), tv.MultiScaleRoIAlign(*args, **kwargs)
    assert repr(ours) == repr(theirs)[:-1] + ", aligned=False, mode='avg')"

    first = args[0][0]  # the gradient is checked on the finest pooled level

    def run(pooler, x):
        return pooler({**feats, first: x}, boxes, shapes)

    assert_same(lambda x: run(ours, x), lambda x: run(theirs, x), feats[first])
    assert ours.scales == theirs.scales
    assert (ours.k_min, ours.k_max) == (theirs.map_levels.k_min, theirs.map_levels.k_max)


def test_multiscale_roi_align_is_one_fused_call(monkeypatch):
    calls = []
    fused = torch.ops.maskrcnn.multilevel_roi_align
    monkeypatch.setattr(torch.ops.maskrcnn, "multilevel_roi_align", lambda *a: calls.append(1) or fused(*a))
    ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(fpn_features(), fpn_boxes(), [(128, 160)] * 2)
    assert calls == [1]


def test_torchvision_mask_rcnn_with_our_multiscale_roi_align():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    # Small and quick: 128 px images, 100 proposals and 20 detections per image.
    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=3,
        min_size=128,
        max_size=160,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
        box_detections_per_img=20,
    ).eval()
    swapped = copy.deepcopy(model)
    swapped.roi_heads.box_roi_pool = ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    swapped.roi_heads.mask_roi_pool = ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 150, generator=g), torch.rand(3, 128, 112, generator=g)]
    with torch.no_grad():
        expected, got = model(images), swapped(images)
    assert sum(len(d["boxes"]) for d in expected) > 10  # random weights, 3 classes: many detections
    for d, e in zip(got, expected):
        assert d.keys() == e.keys()
        torch.testing.assert_close(d["labels"], e["labels"], rtol=0, atol=0)
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(d[key], e[key], rtol=1e-4, atol=1e-4)
