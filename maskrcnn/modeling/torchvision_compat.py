"""Converting torchvision's Faster / Mask R-CNN ResNet-50-FPN state dicts to our module names.

torchvision's detection models and ours compute the same functions (see
``configs/model/*_torchvision.yaml``); only a few module paths differ. The table below is the
whole difference. torchvision's class count includes the background (91 for COCO: label =
COCO category id), ours does not, so a converted COCO model has ``num_classes = 90``.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

__all__ = ["ARCHS", "COCO_CATEGORY_IDS", "convert_torchvision_state_dict", "select_classes", "torchvision_num_classes"]

# The 80 category ids of COCO 2017 in ascending order; torchvision's COCO models use them as labels
# (the other ids up to 90 are unused rows of its 91-way classifier).
COCO_CATEGORY_IDS = (
    list(range(1, 12))
    + list(range(13, 26))
    + [27, 28]
    + list(range(31, 45))
    + list(range(46, 66))
    + [67, 70]
    + list(range(72, 83))
    + list(range(84, 91))
)

ARCHS = ("maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn")

# (pattern, replacement) on torchvision keys, first match wins. Old (version 1) torchvision key
# names are accepted as well, as torchvision's own _load_from_state_dict hooks accept them.
_RULES = [
    (r"^backbone\.body\.(.*)$", r"backbone.body.\1"),
    (r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.0\.(weight|bias)$", r"backbone.\1.\2.0.\3"),
    (r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$", r"backbone.\1.\2.0.\3"),
    (r"^rpn\.head\.conv\.0\.0\.(weight|bias)$", r"rpn.head.conv.\1"),
    (r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.conv.\1"),
    (r"^rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)$", r"rpn.head.\1.\2"),
    (r"^roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)$", r"roi_heads.box_head.\1.\2"),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", r"roi_heads.box_predictor.\1.\2"),
    (r"^roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\.(weight|bias)$", r"roi_heads.mask_predictor.\1.\2"),
]
# torchvision's mask head: Sequential of Conv2dNormActivation (conv at .0); ours: conv, ReLU, ...
_MASK_CONV = re.compile(r"^roi_heads\.mask_head\.(?:(\d+)\.0|mask_fcn(\d+))\.(weight|bias)$")


def _rename(key: str) -> str | None:
    m = _MASK_CONV.match(key)
    if m:
        index = int(m.group(1)) if m.group(1) is not None else int(m.group(2)) - 1
        return f"roi_heads.mask_head.convs.{2 * index}.{m.group(3)}"
    for pattern, repl in _RULES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def torchvision_num_classes(state: dict[str, Tensor]) -> int:
    """Foreground classes of a torchvision detection state dict (its cls_score rows minus 1)."""
    key = "roi_heads.box_predictor.cls_score.weight"
    if key not in state:
        raise ValueError(f"not a torchvision Faster/Mask R-CNN state dict: no {key!r}")
    return int(state[key].shape[0]) - 1


def convert_torchvision_state_dict(state: dict[str, Tensor], *, arch: str) -> dict[str, Tensor]:
    """Renames a torchvision ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` state dict.

    BatchNorm ``num_batches_tracked`` counters are dropped (our backbone uses FrozenBatchNorm2d).
    Raises ``ValueError`` naming the keys that belong to neither model.
    """
    if arch not in ARCHS:
        raise ValueError(f"--arch must be one of {ARCHS}, got {arch!r}")
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    has_mask = any(k.startswith("roi_heads.mask_") for k in state)
    if arch.startswith("maskrcnn") and not has_mask:
        raise ValueError(
            "--arch maskrcnn_resnet50_fpn but the weights have no mask head (use --arch fasterrcnn_resnet50_fpn)"
        )
    if arch.startswith("fasterrcnn") and has_mask:
        raise ValueError(
            "--arch fasterrcnn_resnet50_fpn but the weights have a mask head (use --arch maskrcnn_resnet50_fpn)"
        )
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    if unknown:
        raise ValueError(f"unexpected keys in the torchvision state dict: {unknown[:10]}")
    return out


def select_classes(state: dict[str, Tensor], labels: list[int]) -> dict[str, Tensor]:
    """Keeps the background and the classifier / box / mask rows of ``labels`` (in that order).

    With ``COCO_CATEGORY_IDS`` this turns torchvision's 91-way COCO model (label = category id)
    into an 80-class model whose label i is the i-th category in ascending id order, the
    contiguous labelling of our COCO dataset.
    """
    rows = torch.tensor([0] + list(labels))
    out = dict(state)
    for key in (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    ):
        if key in out:
            out[key] = out[key][rows].clone()
    box_rows = (rows[:, None] * 4 + torch.arange(4)[None]).reshape(-1)
    for key in ("roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias"):
        out[key] = out[key][box_rows].clone()
    return out
