"""RoI Pool (CPU): parity with the reference and torchvision, hand-worked case, dtypes, layouts."""

import pytest
import torch
import torchvision
from ops_helpers import assorted_rois, feature_map, random_rois

from maskrcnn.ops import RoIPool, roi_pool, roi_pool_reference

SCALE = 0.5


def grads(fn, x, rois, g, *args):
    x = x.detach().clone().requires_grad_()
    y = fn(x, rois, *args)
    if not y.requires_grad:  # the reference builds all-empty outputs without a graph
        return y.detach(), torch.zeros_like(x)
    (gx,) = torch.autograd.grad(y, x, g)
    return y.detach(), gx


@pytest.mark.parametrize("output_size, scale", [((5, 4), SCALE), (2, 1.0), (7, 0.25)])
def test_matches_reference_and_torchvision(output_size, scale):
    x = feature_map()
    rois = torch.cat([assorted_rois(3, 13, 17, scale), random_rois(3, 13, 17, scale, k=12)])
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    g = torch.randn(rois.shape[0], 4, oh, ow, dtype=torch.float64)
    y, gx = grads(roi_pool, x, rois, g, output_size, scale)
    y_ref, gx_ref = grads(roi_pool_reference, x, rois, g, output_size, scale)
    y_tv, gx_tv = grads(torchvision.ops.roi_pool, x, rois, g, output_size, scale)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, y_tv, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_tv, rtol=1e-12, atol=1e-12)


def test_hand_worked_case():
    # f(y, x) = 4y + x on a 4 x 4 map. Box (x1, y1, x2, y2) = (0.4, 0.6, 2.5, 3.4), scale 1:
    # rounded corners (half away from zero) x 0..3, y 1..3, so roi_w = 4, roi_h = 3.
    # 2 x 2 bins: bin_w = 2 -> columns [0, 2), [2, 4); bin_h = 1.5 -> rows
    # [floor(0) + 1, ceil(1.5) + 1) = [1, 3) and [floor(1.5) + 1, ceil(3) + 1) = [2, 4).
    # Maxima: rows 1-2 x cols 0-1 -> f(2,1) = 9; rows 1-2 x cols 2-3 -> f(2,3) = 11;
    # rows 2-3 x cols 0-1 -> f(3,1) = 13; rows 2-3 x cols 2-3 -> f(3,3) = 15.
    x = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4).requires_grad_()
    rois = torch.tensor([[0, 0.4, 0.6, 2.5, 3.4]], dtype=torch.float64)
    y, argmax = torch.ops.maskrcnn.roi_pool(x, rois, 1.0, 2, 2)
    torch.testing.assert_close(y, torch.tensor([[[[9.0, 11.0], [13.0, 15.0]]]], dtype=torch.float64))
    assert argmax.flatten().tolist() == [9, 11, 13, 15]  # h * W + w of the winning cells
    roi_pool(x, rois, 2, 1.0).sum().backward()
    expected = torch.zeros(16, dtype=torch.float64)
    expected[[9, 11, 13, 15]] = 1.0
    torch.testing.assert_close(x.grad.flatten(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype, below_half", [(torch.float32, 0.49999997), (torch.float64, 0.49999999999999994)])
def test_rounding_just_below_a_half(dtype, below_half):
    # C's round(x) of the largest float below 0.5 is 0; floor(x + 0.5) would give 1, because
    # x + 0.5 rounds up to 1.0 in the same dtype. Columns hold their index, so the 1 x 1 bin's max
    # is its last column, round(x2), and the negated map's is -round(x1).
    columns = torch.arange(4, dtype=dtype).view(1, 1, 1, 4)
    rois = torch.tensor([[0, below_half, 0, below_half, 0]], dtype=dtype)
    assert torch.tensor(below_half, dtype=dtype) < 0.5
    for op in (roi_pool, roi_pool_reference):
        assert op(columns, rois, 1).item() == 0.0
        assert -op(-columns, rois, 1).item() == 0.0


def test_empty_bins_and_ties():
    # A box wholly off the map pools empty bins: 0 with argmax -1 and no gradient. On a constant
    # map every cell ties: the first cell of each bin in row-major order wins.
    x = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    rois = torch.tensor([[0, 10, 10, 20, 20], [0, 0, 0, 4, 4]], dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        y, argmax = torch.ops.maskrcnn.roi_pool(x.contiguous(memory_format=layout), rois, 1.0, 2, 2)
        assert y[0].abs().sum() == 0 and (argmax[0] == -1).all()
        # Box 0..4 (5 cells), 2 bins: [floor(0), ceil(2.5)) = [0, 3) and [floor(2.5), 5) = [2, 5).
        assert argmax[1].flatten().tolist() == [0, 2, 10, 12]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 0.0), (torch.float16, 0.0), (torch.bfloat16, 0.0)])
def test_dtypes_against_float_reference(dtype, tol):
    # Max pooling selects input values: the half types must match the reference exactly.
    x = feature_map(dtype=dtype)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=torch.float32)
    g = torch.randn(rois.shape[0], 4, 3, 3).to(dtype)
    y, gx = grads(roi_pool, x, rois, g, 3, SCALE)
    y_ref, gx_ref = grads(roi_pool_reference, x.float(), rois, g.float(), 3, SCALE)
    assert y.dtype == dtype and gx.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.float(), gx_ref.to(dtype).float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_channels_last_equals_contiguous(dtype):
    x = feature_map(c=20, dtype=dtype)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    g = torch.randn(rois.shape[0], 20, 3, 4).to(dtype)
    y, gx = grads(roi_pool, x, rois, g, (3, 4), SCALE)
    y_cl, gx_cl = grads(roi_pool, x.contiguous(memory_format=torch.channels_last), rois, g, (3, 4), SCALE)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert gx_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_cl) and torch.equal(gx, gx_cl)


def test_no_rois_list_rois_and_module():
    x = feature_map().requires_grad_()
    y = roi_pool(x, torch.zeros(0, 5, dtype=torch.float64), 3, SCALE)
    assert y.shape == (0, 4, 3, 3)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    rois = assorted_rois(3, 13, 17, SCALE)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(3)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(3)])
    assert torch.equal(roi_pool(x, per_image, 3, SCALE), roi_pool(x, ordered, 3, SCALE))
    assert repr(RoIPool(3, SCALE)) == "RoIPool(output_size=3, spatial_scale=0.5)"  # torchvision's positional form
    m = RoIPool(output_size=(3, 2), spatial_scale=SCALE)
    assert repr(m) == "RoIPool(output_size=(3, 2), spatial_scale=0.5)"
    assert torch.equal(m(x, rois), roi_pool(x, rois, (3, 2), SCALE))
