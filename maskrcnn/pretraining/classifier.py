"""Pre-train a ResNet trunk as a classifier of synthetic crops and save it as torchvision
ImageNet weights are saved, so that ``model.backbone.weights=<file>`` loads it (with
``backbone.norm=frozen_bn`` or ``bn``, as for ImageNet weights).

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

from ..data.synthetic import generate_split
from .crops import BACKGROUND, SyntheticCrops

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """What the pretrained weights depend on (written beside them as ``<out>.json``).

    The scenes come from ``generate_split(split="train", seed=scene_seed, scene=scene)``; keep
    ``scene_seed`` apart from the detection dataset's seed so that no detection image, train or
    val, is seen in pre-training. The last ``holdout`` fraction of scenes gives the accuracy.
    """

    depth: int = 18
    scene: str = "intermediate"
    scenes: int = 2000
    scene_seed: int = 1000
    image_size: int = 192
    crop_size: int = 64
    holdout: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0


def _accuracy(model: nn.Module, loader: DataLoader) -> tuple[float, list[float]]:
    """Overall accuracy and per-class accuracy (classes 0..BACKGROUND)."""
    model.eval()
    correct = torch.zeros(BACKGROUND + 1)
    total = torch.zeros(BACKGROUND + 1)
    with torch.no_grad():
        for images, labels in loader:
            predicted = model(images).argmax(dim=1)
            total += torch.bincount(labels, minlength=BACKGROUND + 1).float()
            correct += torch.bincount(labels[predicted == labels], minlength=BACKGROUND + 1).float()
    model.train()
    return float(correct.sum() / total.sum()), (correct / total.clamp(min=1)).tolist()


def pretrain_backbone(config: PretrainConfig, out: str | Path) -> dict:
    """Trains torchvision's ResNet-{depth} (BatchNorm) to classify crops of synthetic scenes,
    saves its state dict (torchvision's keys; the 4-way ``fc`` is dropped on loading as ImageNet's
    1000-way one is) to ``out`` and the config and held-out accuracies to ``<out>.json``.

    Returns the JSON's content.
    """
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
    train_set = SyntheticCrops(scenes[:-held], size=config.crop_size, seed=config.seed)
    test_set = SyntheticCrops(scenes[-held:], size=config.crop_size, seed=config.seed + 1)
    logger.info(
        "%d scenes (%d held out): %d training crops per epoch, %d test crops (%.0f s)",
        len(scenes),
        held,
        len(train_set),
        len(test_set),
        time.perf_counter() - start,
    )
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=True
    )
    test_loader = DataLoader(test_set, batch_size=256)

    model = getattr(torchvision.models, f"resnet{config.depth}")(weights=None, num_classes=BACKGROUND + 1)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    total_steps = config.epochs * len(train_loader)
    warmup = min(100, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * step / total_steps)),
    )
    loss_fn = nn.CrossEntropyLoss()
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
        accuracy, per_class = _accuracy(model, test_loader)
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "holdout_accuracy": accuracy})
        logger.info(
            "epoch %d/%d: loss %.4f, held-out accuracy %.3f (%.0f s)",
            epoch + 1,
            config.epochs,
            history[-1]["loss"],
            accuracy,
            time.perf_counter() - start,
        )
    torch.save(model.state_dict(), out)
    report = {
        "config": asdict(config),
        "classes": ["ellipse", "rectangle", "triangle", "background"],
        "holdout_accuracy": accuracy,
        "holdout_accuracy_per_class": per_class,
        "history": history,
        "seconds": time.perf_counter() - start,
    }
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
