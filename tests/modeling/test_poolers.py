"""The multi-level pooler: FPN level assignment by hand, and the backends against torchvision."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from modeling_helpers import needs_ops
from torchvision.ops import MultiScaleRoIAlign

from maskrcnn.modeling.poolers import MultiLevelRoIPooler, RoILayerSpec, assign_fpn_levels


def _square(side: float, x0: float = 10.0) -> list[float]:
    return [x0, x0, x0 + side, x0 + side]


@pytest.mark.parametrize(
    "side,level",
    [
        (224, 4),
        (448, 5),
        (112, 3),
        (56, 2),  # exactly the canonical sizes (eps guards the floor)
        (223, 3),
        (447, 4),
        (300, 4),
        (1000, 5),  # in between, and above P5 (clamped)
        (20, 2),
        (1, 2),  # below P2 (clamped)
    ],
)
def test_level_assignment_hand_computed(side, level):
    boxes = torch.tensor([_square(side)])
    got = assign_fpn_levels(boxes, min_level=2, max_level=5)
    assert got.tolist() == [level - 2]


def test_level_assignment_rectangles_and_eps():
    # sqrt(w*h): 64x784 -> 224 (level 4); 100x200 -> 141.4 -> floor(4 + log2(0.631)) = 3.
    boxes = torch.tensor([[0.0, 0.0, 64.0, 784.0], [0.0, 0.0, 100.0, 200.0]])
    assert assign_fpn_levels(boxes, min_level=2, max_level=5).tolist() == [2, 1]
    # A box a hair (relative 1e-8, within eps) below 448 still maps to level 5, as in torchvision.
    s = 448 * (1 - 1e-8)
    assert assign_fpn_levels(
        torch.tensor([[0.0, 0.0, s, s]], dtype=torch.float64), min_level=2, max_level=5
    ).tolist() == [3]


def _features(seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(40, 48), (20, 24), (10, 12), (5, 6)]
    return OrderedDict((f"p{i + 2}", torch.randn(2, 8, h, w, generator=g)) for i, (h, w) in enumerate(sizes))


def _boxes(seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (30, 20):
        xy = torch.rand(n, 2, generator=g) * 150
        wh = torch.rand(n, 2, generator=g) ** 2 * 180 + 1
        out.append(torch.cat([xy, xy + wh], 1))
    return out


@pytest.mark.parametrize("backend", ["torchvision", pytest.param("ours", marks=needs_ops)])
def test_matches_torchvision_multiscale_roi_align(backend):
    feats = _features()
    boxes = _boxes()
    spec = RoILayerSpec(name="x", op="roi_align", backend=backend, aligned=False, sampling_ratio=2)
    pooler = MultiLevelRoIPooler(
        output_size=7, in_features=["p2", "p3", "p4", "p5"], strides=[4, 8, 16, 32], roi_layer=spec
    )
    ref = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)(feats, boxes, [(160, 192), (150, 180)])
    torch.testing.assert_close(pooler(feats, boxes), ref, rtol=1e-5, atol=1e-5)


@needs_ops
@pytest.mark.parametrize(
    "spec",
    [
        RoILayerSpec(name="a", op="roi_align", aligned=True, sampling_ratio=-1),
        RoILayerSpec(name="b", op="roi_align", aligned=False, sampling_ratio=3),
        RoILayerSpec(name="p", op="roi_pool"),
    ],
)
def test_ours_matches_torchvision_ops_per_level(spec):
    """Each RoI's features equal torchvision's op applied on the level Eqn. 1 chose for it."""
    feats = _features(2)
    boxes = _boxes(3)
    pooler = MultiLevelRoIPooler(output_size=5, in_features=list(feats), strides=[4, 8, 16, 32], roi_layer=spec)
    out = pooler(feats, boxes)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    levels = assign_fpn_levels(rois[:, 1:], min_level=2, max_level=5)
    for k in range(rois.shape[0]):
        lvl = int(levels[k])
        x = list(feats.values())[lvl]
        scale = 1.0 / 2 ** (lvl + 2)
        if spec.op == "roi_pool":
            ref = torchvision.ops.roi_pool(x, rois[k : k + 1], 5, scale)
        else:
            ref = torchvision.ops.roi_align(x, rois[k : k + 1], 5, scale, spec.sampling_ratio, spec.aligned)
        torch.testing.assert_close(out[k : k + 1], ref, rtol=1e-5, atol=1e-5)


@needs_ops
def test_max_mode_differs_from_avg_and_backpropagates():
    feats = _features(4)
    for f in feats.values():
        f.requires_grad_(True)
    boxes = _boxes(5)
    kw = dict(output_size=7, in_features=list(feats), strides=[4, 8, 16, 32])
    avg = MultiLevelRoIPooler(roi_layer=RoILayerSpec(name="a", sampling_ratio=2), **kw)(feats, boxes)
    mx = MultiLevelRoIPooler(roi_layer=RoILayerSpec(name="m", sampling_ratio=2, mode="max"), **kw)(feats, boxes)
    assert (mx >= avg - 1e-5).all() and (mx > avg + 1e-3).any()
    mx.sum().backward()
    assert all(f.grad is not None for f in feats.values())


def test_bad_specs_raise():
    with pytest.raises(ValueError, match="op must be one of"):
        RoILayerSpec(name="x", op="roi_crop")
    with pytest.raises(ValueError, match="roi_warp has no half-pixel offset; set roi_layer.aligned=false"):
        RoILayerSpec(name="x", op="roi_warp")  # aligned defaults to True
    with pytest.raises(ValueError, match="roi_warp is ours only"):
        RoILayerSpec(name="x", op="roi_warp", backend="torchvision", aligned=False)
    with pytest.raises(ValueError, match="backend"):
        RoILayerSpec(name="x", backend="detectron2")
    with pytest.raises(ValueError, match="max"):
        RoILayerSpec(name="x", backend="torchvision", mode="max")
    with pytest.raises(ValueError, match="powers of two"):
        MultiLevelRoIPooler(output_size=7, in_features=["a", "b"], strides=[4, 12], roi_layer=RoILayerSpec())


def test_adaptive_sampling_is_spelled_minus_one():
    assert RoILayerSpec().sampling_ratio == -1
    assert RoILayerSpec(name="x", sampling_ratio=3).sampling_ratio == 3
    with pytest.raises(ValueError, match=r"adaptive sampling is spelled -1 here: set roi_layer.sampling_ratio=-1"):
        RoILayerSpec(name="x", sampling_ratio=0)
    for bad in (-2, 1.5, True):
        with pytest.raises(ValueError, match="sampling_ratio must be -1"):
            RoILayerSpec(name="x", sampling_ratio=bad)


def test_pooler_takes_a_spec_not_a_config_dict():
    with pytest.raises(TypeError, match="roi_layer must be a RoILayerSpec"):
        MultiLevelRoIPooler(
            output_size=7,
            in_features=["p2"],
            strides=[4],
            roi_layer={"_target_": "maskrcnn.modeling.RoILayerSpec", "name": "roi_align"},
        )


def test_fpn_levels_match_torchvision_level_mapper():
    from torchvision.ops.poolers import LevelMapper

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 600
    wh = torch.exp(torch.rand(500, 2, generator=g) * 7)  # 1 to 1100 px
    boxes = torch.cat([xy, xy + wh], 1)
    exact = torch.tensor([[0.0, 0.0, 224.0 * 2**j, 224.0 * 2**j] for j in (-2, -1, 0, 1)])
    boxes = torch.cat([boxes, exact])
    ours = assign_fpn_levels(boxes, min_level=2, max_level=5)
    theirs = LevelMapper(k_min=2, k_max=5)([boxes]).to(torch.int64)
    assert torch.equal(ours, theirs)
    assert ours[-4:].tolist() == [0, 1, 2, 3]  # exactly 224 * 2**j: level 4 + j, despite log2 rounding
