"""Each engine setting has one source: values in the YAML files, words in maskrcnn/engine/choices.py,
range checks in the solver."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from maskrcnn.engine.choices import Amp, NonFinite, Schedule, WarmupMethod
from maskrcnn.engine.config import ConfigError, SolverConfig, TrainerConfig, validate_train_config
from maskrcnn.engine.inference import autocast
from maskrcnn.engine.solver import LRMultiplier, build_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _train_cfg(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=demo", *overrides])


@pytest.mark.parametrize("schema", [SolverConfig, TrainerConfig])
def test_schemas_hold_types_not_values(schema):
    node = OmegaConf.structured(schema)
    assert all(OmegaConf.is_missing(node, key) for key in node)


@pytest.mark.parametrize("key", ["solver.gamma", "solver.eval_period", "trainer.keep_last", "seed"])
def test_a_key_missing_from_the_yaml_is_named(key):
    with pytest.raises(ConfigError, match=rf"'{key}'.*[Mm]issing mandatory value"):
        validate_train_config(_train_cfg([f"~{key}"]))


def test_yaml_sets_every_schema_key():
    cfg = validate_train_config(_train_cfg([]))
    assert set(cfg.solver) == set(OmegaConf.structured(SolverConfig))
    assert set(cfg.trainer) == set(OmegaConf.structured(TrainerConfig))


def test_solver_and_config_give_the_same_range_messages():
    with pytest.raises(ValueError, match=r"^solver\.base_lr: must be > 0, got -1.0") as direct:
        build_optimizer(torch.nn.Linear(2, 2), base_lr=-1.0)
    with pytest.raises(ConfigError) as from_config:
        validate_train_config(_train_cfg(["solver.base_lr=-1"]))
    assert str(from_config.value) == f"invalid config value {direct.value}"
    with pytest.raises(ValueError, match=r"^solver\.steps: must be increasing iterations in \(0, max_iter=10\]"):
        LRMultiplier(max_iter=10, steps=[11])


@pytest.mark.parametrize(
    "call, vocabulary",
    [
        (lambda: LRMultiplier(max_iter=10, name="poly"), Schedule),
        (lambda: LRMultiplier(max_iter=10, warmup_method="exp"), WarmupMethod),
        (lambda: autocast(torch.device("cpu"), "fp8"), Amp),
    ],
)
def test_string_arguments_are_checked_against_the_vocabulary(call, vocabulary):
    with pytest.raises(ValueError, match=rf"must be one of {list(vocabulary.__members__)}".replace("[", r"\[")):
        call()


def test_nonfinite_words_are_the_trainer_policies():
    assert list(NonFinite.__members__) == ["stop", "skip"]
