"""Predictions drawn on an image (OpenCV), for TensorBoard and PNG files at each evaluation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..evaluation.coco_evaluation import MASK_THRESHOLD, binarize_masks

logger = logging.getLogger(__name__)


def _color(label: int) -> tuple[int, int, int]:
    # A fixed, well-spread palette per class (golden-ratio hue steps), as RGB.
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_predictions(
    image: torch.Tensor,
    prediction: dict,
    *,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """Boxes, labels, scores and masks of ``prediction`` over ``image``.

    Args:
        image: (3, H, W) RGB, uint8 or float in [0, 1].
        prediction: model output for this image: ``boxes`` (D, 4) XYXY pixels, ``labels`` (D,),
            ``scores`` (D,), optionally ``masks`` (D, 1, H, W) probabilities.
    Returns:
        (H, W, 3) uint8 RGB. When no detection reaches ``score_threshold`` the image says so in its
        top-left corner (and the log too), so that a drawing is never silently the bare input.
    """
    if image.dtype == torch.uint8:  # our datasets' images
        canvas = image.detach().permute(1, 2, 0).cpu().numpy()
    else:
        canvas = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    canvas = np.ascontiguousarray(canvas)
    keep = prediction["scores"].detach().cpu() >= score_threshold
    boxes = prediction["boxes"].detach().cpu()[keep]
    labels = prediction["labels"].detach().cpu()[keep]
    scores = prediction["scores"].detach().cpu()[keep]
    masks = prediction.get("masks")
    if masks is not None:
        masks = masks.detach().cpu()[keep]
        for mask, label in zip(masks, labels):
            m = binarize_masks(mask[0], threshold=mask_threshold).numpy()
            if m.shape != canvas.shape[:2]:
                continue
            canvas[m] = (0.5 * canvas[m] + 0.5 * np.array(_color(int(label)))).astype(np.uint8)
    if not keep.any():
        _say_nothing_drawn(canvas, prediction["scores"].detach().cpu(), score_threshold)
    for box, label, score in zip(boxes, labels, scores):
        x1, y1, x2, y2 = (int(round(v)) for v in box.tolist())
        color = _color(int(label))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 1)
        name = class_names[int(label) - 1] if class_names and 0 < int(label) <= len(class_names) else str(int(label))
        cv2.putText(
            canvas,
            f"{name} {float(score):.2f}",
            (x1, max(y1 - 2, 8)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.3,
            color,
            1,
            cv2.LINE_AA,
        )
    return canvas


def _say_nothing_drawn(canvas: np.ndarray, scores: torch.Tensor, score_threshold: float) -> None:
    """Write on ``canvas`` (and log) that no detection reached the threshold, with the best score."""
    if scores.numel() == 0:
        text = "no detections"
    else:
        text = (
            f"{scores.numel()} detections, none >= score threshold {score_threshold:.2f} "
            f"(best {float(scores.max()):.2f})"
        )
    logger.info("nothing drawn: %s", text)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    cv2.rectangle(canvas, (0, 0), (w + 4, h + base + 4), (0, 0, 0), -1)
    cv2.putText(canvas, text, (2, h + 2), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
