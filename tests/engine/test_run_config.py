"""maskrcnn.engine.run_config: a checkpoint's config under the command line, and clear mismatches."""

import pytest
import torch
from omegaconf import OmegaConf

from maskrcnn.engine import ConfigError
from maskrcnn.engine.run_config import RunConfig, apply_run_config, load_model_weights, load_run_config


def tool_cfg():
    """What a tool composes by default: another model, another RoI layer, another dataset."""
    cfg = OmegaConf.create(
        {
            "model": {
                "_target_": "Default",
                "size": 800,
                "pool": "${roi_layer}",
                "num_classes": "${dataset.num_classes}",
            },
            "roi_layer": {"name": "roi_align", "sampling_ratio": 0},
            "dataset": {"name": "coco", "num_classes": 80},
            "paths": {"data_root": "datasets"},
            "split": "val",
        }
    )
    OmegaConf.set_struct(cfg, True)
    return cfg


def run_cfg():
    return RunConfig(
        OmegaConf.create(
            {
                "model": {
                    "_target_": "Trained",
                    "size": 64,
                    "extra": 1,
                    "pool": "${roi_layer}",
                    "num_classes": "${dataset.num_classes}",
                },
                "roi_layer": {"name": "roi_pool", "sampling_ratio": 2},
                "dataset": {"name": "tiny", "num_classes": 3},
                "paths": {"data_root": "/data"},
                "solver": {"base_lr": 0.1},
            }
        ),
        {"model_config": "small", "dataset": "tiny", "num_classes": 3},
        "the checkpoint x.pt",
    )


def test_run_config_under_the_command_line():
    overrides = ["model.size=96", "+model.new=2", "~model.extra", "split=train", "paths.data_root=/elsewhere"]
    cfg = apply_run_config(tool_cfg(), run_cfg(), overrides, checkpoint="x.pt", dataset_from_meta=False)
    assert cfg.model._target_ == "Trained" and cfg.model.size == 96 and cfg.model.new == 2 and "extra" not in cfg.model
    assert cfg.model.pool.name == "roi_pool" and cfg.model.num_classes == 3 and cfg.dataset.name == "tiny"
    assert cfg.paths.data_root == "/elsewhere" and "solver" not in cfg
    # A chosen group replaces the run's; the model's interpolation follows it.
    cfg = apply_run_config(tool_cfg(), run_cfg(), ["roi_layer=roi_align"], checkpoint="x.pt", dataset_from_meta=False)
    assert cfg.model.pool.name == "roi_align" and cfg.model._target_ == "Trained"


def test_mismatches_name_both_values_and_the_fix():
    with pytest.raises(ConfigError, match="trained with model=small.*model=big: drop model=big"):
        apply_run_config(tool_cfg(), run_cfg(), ["model=big"], checkpoint="x.pt", dataset_from_meta=False)
    with pytest.raises(
        ConfigError, match="num_classes=3.*dataset.num_classes=80 \\(dataset coco\\).*add dataset.num_classes=3"
    ):
        apply_run_config(tool_cfg(), run_cfg(), ["dataset=coco"], checkpoint="x.pt", dataset_from_meta=False)


def test_converted_and_older_checkpoints():
    # Older converted checkpoints: meta "config" is the model config's name, num_classes known.
    run = load_run_config("nowhere/x.pt", {"model": {}, "meta": {"config": "tv_model", "num_classes": 90}})
    assert run.config is None and run.meta["model_config"] == "tv_model"
    cfg = apply_run_config(tool_cfg(), run, [], checkpoint="x.pt", dataset_from_meta=True)
    assert cfg.dataset.num_classes == 90 and cfg.model._target_ == "Default"  # prediction: classes from meta
    with pytest.raises(ConfigError, match="num_classes=90"):
        apply_run_config(tool_cfg(), run, [], checkpoint="x.pt", dataset_from_meta=False)  # evaluation
    # No meta at all: the command line alone, as before.
    run = load_run_config("nowhere/x.pt", {"model": {}})
    assert (
        run.config is None
        and apply_run_config(tool_cfg(), run, [], checkpoint="x.pt", dataset_from_meta=True).dataset.num_classes == 80
    )


def test_weights_that_do_not_fit_are_one_clear_error():
    model = torch.nn.ModuleDict(
        {"roi_heads": torch.nn.ModuleDict({"box_predictor": torch.nn.ModuleDict({"cls_score": torch.nn.Linear(4, 4)})})}
    )
    state = {
        "model": {
            "roi_heads.box_predictor.cls_score.weight": torch.zeros(91, 4),
            "roi_heads.box_predictor.cls_score.bias": torch.zeros(91),
        }
    }
    with pytest.raises(
        ConfigError,
        match=r"size mismatch for roi_heads.box_predictor.cls_score.weight: checkpoint "
        r"\(91, 4\), model \(4, 4\).*made for model=tv.*add dataset.num_classes=90",
    ):
        load_model_weights(model, state, checkpoint="x.pt", meta={"model_config": "tv"})
    good = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    load_model_weights(model, {"model": good}, checkpoint="x.pt")
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, torch.ones(4, 4))


def test_checkpoint_weights_replace_the_initialization():
    from maskrcnn.engine.run_config import without_initial_weights

    cfg = OmegaConf.create(
        {
            "model": {
                "init": "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
                "backbone": {"weights": "IMAGENET1K_V1", "depth": 50},
            }
        }
    )
    OmegaConf.set_struct(cfg, True)
    out = without_initial_weights(cfg)
    assert out.model.init is None and out.model.backbone.weights is None and out.model.backbone.depth == 50
    assert cfg.model.init == "MaskRCNN_ResNet50_FPN_Weights.COCO_V1"  # the given config is left as it was
