"""Choosing the evaluator of a dataset (the ``evaluator:`` key of configs/dataset/*.yaml)."""

from __future__ import annotations

from .coco_evaluation import COCOEvaluator
from .voc_evaluation import VOCEvaluator

EVALUATOR_KINDS = ("coco", "voc")


def build_evaluator(dataset, kind: str, *, class_agnostic: bool = False, **kwargs) -> COCOEvaluator | VOCEvaluator:
    """Build the evaluator of ``dataset``.

    Args:
        dataset: for "coco" a COCO-format dataset with ``coco`` (pycocotools COCO ground truth,
            crowd included) and ``label_to_category_id``; for "voc" a VOC-format dataset with
            ``get_annotation(i)`` (all objects, difficult included), ``__len__`` and ``class_names``.
        kind: "coco" or "voc".
        class_agnostic: COCO only: also the class-agnostic numbers (``bbox/agnostic_AP`` ...).
        **kwargs: passed to the evaluator (``iou_types`` for COCO, ``iou_threshold`` for VOC).
    """
    if kind == "coco":
        _require(dataset, kind, ("coco", "label_to_category_id"), "COCO-format", other="voc for VOC-format data")
        return COCOEvaluator(
            coco_gt=dataset.coco,
            label_to_category_id=dataset.label_to_category_id,
            class_agnostic=class_agnostic,
            **kwargs,
        )
    if kind == "voc":
        if class_agnostic:
            raise ValueError("class-agnostic scoring is COCO scoring; the voc evaluator has none")
        _require(dataset, kind, ("get_annotation", "class_names"), "VOC-format", other="coco for COCO-format data")
        annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
        return VOCEvaluator(annotations=annotations, class_names=dataset.class_names, **kwargs)
    raise ValueError(f"unknown evaluator kind {kind!r}; expected one of {EVALUATOR_KINDS}")


def _require(dataset, kind: str, attributes: tuple[str, ...], fmt: str, *, other: str) -> None:
    for attribute in attributes:
        if not hasattr(dataset, attribute):
            raise ValueError(
                f"evaluator '{kind}' needs a {fmt} dataset with `{attribute}`; "
                f"{type(dataset).__name__} has none (use evaluator: {other})"
            )
