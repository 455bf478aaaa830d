"""Pre-train a ResNet trunk by semantic segmentation of synthetic scenes: every pixel labelled
background, ellipse, rectangle or triangle, at the scenes' native size.

It teaches the trunk what the detection studies need (shapes at every scale, in context, at every
position) without boxes or RoIs, so it favours no RoI layer. The crop classifier
(:mod:`maskrcnn.pretraining.classifier`) was tried first and learned object vs background but not
the shapes (docs/results.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data.synthetic import SyntheticSample
from .crops import PIXEL_MEAN, PIXEL_STD


class SceneSegmentation(Dataset):
    """Scenes as ``(image, labels)``: image ``(3, H, W)`` float32 normalised with ImageNet's
    statistics, labels ``(H, W)`` int64 (0 background, 1..3 the class of the visible object),
    flipped at random (seeded by ``(seed, epoch, index)``)."""

    def __init__(self, scenes: list[SyntheticSample], *, seed: int = 0, flip: bool = True) -> None:
        self.scenes = scenes
        self.seed = seed
        self.flip = flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        scene = self.scenes[index]
        labels = np.zeros(scene.image.shape[:2], np.int64)
        for mask, label in zip(scene.masks, scene.labels):  # visible masks do not overlap
            labels[mask.astype(bool)] = int(label)
        image = (scene.image.astype(np.float32) / 255.0 - PIXEL_MEAN) / PIXEL_STD
        if self.flip:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < 0.5:
                image, labels = image[:, ::-1], labels[:, ::-1]
            if rng.random() < 0.5:
                image, labels = image[::-1], labels[::-1]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(labels))


def collate_padded(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Scenes of different shapes padded to the largest: image with zeros (the normalised mean),
    labels with -1 (ignored by the loss)."""
    h = max(img.shape[1] for img, _ in batch)
    w = max(img.shape[2] for img, _ in batch)
    images = torch.zeros(len(batch), 3, h, w)
    labels = torch.full((len(batch), h, w), -1, dtype=torch.int64)
    for i, (img, lab) in enumerate(batch):
        images[i, :, : img.shape[1], : img.shape[2]] = img
        labels[i, : lab.shape[0], : lab.shape[1]] = lab
    return images, labels


class SegmentationNet(nn.Module):
    """torchvision's ResNet as the trunk, a light FPN-like head on res3..res5 (strides 8, 16, 32)
    summed at stride 8, and logits upsampled to the input size.

    ``forward(images (N, 3, H, W)) -> logits (N, num_classes, H, W)``; ``self.trunk`` is the
    ResNet whose state dict is saved (torchvision's keys).
    """

    def __init__(self, trunk: nn.Module, *, num_classes: int, channels: int = 64) -> None:
        super().__init__()
        self.trunk = trunk
        widths = [
            trunk.layer2[-1].conv1.in_channels,
            trunk.layer3[-1].conv1.in_channels,
            trunk.layer4[-1].conv1.in_channels,
        ]
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in widths)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, num_classes, 1)
        )

    def forward(self, images: Tensor) -> Tensor:
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(images))))
        c3 = t.layer2(t.layer1(x))
        c4 = t.layer3(c3)
        c5 = t.layer4(c4)
        size = c3.shape[-2:]
        fused = sum(
            F.interpolate(lat(c), size=size, mode="bilinear", align_corners=False) if c is not c3 else lat(c)
            for lat, c in zip(self.lateral, (c3, c4, c5))
        )
        return F.interpolate(self.head(fused), size=images.shape[-2:], mode="bilinear", align_corners=False)


def confusion(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, num_classes)`` pixel counts, rows the true class, columns the predicted one,
    over pixels whose label is not -1."""
    keep = labels >= 0
    index = labels[keep] * num_classes + logits.argmax(dim=1)[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(matrix: Tensor) -> list[float]:
    """Intersection over union of each class from a confusion matrix."""
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    return (tp / union.clamp(min=1)).tolist()
