"""Training transforms on (image, target) pairs, before conversion to tensors.

A transform is a callable ``(image, target, rng) -> (image, target)``:
    image: (H, W, 3) uint8 RGB numpy array.
    target: ``boxes`` (N, 4) float32 XYXY in pixels of ``image``, ``labels`` (N,) int64 and
        optionally ``masks``, an :class:`~maskrcnn.data.masks.InstanceMasks` (transformed lazily).
    rng: numpy Generator; all randomness comes from it, so a seeded sample is reproducible.

Build them in Hydra with ``_target_: maskrcnn.data.transforms.build_transforms`` or compose
the classes with ``_target_: maskrcnn.data.transforms.Compose``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, target, rng=None):
        rng = rng if rng is not None else np.random.default_rng()
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def resized_shape(height: int, width: int, short_size: int, max_size: int | None) -> tuple[int, int]:
    """(new_h, new_w) with the short side = short_size, unless the long side would exceed max_size
    (then the long side = max_size). Same rule as detectron2's ResizeShortestEdge."""
    scale = short_size / min(height, width)
    if max_size and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ResizeShortestEdge:
    """Resize so the short side is ``min_size`` (a random choice among several for multi-scale
    training) and the long side at most ``max_size``. Boxes and masks follow."""

    def __init__(self, *, min_size: int | Sequence[int], max_size: int | None = 1333):
        sizes = [int(min_size)] if isinstance(min_size, (int, float)) else [int(s) for s in min_size]
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"ResizeShortestEdge: min_size must be positive sizes, got {min_size!r}")
        if max_size is not None and max_size <= 0:
            raise ValueError(f"ResizeShortestEdge: max_size must be positive or None, got {max_size!r}")
        self.min_size, self.max_size = sizes, max_size

    def __call__(self, image, target, rng):
        h, w = image.shape[:2]
        size = self.min_size[rng.integers(len(self.min_size))] if len(self.min_size) > 1 else self.min_size[0]
        nh, nw = resized_shape(h, w, size, self.max_size)
        if (nh, nw) == (h, w):
            return image, target
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        target = dict(target)
        boxes = np.asarray(target["boxes"], dtype=np.float32).copy()
        boxes[:, 0::2] *= nw / w
        boxes[:, 1::2] *= nh / h
        target["boxes"] = boxes
        if target.get("masks") is not None:
            target["masks"] = target["masks"].resize(nh, nw)
        return image, target

    def __repr__(self) -> str:
        return f"ResizeShortestEdge(min_size={self.min_size}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror image, boxes and masks left-right with probability ``prob``."""

    def __init__(self, *, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: prob must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, image, target, rng):
        if self.prob < 1.0 and rng.random() >= self.prob:
            return image, target
        return hflip(image, target)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


def hflip(image, target):
    """Deterministic horizontal flip: x -> W - x in pixel-edge coordinates."""
    w = image.shape[1]
    image = cv2.flip(image, 1)  # a contiguous mirrored copy, much faster than numpy's image[:, ::-1] copy
    target = dict(target)
    boxes = np.asarray(target["boxes"], dtype=np.float32).copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    target["boxes"] = boxes
    if target.get("masks") is not None:
        target["masks"] = target["masks"].hflip()
    return image, target


class ColorJitter:
    """Photometric jitter: brightness, contrast and saturation factors drawn from
    [1 - x, 1 + x], applied in random order with probability ``prob``. Geometry is untouched."""

    def __init__(self, *, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, prob: float = 0.8):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"ColorJitter: {name} must be in [0, 1), got {v}")
        self.brightness, self.contrast, self.saturation, self.prob = brightness, contrast, saturation, prob

    def __call__(self, image, target, rng):
        if rng.random() >= self.prob:
            return image, target
        img = image.astype(np.float32)
        for op in rng.permutation(3):
            if op == 0 and self.brightness:
                img *= rng.uniform(1 - self.brightness, 1 + self.brightness)
            elif op == 1 and self.contrast:
                mean = img.mean(axis=2).mean()  # of the grayscale image, as torchvision
                img = (img - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
            elif op == 2 and self.saturation:
                gray = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                img = (img - gray[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray[..., None]
        return np.clip(img, 0, 255).astype(np.uint8), target

    def __repr__(self) -> str:
        return f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation}, prob={self.prob})"


def build_transforms(
    *,
    min_size: int | Sequence[int] | None = None,
    max_size: int | None = 1333,
    flip_prob: float = 0.5,
    jitter: bool = False,
) -> Compose:
    """Training pipeline: optional jitter, resize of the short side (min_size None = keep the
    size), horizontal flip. Evaluation datasets use ``transforms: null`` (the model resizes)."""
    ts = []
    if jitter:
        ts.append(ColorJitter())
    if min_size is not None:
        ts.append(ResizeShortestEdge(min_size=min_size, max_size=max_size))
    if flip_prob > 0:
        ts.append(RandomHorizontalFlip(prob=flip_prob))
    return Compose(ts)
