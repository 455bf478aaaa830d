"""Reading image files: OpenCV decoding to 3-channel RGB with errors that name the file."""

from __future__ import annotations

import os

import cv2
import numpy as np

# Our loaders run inside DataLoader workers; OpenCV's own thread pool would oversubscribe the cores.
cv2.setNumThreads(0)


class ImageReadError(RuntimeError):
    """An image file is missing, unreadable or not a decodable image. The message names the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB.

    Grayscale and CMYK JPEGs come back as 3-channel RGB too: ``cv2.IMREAD_COLOR`` converts
    single-channel images by replication and CMYK/YCCK JPEGs through libjpeg's colour conversion.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        ImageReadError: the file is missing or cannot be decoded (truncated, not an image).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"image file not found: {path}")
    # imdecode on the bytes instead of imread: imread returns None silently for every failure,
    # and reading the bytes ourselves lets us tell "missing" from "corrupt".
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"image file is empty: {path}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"cannot decode image file (corrupt or not an image): {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or 8-bit grayscale) PNG as its raw indices, e.g. VOC SegmentationObject.

    OpenCV expands palettes to colours, so palette PNGs are read with Pillow, which returns the
    indices themselves.

    Returns:
        (H, W) uint8 indices (VOC: 0 background, 255 border/void).
    """
    from PIL import Image

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"label PNG not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ImageReadError(
                    f"label PNG {path} has mode {im.mode!r}, expected a palette ('P') or 8-bit ('L') PNG"
                )
            return np.array(im, dtype=np.uint8)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises several types for truncated/garbage files
        raise ImageReadError(f"cannot decode label PNG (corrupt or not a PNG): {path}: {exc}") from exc
