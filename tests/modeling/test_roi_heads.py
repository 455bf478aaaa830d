"""The two RoI-head designs are named, not inferred: wrong combinations fail at construction,
and an older run's config (one class, ``mask_pooler: null``) rebuilds the same model."""

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from modeling_helpers import build_model
from omegaconf import OmegaConf

from maskrcnn.engine.run_config import upgrade_legacy_config
from maskrcnn.modeling import (
    FastRCNNPredictor,
    MaskPredictor,
    MultiLevelRoIPooler,
    Res5RoIHeads,
    RoILayerSpec,
    StandardRoIHeads,
    TwoMLPHead,
)

BEFORE = json.loads((Path(__file__).resolve().parent / "model_configs_before.json").read_text())


def _box_parts():
    pooler = MultiLevelRoIPooler(output_size=7, in_features=["p2"], strides=[4], roi_layer=RoILayerSpec())
    return dict(
        box_pooler=pooler,
        box_head=TwoMLPHead(in_channels=8, resolution=7, representation_size=16),
        box_predictor=FastRCNNPredictor(in_channels=16, num_classes=2),
    )


def test_standard_heads_need_a_mask_pooler_for_masks():
    with pytest.raises(ValueError, match="mask_pooler and mask_predictor.*Res5RoIHeads"):
        StandardRoIHeads(**_box_parts(), mask_predictor=MaskPredictor(in_channels=8, dim_reduced=8, num_classes=2))
    assert not StandardRoIHeads(**_box_parts()).mask_on


def test_res5_heads_need_a_res5_box_head():
    with pytest.raises(ValueError, match="box_head must be a Res5Head.*StandardRoIHeads"):
        Res5RoIHeads(**_box_parts())


def test_bad_mask_target_backend():
    with pytest.raises(ValueError, match="mask_target_backend"):
        StandardRoIHeads(**_box_parts(), mask_target_backend="detectron2")


@pytest.mark.parametrize(
    "model, heads",
    [
        ("mask_rcnn_r18_c4_small", Res5RoIHeads),
        ("faster_rcnn_r18_c4_small", Res5RoIHeads),
        ("mask_rcnn_r18_fpn_small", StandardRoIHeads),
    ],
)
def test_an_older_runs_config_builds_the_same_model(model, heads):
    legacy = OmegaConf.create({"model": BEFORE[model]})
    assert legacy.model.roi_heads._target_ == "maskrcnn.modeling.RoIHeads"
    old = instantiate(upgrade_legacy_config(legacy).model)
    new = build_model(model, "roi_align")
    assert type(old.roi_heads) is type(new.roi_heads) is heads
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}
    assert old.roi_heads.mask_target_backend == new.roi_heads.mask_target_backend
