"""ResNet backbones built from torchvision's definitions: FPN (P2-P6), C4 (res4 features) and C5
(res5 features).

The trunk keeps torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``) so that
ImageNet weights in torchvision's state-dict format load unchanged: by torchvision's name
(``weights=IMAGENET1K_V1``, through the torch hub cache, see :mod:`maskrcnn.modeling.pretrained`)
or from a local file.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["ResNetFPN", "ResNetC4", "ResNetC5", "build_resnet", "make_norm", "freeze_stages"]

_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
_NORMS = ("frozen_bn", "bn", "gn")


def make_norm(norm: str | None, *, num_groups: int = 32, eps: float = 1e-5):
    """A ``norm_layer(num_channels)`` factory: frozen_bn, bn, gn (GroupNorm) or None.

    ``eps`` applies to the batch norms; torchvision's COCO_V1 detection weights expect 0.0.
    """
    if norm is None or norm == "none":
        return None
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    if norm == "bn":
        return partial(nn.BatchNorm2d, eps=eps)
    if norm == "gn":
        return partial(nn.GroupNorm, num_groups)
    raise ValueError(f"unknown norm {norm!r}; expected one of {_NORMS} or null")


def build_resnet(*, depth: int, norm: str, weights: str | None, bn_eps: float = 1e-5) -> torchvision.models.ResNet:
    """torchvision's ResNet-{depth} with ``norm`` layers and optional ImageNet weights (a torchvision
    name such as ``IMAGENET1K_V2`` or a file path)."""
    if depth not in _DEPTHS:
        raise ValueError(f"backbone depth {depth} is not supported; expected one of {sorted(_DEPTHS)}")
    if norm not in _NORMS:
        raise ValueError(f"backbone norm {norm!r} is not supported; expected one of {_NORMS}")
    model = getattr(torchvision.models, _DEPTHS[depth])(weights=None, norm_layer=make_norm(norm, eps=bn_eps))
    if weights is not None:
        load_imagenet_weights(model, weights, norm=norm, depth=depth)
    # The classifier is never used; dropping it keeps checkpoints and parameter counts honest.
    del model.fc
    model.avgpool = nn.Identity()
    return model


def load_imagenet_weights(model: nn.Module, weights: str, *, norm: str, depth: int) -> None:
    """Loads torchvision ImageNet weights: a name (``IMAGENET1K_V1``, ``ResNet50_Weights.IMAGENET1K_V2``)
    or the path of a state dict (e.g. resnet50-0676ba61.pth)."""
    from .pretrained import imagenet_state_dict

    state = imagenet_state_dict(str(weights), depth=depth)
    batch_norm = any(k.endswith("running_mean") for k in state)
    if norm == "gn" and batch_norm:
        raise ValueError(
            "backbone.weights are ImageNet BatchNorm weights and cannot initialise a GroupNorm "
            "backbone; use backbone.norm=frozen_bn or bn, or weights=null"
        )
    if norm != "gn" and not batch_norm:
        raise ValueError(
            f"backbone.weights {weights} are GroupNorm weights (no BatchNorm statistics); use backbone.norm=gn"
        )
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: weights of another depth
        raise ValueError(f"backbone.weights {weights} does not match the ResNet: {str(e)[:300]}") from None
    missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"backbone.weights {weights} does not match the ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def freeze_stages(resnet: nn.Module, freeze_at: int) -> None:
    """Freezes the stem (freeze_at >= 1) and res2..res{freeze_at} (detectron2's FREEZE_AT).

    torchvision's ``trainable_backbone_layers=3`` is ``freeze_at=2``.
    """
    if not 0 <= freeze_at <= 5:
        raise ValueError(f"backbone.freeze_at must be in [0, 5], got {freeze_at}")
    stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]][:freeze_at]
    for names in stages:
        for name in names:
            module = getattr(resnet, name, None)
            if module is None:
                continue
            for p in module.parameters():
                p.requires_grad_(False)


def _stem_and_stages(resnet: nn.Module, x: Tensor, stages: list[str]) -> list[Tensor]:
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    outs = []
    for name in stages:
        x = getattr(resnet, name)(x)
        outs.append(x)
    return outs


class _ConvNorm(nn.Sequential):
    """Conv followed by an optional norm; without norm the conv has a bias (as torchvision's FPN)."""

    def __init__(self, cin: int, cout: int, k: int, norm: str | None) -> None:
        layer = make_norm(norm)
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=layer is None))
        if layer is not None:
            self.append(layer(cout))
        nn.init.kaiming_uniform_(self[0].weight, a=1)
        if self[0].bias is not None:
            nn.init.zeros_(self[0].bias)


class ResNetFPN(nn.Module):
    """ResNet + Feature Pyramid Network: P2-P5 from res2-res5, P6 by stride-2 subsampling of P5.

    Output: ``OrderedDict`` p2..p6 of (N, out_channels, H / s, W / s) with strides 4, 8, 16, 32, 64.
    The top-down path upsamples by nearest neighbour to the lateral's size (odd sizes allowed).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: str = "frozen_bn",
        freeze_at: int = 2,
        weights: str | None = None,
        out_channels: int = 256,
        fpn_norm: str | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.body = build_resnet(depth=depth, norm=norm, weights=weights, bn_eps=bn_eps)
        freeze_stages(self.body, freeze_at)
        c2 = 64 if depth < 50 else 256
        in_channels = [c2, c2 * 2, c2 * 4, c2 * 8]
        self.inner_blocks = nn.ModuleList(_ConvNorm(c, out_channels, 1, fpn_norm) for c in in_channels)
        self.layer_blocks = nn.ModuleList(_ConvNorm(out_channels, out_channels, 3, fpn_norm) for _ in in_channels)
        self.out_channels = out_channels
        self.strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
        self.size_divisibility = 32

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = _stem_and_stages(self.body, x, ["layer1", "layer2", "layer3", "layer4"])
        last = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[i](last))
        # P6: kernel-1 stride-2 max pool of P5, i.e. subsampling (torchvision's LastLevelMaxPool).
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return OrderedDict(zip(["p2", "p3", "p4", "p5", "p6"], results))


class ResNetC4(nn.Module):
    """ResNet trunk up to res4 (stride 16), the C4 backbone of Faster / Mask R-CNN.

    Output: ``OrderedDict(res4=(N, C4, H / 16, W / 16))``. The res5 stage is not here: it is the
    RoI box head (:class:`maskrcnn.modeling.box_head.Res5Head`), built from the same ResNet
    definition and, with ``weights``, the same ImageNet file.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: str = "frozen_bn",
        freeze_at: int = 2,
        weights: str | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.body = build_resnet(depth=depth, norm=norm, weights=weights, bn_eps=bn_eps)
        del self.body.layer4
        freeze_stages(self.body, min(freeze_at, 4))
        self.out_channels = (64 if depth < 50 else 256) * 4
        self.strides = {"res4": 16}
        self.size_divisibility = 32

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(res4=_stem_and_stages(self.body, x, ["layer1", "layer2", "layer3"])[-1])


class ResNetC5(nn.Module):
    """The whole ResNet trunk through res5 (stride 32): the C5 backbone of Table 2d of the Mask
    R-CNN paper, where RoIs are pooled from stride-32 features.

    Output: ``OrderedDict(res5=(N, C5, H / 32, W / 32))``, C5 = 512 for ResNet-18/34, 2048 for
    ResNet-50/101. The RPN and both RoI poolers read res5; with no stage left for a res5 box head,
    the RoI heads are the FPN kind (2-FC box head, 4-conv mask head, configs/model/base/c5.yaml).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        norm: str = "frozen_bn",
        freeze_at: int = 2,
        weights: str | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.body = build_resnet(depth=depth, norm=norm, weights=weights, bn_eps=bn_eps)
        freeze_stages(self.body, freeze_at)
        self.out_channels = (64 if depth < 50 else 256) * 8
        self.strides = {"res5": 32}
        self.size_divisibility = 32

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(res5=_stem_and_stages(self.body, x, ["layer1", "layer2", "layer3", "layer4"])[-1])
