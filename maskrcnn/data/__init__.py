"""Datasets (COCO, VOC, synthetic shapes), transforms, samplers and loaders."""

from . import transforms
from .coco import CocoDetection
from .io import ImageReadError, read_image
from .loader import TrainLoader, build_test_loader, build_train_loader, collate
from .masks import InstanceMasks
from .samplers import InferenceSampler, TrainingBatchSampler
from .voc import PASCAL_VOC_CLASSES, VOCDetection

__all__ = [
    "CocoDetection",
    "PASCAL_VOC_CLASSES",
    "VOCDetection",
    "ImageReadError",
    "InferenceSampler",
    "InstanceMasks",
    "TrainLoader",
    "TrainingBatchSampler",
    "build_test_loader",
    "build_train_loader",
    "collate",
    "read_image",
    "transforms",
]
