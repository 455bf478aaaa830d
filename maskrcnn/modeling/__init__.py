"""Faster R-CNN and Mask R-CNN with a pluggable RoI layer, weight-compatible with torchvision."""

from .anchors import AnchorGenerator
from .backbone import ResNetC4, ResNetC5, ResNetFPN
from .box_coder import BoxCoder
from .box_head import FastRCNNPredictor, Res5Head, TwoMLPHead
from .detector import GeneralizedRCNN
from .mask_head import MaskPredictor, MaskRCNNConvHead
from .mask_paste import paste_masks_in_image
from .matcher import Matcher, sample_balanced
from .poolers import MultiLevelRoIPooler, RoILayerSpec, assign_fpn_levels
from .roi_heads import Res5RoIHeads, RoIHeads, StandardRoIHeads
from .rpn import RPN, RPNHead
from .transform import ImageTransform

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "FastRCNNPredictor",
    "GeneralizedRCNN",
    "ImageTransform",
    "Matcher",
    "MaskPredictor",
    "MaskRCNNConvHead",
    "MultiLevelRoIPooler",
    "RPN",
    "RPNHead",
    "Res5Head",
    "Res5RoIHeads",
    "ResNetC4",
    "ResNetC5",
    "ResNetFPN",
    "RoIHeads",
    "RoILayerSpec",
    "StandardRoIHeads",
    "TwoMLPHead",
    "assign_fpn_levels",
    "paste_masks_in_image",
    "sample_balanced",
]
