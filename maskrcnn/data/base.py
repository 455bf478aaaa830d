"""What the COCO and VOC datasets share: annotation clean-up with counted reasons, image loading
with a named error (or a counted skip), transforms and the conversion to the model's tensors."""

from __future__ import annotations

import collections
import logging
import math

import cv2
import numpy as np
import torch

from .io import ImageReadError, read_image
from .masks import InstanceMasks

logger = logging.getLogger(__name__)


def sanitize_boxes(
    boxes: np.ndarray, *, width: int, height: int, min_size: float, stats: collections.Counter
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image, drop the unusable ones, and count why.

    Args:
        boxes: (N, 4) XYXY in 0-based pixel-edge coordinates of a (height, width) image.
        min_size: boxes narrower or lower than this (pixels, after clipping) are dropped.
        stats: counter updated with ``invalid_box`` (non-finite), ``box_outside_image``,
            ``degenerate_box`` (dropped) and ``box_clipped`` (repaired).

    Returns:
        (keep (N,) bool, clipped boxes (N, 4) float32).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    keep = np.ones(len(boxes), dtype=bool)
    finite = np.isfinite(boxes).all(axis=1)
    stats["invalid_box"] += int((~finite).sum())
    keep &= finite
    b = np.where(finite[:, None], boxes, 0.0)
    outside = keep & ((b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= width) | (b[:, 1] >= height))
    outside &= (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # an inverted box is degenerate, not outside
    stats["box_outside_image"] += int(outside.sum())
    keep &= ~outside
    clipped = b.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    degenerate = keep & ((clipped[:, 2] - clipped[:, 0] < min_size) | (clipped[:, 3] - clipped[:, 1] < min_size))
    stats["degenerate_box"] += int(degenerate.sum())
    keep &= ~degenerate
    stats["box_clipped"] += int((keep & (clipped != b).any(axis=1)).sum())
    return keep, clipped


# What the clean-up dropped or repaired because an annotation is wrong (warned when loading).
CLEANUP_WARNED = {
    "invalid_box": "boxes with a NaN/inf coordinate dropped",
    "degenerate_box": "boxes of zero or negative size dropped",
    "box_outside_image": "boxes outside the image dropped",
    "box_clipped": "boxes crossing the image border clipped",
    "polygon_part_dropped": "polygon parts with fewer than 3 points (or bad coordinates) dropped",
    "no_valid_segmentation": "objects without a usable segmentation dropped",
}


class DetectionDataset(torch.utils.data.Dataset):
    """Base of the detection datasets.

    Subclasses fill ``self.records`` (one dict per image: ``image_id`` int, ``file_name`` path,
    ``height``/``width`` of the file, ``boxes`` (N, 4) float32 0-based XYXY, ``labels`` (N,) int64)
    and implement :meth:`_load_masks`. ``self.stats`` counts what the clean-up dropped, repaired
    or skipped, by reason.
    """

    class_names: list[str]

    def __init__(self, *, transforms=None, skip_corrupt: bool = False, with_masks: bool = True):
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.with_masks = with_masks
        self.records: list[dict] = []
        self.stats: collections.Counter = collections.Counter()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def aspect_ratios(self) -> np.ndarray:
        """(N,) float width / height of each image, from the annotations (no image is read)."""
        return np.array([r["width"] / r["height"] for r in self.records], dtype=np.float64)

    def _load_masks(self, record: dict) -> InstanceMasks | None:
        raise NotImplementedError

    def _finish_records(self, records: list[dict], *, filter_empty: bool, source: str = "") -> list[dict]:
        """Drop images without objects when asked, count objects, and warn (one line naming
        ``source``, the annotation file or folder) about objects the clean-up dropped or repaired."""
        if filter_empty:
            kept = [r for r in records if len(r["labels"]) > 0]
            self.stats["empty_image_filtered"] += len(records) - len(kept)
            records = kept
        self.stats["images"] = len(records)
        self.stats["objects"] = sum(len(r["labels"]) for r in records)
        repaired = ", ".join(f"{self.stats[k]} {why} ({k})" for k, why in CLEANUP_WARNED.items() if self.stats[k])
        if repaired:
            logger.warning(
                f"{source or type(self).__name__}: the annotation clean-up changed {repaired}; fix "
                f"those annotations to keep them as they are (python tools/check_dataset.py counts them)"
            )
        return records

    def __getitem__(self, idx: int):
        return self.get(idx)

    def get(self, idx: int, rng: np.random.Generator | None = None):
        """The sample ``idx`` with the random transforms drawn from ``rng`` (fresh entropy if None).

        Returns:
            image: (3, H, W) uint8 RGB after the transforms. Images stay uint8 up to the model,
                which converts them to float and normalises them on its device (a quarter of the
                bytes of float32 through DataLoader workers, pinned memory and the copy to the GPU).
            target: ``boxes`` (N, 4) float32 XYXY in pixels of ``image``, ``labels`` (N,) int64,
                ``masks`` (N, H, W) uint8 (when the dataset has masks), ``image_id`` int,
                ``orig_size`` (2,) int64 (h, w) of the file.
        """
        if not self.records:
            raise IndexError(f"{type(self).__name__} has no images (every image was filtered out or none is listed)")
        for attempt in range(len(self.records)):
            record = self.records[(idx + attempt) % len(self.records)]
            try:
                image = read_image(record["file_name"])
                break
            except ImageReadError as exc:
                if not self.skip_corrupt:
                    raise ImageReadError(
                        f"{exc} (to skip unreadable training images and count them, set "
                        f"dataset.train.skip_corrupt=true)"
                    ) from exc
                # Counted in the process that read it (a DataLoader worker counts its own).
                self.stats["skipped_corrupt_image"] += 1
                logger.warning("skipping unreadable image: %s", exc)
        else:
            raise ImageReadError(f"no readable image left in the dataset (last error about {record['file_name']})")

        h, w = image.shape[:2]
        if (h, w) != (record["height"], record["width"]):
            raise ValueError(
                f"{record['file_name']}: the image is {w}x{h} but its annotation says "
                f"{record['width']}x{record['height']}; fix the annotation file"
            )
        target = {"boxes": record["boxes"].copy(), "labels": record["labels"].copy()}
        if self.with_masks:
            target["masks"] = self._load_masks(record)
        if self.transforms is not None:
            rng = rng if rng is not None else np.random.default_rng()
            image, target = self.transforms(image, target, rng)
        return self._to_tensors(image, target, record)

    @staticmethod
    def _to_tensors(image: np.ndarray, target: dict, record: dict):
        image_t = torch.from_numpy(to_chw_uint8(image))
        out = {
            "boxes": torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(target["labels"], dtype=torch.int64),
            "image_id": int(record["image_id"]),
            "orig_size": torch.tensor([record["height"], record["width"]], dtype=torch.int64),
        }
        if "masks" in target and target["masks"] is not None:
            out["masks"] = torch.from_numpy(target["masks"].to_array())
        return image_t, out


def to_chw_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) uint8, C-contiguous (the datasets' image format).

    numpy's strided copy of the transposed view: faster than splitting planes with OpenCV or
    torch's ``permute(...).contiguous()`` on uint8.
    """
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def to_chw_float(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (torchvision's input format).

    Bitwise equal to ``torch.from_numpy(to_chw_uint8(image)).float() / 255``, what the model does
    with a uint8 image (tests/data/test_uint8_images.py).

    One OpenCV pass per channel plane: several times faster than torch's conversion of the
    permuted (channels-last) uint8 tensor, which was a hot spot of the loader at 1333 x 800.
    """
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for c, plane in enumerate(cv2.split(image)):
        cv2.multiply(plane, 1.0 / 255.0, dst=out[c], dtype=cv2.CV_32F)
    return out


def area_bucket(area: float) -> str:
    """COCO's object size buckets: small < 32^2 <= medium < 96^2 <= large (area in pixels)."""
    if area < 32**2:
        return "small"
    if area < 96**2:
        return "medium"
    return "large"


def is_finite_number(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
