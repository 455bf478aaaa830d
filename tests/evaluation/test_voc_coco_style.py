"""COCO-style AP of a VOC evaluation: hand-worked answers COCOeval must give on the COCO view of
VOC ground truth (IoU thresholds .50:.95, area ranges, difficult objects ignored)."""

import pytest
import torch

from maskrcnn.evaluation import VOCEvaluator
from maskrcnn.evaluation.coco_scoring import COCO_METRIC_NAMES

CLASSES = ["cell", "platelet"]


def annotation(image_id, boxes, labels, difficult=None):
    difficult = [False] * len(labels) if difficult is None else difficult
    return {
        "image_id": image_id,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
    }


def output(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def evaluate(annotations, outputs_by_image, **kwargs):
    evaluator = VOCEvaluator(annotations=annotations, class_names=CLASSES, **kwargs)
    for image_id, out in outputs_by_image.items():
        evaluator.process([{"image_id": image_id}], [out])
    return evaluator.evaluate()


BIG = [0.0, 0.0, 100.0, 100.0]  # area 10000 > 96^2: a "large" object


def test_all_twelve_coco_numbers_are_reported_next_to_voc():
    metrics = evaluate([annotation("a", [BIG], [1])], {"a": output([BIG], [0.9], [1])})
    for name in COCO_METRIC_NAMES:
        assert f"bbox/{name}" in metrics
    assert metrics["bbox/AP"] == pytest.approx(1.0) and metrics["voc/mAP50"] == pytest.approx(1.0)
    assert metrics["bbox/AP-cell"] == pytest.approx(1.0)
    assert "bbox/AP-platelet" not in metrics  # no ground truth of that class


def test_iou_068_counts_at_four_of_ten_thresholds():
    # detection [0, 0, 100, 68] on [0, 0, 100, 100]: IoU 0.68 >= .50 .55 .60 .65, < .70 ... .95
    metrics = evaluate([annotation(1, [BIG], [1])], {1: output([[0, 0, 100, 68]], [0.9], [1])})
    assert metrics["bbox/AP"] == pytest.approx(0.4)
    assert metrics["bbox/AP50"] == pytest.approx(1.0)
    assert metrics["bbox/AP75"] == pytest.approx(0.0)
    assert metrics["voc/mAP50"] == pytest.approx(1.0)  # VOC only asks for IoU > 0.5


def test_area_ranges_follow_box_area_in_continuous_pixels():
    small = [10.0, 10.0, 30.0, 30.0]  # 20 x 20 = 400 < 32^2: small (VOC's "+1" would not change it)
    medium = [200.0, 200.0, 250.0, 250.0]  # 2500: medium
    anns = [annotation(1, [small, medium, [300, 300, 400, 400]], [1, 1, 2])]
    # the small one is found, the medium one missed, the large platelet found
    metrics = evaluate(anns, {1: output([small, [300, 300, 400, 400]], [0.9, 0.8], [1, 2])})
    assert metrics["bbox/APs"] == pytest.approx(1.0)
    assert metrics["bbox/APm"] == pytest.approx(0.0)
    assert metrics["bbox/APl"] == pytest.approx(1.0)
    assert metrics["bbox/AP-cell"] == pytest.approx(0.5, abs=0.01)  # recall 1/2 at precision 1


def test_detection_on_a_difficult_object_is_ignored_not_a_false_positive():
    anns = [annotation(1, [BIG, [200, 200, 300, 300]], [1, 1], difficult=[False, True])]
    # the higher-scored detection sits on the difficult object: ignored, so AP stays 1
    metrics = evaluate(anns, {1: output([[200, 200, 300, 300], BIG], [0.95, 0.5], [1, 1])})
    assert metrics["bbox/AP"] == pytest.approx(1.0)
    assert metrics["voc/mAP50"] == pytest.approx(1.0)
    # the same scene with the object not difficult and missed halves the recall instead
    anns = [annotation(1, [BIG, [200, 200, 300, 300]], [1, 1])]
    metrics = evaluate(anns, {1: output([BIG], [0.5], [1])})
    assert metrics["bbox/AP50"] == pytest.approx(0.5, abs=0.01)


def test_string_image_ids_and_only_processed_images_are_scored():
    anns = [annotation("BloodImage_001", [BIG], [1]), annotation("BloodImage_002", [BIG], [2])]
    # only the first image is processed: the platelet of the second must not count as missed
    metrics = evaluate(anns, {"BloodImage_001": output([BIG], [0.9], [1])})
    assert metrics["bbox/AP"] == pytest.approx(1.0)
    assert "bbox/AP-platelet" not in metrics


def test_coco_style_can_be_turned_off():
    metrics = evaluate([annotation(1, [BIG], [1])], {1: output([BIG], [0.9], [1])}, coco_style=False)
    assert "voc/mAP50" in metrics and not any(k.startswith("bbox/") for k in metrics)
