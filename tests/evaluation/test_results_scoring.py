"""score_coco_results (tools/eval.py results=PATH) against pycocotools' COCOeval run directly."""

import json

import pytest
from test_coco_evaluator import jittered_detections, pycocotools_stats

from maskrcnn.evaluation import COCO_METRIC_NAMES, score_coco_results


def write_results(path, coco_gt, *, with_segm=True):
    results = []
    for image_id, found in jittered_detections(coco_gt, sorted(coco_gt.getImgIds()), seed=1).items():
        for (x1, y1, x2, y2), category_id, score, rle in found:
            result = {
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": score,
            }
            if with_segm:
                result["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            results.append(result)
    path.write_text(json.dumps(results))
    return json.loads(path.read_text())  # what a reader of the file sees


def test_results_file_on_coco_mini_matches_pycocotools(coco_mini, coco_mini_json, tmp_path):
    path = tmp_path / "results.json"
    results = write_results(path, coco_mini.coco)
    metrics = score_coco_results(coco_mini_json, path)
    for iou_type in ("bbox", "segm"):
        expected = pycocotools_stats(coco_mini.coco, results, iou_type)
        ours = {name: metrics[f"{iou_type}/{name}"] for name in COCO_METRIC_NAMES}
        assert ours == expected, iou_type
        assert 0.15 < ours["AP"] < 0.9
    assert 0.0 <= metrics["segm/AP-person"] <= 1.0


def test_results_without_segmentation_score_bbox_only(coco_mini, coco_mini_json, tmp_path):
    path = tmp_path / "boxes.json"
    results = write_results(path, coco_mini.coco, with_segm=False)
    metrics = score_coco_results(coco_mini_json, path)
    assert not any(name.startswith("segm/") for name in metrics)
    assert {name: metrics[f"bbox/{name}"] for name in COCO_METRIC_NAMES} == pycocotools_stats(
        coco_mini.coco, results, "bbox"
    )


def test_empty_results_score_zero(coco_mini_json, tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]")
    metrics = score_coco_results(coco_mini_json, path)
    assert metrics["bbox/AP"] == 0.0 and metrics["segm/AP"] == 0.0 and metrics["bbox/AR100"] == 0.0


def test_bad_files_raise_clear_errors(coco_mini_json, tmp_path):
    with pytest.raises(FileNotFoundError, match="results file"):
        score_coco_results(coco_mini_json, tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="ground-truth"):
        score_coco_results(tmp_path / "gt.json", tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"image_id": 1}')
    with pytest.raises(ValueError, match="JSON list"):
        score_coco_results(coco_mini_json, bad)
    bad.write_text('[{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}]')
    with pytest.raises(ValueError, match="not in the ground truth"):
        score_coco_results(coco_mini_json, bad)
    bad.write_text('[{"image_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}]')
    with pytest.raises(ValueError, match="lacks"):
        score_coco_results(coco_mini_json, bad)
