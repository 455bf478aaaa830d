"""Square crops of synthetic scenes for classifier pre-training: each object in its context, and
background windows, resized to one size.

The classes are the scenes' shapes (ellipse, rectangle, triangle as 0, 1, 2) and ``BACKGROUND``
(3). The detection studies' backbone is pretrained on these, as the paper's backbones are on
ImageNet: it learns what the shapes and the backgrounds look like, not where boxes go, so it favours
no RoI layer.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.synthetic import CLASS_NAMES, SyntheticSample

BACKGROUND = len(CLASS_NAMES)  # class index of background windows
# ImageNet statistics, as maskrcnn.modeling.ImageTransform normalises detection inputs.
PIXEL_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
PIXEL_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class SyntheticCrops(Dataset):
    """One crop per object of ``scenes`` and as many background crops, drawn afresh each epoch.

    An object's crop is a square around its box, ``context`` times the box's longer side (drawn
    uniformly from the range) with its centre jittered by up to a tenth of the side, so the object
    fills a third to nine tenths of the crop. A background crop is a square window (side drawn
    log-uniformly from ``background_sides``) whose pixels are at most ``max_background_fg`` object
    pixels. Crops reaching past the image are padded with the image's mean colour; every crop is
    resized to ``size`` x ``size`` and flipped at random.

    Item: ``(image, label)``, image ``(3, size, size)`` float32 normalised with ImageNet's
    statistics, label an int in ``0..BACKGROUND``.
    """

    def __init__(
        self,
        scenes: list[SyntheticSample],
        *,
        size: int = 64,
        context: tuple[float, float] = (1.1, 3.0),
        background_sides: tuple[int, int] = (24, 128),
        max_background_fg: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.scenes = scenes
        self.size = size
        self.context = context
        self.background_sides = background_sides
        self.max_background_fg = max_background_fg
        self.objects = [(i, j) for i, s in enumerate(scenes) for j in range(len(s.labels))]
        if not self.objects:
            raise ValueError("SyntheticCrops needs scenes with at least one object")
        self.foreground = [s.masks.any(axis=0) for s in scenes]
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Crops depend on (seed, epoch, index): a new epoch draws new crops, a rerun the same."""
        self.epoch = epoch

    def __len__(self) -> int:
        return 2 * len(self.objects)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if index < len(self.objects):
            scene, obj = self.objects[index]
            crop, label = self._object_crop(rng, scene, obj), int(self.scenes[scene].labels[obj]) - 1
        else:
            crop, label = self._background_crop(rng, index % len(self.scenes)), BACKGROUND
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.5:
            crop = crop[::-1]
        image = (crop.astype(np.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), label

    def _object_crop(self, rng: np.random.Generator, scene: int, obj: int) -> np.ndarray:
        x0, y0, x1, y1 = self.scenes[scene].boxes[obj].tolist()
        side = max(x1 - x0, y1 - y0) * rng.uniform(*self.context)
        cx, cy = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * side, (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * side
        return self._window(self.scenes[scene].image, cx - side / 2, cy - side / 2, side)

    def _background_crop(self, rng: np.random.Generator, scene: int) -> np.ndarray:
        image, fg = self.scenes[scene].image, self.foreground[scene]
        h, w = fg.shape
        lo, hi = self.background_sides
        side = lo
        for _ in range(50):
            side = int(np.exp(rng.uniform(np.log(lo), np.log(min(hi, h, w)))))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            if fg[y : y + side, x : x + side].mean() <= self.max_background_fg:
                return self._window(image, x, y, side)
        # A crowded scene: the least covered window of the smallest side, scanned on a grid.
        side = lo
        candidates = [
            (fg[y : y + side, x : x + side].mean(), x, y)
            for y in range(0, h - side + 1, 8)
            for x in range(0, w - side + 1, 8)
        ]
        _, x, y = min(candidates)
        return self._window(image, x, y, side)

    def _window(self, image: np.ndarray, x: float, y: float, side: float) -> np.ndarray:
        """The square [x, x + side) x [y, y + side) of ``image`` (mean-padded), as size x size."""
        h, w = image.shape[:2]
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        x1, y1 = max(x0 + 1, int(np.ceil(x + side))), max(y0 + 1, int(np.ceil(y + side)))
        pad = max(0, -x0, -y0, x1 - w, y1 - h)
        if pad:
            fill = [float(v) for v in image.reshape(-1, 3).mean(axis=0)]
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill)
        window = image[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
        return cv2.resize(window, (self.size, self.size), interpolation=cv2.INTER_AREA)
