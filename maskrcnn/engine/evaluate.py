"""Evaluating a checkpoint, or scoring a COCO-format results file: what ``tools/eval.py`` runs.

The model (and, unless the command line chooses ``dataset=``, the dataset) is rebuilt from the
config the checkpoint carries (or ``<run>/.hydra/config.yaml`` next to it), the command line's
overrides on top (:mod:`maskrcnn.engine.run_config`). Whatever ``split`` names, its images get
test-time preprocessing only (:mod:`maskrcnn.engine.eval_data`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from ..distributed import init_distributed, is_main_process
from ..evaluation import score_coco_results
from .config import ConfigError, validate_eval_config
from .eval_data import build_eval_dataset
from .inference import draw_dataset_predictions
from .launch import build_model_from_checkpoint, evaluate_dataset, load_checkpoint_config, overall_metrics
from .run_config import chosen_groups, command_line_overrides

logger = logging.getLogger("eval")


def score_results(cfg: DictConfig) -> dict:
    """COCOeval of ``cfg.results`` against the annotation file of the dataset split."""
    split_cfg = cfg.dataset[cfg.split]
    if "annotation_file" not in split_cfg:
        raise ConfigError(
            f"results=PATH scores COCO-format results against a COCO annotation file, but "
            f"dataset.{cfg.split} ({cfg.dataset.name}) has no annotation_file"
        )
    return score_coco_results(split_cfg.annotation_file, cfg.results, class_agnostic=cfg.class_agnostic)


def with_run_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, dict, dict]:
    """``cfg`` with the checkpoint's run config under the command line; also the run's evaluation
    batch size and autocast unless given. Returns (config, checkpoint state, meta)."""
    merged, state, run = load_checkpoint_config(cfg, overrides, dataset_from_meta=False)
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    trainer = run.config.get("trainer") if run.config is not None else None
    if trainer is not None:
        with open_dict(merged):
            for key, run_key in (("batch_size", "eval_batch_size"), ("amp", "amp")):
                if key not in given and run_key in trainer:
                    merged[key] = trainer[run_key]
    if run.config is not None and "dataset" not in run.config and "dataset" not in chosen_groups(overrides):
        logger.info("the checkpoint's config has no dataset: evaluating on dataset=%s", merged.dataset.get("name"))
    return merged, state, run.meta


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path, state: dict, meta: dict) -> dict:
    """The metrics of the checkpoint (loaded as ``state``) on ``cfg.dataset[cfg.split]``; drawn
    predictions of ``cfg.vis_images`` images into ``output_dir/predictions``."""
    device = init_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    dataset = build_eval_dataset(cfg.dataset[cfg.split], name=f"dataset.{cfg.split}")
    names = getattr(dataset, "class_names", None)
    if meta.get("class_names") and names is not None and list(names) != list(meta["class_names"]):
        logger.warning(
            "the checkpoint's classes %s differ from dataset %s's %s",
            meta["class_names"],
            cfg.dataset.name,
            list(names),
        )
    model = build_model_from_checkpoint(cfg, state, meta=meta, device=device)
    logger.info(
        "evaluating %s (iteration %s) on %s/%s (%d images)",
        cfg.checkpoint,
        state.get("iteration"),
        cfg.dataset.name,
        cfg.split,
        len(dataset),
    )
    results = evaluate_dataset(
        model,
        dataset,
        evaluator=cfg.dataset.evaluator,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        device=device,
        amp=cfg.amp.name,
        class_agnostic=cfg.class_agnostic,
    )
    n = min(cfg.vis_images, len(dataset))
    if is_main_process() and n > 0:
        draw_dataset_predictions(
            model,
            dataset,
            indices=range(n),
            device=device,
            out_dir=output_dir / "predictions",
            score_threshold=cfg.vis_score_threshold,
            amp=cfg.amp.name,
        )
        logger.info("prediction images: %s", output_dir / "predictions")
    return results


def run(cfg: DictConfig, output_dir: str | Path, overrides: Sequence[str] | None = None) -> dict:
    """Evaluate ``cfg.checkpoint`` or score ``cfg.results`` (a composed ``configs/eval.yaml``) and
    write ``metrics.json`` into ``output_dir``; ``overrides`` are the command line's (default: the
    running Hydra app's), put on top of the checkpoint's own config."""
    overrides = command_line_overrides() if overrides is None else list(overrides)
    state = meta = None
    if cfg.get("checkpoint") is not None and cfg.get("results") is None:
        cfg, state, meta = with_run_config(cfg, overrides)
    cfg = validate_eval_config(cfg)
    output_dir = Path(output_dir)
    results = score_results(cfg) if cfg.results is not None else evaluate_checkpoint(cfg, output_dir, state, meta)
    if is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        source = {"results": cfg.results} if cfg.results is not None else {"checkpoint": cfg.checkpoint}
        with open(output_dir / "metrics.json", "w") as f:
            json.dump({**source, "dataset": cfg.dataset.name, "split": cfg.split, **results}, f, indent=2)
        logger.info("metrics: %s", overall_metrics(results))
        logger.info("written to %s", output_dir / "metrics.json")
    return results
