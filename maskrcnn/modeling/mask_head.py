"""Mask branch: the conv head, the per-class mask predictor, mask targets and the mask loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import make_norm
from .poolers import RoILayerSpec, roi_align_op

__all__ = ["MaskRCNNConvHead", "MaskPredictor", "mask_targets", "mask_loss", "select_class_masks"]


class MaskRCNNConvHead(nn.Module):
    """Four 3x3 convs with ReLU on the 14x14 RoI features (FPN mask head); ``num_convs=0`` is identity."""

    def __init__(self, *, in_channels: int, conv_dim: int = 256, num_convs: int = 4, norm: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            conv = nn.Conv2d(c, conv_dim, 3, padding=1, bias=norm is None)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if norm is not None:
                layers.append(make_norm(norm)(conv_dim))
            layers.append(nn.ReLU(inplace=True))
            c = conv_dim
        self.convs = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class MaskPredictor(nn.Module):
    """2x2 stride-2 deconv + ReLU, then a 1x1 conv to one mask logit map per class (0 = background)."""

    def __init__(self, *, in_channels: int, dim_reduced: int = 256, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes + 1, 1)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(K, C, r, r) -> (K, num_classes + 1, 2r, 2r) logits."""
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


def mask_targets(
    gt_masks: list[Tensor], boxes: list[Tensor], matched_idxs: list[Tensor], size: int, *, backend: str = "ours"
) -> Tensor:
    """Crops each positive RoI's GT mask and resizes it to (size, size), as torchvision does.

    The GT bitmaps are pooled with RoI Align (aligned=False, adaptive sampling, scale 1), so the
    target is the fraction of the RoI bin that the object covers, in [0, 1].

    Args:
        gt_masks: per image (G_i, H, W) uint8 bitmaps.
        boxes: per image (P_i, 4) positive RoIs, XYXY pixels.
        matched_idxs: per image (P_i,) int64 GT index of each RoI.
    Returns:
        (sum P_i, size, size) float targets.
    """
    spec = RoILayerSpec(name="mask_target", op="roi_align", backend=backend, aligned=False, sampling_ratio=-1)
    pool = roi_align_op(spec)
    out = []
    for masks, b, idx in zip(gt_masks, boxes, matched_idxs):
        if b.shape[0] == 0:
            continue
        rois = torch.cat([idx[:, None].to(b.dtype), b], dim=1)
        out.append(pool(masks[:, None].to(b.dtype), rois, (size, size), 1.0)[:, 0])
    if not out:
        return boxes[0].new_zeros((0, size, size))
    return torch.cat(out)


def select_class_masks(logits: Tensor, labels: Tensor) -> Tensor:
    """(K, C+1, M, M) per-class maps -> (K, M, M), the map of each RoI's class."""
    return logits[torch.arange(labels.shape[0], device=labels.device), labels]


def mask_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel binary cross-entropy on the GT class's mask (no competition between classes)."""
    if targets.numel() == 0:
        return logits.sum() * 0
    return F.binary_cross_entropy_with_logits(select_class_masks(logits, labels), targets)
