"""COCO-format instance detection/segmentation dataset (MS-COCO, coco-mini, the synthetic set)."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
from pycocotools.coco import COCO

from .base import DetectionDataset, is_finite_number, sanitize_boxes
from .masks import InstanceMasks


class CocoDetection(DetectionDataset):
    """Images of a COCO instances JSON with their boxes, labels and instance masks.

    Category ids (which have gaps in COCO: 1..90 for 80 classes) map to contiguous labels 1..K in
    increasing id order; ``label_to_category_id`` / ``category_id_to_label`` convert. Crowd
    regions (``iscrowd=1``) are left out of the training targets but stay in ``self.coco``, the
    ground truth the evaluator reads.

    Counted in ``self.stats``: ``crowd_ignored``, the box reasons of :func:`sanitize_boxes`,
    ``polygon_part_dropped`` (a part with fewer than 3 points, an odd coordinate count or a
    non-finite coordinate: repaired), ``no_valid_segmentation`` (object dropped: no usable mask),
    ``empty_image_filtered``.
    """

    def __init__(
        self,
        *,
        image_dir: str,
        annotation_file: str,
        transforms=None,
        with_masks: bool = True,
        filter_empty: bool = True,
        skip_corrupt: bool = False,
        min_box_size: float = 1.0,
    ):
        """
        Args:
            image_dir: folder of the image files named in the JSON.
            annotation_file: COCO instances JSON.
            transforms: callable ``(image HWC uint8, target, rng) -> (image, target)``.
            with_masks: return ``masks``; objects without a usable segmentation are dropped.
            filter_empty: leave out images with no usable object (training); keep False to evaluate.
            skip_corrupt: skip (and count) unreadable images instead of raising.
            min_box_size: boxes narrower or lower than this many pixels are dropped.
        """
        super().__init__(transforms=transforms, skip_corrupt=skip_corrupt, with_masks=with_masks)
        where = (
            "point the dataset config (or paths.data_root) at your copy; maskrcnn/data/README.md lists "
            "the layouts and python tools/make_synthetic.py makes the synthetic sets"
        )
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file} ({where})")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"COCO image folder not found: {image_dir} ({where})")
        self.image_dir = image_dir
        self.annotation_file = annotation_file
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            try:
                self.coco = COCO(annotation_file)
            except Exception as exc:
                raise ValueError(
                    f"cannot read COCO annotation file {annotation_file}: {exc} (it must be a COCO "
                    f"instances JSON: an object with 'images', 'annotations', 'categories')"
                ) from None
        _check_coco_layout(self.coco.dataset, annotation_file)

        cat_ids = sorted(self.coco.getCatIds())
        if not cat_ids:
            raise ValueError(f"{annotation_file}: no categories")
        self.category_id_to_label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        self.label_to_category_id = {label: cid for cid, label in self.category_id_to_label.items()}
        self.class_names = [self.coco.cats[cid]["name"] for cid in cat_ids]

        records = []
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            records.append(self._make_record(info, self.coco.imgToAnns.get(image_id, []), min_box_size))
        self.records = self._finish_records(records, filter_empty=filter_empty, source=annotation_file)

    def _make_record(self, info: dict, anns: list[dict], min_box_size: float) -> dict:
        absent = [k for k in ("id", "file_name", "height", "width") if k not in info]
        if absent:
            raise ValueError(
                f"{self.annotation_file}: image entry {info.get('id', info)} has no {absent} "
                f"(a COCO image entry needs id, file_name, height, width)"
            )
        h, w = int(info["height"]), int(info["width"])
        boxes, labels, segms, areas = [], [], [], []
        for ann in anns:
            if ann.get("iscrowd", 0):
                self.stats["crowd_ignored"] += 1
                continue
            if ann["category_id"] not in self.category_id_to_label:
                raise ValueError(
                    f"{self.annotation_file}: annotation {ann.get('id')} has category_id "
                    f"{ann['category_id']} which is not in 'categories' (ids "
                    f"{sorted(self.category_id_to_label)}): add the category or fix the annotation"
                )
            bbox = ann.get("bbox")
            if bbox is None or len(bbox) != 4:
                raise ValueError(f"{self.annotation_file}: annotation {ann.get('id')} has no 4-number 'bbox'")
            segm = ann.get("segmentation")
            if self.with_masks:
                segm = self._clean_segmentation(segm, h, w)
                if segm is None:
                    self.stats["no_valid_segmentation"] += 1
                    continue
            x, y, bw, bh = (float(v) for v in bbox)
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self.category_id_to_label[ann["category_id"]])
            segms.append(segm)
            areas.append(float(ann.get("area", bw * bh)))
        keep, boxes = sanitize_boxes(
            np.array(boxes, dtype=np.float32).reshape(-1, 4), width=w, height=h, min_size=min_box_size, stats=self.stats
        )
        return {
            "image_id": int(info["id"]),
            "file_name": os.path.join(self.image_dir, info["file_name"]),
            "height": h,
            "width": w,
            "boxes": boxes[keep],
            "labels": np.array(labels, dtype=np.int64)[keep],
            "segms": [s for s, k in zip(segms, keep) if k],
            "areas": np.array(areas, dtype=np.float64)[keep],  # COCO's object area (of the segmentation)
        }

    def _clean_segmentation(self, segm, height: int, width: int):
        """Polygons without their unusable parts, or the RLE as is; None when nothing is usable."""
        if isinstance(segm, dict):  # an RLE must cover exactly the image
            ok = "counts" in segm and list(segm.get("size", [])) == [height, width]
            return segm if ok else None
        if not isinstance(segm, list):
            return None
        # A NaN coordinate would make pycocotools rasterize an unbounded polygon (memory blow-up).
        parts = [
            p
            for p in segm
            if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(is_finite_number(v) for v in p)
        ]
        self.stats["polygon_part_dropped"] += len(segm) - len(parts)
        return parts or None

    def _load_masks(self, record: dict) -> InstanceMasks:
        return InstanceMasks.from_coco_segmentations(record["segms"], height=record["height"], width=record["width"])


def _check_coco_layout(dataset, annotation_file) -> None:
    """A JSON that is not a COCO instances file stops here, naming what is missing (rather than a
    KeyError from deep inside pycocotools or the record building)."""
    missing = [k for k in ("images", "categories") if not isinstance(dataset.get(k), list)]
    if "annotations" in dataset and not isinstance(dataset["annotations"], list):
        missing.append("annotations")
    if missing:
        raise ValueError(
            f"{annotation_file} is not a COCO instances JSON: no list {missing} (found keys "
            f"{sorted(dataset)}); it needs 'images', 'annotations' and 'categories'"
        )
