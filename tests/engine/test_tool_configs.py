"""configs/predict.yaml and configs/check_dataset.yaml are validated as the train and eval configs
are: a misspelled key or a wrong type stops the tool with one line naming the key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from maskrcnn.engine.config import REPO_ROOT, ConfigError
from maskrcnn.engine.tool_configs import validate_check_dataset_config, validate_predict_config

CONFIGS = REPO_ROOT / "configs"
PREDICT = ["checkpoint=model.pt", "inputs=[a.jpg]"]


def compose_cfg(name, overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([*PREDICT, "+score_treshold=0.3"], r"invalid config key 'score_treshold'.*not in 'PredictConfig'"),
        ([*PREDICT, "score_threshold=high"], r"'score_threshold'.*could not be converted to Float"),
        ([*PREDICT, "visualize=maybe"], r"'visualize'"),
        ([*PREDICT, "+paths.data_rot=/x"], r"'paths\.data_rot'"),
        ([*PREDICT, "mask_threshold=1.5"], r"invalid config value mask_threshold: must be in \[0, 1\], got 1\.5"),
        (["checkpoint=model.pt"], r"invalid config key 'inputs': Missing mandatory value"),
        (["inputs=[a.jpg]"], r"invalid config key 'checkpoint': Missing mandatory value"),
        ([*PREDICT[:1], "inputs=3"], r"inputs: must be an image file or folder"),
    ],
)
def test_bad_predict_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_predict_config(compose_cfg("predict", overrides))


def test_good_predict_config_is_typed():
    cfg = validate_predict_config(compose_cfg("predict", [*PREDICT, "score_threshold=0.25", "visualize=true"]))
    assert cfg.score_threshold == 0.25 and cfg.visualize is True and list(cfg.inputs) == ["a.jpg"]
    assert cfg.model._target_  # the groups pass through (the checkpoint's run config replaces them)


@pytest.mark.parametrize(
    "override, message",
    [
        ("+check_imags=false", r"invalid config key 'check_imags'.*not in 'CheckDatasetConfig'"),
        ("max_listed=many", r"'max_listed'.*could not be converted to Integer"),
        ("check_images=perhaps", r"'check_images'"),
        ("max_listed=-1", r"invalid config value max_listed: must be >= 0"),
        ("split=test2", r"invalid config value split: dataset 'synthetic' has no split 'test2'"),
    ],
)
def test_bad_check_dataset_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_check_dataset_config(compose_cfg("check_dataset", [override]))


def test_good_check_dataset_config_resolves_data_paths_against_the_repository():
    cfg = validate_check_dataset_config(compose_cfg("check_dataset", ["split=val", "check_images=false"]))
    assert cfg.split == "val" and cfg.check_images is False
    assert Path(cfg.paths.data_root) == REPO_ROOT / "datasets"


@pytest.mark.parametrize(
    "tool, args, expected",
    [
        (
            "predict.py",
            [*PREDICT, "+score_treshold=0.3", "hydra.run.dir=run"],
            "error: invalid config key 'score_treshold'",
        ),
        ("check_dataset.py", ["+check_imags=false"], "error: invalid config key 'check_imags'"),  # writes no run folder
    ],
)
def test_the_tools_print_one_error_line(tmp_path, tool, args, expected):
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / tool), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    (line,) = [line for line in output.splitlines() if line.startswith("error: ")]
    assert line.startswith(expected), output
    assert "Traceback" not in output, output
    assert list(tmp_path.iterdir()) == []  # a failed run leaves no empty folder


def test_checked_predict_config_takes_the_checkpoint_run_config():
    """The run's ``paths`` (with keys of its own) and ``dataset`` replace the tool's after the check."""
    from omegaconf import OmegaConf, open_dict

    cfg = validate_predict_config(compose_cfg("predict", [*PREDICT, "score_threshold=0.5"]))
    with open_dict(cfg):
        cfg.paths = OmegaConf.create({"data_root": "/data", "cache": "/tmp/x"})
    assert cfg.paths.cache == "/tmp/x" and cfg.score_threshold == 0.5
    assert "${paths.data_root}" in OmegaConf.to_yaml(cfg.dataset)  # interpolations kept until resolved
