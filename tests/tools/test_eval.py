"""tools/eval.py results=PATH: scoring a COCO results file through the Hydra config, against
pycocotools' COCOeval run directly on the same files (coco-mini)."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn.engine import ConfigError
from maskrcnn.engine import evaluate as eval_run

REPO = Path(__file__).resolve().parents[2]


def compose_eval(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def _noisy_results(shared_data, tmp_path):
    """coco-mini's ground truth file and a results file detecting 70% of its objects with noisy boxes."""
    gt_file = shared_data / "coco-mini" / "annotations" / "instances_train2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
    rng = np.random.default_rng(0)
    results = []
    for ann in gt.dataset["annotations"]:
        if ann.get("iscrowd") or rng.random() < 0.3:  # miss 30% of the objects
            continue
        x, y, w, h = ann["bbox"]
        dx, dy = rng.normal(0, 0.08 * w), rng.normal(0, 0.08 * h)  # noisy boxes: AP strictly between 0 and 1
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [x + dx, y + dy, w, h],
                "score": float(rng.random()),
            }
        )
    results_file = tmp_path / "detections.json"
    results_file.write_text(json.dumps(results))
    return gt, gt_file, results_file


def _cocoeval_stats(gt, results_file, *, use_cats=True):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(str(results_file)), "bbox")
        coco_eval.params.useCats = int(use_cats)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return dict(zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], coco_eval.stats[:6]))


def test_results_file_scored_like_cocoeval(shared_data, tmp_path):
    gt, gt_file, results_file = _noisy_results(shared_data, tmp_path)
    cfg = compose_eval(["dataset=coco", f"dataset.val.annotation_file={gt_file}", f"results={results_file}"])
    metrics = eval_run.run(cfg, tmp_path / "out")

    expected = _cocoeval_stats(gt, results_file)
    assert 0.1 < expected["AP"] < 0.9
    for name, value in expected.items():
        assert metrics[f"bbox/{name}"] == pytest.approx(value, abs=1e-12), name
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["results"] == str(results_file) and written["bbox/AP"] == metrics["bbox/AP"]
    assert not any("agnostic" in name for name in written)


def test_class_agnostic_adds_cocoeval_numbers_without_categories(shared_data, tmp_path):
    gt, gt_file, results_file = _noisy_results(shared_data, tmp_path)
    overrides = ["dataset=coco", f"dataset.val.annotation_file={gt_file}", f"results={results_file}"]
    eval_run.run(compose_eval([*overrides, "class_agnostic=true"]), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name, value in _cocoeval_stats(gt, results_file, use_cats=False).items():
        assert written[f"bbox/agnostic_{name}"] == pytest.approx(value, abs=1e-12), name
    assert written["bbox/AP"] == pytest.approx(_cocoeval_stats(gt, results_file)["AP"], abs=1e-12)


def test_results_scoring_needs_a_coco_annotation_file(tmp_path):
    cfg = compose_eval(["dataset=bccd", f"results={tmp_path / 'r.json'}"])
    with pytest.raises(ConfigError, match="no annotation_file"):
        eval_run.run(cfg, tmp_path)
