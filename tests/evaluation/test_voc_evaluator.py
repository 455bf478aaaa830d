"""VOC mAP: hand-worked precision/recall curves, difficult objects, the devkit box convention."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from maskrcnn.evaluation import VOCEvaluator, build_evaluator, voc_ap
from maskrcnn.evaluation.voc_evaluation import devkit_iou, to_devkit

CLASSES = ["cell", "platelet"]


def annotation(image_id, boxes, labels, difficult=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    difficult = [False] * len(labels) if difficult is None else difficult
    return {
        "image_id": image_id,
        "file_name": f"{image_id}.jpg",
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
    }


def output(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def run(annotations, outputs_by_image):
    evaluator = VOCEvaluator(annotations=annotations, class_names=CLASSES)
    evaluator.reset()
    for image_id, out in outputs_by_image.items():
        evaluator.process([{"image_id": image_id}], [out])
    return evaluator.evaluate(), evaluator


# three well separated objects of class 1 (0-based continuous XYXY)
A, B, C = [0, 0, 20, 20], [50, 0, 70, 20], [0, 50, 20, 70]


def test_perfect_detections_score_one_under_both_definitions():
    annotations = [
        annotation(0, [A, B], [1, 2]),
        annotation(1, [C], [1]),
        annotation(2, [], []),
    ]
    outputs = {0: output([A, B], [0.9, 0.8], [1, 2]), 1: output([C], [0.7], [1]), 2: output([], [], [])}
    metrics, evaluator = run(annotations, outputs)
    assert metrics["voc/mAP50_07"] == pytest.approx(1.0)
    assert metrics["voc/mAP50"] == pytest.approx(1.0)
    assert metrics["voc/AP50-cell"] == pytest.approx(1.0) and metrics["voc/AP50_07-platelet"] == pytest.approx(1.0)
    table = evaluator.per_category_table()
    assert "| cell | 1.000 | 1.000 |" in table and table.startswith("| category | AP50_07 | AP50 |")


def test_half_recall_distinguishes_11_point_from_area():
    # 2 objects, one detected (rec 0.5, prec 1), nothing else.
    # area: precision envelope 1 on recall [0, 0.5], 0 after -> AP = 0.5
    # 07: thresholds 0, .1, .2, .3, .4, .5 see precision 1, .6 ... 1.0 see none -> AP = 6/11
    metrics, _ = run([annotation(0, [A, B], [1, 1])], {0: output([A], [0.9], [1])})
    assert metrics["voc/AP50-cell"] == pytest.approx(0.5)
    assert metrics["voc/AP50_07-cell"] == pytest.approx(6 / 11)
    # platelet has no object: no AP, and it does not pull the mean down
    assert "voc/AP50-platelet" not in metrics
    assert metrics["voc/mAP50"] == pytest.approx(0.5)


def test_precision_steps_distinguish_11_point_from_area():
    # 3 objects; detections by score: TP(A), FP (nothing there), TP(B), FP (duplicate of A).
    # cumulative (recall, precision): (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2)
    # area: envelope is 1 up to recall 1/3 and 2/3 up to 2/3 -> 1/3 * 1 + 1/3 * 2/3 = 5/9
    # 07: t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 2/3; t = .7 ... 1 -> 0  => (4 + 3 * 2/3) / 11 = 6/11
    detections = output([A, [100, 100, 120, 120], B, A], [0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1])
    metrics, _ = run([annotation(0, [A, B, C], [1, 1, 1])], {0: detections})
    assert metrics["voc/AP50-cell"] == pytest.approx(5 / 9)
    assert metrics["voc/AP50_07-cell"] == pytest.approx(6 / 11)


def test_voc_ap_matches_hand_values_directly():
    recall = np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    precision = np.array([1, 1 / 2, 2 / 3, 1 / 2])
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 9)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6 / 11)
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=False) == 0.0


def test_detection_on_difficult_object_is_neither_tp_nor_fp():
    # B is difficult. The detection on B comes first; as a FP it would halve the precision of A's TP.
    annotations = [annotation(0, [A, B], [1, 1], difficult=[False, True])]
    metrics, _ = run(annotations, {0: output([B, A], [0.95, 0.9], [1, 1])})
    assert metrics["voc/AP50-cell"] == pytest.approx(1.0)
    assert metrics["voc/AP50_07-cell"] == pytest.approx(1.0)
    # B not annotated at all: the same detection on it is a FP ranked first
    annotations = [annotation(0, [A], [1])]
    metrics, _ = run(annotations, {0: output([B, A], [0.95, 0.9], [1, 1])})
    assert metrics["voc/AP50-cell"] == pytest.approx(0.5)  # envelope 0.5 over recall [0, 1]


def test_missed_difficult_object_does_not_count_as_positive():
    annotations = [annotation(0, [A, B], [1, 1], difficult=[False, True])]
    metrics, _ = run(annotations, {0: output([A], [0.9], [1])})
    assert metrics["voc/AP50-cell"] == pytest.approx(1.0)
    annotations = [annotation(0, [A, B], [1, 1])]
    metrics, _ = run(annotations, {0: output([A], [0.9], [1])})
    assert metrics["voc/AP50-cell"] == pytest.approx(0.5)


def test_empty_predictions_score_zero():
    annotations = [annotation(0, [A, B], [1, 2]), annotation(1, [C], [1])]
    metrics, _ = run(annotations, {0: output([], [], []), 1: output([], [], [])})
    assert metrics["voc/mAP50"] == 0.0 and metrics["voc/mAP50_07"] == 0.0


def test_box_convention_follows_detectron2_devkit_mapping():
    # Devkit box (1, 1, 10, 10) is 10 x 10 pixels; our loader gives 0-based (0, 0, 10, 10).
    # A detection (0, 0, 10, 5) covers exactly half of it: IoU 0.5 is not > 0.5 -> FP.
    # (The devkit "+1" applied to unshifted 0-based boxes would give 11*6/121 = 0.545 -> TP.)
    gt = [annotation(0, [[0, 0, 10, 10]], [1])]
    metrics, _ = run(gt, {0: output([[0, 0, 10, 5]], [0.9], [1])})
    assert metrics["voc/AP50-cell"] == 0.0
    metrics, _ = run(gt, {0: output([[0, 0, 10, 5.2]], [0.9], [1])})  # IoU 0.52
    assert metrics["voc/AP50-cell"] == pytest.approx(1.0)
    # the devkit formula on devkit coordinates
    assert devkit_iou(np.array([1.0, 1, 10, 5]), np.array([[1.0, 1, 10, 10]]))[0] == pytest.approx(0.5)


def test_devkit_iou_after_mapping_equals_continuous_iou():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=generator) * 50
    wh = torch.rand(40, 2, generator=generator) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1).double()
    expected = box_iou(boxes[:1], boxes[1:])[0].numpy()
    ours = devkit_iou(to_devkit(boxes[0].numpy())[0], to_devkit(boxes[1:].numpy()))
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)


def test_build_evaluator_reads_get_annotation_and_only_counts_processed_images():
    annotations = [annotation("img_a", [A], [1]), annotation("img_b", [B], [2])]
    dataset = type(
        "VOCLike",
        (),
        {
            "get_annotation": lambda self, i: annotations[i],
            "class_names": CLASSES,
            "__len__": lambda self: len(annotations),
        },
    )()
    evaluator = build_evaluator(dataset, "voc")
    evaluator.process([{"image_id": "img_a"}], [output([A], [0.5], [1])])
    metrics = {k: v for k, v in evaluator.evaluate().items() if k.startswith("voc/")}
    assert metrics == {
        "voc/mAP50_07": pytest.approx(1.0),
        "voc/mAP50": pytest.approx(1.0),
        "voc/AP50_07-cell": pytest.approx(1.0),
        "voc/AP50-cell": pytest.approx(1.0),
    }
    evaluator.reset()
    assert evaluator.evaluate() == {}


def test_bad_inputs_raise_clear_errors():
    evaluator = VOCEvaluator(annotations=[annotation(0, [A], [1])], class_names=CLASSES)
    with pytest.raises(KeyError, match="image_id 5"):
        evaluator.process([{"image_id": 5}], [output([A], [0.5], [1])])
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        VOCEvaluator(annotations=[annotation(0, [A], [3])], class_names=CLASSES)
    with pytest.raises(ValueError, match="unknown evaluator kind"):
        build_evaluator(object(), "lvis")
    with pytest.raises(ValueError, match="needs a VOC-format dataset"):
        build_evaluator(object(), "voc")
