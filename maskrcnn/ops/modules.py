"""nn.Modules of the RoI ops with torchvision's constructors: ``RoIAlign(output_size,
spatial_scale, sampling_ratio, aligned=False)`` and ``RoIPool(output_size, spatial_scale)``, our
extra (``mode``) keyword-only after them, and torchvision's ``repr``; ``RoIWarp(output_size,
spatial_scale, sampling_ratio=-1, *, mode="max")`` in the same style.

For code that builds its own layers (a torchvision detection model, a custom head). The detector
of ``maskrcnn.modeling`` does not use them: ``configs/roi_layer/*.yaml`` build a ``RoILayerSpec``
and ``MultiLevelRoIPooler`` calls the functional ops."""

from __future__ import annotations

import torch.fx
from torch import Tensor, nn

from .functional import _check_mode, _output_size, _roi_warp, _sampling_ratio, _spatial_scale, roi_align, roi_pool

__all__ = ["RoIAlign", "RoIPool", "RoIWarp"]

# Leaves for torch.fx.symbolic_trace: wrap the names this module's forward() calls.
torch.fx.wrap("roi_align")
torch.fx.wrap("roi_pool")
torch.fx.wrap("_roi_warp")


class RoIAlign(nn.Module):
    """RoI Align over one feature map (see :func:`maskrcnn.ops.roi_align`).

    Args:
        output_size: ``oh`` or ``(oh, ow)`` bins, kept as given (as torchvision).
        spatial_scale: feature-map size over input-image size (1/4 for a stride-4 map).
        sampling_ratio: sample points per bin and axis, ``<= 0`` for adaptive.
        aligned: half-pixel offset (Detectron2); False (the default, as torchvision) reproduces the
            original Detectron.
        mode: ``"avg"`` (Mask R-CNN) or ``"max"`` over the sample points of a bin; keyword-only.

    forward(input (N, C, H, W), rois (K, 5) or list of (K_i, 4) boxes in input pixels)
    -> (K, C, oh, ow).
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int = -1,
        aligned: bool = False,
        *,
        mode: str = "avg",
    ):
        super().__init__()
        _output_size(output_size)  # our clearer error for a bad size, at construction
        self.output_size = output_size
        self.spatial_scale = _spatial_scale(spatial_scale, "spatial_scale")
        self.sampling_ratio = _sampling_ratio(sampling_ratio)
        self.aligned = bool(aligned)
        _check_mode(mode)
        self.mode = mode

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.mode
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}"
        )


class RoIPool(nn.Module):
    """RoI Pool (Fast R-CNN) over one feature map (see :func:`maskrcnn.ops.roi_pool`).

    Args:
        output_size: ``oh`` or ``(oh, ow)`` bins, kept as given (as torchvision).
        spatial_scale: feature-map size over input-image size.

    forward(input (N, C, H, W), rois (K, 5) or list of (K_i, 4) boxes in input pixels)
    -> (K, C, oh, ow).
    """

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float):
        super().__init__()
        _output_size(output_size)
        self.output_size = output_size
        self.spatial_scale = _spatial_scale(spatial_scale, "spatial_scale")

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


class RoIWarp(nn.Module):
    """RoI Warp over one feature map (see :func:`maskrcnn.ops.roi_warp`): the box rounded to the
    feature grid as RoI Pool rounds it, then RoI Align's unaligned samples inside it.

    Args:
        output_size: ``oh`` or ``(oh, ow)`` bins, kept as given.
        spatial_scale: feature-map size over input-image size (1/32 for a stride-32 map).
        sampling_ratio: sample points per bin and axis, ``<= 0`` for adaptive.
        mode: ``"max"`` (the default, Table 2c's RoIWarp row) or ``"avg"``; keyword-only.

    forward(input (N, C, H, W), rois (K, 5) or list of (K_i, 4) boxes in input pixels)
    -> (K, C, oh, ow).
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int = -1,
        *,
        mode: str = "max",
    ):
        super().__init__()
        _output_size(output_size)
        self.output_size = output_size
        self.spatial_scale = _spatial_scale(spatial_scale, "spatial_scale")
        self.sampling_ratio = _sampling_ratio(sampling_ratio)
        _check_mode(mode)
        self.mode = mode

    def forward(self, input: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        # _roi_warp: roi_warp with mode positional, which TorchScript can compile.
        return _roi_warp(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.mode)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, mode={self.mode!r}"
        )
