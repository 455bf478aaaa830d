"""Start-up validation: misspelled keys, wrong types and bad values stop the run naming the key."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from maskrcnn.engine.config import REPO_ROOT, ConfigError, validate_eval_config, validate_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_cfg(name, overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.parametrize(
    "override, message",
    [
        ("+solver.base_lrr=0.1", r"solver\.base_lrr.*not in 'SolverConfig'"),
        ("+trainer.ampp=bf16", r"trainer\.ampp"),
        ("+seeed=3", r"'seeed'"),
        ("solver.max_iter=abc", r"solver\.max_iter.*could not be converted to Integer"),
        ("solver.base_lr=fast", r"solver\.base_lr.*Float"),
        ("trainer.amp=fp8", r"trainer\.amp.*expected one of \[none, bf16, fp16\]"),
        ("trainer.nonfinite=ignore", r"trainer\.nonfinite"),
        ("solver.scheduler=poly", r"solver\.scheduler"),
        ("resume=maybe", r"'resume'"),
        ("solver.base_lr=-1", r"solver\.base_lr: must be > 0"),
        ("solver.steps=[500,100]", r"solver\.steps"),
        ("solver.max_iter=0", r"solver\.max_iter"),
        ("solver.warmup_iters=5000", r"solver\.warmup_iters: 5000 is longer than solver\.max_iter=1000"),
        ("dataset.evaluator=lvis", r"dataset\.evaluator"),
        ("dataset.num_classes=0", r"dataset\.num_classes"),
        ("paths.data_root=${nowhere}", r"Interpolation key 'nowhere' not found"),
    ],
)
def test_bad_train_config_names_the_key(override, message):
    cfg = compose_cfg("train", ["experiment=demo", override])
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


def test_good_config_is_typed_and_data_root_is_repo_relative():
    cfg = validate_train_config(
        compose_cfg("train", ["experiment=demo", "solver.max_iter=7", "solver.warmup_iters=7", "trainer.amp=bf16"])
    )
    assert cfg.solver.max_iter == 7 and cfg.trainer.amp.name == "bf16"
    assert Path(cfg.paths.data_root) == REPO_ROOT / "datasets"
    absolute = validate_train_config(compose_cfg("train", ["experiment=demo", "paths.data_root=/data/x"]))
    assert absolute.paths.data_root == "/data/x"


def test_eval_config_needs_exactly_one_of_checkpoint_or_results():
    with pytest.raises(ConfigError, match="exactly one of checkpoint"):
        validate_eval_config(compose_cfg("eval", ["dataset=synthetic"]))
    with pytest.raises(ConfigError, match="exactly one of checkpoint"):
        validate_eval_config(compose_cfg("eval", ["dataset=synthetic", "checkpoint=a.pt", "results=b.json"]))
    with pytest.raises(ConfigError, match="split"):
        validate_eval_config(compose_cfg("eval", ["dataset=synthetic", "checkpoint=a.pt", "split=test2"]))
    with pytest.raises(ConfigError, match="batch_size"):
        validate_eval_config(compose_cfg("eval", ["dataset=synthetic", "results=b.json", "batch_size=0"]))


def test_relative_dataset_roots_are_repo_relative_like_data_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root: a cwd-relative path would land here
    shared = "../shared/data/bccd/BCCD"
    cfg = validate_train_config(
        compose_cfg("train", ["dataset=bccd", "model=faster_rcnn_r18_fpn_small", f"dataset.bccd_root={shared}"])
    )
    assert cfg.dataset.train.sets[0].root == str(REPO_ROOT / shared)
    assert cfg.dataset.val.sets[0].root == str(REPO_ROOT / shared)
    voc = validate_train_config(
        compose_cfg(
            "train",
            [
                "dataset=voc",
                "model=faster_rcnn_r50_c4",
                "dataset.root=data/VOCdevkit",
                "dataset.train.sets=[{root: mine/VOC2012, split: train}]",
            ],
        )
    )
    assert voc.dataset.val.sets[0].root == str(REPO_ROOT / "data/VOCdevkit/VOC2007")
    assert voc.dataset.train.sets[0].root == str(REPO_ROOT / "mine/VOC2012")
    coco = validate_eval_config(
        compose_cfg(
            "eval",
            [
                "dataset=coco",
                "checkpoint=m.pt",
                "dataset.val.image_dir=imgs",
                "dataset.val.annotation_file=/abs/a.json",
            ],
        )
    )
    assert coco.dataset.val.image_dir == str(REPO_ROOT / "imgs")
    assert coco.dataset.val.annotation_file == "/abs/a.json"
    assert coco.dataset.train.image_dir == str(REPO_ROOT / "datasets/coco/train2017")  # via paths.data_root


def test_mask_model_on_box_only_dataset_stops_naming_the_box_only_configs():
    with pytest.raises(ConfigError, match=r"dataset bccd trains without masks.*model=faster_rcnn_r18_fpn_small"):
        validate_train_config(compose_cfg("train", ["dataset=bccd", "model=mask_rcnn_r18_fpn_small"]))
    with pytest.raises(ConfigError, match="mask branch"):
        validate_train_config(
            compose_cfg(
                "train", ["dataset=synthetic_voc", "dataset.train.with_masks=false", "model=mask_rcnn_r18_c4_small"]
            )
        )
    for model in ("faster_rcnn_r18_fpn_small", "faster_rcnn_r18_c4_small"):
        assert validate_train_config(compose_cfg("train", ["dataset=bccd", f"model={model}"])).dataset.name == "bccd"
