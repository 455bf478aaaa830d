"""PASCAL VOC-format detection (and, with the segmentation PNGs, instance segmentation) datasets.

Coordinates: VOC XML stores 1-based, inclusive pixel indices (xmin=1, xmax=W spans the whole
image). We convert to the 0-based pixel-edge XYXY of the rest of the framework as
(xmin - 1, ymin - 1, xmax, ymax), so that box = (0, 0, W, H) covers the image and width = xmax -
xmin + 1 pixels. This is detectron2's `pascal_voc.py` convention (torchvision's VOCDetection
returns the raw XML and leaves it to the user).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from .base import DetectionDataset, is_finite_number, sanitize_boxes
from .io import read_image, read_label_png
from .masks import InstanceMasks

PASCAL_VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _as_pairs(sets) -> list[tuple[str, str]]:
    """[{root, split}, ...] or [(root, split), ...] -> [(root, split), ...]."""
    pairs = []
    for s in sets:
        if hasattr(s, "keys"):
            if "root" not in s or "split" not in s:
                raise ValueError(f"VOCDetection: each entry of 'sets' needs 'root' and 'split', got {dict(s)}")
            pairs.append((str(s["root"]), str(s["split"])))
        else:
            root, split = s
            pairs.append((str(root), str(split)))
    if not pairs:
        raise ValueError("VOCDetection: 'sets' is empty")
    return pairs


def _text(node, path: str, xml_path: str) -> str:
    found = node.find(path)
    if found is None or found.text is None:
        raise ValueError(f"{xml_path}: missing <{path}>")
    return found.text.strip()


class VOCDetection(DetectionDataset):
    """Images listed in ``<root>/ImageSets/Main/<split>.txt`` of one or more VOCdevkit-style
    folders (e.g. VOC2007 trainval + VOC2012 trainval), with ``Annotations/<id>.xml`` and
    ``JPEGImages/<id>.jpg``.

    ``difficult`` objects are kept in :meth:`get_annotation` (the VOC evaluation ignores them) and
    left out of the training targets unless ``use_difficult``. With ``with_masks``, only images with
    ``SegmentationObject/<id>.png`` are used; the instance with value k in that palette PNG is the
    k-th object of the XML (VOC2012's convention, checked against ``SegmentationClass``), 0 is
    background and 255 the void border, which belongs to no instance.

    Counted in ``self.stats``: ``difficult_ignored``, ``degenerate_box`` (also a box whose XML
    corners coincide, xmax <= xmin or ymax <= ymin: a click, not a drag), the other reasons of
    :func:`sanitize_boxes`, ``no_segmentation`` (image without the PNGs, dropped when masks are
    needed), ``empty_mask`` and ``mask_class_mismatch`` (object dropped), ``empty_image_filtered``.
    """

    def __init__(self, *, sets: Sequence, class_names: Sequence[str] = PASCAL_VOC_CLASSES, transforms=None,
                 with_masks: bool = False, use_difficult: bool = False, filter_empty: bool = True,
                 skip_corrupt: bool = False, min_box_size: float = 1.0):
        """
        Args:
            sets: (root, split) pairs, as ``[{root: .../VOC2007, split: trainval}, ...]``.
            class_names: label i is class_names[i - 1]; an XML object of another name is an error.
            with_masks: return instance masks from the segmentation PNGs (VOC2012 subset).
            use_difficult: also train on ``difficult`` objects.
            filter_empty: leave out images with no usable object (training); keep False to evaluate.
        """
        super().__init__(transforms=transforms, skip_corrupt=skip_corrupt, with_masks=with_masks)
        self.class_names = [str(c) for c in class_names]
        if len(set(self.class_names)) != len(self.class_names) or not self.class_names:
            raise ValueError(f"VOCDetection: class_names must be distinct and non-empty, got {self.class_names}")
        self._class_to_label = {c: i + 1 for i, c in enumerate(self.class_names)}
        self.use_difficult = use_difficult
        self.sets = _as_pairs(sets)

        records = []
        for root, split in self.sets:
            list_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
            if not os.path.isfile(list_file):
                raise FileNotFoundError(f"VOC split file not found: {list_file} (root={root}, split={split})")
            with open(list_file) as f:
                ids = [line.split()[0] for line in f if line.strip()]
            for file_id in ids:
                record = self._parse(root, file_id, image_id=len(records), min_box_size=min_box_size)
                records.append(record)
        self._all_records = records
        if with_masks:
            records = [r for r in records if r["mask_files"] is not None]
            self.stats["no_segmentation"] += len(self._all_records) - len(records)
        self.records = self._finish_records(records, filter_empty=filter_empty)

    def _parse(self, root: str, file_id: str, *, image_id: int, min_box_size: float) -> dict:
        xml_path = os.path.join(root, "Annotations", f"{file_id}.xml")
        if not os.path.isfile(xml_path):
            raise FileNotFoundError(f"VOC annotation not found: {xml_path}")
        try:
            tree = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            raise ValueError(f"cannot parse VOC annotation {xml_path}: {exc}") from exc
        image_path = os.path.join(root, "JPEGImages", f"{file_id}.jpg")
        size = tree.find("size")
        w = int(float(_text(size, "width", xml_path))) if size is not None else 0
        h = int(float(_text(size, "height", xml_path))) if size is not None else 0
        if w <= 0 or h <= 0:  # some VOC-style exports write 0; the file knows
            h, w = read_image(image_path).shape[:2]

        boxes, labels, difficult = [], [], []
        for obj in tree.findall("object"):
            name = _text(obj, "name", xml_path)
            if name not in self._class_to_label:
                raise ValueError(f"{xml_path}: object class {name!r} is not in class_names {self.class_names}; "
                                 f"set the dataset's class_names")
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"{xml_path}: object {name!r} has no <bndbox>")
            raw = [_text(bb, k, xml_path) for k in ("xmin", "ymin", "xmax", "ymax")]
            box = [float(v) if is_finite_number(v) else float("nan") for v in raw]
            boxes.append([box[0] - 1.0, box[1] - 1.0, box[2], box[3]])  # 1-based inclusive -> 0-based edges
            labels.append(self._class_to_label[name])
            d = obj.find("difficult")
            difficult.append(d is not None and d.text is not None and d.text.strip() == "1")
        boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.array(labels, dtype=np.int64)
        difficult = np.array(difficult, dtype=bool)

        seg_obj = os.path.join(root, "SegmentationObject", f"{file_id}.png")
        seg_cls = os.path.join(root, "SegmentationClass", f"{file_id}.png")
        mask_files = (seg_obj, seg_cls) if os.path.isfile(seg_obj) and os.path.isfile(seg_cls) else None

        # Training targets: the clean, non-difficult objects.
        train = np.ones(len(boxes), dtype=bool)
        if not self.use_difficult:
            self.stats["difficult_ignored"] += int(difficult.sum())
            train &= ~difficult
        # XML corners that coincide (or cross): zero extent in the annotation tool.
        zero = train & ~((boxes[:, 2] > boxes[:, 0] + 1) & (boxes[:, 3] > boxes[:, 1] + 1)) & np.isfinite(boxes).all(1)
        self.stats["degenerate_box"] += int(zero.sum())
        train &= ~zero
        sub = np.nonzero(train)[0]
        keep, clipped = sanitize_boxes(boxes[sub], width=w, height=h, min_size=min_box_size, stats=self.stats)
        idx = sub[keep]
        train_boxes = clipped[keep]
        if self.with_masks and mask_files is not None:
            idx, train_boxes = self._check_masks(mask_files, idx, train_boxes, labels, (h, w), xml_path)
        return {
            "image_id": image_id, "file_id": file_id, "file_name": image_path, "height": h, "width": w,
            "boxes": train_boxes, "labels": labels[idx], "mask_values": (idx + 1).tolist(),
            "mask_files": mask_files,
            "all_boxes": boxes, "all_labels": labels, "difficult": difficult,
        }

    def _check_masks(self, mask_files, idx, boxes, labels, size, xml_path):
        """Keep the objects whose instance value has pixels of the object's class."""
        inst, cls = read_label_png(mask_files[0]), read_label_png(mask_files[1])
        if inst.shape != size or cls.shape != size:
            raise ValueError(f"{mask_files[0]}: segmentation PNG is {inst.shape[::-1]} (w, h), "
                             f"the annotation {xml_path} says {size[::-1]}")
        keep = np.ones(len(idx), dtype=bool)
        for j, k in enumerate(idx):
            pixels = cls[inst == k + 1]
            if pixels.size == 0:
                self.stats["empty_mask"] += 1
                keep[j] = False
            elif np.bincount(pixels, minlength=256).argmax() != labels[k]:
                self.stats["mask_class_mismatch"] += 1
                keep[j] = False
        return idx[keep], boxes[keep]

    def _load_masks(self, record: dict) -> InstanceMasks:
        inst = read_label_png(record["mask_files"][0])
        return InstanceMasks.from_label_map(inst, record["mask_values"])

    def get_annotation(self, idx: int) -> dict:
        """All objects of image ``idx`` (difficult and unclean ones included) for evaluation.

        Returns: ``image_id`` int, ``file_name`` str (the file id), ``boxes`` (M, 4) float32 0-based
        XYXY in original pixels, ``labels`` (M,) int64, ``difficult`` (M,) bool.
        """
        r = self.records[idx]
        return {"image_id": r["image_id"], "file_name": r["file_id"], "boxes": r["all_boxes"].copy(),
                "labels": r["all_labels"].copy(), "difficult": r["difficult"].copy()}
