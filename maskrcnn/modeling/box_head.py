"""RoI box heads (2fc for FPN, res5 for C4) and the class / box predictor."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import build_resnet, make_norm

__all__ = ["TwoMLPHead", "Res5Head", "FastRCNNPredictor"]


class TwoMLPHead(nn.Module):
    """Flatten the (C, r, r) RoI features and apply two fully connected layers with ReLU (FPN head)."""

    def __init__(self, *, in_channels: int, resolution: int = 7, representation_size: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels * resolution * resolution, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.out_channels = representation_size

    def forward(self, x: Tensor) -> Tensor:
        """(K, C, r, r) -> (K, representation_size)."""
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class Res5Head(nn.Module):
    """The res5 stage of the ResNet on 14x14 RoI features (stride 2 -> 7x7), then average pooling.

    This is the C4 head of Faster R-CNN / Mask R-CNN (Fig. 4 left of the Mask R-CNN paper); the
    7x7 maps (:meth:`trunk`) also feed the C4 mask head.

    ``channels`` narrows the stage: ``None`` keeps the ResNet's res5 (512 output channels for
    ResNet-18/34, 2048 for ResNet-50/101, loadable from ImageNet weights); a smaller number builds
    the same blocks (same count, block type and strides) with that many output channels. The res5
    stage runs once per RoI and dominates a C4 model's cost, so a narrower one is what makes C4
    experiments fit a CPU (256 channels cost about a quarter of the multiply-adds of 512).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: str = "frozen_bn",
        weights: str | None = None,
        bn_eps: float = 1e-5,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        resnet = build_resnet(depth=depth, norm=norm, weights=weights, bn_eps=bn_eps)
        full_channels = (64 if depth < 50 else 256) * 8
        if channels is None or channels == full_channels:
            self.layer4 = resnet.layer4
            self.out_channels = full_channels
            return
        if weights is not None:
            raise ValueError(
                f"box_head.channels={channels} builds a narrower res5 than the ResNet's "
                f"({full_channels}), which ImageNet weights cannot initialise; "
                "use box_head.channels=null or backbone.weights=null"
            )
        self.layer4 = _narrow_res5(resnet, channels=channels, norm=norm, bn_eps=bn_eps)
        self.out_channels = channels

    def trunk(self, x: Tensor) -> Tensor:
        """(K, C4, 14, 14) -> (K, C5, 7, 7)."""
        return self.layer4(x)

    def forward(self, x: Tensor) -> Tensor:
        """(K, C4, 14, 14) -> (K, C5)."""
        return self.trunk(x).mean(dim=(2, 3))


def _narrow_res5(resnet: nn.Module, *, channels: int, norm: str, bn_eps: float) -> nn.Sequential:
    """``resnet.layer4`` rebuilt with ``channels`` output channels (same block type and count)."""
    blocks = list(resnet.layer4)
    block_type = type(blocks[0])
    expansion = block_type.expansion
    if channels % expansion or (norm == "gn" and (channels // expansion) % 32):
        raise ValueError(
            f"box_head.channels={channels} must be a multiple of {expansion} (block expansion)"
            + (" with a multiple of 32 per block for GroupNorm" if norm == "gn" else "")
        )
    in_channels = blocks[0].conv1.in_channels
    norm_layer = make_norm(norm, eps=bn_eps)
    downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=2, bias=False), norm_layer(channels))
    planes = channels // expansion
    layers = [block_type(in_channels, planes, stride=2, downsample=downsample, norm_layer=norm_layer)]
    layers += [block_type(channels, planes, norm_layer=norm_layer) for _ in blocks[1:]]
    return nn.Sequential(*layers)


class FastRCNNPredictor(nn.Module):
    """Class logits over ``num_classes + 1`` (0 = background) and class-specific box deltas."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (foreground classes), got {num_classes}")
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, (num_classes + 1) * 4)
        # Small initial outputs (as detectron2) so that training from scratch starts calmly.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(K, D) -> logits (K, num_classes + 1), deltas (K, 4 * (num_classes + 1))."""
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)
