"""The pluggable RoI layer: which op pools RoI features, and the multi-level (FPN) pooler.

A :class:`RoILayerSpec` is what ``configs/roi_layer/*.yaml`` builds; :class:`MultiLevelRoIPooler`
assigns every RoI to one pyramid level (Eqn. 1 of the FPN paper) and pools it there with the
chosen op:

- ``backend="ours", op="roi_align"``: ``maskrcnn.ops.multilevel_roi_align``, one fused call for
  all levels (avg or max mode, aligned or not, fixed or adaptive sampling);
- ``backend="ours", op="roi_pool"``: ``maskrcnn.ops.roi_pool`` per level;
- ``backend="ours", op="roi_warp"``: each RoI's corners rounded on its own level
  (``maskrcnn.ops.quantize_rois`` with the level's scale), then the same fused
  ``multilevel_roi_align`` call, unaligned, at scale 1 (one level: ``maskrcnn.ops.roi_warp``);
- ``backend="torchvision"``: ``torchvision.ops.roi_align`` / ``roi_pool`` per level, the baseline
  the ablations compare against (torchvision's MultiScaleRoIAlign is aligned=False, sampling 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from maskrcnn.fpn import fpn_levels

__all__ = ["RoILayerSpec", "assign_fpn_levels", "boxes_to_rois", "MultiLevelRoIPooler", "roi_align_op"]

_OPS = ("roi_align", "roi_pool", "roi_warp")
_BACKENDS = ("ours", "torchvision")
_MODES = ("avg", "max")


@dataclass(frozen=True)
class RoILayerSpec:
    """Which RoI feature extractor to use (one file of ``configs/roi_layer/``).

    Attributes:
        name: the config's name, for logs and run names.
        op: ``roi_align``, ``roi_pool`` or ``roi_warp`` (RoI Align of the box rounded as RoI Pool
            rounds it; ours only, ``aligned`` must be False).
        backend: ``ours`` (maskrcnn.ops, our kernels) or ``torchvision``.
        aligned: RoI Align's half-pixel offset (Detectron2's ROIAlignV2); False is the original.
        sampling_ratio: sample points per bin side, or -1 for adaptive, ceil(roi_size / output_size)
            per RoI (the only spelling of adaptive here; the ops also take 0 as torchvision does).
        mode: ``avg`` or ``max`` over a bin's sample points (RoI Align and RoI Warp; ours only).
    """

    name: str = "roi_align"
    op: str = "roi_align"
    backend: str = "ours"
    aligned: bool = True
    sampling_ratio: int = -1
    mode: str = "avg"

    def __post_init__(self) -> None:
        ratio = self.sampling_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio == 0 or ratio < -1:
            raise ValueError(
                f"roi_layer.sampling_ratio must be -1 (adaptive) or a positive number of samples per "
                f"bin side, got {ratio!r}"
                + ("; adaptive sampling is spelled -1 here: set roi_layer.sampling_ratio=-1" if ratio == 0 else "")
            )
        if self.op not in _OPS:
            raise ValueError(f"roi_layer.op must be one of {_OPS}, got {self.op!r}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"roi_layer.backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.mode not in _MODES:
            raise ValueError(f"roi_layer.mode must be one of {_MODES}, got {self.mode!r}")
        if self.backend == "torchvision" and self.mode != "avg":
            raise ValueError("roi_layer: torchvision's roi_align has no mode='max'; use backend=ours")
        if self.op == "roi_pool" and (self.mode != "avg"):
            raise ValueError("roi_layer: mode applies to roi_align only; roi_pool always takes the max")
        if self.op == "roi_warp" and self.backend != "ours":
            raise ValueError("roi_layer: op=roi_warp is ours only (torchvision has no RoI Warp); use backend=ours")
        if self.op == "roi_warp" and self.aligned:
            raise ValueError("roi_layer: roi_warp has no half-pixel offset; set roi_layer.aligned=false")


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """Per-image (K_i, 4) boxes -> (sum K_i, 5) rois [batch_index, x1, y1, x2, y2]."""
    if len(boxes) == 0:
        raise ValueError("boxes_to_rois needs at least one image")
    cat = torch.cat(boxes, dim=0)
    idx = torch.cat([torch.full((b.shape[0], 1), i, dtype=cat.dtype, device=cat.device) for i, b in enumerate(boxes)])
    return torch.cat([idx, cat], dim=1)


# The level formula of the FPN paper (also the ops' MultiScaleRoIAlign's): k - min_level per box.
assign_fpn_levels = fpn_levels


def roi_align_op(spec: RoILayerSpec):
    """The single-level function ``f(input, rois, output_size, spatial_scale)`` of a spec."""
    if spec.backend == "torchvision":
        if spec.op == "roi_pool":
            return lambda x, rois, size, scale: torchvision.ops.roi_pool(x, rois, size, scale)
        return lambda x, rois, size, scale: torchvision.ops.roi_align(
            x, rois, size, scale, sampling_ratio=spec.sampling_ratio, aligned=spec.aligned
        )
    from maskrcnn import ops  # deferred: loads the native extension

    if spec.op == "roi_pool":
        return lambda x, rois, size, scale: ops.roi_pool(x, rois, size, scale)
    if spec.op == "roi_warp":
        return lambda x, rois, size, scale: ops.roi_warp(x, rois, size, scale, spec.sampling_ratio, mode=spec.mode)
    return lambda x, rois, size, scale: ops.roi_align(
        x, rois, size, scale, sampling_ratio=spec.sampling_ratio, aligned=spec.aligned, mode=spec.mode
    )


class MultiLevelRoIPooler(nn.Module):
    """Pools (output_size x output_size) features of each RoI from its pyramid level.

    Args:
        output_size: bin grid side, 7 for the box head, 14 for the mask head.
        in_features: names of the feature maps to pool from, finest first (e.g. p2..p5 or res4).
        strides: their strides in input pixels (4, 8, 16, 32); must be powers of two.
        roi_layer: the op (see :class:`RoILayerSpec`).
        canonical_level, canonical_size: k0 = 4 and 224 of Eqn. 1 of the FPN paper.
    """

    def __init__(
        self,
        *,
        output_size: int,
        in_features: list[str],
        strides: list[int],
        roi_layer: RoILayerSpec,
        canonical_level: int = 4,
        canonical_size: float = 224.0,
    ) -> None:
        super().__init__()
        if not isinstance(roi_layer, RoILayerSpec):
            raise TypeError(
                f"pooler: roi_layer must be a RoILayerSpec (a configs/roi_layer/ config, instantiated), "
                f"got {type(roi_layer).__name__}"
            )
        if len(in_features) != len(strides) or len(strides) == 0:
            raise ValueError(f"pooler: in_features {list(in_features)} and strides {list(strides)} must match")
        levels = [math.log2(s) for s in strides]
        if any(lv != int(lv) for lv in levels) or any(b - a != 1 for a, b in zip(levels, levels[1:])):
            raise ValueError(f"pooler strides must be consecutive powers of two, got {list(strides)}")
        self.output_size = (int(output_size), int(output_size))
        self.in_features = list(in_features)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.canonical_level = canonical_level
        self.canonical_size = canonical_size
        self.roi_layer = roi_layer
        self._single = roi_align_op(roi_layer)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, in_features={self.in_features}, roi_layer={self.roi_layer}"

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        """
        Args:
            features: name -> (N, C, h, w) maps (the pooler uses ``in_features``).
            boxes: per image (K_i, 4) XYXY boxes in input pixels.
        Returns:
            (sum K_i, C, output_size, output_size), RoIs in image order.
        """
        feats = [features[name] for name in self.in_features]
        # Box coordinates stay float32 under float16 / bfloat16 features (the ops' contract).
        dtype = torch.float32 if feats[0].dtype in (torch.float16, torch.bfloat16) else feats[0].dtype
        rois = boxes_to_rois([b.to(dtype) for b in boxes])
        spec = self.roi_layer
        if spec.backend == "ours":
            from maskrcnn import ops

            # Clipped proposals numbered by image here: the CUDA ops need not check them, which
            # saves their host synchronisation (maskrcnn/ops/trust.py).
            with ops.trusted_rois():
                return self._pool(feats, rois)
        return self._pool(feats, rois)

    def _pool(self, feats: list[Tensor], rois: Tensor) -> Tensor:
        spec = self.roi_layer
        if len(feats) == 1:
            return self._single(feats[0], rois, self.output_size, self.scales[0])
        levels = assign_fpn_levels(
            rois[:, 1:],
            min_level=self.min_level,
            max_level=self.max_level,
            canonical_level=self.canonical_level,
            canonical_size=self.canonical_size,
        )
        if spec.backend == "ours" and spec.op == "roi_warp":
            from maskrcnn import ops

            # Each RoI rounded on its own level's grid (feature cells), then RoI Align at scale 1.
            # The scale of level l is 2^-(min_level + l), computed on the device (no host copy).
            scales = torch.exp2(-(levels + self.min_level).to(torch.float64))
            return ops.multilevel_roi_align(
                feats,
                ops.quantize_rois(rois, scales),
                levels,
                [1.0] * len(feats),
                self.output_size,
                sampling_ratio=spec.sampling_ratio,
                aligned=False,
                mode=spec.mode,
            )
        if spec.backend == "ours" and spec.op == "roi_align":
            from maskrcnn import ops

            return ops.multilevel_roi_align(
                feats,
                rois,
                levels,
                self.scales,
                self.output_size,
                sampling_ratio=spec.sampling_ratio,
                aligned=spec.aligned,
                mode=spec.mode,
            )
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1]) + self.output_size)
        for level, (x, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            out[idx] = self._single(x, rois[idx], self.output_size, scale).to(out.dtype)
        return out
