"""Pasting the fixed-size (M x M) mask predictions into the image, all masks of an image at once.

The geometry is torchvision's ``paste_masks_in_image`` exactly (so converted models reproduce its
masks): the M x M mask is padded by one pixel of zeros, its box is enlarged by (M + 2) / M about
the centre and truncated to integers, the padded mask is resized bilinearly (align_corners=False)
to the box's integer size (x1 - x0 + 1, y1 - y0 + 1) and copied into the image where they overlap.

Instead of one ``interpolate`` per mask we write the bilinear resize as two sparse matrices per
mask (rows and columns: two non-zero weights each) and apply them with batched matrix products,
so the work is one ``bmm`` pair per chunk of masks and no Python loop runs over masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["paste_masks_in_image", "expand_boxes"]


def expand_boxes(boxes: Tensor, scale: float) -> Tensor:
    """Scales (K, 4) XYXY boxes about their centres by ``scale`` (torchvision's operation order)."""
    w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5
    h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5
    x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
    y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
    w_half = w_half * scale
    h_half = h_half * scale
    return torch.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], dim=1)


def _resize_weights(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """Bilinear (align_corners=False) weights from ``in_size`` source cells to the image axis.

    For each mask k, image pixel i inside [start_k, start_k + length_k) takes the value at source
    coordinate src = (i - start_k + 0.5) * in_size / length_k - 0.5 (clamped at 0), as
    ``F.interpolate`` computes it; pixels outside get weight 0.

    Returns:
        (K, out_size, in_size) weights.
    """
    i = torch.arange(out_size, device=start.device)
    d = i[None, :] - start[:, None]  # (K, out) position inside the resized mask
    inside = (d >= 0) & (d < length[:, None])
    scale = in_size / length.to(torch.float32)  # float32 as interpolate's area_pixel_compute_scale
    src = ((d.to(torch.float32) + 0.5) * scale[:, None] - 0.5).clamp(min=0)
    i0 = src.floor().to(torch.int64).clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    lam1 = src - i0.to(torch.float32)
    lam0 = 1.0 - lam1
    w = torch.zeros(start.shape[0], out_size, in_size, device=start.device, dtype=torch.float32)
    lam0 = torch.where(inside, lam0, torch.zeros_like(lam0))
    lam1 = torch.where(inside, lam1, torch.zeros_like(lam1))
    w.scatter_add_(2, i0[..., None], lam0[..., None])
    w.scatter_add_(2, i1[..., None], lam1[..., None])
    return w


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *, padding: int = 1, chunk: int = 64
) -> Tensor:
    """
    Args:
        masks: (K, 1, M, M) probabilities of each detection's class.
        boxes: (K, 4) XYXY boxes in the pixels of the output image.
        image_size: (H, W) of the output image.
        chunk: masks per batched product (bounds the temporary memory to chunk * (H + W) * (M + 2)).
    Returns:
        (K, 1, H, W) pasted probabilities, 0 outside each enlarged box.
    """
    im_h, im_w = int(image_size[0]), int(image_size[1])
    k = masks.shape[0]
    if k == 0:
        return masks.new_zeros((0, 1, im_h, im_w))
    m = masks.shape[-1]
    padded = F.pad(masks[:, 0], (padding,) * 4)  # (K, M+2, M+2)
    scale = float(m + 2 * padding) / m
    ib = expand_boxes(boxes, scale).to(torch.int64)  # truncation toward zero, as torchvision
    w = (ib[:, 2] - ib[:, 0] + 1).clamp(min=1)
    h = (ib[:, 3] - ib[:, 1] + 1).clamp(min=1)
    size = padded.shape[-1]
    out = masks.new_empty((k, 1, im_h, im_w))
    for s in range(0, k, chunk):
        sl = slice(s, s + chunk)
        wy = _resize_weights(ib[sl, 1], h[sl], size, im_h)  # (k, H, M+2)
        wx = _resize_weights(ib[sl, 0], w[sl], size, im_w)  # (k, W, M+2)
        rows = torch.bmm(wy, padded[sl].to(torch.float32))  # (k, H, M+2)
        out[sl, 0] = torch.bmm(rows, wx.transpose(1, 2)).to(masks.dtype)
    return out
