#!/usr/bin/env python
"""Train a detector (Hydra app over configs/train.yaml).

    python tools/train.py model=mask_rcnn_r50_fpn dataset=coco roi_layer=roi_align solver=1x
    python tools/train.py experiment=demo                                  # the small CPU demo
    python tools/train.py -m experiment=ablation_voc roi_layer=roi_pool,roi_align,roi_align_max,roi_align_unaligned
    torchrun --nproc_per_node=8 tools/train.py ...                         # DistributedDataParallel
    python tools/train.py ... hydra.run.dir=outputs/run1 resume=true       # continue an interrupted run
    torchrun --nproc_per_node=8 --max-restarts=3 tools/train.py ...        # restarted workers resume by themselves

Checkpoints carry the run's config (``meta``), so tools/eval.py and tools/predict.py rebuild the model
as trained. A run that fails before writing anything removes its empty run directory.

The run directory (Hydra's) holds the checkpoints, metrics.jsonl, metrics.json (last evaluation),
tensorboard/ and predictions/.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from maskrcnn.data import build_test_loader, build_train_loader
from maskrcnn.engine import (
    Checkpointer,
    MetricsLogger,
    Trainer,
    broadcast_object,
    build_lr_scheduler,
    build_optimizer,
    draw_dataset_predictions,
    get_rank,
    get_world_size,
    inference_on_dataset,
    init_distributed,
    is_main_process,
    unwrap,
    validate_train_config,
)
from maskrcnn.engine.cluster import export_submitit_task_env, require_launcher
from maskrcnn.distributed import cleanup, launched_by_torchrun
from maskrcnn.engine.elastic import restart_count, run_stamp
from maskrcnn.engine.eval_data import build_eval_dataset
from maskrcnn.engine.run_config import checkpoint_meta, hydra_choice
from maskrcnn.engine.run_dir import remove_empty_run_dir, require_named_run
from maskrcnn.engine.user_errors import exit_on_user_error
from maskrcnn.evaluation import build_evaluator
from maskrcnn.modeling.pretrained import initialize_detector

log = logging.getLogger("train")


def setup_process(cfg: DictConfig) -> torch.device:
    """Process group, logging of non-main ranks, seeds, determinism. Returns the device."""
    device = init_distributed(cfg.device)
    if not is_main_process():
        # One log for the run: the other ranks only report warnings, to the console.
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler):
                root.removeHandler(handler)
        root.setLevel(logging.WARNING)
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return device


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_evaluate_fn(cfg, model, val_set, device, output_dir: Path, metrics: MetricsLogger):
    """The periodic / final evaluation: COCO or VOC metrics, metrics.json, drawn predictions."""

    def evaluate(iteration: int) -> dict:
        evaluator = build_evaluator(val_set, cfg.dataset.evaluator)
        loader = build_test_loader(val_set, batch_size=cfg.trainer.eval_batch_size,
                                   num_workers=cfg.trainer.num_workers)
        start = time.perf_counter()
        results = inference_on_dataset(unwrap(model), loader, evaluator, device=device, amp=cfg.trainer.amp.name)
        if is_main_process():
            history = metrics.history
            summary = {
                "iteration": iteration,
                "time/iter": history["time/iter"].global_avg if "time/iter" in history else None,
                "time/eval": time.perf_counter() - start,
                **results,
            }
            with open(output_dir / "metrics.json", "w") as f:
                json.dump(summary, f, indent=2)
            if hasattr(evaluator, "per_category_table"):
                log.info("per-category AP at iteration %d:\n%s", iteration, evaluator.per_category_table())
            n = min(cfg.trainer.vis_images, len(val_set))
            if n > 0:
                out_dir = output_dir / "predictions" / f"iter_{iteration:07d}"
                drawn = draw_dataset_predictions(unwrap(model), val_set, indices=range(n), device=device,
                                                 out_dir=out_dir, score_threshold=cfg.trainer.vis_score_threshold,
                                                 amp=cfg.trainer.amp.name)
                for tag, image in drawn:
                    metrics.log_image(f"predictions/{tag}", image, iteration)
            shown = {k: round(v, 4) for k, v in results.items() if "-" not in k}  # overall, not per class
            log.info("evaluation at iteration %d: %s", iteration, shown)
        return broadcast_object(results)

    return evaluate


def build_trainer(cfg: DictConfig, output_dir: str | Path) -> Trainer:
    """Validate ``cfg`` and build the process group, data, model, solver and trainer writing into
    ``output_dir``; with ``resume=true`` the newest checkpoint there is loaded."""
    run_cfg = cfg  # as composed: what the checkpoints carry (relative paths stay relative)
    cfg = validate_train_config(cfg)
    output_dir = Path(output_dir)
    device = setup_process(cfg)
    world_size = get_world_size()
    if cfg.solver.ims_per_batch % world_size:
        raise ValueError(f"solver.ims_per_batch={cfg.solver.ims_per_batch} is not divisible by the "
                         f"{world_size} processes")
    seed_all(cfg.seed)  # same initial weights on every rank
    if is_main_process():
        log.info("output directory: %s", output_dir)
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))

    train_set = instantiate(cfg.dataset.train)
    val_set = build_eval_dataset(cfg.dataset.val, name="dataset.val")
    model = instantiate(cfg.model)
    initialize_detector(model, cfg.model.get("init"))  # model.init: the weights to fine-tune from
    model = model.to(device)
    s = cfg.solver
    optimizer = build_optimizer(model, base_lr=s.base_lr, momentum=s.momentum, nesterov=s.nesterov,
                                weight_decay=s.weight_decay, weight_decay_norm=s.weight_decay_norm,
                                weight_decay_bias=s.weight_decay_bias)
    scheduler = build_lr_scheduler(optimizer, max_iter=s.max_iter, name=s.scheduler.name, steps=list(s.steps),
                                   gamma=s.gamma, warmup_iters=s.warmup_iters, warmup_factor=s.warmup_factor,
                                   warmup_method=s.warmup_method.name, cosine_end_factor=s.cosine_end_factor)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.trainer.find_unused_parameters)
    train_loader = build_train_loader(train_set, batch_size=s.ims_per_batch // world_size,
                                      num_workers=cfg.trainer.num_workers, seed=cfg.seed,
                                      aspect_ratio_grouping=cfg.trainer.aspect_ratio_grouping)
    meta = checkpoint_meta(run_cfg, dataset=val_set, model_config=hydra_choice("model"))
    checkpointer = Checkpointer(directory=output_dir, keep_last=cfg.trainer.keep_last, meta=meta)
    metrics = MetricsLogger(directory=output_dir, enabled=is_main_process())
    trainer = Trainer(
        model=model, optimizer=optimizer, scheduler=scheduler, train_loader=train_loader, max_iter=s.max_iter,
        device=device, checkpointer=checkpointer, metrics=metrics, amp=cfg.trainer.amp.name,
        clip_grad_norm=cfg.trainer.clip_grad_norm, nonfinite=cfg.trainer.nonfinite.name,
        log_period=cfg.trainer.log_period, checkpoint_period=s.checkpoint_period, eval_period=s.eval_period,
        evaluate_fn=make_evaluate_fn(cfg, model, val_set, device, output_dir, metrics),
    )
    # Seeds differ per rank from here on (RPN / RoI sampling draws), identical for a given rank.
    seed_all(cfg.seed + 1000 * get_rank())
    restarts = restart_count()  # > 0: torchrun --max-restarts restarted the workers; continue the run
    if cfg.resume or restarts:
        latest = broadcast_object(checkpointer.latest())
        if latest is None:
            log.warning("%s %s holds no checkpoint: training from scratch",
                        f"elastic restart {restarts}:" if restarts else "resume=true but", output_dir)
        else:
            log.info("%sresuming from %s", f"elastic restart {restarts}: " if restarts else "", latest)
            trainer.load_state_dict(Checkpointer.load(latest))
    return trainer


def train(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Train (and evaluate) into ``output_dir``; returns the final evaluation metrics."""
    trainer = build_trainer(cfg, output_dir)
    try:
        results = trainer.train()
    finally:
        trainer.metrics.close()
    if is_main_process():
        report(Path(output_dir), results)
    return results


def report(output_dir: Path, results: dict) -> None:
    names = [("bbox/AP", "box AP"), ("bbox/AP50", "box AP50"), ("segm/AP", "mask AP"), ("segm/AP50", "mask AP50"),
             ("voc/mAP50_07", "VOC07 mAP50"), ("voc/mAP50", "VOC mAP50")]
    shown = ", ".join(f"{label} {results[key]:.3f}" for key, label in names if key in results)
    predictions = sorted((output_dir / "predictions").glob("iter_*"))
    log.info("final evaluation: %s", shown or results)
    log.info("metrics: %s", output_dir / "metrics.json")
    log.info("TensorBoard: tensorboard --logdir %s", output_dir / "tensorboard")
    if predictions:
        log.info("prediction images: %s", predictions[-1])


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    export_submitit_task_env()  # a multi-GPU job of hydra/launcher=slurm: torchrun's variables per task
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    with exit_on_user_error():  # a mistake in the config or the data: one line, no traceback
        try:
            require_named_run(resume=cfg.resume, hydra_overrides=hydra_cfg.overrides.hydra,
                              multirun=hydra_cfg.mode == RunMode.MULTIRUN, output_dir=output_dir)
            results = train(cfg, output_dir)
        except BaseException:
            # A run that failed before writing anything leaves no empty folder behind.
            if is_main_process():
                remove_empty_run_dir(output_dir, log_name=f"{hydra_cfg.job.name}.log")
            raise
    # The return value is what a Hydra sweeper would optimize.
    return results.get("segm/AP", results.get("bbox/AP", results.get("voc/mAP50"))) if results else None


def share_run_stamp() -> None:
    """Under torchrun, make all ranks use rank 0's run directory name (MASKRCNN_RUN_STAMP): when
    the torchrun agent started, so that workers it restarts (--max-restarts) find the same one."""
    if not launched_by_torchrun() or "MASKRCNN_RUN_STAMP" in os.environ:
        return
    device = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("device=")), "auto")
    init_distributed(device)
    os.environ["MASKRCNN_RUN_STAMP"] = broadcast_object(run_stamp())


if __name__ == "__main__":
    # The process group outlives the jobs of a multirun (-m): it is destroyed at exit.
    atexit.register(cleanup)
    try:
        require_launcher(sys.argv[1:])
    except ImportError as missing:
        sys.exit(f"error: {missing}")
    share_run_stamp()
    main()
