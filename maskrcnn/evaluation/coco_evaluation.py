"""COCO box and mask evaluation of model outputs (pycocotools' COCOeval)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO

from .coco_scoring import IOU_TYPES, score_iou_type
from .gather import predictions_to_score
from .table import format_per_category_table

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5


def image_id_of(target: Mapping) -> int | str:
    """The ``image_id`` of a dataset target as a plain Python value (int, or str for VOC names)."""
    if "image_id" not in target:
        raise KeyError(f"target has no 'image_id' (keys: {sorted(target)})")
    image_id = target["image_id"]
    if isinstance(image_id, torch.Tensor):
        if image_id.numel() != 1:
            raise ValueError(f"target['image_id'] must be a scalar, got a tensor of shape {tuple(image_id.shape)}")
        return int(image_id.item())
    if isinstance(image_id, np.integer):
        return int(image_id)
    return image_id


def binarize_masks(masks: torch.Tensor, *, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """Foreground of mask probabilities (any shape): a pixel is foreground when its probability
    is > ``threshold`` (0.5: torchvision, detectron2); bool masks are taken as they are. The one
    binarization of scoring, results files and drawings, so a drawing shows the scored pixels."""
    return masks if masks.dtype == torch.bool else masks > threshold


def encode_masks(masks: torch.Tensor, *, threshold: float = MASK_THRESHOLD) -> list[dict]:
    """Binarize mask probabilities and run-length encode them for COCO.

    Args:
        masks: (D, 1, H, W) float probabilities in [0, 1] (or bool / uint8 0-1), in original image
            pixels. A pixel is foreground when its probability is > ``threshold`` (0.5: torchvision,
            detectron2); bool masks are taken as they are.

    Returns:
        D RLE dicts ``{"size": [H, W], "counts": str}`` (counts decoded to str so they pickle and
        serialize to JSON).
    """
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be (D, 1, H, W), got shape {tuple(masks.shape)}")
    binary = binarize_masks(masks[:, 0], threshold=threshold)
    # pycocotools wants (H, W, D) uint8 in Fortran order
    array = np.asfortranarray(binary.permute(1, 2, 0).to(torch.uint8).cpu().numpy())
    rles = mask_util.encode(array) if len(masks) else []
    for rle in rles:
        rle["counts"] = rle["counts"].decode("utf-8")
    return list(rles)


def coco_results(
    image_id, output: Mapping, *, label_to_category_id: Mapping[int, int], mask_threshold: float = MASK_THRESHOLD
) -> list[dict]:
    """One COCO result dict per detection of ``output``, as the evaluator scores it and as
    ``tools/predict.py`` writes it (so a results file scores what an in-process evaluation does).

    Args:
        image_id: the image's id in the ground truth.
        output: ``boxes`` (D, 4) XYXY image pixels, ``scores`` (D,), ``labels`` (D,), optionally
            ``masks`` (D, 1, H, W) probabilities in image pixels.
        label_to_category_id: model label -> category id, for every label in ``output``.
        mask_threshold: see :func:`encode_masks`.

    Returns:
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (+ ``"segmentation"``: RLE).
    """
    xywh = output["boxes"].detach().to("cpu", torch.float64).clone()
    xywh[:, 2:] -= xywh[:, :2]
    scores = output["scores"].detach().to("cpu", torch.float64)
    labels = output["labels"].detach().to("cpu", torch.int64)
    results = [
        {"image_id": image_id, "category_id": int(label_to_category_id[label]), "bbox": box, "score": score}
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist())
    ]
    if "masks" in output:
        for result, rle in zip(results, encode_masks(output["masks"].detach(), threshold=mask_threshold)):
            result["segmentation"] = rle
    return results


class COCOEvaluator:
    """COCO bbox (and segm) AP of a detector over a COCO-format dataset.

    Usage: ``reset()``, then ``process(targets, outputs)`` per batch, then ``evaluate()``.

    Metrics (see :mod:`maskrcnn.evaluation.coco_scoring`): fractions in [0, 1] named
    ``bbox/AP, bbox/AP50, bbox/AP75, bbox/APs, bbox/APm, bbox/APl, bbox/AR1, bbox/AR10, bbox/AR100,
    bbox/ARs, bbox/ARm, bbox/ARl`` (same with ``segm/`` when the outputs carry masks), plus
    ``bbox/AP-<category>``. The per-category APs are also kept in :attr:`per_category` and printed
    by :meth:`per_category_table`.

    Only the processed images are evaluated (so an evaluation on part of a dataset is fair); a
    processed image with no detection counts its ground truth as missed. With ``class_agnostic``
    the same detections are also scored ignoring the classes: ``bbox/agnostic_AP`` ... (see
    :mod:`maskrcnn.evaluation.coco_scoring`).

    Note: like every COCOeval user (torchvision, detectron2), segm evaluation converts the ground
    truth's polygons to RLE in place in ``coco_gt`` (``COCO.annToMask`` reads either).

    Distributed: ``evaluate()`` must be called on every rank; the predictions are gathered with
    ``torch.distributed.all_gather_object``, each image counted once, the metrics are computed on
    rank 0 and the other ranks return ``{}``.
    """

    def __init__(
        self,
        *,
        coco_gt: COCO,
        label_to_category_id: Mapping[int, int],
        iou_types: Sequence[str] | None = None,
        class_agnostic: bool = False,
    ):
        """
        Args:
            coco_gt: ground truth of the whole split, crowd regions included.
            label_to_category_id: model label (1..K) -> COCO category id.
            iou_types: subset of ("bbox", "segm"); None = bbox, plus segm when the outputs have masks.
            class_agnostic: also report the class-agnostic numbers ``{iou_type}/agnostic_AP`` ...
        """
        if iou_types is not None:
            unknown = set(iou_types) - set(IOU_TYPES)
            if unknown or not iou_types:
                raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {list(iou_types)}")
        unknown_ids = {c for c in label_to_category_id.values() if c not in coco_gt.cats}
        if unknown_ids:
            raise ValueError(
                f"label_to_category_id maps to category ids absent from the ground truth: {sorted(unknown_ids)}"
            )
        self.coco_gt = coco_gt
        self.label_to_category_id = {int(k): int(v) for k, v in label_to_category_id.items()}
        self.iou_types = tuple(iou_types) if iou_types is not None else None
        self.class_agnostic = bool(class_agnostic)
        self.per_category: dict[str, dict[str, float]] = {}
        self.summaries: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        # image id -> {"results": [COCO result dicts], "has_masks": bool}
        self._predictions: dict[int, dict] = {}

    def process(self, targets: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        """Record one batch.

        Args:
            targets: dataset targets; only ``image_id`` (a COCO image id) is read.
            outputs: model outputs in original image pixels: ``boxes`` (D, 4) XYXY, ``labels`` (D,)
                int64 in 1..K, ``scores`` (D,), optionally ``masks`` (D, 1, H, W) probabilities
                with (H, W) the size of the image in the annotation file.
        """
        if len(targets) != len(outputs):
            raise ValueError(f"process got {len(targets)} targets but {len(outputs)} outputs")
        for target, output in zip(targets, outputs):
            image_id = image_id_of(target)
            if image_id not in self.coco_gt.imgs:
                raise KeyError(f"image_id {image_id!r} is not an image of the ground truth")
            if image_id in self._predictions:
                continue  # a padded sampler may repeat an image: count it once
            self._predictions[image_id] = self._to_results(image_id, output)

    def _to_results(self, image_id: int, output: Mapping) -> dict:
        for key in ("boxes", "scores", "labels"):
            if key not in output:
                raise KeyError(f"model output for image {image_id} has no {key!r} (keys: {sorted(output)})")
        boxes = output["boxes"].detach().to("cpu", torch.float64)
        scores = output["scores"].detach().to("cpu", torch.float64)
        labels = output["labels"].detach().to("cpu", torch.int64)
        num = len(boxes)
        if boxes.shape != (num, 4) or scores.shape != (num,) or labels.shape != (num,):
            raise ValueError(
                f"image {image_id}: expected boxes (D, 4), scores (D,), labels (D,), got "
                f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}"
            )
        unknown = sorted({int(label) for label in labels.tolist()} - set(self.label_to_category_id))
        if unknown:
            raise ValueError(f"image {image_id}: labels {unknown} have no COCO category (label_to_category_id)")

        has_masks = "masks" in output
        if has_masks:
            masks = output["masks"]
            info = self.coco_gt.imgs[image_id]
            if masks.dim() != 4 or masks.shape[0] != num or masks.shape[2:] != (info["height"], info["width"]):
                raise ValueError(
                    f"image {image_id}: masks must be (D={num}, 1, H={info['height']}, W={info['width']}) "
                    f"in original image pixels, got {tuple(masks.shape)}"
                )
        results = coco_results(image_id, output, label_to_category_id=self.label_to_category_id)
        return {"results": results, "has_masks": has_masks}

    def evaluate(self) -> dict[str, float]:
        """Gather, score, return the flat metric dict (rank 0; ``{}`` on the other ranks)."""
        predictions = predictions_to_score(self._predictions, evaluator="COCOEvaluator")
        if predictions is None:
            return {}
        with_masks = {record["has_masks"] for record in predictions.values()}
        if len(with_masks) > 1:
            raise ValueError("some model outputs have 'masks' and others do not; cannot score segm")
        iou_types = self.iou_types or (("bbox", "segm") if with_masks == {True} else ("bbox",))
        if "segm" in iou_types and with_masks != {True}:
            raise ValueError("segm evaluation was requested but the model outputs have no 'masks'")

        results = [r for record in predictions.values() for r in record["results"]]
        metrics: dict[str, float] = {}
        self.per_category = {}
        self.summaries = {}
        for iou_type in iou_types:
            values, per_category, summaries = score_iou_type(
                self.coco_gt, results, iou_type, img_ids=predictions.keys(), class_agnostic=self.class_agnostic
            )
            logger.info("COCO %s evaluation on %d images:\n%s", iou_type, len(predictions), summaries[iou_type])
            if self.class_agnostic:
                logger.info("class-agnostic COCO %s evaluation:\n%s", iou_type, summaries[f"{iou_type}/agnostic"])
            metrics.update(values)
            self.per_category[iou_type] = per_category
            self.summaries.update(summaries)
        return metrics

    def per_category_table(self) -> str:
        """Markdown table of the per-category APs of the last :meth:`evaluate` (one column per IoU type)."""
        return format_per_category_table(self.per_category)
