"""Class-agnostic COCO scoring (``class_agnostic=True``, tools/eval.py ``class_agnostic=true``): a
hand-worked case, and parity with pycocotools' class-aware COCOeval on the same data with every
category merged into one."""

import copy
import json

import pytest
import torch
from conftest import coco_from_dict
from hydra import compose, initialize_config_dir
from test_coco_evaluator import IOU_TYPES, box_masks, box_output, pycocotools_stats
from test_results_scoring import write_results

from maskrcnn.engine.config import REPO_ROOT, ConfigError, validate_eval_config
from maskrcnn.evaluation import COCO_METRIC_NAMES, build_evaluator, score_coco_results


def test_right_place_wrong_class_counts_only_when_classes_are_ignored(tiny_coco_dataset):
    # The cat of image 1 found exactly but called a dog (0.9); the dog of image 2 found (0.8).
    # Class-aware: cat AP 0 (missed); dog AP 0.5 (precision 1/2 at its only recall step, 1.0),
    # so AP = 0.25. Ignoring classes both objects are found: AP 1.
    cat, dog = [10, 10, 40, 40], [20, 30, 50, 40]
    evaluator = build_evaluator(tiny_coco_dataset, "coco", class_agnostic=True)
    evaluator.process([{"image_id": torch.tensor(1)}], [box_output([cat], [0.9], [2], masks=box_masks([cat]))])
    evaluator.process([{"image_id": torch.tensor(2)}], [box_output([dog], [0.8], [2], masks=box_masks([dog]))])
    metrics = evaluator.evaluate()
    for iou_type in IOU_TYPES:
        assert metrics[f"{iou_type}/AP"] == pytest.approx(0.25)
        assert metrics[f"{iou_type}/AP-cat"] == 0.0 and metrics[f"{iou_type}/AP-dog"] == pytest.approx(0.5)
        assert metrics[f"{iou_type}/agnostic_AP"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/agnostic_AR100"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/agnostic_APs"] == -1.0  # no small object: COCOeval's -1
        assert f"{iou_type}/agnostic" in evaluator.summaries
    assert not any("agnostic" in name for name in evaluator.per_category["bbox"])


def test_without_the_option_there_are_no_agnostic_numbers(tiny_coco_dataset):
    cat = [10, 10, 40, 40]
    evaluator = build_evaluator(tiny_coco_dataset, "coco")
    evaluator.process([{"image_id": torch.tensor(1)}], [box_output([cat], [0.9], [1])])
    assert not any("agnostic" in name for name in evaluator.evaluate())


def test_the_voc_evaluator_refuses_class_agnostic_scoring():
    with pytest.raises(ValueError, match="class-agnostic scoring is COCO scoring"):
        build_evaluator(object(), "voc", class_agnostic=True)


def _one_category(coco_gt, results):
    """The oracle's input: the ground truth and results with every category id replaced by 1."""
    dataset = copy.deepcopy(coco_gt.dataset)
    dataset["categories"] = [{"id": 1, "name": "object"}]
    for ann in dataset["annotations"]:
        ann["category_id"] = 1
    return coco_from_dict(dataset), [{**r, "category_id": 1} for r in results]


def test_agnostic_scores_equal_class_aware_scores_with_the_categories_merged(coco_mini, coco_mini_json, tmp_path):
    # jittered detections: 10% with a wrong category, plus false positives of random categories
    path = tmp_path / "results.json"
    results = write_results(path, coco_mini.coco)
    metrics = score_coco_results(coco_mini_json, path, class_agnostic=True)
    merged_gt, merged_results = _one_category(coco_mini.coco, results)
    for iou_type in IOU_TYPES:
        ours = {name: metrics[f"{iou_type}/agnostic_{name}"] for name in COCO_METRIC_NAMES}
        assert ours == pytest.approx(pycocotools_stats(merged_gt, merged_results, iou_type), abs=1e-12)
        assert 0.15 < ours["AP"] < 0.9
    class_aware = score_coco_results(coco_mini_json, path)
    assert {k: v for k, v in metrics.items() if "agnostic" not in k} == class_aware  # unchanged by the option
    assert json.loads(path.read_text()) == results  # the results file is read, not changed


def _eval_config(overrides):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def test_eval_config_allows_class_agnostic_only_for_coco_scoring():
    cfg = validate_eval_config(_eval_config(["dataset=synthetic", "checkpoint=a.pt", "class_agnostic=true"]))
    assert cfg.class_agnostic is True
    assert validate_eval_config(_eval_config(["dataset=bccd", "results=r.json", "class_agnostic=true"]))
    with pytest.raises(ConfigError, match=r"class_agnostic: class-agnostic scoring is COCO scoring; dataset bccd"):
        validate_eval_config(_eval_config(["dataset=bccd", "checkpoint=a.pt", "class_agnostic=true"]))
