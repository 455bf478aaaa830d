"""Second stage: RoI sampling, the box head and its losses, detection post-processing, the mask branch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from .box_coder import BoxCoder
from .matcher import Matcher, sample_balanced
from .mask_head import mask_loss, mask_targets, select_class_masks
from .poolers import MultiLevelRoIPooler

__all__ = ["RoIHeads"]


class RoIHeads(nn.Module):
    """Box head (+ mask head) on RPN proposals.

    Training: GT boxes are appended to the proposals; proposals match GT at IoU >= ``fg_iou``
    (foreground, labelled with the GT class) or below ``bg_iou`` (background); per image
    ``batch_size_per_image`` RoIs are sampled with at most ``positive_fraction`` foreground.
    Losses: cross-entropy over classes, smooth L1 (``smooth_l1_beta``, torchvision's 1/9) on the
    GT class's deltas summed over foreground and divided by the number of sampled RoIs, and the
    mask BCE on foreground RoIs.

    Inference: softmax scores, class-specific boxes clipped to the image; drop background,
    scores <= ``score_thresh`` and boxes smaller than 0.01 px; per-class NMS at ``nms_thresh``;
    the ``detections_per_img`` best. The mask head runs on the final boxes.

    C4 models set ``mask_pooler=None``: the mask head then works on the res5 maps of the box head
    (``box_head.trunk``), as in Fig. 4 (left) of the Mask R-CNN paper.
    """

    def __init__(self, *, box_pooler: MultiLevelRoIPooler, box_head: nn.Module, box_predictor: nn.Module,
                 fg_iou: float = 0.5, bg_iou: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
                 smooth_l1_beta: float = 1.0 / 9, score_thresh: float = 0.05, nms_thresh: float = 0.5,
                 detections_per_img: int = 100, mask_pooler: MultiLevelRoIPooler | None = None,
                 mask_head: nn.Module | None = None, mask_predictor: nn.Module | None = None) -> None:
        super().__init__()
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.matcher = Matcher(high=fg_iou, low=bg_iou, allow_low_quality_matches=False)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_coder = BoxCoder(weights=tuple(bbox_reg_weights))
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_on = mask_predictor is not None
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        if self.mask_on and mask_pooler is None and not hasattr(box_head, "trunk"):
            raise ValueError("RoIHeads: mask_pooler=None needs a box head with res5 maps (Res5Head)")
        self.last_stats: dict[str, float] = {}

    # ---------------------------------------------------------------------------------------
    # training samples
    # ---------------------------------------------------------------------------------------
    def _sample(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]):
        """Returns per image the sampled RoIs, their labels, matched GT indices and box targets."""
        rois, labels, matched, reg_targets = [], [], [], []
        for props, t in zip(proposals, targets):
            gt = t["boxes"].to(props.dtype)
            gt_labels = t["labels"]
            props = torch.cat([props, gt])  # GT appended: every GT has a perfect RoI
            if gt.numel() == 0:
                idx = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                lab = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
            else:
                m = self.matcher(box_ops.box_iou(gt, props))
                idx = m.clamp(min=0)
                lab = gt_labels[idx].to(torch.int64)
                lab[m == Matcher.BELOW_LOW] = 0
                lab[m == Matcher.BETWEEN] = -1
            pos, neg = sample_balanced(lab, batch_size=self.batch_size_per_image,
                                       positive_fraction=self.positive_fraction)
            # Sorted order, as torchvision's mask -> where, so that sampling is the only randomness.
            keep = torch.sort(torch.cat([pos, neg])).values
            props, lab, idx = props[keep], lab[keep], idx[keep]
            gt_for_reg = gt if gt.numel() else props.new_zeros((1, 4))
            rois.append(props)
            labels.append(lab)
            matched.append(idx)
            reg_targets.append(self.box_coder.encode(gt_for_reg[idx], props))
        return rois, labels, matched, reg_targets

    def _box_losses(self, logits: Tensor, deltas: Tensor, labels: Tensor, reg_targets: Tensor) -> dict[str, Tensor]:
        loss_cls = F.cross_entropy(logits, labels)
        fg = torch.where(labels > 0)[0]
        deltas = deltas.reshape(deltas.shape[0], -1, 4)
        loss_box = F.smooth_l1_loss(deltas[fg, labels[fg]], reg_targets[fg], beta=self.smooth_l1_beta,
                                    reduction="sum") / max(labels.numel(), 1)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean().item() if labels.numel() else 0.0
            fg_acc = (logits[fg].argmax(1) == labels[fg]).float().mean().item() if fg.numel() else 0.0
        self.last_stats = {"roi/num_fg": float(fg.numel()), "roi/num_bg": float(labels.numel() - fg.numel()),
                           "roi/cls_accuracy": acc, "roi/fg_cls_accuracy": fg_acc}
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    # ---------------------------------------------------------------------------------------
    # inference
    # ---------------------------------------------------------------------------------------
    def _postprocess(self, logits: Tensor, deltas: Tensor, proposals: list[Tensor],
                     image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        num_classes = logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        boxes_all = self.box_coder.decode(deltas, torch.cat(proposals)).reshape(-1, num_classes, 4)
        scores_all = F.softmax(logits, -1)
        results = []
        for boxes, scores, size in zip(boxes_all.split(counts), scores_all.split(counts), image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results

    # ---------------------------------------------------------------------------------------
    def _mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor], box_maps: Tensor | None) -> Tensor:
        if self.mask_pooler is None:
            x = box_maps if box_maps is not None else self.box_head.trunk(self.box_pooler(features, boxes))
        else:
            x = self.mask_pooler(features, boxes)
        if self.mask_head is not None:
            x = self.mask_head(x)
        return self.mask_predictor(x)

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None):
        """
        Args:
            features: name -> (N, C, h, w).
            proposals: per image (P_i, 4) XYXY pixels of the (resized, unpadded) input.
            image_sizes: (H, W) per image.
            targets: training targets (``boxes``, ``labels``, ``masks`` for Mask R-CNN).
        Returns:
            (detections per image, losses); detections have ``boxes``, ``scores``, ``labels`` and,
            for Mask R-CNN, ``masks`` (D, 1, M, M) probabilities of the detected class.
        """
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads: targets are required in training mode")
            proposals, labels, matched, reg_targets = self._sample(proposals, targets)

        pooled = self.box_pooler(features, proposals)
        box_maps = None
        if self.mask_on and self.mask_pooler is None:
            box_maps = self.box_head.trunk(pooled)
            box_features = box_maps.mean(dim=(2, 3))
        else:
            box_features = self.box_head(pooled)
        logits, deltas = self.box_predictor(box_features)
        # Losses and box decoding in float32 also under autocast.
        logits, deltas = logits.float(), deltas.float()

        if self.training:
            labels_cat = torch.cat(labels)
            losses = self._box_losses(logits, deltas, labels_cat, torch.cat(reg_targets))
            if self.mask_on:
                fg = [torch.where(lab > 0)[0] for lab in labels]
                fg_boxes = [p[i] for p, i in zip(proposals, fg)]
                fg_cat = torch.where(labels_cat > 0)[0]
                mask_logits = self._mask_logits(features, fg_boxes,
                                                box_maps[fg_cat] if box_maps is not None else None)
                gt_masks = [t["masks"] for t in targets]
                if any(m.shape[0] != t["boxes"].shape[0] for m, t in zip(gt_masks, targets)):
                    raise ValueError("targets: masks and boxes must have the same number of objects")
                backend = self.box_pooler.roi_layer.backend
                mt = mask_targets(gt_masks, fg_boxes, [m[i] for m, i in zip(matched, fg)],
                                  mask_logits.shape[-1], backend=backend)
                losses["loss_mask"] = mask_loss(mask_logits.float(), labels_cat[fg_cat], mt)
            return [], losses

        results = self._postprocess(logits, deltas, proposals, image_sizes)
        if self.mask_on:
            boxes = [r["boxes"] for r in results]
            if sum(b.shape[0] for b in boxes) == 0:
                for r in results:  # nothing detected: (0, 1, 1, 1), pasted later to (0, 1, H, W)
                    r["masks"] = box_features.new_zeros((0, 1, 1, 1))
            else:
                mask_logits = self._mask_logits(features, boxes, None)
                probs = select_class_masks(mask_logits.float(), torch.cat([r["labels"] for r in results])).sigmoid()
                for r, p in zip(results, probs.split([b.shape[0] for b in boxes])):
                    r["masks"] = p[:, None]
        return results, {}
