"""A training run from a composed train config (``configs/train.yaml``): what ``tools/train.py`` runs.

:func:`build_trainer` validates the config and builds the process group, data, model, solver,
checkpointer and trainer; :func:`train` runs it and reports. Checkpoints carry the run's config
(``meta``, see :mod:`maskrcnn.engine.run_config`), so evaluation and prediction rebuild the model
as trained. Under ``torchrun --max-restarts`` a restarted worker continues from the newest
readable checkpoint of the run directory (:mod:`maskrcnn.elastic`), and so does a requeued SLURM
or submitit job (:mod:`maskrcnn.engine.requeue`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..data import build_train_loader
from ..distributed import broadcast_object, get_rank, get_world_size, is_main_process
from ..elastic import restart_count
from ..modeling.pretrained import initialize_detector
from .checkpoint import Checkpointer
from .config import validate_train_config
from .eval_data import build_eval_dataset
from .inference import draw_dataset_predictions
from .launch import evaluate_dataset, overall_metrics, seed_all, setup_process
from .metrics import MetricsLogger
from .requeue import requeued_checkpoint, scheduler_job, slurm_restart_count
from .run_config import checkpoint_meta, hydra_choice
from .solver import lr_scheduler_from_config, optimizer_from_config
from .split_overlap import check_split_overlap
from .trainer import Trainer, unwrap

logger = logging.getLogger("train")


def make_evaluate_fn(cfg: DictConfig, model, val_set, device: torch.device, output_dir: Path, metrics: MetricsLogger):
    """The periodic / final evaluation: COCO or VOC metrics, metrics.json, drawn predictions."""

    def evaluate(iteration: int) -> dict:
        start = time.perf_counter()
        results = evaluate_dataset(
            unwrap(model),
            val_set,
            evaluator=cfg.dataset.evaluator,
            batch_size=cfg.trainer.eval_batch_size,
            num_workers=cfg.trainer.num_workers,
            device=device,
            amp=cfg.trainer.amp.name,
        )
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
            n = min(cfg.trainer.vis_images, len(val_set))
            if n > 0:
                out_dir = output_dir / "predictions" / f"iter_{iteration:07d}"
                drawn = draw_dataset_predictions(
                    unwrap(model),
                    val_set,
                    indices=range(n),
                    device=device,
                    out_dir=out_dir,
                    score_threshold=cfg.trainer.vis_score_threshold,
                    amp=cfg.trainer.amp.name,
                )
                for tag, image in drawn:
                    metrics.log_image(f"predictions/{tag}", image, iteration)
            logger.info("evaluation at iteration %d: %s", iteration, overall_metrics(results))
        return results

    return evaluate


def build_trainer(cfg: DictConfig, output_dir: str | Path) -> Trainer:
    """Validate ``cfg`` and build the process group, data, model, solver and trainer writing into
    ``output_dir``; with ``resume=true`` (or after an elastic restart) the newest checkpoint there
    is loaded."""
    run_cfg = cfg  # as composed: what the checkpoints carry (relative paths stay relative)
    cfg = validate_train_config(cfg)
    output_dir = Path(output_dir)
    device = setup_process(device=cfg.device, deterministic=cfg.trainer.deterministic)
    world_size = get_world_size()
    if cfg.solver.ims_per_batch % world_size:
        raise ValueError(
            f"solver.ims_per_batch={cfg.solver.ims_per_batch} is not divisible by the {world_size} processes"
        )
    seed_all(cfg.seed)  # same initial weights on every rank
    if is_main_process():
        logger.info("output directory: %s", output_dir)
        logger.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))

    train_set = instantiate(cfg.dataset.train)
    val_set = build_eval_dataset(cfg.dataset.val, name="dataset.val")
    check_split_overlap(train_set, val_set, allowed=cfg.trainer.allow_split_overlap)
    model = instantiate(cfg.model)
    initialize_detector(model, cfg.model.get("init"))  # model.init: the weights to fine-tune from
    model = model.to(device)
    s = cfg.solver
    optimizer = optimizer_from_config(model, s)
    scheduler = lr_scheduler_from_config(optimizer, s)
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.trainer.find_unused_parameters,
        )
    train_loader = build_train_loader(
        train_set,
        batch_size=s.ims_per_batch // world_size,
        num_workers=cfg.trainer.num_workers,
        seed=cfg.seed,
        aspect_ratio_grouping=cfg.trainer.aspect_ratio_grouping,
    )
    meta = checkpoint_meta(run_cfg, dataset=val_set, model_config=hydra_choice("model"))
    meta["job"] = scheduler_job()  # a requeue of this job resumes from its own checkpoints only
    checkpointer = Checkpointer(directory=output_dir, keep_last=cfg.trainer.keep_last, meta=meta)
    metrics = MetricsLogger(directory=output_dir, enabled=is_main_process())
    trainer = Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        max_iter=s.max_iter,
        device=device,
        checkpointer=checkpointer,
        metrics=metrics,
        amp=cfg.trainer.amp.name,
        clip_grad_norm=cfg.trainer.clip_grad_norm,
        nonfinite=cfg.trainer.nonfinite.name,
        log_period=cfg.trainer.log_period,
        checkpoint_period=s.checkpoint_period,
        eval_period=s.eval_period,
        evaluate_fn=make_evaluate_fn(cfg, model, val_set, device, output_dir, metrics),
    )
    # Seeds differ per rank from here on (RPN / RoI sampling draws), identical for a given rank.
    seed_all(cfg.seed + 1000 * get_rank())
    latest, reason = resume_point(cfg, checkpointer, output_dir)
    if latest is not None:
        logger.info("%sresuming from %s", reason, latest)
        trainer.load_state_dict(Checkpointer.load(latest))
    return trainer


def resume_point(cfg: DictConfig, checkpointer: Checkpointer, output_dir: Path) -> tuple[Path | None, str]:
    """The checkpoint this run continues from (None: it starts from scratch) and the log's reason:
    ``resume=true``, an elastic restart (torchrun ``--max-restarts``: the same run directory), or
    a requeued scheduler job (its own checkpoints in its run folder, see
    :mod:`maskrcnn.engine.requeue`). Decided by rank 0, the same on every rank."""
    restarts = restart_count()  # > 0: torchrun --max-restarts restarted the workers; continue the run
    if cfg.resume or restarts:
        latest = broadcast_object(checkpointer.latest())
        if latest is None:
            logger.warning(
                "%s %s holds no checkpoint: training from scratch",
                f"elastic restart {restarts}:" if restarts else "resume=true but",
                output_dir,
            )
        return latest, f"elastic restart {restarts}: " if restarts else ""
    job = scheduler_job()
    if job is None:
        return None, ""
    latest = broadcast_object(requeued_checkpoint(checkpointer, job))
    restarts = slurm_restart_count()
    if restarts and latest is None:
        logger.warning(
            "requeued job %s (SLURM restart %d): %s holds none of its checkpoints", job, restarts, output_dir
        )
    return latest, f"requeued job {job}{f' (SLURM restart {restarts})' if restarts else ''}: "


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
    """The final metrics and where the run's files are, to the log."""
    names = [
        ("bbox/AP", "box AP"),
        ("bbox/AP50", "box AP50"),
        ("segm/AP", "mask AP"),
        ("segm/AP50", "mask AP50"),
        ("voc/mAP50_07", "VOC07 mAP50"),
        ("voc/mAP50", "VOC mAP50"),
    ]
    shown = ", ".join(f"{label} {results[key]:.3f}" for key, label in names if key in results)
    predictions = sorted((output_dir / "predictions").glob("iter_*"))
    logger.info("final evaluation: %s", shown or results)
    logger.info("metrics: %s", output_dir / "metrics.json")
    logger.info("TensorBoard: tensorboard --logdir %s", output_dir / "tensorboard")
    if predictions:
        logger.info("prediction images: %s", predictions[-1])


def sweep_objective(results: dict) -> float | None:
    """What a Hydra sweeper optimizes: mask AP, else box AP, else VOC mAP50."""
    return results.get("segm/AP", results.get("bbox/AP", results.get("voc/mAP50"))) if results else None
