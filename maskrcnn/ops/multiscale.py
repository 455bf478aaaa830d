"""``MultiScaleRoIAlign``: torchvision's FPN pooler (same constructor, call convention, scale
inference and level mapping) on our fused ``multilevel_roi_align``, one kernel call for all levels
instead of one ``roi_align`` per level.

Drop-in for torchvision's detection models::

    model.roi_heads.box_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    model.roi_heads.mask_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

from maskrcnn.fpn import fpn_levels

from .functional import _check_mode, _output_size, _sampling_ratio, multilevel_roi_align, roi_align

__all__ = ["MultiScaleRoIAlign", "infer_scale", "map_levels"]

torch.fx.wrap("roi_align")
torch.fx.wrap("multilevel_roi_align")


def infer_scale(feature: Tensor, original_size: tuple[int, int]) -> float:
    """torchvision's ``_infer_scale``: the power of two nearest to feature height / image height
    (the scale is assumed to be 2 ** -k; the width is not consulted, as in torchvision)."""
    approx = float(feature.shape[-2]) / float(original_size[0])
    return 2 ** float(torch.tensor(approx).log2().round())


def map_levels(
    boxes: list[Tensor],
    *,
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """torchvision's ``LevelMapper`` (Eqn. 1 of the FPN paper, :func:`maskrcnn.fpn.fpn_levels`)
    over per-image (K_i, 4) XYXY boxes -> (sum K_i,) int64 level index (k - k_min), images in order."""
    return fpn_levels(
        torch.cat(boxes, dim=0),
        min_level=k_min,
        max_level=k_max,
        canonical_level=canonical_level,
        canonical_size=canonical_scale,
        eps=eps,
    )


class MultiScaleRoIAlign(nn.Module):
    """RoI Align over an FPN: each box is pooled from the level of its size.

    Args:
        featmap_names: the keys of the feature dict to pool from (used in the dict's order, as
            torchvision).
        output_size: ``oh`` or ``(oh, ow)``.
        sampling_ratio: sample points per bin and axis, ``<= 0`` for adaptive.
        canonical_scale, canonical_level: s0 = 224 and k0 = 4 of Eqn. 1 of the FPN paper.
        aligned: RoI Align's half-pixel offset; False, as torchvision's MultiScaleRoIAlign.
        mode: ``"avg"`` or ``"max"`` over the sample points of a bin (our extra).

    forward(x: name -> (N, C, H_l, W_l), boxes: per image (K_i, 4) XYXY in input pixels,
    image_shapes: per image (height, width) after resizing) -> (sum K_i, C, oh, ow).

    As torchvision, the scales (feature size over the largest image size, rounded to a power of
    two) and the level range are inferred at the first call and kept for later calls.
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int] | list[int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        aligned: bool = False,
        mode: str = "avg",
    ):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = _output_size(output_size)
        self.sampling_ratio = _sampling_ratio(sampling_ratio)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.aligned = bool(aligned)
        _check_mode(mode)
        self.mode = mode
        self.scales: list[float] | None = None
        self.k_min = 0
        self.k_max = 0

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not features:
            raise ValueError(
                f"MultiScaleRoIAlign: none of featmap_names {self.featmap_names} is in the features ({list(x)})"
            )
        if self.scales is None:
            self._setup_scales(features, image_shapes)
        scales = self.scales
        rois = _rois_from_boxes(boxes)
        if len(features) == 1:
            return roi_align(
                features[0], rois, self.output_size, scales[0], self.sampling_ratio, self.aligned, self.mode
            )
        levels = map_levels(
            boxes,
            k_min=self.k_min,
            k_max=self.k_max,
            canonical_scale=self.canonical_scale,
            canonical_level=self.canonical_level,
        )
        return multilevel_roi_align(
            features, rois, levels, scales, self.output_size, self.sampling_ratio, self.aligned, self.mode
        )

    def _setup_scales(self, features: list[Tensor], image_shapes: list[tuple[int, int]]) -> None:
        """torchvision's ``_setup_scales``: scales from the largest image, levels from the scales."""
        if not image_shapes:
            raise ValueError("MultiScaleRoIAlign: image_shapes must list the (height, width) of each image")
        size = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
        scales = [infer_scale(f, size) for f in features]
        self.k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
        self.k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
        self.scales = scales

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}"
        )


def _rois_from_boxes(boxes: list[Tensor]) -> Tensor:
    """Per-image (K_i, 4) boxes -> (sum K_i, 5) ``[i, x1, y1, x2, y2]`` (torchvision's
    ``_convert_to_roi_format``)."""
    cat = torch.cat(boxes, dim=0)
    index = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([index, cat], dim=1)
