"""Check a dataset before training on it: counts, clean-up reasons, class and size histograms.

    python tools/check_dataset.py dataset=bccd dataset.bccd_root=../shared/data/bccd/BCCD split=val
    python tools/check_dataset.py dataset=coco paths.data_root=/data check_images=false

Prints the number of images and objects, what the loader dropped, repaired or skipped (by reason),
the class histogram and the object-size histogram (COCO's small < 32^2 <= medium < 96^2 <= large,
by the annotation's area for COCO files and the box area for VOC files). Exits with status 1 when
an image cannot be read.
"""

from __future__ import annotations

import collections
import sys

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from maskrcnn.data.base import area_bucket
from maskrcnn.data.io import ImageReadError, read_image
from maskrcnn.engine.config import resolve_data_root

DROPPED = ("invalid_box", "box_outside_image", "degenerate_box", "no_valid_segmentation", "empty_mask",
           "mask_class_mismatch", "mask_unmatched", "instance_without_object", "instance_without_class",
           "no_segmentation", "empty_image_filtered")
REPAIRED = ("box_clipped", "polygon_part_dropped")
IGNORED = ("crowd_ignored", "difficult_ignored")


def object_areas(record: dict) -> np.ndarray:
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

    lines = [f"dataset: {type(dataset).__name__}, {len(dataset.class_names)} classes",
             f"images: {len(dataset)}", f"objects: {n_obj}"]
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


@hydra.main(version_base="1.3", config_path="../configs", config_name="check_dataset")
def main(cfg: DictConfig) -> int:
    with open_dict(cfg):  # paths.data_root and the dataset's own roots: relative to the repository root
        resolve_data_root(cfg)
    if cfg.split not in cfg.dataset:
        raise SystemExit(f"check_dataset: dataset {cfg.dataset.name!r} has no split {cfg.split!r}")
    # Annotations as stored: no random transforms.
    dataset = instantiate(cfg.dataset[cfg.split], transforms=None)
    print(f"== {cfg.dataset.name} / {cfg.split}")
    text, n_bad = summarize(dataset, check_images=cfg.check_images, max_listed=cfg.max_listed)
    print(text)
    if n_bad:
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
