#!/usr/bin/env python
"""Convert torchvision's Mask / Faster R-CNN ResNet-50-FPN weights into our checkpoint format.

    python tools/convert_torchvision.py --arch maskrcnn_resnet50_fpn \\
        --weights maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --out mask_rcnn_r50_fpn_coco.pt [--coco80]

The output ``{"model": state_dict, "meta": {...}}`` describes itself: ``meta`` holds the model
config (``configs/model/*_torchvision.yaml`` as composed now), its name, ``num_classes`` (90 for
torchvision's COCO weights, whose labels are COCO category ids; 80 with ``--coco80``, which keeps
the 80 used categories in ascending id order, the labels of our COCO dataset), the COCO class
names and, with ``--coco80``, the category ids. tools/predict.py and tools/eval.py rebuild the model
from it (``checkpoint=OUT.pt`` is enough). Nothing is downloaded: give a local file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from maskrcnn.modeling.torchvision_compat import (ARCHS, COCO_CATEGORY_IDS, convert_torchvision_state_dict,
                                                  select_classes, torchvision_num_classes)


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def coco_class_names(num_classes: int) -> list[str]:
    """torchvision's COCO names by label: 90 (label = category id, "N/A" for the unused ids) or 80."""
    names = torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:]
    return names if num_classes == 90 else [names[c - 1] for c in COCO_CATEGORY_IDS]


def model_config(name: str) -> dict:
    """``configs/model/<name>.yaml`` (and its RoI layer group) as composed, interpolations kept."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=[f"model={name}", "checkpoint=x", "inputs=[x]"])
    return {key: OmegaConf.to_container(cfg[key], resolve=False) for key in ("model", "roi_layer")}


def convert(arch: str, weights: Path, out: Path, coco80: bool = False) -> dict:
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
            raise ValueError(f"--coco80 needs torchvision's 91-way COCO classifier, the weights have "
                             f"{num_classes + 1} classes")
        converted = select_classes(converted, COCO_CATEGORY_IDS)
        num_classes = 80
    name = "mask_rcnn_r50_fpn_torchvision" if arch.startswith("mask") else "faster_rcnn_r50_fpn_torchvision"
    meta = {"source": str(weights), "arch": arch, "config": model_config(name), "model_config": name,
            "dataset": "coco", "num_classes": num_classes,
            "class_names": coco_class_names(num_classes) if num_classes in (80, 90) else None,
            "label_to_category_id": ({i + 1: c for i, c in enumerate(COCO_CATEGORY_IDS)} if coco80 else None)}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": converted, "meta": meta}, out)
    return meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--weights", required=True, type=Path, help="torchvision state dict (.pth), local file")
    parser.add_argument("--out", required=True, type=Path, help="our checkpoint to write (.pt)")
    parser.add_argument("--coco80", action="store_true", help="keep the 80 COCO categories (contiguous labels)")
    args = parser.parse_args(argv)
    try:
        meta = convert(args.arch, args.weights, args.out, args.coco80)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {meta['arch']} (model={meta['model_config']}) with num_classes={meta['num_classes']}; "
          f"tools/predict.py and tools/eval.py read both from the checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
