"""COCO (pycocotools) and PASCAL VOC (07 11-point and area) evaluation.

All metrics are fractions in [0, 1], like ``COCOeval.stats``.
"""

from .build import EVALUATOR_KINDS, build_evaluator
from .coco_evaluation import COCOEvaluator, binarize_masks, coco_results, encode_masks
from .coco_scoring import COCO_METRIC_NAMES, coco_metrics
from .results_scoring import score_coco_results
from .table import format_per_category_table, per_category_from_metrics
from .voc_evaluation import VOCEvaluator, voc_ap

__all__ = [
    "COCO_METRIC_NAMES",
    "COCOEvaluator",
    "EVALUATOR_KINDS",
    "VOCEvaluator",
    "binarize_masks",
    "build_evaluator",
    "coco_metrics",
    "coco_results",
    "encode_masks",
    "format_per_category_table",
    "per_category_from_metrics",
    "score_coco_results",
    "voc_ap",
]
