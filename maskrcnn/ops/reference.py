"""Reference RoI Align, RoI Pool and RoI Warp in plain PyTorch, written for reading.

This file is the specification of the ops in executable form (docs/ops.md) and the
oracle of the tests: every rule is one short, named step, and the native kernels in ``ops/``
must agree with it. Gradients come from autograd through these same steps, so the reference also
defines the backward passes. It loops over RoIs in Python and is meant for correctness, not speed.

The helpers (geometry, sample points, bilinear neighbours, pooling bins) are public: tools such as
``tools/explain_roi.py`` use them to show the arithmetic instead of deriving it a second time.

Arithmetic precision follows the kernels: float16, bfloat16 and float32 inputs are computed in
float32, float64 in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "AlignGeometry",
    "AxisInterp",
    "PoolGeometry",
    "accumulation_dtype",
    "align_geometry",
    "align_sample_coords",
    "axis_interp",
    "pool_bin_ranges",
    "pool_geometry",
    "round_half_away_from_zero",
    "roi_align_reference",
    "roi_pool_reference",
    "roi_warp_reference",
    "warp_box",
]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# RoI Align
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignGeometry:
    """One RoI on the feature map, in feature cells (0-d tensors in the accumulation dtype)."""

    start_h: Tensor  # top edge after scaling and the half-pixel offset
    start_w: Tensor  # left edge
    bin_h: Tensor  # height of one output bin
    bin_w: Tensor  # width of one output bin
    grid_h: int  # sample points per bin along y
    grid_w: int  # sample points per bin along x
    count: int  # divisor of the average: max(grid_h * grid_w, 1)


def align_geometry(
    box: Tensor, spatial_scale: float, output_size: tuple[int, int], sampling_ratio: int, aligned: bool
) -> AlignGeometry:
    """Geometry of RoI Align for ``box`` = (x1, y1, x2, y2) in input-image coordinates.

    ``box`` must already be in the accumulation dtype; the arithmetic is done in that dtype.
    """
    pooled_h, pooled_w = output_size
    scale = torch.tensor(spatial_scale, dtype=box.dtype)
    # Half-pixel offset: continuous coordinates to pixel centres (aligned=True, Detectron2).
    offset = torch.tensor(0.5 if aligned else 0.0, dtype=box.dtype)
    x1, y1, x2, y2 = (box[i] * scale - offset for i in range(4))
    roi_w = x2 - x1
    roi_h = y2 - y1
    if not aligned:
        # The original Detectron forces malformed RoIs to be at least 1 x 1.
        roi_w = torch.clamp(roi_w, min=1.0)
        roi_h = torch.clamp(roi_h, min=1.0)
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = grid_w = sampling_ratio
    else:
        # Adaptive: ceil(roi_size / output_size) sample points per bin and axis.
        grid_h = int(math.ceil((roi_h / pooled_h).item()))
        grid_w = int(math.ceil((roi_w / pooled_w).item()))
    grid_h, grid_w = max(grid_h, 0), max(grid_w, 0)
    return AlignGeometry(y1, x1, bin_h, bin_w, grid_h, grid_w, max(grid_h * grid_w, 1))


def align_sample_coords(start: Tensor, bin_size: Tensor, pooled: int, grid: int) -> Tensor:
    """Sample coordinates along one axis: (pooled, grid), point i of bin b at
    ``start + b * bin_size + (i + 0.5) * bin_size / grid``."""
    b = torch.arange(pooled, dtype=start.dtype).view(-1, 1)
    i = torch.arange(grid, dtype=start.dtype).view(1, -1)
    return start + b * bin_size + (i + 0.5) * bin_size / grid


@dataclass(frozen=True)
class AxisInterp:
    """Linear interpolation along one axis: neighbours, their weights and validity (same shape)."""

    low: Tensor  # int64 index of the lower neighbour
    high: Tensor  # int64 index of the upper neighbour
    w_low: Tensor  # weight of `low` (1 - fraction)
    w_high: Tensor  # weight of `high` (fraction)
    valid: Tensor  # False outside [-1, size]: the sample point is zero (zero padding)


def axis_interp(coord: Tensor, size: int) -> AxisInterp:
    """Neighbours and weights of ``coord`` along an axis of ``size`` cells."""
    valid = (coord >= -1.0) & (coord <= size)
    coord = torch.clamp(coord, min=0.0)
    low = coord.to(torch.int64)  # coord >= 0 here, so truncation is floor
    at_border = low >= size - 1
    # At or past the last cell both neighbours are that cell and all weight is on it.
    low = torch.where(at_border, torch.full_like(low, size - 1), low)
    high = torch.where(at_border, low, low + 1)
    coord = torch.where(at_border, low.to(coord.dtype), coord)
    w_high = coord - low.to(coord.dtype)
    w_low = 1.0 - w_high
    return AxisInterp(low, high, w_low, w_high, valid)


def _roi_align_one(
    feature: Tensor, box: Tensor, spatial_scale: float, output_size, sampling_ratio, aligned: bool, mode: str
) -> Tensor:
    """RoI Align of one box over one feature map (C, H, W) -> (C, oh, ow), in its dtype."""
    channels, height, width = feature.shape
    pooled_h, pooled_w = output_size
    g = align_geometry(box, spatial_scale, output_size, sampling_ratio, aligned)
    if g.grid_h == 0 or g.grid_w == 0:
        return feature.new_zeros(channels, pooled_h, pooled_w)  # a bin without samples is 0
    ys = axis_interp(align_sample_coords(g.start_h, g.bin_h, pooled_h, g.grid_h).flatten(), height)
    xs = axis_interp(align_sample_coords(g.start_w, g.bin_w, pooled_w, g.grid_w).flatten(), width)

    def at(y_index: Tensor, x_index: Tensor) -> Tensor:  # (C, Sy, Sx)
        return feature[:, y_index][:, :, x_index]

    # Bilinear interpolation at every (y sample, x sample): four neighbours, separable weights.
    value = (
        ys.w_low[:, None] * xs.w_low[None, :] * at(ys.low, xs.low)
        + ys.w_low[:, None] * xs.w_high[None, :] * at(ys.low, xs.high)
        + ys.w_high[:, None] * xs.w_low[None, :] * at(ys.high, xs.low)
        + ys.w_high[:, None] * xs.w_high[None, :] * at(ys.high, xs.high)
    )
    valid = ys.valid[:, None] & xs.valid[None, :]
    value = torch.where(valid, value, torch.zeros_like(value))  # outside the map: exactly 0

    # (C, oh*gh, ow*gw) -> (C, oh, ow, gh*gw): the samples of each bin in row-major order.
    value = value.view(channels, pooled_h, g.grid_h, pooled_w, g.grid_w)
    value = value.permute(0, 1, 3, 2, 4).reshape(channels, pooled_h, pooled_w, g.grid_h * g.grid_w)
    if mode == "avg":
        return value.sum(dim=-1) / g.count
    # Max: the first maximal sample in row-major order wins; its gradient goes to its neighbours.
    winner = value.argmax(dim=-1, keepdim=True)
    return value.gather(-1, winner).squeeze(-1)


def roi_align_reference(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
) -> Tensor:
    """Reference RoI Align.

    Args:
        input: (N, C, H, W) feature maps.
        rois: (K, 5) ``[batch_index, x1, y1, x2, y2]`` in input-image coordinates.
        output_size: ``oh`` or ``(oh, ow)``.
        spatial_scale: feature-map size over input-image size (1/4 for P2).
        sampling_ratio: sample points per bin and axis; ``<= 0`` means adaptive.
        aligned: shift the box by -0.5 cell (pixel-centre convention); False by default, as
            :func:`maskrcnn.ops.roi_align`.
        mode: "avg" or "max" over the sample points of a bin.

    Returns:
        (K, C, oh, ow) in the dtype of ``input``; differentiable with respect to ``input``.
    """
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    output_size = _pair(output_size)
    acc = accumulation_dtype(input.dtype)
    feature_acc = input.to(acc)
    boxes = rois.detach().to(acc)
    outputs = [
        _roi_align_one(feature_acc[int(r[0].item())], r[1:], spatial_scale, output_size, sampling_ratio, aligned, mode)
        for r in boxes
    ]
    if not outputs:
        return input.new_zeros(0, input.shape[1], *output_size)
    return torch.stack(outputs).to(input.dtype)


# --------------------------------------------------------------------------------------------
# RoI Pool
# --------------------------------------------------------------------------------------------


def round_half_away_from_zero(x: Tensor) -> Tensor:
    """C's round(): 2.5 -> 3, -2.5 -> -3 (torch.round rounds half to even), exact in the dtype of
    ``x``: the fraction ``|x| - floor(|x|)`` is exact, where ``floor(|x| + 0.5)`` is not (in float32
    0.49999997 + 0.5 rounds to 1.0, and C's round(0.49999997f) is 0)."""
    magnitude = torch.abs(x)
    whole = torch.floor(magnitude)
    return torch.copysign(whole + (magnitude - whole >= 0.5).to(x.dtype), x)


@dataclass(frozen=True)
class PoolGeometry:
    """One RoI rounded to the feature grid (the first quantization of Fast R-CNN)."""

    start_h: int
    start_w: int
    roi_h: int  # max(end - start + 1, 1)
    roi_w: int


def pool_geometry(box: Tensor, spatial_scale: float) -> PoolGeometry:
    """Rounded RoI for ``box`` = (x1, y1, x2, y2) in the accumulation dtype."""
    scale = torch.tensor(spatial_scale, dtype=box.dtype)
    x1, y1, x2, y2 = (int(round_half_away_from_zero(box[i] * scale).item()) for i in range(4))
    return PoolGeometry(y1, x1, max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1))


def pool_bin_ranges(
    roi_start: int, roi_size: int, pooled: int, size: int, dtype: torch.dtype = torch.float32
) -> list[tuple[int, int]]:
    """The cell range [begin, end) of each output bin along one axis (the second quantization):
    ``[floor(b * bin), ceil((b + 1) * bin))`` with ``bin = roi_size / pooled``, offset by the RoI
    start and clipped to ``[0, size]``. A range with end <= begin is an empty bin."""
    bin_size = torch.tensor(roi_size, dtype=dtype) / pooled
    ranges = []
    for b in range(pooled):
        begin = int(torch.floor(b * bin_size).item()) + roi_start
        end = int(torch.ceil((b + 1) * bin_size).item()) + roi_start
        ranges.append((min(max(begin, 0), size), min(max(end, 0), size)))
    return ranges


def roi_pool_reference(
    input: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Reference RoI Pool (Fast R-CNN): (K, C, oh, ow), max over each quantized bin, an empty
    bin is 0; differentiable with respect to ``input`` (the gradient goes to the first maximal
    cell in row-major order)."""
    pooled_h, pooled_w = _pair(output_size)
    _, channels, height, width = input.shape
    acc = accumulation_dtype(input.dtype)
    outputs = []
    for r in rois.detach().to(acc):
        feature = input[int(r[0].item())]
        g = pool_geometry(r[1:], spatial_scale)
        rows = pool_bin_ranges(g.start_h, g.roi_h, pooled_h, height, acc)
        cols = pool_bin_ranges(g.start_w, g.roi_w, pooled_w, width, acc)
        bins = []
        for h0, h1 in rows:
            for w0, w1 in cols:
                if h1 <= h0 or w1 <= w0:
                    bins.append(input.new_zeros(channels))
                    continue
                cells = feature[:, h0:h1, w0:w1].reshape(channels, -1)
                winner = cells.argmax(dim=1, keepdim=True)
                bins.append(cells.gather(1, winner).squeeze(1))
        outputs.append(torch.stack(bins, dim=1).view(channels, pooled_h, pooled_w))
    if not outputs:
        return input.new_zeros(0, channels, pooled_h, pooled_w)
    return torch.stack(outputs)


# --------------------------------------------------------------------------------------------
# RoI Warp
# --------------------------------------------------------------------------------------------


def warp_box(box: Tensor, spatial_scale: float) -> Tensor:
    """RoI Warp's box for ``box`` = (x1, y1, x2, y2) in the accumulation dtype: each corner rounded
    to the feature grid exactly as RoI Pool rounds it, ``round(x * spatial_scale)`` (C's round,
    the product in the accumulation dtype), in feature cells. Unlike RoI Pool, the size stays
    ``x2 - x1`` (RoI Align's continuous size, clamped to >= 1 later), not ``x2 - x1 + 1``."""
    scale = torch.tensor(spatial_scale, dtype=box.dtype)
    return round_half_away_from_zero(box * scale)


def roi_warp_reference(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    mode: str = "max",
) -> Tensor:
    """Reference RoI Warp (Table 2c of the Mask R-CNN paper): each box's corners rounded to the
    feature grid (:func:`warp_box`), then RoI Align without the half-pixel offset (sizes clamped to
    >= 1 cell, the same fixed or adaptive sampling) of that box on the feature map, so at scale 1.

    Args and result as :func:`roi_align_reference` (no ``aligned``: RoI Warp has no offset).
    """
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    output_size = _pair(output_size)
    acc = accumulation_dtype(input.dtype)
    feature_acc = input.to(acc)
    outputs = []
    for r in rois.detach().to(acc):
        box = warp_box(r[1:], spatial_scale)  # first quantization: feature cells, integers
        feature = feature_acc[int(r[0].item())]
        outputs.append(_roi_align_one(feature, box, 1.0, output_size, sampling_ratio, False, mode))
    if not outputs:
        return input.new_zeros(0, input.shape[1], *output_size)
    return torch.stack(outputs).to(input.dtype)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    oh, ow = size
    return int(oh), int(ow)
