#!/usr/bin/env python
"""Run a checkpoint on image files and write COCO-format results (and optionally drawings).

    python tools/predict.py checkpoint=outputs/<run>/model_final.pt inputs=[a.jpg,b.jpg] output=results.json
    python tools/predict.py checkpoint=outputs/<run>/model_final.pt inputs=datasets/coco/val2017 dataset=coco
    python tools/predict.py model=mask_rcnn_r18_fpn_small checkpoint=OLD.pt inputs=[a.jpg]  # no config inside

The model is rebuilt from the config the checkpoint carries (or ``<run>/.hydra/config.yaml`` next to
it), command-line overrides on top; classes and category ids come from the checkpoint. An input
that is an image of the dataset's ``split`` gets that image's id, so ``tools/eval.py results=`` scores
the output. See configs/predict.yaml for every option. Relative input paths are relative to the
working directory. The work is maskrcnn.engine.predict.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from maskrcnn.engine.launch import tool_run
from maskrcnn.engine.predict import predict


@hydra.main(config_path="../configs", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    with tool_run(hydra_cfg.runtime.output_dir, log_name=f"{hydra_cfg.job.name}.log"):
        predict(cfg)


if __name__ == "__main__":
    main()
