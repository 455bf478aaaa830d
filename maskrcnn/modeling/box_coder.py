"""Box regression targets: the (dx, dy, dw, dh) parameterisation of R-CNN.

The arithmetic follows torchvision's ``BoxCoder`` operation for operation so that a model
converted from torchvision decodes bit-identical boxes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BoxCoder"]


class BoxCoder:
    """Encodes boxes relative to reference boxes and decodes predicted deltas.

    ``weights`` (wx, wy, ww, wh) scale the deltas (R-CNN uses (10, 10, 5, 5), the RPN (1, 1, 1, 1));
    ``scale_clamp`` bounds dw / dh before ``exp`` so that a wild prediction cannot overflow.
    """

    def __init__(
        self, *, weights: tuple[float, float, float, float], scale_clamp: float = math.log(1000.0 / 16)
    ) -> None:
        if len(weights) != 4:
            raise ValueError(f"BoxCoder weights must have 4 values (wx, wy, ww, wh), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, gt_boxes: Tensor, boxes: Tensor) -> Tensor:
        """Deltas that move ``boxes`` onto ``gt_boxes``.

        Args:
            gt_boxes: (N, 4) XYXY target boxes, pixels.
            boxes: (N, 4) XYXY reference boxes (anchors or proposals), pixels.
        Returns:
            (N, 4) deltas (dx, dy, dw, dh), already multiplied by the weights.
        """
        wx, wy, ww, wh = self.weights
        ex_w = boxes[:, 2] - boxes[:, 0]
        ex_h = boxes[:, 3] - boxes[:, 1]
        ex_cx = boxes[:, 0] + 0.5 * ex_w
        ex_cy = boxes[:, 1] + 0.5 * ex_h

        gt_w = gt_boxes[:, 2] - gt_boxes[:, 0]
        gt_h = gt_boxes[:, 3] - gt_boxes[:, 1]
        gt_cx = gt_boxes[:, 0] + 0.5 * gt_w
        gt_cy = gt_boxes[:, 1] + 0.5 * gt_h

        dx = wx * (gt_cx - ex_cx) / ex_w
        dy = wy * (gt_cy - ex_cy) / ex_h
        dw = ww * torch.log(gt_w / ex_w)
        dh = wh * torch.log(gt_h / ex_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply deltas to reference boxes.

        Args:
            deltas: (N, 4 * K) deltas, K boxes per reference box (K = classes for the box head).
            boxes: (N, 4) XYXY reference boxes, pixels.
        Returns:
            (N, 4 * K) decoded XYXY boxes, pixels.
        """
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * widths[:, None])
        half_h = 0.5 * (torch.exp(dh) * heights[:, None])
        out = torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=2)
        return out.flatten(1)
