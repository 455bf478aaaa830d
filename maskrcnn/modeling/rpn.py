"""Region Proposal Network: objectness and box deltas per anchor, proposals, and the RPN losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from maskrcnn.events import put_scalar

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .matcher import Matcher, sample_balanced

__all__ = ["RPNHead", "RPN"]


class RPNHead(nn.Module):
    """A 3x3 conv + ReLU shared by all levels, then 1x1 convs for A logits and 4A deltas."""

    def __init__(self, *, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        self.num_anchors = num_anchors
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: logits (N, A, h, w) and deltas (N, 4A, h, w)."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(x: Tensor, c: int) -> Tensor:
    """(N, A*c, h, w) -> (N, h*w*A, c), the anchors' order (location-major, then anchor)."""
    n, _, h, w = x.shape
    return x.view(n, -1, c, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, c)


class RPN(nn.Module):
    """Proposals from anchors, as in Faster R-CNN / torchvision.

    Proposal selection per image: top ``pre_nms_topk`` anchors per level by objectness, decode,
    clip to the image, drop boxes smaller than ``min_box_size``, NMS per level at ``nms_thresh``
    (torchvision's batched_nms), then the ``post_nms_topk`` best of the image.

    Training: anchors match GT at IoU >= ``fg_iou`` (and each GT's best anchors), background
    below ``bg_iou``; ``batch_size_per_image`` anchors are sampled with at most
    ``positive_fraction`` positives; losses are BCE on objectness and smooth L1 (beta 1/9,
    summed over positives, divided by the number sampled) on the deltas.
    """

    def __init__(
        self,
        *,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_train: int = 2000,
        post_nms_topk_test: int = 1000,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        min_box_size: float = 1e-3,
        smooth_l1_beta: float = 1.0 / 9,
    ) -> None:
        super().__init__()
        per_loc = anchor_generator.num_anchors_per_location()
        if any(a != head.num_anchors for a in per_loc):
            raise ValueError(
                f"RPN head predicts {head.num_anchors} anchors per location but the anchor "
                f"generator makes {per_loc} (sizes x aspect_ratios per level)"
            )
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(high=fg_iou, low=bg_iou, allow_low_quality_matches=True)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_box_size = min_box_size
        self.smooth_l1_beta = smooth_l1_beta

    def forward(
        self,
        features: list[Tensor],
        image_sizes: list[tuple[int, int]],
        padded_size: tuple[int, int],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """
        Args:
            features: per level (N, C, h, w).
            image_sizes: (H, W) of each image before padding.
            padded_size: (H, W) of the padded batch.
            targets: training targets with ``boxes`` (G, 4) XYXY pixels.
        Returns:
            proposals per image (P_i, 4) XYXY pixels (detached), and the RPN losses in training.
        """
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(
            padded_size, [f.shape[-2:] for f in features], dtype=torch.float32, device=features[0].device
        )
        num_per_level = [a.shape[0] for a in anchors]
        anchors = torch.cat(anchors)
        # float32 for decoding, top-k and the losses, also under autocast.
        objectness = torch.cat([_flatten(x, 1) for x in logits], dim=1).squeeze(2).float()  # (N, total)
        pred_deltas = torch.cat([_flatten(x, 4) for x in deltas], dim=1).float()  # (N, total, 4)
        n = objectness.shape[0]

        # Faster R-CNN does not backpropagate through the proposal coordinates.
        proposals = self.box_coder.decode(pred_deltas.detach().reshape(-1, 4), anchors.repeat(n, 1))
        proposals = proposals.view(n, -1, 4)
        boxes = self._select_proposals(proposals, objectness.detach(), image_sizes, num_per_level)

        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN: targets are required in training mode")
            losses = self._losses(anchors, objectness, pred_deltas, targets)
        return boxes, losses

    def _select_proposals(
        self, proposals: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]], num_per_level: list[int]
    ) -> list[Tensor]:
        n = proposals.shape[0]
        device = proposals.device
        pre_k = self.pre_nms_topk[self.training]
        top_idx, offset = [], 0
        for ob in objectness.split(num_per_level, dim=1):
            k = min(pre_k, ob.shape[1])
            top_idx.append(ob.topk(k, dim=1).indices + offset)
            offset += ob.shape[1]
        levels = torch.cat([torch.full((m,), i, dtype=torch.int64, device=device) for i, m in enumerate(num_per_level)])
        top_idx = torch.cat(top_idx, dim=1)
        batch = torch.arange(n, device=device)[:, None]
        scores = torch.sigmoid(objectness[batch, top_idx])
        boxes_all = proposals[batch, top_idx]
        levels = levels[top_idx]

        out = []
        for boxes, s, lvl, size in zip(boxes_all, scores, levels, image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            keep = box_ops.remove_small_boxes(boxes, self.min_box_size)
            boxes, s, lvl = boxes[keep], s[keep], lvl[keep]
            keep = torch.where(s >= self.score_thresh)[0]
            boxes, s, lvl = boxes[keep], s[keep], lvl[keep]
            keep = box_ops.batched_nms(boxes, s, lvl, self.nms_thresh)[: self.post_nms_topk[self.training]]
            out.append(boxes[keep])
        return out

    def _losses(
        self, anchors: Tensor, objectness: Tensor, pred_deltas: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        labels, reg_targets = [], []
        for t in targets:
            gt = t["boxes"].to(anchors.dtype)
            if gt.numel() == 0:
                # An image without objects: every anchor is background.
                labels.append(torch.zeros(anchors.shape[0], dtype=torch.float32, device=anchors.device))
                reg_targets.append(torch.zeros_like(anchors))
                continue
            matches = self.matcher(box_ops.box_iou(gt, anchors))
            lab = (matches >= 0).to(torch.float32)
            lab[matches == Matcher.BETWEEN] = -1.0
            labels.append(lab)
            reg_targets.append(self.box_coder.encode(gt[matches.clamp(min=0)], anchors))

        pos_all, neg_all = [], []
        total = anchors.shape[0]
        for i, lab in enumerate(labels):
            pos, neg = sample_balanced(
                lab, batch_size=self.batch_size_per_image, positive_fraction=self.positive_fraction
            )
            pos_all.append(pos + i * total)
            neg_all.append(neg + i * total)
        pos = torch.cat(pos_all)
        sampled = torch.cat([pos, torch.cat(neg_all)])

        labels = torch.cat(labels)
        reg_targets = torch.cat(reg_targets)
        objectness = objectness.reshape(-1)
        pred_deltas = pred_deltas.reshape(-1, 4)
        box_loss = F.smooth_l1_loss(
            pred_deltas[pos], reg_targets[pos], beta=self.smooth_l1_beta, reduction="sum"
        ) / max(sampled.numel(), 1)
        obj_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
        put_scalar("rpn/num_pos", pos.numel() / len(targets))
        put_scalar("rpn/num_neg", (sampled.numel() - pos.numel()) / len(targets))
        return {"loss_objectness": obj_loss, "loss_rpn_box_reg": box_loss}
