"""Train and val splits that resolve to the same images: refused at start-up unless allowed.

A VOC folder without ``ImageSets/`` (a labelme export, masks only) uses every image for whatever
``split`` names, so the documented ``split: train`` / ``split: val`` pair trains and evaluates on
the same images and the evaluation is a training-set score that nothing flags. Comparing the
image files of the two splits (resolved paths) catches that, and any other config that points
both splits at one folder or list.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


class SplitOverlapError(ValueError):
    """dataset.train and dataset.val share images and ``trainer.allow_split_overlap`` is false."""


def image_files(dataset) -> set[str]:
    """The resolved image paths of a dataset of :mod:`maskrcnn.data` (its ``records``); empty for a
    dataset without records (nothing to compare)."""
    return {os.path.realpath(r["file_name"]) for r in getattr(dataset, "records", None) or []}


def check_split_overlap(train_set, val_set, *, allowed: bool) -> int:
    """The number of images ``train_set`` and ``val_set`` share (0: none).

    Raises:
        SplitOverlapError: they share images and ``allowed`` is false (with ``allowed`` the same
            message is a warning).
    """
    train, val = image_files(train_set), image_files(val_set)
    shared = train & val
    if not shared:
        return 0
    message = (
        f"dataset.train and dataset.val share {len(shared)} images ({len(shared)} of {len(train)} train, "
        f"{len(val)} val; e.g. {sorted(shared)[0]}): the evaluation would score images the model trained on "
        f"(a VOC folder without ImageSets/ uses every image for every split); give split files "
        f"(ImageSets/Main/train.txt and val.txt) or a separate val folder (dataset.val.sets), or set "
        f"trainer.allow_split_overlap=true to run anyway"
    )
    if not allowed:
        raise SplitOverlapError(message)
    logger.warning("%s (allowed by trainer.allow_split_overlap=true)", message.split(": give split files")[0])
    return len(shared)
