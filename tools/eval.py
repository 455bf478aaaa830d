#!/usr/bin/env python
"""Evaluate a checkpoint, or score a COCO-format results file (Hydra app over configs/eval.yaml).

    python tools/eval.py checkpoint=outputs/.../model_final.pt model=mask_rcnn_r50_fpn dataset=coco
    python tools/eval.py results=detections.json dataset=coco            # no model: COCOeval of the file
    torchrun --nproc_per_node=8 tools/eval.py checkpoint=... ...         # images sharded, results gathered

Writes metrics.json (and predictions/ for a checkpoint) into the Hydra run directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from maskrcnn.data import build_test_loader
from maskrcnn.engine import (
    Checkpointer,
    ConfigError,
    broadcast_object,
    draw_dataset_predictions,
    inference_on_dataset,
    init_distributed,
    is_main_process,
    validate_eval_config,
)
from maskrcnn.engine.distributed import cleanup
from maskrcnn.evaluation import build_evaluator, score_coco_results

log = logging.getLogger("eval")


def score_results(cfg: DictConfig) -> dict:
    """COCOeval of ``cfg.results`` against the annotation file of the dataset split."""
    split_cfg = cfg.dataset[cfg.split]
    if "annotation_file" not in split_cfg:
        raise ConfigError(f"results=PATH scores COCO-format results against a COCO annotation file, but "
                          f"dataset.{cfg.split} ({cfg.dataset.name}) has no annotation_file")
    return score_coco_results(split_cfg.annotation_file, cfg.results)


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path) -> dict:
    device = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    dataset = instantiate(cfg.dataset[cfg.split])
    model = instantiate(cfg.model)
    state = Checkpointer.load(cfg.checkpoint)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {cfg.checkpoint} does not match model={cfg.model._target_}: "
                         f"missing {missing[:5]}..., unexpected {unexpected[:5]}... (wrong model= config?)")
    model.to(device).eval()
    log.info("evaluating %s (iteration %s) on %s/%s (%d images)", cfg.checkpoint, state.get("iteration"),
             cfg.dataset.name, cfg.split, len(dataset))
    evaluator = build_evaluator(dataset, cfg.dataset.evaluator)
    loader = build_test_loader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    results = inference_on_dataset(model, loader, evaluator, device=device, amp=cfg.amp.name)
    if is_main_process():
        if hasattr(evaluator, "per_category_table"):
            log.info("per-category AP:\n%s", evaluator.per_category_table())
        n = min(cfg.vis_images, len(dataset))
        if n > 0:
            draw_dataset_predictions(model, dataset, indices=range(n), device=device,
                                     out_dir=output_dir / "predictions", score_threshold=cfg.vis_score_threshold,
                                     amp=cfg.amp.name)
            log.info("prediction images: %s", output_dir / "predictions")
    return broadcast_object(results)


def run(cfg: DictConfig, output_dir: str | Path) -> dict:
    cfg = validate_eval_config(cfg)
    output_dir = Path(output_dir)
    results = score_results(cfg) if cfg.results is not None else evaluate_checkpoint(cfg, output_dir)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        source = {"results": cfg.results} if cfg.results is not None else {"checkpoint": cfg.checkpoint}
        with open(output_dir / "metrics.json", "w") as f:
            json.dump({**source, "dataset": cfg.dataset.name, "split": cfg.split, **results}, f, indent=2)
        shown = {k: round(v, 4) for k, v in results.items() if "-" not in k}
        log.info("metrics: %s", shown)
        log.info("written to %s", output_dir / "metrics.json")
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, HydraConfig.get().runtime.output_dir)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
