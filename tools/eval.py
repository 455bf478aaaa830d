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
predictions/ for a checkpoint) into the Hydra run directory. The work is maskrcnn.engine.evaluate.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from maskrcnn.distributed import cleanup
from maskrcnn.engine.evaluate import run
from maskrcnn.engine.launch import tool_run


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        with tool_run(hydra_cfg.runtime.output_dir, log_name=f"{hydra_cfg.job.name}.log"):
            run(cfg, hydra_cfg.runtime.output_dir)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
