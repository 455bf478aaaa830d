"""Gathering per-image predictions across ranks for evaluation."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gather_predictions(predictions: dict[Any, Any]) -> dict[Any, Any]:
    """Merge the per-image prediction dicts of all ranks (identity when not distributed).

    Every rank takes part (``all_gather_object`` is a collective) and every rank gets the merged
    dict back. Keys are image ids; when an image was processed by several ranks (a sampler that
    pads its shards repeats images), the entry of the lowest rank is kept so that each image is
    counted exactly once.
    """
    if not is_distributed():
        return dict(predictions)
    gathered: list[dict[Any, Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, predictions)
    merged: dict[Any, Any] = {}
    for part in gathered:
        for image_id, record in part.items():
            merged.setdefault(image_id, record)
    return merged
