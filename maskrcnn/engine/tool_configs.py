"""Schemas and start-up validation of the configs of ``tools/predict.py`` (``configs/predict.yaml``)
and ``tools/check_dataset.py`` (``configs/check_dataset.yaml``).

The same mechanism as the train and eval configs (:mod:`maskrcnn.engine.config`): the composed
config is merged into a typed dataclass, so a misspelled key (``+score_treshold=0.3``, or one in
an edited yaml file) or a wrong type (``score_threshold=high``) stops the tool with one
:class:`~maskrcnn.engine.config.ConfigError` line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from .config import PathsConfig, _merge, _require, resolve_data_root


@dataclass
class PredictConfig:
    """configs/predict.yaml: the model comes from the checkpoint (``model``, ``roi_layer``,
    ``dataset`` and ``paths`` are replaced by its run's config, see maskrcnn.engine.run_config)."""

    model: Any = None
    roi_layer: Any = None
    dataset: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    checkpoint: str = MISSING
    inputs: Any = MISSING  # an image file or folder, or a list of them
    output: str = "results.json"
    visualize: bool = False
    vis_dir: str | None = None
    vis_score_threshold: float = 0.5
    score_threshold: float = 0.0
    mask_threshold: float = 0.5
    split: str = "val"
    dataset_metadata: bool = True
    device: str = "auto"


@dataclass
class CheckDatasetConfig:
    """configs/check_dataset.yaml."""

    dataset: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    split: str = "train"
    check_images: bool = True
    max_listed: int = 10


def validate_predict_config(cfg: DictConfig) -> DictConfig:
    """Checked copy of a composed predict config (raises ConfigError naming the key), its values
    converted to the schema's types. The copy is a plain config (not typed by the schema): the
    checkpoint's run config replaces ``model`` ... ``paths`` in it afterwards, with its own keys;
    paths are resolved once that is done."""
    merged = _merge(PredictConfig, cfg)
    _require(
        isinstance(merged.inputs, (str, ListConfig)),
        "inputs",
        f"must be an image file or folder or a list of them (inputs=[a.jpg,b.jpg]), got {merged.inputs!r}",
    )
    for key in ("mask_threshold", "score_threshold", "vis_score_threshold"):
        _require(0.0 <= merged[key] <= 1.0, key, f"must be in [0, 1], got {merged[key]}")
    plain = OmegaConf.create(OmegaConf.to_container(merged, resolve=False))
    OmegaConf.set_struct(plain, True)
    return plain


def validate_check_dataset_config(cfg: DictConfig) -> DictConfig:
    """Typed, checked copy of a composed check_dataset config, its data paths made absolute
    (relative to the repository root)."""
    merged = _merge(CheckDatasetConfig, cfg)
    _require(
        isinstance(merged.dataset, DictConfig) and "name" in merged.dataset,
        "dataset",
        "pick a dataset (dataset=<name> from configs/dataset/)",
    )
    _require(
        merged.split in merged.dataset and isinstance(merged.dataset[merged.split], DictConfig),
        "split",
        f"dataset {merged.dataset.name!r} has no split {merged.split!r}",
    )
    _require(merged.max_listed >= 0, "max_listed", f"must be >= 0, got {merged.max_listed}")
    resolve_data_root(merged)
    return merged
