"""RoI Warp (docs/ops.md, "RoI Warp"): hand-computed cases from the definition, equality with RoI
Align (aligned=False) of boxes quantized here by an independent rounding (Python's decimal,
ties away from zero, on the float32 / float64 product), RoI Pool's kernels as a second oracle of
the rounding, gradients, the module and the reference."""

from __future__ import annotations

import struct
from decimal import ROUND_HALF_UP, Decimal

import pytest
import torch
from ops_helpers import assorted_rois, feature_map

from maskrcnn.ops import RoIWarp, quantize_rois, roi_align, roi_pool, roi_warp, roi_warp_reference


def linear_map(h: int, w: int, dtype=torch.float64) -> torch.Tensor:
    """(1, 1, h, w) with value 10 * y + x at cell (y, x): bilinear interpolation of a linear
    function is exact, so a sample at (y, x) inside [0, h - 1] x [0, w - 1] reads 10 * y + x."""
    y = torch.arange(h, dtype=dtype).view(-1, 1)
    x = torch.arange(w, dtype=dtype).view(1, -1)
    return (10 * y + x).view(1, 1, h, w)


def box(*corners, index=0.0, dtype=torch.float64):
    return torch.tensor([[index, *corners]], dtype=dtype)


# ------------------------------------------------------------------------------------------------
# Hand-computed cases (values worked out in the comments from the definition)
# ------------------------------------------------------------------------------------------------


def test_ties_round_away_from_zero_then_unaligned_samples():
    # Box (8, 8, 56, 40) px at 1/16: corners 0.5, 0.5, 3.5, 2.5 round (half away from zero) to
    # 1, 1, 4, 3 (torch.round would give 0, 0, 4, 2). RoI 3 x 2 cells, one bin, 2 x 2 samples at
    # x = 1 + 3 * (0.5, 1.5) / 2 = 1.75, 3.25 and y = 1 + 2 * (0.5, 1.5) / 2 = 1.5, 2.5
    # (no half-pixel offset). avg = 10 * 2 + 2.5, max = 10 * 2.5 + 3.25.
    x = linear_map(6, 8)
    rois = box(8.0, 8.0, 56.0, 40.0)
    assert roi_warp(x, rois, 1, 1 / 16, 2, mode="avg").item() == 22.5
    assert roi_warp(x, rois, 1, 1 / 16, 2, mode="max").item() == 28.25
    assert roi_warp(x, rois, 1, 1 / 16, 2).item() == 28.25  # max is the default


def test_negative_ties_and_samples_off_the_map():
    # Box (-8, -24, 24, 8) px at 1/16: -0.5 -> -1, -1.5 -> -2, 1.5 -> 2, 0.5 -> 1. RoI 3 x 3
    # cells, 3 x 3 samples at x = -0.5, 0.5, 1.5 and y = -1.5, -0.5, 0.5. y = -1.5 < -1 is off the
    # map (value 0); -0.5 clamps to 0 and so does x = -0.5. Rows: 0 0 0 | 0 0.5 1.5 | 5 5.5 6.5.
    x = linear_map(6, 8)
    rois = box(-8.0, -24.0, 24.0, 8.0)
    assert roi_warp(x, rois, 1, 1 / 16, 3, mode="max").item() == 6.5
    torch.testing.assert_close(roi_warp(x, rois, 1, 1 / 16, 3, mode="avg").item(), 19 / 9, rtol=0, atol=1e-15)
    # One sample at the centre, x = 0.5 and y = -0.5 (clamped to row 0): 0.5.
    assert roi_warp(x, rois, 1, 1 / 16, 1, mode="avg").item() == 0.5


def test_degenerate_box_is_clamped_to_one_cell():
    # (8, 8, 8, 8) px at 1/16 rounds to the point (1, 1); the unaligned size is clamped to 1 cell:
    # samples at 1.25, 1.75 on both axes, avg = 10 * 1.5 + 1.5.
    assert roi_warp(linear_map(6, 8), box(8.0, 8.0, 8.0, 8.0), 1, 1 / 16, 2, mode="avg").item() == 16.5


def test_adaptive_sampling_counts_the_rounded_box():
    # (0, 0, 56, 40) px at 1/16 rounds to (0, 0, 4, 3): output 1 x 2 has bins 2 x 3 cells, so
    # ceil(2 / 1) = 2 samples along x and ceil(3 / 1) = 3 along y: x = 0.5, 1.5 | 2.5, 3.5 and
    # y = 0.5, 1.5, 2.5. Bin 0 averages to 10 * 1.5 + 1, bin 1 to 10 * 1.5 + 3.
    out = roi_warp(linear_map(6, 8), box(0.0, 0.0, 56.0, 40.0), (1, 2), 1 / 16, -1, mode="avg")
    assert out.flatten().tolist() == [16.0, 18.0]


def test_a_warped_bin_is_a_max_over_bilinear_samples_not_cells():
    # On a map with one hot cell, RoI Pool's bin holds the cell and returns it; RoI Warp's 2 x 2
    # samples of the same rounded box read it with bilinear weights. Box (0, 0, 32, 32) at 1/16:
    # (0, 0, 2, 2), samples at 0.5 and 1.5: each reads a quarter of the hot cell (1, 1).
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 8.0
    rois = box(0.0, 0.0, 32.0, 32.0)
    assert roi_pool(x, rois, 1, 1 / 16).item() == 8.0
    assert roi_warp(x, rois, 1, 1 / 16, 2, mode="max").item() == 2.0  # 8 * 0.5 * 0.5
    assert roi_warp(x, rois, 1, 1 / 16, 2, mode="avg").item() == 2.0  # 4 samples of 2


# ------------------------------------------------------------------------------------------------
# The quantization: an independent rounding, and RoI Pool's kernels
# ------------------------------------------------------------------------------------------------


def to_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]  # IEEE round to nearest even


def c_round(value: float) -> float:
    """C's round(): half away from zero (decimal's ROUND_HALF_UP), exact on the binary value."""
    return float(Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def oracle_quantize(rois: torch.Tensor, scale: float) -> torch.Tensor:
    """[i, c_round(x * s), ...] with x * s in float32 (float64 for float64 rois), in Python."""
    single = rois.dtype != torch.float64
    s = to_float32(scale) if single else scale
    rows = []
    for index, *corners in rois.double().tolist():
        # The product of two float32 values is exact in a Python float; one rounding to float32.
        products = [to_float32(c * s) if single else c * s for c in corners]
        rows.append([index, *(c_round(p) for p in products)])
    return torch.tensor(rows, dtype=torch.float64 if not single else torch.float32)


def tie_rois(scale: float, dtype=torch.float32) -> torch.Tensor:
    """Boxes whose corners sit on half cells: (k + 0.5) / scale for k in -4..12, both signs. With a
    scale like 0.3 the float32 product x * s lands on the half where the exact one does not."""
    k = torch.arange(-4, 13, dtype=torch.float64)
    halves = ((k + 0.5) / scale).to(dtype).to(torch.float64)
    x1, y1 = halves[:-3], halves[1:-2].flip(0)
    x2, y2 = halves[3:], halves[2:-1]
    index = (torch.arange(x1.numel()) % 2).to(torch.float64)
    return torch.stack([index, x1, y1, x2, y2], 1).to(dtype)


@pytest.mark.parametrize("scale", [1 / 16, 1 / 32, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantize_rois_is_c_round_of_the_product_in_the_kernels_precision(scale, dtype):
    rois = torch.cat([tie_rois(scale, dtype), assorted_rois(2, 13, 17, scale, dtype=dtype)])
    expected = oracle_quantize(rois, scale).to(dtype)
    assert torch.equal(quantize_rois(rois, scale), expected)
    if scale == 0.3 and dtype == torch.float32:  # the cases where float32 and exact products round apart
        exact = oracle_quantize(rois.double(), scale).float()
        assert not torch.equal(expected, exact)


@pytest.mark.parametrize("scale", [1 / 16, 0.3])
def test_quantize_rois_matches_roi_pools_kernel(scale):
    # RoI Pool of a map whose value is the column index, one 1 x 1 bin: the bin ends at the rounded
    # x2 (the cells [round(x1 s), round(x2 s)] pooled, their max is the last); with the negated map
    # it returns -round(x1 s). The kernel's own rounding, read back, for float32 rois on ties.
    rois = tie_rois(scale)
    rois = rois[(rois[:, 1] * scale >= 0.5) & (rois[:, 3] * scale < 399)]  # inside the 1 x 400 map
    assert rois.shape[0] >= 8
    columns = torch.arange(400, dtype=torch.float32).view(1, 1, 1, 400).expand(2, 1, 1, 400).contiguous()
    rois[:, 2], rois[:, 4] = 0.0, 0.0
    q = quantize_rois(rois, scale)
    assert torch.equal(roi_pool(columns, rois, 1, scale).flatten(), q[:, 3])
    assert torch.equal(-roi_pool(-columns, rois, 1, scale).flatten(), q[:, 1])


# ------------------------------------------------------------------------------------------------
# RoI Warp is RoI Align (aligned=False) of the quantized boxes
# ------------------------------------------------------------------------------------------------

CASES = [
    # (dtype, channels_last, scale, sampling_ratio, mode)
    (torch.float32, False, 1 / 16, 2, "max"),
    (torch.float32, True, 1 / 32, -1, "avg"),
    (torch.float64, False, 1 / 32, 2, "avg"),
    (torch.float64, True, 1 / 16, -1, "max"),
    (torch.bfloat16, False, 1 / 16, -1, "max"),
    (torch.bfloat16, True, 1 / 32, 2, "avg"),
    (torch.float32, False, 0.3, 3, "max"),
]


@pytest.mark.parametrize("dtype, channels_last, scale, ratio, mode", CASES)
def test_equals_roi_align_unaligned_of_the_quantized_boxes(dtype, channels_last, scale, ratio, mode):
    x = feature_map(n=2, c=3, h=9, w=11, dtype=dtype, channels_last=channels_last)
    rois_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    rois = torch.cat([tie_rois(scale, rois_dtype), assorted_rois(2, 9, 11, scale, dtype=rois_dtype)])
    out = roi_warp(x, rois, (3, 4), scale, ratio, mode=mode)
    expected = roi_align(x, oracle_quantize(rois, scale).to(rois_dtype), (3, 4), 1.0, ratio, False, mode)
    assert torch.equal(out, expected)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_equals_the_reference(mode):
    x = feature_map(n=2, c=3, h=9, w=11)
    rois = torch.cat([tie_rois(1 / 16, torch.float64), assorted_rois(2, 9, 11, 1 / 16)])
    torch.testing.assert_close(
        roi_warp(x, rois, 3, 1 / 16, -1, mode=mode), roi_warp_reference(x, rois, 3, 1 / 16, -1, mode)
    )


def test_under_cpu_autocast_equals_roi_align_of_the_quantized_boxes():
    # Autocast runs RoI Align in float32 on float32 rois: the rounding is of the float32 product.
    x = feature_map(n=2, c=3, h=9, w=11, dtype=torch.float32)
    rois = torch.cat([tie_rois(1 / 16), assorted_rois(2, 9, 11, 1 / 16, dtype=torch.float32)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_warp(x.bfloat16(), rois, 3, 1 / 16, 2)
        expected = roi_align(x.bfloat16(), oracle_quantize(rois, 1 / 16), 3, 1.0, 2, False, "max")
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


def test_list_of_boxes_equals_the_rois_tensor():
    x = feature_map(n=2, c=3, h=9, w=11)
    rois = assorted_rois(2, 9, 11, 1 / 16)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(2)])
    assert torch.equal(roi_warp(x, boxes, 3, 1 / 16, 2), roi_warp(x, ordered, 3, 1 / 16, 2))


def test_mode_is_keyword_only():
    with pytest.raises(TypeError):
        roi_warp(linear_map(4, 4), box(0.0, 0.0, 2.0, 2.0), 1, 1.0, 2, "avg")


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------

# Boxes at scale 0.5 inside, across and below the 6 x 7 map; random features, so that no two
# samples of a max bin tie (where the max is not differentiable).
GRAD_ROIS = torch.tensor(
    [[0, 1.3, 0.7, 9.1, 8.2], [1, -3.4, 2.4, 6.0, 14.0], [1, 4.2, 4.9, 5.1, 5.3]], dtype=torch.float64
)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_gradcheck(mode):
    x = feature_map(n=2, c=2, h=6, w=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: roi_warp(t, GRAD_ROIS, (3, 2), 0.5, 2, mode=mode), (x,))


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_gradient_equals_roi_aligns_of_the_quantized_boxes(mode):
    x = feature_map(n=2, c=3, h=9, w=11, dtype=torch.float32).requires_grad_()
    rois = torch.cat([tie_rois(1 / 16), assorted_rois(2, 9, 11, 1 / 16, dtype=torch.float32)])
    grad_out = torch.randn(rois.shape[0], 3, 3, 3, generator=torch.Generator().manual_seed(1))
    (got,) = torch.autograd.grad(roi_warp(x, rois, 3, 1 / 16, 2, mode=mode), x, grad_out)
    quantized = oracle_quantize(rois, 1 / 16)
    (expected,) = torch.autograd.grad(roi_align(x, quantized, 3, 1.0, 2, False, mode), x, grad_out)
    assert torch.equal(got, expected)


# ------------------------------------------------------------------------------------------------
# The module
# ------------------------------------------------------------------------------------------------


def test_module_forward_and_repr():
    x = feature_map(n=2, c=3, h=9, w=11)
    rois = assorted_rois(2, 9, 11, 1 / 16)
    module = RoIWarp((3, 2), 1 / 16, 2, mode="avg")
    assert torch.equal(module(x, rois), roi_warp(x, rois, (3, 2), 1 / 16, 2, mode="avg"))
    assert repr(RoIWarp(7, 1 / 32)) == "RoIWarp(output_size=7, spatial_scale=0.03125, sampling_ratio=-1, mode='max')"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"mode": "mean"}, ValueError, "mode must be 'avg' or 'max'"),
        ({"output_size": 0}, ValueError, "output_size must be positive"),
        ({"spatial_scale": -1.0}, ValueError, "spatial_scale must be positive"),
        ({"sampling_ratio": 1.5}, TypeError, "sampling_ratio must be an int"),
    ],
)
def test_module_rejects_bad_arguments(kwargs, error, message):
    args = {"output_size": 7, "spatial_scale": 1 / 16, **kwargs}
    with pytest.raises(error, match=message):
        RoIWarp(**args)


def test_torch_compile_fullgraph_without_graph_breaks():
    # aot_eager: Dynamo and AOTAutograd trace the rounding and roi_align's fake kernel and autograd
    # formula (what inductor would compile; its C++ build costs CI ~10 s for nothing new here).
    torch._dynamo.reset()

    def head(x, rois):
        return roi_warp(x, rois, 3, 1 / 16, 2, mode="max") * 2

    x = feature_map(n=2, c=3, h=9, w=11, dtype=torch.float32).requires_grad_()
    rois = torch.cat([tie_rois(1 / 16), assorted_rois(2, 9, 11, 1 / 16, dtype=torch.float32)])
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    out = compiled(x, rois)
    assert torch.equal(out, head(x, rois))
    (got,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(head(x, rois).sum(), x)
    assert torch.equal(got, expected)
