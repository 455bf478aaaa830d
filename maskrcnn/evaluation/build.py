"""Choosing the evaluator of a dataset (the ``evaluator:`` key of configs/dataset/*.yaml)."""

from __future__ import annotations

from .coco_evaluation import COCOEvaluator
from .voc_evaluation import VOCEvaluator

EVALUATOR_KINDS = ("coco", "voc")


def build_evaluator(dataset, kind: str, **kwargs) -> COCOEvaluator | VOCEvaluator:
    """Build the evaluator of ``dataset``.

    Args:
        dataset: for "coco" a COCO-format dataset with ``coco`` (pycocotools COCO ground truth,
            crowd included) and ``label_to_category_id``; for "voc" a VOC-format dataset with
            ``get_annotation(i)`` (all objects, difficult included), ``__len__`` and ``class_names``.
        kind: "coco" or "voc".
        **kwargs: passed to the evaluator (``iou_types`` for COCO, ``iou_threshold`` for VOC).
    """
    if kind == "coco":
        for attribute in ("coco", "label_to_category_id"):
            if not hasattr(dataset, attribute):
                raise ValueError(
                    f"evaluator 'coco' needs a COCO-format dataset with `{attribute}`; "
                    f"{type(dataset).__name__} has none (use evaluator: voc for VOC-format data)"
                )
        return COCOEvaluator(coco_gt=dataset.coco, label_to_category_id=dataset.label_to_category_id, **kwargs)
    if kind == "voc":
        for attribute in ("get_annotation", "class_names"):
            if not hasattr(dataset, attribute):
                raise ValueError(
                    f"evaluator 'voc' needs a VOC-format dataset with `{attribute}`; "
                    f"{type(dataset).__name__} has none (use evaluator: coco for COCO-format data)"
                )
        annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
        return VOCEvaluator(annotations=annotations, class_names=dataset.class_names, **kwargs)
    raise ValueError(f"unknown evaluator kind {kind!r}; expected one of {EVALUATOR_KINDS}")
