#!/usr/bin/env python
"""Evaluate a checkpoint, or score a COCO-format results file (Hydra app over configs/eval.yaml).

    python tools/eval.py checkpoint=outputs/<run>/model_final.pt              # the run's model and dataset
    python tools/eval.py checkpoint=outputs/<run>/model_final.pt split=train model.transform.min_size_test=600
    python tools/eval.py checkpoint=OLD.pt model=mask_rcnn_r50_fpn dataset=coco  # a checkpoint without config
    python tools/eval.py results=detections.json dataset=coco                 # no model: COCOeval of the file
    torchrun --nproc_per_node=8 tools/eval.py checkpoint=... ...              # images sharded, results gathered

The model (and, unless ``dataset=`` is given, the dataset) is rebuilt from the config the checkpoint
carries (or from ``<run>/.hydra/config.yaml`` next to it); command-line overrides apply on top.
Whatever ``split`` names, images get test-time preprocessing only. Writes metrics.json (and
predictions/ for a checkpoint) into the Hydra run directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

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
from maskrcnn.distributed import cleanup
from maskrcnn.engine.eval_data import build_eval_dataset
from maskrcnn.engine.run_dir import remove_empty_run_dir
from maskrcnn.engine.user_errors import exit_on_user_error
from maskrcnn.engine.run_config import (apply_run_config, chosen_groups, command_line_overrides, load_model_weights,
                                        load_run_config, without_initial_weights)
from maskrcnn.evaluation import build_evaluator, score_coco_results

log = logging.getLogger("eval")


def score_results(cfg: DictConfig) -> dict:
    """COCOeval of ``cfg.results`` against the annotation file of the dataset split."""
    split_cfg = cfg.dataset[cfg.split]
    if "annotation_file" not in split_cfg:
        raise ConfigError(f"results=PATH scores COCO-format results against a COCO annotation file, but "
                          f"dataset.{cfg.split} ({cfg.dataset.name}) has no annotation_file")
    return score_coco_results(split_cfg.annotation_file, cfg.results)


def with_run_config(cfg: DictConfig, state: dict, overrides) -> tuple[DictConfig, dict]:
    """``cfg`` with the checkpoint's run config under the command line (see
    maskrcnn.engine.run_config); also the run's evaluation batch size and autocast unless given."""
    run = load_run_config(cfg.checkpoint, state)
    merged = apply_run_config(cfg, run, overrides, checkpoint=cfg.checkpoint, dataset_from_meta=False)
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    trainer = run.config.get("trainer") if run.config is not None else None
    if trainer is not None:
        with open_dict(merged):
            for key, run_key in (("batch_size", "eval_batch_size"), ("amp", "amp")):
                if key not in given and run_key in trainer:
                    merged[key] = trainer[run_key]
    if run.config is not None and "dataset" not in run.config and "dataset" not in chosen_groups(overrides):
        log.info("the checkpoint's config has no dataset: evaluating on dataset=%s", merged.dataset.get("name"))
    return merged, run.meta


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path, state: dict, meta: dict) -> dict:
    device = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    dataset = build_eval_dataset(cfg.dataset[cfg.split], name=f"dataset.{cfg.split}")
    names = getattr(dataset, "class_names", None)
    if meta.get("class_names") and names is not None and list(names) != list(meta["class_names"]):
        log.warning("the checkpoint's classes %s differ from dataset %s's %s", meta["class_names"],
                    cfg.dataset.name, list(names))
    model = instantiate(without_initial_weights(cfg).model)
    load_model_weights(model, state, checkpoint=cfg.checkpoint, meta=meta)
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


def run(cfg: DictConfig, output_dir: str | Path, overrides=None) -> dict:
    """Evaluate ``cfg.checkpoint`` or score ``cfg.results``; ``overrides`` are the command line's
    (default: the running Hydra app's), put on top of the checkpoint's own config."""
    overrides = command_line_overrides() if overrides is None else list(overrides)
    state = meta = None
    if cfg.get("checkpoint") is not None and cfg.get("results") is None:
        state = Checkpointer.load(cfg.checkpoint)
        cfg, meta = with_run_config(cfg, state, overrides)
    cfg = validate_eval_config(cfg)
    output_dir = Path(output_dir)
    results = score_results(cfg) if cfg.results is not None else evaluate_checkpoint(cfg, output_dir, state, meta)
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
    hydra_cfg = HydraConfig.get()
    with exit_on_user_error():  # a mistake in the config or the inputs: one line, no traceback
        try:
            run(cfg, hydra_cfg.runtime.output_dir)
        except BaseException:
            if is_main_process():  # a failed evaluation leaves no empty run folder behind
                remove_empty_run_dir(hydra_cfg.runtime.output_dir, log_name=f"{hydra_cfg.job.name}.log")
            raise
        finally:
            cleanup()


if __name__ == "__main__":
    main()
