"""Check a dataset before training on it: counts, clean-up reasons, class and size histograms.

    python tools/check_dataset.py dataset=bccd dataset.bccd_root=../shared/data/bccd/BCCD split=val
    python tools/check_dataset.py dataset=coco paths.data_root=/data check_images=false

Prints the number of images and objects, what the loader dropped, repaired or skipped (by reason),
the class histogram and the object-size histogram (COCO's small < 32^2 <= medium < 96^2 <= large,
by the annotation's area for COCO files and the box area for VOC files). Exits with status 1 when
an image cannot be read. The report is maskrcnn.data.check; configs/check_dataset.yaml is
validated (a misspelled key or a wrong type: one error line).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from maskrcnn.data.check import check_split
from maskrcnn.engine.tool_configs import validate_check_dataset_config
from maskrcnn.engine.user_errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="../configs", config_name="check_dataset")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():  # a mistake in the config or the data: one line, no traceback
        cfg = validate_check_dataset_config(cfg)  # relative data paths: relative to the repository root
        print(f"== {cfg.dataset.name} / {cfg.split}")
        text, n_bad = check_split(cfg.dataset[cfg.split], check_images=cfg.check_images, max_listed=cfg.max_listed)
    print(text)
    if n_bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
