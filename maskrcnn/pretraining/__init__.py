"""Backbone pre-training on synthetic data: the stand-in for ImageNet weights that lets every
variant of a RoI-layer study fine-tune from the same pretrained ResNet (docs/results.md)."""

from .crops import BACKGROUND, SyntheticCrops
from .pretrain import TASKS, PretrainConfig, pretrain_backbone

__all__ = ["BACKGROUND", "TASKS", "PretrainConfig", "SyntheticCrops", "pretrain_backbone"]
