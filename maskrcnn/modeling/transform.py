"""Input side of the detector: normalisation, test-time resizing and padding into a batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ImageTransform", "resize_boxes", "to_float_image"]


def to_float_image(image: Tensor, *, dtype: torch.dtype = torch.float32, index: int = 0) -> Tensor:
    """A (3, H, W) image as floating point in [0, 1]: uint8 -> ``image.to(dtype) / 255``, a
    floating-point image unchanged (its own dtype, e.g. float16 or float64).

    Raises:
        TypeError: any other dtype (``index`` names the image in the batch).
    """
    if image.dtype == torch.uint8:
        return image.to(dtype) / 255
    if not image.is_floating_point():
        raise TypeError(f"image {index} must be uint8 in [0, 255] or floating point in [0, 1], got {image.dtype}")
    return image


def resize_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Rescales (K, 4) XYXY boxes from an (H, W) image to another (H', W') image."""
    ratio_h = torch.tensor(to_size[0], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[0], dtype=torch.float32, device=boxes.device
    )
    ratio_w = torch.tensor(to_size[1], dtype=torch.float32, device=boxes.device) / torch.tensor(
        from_size[1], dtype=torch.float32, device=boxes.device
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)


class ImageTransform(nn.Module):
    """Converts and normalises images, resizes them at inference, and pads them into one batch tensor.

    Images come as uint8 in [0, 255] (what our datasets give: a quarter of float32's bytes
    through the data loader and the copy to the device) or as floating point in [0, 1]
    (torchvision's convention); the dtype decides. A uint8 image ``x`` becomes
    ``x.to(float32) / 255`` here, on the model's device, so it gives bitwise the results of the
    float image ``x.float() / 255``. Both are then normalised with ``pixel_mean`` / ``pixel_std``.

    Training images arrive already resized by the data pipeline (multi-scale choice, flips), so
    they are only normalised and padded. At inference each image is resized so that its short
    side is ``min_size_test`` unless the long side would exceed ``max_size_test`` (bilinear, the
    scale factor computed and applied as torchvision does), and outputs are mapped back.

    Args:
        pixel_mean, pixel_std: per-channel statistics of [0, 1] RGB images (ImageNet's by default).
        size_divisibility: the batch is zero-padded to a multiple of this (32 for FPN's P5/P6).
    """

    def __init__(
        self,
        *,
        min_size_test: int = 800,
        max_size_test: int = 1333,
        pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        if min_size_test <= 0 or max_size_test <= 0:
            raise ValueError(f"min_size_test / max_size_test must be positive, got {min_size_test}, {max_size_test}")
        self.min_size_test = min_size_test
        self.max_size_test = max_size_test
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility

    def resize(self, image: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        scale = min(self.min_size_test / min(h, w), self.max_size_test / max(h, w))
        return F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]

    def forward(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """
        Args:
            images: (3, H_i, W_i) RGB, uint8 in [0, 255] or floating point in [0, 1].
        Returns:
            (N, 3, H, W) normalised, padded batch and the (H_i', W_i') of each image inside it.
        """
        out = []
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i} must be a (3, H, W) tensor, got shape {tuple(img.shape)}")
            img = to_float_image(img, dtype=self.pixel_mean.dtype, index=i)
            img = (img - self.pixel_mean.to(img.dtype)) / self.pixel_std.to(img.dtype)
            if not self.training:
                img = self.resize(img)
            out.append(img)
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in out]
        d = self.size_divisibility
        max_h = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        max_w = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = out[0].new_zeros((len(out), 3, max_h, max_w))
        for b, im in zip(batch, out):
            b[:, : im.shape[1], : im.shape[2]].copy_(im)
        return batch, sizes
