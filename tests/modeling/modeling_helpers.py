"""Helpers of the model tests: composing model configs and tiny synthetic images with targets.

(A plain module, imported as ``modeling_helpers``: pytest puts this folder on sys.path.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def ops_available() -> bool:
    """Whether our RoI ops' Python API (maskrcnn.ops.roi_align & co.) has landed and loads."""
    try:
        from maskrcnn import ops

        return all(hasattr(ops, n) for n in ("roi_align", "roi_pool", "multilevel_roi_align"))
    except Exception:
        return False


needs_ops = pytest.mark.skipif(not ops_available(), reason="maskrcnn.ops RoI ops not available yet")


def compose_model_cfg(model: str, roi_layer: str = "torchvision", num_classes: int = 3, overrides=()):
    """The ``model`` node of a composition of configs/model/<model> and configs/roi_layer/<roi_layer>."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(overrides=[f"+model={model}", f"+roi_layer={roi_layer}", *overrides])
    with open_dict(cfg):
        cfg.dataset = OmegaConf.create({"num_classes": num_classes})
    return cfg


def build_model(model: str, roi_layer: str = "torchvision", num_classes: int = 3, overrides=()):
    return instantiate(compose_model_cfg(model, roi_layer, num_classes, overrides).model)


def synthetic_sample(h: int, w: int, boxes: list[list[int]], labels: list[int], seed: int = 0):
    """An image with one bright rectangle per object (colour = class) on noise, and its target."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, h, w, generator=g) * 0.3
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels)):
        img[:, y1:y2, x1:x2] = 0.1
        img[(label - 1) % 3, y1:y2, x1:x2] = 0.95
        masks[i, y1:y2, x1:x2] = 1
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": masks,
    }
    return img, target


def two_samples_data():
    a = synthetic_sample(80, 96, [[8, 10, 40, 50], [50, 12, 90, 36]], [1, 2], seed=1)
    b = synthetic_sample(96, 72, [[12, 20, 60, 84]], [3], seed=2)
    return [a[0], b[0]], [a[1], b[1]]
