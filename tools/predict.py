#!/usr/bin/env python
"""Run a checkpoint on image files and write COCO-format results (and optionally drawings).

    python tools/predict.py model=mask_rcnn_r18_fpn_small checkpoint=outputs/.../model_final.pt \\
        inputs=[a.jpg,b.jpg] output=results.json visualize=true

See configs/predict.yaml for every option. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import hydra
import numpy as np
import pycocotools.mask as mask_util
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger("predict")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
REPO = Path(__file__).resolve().parents[1]


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


def dataset_metadata(cfg: DictConfig, checkpoint: dict) -> tuple[dict[int, int] | None, list[str] | None]:
    """(label_to_category_id, class_names) from the checkpoint's meta or the dataset's val split."""
    meta = checkpoint.get("meta") or {}
    mapping = meta.get("label_to_category_id")
    names = meta.get("class_names")
    if mapping is None and cfg.dataset_metadata and cfg.get("dataset") is not None and "val" in cfg.dataset:
        try:
            ds = instantiate(cfg.dataset.val)
        except Exception as e:  # a missing dataset only costs the category mapping, say so
            log.warning("dataset %s not loadable (%s): category_id = label", cfg.dataset.get("name"), e)
        else:
            mapping = getattr(ds, "label_to_category_id", None)
            names = getattr(ds, "class_names", None)
    if mapping is not None:
        mapping = {int(k): int(v) for k, v in mapping.items()}
    return mapping, names


def to_coco_results(file_name: str, image_id: int, det: dict, *, label_to_category_id: dict[int, int] | None,
                    score_threshold: float, mask_threshold: float) -> list[dict]:
    """One COCO result dict per detection: bbox [x, y, w, h] in image pixels, RLE segmentation."""
    keep = det["scores"] >= score_threshold
    boxes = det["boxes"][keep].tolist()
    scores = det["scores"][keep].tolist()
    labels = det["labels"][keep].tolist()
    rles = None
    if "masks" in det:
        binary = (det["masks"][keep][:, 0] >= mask_threshold).numpy().astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
    out = []
    for i, ((x1, y1, x2, y2), score, label) in enumerate(zip(boxes, scores, labels)):
        cat = label_to_category_id.get(label, label) if label_to_category_id else label
        r = {"file_name": file_name, "image_id": image_id, "category_id": int(cat),
             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
        if rles is not None:
            rle = rles[i]
            r["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        out.append(r)
    return out


def build_model(cfg: DictConfig, checkpoint: dict, device: torch.device) -> torch.nn.Module:
    model = instantiate(cfg.model)
    missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {cfg.checkpoint} does not match model={cfg.model._target_} with "
                         f"dataset.num_classes={cfg.dataset.num_classes}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval()


def predict(cfg: DictConfig) -> list[dict]:
    from maskrcnn.data.io import read_image
    from maskrcnn.engine.checkpoint import Checkpointer

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    files = list_images(cfg.inputs)
    checkpoint = Checkpointer.load(cfg.checkpoint)
    model = build_model(cfg, checkpoint, device)
    mapping, class_names = dataset_metadata(cfg, checkpoint)
    output = Path(cfg.output)
    vis_dir = Path(cfg.vis_dir) if cfg.vis_dir else output.with_name(output.stem + "_vis")
    if cfg.visualize:
        from maskrcnn.engine.visualize import draw_predictions

        vis_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for image_id, path in enumerate(files):
        rgb = read_image(path)
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)
        with torch.no_grad():
            det = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        results.extend(to_coco_results(path.name, image_id, det, label_to_category_id=mapping,
                                       score_threshold=cfg.score_threshold, mask_threshold=cfg.mask_threshold))
        if cfg.visualize:
            canvas = draw_predictions(image, det, class_names=class_names, score_threshold=cfg.vis_score_threshold,
                                      mask_threshold=cfg.mask_threshold)
            cv2.imwrite(str(vis_dir / f"{path.stem}.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        log.info("%s: %d detections", path, int((det["scores"] >= cfg.score_threshold).sum()))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results))
    log.info("wrote %d results for %d images to %s%s", len(results), len(files), output,
             f" and drawings to {vis_dir}" if cfg.visualize else "")
    return results


@hydra.main(config_path="../configs", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not Path(cfg.paths.data_root).is_absolute():
        cfg.paths.data_root = str(REPO / cfg.paths.data_root)
    predict(cfg)


if __name__ == "__main__":
    main()
