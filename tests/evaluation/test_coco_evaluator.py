"""COCOEvaluator: perfect and empty detections, crowd regions, images without objects, parity with
pycocotools' COCOeval run directly on coco-mini."""

import contextlib
import io

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from maskrcnn.evaluation import COCO_METRIC_NAMES, COCOEvaluator, build_evaluator, encode_masks

IOU_TYPES = ("bbox", "segm")


def xywh_to_xyxy(boxes):
    boxes = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def box_output(boxes_xywh, scores, labels, *, masks=None):
    out = {
        "boxes": xywh_to_xyxy(boxes_xywh).float(),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if masks is not None:
        out["masks"] = masks
    return out


def box_masks(boxes_xywh, height=100, width=100):
    """(D, 1, H, W) probabilities: 0.9 inside each integer box, 0.1 outside."""
    masks = torch.full((len(boxes_xywh), 1, height, width), 0.1)
    for i, (x, y, w, h) in enumerate(boxes_xywh):
        masks[i, 0, y : y + h, x : x + w] = 0.9
    return masks


def evaluate(dataset, batches):
    evaluator = build_evaluator(dataset, "coco")
    evaluator.reset()
    for image_id, out in batches:
        evaluator.process([{"image_id": torch.tensor(image_id)}], [out])
    return evaluator.evaluate(), evaluator


def test_perfect_detections_score_one_with_crowd_and_empty_image(tiny_coco_dataset):
    cat, dog = [10, 10, 40, 40], [20, 30, 50, 40]
    batches = [
        (1, box_output([cat], [0.9], [1], masks=box_masks([cat]))),
        (2, box_output([dog], [0.8], [2], masks=box_masks([dog]))),
        (3, box_output([], [], [], masks=box_masks([]))),
    ]
    metrics, evaluator = evaluate(tiny_coco_dataset, batches)
    for iou_type in IOU_TYPES:
        assert metrics[f"{iou_type}/AP"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/AP50"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/AR100"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/AP-cat"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}/APs"] == -1.0  # COCOeval: no ground truth in that range
    assert set(evaluator.per_category) == {"bbox", "segm"}
    assert "| dog | 1.000 | 1.000 |" in evaluator.per_category_table()


def test_detection_on_crowd_region_is_ignored(tiny_coco_dataset):
    # only image 1 is processed: its one non-crowd object is a cat, so bbox/AP50 is the cat's AP50
    cat, crowd = [10, 10, 40, 40], [60, 60, 30, 30]
    # a higher-scored cat detection on the crowd region: matched to the crowd, then ignored
    metrics, _ = evaluate(tiny_coco_dataset, [(1, box_output([crowd, cat], [0.95, 0.9], [1, 1]))])
    assert metrics["bbox/AP50"] == pytest.approx(1.0)
    # the same box moved off the crowd region: a false positive ranked before the true positive,
    # precision 1/2 at full recall, so the interpolated precision is 0.5 at every recall point
    metrics, _ = evaluate(tiny_coco_dataset, [(1, box_output([[0, 60, 30, 30], cat], [0.95, 0.9], [1, 1]))])
    assert metrics["bbox/AP50"] == pytest.approx(0.5)


def test_image_without_objects_counts_its_false_positives(tiny_coco_dataset):
    cat = [10, 10, 40, 40]
    metrics, _ = evaluate(tiny_coco_dataset, [(1, box_output([cat], [0.9], [1]))])
    assert metrics["bbox/AP50"] == pytest.approx(1.0)
    # processing image 3 (no objects) with a confident cat detection: FP before the TP
    metrics, _ = evaluate(tiny_coco_dataset, [(1, box_output([cat], [0.9], [1])), (3, box_output([cat], [0.95], [1]))])
    assert metrics["bbox/AP50"] == pytest.approx(0.5)


def test_no_predictions_score_zero_and_no_masks_means_bbox_only(tiny_coco_dataset):
    batches = [(i, box_output([], [], [])) for i in (1, 2, 3)]
    metrics, _ = evaluate(tiny_coco_dataset, batches)
    assert {name for name in metrics} == {f"bbox/{n}" for n in COCO_METRIC_NAMES} | {"bbox/AP-cat", "bbox/AP-dog"}
    assert metrics["bbox/AP"] == 0.0 and metrics["bbox/AR100"] == 0.0 and metrics["bbox/AP-dog"] == 0.0
    batches = [(i, box_output([], [], [], masks=box_masks([]))) for i in (1, 2, 3)]
    metrics, _ = evaluate(tiny_coco_dataset, batches)
    assert metrics["segm/AP"] == 0.0 and metrics["bbox/AP"] == 0.0


def test_nothing_processed_returns_empty_dict(tiny_coco_dataset):
    evaluator = build_evaluator(tiny_coco_dataset, "coco")
    assert evaluator.evaluate() == {}


def test_bad_outputs_raise_clear_errors(tiny_coco_dataset):
    evaluator = build_evaluator(tiny_coco_dataset, "coco")
    with pytest.raises(KeyError, match="image_id 42"):
        evaluator.process([{"image_id": 42}], [box_output([], [], [])])
    with pytest.raises(ValueError, match=r"labels \[5\] have no COCO category"):
        evaluator.process([{"image_id": 1}], [box_output([[0, 0, 5, 5]], [0.5], [5])])
    with pytest.raises(ValueError, match="original image pixels"):
        evaluator.process([{"image_id": 1}], [box_output([[0, 0, 5, 5]], [0.5], [1], masks=torch.zeros(1, 1, 50, 50))])
    with pytest.raises(ValueError, match="absent from the ground truth"):
        COCOEvaluator(coco_gt=tiny_coco_dataset.coco, label_to_category_id={1: 99})
    with pytest.raises(ValueError, match="needs a COCO-format dataset"):
        build_evaluator(object(), "coco")


def test_encode_masks_thresholds_at_half():
    probabilities = torch.tensor([[0.2, 0.5], [0.51, 0.9]]).reshape(1, 1, 2, 2)
    (rle,) = encode_masks(probabilities)
    assert isinstance(rle["counts"], str)
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded, [[0, 0], [1, 1]])


# ---------------------------------------------------------------- coco-mini against pycocotools


def pycocotools_stats(coco_gt, results, iou_type, img_ids=None):
    """COCOeval run directly (our documented convention: segm results carry no bbox)."""
    if iou_type == "segm":
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if img_ids is not None:
            coco_eval.params.imgIds = sorted(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return dict(zip(COCO_METRIC_NAMES, coco_eval.stats.tolist()))


def jittered_detections(coco_gt, image_ids, seed=0):
    """Per image a list of (xyxy box, category id, score, RLE): every non-crowd object detected with
    a jittered box and its polygons shifted by a few pixels, 10% with a wrong category, random
    scores, plus 0-3 random false positives (rectangles)."""
    rng = np.random.default_rng(seed)
    category_ids = sorted(coco_gt.getCatIds())
    detections = {}
    for image_id in image_ids:
        info = coco_gt.imgs[image_id]
        height, width = info["height"], info["width"]
        found = []
        for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_id, iscrowd=False)):
            x, y, w, h = ann["bbox"]
            x1, y1 = x + rng.normal(0, 0.08) * w, y + rng.normal(0, 0.08) * h
            x2, y2 = x + w + rng.normal(0, 0.08) * w, y + h + rng.normal(0, 0.08) * h
            category = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(category_ids))
            dx, dy = rng.integers(-3, 4, size=2)
            polygons = [[v + (dx if k % 2 == 0 else dy) for k, v in enumerate(p)] for p in ann["segmentation"]]
            rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
            found.append(([x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)], category, rng.uniform(0.05, 1), rle))
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = rng.uniform(0, width - 20), rng.uniform(0, height - 20)
            x2, y2 = x1 + rng.uniform(5, width - x1), y1 + rng.uniform(5, height - y1)
            rle = mask_util.frPyObjects(np.array([[x1, y1, x2 - x1, y2 - y1]]), height, width)[0]
            found.append(([x1, y1, x2, y2], int(rng.choice(category_ids)), rng.uniform(0.05, 1), rle))
        detections[image_id] = found
    return detections


def as_model_output(found, height, width, label_of_category):
    """A model-style output: float32 XYXY boxes, labels, scores and (D, 1, H, W) probabilities."""
    binary = np.stack([mask_util.decode(rle) for *_, rle in found]) if found else np.zeros((0, height, width), np.uint8)
    ramp = torch.linspace(0, 0.45, width).expand(height, width)  # < 0.5 off the mask
    return {
        "boxes": torch.tensor([box for box, *_ in found], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([label_of_category[c] for _, c, *_ in found], dtype=torch.int64),
        "scores": torch.tensor([score for _, _, score, _ in found], dtype=torch.float32),
        "masks": (0.55 * torch.from_numpy(binary).float() + ramp).unsqueeze(1),  # > 0.5 exactly on the mask
    }


def reference_results(outputs, label_to_category_id):
    """The COCO results list of model outputs, written independently of the evaluator."""
    results = []
    for image_id, out in outputs.items():
        boxes = out["boxes"].double()
        for i in range(len(boxes)):
            x1, y1, x2, y2 = boxes[i].tolist()
            binary = (out["masks"][i, 0] > 0.5).numpy().astype(np.uint8)
            rle = mask_util.encode(np.asfortranarray(binary))
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label_to_category_id[int(out["labels"][i])],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(out["scores"][i]),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    return results


def test_coco_mini_matches_pycocotools(coco_mini):
    """Model-style outputs on 24 coco-mini images (full-size masks are heavy) through the evaluator,
    against COCOeval on the same detections written as a results list independently."""
    coco = coco_mini.coco
    label_of_category = {c: label for label, c in coco_mini.label_to_category_id.items()}
    image_ids = sorted(coco.getImgIds())[:24]
    detections = jittered_detections(coco, image_ids)
    evaluator = build_evaluator(coco_mini, "coco")
    outputs = {}
    for start in range(0, len(image_ids), 4):  # batches of 4, as a test loader would give
        batch = image_ids[start : start + 4]
        for i in batch:
            info = coco.imgs[i]
            outputs[i] = as_model_output(detections[i], info["height"], info["width"], label_of_category)
        evaluator.process([{"image_id": i} for i in batch], [outputs[i] for i in batch])
    metrics = evaluator.evaluate()

    results = reference_results(outputs, coco_mini.label_to_category_id)
    for iou_type in IOU_TYPES:
        expected = pycocotools_stats(coco, results, iou_type, img_ids=image_ids)
        ours = {name: metrics[f"{iou_type}/{name}"] for name in COCO_METRIC_NAMES}
        assert ours == expected, iou_type
        assert 0.15 < ours["AP"] < 0.9 and ours["AP50"] > ours["AP75"]  # non-trivial detections
    categories = {a["category_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image_ids, iscrowd=False))}
    assert len(evaluator.per_category["bbox"]) == len(categories)
