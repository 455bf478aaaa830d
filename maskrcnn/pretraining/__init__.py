"""Backbone pre-training on synthetic data: the stand-in for ImageNet weights that lets every
variant of a RoI-layer study fine-tune from the same pretrained ResNet (docs/results.md)."""

from .classifier import PretrainConfig, pretrain_backbone
from .crops import BACKGROUND, SyntheticCrops

__all__ = ["BACKGROUND", "PretrainConfig", "SyntheticCrops", "pretrain_backbone"]
