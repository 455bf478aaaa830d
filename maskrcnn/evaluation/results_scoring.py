"""Scoring a COCO-format results file without a model (``tools/eval.py results=PATH``)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from os import PathLike
from pathlib import Path

import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from .coco_scoring import COCO_METRIC_NAMES, coco_metrics, score_iou_type  # noqa: F401  (names documented here)

logger = logging.getLogger(__name__)


def load_coco_gt(gt_json: str | PathLike) -> COCO:
    """Load a COCO ground-truth annotation file with a clear error when it is missing or not COCO."""
    path = Path(gt_json)
    if not path.is_file():
        raise FileNotFoundError(f"COCO ground-truth file {path} does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise ValueError(f"{path} is not a COCO annotation file: {error!r}") from error


def to_rle(segmentation, *, height: int, width: int, where: str) -> dict:
    """A result's ``segmentation`` as compressed RLE (what COCOeval reads): polygons
    ``[[x1, y1, x2, y2, ...], ...]`` and uncompressed RLE ``{"size", "counts": [ints]}`` are
    rasterized / compressed at the image's size; compressed RLE is returned as is."""
    if isinstance(segmentation, list):
        if not segmentation or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation):
            raise ValueError(f"{where}: segmentation is a list but not polygons [[x1, y1, x2, y2, x3, y3, ...], ...]")
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            raise ValueError(
                f"{where}: segmentation size {segmentation['size']} is not the image's [{height}, {width}]"
            )
        if not isinstance(segmentation["counts"], list):
            return segmentation
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        raise ValueError(
            f"{where}: segmentation must be polygons or RLE {{size, counts}}, got {type(segmentation).__name__}"
        )
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def read_results(results_json: str | PathLike, coco_gt: COCO) -> list[dict]:
    """Read and check a COCO results file: a JSON list of ``{image_id, category_id, score, bbox
    [x, y, w, h]}`` and/or ``segmentation`` (compressed or uncompressed RLE, or polygons, which
    are converted to RLE at the ground-truth image's size)."""
    path = Path(results_json)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"results file {path} is not valid JSON: {error}") from error
    if not isinstance(results, list):
        raise ValueError(f"results file {path} must hold a JSON list of detections, got {type(results).__name__}")
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise ValueError(f"{path}: entry {i} is not an object")
        missing = [key for key in ("image_id", "category_id", "score") if key not in result]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {missing}")
        if "bbox" not in result and "segmentation" not in result:
            raise ValueError(f"{path}: entry {i} has neither 'bbox' nor 'segmentation'")
        if "bbox" in result and len(result["bbox"]) != 4:
            raise ValueError(f"{path}: entry {i} has bbox {result['bbox']!r}; expected [x, y, w, h]")
    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.imgs), key=str)
    if unknown:
        raise ValueError(
            f"{path}: image ids {unknown[:10]} are not in the ground truth (tools/predict.py writes "
            f"the dataset's image ids when its dataset= and split= hold the input files)"
        )
    for i, result in enumerate(results):
        if "segmentation" in result:
            info = coco_gt.imgs[result["image_id"]]
            result["segmentation"] = to_rle(
                result["segmentation"], height=info["height"], width=info["width"], where=f"{path}: entry {i}"
            )
    return results


def score_coco_results(
    gt_json: str | PathLike,
    results_json: str | PathLike,
    *,
    iou_types: tuple[str, ...] | None = None,
    class_agnostic: bool = False,
) -> dict[str, float]:
    """COCO metrics of a results file against a ground-truth file, exactly as COCOeval computes them.

    Every image of the ground truth is evaluated (COCOeval's default): an image without
    detections counts its objects as missed.

    Args:
        gt_json: COCO annotation file (crowd regions included).
        results_json: COCO results file (a JSON list; see :func:`read_results`).
        iou_types: default: "bbox" when every result has a bbox, plus "segm" when every result
            has a segmentation. An empty results list scores both (all APs 0).
        class_agnostic: also score ignoring the classes (``{iou_type}/agnostic_AP`` ...).

    Returns:
        ``{iou_type}/{AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl}`` as
        fractions in [0, 1] (-1 where COCOeval has no ground truth in an area range), and
        ``{iou_type}/AP-<category>`` — the same names as :class:`COCOEvaluator`.
    """
    coco_gt = load_coco_gt(gt_json)
    results = read_results(results_json, coco_gt)
    if iou_types is None:
        iou_types = tuple(
            t for t, key in (("bbox", "bbox"), ("segm", "segmentation")) if all(key in r for r in results)
        ) or ("bbox",)
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        key = "bbox" if iou_type == "bbox" else "segmentation"
        if not all(key in r for r in results):
            raise ValueError(f"{results_json}: {iou_type} scoring needs '{key}' in every result")
        values, _, summaries = score_iou_type(coco_gt, results, iou_type, class_agnostic=class_agnostic)
        logger.info("COCO %s scoring of %s:\n%s", iou_type, results_json, summaries[iou_type])
        if class_agnostic:
            logger.info(
                "class-agnostic COCO %s scoring of %s:\n%s", iou_type, results_json, summaries[f"{iou_type}/agnostic"]
            )
        metrics.update(values)
    return metrics
