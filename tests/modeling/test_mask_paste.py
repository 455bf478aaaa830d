"""Vectorised mask pasting against torchvision's per-mask paste_masks_in_image, and mask targets."""

from __future__ import annotations

import pytest
import torch
from modeling_helpers import needs_ops
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from maskrcnn.modeling.mask_head import mask_targets
from maskrcnn.modeling.mask_paste import paste_masks_in_image


def _case(seed: int, k: int, h: int, w: int, m: int = 28):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(k, 1, m, m, generator=g)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
    wh = torch.rand(k, 2, generator=g) ** 2 * torch.tensor([w, h]) + 0.3
    boxes = torch.cat([xy, xy + wh], 1)
    # Detections are clipped to the image (torchvision's per-mask paste fails on boxes outside it).
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return masks, boxes


@pytest.mark.parametrize("seed,k,h,w", [(0, 40, 120, 90), (1, 7, 33, 200), (2, 1, 64, 64), (3, 130, 50, 70)])
def test_matches_torchvision(seed, k, h, w):
    masks, boxes = _case(seed, k, h, w)
    # Include a box larger than the image, tiny and degenerate ones, and ones on the borders.
    boxes[0] = torch.tensor([-50.0, -40.0, w + 60.0, h + 30.0])
    if k > 3:
        boxes[1] = torch.tensor([5.0, 5.0, 5.2, 5.1])
        boxes[2] = torch.tensor([w - 3.0, h - 2.0, w, h])
        boxes[3] = torch.tensor([0.0, 0.0, 0.0, 0.0])
    ours = paste_masks_in_image(masks, boxes, (h, w), chunk=16)
    ref = tv_paste(masks, boxes, (h, w))
    assert ours.shape == ref.shape == (k, 1, h, w)
    # Both compute the bilinear source coordinates in float32: differences are rounding (~4e-6).
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_box_outside_the_image_pastes_nothing():
    masks = torch.ones(2, 1, 28, 28)
    boxes = torch.tensor([[70.0, 60.0, 90.0, 80.0], [-40.0, -30.0, -20.0, -10.0]])
    assert paste_masks_in_image(masks, boxes, (50, 60)).abs().sum() == 0


def test_empty():
    out = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (10, 12))
    assert out.shape == (0, 1, 10, 12)


@needs_ops
@pytest.mark.parametrize("backend", ["ours", "torchvision"])
def test_mask_targets_match_torchvision(backend):
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(3, 60, 80, generator=g) > 0.5).to(torch.uint8)
    xy = torch.rand(10, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(10, 2, generator=g) * 30], 1)
    idx = torch.randint(0, 3, (10,), generator=g)
    got = mask_targets([gt], [boxes], [idx], 28, backend=backend)
    ref = project_masks_on_boxes(gt, boxes, idx, 28)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
