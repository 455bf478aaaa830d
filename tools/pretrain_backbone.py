#!/usr/bin/env python
"""Pre-train a ResNet trunk on synthetic scenes (segmentation, or crops), the RoI-layer studies' stand-in for
ImageNet weights (docs/results.md). Logic: maskrcnn/pretraining/.

    python tools/pretrain_backbone.py --out datasets/pretrained/resnet18_synthetic.pth
    python tools/train.py ... model.backbone.norm=frozen_bn \
        model.backbone.weights=datasets/pretrained/resnet18_synthetic.pth

Writes the state dict (torchvision's ResNet keys) and ``<out>.json`` (settings, held-out score
per epoch). The defaults are the studies' weights; same arguments, same file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import torch

from maskrcnn.data.synthetic import SCENES
from maskrcnn.pretraining import TASKS, PretrainConfig, pretrain_backbone


def main(argv: list[str] | None = None) -> int:
    defaults = PretrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="weights file to write (and <out>.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    for field in dataclasses.fields(PretrainConfig):
        kwargs = {"choices": SCENES} if field.name == "scene" else {"choices": TASKS} if field.name == "task" else {}
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(getattr(defaults, field.name)),
            default=getattr(defaults, field.name),
            **kwargs,
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PretrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)})
    if config.scenes < 2 or not 0 < config.holdout < 1 or config.epochs < 1:
        print("error: need --scenes >= 2, 0 < --holdout < 1 and --epochs >= 1", file=sys.stderr)
        return 2
    report = pretrain_backbone(config, args.out)
    print(
        f"wrote {args.out}: held-out {report['holdout_metric']} {report['holdout_score']:.3f} in {report['seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
