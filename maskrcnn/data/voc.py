"""PASCAL VOC-format detection (and, with the segmentation PNGs, instance segmentation) datasets.

Coordinates: VOC XML stores 1-based, inclusive pixel indices (xmin=1, xmax=W spans the whole
image). We convert to the 0-based pixel-edge XYXY of the rest of the framework as
(xmin - 1, ymin - 1, xmax, ymax), so that box = (0, 0, W, H) covers the image and width = xmax -
xmin + 1 pixels. This is detectron2's `pascal_voc.py` convention (torchvision's VOCDetection
returns the raw XML and leaves it to the user).

Two layouts of a root folder are read: VOC's own (``Annotations/*.xml`` boxes, optional
segmentation PNGs) and masks-only exports such as labelme's (``SegmentationObject/``,
``SegmentationClass/`` PNGs and ``class_names.txt``, no XML): there boxes come from the instance
masks and classes from ``SegmentationClass``. Without ``ImageSets/`` every image is used.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from .base import DetectionDataset, is_finite_number, sanitize_boxes
from .io import read_image, read_label_png
from .masks import InstanceMasks
from .voc_masks import instances_of, label_lookup, pair_objects

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# labelme's exporter writes .npy arrays into SegmentationObject/ and the PNGs into SegmentationObjectPNG/.
SEGMENTATION_DIRS = (("SegmentationObject", "SegmentationClass"), ("SegmentationObjectPNG", "SegmentationClassPNG"))

PASCAL_VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
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


def _layout(root: str) -> str:
    """'xml' (Annotations/) or 'masks' (segmentation PNGs only); otherwise an error saying what is needed."""

    def has(sub):
        return os.path.isdir(os.path.join(root, sub))

    if has("JPEGImages") and has("Annotations"):
        return "xml"
    if has("JPEGImages") and any(has(obj) and has(cls) for obj, cls in SEGMENTATION_DIRS):
        return "masks"
    found = (
        sorted(os.listdir(root))
        if os.path.isdir(root)
        else (
            "the folder does not exist: point the dataset config's root (or paths.data_root) at your copy; "
            "maskrcnn/data/README.md lists the layouts and python tools/make_synthetic.py makes the synthetic sets"
        )
    )
    raise FileNotFoundError(
        f"VOCDetection: {root} is not a VOC-layout folder: it needs JPEGImages/ and either Annotations/ "
        f"(VOC XML boxes) or SegmentationObject/ + SegmentationClass/ PNGs (masks only, e.g. a labelme export, "
        f"with class_names.txt); found {found}"
    )


def _image_files(root: str) -> dict[str, str]:
    """file id -> image path of every image in ``<root>/JPEGImages``."""
    folder = os.path.join(root, "JPEGImages")
    return {
        os.path.splitext(n)[0]: os.path.join(folder, n)
        for n in sorted(os.listdir(folder))
        if n.lower().endswith(IMAGE_EXTENSIONS)
    }


def _split_ids(root: str, split: str, layout: str) -> list[str]:
    """The ids of ``ImageSets/{Main,Segmentation}/<split>.txt``; every image when there is no ImageSets/."""
    if not os.path.isdir(os.path.join(root, "ImageSets")):
        if layout == "xml":
            return sorted(
                os.path.splitext(n)[0] for n in os.listdir(os.path.join(root, "Annotations")) if n.endswith(".xml")
            )
        return list(_image_files(root))
    candidates = [os.path.join(root, "ImageSets", sub, f"{split}.txt") for sub in ("Main", "Segmentation")]
    list_file = next((f for f in candidates if os.path.isfile(f)), None)
    if list_file is None:
        raise FileNotFoundError(
            f"VOC split file not found: {candidates[0]} (root={root}, split={split}; "
            f"a root without ImageSets/ uses every image)"
        )
    with open(list_file) as f:
        return [line.split()[0] for line in f if line.strip()]


def _segmentation_files(root: str, file_id: str) -> tuple[str, str] | None:
    for obj, cls in SEGMENTATION_DIRS:
        pair = (os.path.join(root, obj, f"{file_id}.png"), os.path.join(root, cls, f"{file_id}.png"))
        if os.path.isfile(pair[0]) and os.path.isfile(pair[1]):
            return pair
    return None


def _read_class_names_file(root: str) -> list[str] | None:
    """Lines of ``<root>/class_names.txt`` (line i names class value i; line 0 the background), or None."""
    path = os.path.join(root, "class_names.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class VOCDetection(DetectionDataset):
    """Images of one or more VOCdevkit-style folders (e.g. VOC2007 trainval + VOC2012 trainval).

    A folder is read in one of two layouts:

    - VOC: ``Annotations/<id>.xml`` boxes and ``JPEGImages/<id>.jpg``; masks (``with_masks``) from
      ``SegmentationObject/<id>.png`` + ``SegmentationClass/<id>.png``, only images with them used.
    - masks only (no ``Annotations/``, e.g. a labelme export): ``JPEGImages/``, the two PNG folders
      (or labelme's ``SegmentationObjectPNG/`` + ``SegmentationClassPNG/``) and optionally
      ``class_names.txt``. Each instance of ``SegmentationObject`` is an object: its box the extent
      of its pixels, its class the majority class of its pixels in ``SegmentationClass``.

    The images are those of ``ImageSets/Main/<split>.txt`` (or ``ImageSets/Segmentation/``), every
    image when the folder has no ``ImageSets/``. Segmentation PNGs: 0 is background and 255 the void
    border, which belongs to no instance; class value i is label i, or the class named on line i of
    ``class_names.txt`` when the folder has one. XML objects are paired with instances as described
    in :mod:`maskrcnn.data.voc_masks` (by value as in VOC2012, else by box overlap); an object or
    instance left out is logged with the file and the reason.

    ``difficult`` objects are kept in :meth:`get_annotation` (the VOC evaluation ignores them) and
    left out of the training targets unless ``use_difficult``.

    Counted in ``self.stats``: ``difficult_ignored``, ``degenerate_box`` (also a box whose XML
    corners coincide, xmax <= xmin or ymax <= ymin: a click, not a drag), the other reasons of
    :func:`sanitize_boxes`, ``no_segmentation`` (image without the PNGs, dropped when masks are
    needed), ``empty_mask``, ``mask_class_mismatch`` and ``mask_unmatched`` (object without its
    instance, dropped), ``instance_without_object`` (an instance no XML object names),
    ``instance_without_class`` (masks only: no class pixels), ``empty_image_filtered``.
    """

    def __init__(
        self,
        *,
        sets: Sequence,
        class_names: Sequence[str] | None = PASCAL_VOC_CLASSES,
        transforms=None,
        with_masks: bool = False,
        use_difficult: bool = False,
        filter_empty: bool = True,
        skip_corrupt: bool = False,
        min_box_size: float = 1.0,
    ):
        """
        Args:
            sets: (root, split) pairs, as ``[{root: .../VOC2007, split: trainval}, ...]``.
            class_names: label i is class_names[i - 1]; an object of another name is an error. None:
                the names of the first root's ``class_names.txt`` (its line 0, the background, left out).
            with_masks: return instance masks from the segmentation PNGs (VOC2012 subset).
            use_difficult: also train on ``difficult`` objects.
            filter_empty: leave out images with no usable object (training); keep False to evaluate.
        """
        super().__init__(transforms=transforms, skip_corrupt=skip_corrupt, with_masks=with_masks)
        self.sets = _as_pairs(sets)
        if class_names is None:
            names = _read_class_names_file(self.sets[0][0])
            if names is None:
                raise ValueError(
                    f"VOCDetection: class_names is null but {self.sets[0][0]} has no class_names.txt; "
                    f"set the dataset's class_names"
                )
            class_names = names[1:]
        self.class_names = [str(c) for c in class_names]
        if len(set(self.class_names)) != len(self.class_names) or not self.class_names:
            raise ValueError(f"VOCDetection: class_names must be distinct and non-empty, got {self.class_names}")
        self._class_to_label = {c: i + 1 for i, c in enumerate(self.class_names)}
        self.use_difficult = use_difficult
        self.min_box_size = min_box_size

        records = []
        for root, split in self.sets:
            layout = _layout(root)
            value_to_label = self._value_to_label(root)
            images = _image_files(root) if layout == "masks" else {}
            for file_id in _split_ids(root, split, layout):
                if layout == "xml":
                    record = self._parse(root, file_id, image_id=len(records), value_to_label=value_to_label)
                else:
                    record = self._parse_masks_only(
                        root, file_id, images, image_id=len(records), value_to_label=value_to_label
                    )
                if record is not None:
                    records.append(record)
        self._all_records = records
        if with_masks:
            records = [r for r in records if r["mask_files"] is not None]
            self.stats["no_segmentation"] += len(self._all_records) - len(records)
        self.records = self._finish_records(
            records, filter_empty=filter_empty, source="VOCDetection " + ", ".join(f"{r} ({s})" for r, s in self.sets)
        )

    def _value_to_label(self, root: str) -> np.ndarray:
        """(256,) label of each SegmentationClass value of this root: by class_names.txt, else value = label."""
        names = _read_class_names_file(root)
        if names is None:
            return label_lookup({v: v for v in range(1, len(self.class_names) + 1)})
        unknown = [n for n in names[1:] if n not in self._class_to_label]
        if unknown:
            raise ValueError(
                f"{os.path.join(root, 'class_names.txt')}: classes {unknown} are not in class_names "
                f"{self.class_names}; set the dataset's class_names (or class_names: null to use the file)"
            )
        return label_lookup({v: self._class_to_label[n] for v, n in enumerate(names) if v > 0})

    def _parse(self, root: str, file_id: str, *, image_id: int, value_to_label: np.ndarray) -> dict:
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
                raise ValueError(
                    f"{xml_path}: object class {name!r} is not in class_names {self.class_names}; "
                    f"set the dataset's class_names"
                )
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
        mask_files = _segmentation_files(root, file_id)

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
        keep, clipped = sanitize_boxes(boxes[sub], width=w, height=h, min_size=self.min_box_size, stats=self.stats)
        idx = sub[keep]
        train_boxes = clipped[keep]
        mask_values = (idx + 1).tolist()
        if self.with_masks and mask_files is not None:
            mask_values, kept = self._pair_masks(mask_files, boxes, labels, idx, (h, w), xml_path, value_to_label)
            idx, train_boxes = idx[kept], train_boxes[kept]
        return {
            "image_id": image_id,
            "file_id": file_id,
            "file_name": image_path,
            "height": h,
            "width": w,
            "boxes": train_boxes,
            "labels": labels[idx],
            "mask_values": mask_values,
            "mask_files": mask_files,
            "all_boxes": boxes,
            "all_labels": labels,
            "difficult": difficult,
        }

    def _read_pngs(self, mask_files, size, described_by: str):
        inst, cls = read_label_png(mask_files[0]), read_label_png(mask_files[1])
        for path, png in zip(mask_files, (inst, cls)):
            if size is not None and png.shape != size:
                raise ValueError(
                    f"{path}: segmentation PNG is {png.shape[::-1]} (w, h), {described_by} says {size[::-1]}"
                )
        if inst.shape != cls.shape:
            raise ValueError(f"{mask_files[1]}: is {cls.shape[::-1]} (w, h) but {mask_files[0]} is {inst.shape[::-1]}")
        return inst, cls

    def _pair_masks(self, mask_files, boxes, labels, idx, size, xml_path, value_to_label):
        """Instance values of the training objects ``idx`` and which of them have one (bool (len(idx),))."""
        inst, cls = self._read_pngs(mask_files, size, f"the annotation {xml_path}")
        pairing = pair_objects(boxes, labels, instances_of(inst, cls, value_to_label), self.class_names)
        kept = pairing.values[idx] > 0
        dropped = []
        for k in idx[~kept]:
            key, why = pairing.reasons[int(k)]
            self.stats[key] += 1
            dropped.append(why)
        self.stats["instance_without_object"] += len(pairing.unpaired)
        dropped += [f"instance value {i.value} ({self._name(i.label)}): no XML object" for i in pairing.unpaired]
        if dropped:
            logger.warning("%s: left out %d object(s)/instance(s): %s", mask_files[0], len(dropped), "; ".join(dropped))
        return pairing.values[idx[kept]].tolist(), kept

    def _name(self, label: int) -> str:
        return self.class_names[label - 1] if 0 < label <= len(self.class_names) else "no class"

    def _parse_masks_only(
        self, root: str, file_id: str, images: dict[str, str], *, image_id: int, value_to_label: np.ndarray
    ) -> dict | None:
        """A record whose objects are the instances of the segmentation PNGs (None: image without PNGs)."""
        if file_id not in images:
            raise FileNotFoundError(f"VOC image not found: {os.path.join(root, 'JPEGImages', file_id)}.jpg")
        mask_files = _segmentation_files(root, file_id)
        if mask_files is None:
            self.stats["no_segmentation"] += 1
            return None
        inst, cls = self._read_pngs(mask_files, None, "")
        h, w = inst.shape
        instances = instances_of(inst, cls, value_to_label)
        classless = [i for i in instances if i.label == 0]
        if classless:
            self.stats["instance_without_class"] += len(classless)
            logger.warning(
                "%s: left out %d instance(s): %s",
                mask_files[0],
                len(classless),
                "; ".join(f"instance value {i.value}: no class pixels in {mask_files[1]}" for i in classless),
            )
        instances = [i for i in instances if i.label > 0]
        boxes = np.array([i.box for i in instances], dtype=np.float32).reshape(-1, 4)
        labels = np.array([i.label for i in instances], dtype=np.int64)
        keep, clipped = sanitize_boxes(boxes, width=w, height=h, min_size=self.min_box_size, stats=self.stats)
        return {
            "image_id": image_id,
            "file_id": file_id,
            "file_name": images[file_id],
            "height": h,
            "width": w,
            "boxes": clipped[keep],
            "labels": labels[keep],
            "mask_values": [i.value for i, k in zip(instances, keep) if k],
            "mask_files": mask_files,
            "all_boxes": boxes,
            "all_labels": labels,
            "difficult": np.zeros(len(boxes), dtype=bool),
        }

    def _load_masks(self, record: dict) -> InstanceMasks:
        inst = read_label_png(record["mask_files"][0])
        return InstanceMasks.from_label_map(inst, record["mask_values"])

    def get_annotation(self, idx: int) -> dict:
        """All objects of image ``idx`` (difficult and unclean ones included) for evaluation.

        Returns: ``image_id`` int, ``file_name`` str (the file id), ``boxes`` (M, 4) float32 0-based
        XYXY in original pixels, ``labels`` (M,) int64, ``difficult`` (M,) bool.
        """
        r = self.records[idx]
        return {
            "image_id": r["image_id"],
            "file_name": r["file_id"],
            "boxes": r["all_boxes"].copy(),
            "labels": r["all_labels"].copy(),
            "difficult": r["difficult"].copy(),
        }
