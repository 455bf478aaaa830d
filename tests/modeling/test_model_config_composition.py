"""The model configs composed from configs/model/base/ (defaults lists) are the models of before.

``model_configs_before.json`` holds every model config as the self-contained files of before gave it
(resolved with ``roi_layer=roi_align`` and 3 classes). Since then three things changed on purpose,
and :func:`maskrcnn.engine.run_config.upgrade_legacy_config` (which reads older runs' checkpoints)
applies exactly those: the RoI-head class is named (``Res5RoIHeads`` / ``StandardRoIHeads``
instead of one class told ``mask_pooler: null``), the mask targets' backend is an argument, and
adaptive sampling is spelled -1. Nothing else may differ, not even the order in which Hydra
instantiates the modules (it decides which random numbers initialise which weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modeling_helpers import CONFIGS, compose_model_cfg
from omegaconf import OmegaConf

from maskrcnn.engine.run_config import upgrade_legacy_config

BEFORE = json.loads((Path(__file__).resolve().parent / "model_configs_before.json").read_text())


def _target_order(node, path="") -> list[str]:
    """Paths of the ``_target_`` nodes in the order Hydra instantiates them (children first)."""
    order = []
    if isinstance(node, dict):
        for key, value in node.items():
            order += _target_order(value, f"{path}.{key}")
        if "_target_" in node:
            order.append(path)
    return order


# Models added after the snapshot was taken: they have no "before" to equal.
ADDED_SINCE = {"mask_rcnn_r18_c5_small", "mask_rcnn_r50_c5"}


def test_every_model_config_is_in_the_snapshot():
    assert sorted(BEFORE) == sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml") if p.stem not in ADDED_SINCE)


@pytest.mark.parametrize("model", sorted(BEFORE))
def test_composed_config_equals_the_config_of_before(model):
    cfg = compose_model_cfg(model, "roi_align", num_classes=3)
    now = OmegaConf.to_container(cfg.model, resolve=True)
    before = OmegaConf.create({"model": BEFORE[model]})
    before = OmegaConf.to_container(upgrade_legacy_config(before).model, resolve=True)
    assert now == before
    assert _target_order(now) == _target_order(BEFORE[model])


def test_upgrade_changes_what_it_says():
    before = OmegaConf.create({"model": BEFORE["mask_rcnn_r18_c4_small"]})
    heads = upgrade_legacy_config(before).model.roi_heads
    assert heads._target_ == "maskrcnn.modeling.Res5RoIHeads"
    assert "mask_pooler" not in heads and "mask_head" not in heads
    assert heads.box_pooler.roi_layer.sampling_ratio == -1
    assert heads.mask_target_backend == heads.box_pooler.roi_layer.backend == "ours"
