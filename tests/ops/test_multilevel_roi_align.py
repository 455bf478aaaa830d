"""Multi-level RoI Align (CPU): equal to roi_align of each RoI on its level, forward and gradient."""

import pytest
import torch
from ops_helpers import random_rois

from maskrcnn.ops import multilevel_roi_align, roi_align

SCALES = [1 / 4, 1 / 8, 1 / 16]


def pyramid(layouts, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = []
    for level, layout in enumerate(layouts):
        f = torch.randn(2, 5, 32 >> level, 40 >> level, generator=g, dtype=torch.float64).to(dtype)
        feats.append(f.contiguous(memory_format=layout).requires_grad_())
    return feats


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize(
    "layouts",
    [[torch.contiguous_format] * 3, [torch.channels_last, torch.contiguous_format, torch.channels_last]],
)
def test_equals_per_level_roi_align(mode, sampling_ratio, layouts):
    feats = pyramid(layouts)
    rois = random_rois(2, 32, 40, 1 / 4, k=30)
    levels = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(1))
    y = multilevel_roi_align(feats, rois, levels, SCALES, (4, 3), sampling_ratio, True, mode)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, feats, g)

    expected = torch.zeros_like(y)
    for level in range(3):
        m = levels == level
        expected[m] = roi_align(feats[level], rois[m], (4, 3), SCALES[level], sampling_ratio, True, mode)
    want = torch.autograd.grad(expected, feats, g)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layouts[0] == torch.channels_last)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    for level in range(3):
        assert got[level].is_contiguous(memory_format=layouts[level])
        torch.testing.assert_close(got[level], want[level], rtol=1e-12, atol=1e-12)


def test_half_precision_and_no_rois():
    feats = pyramid([torch.contiguous_format] * 3, dtype=torch.bfloat16)
    rois = random_rois(2, 32, 40, 1 / 4, k=10, dtype=torch.float32)
    levels = torch.arange(10) % 3
    y = multilevel_roi_align(feats, rois, levels, SCALES, 2, 2, True)
    for level in range(3):
        m = levels == level
        torch.testing.assert_close(y[m], roi_align(feats[level], rois[m], 2, SCALES[level], 2, True), rtol=0, atol=0)
    empty = multilevel_roi_align(feats, rois[:0], levels[:0], SCALES, 2, 2)
    assert empty.shape == (0, 5, 2, 2)
    empty.sum().backward()
    assert all(torch.count_nonzero(f.grad) == 0 for f in feats)


def test_bad_levels_raise():
    feats = pyramid([torch.contiguous_format] * 3)
    rois = random_rois(2, 32, 40, 1 / 4, k=4)
    with pytest.raises(ValueError, match=r"levels\[2\] must be in \[0, 3\)"):
        multilevel_roi_align(feats, rois, torch.tensor([0, 1, 3, 0]), SCALES, 2)
    with pytest.raises(ValueError, match="levels must be a"):
        multilevel_roi_align(feats, rois, torch.tensor([0, 1]), SCALES, 2)
    with pytest.raises(TypeError, match="levels must be int64"):
        multilevel_roi_align(feats, rois, torch.tensor([0, 1, 2, 0], dtype=torch.int32), SCALES, 2)
    with pytest.raises(ValueError, match="spatial_scales"):
        multilevel_roi_align(feats, rois, torch.tensor([0, 1, 2, 0]), SCALES[:2], 2)
    with pytest.raises(ValueError, match=r"features\[1\]"):
        multilevel_roi_align([feats[0], feats[1][:, :3]], rois, torch.tensor([0, 1, 1, 0]), SCALES[:2], 2)
