"""Second stage: RoI sampling, the box head and its losses, detection post-processing, the mask branch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops

from maskrcnn.events import put_scalar

from .box_coder import BoxCoder
from .mask_head import mask_loss, mask_targets, select_class_masks
from .matcher import Matcher, sample_balanced
from .poolers import MultiLevelRoIPooler

__all__ = ["Res5RoIHeads", "RoIHeads", "StandardRoIHeads"]


class RoIHeads(nn.Module):
    """What both RoI-head designs share: RoI sampling, the box losses, detection post-processing.

    The two designs differ in where the box and mask features come from, and are two classes:
    :class:`StandardRoIHeads` (FPN: a box head and a mask head, each on its own pooled RoIs) and
    :class:`Res5RoIHeads` (C4: the res5 stage is the box head and its maps feed the mask
    predictor, Fig. 4 left of the Mask R-CNN paper).

    Training: GT boxes are appended to the proposals; proposals match GT at IoU >= ``fg_iou``
    (foreground, labelled with the GT class) or below ``bg_iou`` (background); per image
    ``batch_size_per_image`` RoIs are sampled with at most ``positive_fraction`` foreground.
    Losses: cross-entropy over classes, smooth L1 (``smooth_l1_beta``, torchvision's 1/9) on the
    GT class's deltas summed over foreground and divided by the number of sampled RoIs, and the
    mask BCE on foreground RoIs, against GT masks cropped by the RoI Align of
    ``mask_target_backend`` (``ours`` or ``torchvision``). Counters (``roi/num_fg``,
    ``roi/cls_accuracy`` ...) go to :func:`maskrcnn.events.put_scalar`.

    Inference: softmax scores, class-specific boxes clipped to the image; drop background,
    scores <= ``score_thresh`` and boxes smaller than 0.01 px; per-class NMS at ``nms_thresh``;
    the ``detections_per_img`` best. The mask branch runs on the final boxes.
    """

    def __init__(
        self,
        *,
        box_pooler: MultiLevelRoIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou: float = 0.5,
        bg_iou: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 1.0 / 9,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        mask_target_backend: str = "ours",
    ) -> None:
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
        if mask_target_backend not in ("ours", "torchvision"):
            raise ValueError(
                f"roi_heads.mask_target_backend must be 'ours' or 'torchvision', got {mask_target_backend!r}"
            )
        self.mask_target_backend = mask_target_backend
        self.mask_predictor: nn.Module | None = None  # set by the subclasses, after their mask modules

    @property
    def mask_on(self) -> bool:
        return self.mask_predictor is not None

    def _box_features(self, features: dict[str, Tensor], proposals: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """(sum P_i, D) box features of the proposals, and the maps the mask branch may reuse (or None)."""
        raise NotImplementedError

    def _mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor], box_maps: Tensor | None) -> Tensor:
        """(sum K_i, num_classes + 1, M, M) mask logits of ``boxes``; ``box_maps``: their box-head maps, if kept."""
        raise NotImplementedError

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
            pos, neg = sample_balanced(
                lab, batch_size=self.batch_size_per_image, positive_fraction=self.positive_fraction
            )
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
        loss_box = F.smooth_l1_loss(
            deltas[fg, labels[fg]], reg_targets[fg], beta=self.smooth_l1_beta, reduction="sum"
        ) / max(labels.numel(), 1)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean().item() if labels.numel() else 0.0
            fg_acc = (logits[fg].argmax(1) == labels[fg]).float().mean().item() if fg.numel() else 0.0
        put_scalar("roi/num_fg", fg.numel())
        put_scalar("roi/num_bg", labels.numel() - fg.numel())
        put_scalar("roi/cls_accuracy", acc)
        put_scalar("roi/fg_cls_accuracy", fg_acc)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    # ---------------------------------------------------------------------------------------
    # inference
    # ---------------------------------------------------------------------------------------
    def _postprocess(
        self, logits: Tensor, deltas: Tensor, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
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
    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ):
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

        box_features, box_maps = self._box_features(features, proposals)
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
                mask_logits = self._mask_logits(features, fg_boxes, box_maps[fg_cat] if box_maps is not None else None)
                gt_masks = [t["masks"] for t in targets]
                if any(m.shape[0] != t["boxes"].shape[0] for m, t in zip(gt_masks, targets)):
                    raise ValueError("targets: masks and boxes must have the same number of objects")
                mt = mask_targets(
                    gt_masks,
                    fg_boxes,
                    [m[i] for m, i in zip(matched, fg)],
                    mask_logits.shape[-1],
                    backend=self.mask_target_backend,
                )
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


class StandardRoIHeads(RoIHeads):
    """RoI heads of the FPN models: box head on ``box_pooler``'s RoIs, mask head on ``mask_pooler``'s.

    Args:
        mask_pooler, mask_head, mask_predictor: the mask branch (all None for Faster R-CNN;
            ``mask_head`` may be None, the predictor then works on the pooled features).
        **common: the arguments of :class:`RoIHeads`.
    """

    def __init__(
        self,
        *,
        mask_pooler: MultiLevelRoIPooler | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        **common,
    ) -> None:
        super().__init__(**common)
        if (mask_pooler is None) != (mask_predictor is None):
            raise ValueError(
                "StandardRoIHeads: give both mask_pooler and mask_predictor (Mask R-CNN) or neither "
                "(Faster R-CNN); masks from the res5 maps of a C4 box head are Res5RoIHeads"
            )
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor

    def _box_features(self, features, proposals):
        return self.box_head(self.box_pooler(features, proposals)), None

    def _mask_logits(self, features, boxes, box_maps):
        x = self.mask_pooler(features, boxes)
        if self.mask_head is not None:
            x = self.mask_head(x)
        return self.mask_predictor(x)


class Res5RoIHeads(RoIHeads):
    """RoI heads of the C4 models: the res5 stage (:class:`~maskrcnn.modeling.Res5Head`) is the box
    head, and the mask predictor works on its (K, C5, 7, 7) maps.

    Args:
        box_head: a module with ``trunk(x)`` -> (K, C5, h, w) maps, its features being their mean.
        mask_predictor: the deconv mask predictor on the res5 maps (None for Faster R-CNN).
        **common: the arguments of :class:`RoIHeads`.
    """

    def __init__(self, *, mask_predictor: nn.Module | None = None, **common) -> None:
        super().__init__(**common)
        if not callable(getattr(self.box_head, "trunk", None)):
            raise ValueError(
                f"Res5RoIHeads: box_head must be a Res5Head (a module with trunk()), got "
                f"{type(self.box_head).__name__}; a pooled-feature box head is StandardRoIHeads"
            )
        self.mask_predictor = mask_predictor

    def _box_features(self, features, proposals):
        maps = self.box_head.trunk(self.box_pooler(features, proposals))
        return maps.mean(dim=(2, 3)), maps

    def _mask_logits(self, features, boxes, box_maps):
        if box_maps is None:  # inference: the final boxes, pooled and run through res5 again
            box_maps = self.box_head.trunk(self.box_pooler(features, boxes))
        return self.mask_predictor(box_maps)
