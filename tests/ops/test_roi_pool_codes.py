"""RoI Pool's compact CPU op (`_roi_pool_compact`, what `maskrcnn.ops.roi_pool` calls on the CPU):
its codes name the cells of the public op's argmax, its gradients equal the public op's (RoIs
with bins too large for codes are pooled again by the backward), and bad codes are refused."""

import pytest
import torch
from ops_helpers import assorted_rois, cpu_kernels_only, feature_map, random_rois
from torch.utils._python_dispatch import TorchDispatchMode

from maskrcnn.ops import roi_pool
from maskrcnn.ops._registration import roi_pool_codes_dtype
from maskrcnn.ops.reference import pool_bin_ranges, pool_geometry

ops = torch.ops.maskrcnn

# (map height, width, pooled, scale, code dtype): uint8 where the map's shape bounds the bins of
# RoIs inside it to 15 cells, int16 where it does not.
CASES = {
    "uint8": (13, 17, (3, 2), 0.5, torch.uint8),
    "int16": (40, 60, (2, 3), 1.0, torch.int16),
}


def case_inputs(name, dtype=torch.float64, channels_last=False, seed=0):
    h, w, pooled, scale, _ = CASES[name]
    x = feature_map(n=2, c=5, h=h, w=w, dtype=dtype, seed=seed, channels_last=channels_last)
    rois = torch.cat([assorted_rois(2, h, w, scale), random_rois(2, h, w, scale, k=10, seed=seed)])
    return x, rois.to(torch.float64 if dtype == torch.float64 else torch.float32), pooled, scale


def decode(codes, rois, pooled, scale, height, width):
    """The argmax (h * W + w, -1 for an empty bin) that the codes name, from the reference's bins."""
    shift = 4 if codes.dtype == torch.uint8 else 7
    flat = codes.to(torch.int64) & ((1 << 16) - 1 if codes.dtype == torch.int16 else 255)
    empty = (1 << 16) - 1 if codes.dtype == torch.int16 else 255
    out = torch.empty(codes.shape, dtype=torch.int64)
    for k, r in enumerate(rois.to(torch.float64)):
        g = pool_geometry(r[1:], scale)
        rows = pool_bin_ranges(g.start_h, g.roi_h, pooled[0], height, torch.float64)
        cols = pool_bin_ranges(g.start_w, g.roi_w, pooled[1], width, torch.float64)
        for ph, (h0, _) in enumerate(rows):
            for pw, (w0, _) in enumerate(cols):
                v = flat[k, :, ph, pw]
                cell = (h0 + (v >> shift)) * width + w0 + (v & ((1 << shift) - 1))
                out[k, :, ph, pw] = torch.where(v == empty, -1, cell)
    return out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_codes_name_the_argmax_cells(name, channels_last):
    x, rois, pooled, scale = case_inputs(name, channels_last=channels_last)
    h, w, _, _, code_dtype = CASES[name]
    y, argmax = ops.roi_pool(x, rois, scale, *pooled)
    y_compact, codes = ops._roi_pool_compact(x, rois, scale, *pooled, True)
    assert codes.dtype == code_dtype == roi_pool_codes_dtype(h, w, *pooled)
    assert codes.shape == y.shape and torch.equal(y_compact, y)
    assert codes.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(decode(codes, rois, pooled, scale, h, w), argmax.to(torch.int64), rtol=0, atol=0)


def grads_public(x, rois, g, scale, pooled):
    _, argmax = ops.roi_pool(x, rois, scale, *pooled)
    return ops._roi_pool_backward(g, x, rois, argmax, scale, *pooled)


@cpu_kernels_only("the public op is then the CUDA kernel, whose atomic sums come in another order than the CPU's")
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_gradients_equal_the_public_op(name, channels_last, dtype):
    # Rounded values tie often, and a few NaN cells: the winners must be the same cells as the
    # argmax's, whichever kernel pooled them.
    x, rois, pooled, scale = case_inputs(name, dtype=dtype, seed=3)
    x = (x * 2).round()
    x.view(-1)[::97] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.requires_grad_()
    y = roi_pool(x, rois, pooled, scale)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (gx,) = torch.autograd.grad(y, x, g)
    expected = grads_public(x.detach(), rois, g, scale, pooled)
    torch.testing.assert_close(y, ops.roi_pool(x.detach(), rois, scale, *pooled)[0], rtol=0, atol=0, equal_nan=True)
    assert gx.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(gx, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(
    "shape, pooled, box",
    [
        ((30, 30), (3, 3), (-100.0, -100.0, 130.0, 130.0)),  # uint8 codes, bins up to 30 cells
        ((200, 150), (1, 1), (0.0, 0.0, 149.0, 199.0)),  # int16 codes, one bin of 200 x 150 cells
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_rois_with_bins_too_large_for_codes(shape, pooled, box, channels_last):
    h, w = shape
    x = feature_map(n=1, c=3, h=h, w=w, seed=5, channels_last=channels_last)
    rois = torch.tensor([[0.0, *box], [0.0, 2.0, 3.0, 9.0, 7.0]], dtype=torch.float64)
    y, codes = ops._roi_pool_compact(x, rois, 1.0, *pooled, True)
    assert (codes[0] == -1).all() if codes.dtype == torch.int16 else (codes[0] == 255).all()  # found again
    g = torch.randn(y.shape, dtype=torch.float64)
    gx = ops._roi_pool_compact_backward(g, x, rois, codes, 1.0, *pooled)
    torch.testing.assert_close(gx, grads_public(x, rois, g, 1.0, pooled), rtol=0, atol=0)


def test_forward_without_codes():
    x, rois, pooled, scale = case_inputs("uint8")
    y, codes = ops._roi_pool_compact(x, rois, scale, *pooled, False)
    assert codes.numel() == 0 and codes.dtype == torch.uint8
    assert torch.equal(y, ops.roi_pool(x, rois, scale, *pooled)[0])
    with pytest.raises(ValueError, match="with_codes=False"):
        ops._roi_pool_compact_backward(torch.ones_like(y), x, rois, codes, scale, *pooled)


def test_bad_codes_are_refused():
    x, rois, pooled, scale = case_inputs("uint8")
    y, codes = ops._roi_pool_compact(x, rois, scale, *pooled, True)
    g = torch.ones_like(y)
    k = 0  # a RoI inside the map: every bin holds cells, none holds 15 rows
    assert (codes[k] != 255).all()
    for bad in (0xEE, 255):  # row 14 of its bin; the empty code on a bin with cells
        tampered = codes.clone()
        tampered[k, 2, 1, 0] = bad
        with pytest.raises(ValueError, match="names no cell"):
            ops._roi_pool_compact_backward(g, x, rois, tampered, scale, *pooled)
    with pytest.raises(TypeError, match="codes must be uint8 for this map and output size, got int16"):
        ops._roi_pool_compact_backward(g, x, rois, codes.to(torch.int16), scale, *pooled)


class _RecordCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args))
        return func(*args, **(kwargs or {}))


@cpu_kernels_only("maskrcnn.ops.roi_pool then calls the public op (the CUDA kernel has no codes)")
@pytest.mark.parametrize("grad_needed", [True, False])
def test_functional_stores_codes_only_for_a_backward(grad_needed):
    x, rois, pooled, scale = case_inputs("uint8")
    x.requires_grad_(grad_needed)
    with _RecordCalls() as record:
        roi_pool(x, rois, pooled, scale)
    (args,) = [a for f, a in record.calls if f == ops._roi_pool_compact.default]
    assert args[-1] is grad_needed
    if grad_needed:
        with torch.no_grad(), _RecordCalls() as record:
            roi_pool(x, rois, pooled, scale)
        (args,) = [a for f, a in record.calls if f == ops._roi_pool_compact.default]
        assert args[-1] is False


def test_planes_beyond_int32_cells_are_refused():
    # Zero channels: no memory, but a 50000 x 50000 plane, whose cells int32 cannot index.
    x = torch.empty(1, 0, 50000, 50000)
    rois = torch.tensor([[0.0, 1.0, 1.0, 5.0, 5.0]])
    for call in (
        lambda: ops.roi_pool(x, rois, 1.0, 2, 2),
        lambda: ops._roi_pool_compact(x, rois, 1.0, 2, 2, True),
    ):
        with pytest.raises(ValueError, match="H \\* W must be below 2\\^31"):
            call()
