"""Anchor boxes of the RPN: a few sizes and aspect ratios at every feature-map location."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator"]


class AnchorGenerator(nn.Module):
    """Anchors for each feature level, laid out as torchvision lays them out.

    Args:
        sizes: per level, the anchor sizes (sqrt of area, input pixels), e.g. [[32], [64], ...].
        aspect_ratios: per level, the ratios height / width, e.g. [[0.5, 1.0, 2.0], ...].

    The cell anchors are centred at 0 and rounded to integers; anchor (y, x) of a level with
    stride s is the cell anchor shifted by (x * s, y * s), with A anchors per location in the
    order (ratio, size).
    """

    def __init__(self, *, sizes: list[list[float]], aspect_ratios: list[list[float]]) -> None:
        super().__init__()
        sizes = [list(s) for s in sizes]
        aspect_ratios = [list(a) for a in aspect_ratios]
        if len(aspect_ratios) == 1 and len(sizes) > 1:
            aspect_ratios = aspect_ratios * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"AnchorGenerator: {len(sizes)} levels of sizes but {len(aspect_ratios)} of aspect_ratios")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.cell_anchors = [self._cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)]
        self._cache: dict = {}

    @staticmethod
    def _cell_anchors(sizes: list[float], ratios: list[float]) -> Tensor:
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        ratios = torch.as_tensor(ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def forward(
        self,
        image_size: tuple[int, int],
        feature_shapes: list[tuple[int, int]],
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> list[Tensor]:
        """
        Args:
            image_size: (H, W) of the padded batch tensor.
            feature_shapes: (h, w) of each level's map.
        Returns:
            per level, (h * w * A, 4) XYXY anchors in input pixels.
        """
        if len(feature_shapes) != len(self.cell_anchors):
            raise ValueError(
                f"AnchorGenerator has {len(self.cell_anchors)} levels but got {len(feature_shapes)} feature maps"
            )
        key = (tuple(image_size), tuple(tuple(s) for s in feature_shapes), dtype, device)
        if key in self._cache:
            return self._cache[key]
        out = []
        for (h, w), cell in zip(feature_shapes, self.cell_anchors):
            # Integer strides from the padded size, as torchvision computes them.
            stride_h, stride_w = image_size[0] // h, image_size[1] // w
            shifts_x = torch.arange(0, w, dtype=torch.int32, device=device) * stride_w
            shifts_y = torch.arange(0, h, dtype=torch.int32, device=device) * stride_h
            sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            cell = cell.to(dtype=dtype, device=device)
            out.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4))
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = out
        return out
