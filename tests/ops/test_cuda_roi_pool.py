"""Tests of the CUDA RoI Pool kernels (ops/cuda/roi_pool.cu) on both targets: a GPU (marker
`cuda`) and the device emulation of the same source (always; tests/ops/conftest.py).

Oracles: our CPU kernel (output, argmax and gradient must be identical: max and its position
do not depend on summation order), the reference implementation and torchvision.ops.roi_pool.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from cuda_cases import DTYPES, _ops, make_input, make_rois, rois_for, with_deterministic


@pytest.mark.parametrize(
    "dtype,channels_last,deterministic", list(itertools.product(DTYPES, [False, True], [False, True]))
)
def test_matches_cpu_kernel(target, dtype, channels_last, deterministic):
    ops = _ops()
    x = make_input(2, 6, 21, 27, dtype, channels_last)
    rois = rois_for(dtype, make_rois(2, 21 * 4, 27 * 4, 50))
    out_cpu, arg_cpu = ops.roi_pool(x, rois, 0.25, 5, 6)
    out_dev, arg_dev = target.ops.roi_pool(target.to(x), target.to(rois), 0.25, 5, 6)
    assert torch.equal(out_dev.cpu(), out_cpu)
    assert torch.equal(arg_dev.cpu(), arg_cpu)
    assert out_dev.is_contiguous(memory_format=torch.channels_last) == out_cpu.is_contiguous(
        memory_format=torch.channels_last
    )
    grad = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    g_cpu = ops._roi_pool_backward(grad, x, rois, arg_cpu, 0.25, 5, 6)

    def backward():
        return target.ops._roi_pool_backward(target.to(grad), target.to(x), target.to(rois), arg_dev, 0.25, 5, 6)

    g_dev = with_deterministic(deterministic, backward)
    if deterministic:
        assert torch.equal(g_dev, with_deterministic(True, backward))
    assert g_dev.is_contiguous(memory_format=torch.channels_last) == channels_last
    tol = 1e-12 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 1e-2)
    torch.testing.assert_close(g_dev.cpu(), g_cpu, rtol=tol, atol=tol)


def test_matches_reference_and_torchvision(target):
    torchvision = pytest.importorskip("torchvision")
    from maskrcnn.ops.reference import roi_pool_reference

    x = target.to(make_input(2, 5, 19, 23, torch.float32, False)).requires_grad_()
    rois = target.to(make_rois(2, 19 * 2, 23 * 2, 30))
    out, _ = target.ops.roi_pool(x, rois, 0.5, 4, 3)
    ref = roi_pool_reference(x.detach().cpu(), rois.cpu(), (4, 3), 0.5)
    assert torch.equal(out.detach().cpu(), ref)
    theirs = torchvision.ops.roi_pool(x, rois, (4, 3), 0.5)
    torch.testing.assert_close(out, theirs)
    grad = torch.randn_like(theirs)
    (g_ours,) = torch.autograd.grad(out, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs)


def test_gradcheck_float64(target):
    x = target.to(make_input(1, 2, 10, 12, torch.float64, False)).requires_grad_()
    rois = target.to(torch.tensor([[0, 1.0, 2.0, 9.0, 8.0], [0, 0.0, 0.0, 11.0, 9.0]], dtype=torch.float64))
    for deterministic in (False, True):
        assert with_deterministic(
            deterministic,
            lambda: torch.autograd.gradcheck(lambda t: target.ops.roi_pool(t, rois, 1.0, 3, 3)[0], (x,)),
        )


def test_deterministic_buffers_are_not_filled_first(target):
    """The gather writes every element of its buffers, so they skip the NaN fill PyTorch gives
    new tensors under deterministic algorithms; the profiler sees every
    fill inside the op (the value check of the forward makes temporaries of its own, so only the
    backward is profiled)."""
    x = target.to(make_input(2, 8, 20, 24, torch.float32, False))
    rois = target.to(make_rois(2, 80, 96, 12))
    out, argmax = target.ops.roi_pool(x, rois, 0.25, 7, 7)
    grad = torch.ones_like(out)

    def fills():
        with torch.profiler.profile() as prof:
            target.ops._roi_pool_backward(grad, x, rois, argmax, 0.25, 7, 7)
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::fill_", "aten::zero_"))

    assert with_deterministic(True, fills) == 0
    assert with_deterministic(False, fills) >= 1  # the atomic path does zero its buffer


def test_bad_input_raises_and_leaves_the_device_usable(target):
    x = target.to(make_input(2, 4, 16, 16, torch.float32, False))
    rois = target.to(make_rois(2, 64, 64, 8))
    rois[2, 0] = 7
    with pytest.raises(ValueError, match="batch index"):
        target.ops.roi_pool(x, rois, 0.25, 7, 7)
    rois[2, 0] = 0
    rois[3, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        target.ops.roi_pool(x, rois, 0.25, 7, 7)
    # A corrupt argmax (outside the plane) must not write out of bounds.
    out, argmax = target.ops.roi_pool(x, rois[:2], 0.25, 7, 7)
    argmax[0, 0, 0, 0] = 10**6
    target.ops._roi_pool_backward(torch.ones_like(out), x, rois[:2], argmax, 0.25, 7, 7)
    with pytest.raises(TypeError, match="argmax"):
        target.ops._roi_pool_backward(torch.ones_like(out), x, rois[:2], argmax.long(), 0.25, 7, 7)
    target.synchronize()
