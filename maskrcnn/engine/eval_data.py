"""The dataset of an evaluation: any split, always with test-time preprocessing.

A split's ``transforms`` are training augmentation (random resize, flip, jitter). Evaluation
compares predictions with the annotations of the files, and the model does its own deterministic
test-time resize (``model.transform.min_size_test``) and maps its outputs back to file pixels, so
evaluating through the training transforms scores boxes of a resized, mirrored image against
the original ones. Every evaluation (``tools/eval.py`` whatever ``split`` names, the trainer's
periodic and final ones, ``tools/predict.py``'s image-id lookup) builds its dataset here.
"""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

logger = logging.getLogger(__name__)


def build_eval_dataset(split_cfg: DictConfig, *, name: str = "dataset split"):
    """Instantiate ``split_cfg`` (a ``dataset.<split>`` config) without its transforms.

    Args:
        split_cfg: e.g. ``cfg.dataset.train``: a ``_target_`` dataset config.
        name: how the log names the split (``dataset.train``).
    """
    if split_cfg.get("transforms") is not None:
        logger.info(
            "%s: its transforms (training augmentation) are not used for evaluation; the model's "
            "test-time resize applies",
            name,
        )
    if "transforms" not in split_cfg:  # the datasets of maskrcnn.data default to no transforms
        return instantiate(split_cfg)
    return instantiate(split_cfg, transforms=None)
