"""Gathering per-image predictions across ranks for evaluation."""

from __future__ import annotations

import logging
from typing import Any

from ..distributed import all_gather_object, is_main_process

logger = logging.getLogger(__name__)


def gather_predictions(predictions: dict[Any, Any]) -> dict[Any, Any]:
    """Merge the per-image prediction dicts of all ranks (a copy when not distributed).

    Every rank takes part (``all_gather_object`` is a collective) and every rank gets the merged
    dict back. Keys are image ids; when an image was processed by several ranks (a sampler that
    pads its shards repeats images), the entry of the lowest rank is kept so that each image is
    counted exactly once.
    """
    merged: dict[Any, Any] = {}
    for part in all_gather_object(predictions):
        for image_id, record in part.items():
            merged.setdefault(image_id, record)
    return merged


def predictions_to_score(predictions: dict[Any, Any], *, evaluator: str) -> dict[Any, Any] | None:
    """:func:`gather_predictions` for an evaluator's ``evaluate()``: the merged dict on the main
    process, ``None`` on the other ranks and (with a warning naming ``evaluator``) when no image
    was processed; ``None`` means "return ``{}``"."""
    merged = gather_predictions(predictions)
    if not is_main_process():
        return None
    if not merged:
        logger.warning("%s.evaluate: no image was processed, nothing to evaluate", evaluator)
        return None
    return merged
