"""tools/eval.py results=PATH with polygon and uncompressed-RLE segmentations: scored as the same
masks in compressed RLE (pycocotools' COCOeval, which reads RLE only, run directly)."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from test_coco_evaluator import pycocotools_stats

from maskrcnn.evaluation import COCO_METRIC_NAMES, score_coco_results


def shifted_polygon_results(coco_gt, seed=0):
    """Each non-crowd polygon object of the ground truth, shifted by a few pixels, as a result."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in coco_gt.dataset["annotations"]:
        if ann.get("iscrowd") or not isinstance(ann["segmentation"], list) or rng.random() < 0.2:
            continue
        dx, dy = rng.normal(0, 3, size=2)
        polygons = [
            [v + (dx if i % 2 == 0 else dy) for i, v in enumerate(p)] for p in ann["segmentation"] if len(p) >= 6
        ]
        if polygons:
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "segmentation": polygons,
                    "score": float(rng.random()),
                }
            )
    return results


def as_rle(results, coco_gt, *, compressed=True):
    out = []
    for r in results:
        info = coco_gt.imgs[r["image_id"]]
        rle = mask_util.merge(mask_util.frPyObjects(r["segmentation"], info["height"], info["width"]))
        if compressed:
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
        else:  # COCO's uncompressed form: run lengths in column-major order
            flat = mask_util.decode(rle).flatten(order="F")
            changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
            segmentation = {"size": rle["size"], "counts": np.diff(np.concatenate([[0], changes])).tolist()}
        out.append({**r, "segmentation": segmentation})
    return out


def test_polygon_and_uncompressed_rle_results_score_as_rle(coco_mini, coco_mini_json, tmp_path):
    polygons = shifted_polygon_results(coco_mini.coco)
    rles = as_rle(polygons, coco_mini.coco)
    expected = pycocotools_stats(coco_mini.coco, rles, "segm")
    assert 0.1 < expected["AP"] < 0.95
    for name, results in (("polygons", polygons), ("uncompressed", as_rle(polygons, coco_mini.coco, compressed=False))):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(results))
        metrics = score_coco_results(coco_mini_json, path, iou_types=("segm",))
        assert {k: metrics[f"segm/{k}"] for k in COCO_METRIC_NAMES} == expected, name


def test_unreadable_segmentation_is_named(coco_mini_json, tmp_path):
    path = tmp_path / "bad.json"
    image_id = json.loads(coco_mini_json.read_text())["images"][0]["id"]
    path.write_text(json.dumps([{"image_id": image_id, "category_id": 1, "score": 0.5, "segmentation": [[1, 2, 3]]}]))
    with pytest.raises(ValueError, match="entry 0: segmentation is a list but not polygons"):
        score_coco_results(coco_mini_json, path)
