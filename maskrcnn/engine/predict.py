"""Prediction on image files with a checkpoint: what ``tools/predict.py`` runs.

The model is rebuilt from the config the checkpoint carries (or ``<run>/.hydra/config.yaml`` next
to it), command-line overrides on top; classes and category ids come from the checkpoint. An
input that is an image of the dataset's ``split`` gets that image's id, and the results are the
evaluator's own COCO conversion (:func:`maskrcnn.evaluation.coco_results`), so ``tools/eval.py
results=`` on the output scores what an in-process evaluation does. Relative input paths are
relative to the working directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import torch
from omegaconf import DictConfig

from ..data.base import to_chw_uint8
from ..data.io import read_image
from ..distributed import resolve_device
from ..evaluation import coco_results
from .config import resolve_data_root
from .eval_data import build_eval_dataset
from .launch import build_model_from_checkpoint, load_checkpoint_config
from .run_config import chosen_groups, command_line_overrides
from .tool_configs import validate_predict_config
from .visualize import draw_predictions

logger = logging.getLogger("predict")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def list_images(inputs) -> list[Path]:
    """Image files from a list of files and folders (a folder gives its images, sorted)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        p = Path(str(item))
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"inputs: folder {p} contains no {sorted(IMAGE_SUFFIXES)} images")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"inputs: {p} is neither an image file nor a folder")
    if not files:
        raise ValueError("inputs is empty: give image files or folders, e.g. inputs=[a.jpg,b.jpg]")
    return files


def load_split(cfg: DictConfig):
    """The dataset split ``cfg.split`` (test-time preprocessing), or None when it does not load."""
    if not cfg.dataset_metadata or cfg.get("dataset") is None or cfg.split not in cfg.dataset:
        return None
    try:
        return build_eval_dataset(cfg.dataset[cfg.split], name=f"dataset.{cfg.split}")
    except Exception as e:  # a missing dataset only costs the image ids and category mapping, say so
        logger.warning(
            "dataset %s/%s not loadable (%s): image ids are input indices, category_id = label",
            cfg.dataset.get("name"),
            cfg.split,
            e,
        )
        return None


def dataset_metadata(meta: dict, dataset) -> tuple[dict[int, int] | None, list[str] | None]:
    """(label_to_category_id, class_names) from the checkpoint's meta, else from the dataset."""
    mapping = meta.get("label_to_category_id")
    names = meta.get("class_names")
    if mapping is None and dataset is not None:
        mapping = getattr(dataset, "label_to_category_id", None)
    if names is None and dataset is not None:
        names = getattr(dataset, "class_names", None)
    if mapping is not None:
        mapping = {int(k): int(v) for k, v in mapping.items()}
    return mapping, (list(names) if names is not None else None)


def image_ids(files: list[Path], dataset) -> list:
    """The dataset's image id of each file it holds; the others get ids after the dataset's
    (input indices when the dataset knows none of them), so that results never collide."""
    known = {}
    if dataset is not None:
        known = {Path(r["file_name"]).resolve(): r["image_id"] for r in getattr(dataset, "records", [])}
    ids = [known.get(f.resolve()) for f in files]
    found = sum(i is not None for i in ids)
    if found == 0:
        if dataset is not None:
            logger.info("no input is an image of the dataset split: image ids are input indices")
        return list(range(len(files)))
    numeric = [i for i in known.values() if isinstance(i, int)]
    next_id = max(numeric, default=-1) + 1
    if found < len(files):
        logger.warning(
            "%d of %d inputs are not images of the dataset split: their image ids start at %d",
            len(files) - found,
            len(files),
            next_id,
        )
    out = []
    for i in ids:
        if i is None:
            i, next_id = next_id, next_id + 1
        out.append(i)
    return out


def to_coco_results(
    file_name: str,
    image_id,
    det: dict,
    *,
    label_to_category_id: dict[int, int] | None,
    score_threshold: float,
    mask_threshold: float,
) -> list[dict]:
    """One COCO result dict per detection with score >= ``score_threshold``: the evaluator's own
    conversion (:func:`maskrcnn.evaluation.coco_results`: bbox [x, y, w, h] in image pixels, RLE
    of the pixels with probability > ``mask_threshold``) plus ``file_name``; a label without a
    category id is written as its own ``category_id``."""
    keep = det["scores"] >= score_threshold
    kept = {key: value[keep] for key, value in det.items()}
    labels = {int(label) for label in kept["labels"].tolist()}
    mapping = {label: (label_to_category_id or {}).get(label, label) for label in labels}
    results = coco_results(image_id, kept, label_to_category_id=mapping, mask_threshold=mask_threshold)
    return [{"file_name": file_name, **r} for r in results]


def predict(cfg: DictConfig, overrides: Sequence[str] | None = None) -> list[dict]:
    """Predict ``cfg.inputs`` with ``cfg.checkpoint`` (a composed ``configs/predict.yaml``) and
    write the results file ``cfg.output``; ``overrides`` are the command line's (default: the
    running Hydra app's), put on top of the checkpoint's own config."""
    cfg = validate_predict_config(cfg)
    device = resolve_device(cfg.device)
    files = list_images(cfg.inputs)
    overrides = command_line_overrides() if overrides is None else list(overrides)
    cfg, checkpoint, run = load_checkpoint_config(cfg, overrides, dataset_from_meta=True)
    resolve_data_root(cfg)
    model = build_model_from_checkpoint(cfg, checkpoint, meta=run.meta, device=device)
    # A dataset the run or the command line names gives image ids (and categories, names); the
    # tool's default dataset does not when the checkpoint already knows its classes.
    dataset_named = (
        "dataset" in chosen_groups(overrides)
        or (run.config is not None and "dataset" in run.config)
        or run.meta.get("num_classes") is None
    )
    dataset = load_split(cfg) if dataset_named else None
    mapping, class_names = dataset_metadata(run.meta, dataset)
    ids = image_ids(files, dataset)
    output = Path(cfg.output)
    vis_dir = Path(cfg.vis_dir) if cfg.vis_dir else output.with_name(output.stem + "_vis")
    if cfg.visualize:
        vis_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for image_id, path in zip(ids, files):
        # (3, H, W) uint8 as the datasets give it: the model converts and normalizes on its
        # device, as in training and evaluation.
        image = torch.from_numpy(to_chw_uint8(read_image(path)))
        with torch.no_grad():
            det = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        results.extend(
            to_coco_results(
                path.name,
                image_id,
                det,
                label_to_category_id=mapping,
                score_threshold=cfg.score_threshold,
                mask_threshold=cfg.mask_threshold,
            )
        )
        if cfg.visualize:
            canvas = draw_predictions(
                image,
                det,
                class_names=class_names,
                score_threshold=cfg.vis_score_threshold,
                mask_threshold=cfg.mask_threshold,
            )
            cv2.imwrite(str(vis_dir / f"image_{image_id}_{path.stem}.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        logger.info(
            "%s (image id %s): %d detections", path, image_id, int((det["scores"] >= cfg.score_threshold).sum())
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results))
    logger.info(
        "wrote %d results for %d images to %s%s",
        len(results),
        len(files),
        output,
        f" and drawings to {vis_dir}" if cfg.visualize else "",
    )
    return results
