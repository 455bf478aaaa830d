"""Pre-train a ResNet trunk on synthetic scenes and save it as torchvision ImageNet weights are
saved, so that ``model.backbone.weights=<file>`` loads it: GroupNorm weights (the default) with
``backbone.norm=gn``, BatchNorm ones with ``frozen_bn`` or ``bn`` as ImageNet weights.

Two tasks (``PretrainConfig.task``):
    segmentation: every pixel of a scene labelled background or its object's class
        (:mod:`maskrcnn.pretraining.segmentation`); the studies' weights.
    crops: a classifier of object crops and background windows (:mod:`maskrcnn.pretraining.crops`).

    python tools/pretrain_backbone.py --out datasets/pretrained/resnet18_synthetic.pth
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from ..data.synthetic import CLASS_NAMES, generate_split
from .crops import BACKGROUND, SyntheticCrops
from .segmentation import SceneSegmentation, SegmentationNet, collate_padded, confusion, iou_per_class

logger = logging.getLogger(__name__)
TASKS = ("segmentation", "crops")


@dataclass(frozen=True)
class PretrainConfig:
    """What the pretrained weights depend on (written beside them as ``<out>.json``).

    The scenes come from ``generate_split(split="train", seed=scene_seed, scene=scene)``; keep
    ``scene_seed`` apart from the detection dataset's seed so that no detection image, train or
    val, is seen in pre-training. The last ``holdout`` fraction of scenes gives the held-out score
    (segmentation: mean IoU of the four classes; crops: accuracy).
    """

    task: str = "segmentation"
    depth: int = 18
    norm: str = "gn"  # gn: GroupNorm(32), loads into backbone.norm=gn; bn: BatchNorm, into frozen_bn or bn
    scene: str = "intermediate"
    scenes: int = 2000
    scene_seed: int = 1000
    image_size: int = 192
    crop_size: int = 64  # crops only
    holdout: float = 0.1
    epochs: int = 6
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0


def _build(config: PretrainConfig, train_scenes, test_scenes):
    """(model, trunk, train set, test set, collate) of the task."""
    classes = len(CLASS_NAMES) + 1
    norm_layer = (lambda channels: nn.GroupNorm(32, channels)) if config.norm == "gn" else None
    trunk = getattr(torchvision.models, f"resnet{config.depth}")(
        weights=None, num_classes=classes, norm_layer=norm_layer
    )
    if config.task == "crops":
        train_set = SyntheticCrops(train_scenes, size=config.crop_size, seed=config.seed)
        test_set = SyntheticCrops(test_scenes, size=config.crop_size, seed=config.seed + 1)
        return trunk, trunk, train_set, test_set, None
    model = SegmentationNet(trunk, num_classes=classes)
    train_set = SceneSegmentation(train_scenes, seed=config.seed)
    test_set = SceneSegmentation(test_scenes, flip=False)
    return model, trunk, train_set, test_set, collate_padded


def _evaluate(model: nn.Module, loader: DataLoader, task: str) -> tuple[float, list[float]]:
    """Held-out score and per-class scores (crops: accuracy; segmentation: IoU), classes
    ellipse, rectangle, triangle, background."""
    model.eval()
    classes = BACKGROUND + 1
    matrix = torch.zeros(classes, classes, dtype=torch.int64)
    with torch.no_grad():
        for images, labels in loader:
            logits = model(images)
            if task == "crops":
                logits, labels = logits[:, :, None, None], labels[:, None, None]
            matrix += confusion(logits, labels, classes)
    model.train()
    if task == "crops":
        per_class = (matrix.diag().double() / matrix.sum(1).clamp(min=1)).tolist()
        return float(matrix.diag().sum() / matrix.sum()), per_class
    # Segmentation labels are 0 = background, 1..3 = shapes: reorder to shapes first, background last.
    per_class = iou_per_class(matrix)
    per_class = per_class[1:] + per_class[:1]
    return sum(per_class) / len(per_class), per_class


def pretrain_backbone(config: PretrainConfig, out: str | Path) -> dict:
    """Trains torchvision's ResNet-{depth} (GroupNorm or BatchNorm) on the task, saves the ResNet's state dict
    (torchvision's keys; its ``fc`` is dropped on loading as ImageNet's is) to ``out`` and the
    config and held-out scores to ``<out>.json``. Returns the JSON's content."""
    if config.task not in TASKS:
        raise ValueError(f"pre-training task must be one of {TASKS}, got {config.task!r}")
    if config.norm not in ("gn", "bn"):
        raise ValueError(f"pre-training norm must be gn or bn, got {config.norm!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    scenes = generate_split(
        split="train",
        num_images=config.scenes,
        seed=config.scene_seed,
        image_size=config.image_size,
        scene=config.scene,
    )
    held = max(1, int(round(config.holdout * len(scenes))))
    model, trunk, train_set, test_set, collate = _build(config, scenes[:-held], scenes[-held:])
    logger.info(
        "%s: %d scenes (%d held out), %d training items per epoch (%.0f s)",
        config.task,
        len(scenes),
        held,
        len(train_set),
        time.perf_counter() - start,
    )
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=True, collate_fn=collate
    )
    test_loader = DataLoader(test_set, batch_size=32, collate_fn=collate)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    total_steps = config.epochs * len(train_loader)
    warmup = min(100, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * step / total_steps)),
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1)
    history = []
    model.train()
    for epoch in range(config.epochs):
        train_set.set_epoch(epoch)
        losses = []
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"pre-training loss is {losses[-1]} at epoch {epoch}; lower --lr")
        score, per_class = _evaluate(model, test_loader, config.task)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": sum(losses) / len(losses),
                "holdout_score": score,
                "holdout_per_class": per_class,
            }
        )
        logger.info(
            "epoch %d/%d: loss %.4f, held-out %s %.3f, per class %s (%.0f s)",
            epoch + 1,
            config.epochs,
            history[-1]["loss"],
            "accuracy" if config.task == "crops" else "mean IoU",
            score,
            [round(v, 3) for v in per_class],
            time.perf_counter() - start,
        )
    torch.save(trunk.state_dict(), out)
    report = {
        "config": asdict(config),
        "classes": [*CLASS_NAMES, "background"],
        "holdout_metric": "accuracy" if config.task == "crops" else "mean IoU",
        "holdout_score": score,
        "holdout_per_class": per_class,
        "history": history,
        "seconds": time.perf_counter() - start,
    }
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
