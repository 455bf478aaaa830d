"""Drawings on the datasets' uint8 images equal drawings on the same images as float in [0, 1]."""

import numpy as np
import torch

from maskrcnn.engine.visualize import draw_predictions


def test_uint8_image_draws_like_its_float_twin():
    image = (torch.arange(3 * 40 * 64) % 256).to(torch.uint8).reshape(3, 40, 64)
    masks = torch.zeros(1, 1, 40, 64)
    masks[..., 5:20, 10:30] = 0.9
    pred = {
        "boxes": torch.tensor([[10.0, 5.0, 30.0, 20.0]]),
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.9]),
        "masks": masks,
    }
    canvas = draw_predictions(image, pred)
    bare = image.permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(canvas[30:, 40:], bare[30:, 40:])  # away from the drawing: the pixels
    assert (canvas[6:19, 11:29] != bare[6:19, 11:29]).any()  # the mask is blended in
    # float images are scaled by 255 and truncated: exact for k / 255 once rounded up by half a step
    as_float = (image.double() + 0.5) / 255
    np.testing.assert_array_equal(draw_predictions(as_float.float(), pred), canvas)
