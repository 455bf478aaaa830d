"""Scoring a list of COCO-format results against a COCO ground truth with pycocotools' COCOeval.

Shared by :class:`~maskrcnn.evaluation.COCOEvaluator` (model outputs) and
:func:`~maskrcnn.evaluation.score_coco_results` (a results file, no model), so both produce the
same numbers for the same detections.

Conventions
- Metrics are fractions in [0, 1], exactly ``COCOeval.stats`` (not percentages). A value of
  ``-1.0`` is COCOeval's "no ground truth in this area range" and is kept as is.
- Names: ``{iou_type}/{AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}`` and
  per category ``{iou_type}/AP-{category name}`` (AP at IoU .50:.95, area all, 100 detections;
  only categories with ground truth among the evaluated images).
- Class-agnostic scoring (``class_agnostic=True``, COCOeval's ``useCats=0``) matches a detection
  to any object whatever the two labels: its numbers are named ``{iou_type}/agnostic_{AP, ...}``.
  Beside the class-aware ones they separate finding and outlining objects from telling their
  classes apart. A model that puts one object in several classes gets its duplicates counted as
  false positives there.
- segm is scored from results without their ``bbox`` key (as torchvision and detectron2 do), so
  that ``COCO.loadRes`` takes a detection's area from its mask, not from its box: the area decides
  which of small / medium / large the detection falls in.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def _quiet(fn, *args):
    """Run a pycocotools call with its prints captured; returns (result, captured text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    return result, buffer.getvalue()


def load_results(coco_gt: COCO, results: Sequence[dict], iou_type: str) -> COCO:
    """Turn a results list into the detections COCO object that COCOeval wants.

    Unlike ``COCO.loadRes`` this accepts an empty list (every image then has no detection, and
    COCOeval scores AP 0 for every category with ground truth) and does not modify ``results``.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if len(results) == 0:
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": list(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        _quiet(coco_dt.createIndex)
        return coco_dt
    copies = []
    for result in results:
        result = dict(result)  # loadRes writes area, id, ... into the dicts it is given
        if iou_type == "segm":
            result.pop("bbox", None)
        copies.append(result)
    coco_dt, _ = _quiet(coco_gt.loadRes, copies)
    return coco_dt


def coco_metrics(
    coco_gt: COCO,
    results: Sequence[dict],
    iou_type: str,
    *,
    img_ids: Iterable[int] | None = None,
    class_agnostic: bool = False,
) -> tuple[dict[str, float], dict[str, float], str]:
    """Run COCOeval for one IoU type.

    Args:
        coco_gt: ground truth, crowd regions included (COCOeval matches detections that hit a crowd
            region to it and then ignores them).
        results: COCO results: dicts ``image_id, category_id, score`` and ``bbox`` [x, y, w, h]
            (bbox) or ``segmentation`` (RLE or polygons) (segm).
        iou_type: "bbox" or "segm".
        img_ids: images to evaluate; None means every image of ``coco_gt`` (COCOeval's default).
            An evaluated image without detections counts its ground truth as missed.
        class_agnostic: ignore the categories (COCOeval's ``useCats=0``): the numbers are named
            ``{iou_type}/agnostic_AP`` ... and there is no per-category AP.

    Returns:
        (metrics, per_category, summary): the 12 standard numbers named ``{iou_type}/AP`` ...,
        ``{category name: AP}`` for the categories with ground truth, and COCOeval's printed summary.
    """
    coco_dt = load_results(coco_gt, results, iou_type)
    coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    if img_ids is not None:
        coco_eval.params.imgIds = sorted(img_ids)
    if class_agnostic:
        coco_eval.params.useCats = 0
    _, out1 = _quiet(coco_eval.evaluate)
    _, out2 = _quiet(coco_eval.accumulate)
    _, summary = _quiet(coco_eval.summarize)
    prefix = f"{iou_type}/agnostic_" if class_agnostic else f"{iou_type}/"
    metrics = {f"{prefix}{name}": float(value) for name, value in zip(COCO_METRIC_NAMES, coco_eval.stats)}
    if class_agnostic:
        return metrics, {}, summary

    # precision: (iou thresholds, recall points, categories, area ranges, max dets); -1 = no ground truth
    precision = coco_eval.eval["precision"]
    per_category: dict[str, float] = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_category[coco_gt.cats[category_id]["name"]] = float(np.mean(p))
    return metrics, per_category, summary


def score_iou_type(
    coco_gt: COCO,
    results: Sequence[dict],
    iou_type: str,
    *,
    img_ids: Iterable[int] | None = None,
    class_agnostic: bool = False,
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Every number of one IoU type, as both scorers report it: :func:`coco_metrics`' standard
    numbers, the per-category APs as ``{iou_type}/AP-{name}`` and, with ``class_agnostic``, the
    class-agnostic numbers too.

    Returns:
        (metrics, per_category, summaries): the flat metric dict, ``{category name: AP}`` and
        COCOeval's printed summaries keyed ``iou_type`` (and ``{iou_type}/agnostic``).
    """
    metrics, per_category, summary = coco_metrics(coco_gt, results, iou_type, img_ids=img_ids)
    metrics.update({f"{iou_type}/AP-{name}": ap for name, ap in per_category.items()})
    summaries = {iou_type: summary}
    if class_agnostic:
        agnostic, _, summaries[f"{iou_type}/agnostic"] = coco_metrics(
            coco_gt, results, iou_type, img_ids=img_ids, class_agnostic=True
        )
        metrics.update(agnostic)
    return metrics, per_category, summaries
