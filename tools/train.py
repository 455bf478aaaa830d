#!/usr/bin/env python
"""Train a detector (Hydra app over configs/train.yaml).

    python tools/train.py model=mask_rcnn_r50_fpn dataset=coco roi_layer=roi_align solver=1x
    python tools/train.py experiment=demo                                  # the small CPU demo
    python tools/train.py -m experiment=ablation_voc roi_layer=roi_pool,roi_align,roi_align_max,roi_align_unaligned
    torchrun --nproc_per_node=8 tools/train.py ...                         # DistributedDataParallel
    python tools/train.py ... hydra.run.dir=outputs/run1 resume=true       # continue an interrupted run
    torchrun --nproc_per_node=8 --max-restarts=3 tools/train.py ...        # restarted workers resume by themselves

SIGTERM, SIGUSR1 or SIGUSR2 stop the run after the iteration in progress with a checkpoint; a
submitit job is requeued and resumes by itself, elsewhere the exit status is 75 (docs/cluster.md).

Checkpoints carry the run's config (``meta``), so tools/eval.py and tools/predict.py rebuild the model
as trained. A run that fails before writing anything removes its empty run directory.

The run directory (Hydra's) holds the checkpoints, metrics.jsonl, metrics.json (last evaluation),
tensorboard/ and predictions/. The run itself is maskrcnn.engine.training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from maskrcnn.engine.cluster import export_submitit_task_env, require_launcher
from maskrcnn.engine.launch import share_run_stamp, tool_run
from maskrcnn.engine.requeue import exit_after_stop
from maskrcnn.engine.run_dir import require_named_run
from maskrcnn.engine.stop_signals import TrainingStopped
from maskrcnn.engine.training import sweep_objective, train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    export_submitit_task_env()  # a multi-GPU job of hydra/launcher=slurm: torchrun's variables per task
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    with tool_run(output_dir, log_name=f"{hydra_cfg.job.name}.log"):
        require_named_run(
            resume=cfg.resume,
            hydra_overrides=hydra_cfg.overrides.hydra,
            multirun=hydra_cfg.mode == RunMode.MULTIRUN,
            output_dir=output_dir,
        )
        try:
            results = train(cfg, output_dir)
        except TrainingStopped as stopped:  # SIGTERM / SIGUSR1 / SIGUSR2, the checkpoint written
            exit_after_stop(stopped, run_dir=output_dir)
    return sweep_objective(results)  # what a Hydra sweeper would optimize


if __name__ == "__main__":
    # The process group outlives the jobs of a multirun (-m): init_distributed destroys it at exit.
    try:
        require_launcher(sys.argv[1:])
    except ImportError as missing:
        sys.exit(f"error: {missing}")
    share_run_stamp(sys.argv[1:])
    main()
