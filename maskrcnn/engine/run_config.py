"""A run's config carried by its checkpoints, and the model rebuilt from it for eval and predict.

A checkpoint written by ``tools/train.py`` (or ``tools/convert_torchvision.py``) holds ``meta``:

    config        the run's composed config (``model``, ``roi_layer``, ``dataset``, ``paths``, ...),
                  interpolations kept, so ``roi_layer=...`` or ``paths.data_root=...`` still apply
    model_config  the name of the model config (``configs/model/<name>.yaml``), None if unknown
    dataset       the dataset config's name
    num_classes, class_names, label_to_category_id   what the classifier predicts

:func:`load_run_config` finds a checkpoint's config (its ``meta``, else the run folder's
``.hydra/config.yaml``) and :func:`apply_run_config` puts it under the command line: the groups
the command line does not choose come from the run, and every ``key=value`` override is applied
on top again. A checkpoint that carries nothing keeps working with an explicit ``model=<name>``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import ConfigError

logger = logging.getLogger(__name__)

# Top-level keys a run decides for its evaluation: taken from the run unless the command line
# chooses them (``model=<name>``, ``dataset=<name>``, ``roi_layer=<name>``).
RUN_KEYS = ("model", "roi_layer", "dataset", "paths")
GROUPS = ("model", "roi_layer", "dataset")


@dataclass
class RunConfig:
    """What a checkpoint says about the run that wrote it.

    Attributes:
        config: the run's config (at least ``model``), or None for a checkpoint without one.
        meta: ``model_config``, ``dataset``, ``num_classes``, ``class_names``, ``label_to_category_id``
            (each None when unknown).
        source: where ``config`` came from, for the log.
    """

    config: DictConfig | None
    meta: dict = field(default_factory=dict)
    source: str = "the command line only (the checkpoint carries no config)"


def checkpoint_meta(cfg: DictConfig, *, dataset=None, model_config: str | None = None) -> dict:
    """``meta`` for the checkpoints of a training run of ``cfg`` (the composed config, before
    validation, so that relative paths stay relative); ``dataset`` gives the class names and
    category ids."""
    mapping = getattr(dataset, "label_to_category_id", None)
    names = getattr(dataset, "class_names", None)
    return {
        "config": OmegaConf.to_container(cfg, resolve=False, enum_to_str=True),
        "model_config": model_config,
        "dataset": cfg.dataset.get("name"),
        "num_classes": int(cfg.dataset.num_classes),
        "class_names": list(names) if names is not None else None,
        "label_to_category_id": {int(k): int(v) for k, v in mapping.items()} if mapping is not None else None,
    }


def hydra_choice(group: str) -> str | None:
    """The option chosen for a config group in the running Hydra app (None outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def command_line_overrides() -> list[str]:
    """The running Hydra app's command-line overrides (``[]`` outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def load_run_config(checkpoint: str | Path, state: dict) -> RunConfig:
    """The config of the run that wrote ``checkpoint`` (loaded as ``state``): the checkpoint's own
    ``meta``, else ``<run folder>/.hydra/config.yaml`` next to it, else none."""
    meta = dict(state.get("meta") or {})
    config = meta.get("config")
    if isinstance(config, str):  # older converted checkpoints: the model config's name only
        meta.setdefault("model_config", config)
        config = None
    meta = {
        key: meta.get(key) for key in ("model_config", "dataset", "num_classes", "class_names", "label_to_category_id")
    }
    if isinstance(config, dict) and "model" in config:
        return RunConfig(upgrade_legacy_config(OmegaConf.create(config)), meta, f"the checkpoint {checkpoint}")
    hydra_dir = Path(checkpoint).resolve().parent / ".hydra"
    if (hydra_dir / "config.yaml").is_file():
        run_cfg = OmegaConf.load(hydra_dir / "config.yaml")
        if isinstance(run_cfg, DictConfig) and "model" in run_cfg:
            if meta["model_config"] is None and (hydra_dir / "hydra.yaml").is_file():
                choices = OmegaConf.select(OmegaConf.load(hydra_dir / "hydra.yaml"), "hydra.runtime.choices")
                meta["model_config"] = choices.get("model") if choices is not None else None
            if meta["num_classes"] is None:
                meta["num_classes"] = OmegaConf.select(run_cfg, "dataset.num_classes", default=None)
            return RunConfig(upgrade_legacy_config(run_cfg), meta, f"the run folder's {hydra_dir / 'config.yaml'}")
    return RunConfig(None, meta)


_LEGACY_ROI_HEADS = "maskrcnn.modeling.RoIHeads"


def upgrade_legacy_config(config: DictConfig) -> DictConfig:
    """A saved run's config in today's spelling (in place; returned for convenience).

    Older runs name one RoI-head class for both designs (a C4 model said so by a res5 box head
    and ``mask_pooler: null``) and take the mask targets' RoI Align backend from the box pooler's;
    they spell adaptive sampling ``sampling_ratio: 0``. The same models in today's configs:
    ``Res5RoIHeads`` / ``StandardRoIHeads``, ``mask_target_backend`` and ``sampling_ratio: -1``.
    """
    for node in _roi_layer_nodes(config):
        if node.get("sampling_ratio") == 0:
            node.sampling_ratio = -1
    heads = OmegaConf.select(config, "model.roi_heads")
    if not isinstance(heads, DictConfig) or heads.get("_target_") != _LEGACY_ROI_HEADS:
        return config
    res5 = str(OmegaConf.select(heads, "box_head._target_", default="")).endswith(".Res5Head")
    with open_dict(heads):
        if res5 and heads.get("mask_pooler") is None:
            heads._target_ = "maskrcnn.modeling.Res5RoIHeads"
            for key in ("mask_pooler", "mask_head"):
                heads.pop(key, None)
        else:
            heads._target_ = "maskrcnn.modeling.StandardRoIHeads"
        if heads.get("mask_predictor") is not None and "mask_target_backend" not in heads:
            heads.mask_target_backend = "${.box_pooler.roi_layer.backend}"
    return config


def _roi_layer_nodes(config: DictConfig) -> list[DictConfig]:
    """The run's ``roi_layer`` and the RoI layers its model config spells out in full."""
    nodes = [config.get("roi_layer")]
    heads = OmegaConf.select(config, "model.roi_heads")
    if isinstance(heads, DictConfig):
        for pooler in ("box_pooler", "mask_pooler"):
            node = heads.get(pooler)
            if isinstance(node, DictConfig) and not OmegaConf.is_interpolation(node, "roi_layer"):
                nodes.append(node.get("roi_layer"))
    return [n for n in nodes if isinstance(n, DictConfig)]


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [
        o
        for o in OverridesParser.create().parse_overrides(list(overrides))
        if not o.key_or_group.startswith("hydra.") and o.key_or_group != "hydra"
    ]


def chosen_groups(overrides: Sequence[str]) -> dict[str, str]:
    """``{group: option}`` of the config groups chosen on the command line (``model=<name>``)."""
    return {o.key_or_group: str(o.value()) for o in _parse(overrides) if o.key_or_group in GROUPS and not o.is_delete()}


def apply_run_config(
    cfg: DictConfig, run: RunConfig, overrides: Sequence[str], *, checkpoint: str | Path, dataset_from_meta: bool
) -> DictConfig:
    """``cfg`` (composed from the tool's config and the command line) with the run's config
    underneath the command line.

    Args:
        cfg: the tool's composed config.
        run: from :func:`load_run_config`.
        overrides: the command-line overrides (``model=<name>``, ``model.x.y=v``, ``+k=v``, ``~k``).
        checkpoint: for the messages.
        dataset_from_meta: when the run has no dataset config and none is chosen, take
            ``dataset.num_classes`` and ``class_names`` from the checkpoint (prediction);
            else the tool's dataset must agree with the checkpoint (evaluation).

    Raises:
        ConfigError: the command line's model or class count disagrees with the checkpoint; the
            message names both values and the override that fixes it.
    """
    chosen = chosen_groups(overrides)
    meta = run.meta
    name = meta.get("model_config")
    if "model" in chosen and name is not None and chosen["model"] != name:
        raise ConfigError(
            f"checkpoint {checkpoint} was trained with model={name} but the command line says "
            f"model={chosen['model']}: drop model={chosen['model']} (the model is rebuilt from the "
            f"checkpoint; model.<key>=... overrides still apply on top)"
        )
    # Naming the run's own choice again (model=<as trained>) still takes the run's version of it,
    # with whatever the run changed in it (an experiment's test size, a dataset root).
    chosen = {group: option for group, option in chosen.items() if option != _run_choice(run, group)}
    cfg = copy.deepcopy(cfg)
    taken = []
    if run.config is not None:
        with open_dict(cfg):
            for key in RUN_KEYS:
                if key in run.config and key not in chosen:
                    cfg[key] = run.config[key]
                    taken.append(key)
        _reapply(cfg, overrides, taken)
        logger.info(
            "model%s rebuilt from %s; command-line overrides on top",
            ", dataset" if "dataset" in taken else "",
            run.source,
        )
    else:
        logger.info("config from %s", run.source)
    if "dataset" not in taken and "dataset" not in chosen and dataset_from_meta and meta.get("num_classes"):
        with open_dict(cfg):
            cfg.dataset.num_classes = int(meta["num_classes"])
            if meta.get("class_names") is not None:
                cfg.dataset.class_names = list(meta["class_names"])
        _reapply(cfg, overrides, ["dataset"])
    _check_num_classes(cfg, meta, checkpoint)
    return cfg


def _run_choice(run: RunConfig, group: str) -> str | None:
    """The option the run chose for ``group`` (by name), None when unknown."""
    if group == "model":
        return run.meta.get("model_config")
    if group == "dataset":
        return run.meta.get("dataset")
    if run.config is not None and group in run.config and isinstance(run.config[group], DictConfig):
        return run.config[group].get("name")
    return None


def _reapply(cfg: DictConfig, overrides: Sequence[str], keys: Sequence[str]) -> None:
    """Apply again the ``key.sub=value`` overrides under ``keys`` (replaced after Hydra applied them)."""
    for o in _parse(overrides):
        key = o.key_or_group
        if "." not in key or key.split(".", 1)[0] not in keys:
            continue
        if o.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent)
            if isinstance(node, DictConfig) and leaf in node:
                with open_dict(node):
                    del node[leaf]
        else:
            with open_dict(cfg):
                OmegaConf.update(cfg, key, o.value(), merge=True, force_add=o.is_add() or o.is_force_add())


def _check_num_classes(cfg: DictConfig, meta: dict, checkpoint) -> None:
    expected = meta.get("num_classes")
    if expected is None or "dataset" not in cfg or "num_classes" not in cfg.dataset:
        return
    actual = cfg.dataset.num_classes
    if actual != expected:
        trained_on = f", trained on dataset {meta['dataset']}" if meta.get("dataset") else ""
        raise ConfigError(
            f"checkpoint {checkpoint} predicts num_classes={expected}{trained_on}, but "
            f"dataset.num_classes={actual} (dataset {cfg.dataset.get('name')}): add "
            f"dataset.num_classes={expected} to use the checkpoint's classifier as it is, or pick a "
            f"dataset with its {expected} classes"
        )


def load_model_weights(model: torch.nn.Module, state: dict, *, checkpoint, meta: dict | None = None) -> None:
    """``state["model"]`` into ``model``, with one clear line when they do not fit (wrong model
    config or class count) instead of torch's list of size mismatches."""
    weights = state["model"]
    own = model.state_dict()
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in weights.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if not (wrong or missing or unexpected):
        model.load_state_dict(weights)
        return
    hint = ""
    name = (meta or {}).get("model_config")
    if name:
        hint = f"; the checkpoint was made for model={name}"
    cls = weights.get("roi_heads.box_predictor.cls_score.weight")
    if cls is not None and any(
        k.startswith("roi_heads.box_predictor.cls_score") for k in (w.split(":")[0] for w in wrong)
    ):
        hint += f"; its classifier has {cls.shape[0] - 1} classes: add dataset.num_classes={cls.shape[0] - 1}"
    details = "; ".join(
        filter(
            None,
            [
                f"size mismatch for {wrong[0]}" + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else "")
                if wrong
                else "",
                f"missing {missing[:3]}" + ("..." if len(missing) > 3 else "") if missing else "",
                f"unexpected {unexpected[:3]}" + ("..." if len(unexpected) > 3 else "") if unexpected else "",
            ],
        )
    )
    raise ConfigError(f"checkpoint {checkpoint} does not fit the model config: {details}{hint or ' (wrong model=?)'}")


def without_initial_weights(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``model.init`` and ``model.backbone.weights`` unset: a checkpoint's weights
    replace the initialization, which need not be read (or downloaded) again to evaluate it."""
    cfg = copy.deepcopy(cfg)
    model = cfg.get("model")
    if not isinstance(model, DictConfig):
        return cfg
    with open_dict(cfg):
        if model.get("init") is not None:
            model.init = None
        backbone = model.get("backbone")
        if isinstance(backbone, DictConfig) and backbone.get("weights") is not None:
            backbone.weights = None
    return cfg
