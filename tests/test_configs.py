"""Every option of every config group composes (train.yaml and eval.yaml) and passes validation."""

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate

from maskrcnn.engine.config import validate_eval_config, validate_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ("model", "roi_layer", "dataset", "solver", "experiment")


def options(group):
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"configs/{group}/ is empty"
    assert {"1x", "3x", "short", "demo"} <= set(options("solver"))
    assert {"ablation_voc", "ablation_coco", "ablation_synthetic", "demo"} <= set(options("experiment"))
    assert {"coco", "voc", "bccd", "synthetic"} <= set(options("dataset"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_train_config_composes_and_validates(group, option):
    # Box-only datasets train a box-only model (a mask model on them is a config error).
    box_only = group == "dataset" and compose_train([f"dataset={option}"]).dataset.train.with_masks is False
    cfg = compose_train([f"{group}={option}"] + (["model=faster_rcnn_r50_fpn"] if box_only else []))
    checked = validate_train_config(cfg)  # also resolves every interpolation
    if group != "experiment":  # validation keeps the group's keys (typed, data paths made absolute)
        assert set(checked[group]) == set(cfg[group])
    assert Path(checked.paths.data_root).is_absolute()
    if group == "roi_layer":
        assert instantiate(checked.roi_layer) is not None


@pytest.mark.parametrize("option", options("dataset"))
def test_eval_config_composes_for_every_dataset(option):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"dataset={option}", "checkpoint=model_final.pt"])
    assert validate_eval_config(cfg).dataset.name


@pytest.mark.parametrize("roi_layer", ["roi_pool", "roi_align", "roi_align_max", "roi_align_unaligned"])
@pytest.mark.parametrize("experiment", ["ablation_voc", "ablation_coco", "ablation_synthetic"])
def test_ablation_sweep_points_compose(experiment, roi_layer):
    # what `train.py -m experiment=E roi_layer=a,b,c,d` composes for each job: the command line's
    # roi_layer wins and the experiment's dataset/model/solver stay.
    cfg = validate_train_config(compose_train([f"experiment={experiment}", f"roi_layer={roi_layer}"]))
    assert cfg.roi_layer.name == roi_layer
    expected_dataset = {"ablation_voc": "voc", "ablation_coco": "coco", "ablation_synthetic": "synthetic"}[experiment]
    assert cfg.dataset.name == expected_dataset
    # both RoI heads of the model use the chosen layer
    pooler = cfg.model.roi_heads.box_pooler.roi_layer
    assert pooler.name == roi_layer


@pytest.mark.parametrize("option", options("dataset"))
def test_skip_corrupt_is_a_declared_training_key_of_every_dataset(option):
    # `dataset.train.skip_corrupt=true` works without Hydra's `+` and reaches the dataset class.
    cfg = validate_train_config(
        compose_train([f"dataset={option}", "dataset.train.skip_corrupt=true", "model=faster_rcnn_r50_fpn"])
    )
    assert cfg.dataset.train.skip_corrupt is True
    assert "skip_corrupt" in inspect.signature(get_class(cfg.dataset.train._target_)).parameters


def test_voc_ablation_trains_boxes_only():
    cfg = validate_train_config(compose_train(["experiment=ablation_voc"]))
    assert cfg.model.roi_heads.get("mask_predictor") is None and cfg.dataset.evaluator == "voc"


def test_solver_schedules_are_the_published_ones():
    one = compose_train(["solver=1x"]).solver
    three = compose_train(["solver=3x"]).solver
    assert (one.ims_per_batch, one.base_lr, one.max_iter, list(one.steps)) == (16, 0.02, 90000, [60000, 80000])
    assert (three.ims_per_batch, three.max_iter, list(three.steps)) == (16, 270000, [210000, 250000])


def test_demo_reads_the_dataset_that_make_demo_writes():
    # `make demo` generates SYNTHETIC_DIR with --scene simple, then trains experiment=demo: both must agree.
    makefile = (CONFIGS.parent / "Makefile").read_text()
    synthetic_dir = next(
        line.split(":=")[1].strip() for line in makefile.splitlines() if line.startswith("SYNTHETIC_DIR")
    )
    assert "--scene simple" in makefile
    cfg = validate_train_config(compose_train(["experiment=demo"]))
    assert cfg.dataset.name == "synthetic_simple"
    assert Path(cfg.dataset.root) == CONFIGS.parent / synthetic_dir
