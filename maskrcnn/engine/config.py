"""Schemas of the engine's config keys and start-up validation of a composed Hydra config.

What the tools run validates the composed config before building anything:
:func:`maskrcnn.engine.training.build_trainer` (``tools/train.py``) and
:func:`maskrcnn.profiling.profile_config` (``tools/profile_step.py``) call
:func:`validate_train_config`, :func:`maskrcnn.engine.evaluate.run` (``tools/eval.py``) calls
:func:`validate_eval_config`; the predict and check_dataset schemas are in
:mod:`maskrcnn.engine.tool_configs`. The composed config is merged into typed dataclasses
(OmegaConf structured configs), so a misspelled key (``solver.base_lrr``) or a wrong type
(``solver.max_iter=abc``) stops the run with a :class:`ConfigError` naming the key. The groups
owned by other parts (``model``, ``roi_layer``, ``dataset``) are checked for the keys the engine
relies on; their constructors (via ``_target_``) reject unknown arguments themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .choices import Amp, NonFinite, Schedule, WarmupMethod
from .solver import check_solver_values

# The repository root (configs/, tools/, datasets/ live here); relative data paths resolve against it.
REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A config value is misspelled, of the wrong type, or out of range."""


# The two schemas below give the keys and their types, no values: the values, and what each means,
# live in the YAML files only (configs/solver/1x.yaml, the ``trainer:`` block of configs/train.yaml),
# and a key the YAML leaves out stops the run naming it instead of taking a second, hidden default.
@dataclass
class SolverConfig:
    """configs/solver/*.yaml: optimizer, schedule and their periods, in iterations at ``ims_per_batch``."""

    ims_per_batch: int
    base_lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    weight_decay_norm: float | None
    weight_decay_bias: float | None
    max_iter: int
    scheduler: Schedule
    steps: list[int]
    gamma: float
    cosine_end_factor: float
    warmup_iters: int
    warmup_factor: float
    warmup_method: WarmupMethod
    checkpoint_period: int
    eval_period: int


@dataclass
class TrainerConfig:
    """configs/train.yaml ``trainer:``: how the loop runs (not what it optimizes)."""

    amp: Amp
    clip_grad_norm: float
    nonfinite: NonFinite
    log_period: int
    keep_last: int
    num_workers: int
    aspect_ratio_grouping: bool
    eval_batch_size: int
    vis_images: int
    vis_score_threshold: float
    find_unused_parameters: bool
    deterministic: bool
    allow_split_overlap: bool


@dataclass
class PathsConfig:
    data_root: str = "datasets"


@dataclass
class _RunGroups:
    """What train and eval configs share: the groups owned by other parts, checked by _check_groups."""

    model: Any = None
    roi_layer: Any = None
    dataset: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class TrainConfig(_RunGroups):
    solver: SolverConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = MISSING
    device: str = MISSING
    resume: bool = MISSING


@dataclass
class EvalConfig(_RunGroups):
    checkpoint: str | None = None  # evaluate this checkpoint, or
    results: str | None = None  # score this COCO-format results file (no model)
    split: str = "val"
    device: str = "auto"
    amp: Amp = Amp.none
    batch_size: int = 1
    num_workers: int = 2
    vis_images: int = 4
    vis_score_threshold: float = 0.5
    seed: int = 42
    class_agnostic: bool = False  # COCO scoring: also the class-agnostic APs (bbox/agnostic_AP ...)


def _merge(schema_cls, cfg: DictConfig) -> DictConfig:
    """``cfg`` merged into the schema; every interpolation is resolved once as a check."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema_cls), cfg)
        OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or getattr(error, "key", None)
        message = str(getattr(error, "msg", error)).splitlines()[0]
        raise ConfigError(f"invalid config key {key!r}: {message}") from None
    return merged


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"invalid config value {key}: {message}")


def _check_groups(cfg: DictConfig, needs_model: bool = True) -> None:
    if needs_model:
        _require(
            isinstance(cfg.model, DictConfig) and "_target_" in cfg.model,
            "model",
            "pick a model config (model=<name> from configs/model/) with a _target_",
        )
    _require(isinstance(cfg.dataset, DictConfig), "dataset", "pick a dataset (dataset=<name> from configs/dataset/)")
    for key in ("name", "num_classes", "evaluator", "train", "val"):
        _require(key in cfg.dataset, f"dataset.{key}", "missing from the dataset config")
    _require(
        isinstance(cfg.dataset.num_classes, int) and cfg.dataset.num_classes > 0,
        "dataset.num_classes",
        f"must be a positive int, got {cfg.dataset.num_classes!r}",
    )
    _require(
        cfg.dataset.evaluator in ("coco", "voc"),
        "dataset.evaluator",
        f"must be 'coco' or 'voc', got {cfg.dataset.evaluator!r}",
    )


def _repo_relative(path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else REPO_ROOT / p)


# Dataset keys that hold a path: top-level ``root`` / ``*_root``, and in each split ``image_dir``,
# ``annotation_file`` and the ``root`` of each VOC ``sets`` entry.
_SPLIT_PATH_KEYS = ("image_dir", "annotation_file")


def _is_path_key(key: str) -> bool:
    return key == "root" or key.endswith("_root")


def _resolve_literal(node: DictConfig, key: str) -> None:
    """Make ``node[key]`` repo-relative when it is a literal string (an interpolation such as
    ``${paths.data_root}/coco`` follows the already absolute value it points to)."""
    if key in node and not OmegaConf.is_interpolation(node, key) and isinstance(node[key], str):
        node[key] = _repo_relative(node[key])


def _check_masks_available(cfg: DictConfig) -> None:
    """A model with a mask branch cannot train on a dataset that gives no masks: say so before training."""
    from maskrcnn.modeling.detector import BOX_ONLY_REMEDY

    has_mask_branch = cfg.model.get("roi_heads") is not None and cfg.model.roi_heads.get("mask_predictor") is not None
    if has_mask_branch and cfg.dataset.train.get("with_masks") is False:
        raise ConfigError(
            f"dataset {cfg.dataset.name} trains without masks (dataset.train.with_masks=false) but the "
            f"model has a mask branch (model.roi_heads.mask_predictor): {BOX_ONLY_REMEDY}"
        )


def resolve_data_root(cfg: DictConfig) -> None:
    """Make ``paths.data_root`` and the dataset's own paths (``dataset.root``, ``dataset.bccd_root``,
    a split's ``image_dir`` ...) absolute, relative paths being relative to the repository root
    (not to Hydra's run directory or the shell's working directory)."""
    cfg.paths.data_root = _repo_relative(cfg.paths.data_root)
    dataset = cfg.get("dataset")
    if not isinstance(dataset, DictConfig):
        return
    for key in list(dataset.keys()):
        if _is_path_key(str(key)):
            _resolve_literal(dataset, key)
        split = dataset[key] if not OmegaConf.is_interpolation(dataset, key) else None
        if not isinstance(split, DictConfig):
            continue
        for path_key in _SPLIT_PATH_KEYS:
            _resolve_literal(split, path_key)
        sets = split.get("sets")
        if OmegaConf.is_list(sets):
            for entry in sets:
                if isinstance(entry, DictConfig):
                    _resolve_literal(entry, "root")


def validate_train_config(cfg: DictConfig) -> DictConfig:
    """Typed, checked copy of a composed train config (raises :class:`ConfigError` naming the key)."""
    merged = _merge(TrainConfig, cfg)
    _check_groups(merged)
    s, t = merged.solver, merged.trainer
    _require(s.ims_per_batch > 0, "solver.ims_per_batch", f"must be > 0, got {s.ims_per_batch}")
    try:  # the solver's own checks of the values it is built from
        check_solver_values(base_lr=s.base_lr, max_iter=s.max_iter, steps=list(s.steps))
    except ValueError as error:
        raise ConfigError(f"invalid config value {error}") from None
    _require(0 <= s.warmup_factor <= 1, "solver.warmup_factor", f"must be in [0, 1], got {s.warmup_factor}")
    _require(s.warmup_iters >= 0, "solver.warmup_iters", f"must be >= 0, got {s.warmup_iters}")
    # A warmup longer than the run would train at a fraction of base_lr throughout.
    _require(
        s.warmup_iters <= s.max_iter,
        "solver.warmup_iters",
        f"{s.warmup_iters} is longer than solver.max_iter={s.max_iter}: the run would never reach "
        f"base_lr; set solver.warmup_iters <= solver.max_iter",
    )
    _check_masks_available(merged)
    init = merged.model.get("init")
    _require(
        init is None or isinstance(init, str),
        "model.init",
        f"must be a torchvision weights name (MaskRCNN_ResNet50_FPN_Weights.COCO_V1) or a file path, got {init!r}",
    )
    _require(t.log_period > 0, "trainer.log_period", f"must be > 0, got {t.log_period}")
    _require(t.num_workers >= 0, "trainer.num_workers", f"must be >= 0, got {t.num_workers}")
    _require(t.eval_batch_size > 0, "trainer.eval_batch_size", f"must be > 0, got {t.eval_batch_size}")
    resolve_data_root(merged)
    return merged


# Keys of a training run's config that evaluation ignores: a run's own .hydra/config.yaml is a
# valid eval config (``--config-dir <run>/.hydra --config-name config +checkpoint=...``).
TRAIN_ONLY_KEYS = ("solver", "trainer", "resume")


def validate_eval_config(cfg: DictConfig) -> DictConfig:
    """Typed, checked copy of a composed eval config: exactly one of ``checkpoint`` / ``results``."""
    from_run = any(key in cfg for key in TRAIN_ONLY_KEYS)
    if from_run:
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key not in TRAIN_ONLY_KEYS])
    merged = _merge(EvalConfig, cfg)
    _require(
        (merged.checkpoint is None) != (merged.results is None),
        "checkpoint/results",
        "give exactly one of checkpoint=PATH (evaluate a model) or results=PATH (score a results file)"
        + (
            "; with a training run's config (--config-name config) add +checkpoint=<run>/model_final.pt"
            if from_run and merged.checkpoint is None and merged.results is None
            else ""
        ),
    )
    _check_groups(merged, needs_model=merged.checkpoint is not None)
    _require(merged.split in merged.dataset, "split", f"the dataset config has no split {merged.split!r}")
    _require(merged.batch_size > 0, "batch_size", f"must be > 0, got {merged.batch_size}")
    _require(
        not merged.class_agnostic or merged.results is not None or merged.dataset.evaluator == "coco",
        "class_agnostic",
        f"class-agnostic scoring is COCO scoring; dataset {merged.dataset.name} has evaluator "
        f"{merged.dataset.evaluator} (drop class_agnostic=true, or use a COCO-format dataset)",
    )
    resolve_data_root(merged)
    return merged
