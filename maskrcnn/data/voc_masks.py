"""Instances of VOC segmentation PNGs: their boxes and classes, and their pairing with XML objects.

``SegmentationObject/<id>.png`` holds one value per instance (0 background, 255 the void border);
``SegmentationClass/<id>.png`` holds the class value of each pixel. An instance's box is the extent
of its pixels and its class the majority class value of its pixels (0 and 255 not counted).

Pairing with the XML objects: VOC2012 gives the k-th XML object the value k. That convention holds
when every instance value is at most the number of objects. Otherwise (a gap in the values, as in
VOC2011's 2011_000006 with 1, 2, 3, 4, 5, 7, or an export that numbers instances its own way) the
objects and instances are paired greedily by the IoU of the XML box with the instance's box, among
pairs of the same class, best first, down to ``MIN_MATCH_IOU``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

BACKGROUND, VOID = 0, 255

# Below this IoU an XML box and an instance's extent are not the same object.
MIN_MATCH_IOU = 0.5


@dataclass
class Instance:
    value: int  # its pixel value in SegmentationObject
    box: np.ndarray  # (4,) float32 0-based pixel-edge XYXY extent of its pixels
    label: int  # majority class label of its pixels, 0 when none has a class


def instances_of(inst: np.ndarray, cls: np.ndarray, value_to_label: np.ndarray) -> list[Instance]:
    """The instances of a SegmentationObject map, in increasing value.

    Args:
        inst: (H, W) uint8 instance values.
        cls: (H, W) uint8 class values.
        value_to_label: (256,) int64 label of each class value (0: not a class).
    """
    out = []
    for value in np.unique(inst):
        if value in (BACKGROUND, VOID):
            continue
        ys, xs = np.nonzero(inst == value)
        classes = cls[ys, xs]
        classes = classes[(classes != BACKGROUND) & (classes != VOID)]
        label = int(value_to_label[np.bincount(classes).argmax()]) if classes.size else 0
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
        out.append(Instance(value=int(value), box=box, label=label))
    return out


@dataclass
class Pairing:
    values: np.ndarray  # (M,) int64 instance value of each XML object, 0 when it has none
    reasons: dict[int, tuple[str, str]]  # object index -> (stats key, why it has no instance)
    unpaired: list[Instance]  # instances that no XML object took


def pair_objects(boxes: np.ndarray, labels: np.ndarray, instances: list[Instance], class_names: list[str]) -> Pairing:
    """Pair XML objects with instances: by value (VOC's convention) when the values allow it, else by IoU.

    Args:
        boxes: (M, 4) float32 0-based XYXY boxes of all XML objects (in XML order).
        labels: (M,) int64 their labels in 1..K (``class_names[label - 1]``).
    """
    m = len(boxes)
    by_value = {i.value: i for i in instances}
    values = np.zeros(m, dtype=np.int64)
    reasons: dict[int, tuple[str, str]] = {}
    name = lambda label: class_names[label - 1] if 0 < label <= len(class_names) else "no class"  # noqa: E731
    if all(v <= m for v in by_value):
        for k in range(m):
            instance = by_value.get(k + 1)
            if instance is None:
                reasons[k] = ("empty_mask", f"object {k + 1} ({name(labels[k])}): no pixels of value {k + 1}")
            elif instance.label != labels[k]:
                reasons[k] = (
                    "mask_class_mismatch",
                    f"object {k + 1} ({name(labels[k])}): its instance "
                    f"(value {k + 1}) is {name(instance.label)} in SegmentationClass",
                )
            else:
                values[k] = k + 1
    else:
        values, reasons = _pair_by_iou(boxes, labels, instances, name)
    taken = set(values.tolist())
    return Pairing(values=values, reasons=reasons, unpaired=[i for i in instances if i.value not in taken])


def _pair_by_iou(boxes, labels, instances, name):
    m = len(boxes)
    values = np.zeros(m, dtype=np.int64)
    reasons: dict[int, tuple[str, str]] = {}
    if instances and m:
        iou = box_iou(torch.from_numpy(np.nan_to_num(boxes)), torch.from_numpy(np.stack([i.box for i in instances])))
        iou = iou.numpy()
        same_class = labels[:, None] == np.array([i.label for i in instances])[None, :]
        iou = np.where(same_class, iou, -1.0)
        used = set()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            k, j = divmod(int(flat), len(instances))
            if iou[k, j] < MIN_MATCH_IOU:
                break
            if values[k] == 0 and j not in used:
                values[k] = instances[j].value
                used.add(j)
    for k in np.nonzero(values == 0)[0]:
        reasons[int(k)] = (
            "mask_unmatched",
            f"object {k + 1} ({name(labels[k])}): no instance of its class covers its box at IoU >= {MIN_MATCH_IOU}",
        )
    return values, reasons


def label_lookup(class_values: dict[int, int]) -> np.ndarray:
    """(256,) int64 array: class value -> label (0 for values not listed)."""
    lut = np.zeros(256, dtype=np.int64)
    for value, label in class_values.items():
        lut[value] = label
    return lut
