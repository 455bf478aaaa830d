"""The RoI ops under torch.autocast (CPU; CUDA with the `cuda` marker): features and rois of mixed
float dtypes are computed in float32 and the output comes back in the features' dtype, as
torchvision's autocast kernels do."""

from __future__ import annotations

import pytest
import torch
import torchvision
from ops_helpers import assorted_rois, feature_map

from maskrcnn import ops

SCALE = 0.5
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
TOL = {F32: 1e-6, BF16: 2e-2, F16: 2e-3}  # the output is rounded once to its dtype
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
# (autocast dtype, features dtype, rois dtype)
MIXES = [
    (BF16, F32, BF16),
    (BF16, BF16, F32),
    (BF16, BF16, BF16),
    (BF16, F16, BF16),
    (F16, F32, F16),
    (F16, F16, F32),
    (F16, BF16, F16),
]


def multilevel(x, rois):
    levels = torch.arange(rois.shape[0], device=rois.device) % 2
    return ops.multilevel_roi_align([x, x[:, :, ::2, ::2]], rois, levels, [SCALE, SCALE / 2], 3, 2, True)


OPS = {
    "roi_align avg": lambda x, r: ops.roi_align(x, r, 3, SCALE, 2),
    "roi_align max aligned": lambda x, r: ops.roi_align(x, r, (2, 3), SCALE, -1, True, "max"),
    "roi_pool": lambda x, r: ops.roi_pool(x, r, 3, SCALE),
    "roi_align list": lambda x, r: ops.roi_align(x, [r[r[:, 0] == i, 1:] for i in range(x.shape[0])], 3, SCALE),
    "multilevel_roi_align": multilevel,
}


def run(fn, x, rois, autocast_dtype=None):
    x = x.detach().clone().requires_grad_()
    if autocast_dtype is None:
        y = fn(x, rois)
    else:
        with torch.autocast(x.device.type, dtype=autocast_dtype):
            y = fn(x, rois)
    (gx,) = torch.autograd.grad(y.float().sum() + (y.float() ** 2).sum(), x)
    return y.detach(), gx


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast_dtype, x_dtype, rois_dtype", MIXES)
@pytest.mark.parametrize("op", list(OPS))
def test_mixed_dtypes_compute_in_float32(op, autocast_dtype, x_dtype, rois_dtype, device):
    x = feature_map(dtype=x_dtype).to(device)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=rois_dtype).to(device)
    y, gx = run(OPS[op], x, rois, autocast_dtype)
    # The float32 result on the same (rounded) values.
    y32, gx32 = run(OPS[op], x.float(), rois.float())
    assert y.dtype == x_dtype and gx.dtype == x_dtype
    tol = TOL[x_dtype]
    torch.testing.assert_close(y.float(), y32, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.float(), gx32, rtol=4 * tol, atol=4 * tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast_dtype, x_dtype, rois_dtype", MIXES)
def test_roi_align_matches_torchvision_under_autocast(autocast_dtype, x_dtype, rois_dtype, device):
    x = feature_map(dtype=x_dtype).to(device)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=rois_dtype).to(device)
    with torch.autocast(device, dtype=autocast_dtype):
        ours = ops.roi_align(x, rois, 3, SCALE, 2)
        theirs = torchvision.ops.roi_align(x, rois, 3, SCALE, 2)
    assert ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=TOL[x_dtype], atol=TOL[x_dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast_dtype, x_dtype", [(BF16, F32), (BF16, BF16), (F16, F16)])
def test_multiscale_roi_align_matches_torchvision_under_autocast(autocast_dtype, x_dtype, device):
    g = torch.Generator().manual_seed(0)
    feats = {
        k: torch.randn(2, 3, 32 // 2**i, 40 // 2**i, generator=g).to(device, x_dtype) for i, k in enumerate("0123")
    }
    xy = torch.rand(2, 20, 2, generator=g) * 100
    boxes = [torch.cat([p, p + torch.rand(20, 2, generator=g) * 120 + 1], 1).to(device) for p in xy]
    shapes = [(128, 160), (120, 150)]
    with torch.autocast(device, dtype=autocast_dtype):
        ours = ops.MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, shapes)
        theirs = torchvision.ops.MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, shapes)
    assert ours.dtype == theirs.dtype == x_dtype
    torch.testing.assert_close(ours, theirs, rtol=TOL[x_dtype], atol=TOL[x_dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_dtype, rois_dtype", [(BF16, F32), (BF16, BF16), (F16, F32), (F32, F32)])
@pytest.mark.parametrize("op", list(OPS))
def test_dtypes_the_kernels_take_run_as_without_autocast(op, x_dtype, rois_dtype, device):
    # Half features with float32 (or their own dtype) rois need no cast: the kernels compute in
    # float32 already, so autocast gives exactly the result without it.
    x = feature_map(dtype=x_dtype).to(device)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=rois_dtype).to(device)
    y, gx = run(OPS[op], x, rois, BF16)
    y_plain, gx_plain = run(OPS[op], x, rois)
    assert torch.equal(y, y_plain) and torch.equal(gx, gx_plain)


def test_mixed_dtypes_outside_autocast_still_raise_our_error():
    x = feature_map(dtype=F32)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=BF16)
    with pytest.raises(TypeError, match="rois must have dtype torch.float32"):
        ops.roi_align(x, rois, 3, SCALE)
