"""A dataset's report before training on it: counts, clean-up reasons, class and size histograms
(what ``tools/check_dataset.py`` prints)."""

from __future__ import annotations

import collections

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from .base import area_bucket
from .io import ImageReadError, read_image

DROPPED = (
    "invalid_box",
    "box_outside_image",
    "degenerate_box",
    "no_valid_segmentation",
    "empty_mask",
    "mask_class_mismatch",
    "mask_unmatched",
    "instance_without_object",
    "instance_without_class",
    "no_segmentation",
    "empty_image_filtered",
)
REPAIRED = ("box_clipped", "polygon_part_dropped")
IGNORED = ("crowd_ignored", "difficult_ignored")


def object_areas(record: dict) -> np.ndarray:
    """(N,) areas of a record's objects: the annotation's area when it has one, else the box area."""
    if "areas" in record:
        return record["areas"]
    b = record["boxes"]
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def summarize(dataset, *, check_images: bool, max_listed: int = 10) -> tuple[str, int]:
    """The report text and the number of unreadable images."""
    stats = collections.Counter(dataset.stats)
    unreadable = []
    if check_images:
        for r in dataset.records:
            try:
                read_image(r["file_name"])
            except ImageReadError as exc:
                unreadable.append(str(exc))
    classes = collections.Counter()
    sizes = collections.Counter()
    for r in dataset.records:
        classes.update(int(label) for label in r["labels"])
        sizes.update(area_bucket(a) for a in object_areas(r))
    n_obj = sum(classes.values())

    lines = [
        f"dataset: {type(dataset).__name__}, {len(dataset.class_names)} classes",
        f"images: {len(dataset)}",
        f"objects: {n_obj}",
    ]
    for title, keys in (("dropped", DROPPED), ("repaired", REPAIRED), ("ignored (kept for evaluation)", IGNORED)):
        lines.append(f"{title}:")
        lines += [f"  {k}: {stats[k]}" for k in keys]
    lines.append("skipped:")
    lines.append(f"  unreadable_image: {len(unreadable) if check_images else 'not checked (check_images=false)'}")
    lines += [f"    {msg}" for msg in unreadable[:max_listed]]
    if len(unreadable) > max_listed:
        lines.append(f"    ... and {len(unreadable) - max_listed} more")
    lines.append("classes:")
    width = max(len(c) for c in dataset.class_names)
    for label, name in enumerate(dataset.class_names, start=1):
        lines.append(f"  {label:3d} {name:<{width}} {classes[label]:8d} {100 * classes[label] / max(n_obj, 1):6.1f}%")
    lines.append("sizes (COCO areas):")
    for bucket, rule in (("small", "< 32^2"), ("medium", "32^2..96^2"), ("large", ">= 96^2")):
        lines.append(f"  {bucket:<6} {rule:<11} {sizes[bucket]:8d} {100 * sizes[bucket] / max(n_obj, 1):6.1f}%")
    return "\n".join(lines), len(unreadable)


def check_split(split_cfg: DictConfig, *, check_images: bool, max_listed: int = 10) -> tuple[str, int]:
    """:func:`summarize` of the dataset ``split_cfg`` (a ``dataset.<split>`` config) with its
    annotations as stored (no random transforms)."""
    dataset = instantiate(split_cfg, transforms=None)
    return summarize(dataset, check_images=check_images, max_listed=max_listed)
