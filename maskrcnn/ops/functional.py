"""The functional API of the RoI layer: ``roi_align``, ``roi_pool``, ``roi_warp`` and
``multilevel_roi_align``.

``roi_align`` and ``roi_pool`` take torchvision's arguments in torchvision's order with its
defaults (``aligned=False``), so code written for ``torchvision.ops`` gives the same numbers with
ours; ``mode`` is our extra, after them.

In eager mode these functions check everything that can be checked without reading tensor data
(shapes, dtypes, devices, parameters) and raise ``ValueError`` / ``TypeError`` naming the
argument. The data-dependent checks (batch index in range, finite boxes, FPN levels in range) run
inside the C++ kernels, so the functions stay traceable by ``torch.compile(fullgraph=True)`` and
``torch.export``. They are leaves for ``torch.fx.symbolic_trace`` (``torch.fx.wrap``, as in
torchvision) and compile with ``torch.jit.script``: the annotations use ``Union`` / ``List``
and the Python-only checks sit behind ``torch.jit.is_scripting()`` (TorchScript skips that branch
and leaves the checks to the kernels). ``mode`` is not keyword-only because TorchScript cannot
compile keyword-only arguments with defaults.

``roi_warp`` has no torchvision counterpart and takes ``mode`` keyword-only, so TorchScript
cannot compile calls to it; the ``RoIWarp`` module scripts (it calls ``_roi_warp``). It is
``roi_align`` (unaligned) of the boxes rounded by :func:`quantize_rois`, so it runs wherever the
RoI Align kernels run and needs no kernel of its own.

Semantics: docs/ops.md. Coordinates are in input-image pixels; ``spatial_scale`` maps them onto
the feature map (1/4 for FPN level P2).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.fx
from torch import Tensor
from torch.jit.annotations import BroadcastingList2
from torch.nn.modules.utils import _pair

from . import _loader, _registration  # noqa: F401  (fake kernels, autograd and autocast)

__all__ = ["roi_align", "roi_pool", "roi_warp", "multilevel_roi_align", "convert_rois", "quantize_rois"]

_FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF_TYPES = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda")


@torch.fx.wrap
def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
) -> Tensor:
    """RoI Align (Mask R-CNN): bilinear samples in each bin, averaged (``mode="avg"``) or maxed.

    Args:
        input: (N, C, H, W) float16 / bfloat16 / float32 / float64, contiguous or channels_last.
        boxes: the RoIs: (K, 5) ``[batch_index, x1, y1, x2, y2]`` in input-image pixels, or a
            list of (K_i, 4) XYXY boxes, one tensor per image. Dtype of ``input`` (or float32 for
            half inputs; any float dtype under autocast), on its device.
        output_size: ``oh`` or ``(oh, ow)``, positive.
        spatial_scale: feature-map size over image size (e.g. 1/4 for P2), positive and finite.
        sampling_ratio: sample points per bin and axis; ``<= 0`` means adaptive,
            ``ceil(roi_size / output_size)``.
        aligned: shift boxes by -0.5 cell (pixel-centre convention of Detectron2). False (the
            default, as torchvision) is the original Mask R-CNN arithmetic.
        mode: ``"avg"`` or ``"max"`` over the sample points of a bin (our extra).

    Returns:
        (K, C, oh, ow) in the dtype and memory format of ``input``.
    """
    if not torch.jit.is_scripting():
        _check_input(input)
        rois = convert_rois(boxes, input)
        oh, ow = _output_size(output_size)
        scale = _spatial_scale(spatial_scale, "spatial_scale")
        ratio = _sampling_ratio(sampling_ratio)
        _check_mode(mode)
        return torch.ops.maskrcnn.roi_align(input, rois, scale, oh, ow, ratio, bool(aligned), mode)
    size = _pair(output_size)
    return torch.ops.maskrcnn.roi_align(
        input, _rois_tensor(boxes), spatial_scale, size[0], size[1], sampling_ratio, aligned, mode
    )


@torch.fx.wrap
def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI Pool (Fast R-CNN): boxes rounded to the feature grid, max over each quantized bin.

    Arguments as for :func:`roi_align`. Returns (K, C, oh, ow); an empty bin is 0.
    """
    if not torch.jit.is_scripting():
        _check_input(input)
        rois = convert_rois(boxes, input)
        oh, ow = _output_size(output_size)
        scale = _spatial_scale(spatial_scale, "spatial_scale")
        if input.device.type == "cpu" and not _loader.CUDA_EMULATION_REQUESTED:
            # The CPU op stores one-byte codes of the winners instead of the int32 argmax, and
            # nothing when no gradient is needed: their page faults cost more than the pooling
            # on the large heads (docs/ops.md, "RoI Pool's winners"). Under
            # MASKRCNN_CUDA_EMULATION=1 the public op is the emulated CUDA kernel, which has no codes.
            with_codes = torch.is_grad_enabled() and input.requires_grad
            output, _ = torch.ops.maskrcnn._roi_pool_compact(input, rois, scale, oh, ow, with_codes)
        else:
            output, _ = torch.ops.maskrcnn.roi_pool(input, rois, scale, oh, ow)
        return output
    size = _pair(output_size)
    output, _ = torch.ops.maskrcnn.roi_pool(input, _rois_tensor(boxes), spatial_scale, size[0], size[1])
    return output


@torch.fx.wrap
def roi_warp(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    *,
    mode: str = "max",
) -> Tensor:
    """RoI Warp (MNC; the RoIWarp rows of Table 2c of the Mask R-CNN paper): the box corners
    rounded to the feature grid as RoI Pool rounds them, then RoI Align's unaligned bins and
    bilinear samples inside the rounded box, maxed (``mode="max"``, the default) or averaged.

    It is exactly ``roi_align(input, quantize_rois(rois, spatial_scale), output_size, 1.0,
    sampling_ratio, aligned=False, mode=mode)``: it keeps RoI Pool's first quantization and drops
    its second, so that it isolates what rounding the box costs from what bilinear sampling gains.

    Args:
        input: (N, C, H, W) float16 / bfloat16 / float32 / float64, contiguous or channels_last.
        boxes: (K, 5) ``[batch_index, x1, y1, x2, y2]`` in input-image pixels, or a list of
            (K_i, 4) XYXY boxes, one per image (dtypes and devices as for :func:`roi_align`).
        output_size: ``oh`` or ``(oh, ow)``, positive.
        spatial_scale: feature-map size over image size (1/16 for res4, 1/32 for res5).
        sampling_ratio: sample points per bin and axis; ``<= 0`` means adaptive,
            ``ceil(rounded_roi_size / output_size)``.
        mode: ``"max"`` or ``"avg"`` over the sample points of a bin; keyword-only.

    Returns:
        (K, C, oh, ow) in the dtype and memory format of ``input``; the gradient flows to
        ``input`` through RoI Align's backward (none to the boxes).
    """
    return _roi_warp(input, boxes, output_size, spatial_scale, sampling_ratio, mode)


def _roi_warp(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: BroadcastingList2[int],
    spatial_scale: float,
    sampling_ratio: int,
    mode: str,
) -> Tensor:
    """:func:`roi_warp` with ``mode`` positional, for TorchScript (the ``RoIWarp`` module)."""
    if not torch.jit.is_scripting():
        _check_input(input)
        rois = convert_rois(boxes, input)
        oh, ow = _output_size(output_size)
        scale = _spatial_scale(spatial_scale, "spatial_scale")
        ratio = _sampling_ratio(sampling_ratio)
        _check_mode(mode)
        # The rounded boxes are in feature cells: scale 1.0 keeps them exact inside the kernel.
        return torch.ops.maskrcnn.roi_align(input, quantize_rois(rois, scale), 1.0, oh, ow, ratio, False, mode)
    size = _pair(output_size)
    rois = _rois_tensor(boxes)
    scale_t = torch.full((1,), spatial_scale, dtype=_rois_accumulation_dtype(rois), device=rois.device)
    return torch.ops.maskrcnn.roi_align(
        input, _round_corners(rois, scale_t), 1.0, size[0], size[1], sampling_ratio, False, mode
    )


def quantize_rois(rois: Tensor, spatial_scale: float | Tensor) -> Tensor:
    """RoI Pool's first quantization: (K, 5) rois in input-image pixels -> (K, 5) rois
    ``[batch_index, round(x1 * s), round(y1 * s), round(x2 * s), round(y2 * s)]`` in feature cells.

    ``round`` is C's (half away from zero: 2.5 -> 3, -2.5 -> -3, not torch.round's half to even),
    applied to ``x * s`` computed in the kernels' accumulation dtype (float64 for float64 rois,
    float32 otherwise, ``s`` rounded to that dtype first), so the corners are bit for bit the ones
    RoI Pool's kernels start from (``pool_geometry`` in ops/roi_common.h).

    Args:
        rois: (K, 5) float rois in input-image pixels.
        spatial_scale: one scale, or a (K,) tensor of per-RoI scales (a multi-level pooler
            quantizes each RoI on its own level).

    Returns:
        (K, 5) in the accumulation dtype, on the device of ``rois``.
    """
    acc = _rois_accumulation_dtype(rois)
    if isinstance(spatial_scale, Tensor):
        scale = spatial_scale.to(device=rois.device, dtype=acc).reshape(-1, 1)
    else:
        scale = torch.full((1, 1), float(spatial_scale), dtype=acc, device=rois.device)
    return _round_corners(rois, scale)


def _rois_accumulation_dtype(rois: Tensor) -> torch.dtype:
    return torch.float64 if rois.dtype == torch.float64 else torch.float32


def _round_corners(rois: Tensor, scale: Tensor) -> Tensor:
    rois = rois.detach().to(_rois_accumulation_dtype(rois))
    corners = rois[:, 1:] * scale  # one rounding, in the accumulation dtype, as the kernels' x * s
    magnitude = corners.abs()
    whole = magnitude.floor()
    # |x| - floor(|x|) is exact, where floor(|x| + 0.5) is not (it rounds 0.49999997f up to 1).
    rounded = whole + (magnitude - whole >= 0.5).to(corners.dtype)
    return torch.cat([rois[:, :1], rounded.copysign(corners)], dim=1)


@torch.fx.wrap
def multilevel_roi_align(
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    spatial_scales: list[float],
    output_size: BroadcastingList2[int],
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
) -> Tensor:
    """RoI Align over several feature levels in one call: RoI k is pooled from
    ``features[levels[k]]`` with ``spatial_scales[levels[k]]``.

    Args:
        features: list of L maps (N, C, H_l, W_l) with the same N, C, dtype and device.
        rois: (K, 5) ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.
        levels: (K,) int64, values in [0, L).
        spatial_scales: L positive scales, one per level.
        output_size, sampling_ratio, aligned, mode: as in :func:`roi_align` (``aligned=False``
            by default there too).

    Returns:
        (K, C, oh, ow), equal to ``roi_align`` of each RoI on its level, in the dtype and memory
        format of ``features[0]``.
    """
    if not torch.jit.is_scripting():
        return _multilevel_eager(features, rois, levels, spatial_scales, output_size, sampling_ratio, aligned, mode)
    size = _pair(output_size)
    return torch.ops.maskrcnn.multilevel_roi_align(
        features, rois, levels, spatial_scales, size[0], size[1], sampling_ratio, aligned, mode
    )


def _rois_tensor(boxes: Tensor | list[Tensor]) -> Tensor:
    """TorchScript's conversion of ``boxes`` to (K, 5) rois (torchvision's convert_boxes_to_roi_format);
    the kernels check the result."""
    if isinstance(boxes, Tensor):
        return boxes
    index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(index, dim=0), torch.cat(boxes, dim=0)], dim=1)


def _multilevel_eager(features, rois, levels, spatial_scales, output_size, sampling_ratio, aligned, mode) -> Tensor:
    if isinstance(features, Tensor) or not isinstance(features, Sequence) or len(features) == 0:
        raise TypeError("features must be a non-empty list of (N, C, H, W) tensors")
    for i, f in enumerate(features):
        _check_input(f, f"features[{i}]")
        if f.shape[:2] != features[0].shape[:2] or f.dtype != features[0].dtype or f.device != features[0].device:
            raise ValueError(
                f"features[{i}] must have the batch size, channels, dtype and device of features[0] "
                f"({tuple(features[0].shape[:2])}, {features[0].dtype}, {features[0].device}); got "
                f"{tuple(f.shape[:2])}, {f.dtype}, {f.device}"
            )
    rois = convert_rois(rois, features[0])
    if not isinstance(levels, Tensor) or levels.dim() != 1 or levels.shape[0] != rois.shape[0]:
        raise ValueError(f"levels must be a (K,) tensor with K = {rois.shape[0]} (one level per RoI)")
    if levels.dtype != torch.int64:
        raise TypeError(f"levels must be int64, got {levels.dtype}")
    if levels.device != rois.device:
        raise ValueError(f"levels must be on the device of rois ({rois.device}), got {levels.device}")
    if (
        isinstance(spatial_scales, (str, Tensor))
        or not isinstance(spatial_scales, Sequence)
        or len(spatial_scales) != len(features)
    ):
        raise ValueError(f"spatial_scales must be a list of {len(features)} scales, one per feature level")
    scales = [_spatial_scale(s, f"spatial_scales[{i}]") for i, s in enumerate(spatial_scales)]
    oh, ow = _output_size(output_size)
    ratio = _sampling_ratio(sampling_ratio)
    _check_mode(mode)
    return torch.ops.maskrcnn.multilevel_roi_align(
        list(features), rois, levels, scales, oh, ow, ratio, bool(aligned), mode
    )


# ---------------------------------------------------------------------------------------------
# Static validation (eager mode)
# ---------------------------------------------------------------------------------------------


def convert_rois(rois: Tensor | Sequence[Tensor], input: Tensor) -> Tensor:
    """Checks ``rois`` against ``input`` and returns them as a (K, 5) tensor: a list of (K_i, 4)
    boxes becomes ``[i, x1, y1, x2, y2]`` rows, image after image (torchvision's convention).

    Under autocast (CPU or CUDA) the rois may have any float16 / bfloat16 / float32 dtype: the
    autocast kernels compute in float32, as torchvision's do."""
    autocast = _autocast_enabled(input)
    if autocast and input.dtype != torch.float64:
        allowed = (torch.float16, torch.bfloat16, torch.float32)
    else:
        allowed = (input.dtype, torch.float32) if input.dtype in _HALF_TYPES else (input.dtype,)
    allowed_text = " or ".join(str(d) for d in allowed)
    if isinstance(rois, Tensor):
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                "rois must be a (K, 5) tensor [batch_index, x1, y1, x2, y2] or a list of (K_i, 4) "
                f"boxes, got a tensor of shape {tuple(rois.shape)}"
            )
        _check_rois_tensor(rois, input, "rois", allowed, allowed_text)
        return rois
    if not isinstance(rois, (list, tuple)):
        raise TypeError(f"rois must be a (K, 5) tensor or a list of (K_i, 4) tensors, got {type(rois).__name__}")
    if len(rois) != input.shape[0]:
        raise ValueError(
            f"rois as a list needs one (K_i, 4) tensor per image: {input.shape[0]} images, got {len(rois)} tensors"
        )
    rows = []
    for i, boxes in enumerate(rois):
        name = f"rois[{i}]"
        if not isinstance(boxes, Tensor):
            raise TypeError(f"{name} must be a (K_i, 4) tensor, got {type(boxes).__name__}")
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name} must be a (K_i, 4) tensor of XYXY boxes, got shape {tuple(boxes.shape)}")
        _check_rois_tensor(boxes, input, name, allowed, allowed_text)
        index = torch.full((boxes.shape[0], 1), i, dtype=boxes.dtype, device=boxes.device)
        rows.append(torch.cat([index, boxes], dim=1))
    if not rows:
        return torch.zeros((0, 5), dtype=input.dtype, device=input.device)
    dtypes = {r.dtype for r in rows}
    if len(dtypes) > 1 and not autocast:
        raise TypeError(f"the boxes of rois must share one dtype, got {sorted(str(d) for d in dtypes)}")
    return torch.cat(rows, dim=0)  # under autocast torch.cat promotes mixed dtypes


def _autocast_enabled(input: Tensor) -> bool:
    device = input.device.type
    return device in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device)


def _check_rois_tensor(rois: Tensor, input: Tensor, name: str, allowed, allowed_text: str) -> None:
    if rois.dtype not in allowed:
        raise TypeError(f"{name} must have dtype {allowed_text} (the dtype of the input), got {rois.dtype}")
    if rois.device != input.device:
        raise ValueError(f"{name} must be on the device of the input ({input.device}), got {rois.device}")


def _check_input(input: Tensor, name: str = "input") -> None:
    if isinstance(input, torch.fx.Proxy):
        raise TypeError(
            f"{name} is a torch.fx Proxy: to fx-trace code that imports the RoI ops by name, call "
            "torch.fx.wrap('<name>') at the top of that module (as for torchvision.ops), or call them "
            "as maskrcnn.ops.<name>"
        )
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(input).__name__}")
    if input.dtype not in _FLOAT_TYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {input.dtype}")
    if input.dim() != 4:
        raise ValueError(f"{name} must be a 4-D (N, C, H, W) tensor, got shape {tuple(input.shape)}")


def _output_size(output_size) -> tuple[int, int]:
    if isinstance(output_size, numbers.Integral) and not isinstance(output_size, bool):
        size = (int(output_size), int(output_size))
    elif (
        isinstance(output_size, (tuple, list))
        and len(output_size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in output_size)
    ):
        size = (int(output_size[0]), int(output_size[1]))
    else:
        raise TypeError(f"output_size must be an int or a pair of ints (oh, ow), got {output_size!r}")
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    return size


def _spatial_scale(scale, name: str) -> float:
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f"{name} must be a number, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name} must be positive and finite, got {scale!r}")
    return float(scale)


def _sampling_ratio(ratio) -> int:
    if not isinstance(ratio, numbers.Integral) or isinstance(ratio, bool):
        raise TypeError(f"sampling_ratio must be an int (<= 0 means adaptive), got {ratio!r}")
    return int(ratio)


def _check_mode(mode) -> None:
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
