#!/usr/bin/env python
"""Benchmark our Mask R-CNN R50-FPN against torchvision's, same weights and inputs, in one process.

    python tools/bench_model.py [--device cpu|cuda] [--size 512] [--max-size 853] [--batch 2]
                                [--iters 5] [--warmup 2] [--roi-backend ours|torchvision] [--amp none|bf16]
                                [--models torchvision,swap,ours] [--out bench.json]

torchvision's model is built as ``maskrcnn_resnet50_fpn`` builds it for pretrained weights (frozen BN,
eps 0) with random weights; ours is ``configs/model/mask_rcnn_r50_fpn_torchvision.yaml`` with the
converted weights (so both compute the same detections, see tests/modeling/test_torchvision_parity.py).
``swap`` is torchvision's model with the one-line swap of its RoI poolers for
``maskrcnn.ops.MultiScaleRoIAlign`` (same settings, same detections; see
tests/ops/test_torchvision_compat.py).
Inference: ``model(images)`` in eval mode, including resize, mask paste. Training step: forward with
targets, backward, SGD step (the models take turns, one run each per round); ``--amp bf16`` runs the forward passes under bfloat16 autocast. Reports
medians (ms) and ratios model / torchvision (< 1: faster than torchvision) as a table and JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn.engine.config import REPO_ROOT
from maskrcnn.modeling.torchvision_compat import convert_torchvision_state_dict
from maskrcnn.ops import MultiScaleRoIAlign
from maskrcnn.profiling import time_interleaved

MODELS = ("torchvision", "swap", "ours")


def swap_roi_pools(model: MaskRCNN) -> MaskRCNN:
    """torchvision's MultiScaleRoIAlign poolers replaced by ours with the same settings (in place)."""
    for name in ("box_roi_pool", "mask_roi_pool"):
        old = getattr(model.roi_heads, name)
        if old is not None:
            setattr(
                model.roi_heads,
                name,
                MultiScaleRoIAlign(
                    old.featmap_names,
                    old.output_size,
                    old.sampling_ratio,
                    canonical_scale=old.canonical_scale,
                    canonical_level=old.canonical_level,
                ),
            )
    return model


def build_models(*, size: int, max_size: int, num_classes: int, roi_backend: str, device: torch.device):
    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    tv = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=num_classes + 1, min_size=size, max_size=max_size)
    overwrite_eps(tv, 0.0)
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            overrides=[
                "+model=mask_rcnn_r50_fpn_torchvision",
                "+roi_layer=roi_align",
                f"model.transform.min_size_test={size}",
                f"model.transform.max_size_test={max_size}",
                f"model.roi_heads.box_pooler.roi_layer.backend={roi_backend}",
                f"model.roi_heads.mask_pooler.roi_layer.backend={roi_backend}",
            ]
        )
    with open_dict(cfg):
        cfg.dataset = OmegaConf.create({"num_classes": num_classes})
    ours = instantiate(cfg.model)
    ours.load_state_dict(convert_torchvision_state_dict(tv.state_dict(), arch="maskrcnn_resnet50_fpn"), strict=True)
    # Confident random detections so that the mask branch and the paste do real work at inference.
    for m in (tv, ours):
        with torch.no_grad():
            m.roi_heads.box_predictor.cls_score.bias[1:] += 4.0
    swap = swap_roi_pools(copy.deepcopy(tv))
    return {"torchvision": tv.to(device), "swap": swap.to(device), "ours": ours.to(device)}


def make_inputs(*, batch: int, h: int, w: int, num_classes: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, h, w, generator=g).to(device))
        n = 6
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        targets.append(
            {
                "boxes": boxes.to(device),
                "labels": torch.randint(1, num_classes + 1, (n,), generator=g).to(device),
                "masks": masks.to(device),
            }
        )
    return images, targets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=None, help="short side (default 800 on cuda, 384 on cpu)")
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--roi-backend", default="ours", choices=["ours", "torchvision"])
    p.add_argument("--amp", default="none", choices=["none", "bf16"], help="bfloat16 autocast of the forward")
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated subset of torchvision (always run: the baseline), swap (torchvision's "
        "model with our MultiScaleRoIAlign), ours",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on cpu")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    names = [m for m in MODELS if m == "torchvision" or m in args.models.split(",")]
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; choose from {', '.join(MODELS)}")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (800 if device.type == "cuda" else 384)
    max_size = args.max_size or int(size * 1333 / 800)
    iters = args.iters or (20 if device.type == "cuda" else 3)
    h, w = size, int(size * 4 / 3)
    models = build_models(
        size=size, max_size=max_size, num_classes=args.num_classes, roi_backend=args.roi_backend, device=device
    )
    images, targets = make_inputs(batch=args.batch, h=h, w=w, num_classes=args.num_classes, device=device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")

    def infer_fn(model):
        def infer():
            with torch.no_grad(), autocast():
                return model(images)

        return infer

    def step_fn(model):
        opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-4, momentum=0.9)

        def step():
            with autocast():
                losses = model(images, [dict(t) for t in targets])
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()

        return step

    for name in names:
        models[name].eval()
    infers = {name: infer_fn(models[name]) for name in names}
    dets = {name: fn() for name, fn in infers.items()}
    inf = time_interleaved(infers, repeats=iters, warmup=args.warmup, device=device)
    for name in names:
        models[name].train()
    steps = {name: step_fn(models[name]) for name in names}
    train = time_interleaved(steps, repeats=iters, warmup=args.warmup, device=device)
    results = {
        name: {
            "inference_ms": statistics.median(inf[name][0]),
            "train_step_ms": statistics.median(train[name][0]),
            "inference_cpu_ms": statistics.median(inf[name][1]),
            "train_step_cpu_ms": statistics.median(train[name][1]),
            "inference_all_ms": inf[name][0],
            "train_all_ms": train[name][0],
            "detections_per_image": [int(d["boxes"].shape[0]) for d in dets[name]],
        }
        for name in names
    }
    for name in names[1:]:
        for key in ("inference_ms", "train_step_ms"):
            prefix = "ratio_" if name == "ours" else f"ratio_{name}_"
            results[prefix + key] = results[name][key] / results["torchvision"][key]
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "batch": args.batch,
        "image_hw": [h, w],
        "min_size": size,
        "max_size": max_size,
        "iters": iters,
        "roi_backend": args.roi_backend,
        "amp": args.amp,
        "results": results,
    }
    print(f"{'':14s}{'torchvision ms':>16s}" + "".join(f"{n + ' ms':>12s}{n + '/tv':>10s}" for n in names[1:]))
    for key, label in (("inference_ms", "inference"), ("train_step_ms", "train step")):
        row = "".join(
            f"{results[n][key]:12.1f}{results[n][key] / results['torchvision'][key]:10.3f}" for n in names[1:]
        )
        print(f"{label:14s}{results['torchvision'][key]:16.1f}{row}")
    print(
        f"(device {report['device_name']}, batch {args.batch} of {h}x{w}, medians of {iters}, "
        f"RoI backend of ours {args.roi_backend}, amp {args.amp}; detections/image "
        + ", ".join(f"{n} {results[n]['detections_per_image']}" for n in names)
        + ")"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
