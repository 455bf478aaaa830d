"""PASCAL VOC detection mAP at IoU 0.5: the VOC2007 11-point and the VOC2010+ area definitions.

Follows the devkit's ``VOCevaldet`` as ported by py-faster-rcnn and detectron2
(``detectron2/evaluation/pascal_voc_evaluation.py``):
- per class, detections of all images are sorted by score (descending; ties keep the order in
  which the images were evaluated, sorted by image id, then the model's order);
- a detection matches the ground truth of its image with the largest IoU; it is a true positive
  when that IoU is > 0.5 (strict) and the object was not matched before, a false positive
  otherwise; a detection whose best match is a ``difficult`` object is neither;
- recall = TP / number of non-difficult objects; precision = TP / (TP + FP);
- VOC2007 AP: mean over the 11 recall thresholds 0, 0.1, ..., 1 of the best precision at a recall
  >= the threshold; area AP (VOC2010+): area under the precision envelope (precision made
  monotonically decreasing), summed at the recall steps.

Box convention. The devkit's boxes are 1-based inclusive integer pixels, and its IoU adds one
pixel to each width and height. Our VOC loader, like detectron2's, turns a devkit box
(X1, Y1, X2, Y2) into 0-based continuous XYXY (X1 - 1, Y1 - 1, X2, Y2), and the model predicts in
those coordinates. Like detectron2 we map both ground truth and detections back to devkit
coordinates (x1 + 1, y1 + 1, x2, y2) and apply the devkit's "+1" IoU; this equals the plain
continuous IoU in our coordinates (a 10 x 10 pixel object is exactly 10 x 10), and reproduces the
devkit's numbers on its own boxes.

Metrics are fractions in [0, 1] (not percentages): ``voc/mAP50_07``, ``voc/mAP50`` (area) and per
class ``voc/AP50_07-<class>``, ``voc/AP50-<class>``. The mean is over the classes that have at least
one non-difficult object among the evaluated images; the others have no AP (left out).

COCO-style AP of the same detections (``coco_style=True``, the default): the ground truth is
viewed as a COCO dataset and scored by pycocotools' COCOeval, giving ``bbox/AP``, ``bbox/AP50``,
``bbox/AP75``, ``bbox/APs`` ... exactly as :class:`~maskrcnn.evaluation.COCOEvaluator` names them.
In that view a box (x1, y1, x2, y2) in our 0-based continuous coordinates is the COCO box
[x1, y1, x2 - x1, y2 - y1] with area (x2 - x1) (y2 - y1) (COCO boxes are continuous too, so no
"+1"), and a ``difficult`` object is a crowd region (``iscrowd=1``): COCOeval's only way to ignore
an object. A detection matched to it is neither true nor false positive, as in the VOC metric,
but COCOeval measures crowd overlap as intersection over the detection's area, not IoU, so a
detection lying inside a difficult box is ignored where VOC might count a false positive. (mmdetection's
COCO-style VOC evaluation makes the same choice.)
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from .coco_evaluation import image_id_of
from .coco_scoring import coco_metrics
from .gather import predictions_to_score
from .table import format_per_category_table

logger = logging.getLogger(__name__)


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool) -> float:
    """AP from a precision/recall curve (devkit / detectron2 ``voc_ap``).

    Args:
        recall, precision: (D,) cumulative recall and precision after each detection in score order.
        use_07_metric: True for the VOC2007 11-point interpolation, False for the area (VOC2010+).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = np.max(precision[recall >= t]) if np.any(recall >= t) else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # precision envelope: the best precision at this recall or any larger one
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    # sum (delta recall) * precision where recall changes
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def devkit_iou(box: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (M, 4), all in devkit coordinates (1-based, inclusive: +1)."""
    ixmin = np.maximum(gt[:, 0], box[0])
    iymin = np.maximum(gt[:, 1], box[1])
    ixmax = np.minimum(gt[:, 2], box[2])
    iymax = np.minimum(gt[:, 3], box[3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inter = iw * ih
    union = (
        (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
        + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
        - inter
    )
    return inter / union


def to_devkit(boxes: np.ndarray) -> np.ndarray:
    """0-based continuous XYXY (our loader and model) -> devkit 1-based inclusive (x1 + 1, y1 + 1, x2, y2)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, :2] += 1.0
    return boxes


def voc_eval_class(
    detections: Sequence[tuple[object, float, np.ndarray]],
    ground_truth: Mapping[object, tuple[np.ndarray, np.ndarray]],
    *,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Precision/recall curve of one class.

    Args:
        detections: (image id, score, box (4,) 0-based XYXY) of this class, any order.
        ground_truth: image id -> (boxes (M, 4) 0-based XYXY, difficult (M,) bool) of this class,
            for every evaluated image (images without objects of the class may be absent).

    Returns:
        (recall (D',), precision (D',), number of non-difficult objects), D' = detections that
        are not ignored (a match to a difficult object is ignored).
    """
    npos = int(sum(int((~difficult).sum()) for _, difficult in ground_truth.values()))
    gt = {image_id: (to_devkit(boxes), difficult.astype(bool)) for image_id, (boxes, difficult) in ground_truth.items()}
    matched = {image_id: np.zeros(len(d), dtype=bool) for image_id, (_, d) in gt.items()}

    scores = np.array([score for _, score, _ in detections], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(detections))
    fp = np.zeros(len(detections))
    for rank, index in enumerate(order):
        image_id, _, box = detections[index]
        box = to_devkit(box)[0]
        if image_id in gt and len(gt[image_id][0]):
            gt_boxes, difficult = gt[image_id]
            ious = devkit_iou(box, gt_boxes)
            best = int(np.argmax(ious))
            if ious[best] > iou_threshold:
                if difficult[best]:
                    continue  # neither true nor false positive
                if not matched[image_id][best]:
                    tp[rank] = 1.0
                    matched[image_id][best] = True
                else:
                    fp[rank] = 1.0
                continue
        fp[rank] = 1.0
    keep = (tp + fp) > 0
    tp = np.cumsum(tp[keep])
    fp = np.cumsum(fp[keep])
    recall = tp / max(npos, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision, npos


class VOCEvaluator:
    """VOC mAP@0.5 (VOC2007 11-point and area) of a detector over a VOC-format dataset.

    Usage: ``reset()``, ``process(targets, outputs)`` per batch, ``evaluate()``. Only the
    processed images are evaluated (their ground truth, difficult objects included, comes from
    ``annotations``). Distributed: gathered with ``all_gather_object``, each image counted once,
    metrics on rank 0, ``{}`` on the other ranks.
    """

    def __init__(
        self,
        *,
        annotations: Sequence[Mapping] | Callable[[], Sequence[Mapping]],
        class_names: Sequence[str],
        iou_threshold: float = 0.5,
        coco_style: bool = True,
    ):
        """
        Args:
            annotations: per image ``image_id``, ``boxes`` (M, 4) 0-based XYXY original pixels,
                ``labels`` (M,) int64 in 1..K, ``difficult`` (M,) bool — all objects, difficult
                included (``dataset.get_annotation(i)`` for every i).
            class_names: label i -> class_names[i - 1].
            iou_threshold: a detection is a true positive above this IoU (strictly).
            coco_style: also score the detections with COCOeval (``bbox/AP`` ...; see the module
                docstring for how VOC ground truth is viewed as COCO).
        """
        self.class_names = list(class_names)
        self.iou_threshold = float(iou_threshold)
        self.coco_style = bool(coco_style)
        self._ground_truth: dict[object, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for annotation in annotations:
            image_id = image_id_of(annotation)
            boxes = np.asarray(_numpy(annotation["boxes"]), dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(_numpy(annotation["labels"]), dtype=np.int64).reshape(-1)
            difficult = np.asarray(_numpy(annotation["difficult"]), dtype=bool).reshape(-1)
            if not (len(boxes) == len(labels) == len(difficult)):
                raise ValueError(
                    f"annotation of image {image_id!r}: {len(boxes)} boxes, {len(labels)} labels, "
                    f"{len(difficult)} difficult flags"
                )
            if len(labels) and (labels.min() < 1 or labels.max() > len(self.class_names)):
                raise ValueError(f"annotation of image {image_id!r}: labels must be in 1..{len(self.class_names)}")
            if image_id in self._ground_truth:
                raise ValueError(f"two annotations have image_id {image_id!r}")
            self._ground_truth[image_id] = (boxes, labels, difficult)
        self.per_category: dict[str, dict[str, float]] = {}
        self.reset()

    def reset(self) -> None:
        # image id -> (boxes (D, 4) float64, scores (D,), labels (D,))
        self._predictions: dict[object, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def process(self, targets: Sequence[Mapping], outputs: Sequence[Mapping]) -> None:
        """Record one batch: ``targets`` give ``image_id``; ``outputs`` ``boxes`` (D, 4) XYXY
        original pixels, ``scores`` (D,), ``labels`` (D,) in 1..K (masks are ignored)."""
        if len(targets) != len(outputs):
            raise ValueError(f"process got {len(targets)} targets but {len(outputs)} outputs")
        for target, output in zip(targets, outputs):
            image_id = image_id_of(target)
            if image_id not in self._ground_truth:
                raise KeyError(f"image_id {image_id!r} has no annotation in the VOC ground truth")
            if image_id in self._predictions:
                continue  # a padded sampler may repeat an image: count it once
            boxes = np.asarray(_numpy(output["boxes"]), dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(_numpy(output["scores"]), dtype=np.float64).reshape(-1)
            labels = np.asarray(_numpy(output["labels"]), dtype=np.int64).reshape(-1)
            if not (len(boxes) == len(scores) == len(labels)):
                raise ValueError(f"image {image_id!r}: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
            self._predictions[image_id] = (boxes, scores, labels)

    def evaluate(self) -> dict[str, float]:
        predictions = predictions_to_score(self._predictions, evaluator="VOCEvaluator")
        if predictions is None:
            return {}
        image_ids = sorted(predictions, key=lambda i: (str(type(i)), i))
        metrics: dict[str, float] = {}
        ap07: dict[str, float] = {}
        ap_area: dict[str, float] = {}
        for label, name in enumerate(self.class_names, start=1):
            detections = []
            ground_truth = {}
            for image_id in image_ids:
                boxes, scores, labels = predictions[image_id]
                keep = labels == label
                detections.extend(zip([image_id] * int(keep.sum()), scores[keep].tolist(), boxes[keep]))
                gt_boxes, gt_labels, difficult = self._ground_truth[image_id]
                gt_keep = gt_labels == label
                if gt_keep.any():
                    ground_truth[image_id] = (gt_boxes[gt_keep], difficult[gt_keep])
            recall, precision, npos = voc_eval_class(detections, ground_truth, iou_threshold=self.iou_threshold)
            if npos == 0:
                continue  # AP undefined without objects; left out of the mean like detectron2's NaN-free tables
            ap07[name] = voc_ap(recall, precision, use_07_metric=True)
            ap_area[name] = voc_ap(recall, precision, use_07_metric=False)
        if not ap07:
            logger.warning("VOCEvaluator.evaluate: the evaluated images have no non-difficult object")
            return {}
        metrics["voc/mAP50_07"] = float(np.mean(list(ap07.values())))
        metrics["voc/mAP50"] = float(np.mean(list(ap_area.values())))
        metrics.update({f"voc/AP50_07-{name}": ap for name, ap in ap07.items()})
        metrics.update({f"voc/AP50-{name}": ap for name, ap in ap_area.items()})
        self.per_category = {"AP50_07": ap07, "AP50": ap_area}
        if self.coco_style:
            coco_numbers, coco_per_class = self._coco_style_metrics(predictions, image_ids)
            metrics.update(coco_numbers)
            metrics.update({f"bbox/AP-{name}": ap for name, ap in coco_per_class.items()})
            self.per_category["COCO AP"] = coco_per_class
        logger.info("VOC evaluation on %d images:\n%s", len(predictions), self.per_category_table())
        return metrics

    def _coco_style_metrics(self, predictions, image_ids) -> tuple[dict[str, float], dict[str, float]]:
        """COCOeval ``bbox`` metrics of ``predictions`` on the COCO view of the ground truth of
        ``image_ids`` (the evaluated images)."""
        from pycocotools.coco import COCO  # a dependency; imported here like coco_scoring does

        number = {image_id: n for n, image_id in enumerate(image_ids, start=1)}  # COCO wants int ids
        images, annotations, results = [], [], []
        for image_id in image_ids:
            images.append({"id": number[image_id]})
            gt_boxes, gt_labels, difficult = self._ground_truth[image_id]
            for box, label, is_difficult in zip(gt_boxes, gt_labels, difficult):
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": number[image_id],
                        "category_id": int(label),
                        "bbox": [float(box[0]), float(box[1]), w, h],
                        "area": w * h,
                        "iscrowd": int(is_difficult),
                    }
                )
            boxes, scores, labels = predictions[image_id]
            for box, score, label in zip(boxes, scores, labels):
                results.append(
                    {
                        "image_id": number[image_id],
                        "category_id": int(label),
                        "score": float(score),
                        "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    }
                )
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k, "name": name} for k, name in enumerate(self.class_names, start=1)],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt.createIndex()
        metrics, per_category, _ = coco_metrics(coco_gt, results, "bbox")
        return metrics, per_category

    def per_category_table(self) -> str:
        """Markdown table of the per-class APs of the last :meth:`evaluate` (11-point and area)."""
        return format_per_category_table(self.per_category)


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
