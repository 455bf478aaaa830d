"""The pyramid level of a box (Eqn. 1 of the FPN paper), shared by the model's pooler
(:class:`maskrcnn.modeling.MultiLevelRoIPooler`) and the ops' ``MultiScaleRoIAlign``.

Plain PyTorch, so that the model can use it without loading the native extension.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fpn_levels"]


def fpn_levels(
    boxes: Tensor,
    *,
    min_level: int,
    max_level: int,
    canonical_level: int = 4,
    canonical_size: float = 224.0,
    eps: float = 1e-6,
) -> Tensor:
    """Pyramid level of each box: k = floor(k0 + log2(sqrt(w * h) / s0) + eps), clamped to the levels.

    ``eps`` is torchvision's (its ``LevelMapper``): a box of exactly s0 * 2**j maps to level k0 + j
    despite rounding in log2. Computed in the boxes' dtype, as torchvision.

    Args:
        boxes: (K, 4) XYXY in input pixels.
        min_level, max_level: the pyramid's levels k (2 and 5 for P2-P5).
        canonical_level, canonical_size: k0 = 4 and s0 = 224 of Eqn. 1.
    Returns:
        (K,) int64 index into the levels, i.e. k - min_level, in [0, max_level - min_level].
    """
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    k = torch.floor(canonical_level + torch.log2(scale / canonical_size) + torch.tensor(eps, dtype=scale.dtype))
    k = torch.clamp(k, min=min_level, max=max_level)
    return k.to(torch.int64) - min_level
