"""torchvision's Mask / Faster R-CNN ResNet-50-FPN weights as our checkpoint (what
``tools/convert_torchvision.py`` writes): ``{"model": state_dict, "meta": {...}}`` whose ``meta``
describes the model as the checkpoints of a training run do (:mod:`maskrcnn.engine.run_config`),
so evaluation and prediction rebuild it from ``checkpoint=OUT.pt`` alone."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ..modeling.torchvision_compat import (
    COCO_CATEGORY_IDS,
    convert_torchvision_state_dict,
    select_classes,
    torchvision_num_classes,
)
from .config import REPO_ROOT


def coco_class_names(num_classes: int) -> list[str]:
    """torchvision's COCO names by label: 90 (label = category id, "N/A" for the unused ids) or 80."""
    names = torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:]
    return names if num_classes == 90 else [names[c - 1] for c in COCO_CATEGORY_IDS]


def model_config(name: str) -> dict:
    """``configs/model/<name>.yaml`` (and its RoI layer group) as composed, interpolations kept."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[f"model={name}", "checkpoint=x", "inputs=[x]"])
    return {key: OmegaConf.to_container(cfg[key], resolve=False) for key in ("model", "roi_layer")}


def convert(arch: str, weights: Path, out: Path, coco80: bool = False) -> dict:
    """Convert the torchvision state dict ``weights`` (a local file) of ``arch`` into the checkpoint
    ``out``; ``coco80`` keeps the 80 used COCO categories (contiguous labels). Returns its ``meta``.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: not a state dict, or ``coco80`` on weights without torchvision's 91-way classifier.
    """
    if not weights.is_file():
        raise FileNotFoundError(f"--weights {weights} does not exist")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"--weights {weights} is not a state dict")
    state = state.get("model", state) if isinstance(state.get("model"), dict) else state
    num_classes = torchvision_num_classes(state)
    converted = convert_torchvision_state_dict(state, arch=arch)
    if coco80:
        if num_classes != 90:
            raise ValueError(
                f"--coco80 needs torchvision's 91-way COCO classifier, the weights have {num_classes + 1} classes"
            )
        converted = select_classes(converted, COCO_CATEGORY_IDS)
        num_classes = 80
    name = "mask_rcnn_r50_fpn_torchvision" if arch.startswith("mask") else "faster_rcnn_r50_fpn_torchvision"
    meta = {
        "source": str(weights),
        "arch": arch,
        "config": model_config(name),
        "model_config": name,
        "dataset": "coco",
        "num_classes": num_classes,
        "class_names": coco_class_names(num_classes) if num_classes in (80, 90) else None,
        "label_to_category_id": ({i + 1: c for i, c in enumerate(COCO_CATEGORY_IDS)} if coco80 else None),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": converted, "meta": meta}, out)
    return meta
