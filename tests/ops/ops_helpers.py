"""Inputs shared by the RoI op tests: feature maps and boxes of every awkward kind."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor


def cpu_kernels_only(reason: str):
    """Marks a test of a behaviour of the CPU kernels that the CUDA kernels do not share by design;
    under MASKRCNN_CUDA_EMULATION=1 (the CUDA kernels serve CPU tensors) it is skipped with why."""
    from maskrcnn.ops import kernel_backend

    return pytest.mark.skipif(kernel_backend() == "cuda-emulation", reason=f"CPU kernels only: {reason}")


def feature_map(n=3, c=4, h=13, w=17, dtype=torch.float64, seed=0, channels_last=False) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def assorted_rois(n_images: int, height: int, width: int, scale: float, dtype=torch.float64, seed=0) -> Tensor:
    """(K, 5) rois in input-image coordinates covering every kind of box the spec talks about:
    inside the map, partly and wholly outside it, zero and negative size, sub-pixel, huge."""
    g = torch.Generator().manual_seed(seed)
    img_h, img_w = height / scale, width / scale

    def rand(k, lo, hi):
        return torch.rand(k, generator=g, dtype=torch.float64) * (hi - lo) + lo

    boxes = []
    k = 6  # inside the image, assorted sizes
    x1, y1 = rand(k, 0, img_w * 0.7), rand(k, 0, img_h * 0.7)
    boxes.append(torch.stack([x1, y1, x1 + rand(k, 2, img_w * 0.3), y1 + rand(k, 2, img_h * 0.3)], 1))
    k = 4  # partly outside (crossing every border)
    x1, y1 = rand(k, -img_w * 0.3, img_w * 0.8), rand(k, -img_h * 0.3, img_h * 0.8)
    boxes.append(torch.stack([x1, y1, x1 + rand(k, img_w * 0.3, img_w * 0.8), y1 + rand(k, img_h * 0.3, img_h)], 1))
    boxes.append(
        torch.tensor(
            [
                [img_w + 5, 2, img_w + 20, 9],  # wholly right of the map
                [-30, -25, -8, -3],  # wholly above-left
                [3, img_h + 2, 9, img_h + 40],  # wholly below
                [5, 5, 5, 12],  # zero width
                [7, 6, 7, 6],  # a point
                [12, 10, 6, 4],  # negative size
                [3.2, 4.1, 3.5, 4.3],  # sub-pixel
                [-img_w * 4, -img_h * 3, img_w * 5, img_h * 6],  # huge
                [0, 0, img_w, img_h],
            ],  # the whole image
            dtype=torch.float64,
        )
    )
    boxes = torch.cat(boxes)
    index = torch.randint(0, n_images, (boxes.shape[0], 1), generator=g).to(torch.float64)
    return torch.cat([index, boxes], 1).to(dtype)


def random_rois(n_images: int, height: int, width: int, scale: float, k: int, dtype=torch.float64, seed=0) -> Tensor:
    """k boxes with corners anywhere in [-20%, 120%] of the image (some inverted or tiny)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.tensor([width, height, width, height], dtype=torch.float64) / scale
    corners = (torch.rand(k, 4, generator=g, dtype=torch.float64) * 1.4 - 0.2) * img
    index = torch.randint(0, n_images, (k, 1), generator=g).to(torch.float64)
    return torch.cat([index, corners], 1).to(dtype)
