"""Drawings of predictions: a drawing with nothing above the threshold says so (never the bare input)."""

import logging

import numpy as np
import torch

from maskrcnn.engine.visualize import draw_predictions


def _image():
    return torch.linspace(0, 1, 3 * 48 * 160).reshape(3, 48, 160)


def _bare(image):
    return (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _prediction(scores):
    n = len(scores)
    return {
        "boxes": torch.tensor([[100.0, 20.0, 150.0, 44.0]] * n).reshape(-1, 4),
        "labels": torch.ones(n, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def test_nothing_above_the_threshold_is_said_on_the_drawing_and_in_the_log(caplog):
    image = _image()
    with caplog.at_level(logging.INFO, logger="maskrcnn.engine.visualize"):
        canvas = draw_predictions(image, _prediction([0.31, 0.2, 0.1]), score_threshold=0.5)
    assert "nothing drawn: 3 detections, none >= score threshold 0.50 (best 0.31)" in caplog.text
    bare = _bare(image)
    assert (canvas[:14, :60] != bare[:14, :60]).any()  # the notice, top left
    np.testing.assert_array_equal(canvas[20:, 100:], bare[20:, 100:])  # the sub-threshold box is not drawn
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="maskrcnn.engine.visualize"):
        empty = draw_predictions(image, _prediction([]), score_threshold=0.5)
    assert "nothing drawn: no detections" in caplog.text and (empty != bare).any()


def test_a_drawn_detection_adds_no_notice(caplog):
    image = _image()
    with caplog.at_level(logging.INFO, logger="maskrcnn.engine.visualize"):
        canvas = draw_predictions(image, _prediction([0.9, 0.2]), score_threshold=0.5)
    assert "nothing drawn" not in caplog.text
    bare = _bare(image)
    np.testing.assert_array_equal(canvas[:14, :60], bare[:14, :60])
    assert (canvas[20:, 100:] != bare[20:, 100:]).any()  # the box
