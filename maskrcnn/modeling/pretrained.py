"""Pretrained weights by name, as torchvision users get them, or from a local file.

Two config keys use this module:

``model.backbone.weights``
    ImageNet weights of the ResNet trunk: a torchvision enum value (``IMAGENET1K_V1``,
    ``IMAGENET1K_V2``, ``DEFAULT`` or qualified, ``ResNet50_Weights.IMAGENET1K_V2``) or the path of
    a torchvision ResNet state dict.
``model.init``
    A whole detector to start training from: ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``,
    ``FasterRCNN_ResNet50_FPN_Weights.COCO_V1`` (the torchvision models that
    ``configs/model/*_torchvision.yaml`` reproduce), a torchvision detection state dict, a file of
    ``tools/convert_torchvision.py`` or a checkpoint of ``tools/train.py``. torchvision's weights are
    converted on load. Tensors whose shape depends on the class count (the predictors) are
    re-initialised when the dataset's class count differs: that is fine-tuning.

Named weights come through torchvision's own download into the torch hub cache
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``), under torchvision's
file names. A file already there is used without any network access; a download that fails says
which file to fetch from where and where to put it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from .torchvision_compat import COCO_CATEGORY_IDS, convert_torchvision_state_dict, select_classes

__all__ = [
    "InitReport",
    "cached_weights_file",
    "detector_init_state",
    "fetch_weights",
    "imagenet_state_dict",
    "initialize_detector",
    "is_weights_name",
]

logger = logging.getLogger(__name__)

# torchvision detection weights our architectures reproduce (configs/model/*_torchvision.yaml).
DETECTOR_WEIGHTS = {
    "MaskRCNN_ResNet50_FPN_Weights": "maskrcnn_resnet50_fpn",
    "FasterRCNN_ResNet50_FPN_Weights": "fasterrcnn_resnet50_fpn",
}
# torchvision detection weights of other architectures, named so that the error can say why.
_OTHER_DETECTORS = (
    "MaskRCNN_ResNet50_FPN_V2_Weights",
    "FasterRCNN_ResNet50_FPN_V2_Weights",
    "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
)
# Tensors whose shape follows the class count: re-initialised when it differs (fine-tuning).
PREDICTOR_KEYS = (
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)?$")
_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar")


class PretrainedError(ValueError):
    """Named weights that do not exist, do not fit the model, or cannot be fetched."""


class WeightsFileNotFound(PretrainedError, FileNotFoundError):
    """A weights path that does not exist."""


def is_weights_name(spec: str) -> bool:
    """True for ``IMAGENET1K_V1`` / ``ResNet50_Weights.IMAGENET1K_V1``-like names, False for paths."""
    spec = str(spec)
    return bool(_NAME.match(spec)) and Path(spec).suffix.lower() not in _FILE_SUFFIXES and not Path(spec).exists()


def cached_weights_file(weights) -> Path:
    """Where torchvision's download puts ``weights`` (a torchvision ``WeightsEnum`` member)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def fetch_weights(weights, *, key: str) -> dict[str, Tensor]:
    """The state dict of a torchvision ``WeightsEnum`` member: from the torch hub cache, else
    downloaded there by torchvision. ``key`` names the config key in the error message."""
    file = cached_weights_file(weights)
    label = f"{type(weights).__name__}.{weights.name}"
    options = dict(map_location="cpu", weights_only=True)
    if file.is_file():
        logger.info("%s: %s (%s) from the torch hub cache", key, label, file)
        return weights.get_state_dict(progress=False, **options)
    logger.info("%s: downloading %s from %s to %s", key, label, weights.url, file)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, **options)
    except (OSError, RuntimeError) as error:  # URLError is an OSError, a hash mismatch a RuntimeError
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise PretrainedError(
            f"{key}={label}: {file.name} is not in the torch hub cache and the download failed ({reason}); "
            f"download {weights.url} and put it at {file} (the cache is $TORCH_HOME/hub/checkpoints, "
            f"torch.hub.get_dir()/checkpoints), or set {key} to the path of a local file"
        ) from None


def _load_file(path: str | Path, *, key: str) -> dict:
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsFileNotFound(
            f"{key}: file {file} does not exist (give the path of a weights file, or a "
            f"torchvision weights name such as IMAGENET1K_V1 / "
            f"MaskRCNN_ResNet50_FPN_Weights.COCO_V1)"
        )
    # Our checkpoints hold python objects besides tensors; state dicts of torchvision do not.
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception:
        state = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise PretrainedError(f"{key}: {file} is not a state dict")
    if isinstance(state.get("model"), dict):
        state = state["model"]
    return state


def imagenet_state_dict(spec: str, *, depth: int) -> dict[str, Tensor]:
    """ImageNet weights of torchvision's ResNet-{depth} named by ``spec`` (an enum value or a path)."""
    key = "model.backbone.weights"
    if not is_weights_name(spec):
        return _load_file(spec, key=key)
    enum = getattr(torchvision.models, f"ResNet{depth}_Weights")
    owner, _, name = spec.rpartition(".")
    if owner and owner != enum.__name__:
        raise PretrainedError(
            f"{key}={spec} is for another network; the backbone is a ResNet-{depth}: "
            f"use {key}={enum.__name__}.<name> with one of {[w.name for w in enum]}"
        )
    try:
        weights = enum[name]
    except KeyError:
        raise PretrainedError(
            f"{key}={spec}: torchvision's ResNet-{depth} has no weights {name!r}; "
            f"choose one of {[w.name for w in enum]} (or DEFAULT), or a file path"
        ) from None
    return fetch_weights(weights, key=key)


def _detector_weights(spec: str):
    owner, _, name = spec.rpartition(".")
    supported = [f"{cls}.{w.name}" for cls in DETECTOR_WEIGHTS for w in getattr(torchvision.models.detection, cls)]
    if owner in _OTHER_DETECTORS:
        raise PretrainedError(
            f"model.init={spec}: that torchvision model has another architecture than ours "
            f"(configs/model/*_torchvision.yaml reproduce the v1 ResNet-50 FPN models); "
            f"use one of {supported} or a file path"
        )
    if owner not in DETECTOR_WEIGHTS:
        raise PretrainedError(
            f"model.init={spec} is not a torchvision detection weights name we support; "
            f"use one of {supported}, or the path of a checkpoint / torchvision state dict"
        )
    enum = getattr(torchvision.models.detection, owner)
    try:
        return enum[name]
    except KeyError:
        raise PretrainedError(f"model.init={spec}: {owner} has no weights {name!r}; use one of {supported}") from None


def _is_torchvision_layout(state: dict) -> bool:
    return any(k.startswith("backbone.fpn.") for k in state)


def detector_init_state(spec: str) -> tuple[dict[str, Tensor], bool]:
    """The state dict ``model.init`` names, in our module names, and whether it is torchvision's."""
    if is_weights_name(spec):
        state = fetch_weights(_detector_weights(spec), key="model.init")
    else:
        state = _load_file(spec, key="model.init")
    if not _is_torchvision_layout(state):
        return state, False
    arch = "maskrcnn_resnet50_fpn" if any(k.startswith("roi_heads.mask_") for k in state) else "fasterrcnn_resnet50_fpn"
    try:
        return convert_torchvision_state_dict(state, arch=arch), True
    except ValueError as error:
        raise PretrainedError(f"model.init={spec}: {error}") from None


@dataclass
class InitReport:
    """What :func:`initialize_detector` did: tensor names kept from the source, new (left as the
    model initialised them) and unused (in the source, not in the model)."""

    kept: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def initialize_detector(model: nn.Module, spec: str | None) -> InitReport | None:
    """Loads the weights ``model.init`` names into ``model`` (see the module docstring).

    Only the predictors may differ in shape (another class count: re-initialised); any other
    mismatch is a source that does not fit the architecture and raises :class:`PretrainedError`.
    torchvision's 91-way COCO classifier onto an 80-class model keeps the rows of the 80 COCO
    categories (the labels of our COCO dataset).
    """
    if spec is None:
        return None
    spec = str(spec)
    source, from_torchvision = detector_init_state(spec)
    own = model.state_dict()
    cls_key = "roi_heads.box_predictor.cls_score.weight"
    if (
        from_torchvision
        and cls_key in source
        and cls_key in own
        and source[cls_key].shape[0] == 91
        and own[cls_key].shape[0] == 81
    ):
        source = select_classes(source, COCO_CATEGORY_IDS)
        logger.info("model.init: 80 classes, keeping the classifier rows of the 80 COCO categories")
    report = InitReport()
    load = {}
    mismatched = []
    for name, value in own.items():
        if name not in source:
            report.new.append(name)
        elif _shape(source[name]) == _shape(value):
            load[name] = source[name]
            report.kept.append(name)
        elif name in PREDICTOR_KEYS:
            report.new.append(name)
        else:
            mismatched.append(f"{name} is {_shape(source[name])} there and {_shape(value)} here")
    report.unused = [k for k in source if k not in own and not k.endswith("num_batches_tracked")]
    if mismatched or not report.kept:
        detail = mismatched[0] if mismatched else "no tensor name in common"
        raise PretrainedError(
            f"model.init={spec} does not fit this model ({detail}); torchvision's weights need "
            f"model=mask_rcnn_r50_fpn_torchvision or faster_rcnn_r50_fpn_torchvision"
        )
    model.load_state_dict(load, strict=False)
    _log(spec, report, source, own)
    stem_norm = getattr(getattr(getattr(model, "backbone", None), "body", None), "bn1", None)
    if from_torchvision and getattr(stem_norm, "eps", 0.0) != 0.0:
        logger.warning(
            "model.init=%s: torchvision's detection weights were trained with FrozenBatchNorm eps 0.0, "
            "this backbone uses %g (model=*_torchvision configs match them)",
            spec,
            stem_norm.eps,
        )
    return report


def _log(spec: str, report: InitReport, source: dict, own: dict) -> None:
    def groups(names):
        counts: dict[str, int] = {}
        for name in names:
            prefix = ".".join(name.split(".")[:2])
            counts[prefix] = counts.get(prefix, 0) + 1
        return ", ".join(f"{p} ({n})" for p, n in counts.items())

    logger.info("model.init=%s: kept %d tensors: %s", spec, len(report.kept), groups(report.kept))
    if report.new:
        shown = [
            f"{k} {_shape(own[k])}" + (f" (source {_shape(source[k])})" if k in source else "") for k in report.new
        ]
        logger.info(
            "model.init=%s: %d new tensors (initialised here, not from the source): %s",
            spec,
            len(report.new),
            "; ".join(shown),
        )
    if report.unused:
        logger.info(
            "model.init=%s: %d source tensors unused by this model: %s", spec, len(report.unused), groups(report.unused)
        )
