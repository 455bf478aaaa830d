"""GPU tests of the CUDA RoI Pool kernels (ops/cuda/roi_pool.cu), marker `cuda`.

Oracles: our CPU kernel (output, argmax and gradient must be identical: max and its position
do not depend on summation order), the reference implementation and torchvision.ops.roi_pool.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from cuda_cases import DTYPES, _ops, make_input, make_rois, rois_for

pytestmark = pytest.mark.cuda


def _set_deterministic(flag):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(flag)
    return previous


@pytest.mark.parametrize(
    "dtype,channels_last,deterministic", list(itertools.product(DTYPES, [False, True], [False, True]))
)
def test_matches_cpu_kernel(dtype, channels_last, deterministic):
    ops = _ops()
    x = make_input(2, 6, 21, 27, dtype, channels_last)
    rois = rois_for(dtype, make_rois(2, 21 * 4, 27 * 4, 50))
    out_cpu, arg_cpu = ops.roi_pool(x, rois, 0.25, 5, 6)
    out_gpu, arg_gpu = ops.roi_pool(x.cuda(), rois.cuda(), 0.25, 5, 6)
    assert torch.equal(out_gpu.cpu(), out_cpu)
    assert torch.equal(arg_gpu.cpu(), arg_cpu)
    assert out_gpu.is_contiguous(memory_format=torch.channels_last) == out_cpu.is_contiguous(
        memory_format=torch.channels_last
    )
    grad = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    g_cpu = ops._roi_pool_backward(grad, x, rois, arg_cpu, 0.25, 5, 6)
    previous = _set_deterministic(deterministic)
    try:
        g_gpu = ops._roi_pool_backward(grad.cuda(), x.cuda(), rois.cuda(), arg_gpu, 0.25, 5, 6)
        if deterministic:
            again = ops._roi_pool_backward(grad.cuda(), x.cuda(), rois.cuda(), arg_gpu, 0.25, 5, 6)
            assert torch.equal(g_gpu, again)
    finally:
        torch.use_deterministic_algorithms(previous)
    tol = 1e-12 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 1e-2)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=tol, atol=tol)


def test_matches_reference_and_torchvision():
    torchvision = pytest.importorskip("torchvision")
    from maskrcnn.ops.reference import roi_pool_reference

    x = make_input(2, 5, 19, 23, torch.float32, False).cuda().requires_grad_()
    rois = make_rois(2, 19 * 2, 23 * 2, 30).cuda()
    out, _ = _ops().roi_pool(x, rois, 0.5, 4, 3)
    ref = roi_pool_reference(x.detach().cpu(), rois.cpu(), (4, 3), 0.5)
    assert torch.equal(out.detach().cpu(), ref)
    theirs = torchvision.ops.roi_pool(x, rois, (4, 3), 0.5)
    torch.testing.assert_close(out, theirs)
    grad = torch.randn_like(theirs)
    (g_ours,) = torch.autograd.grad(out, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs)


def test_gradcheck_float64():
    from maskrcnn.ops import roi_pool

    x = make_input(1, 2, 10, 12, torch.float64, False).cuda().requires_grad_()
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 8.0], [0, 0.0, 0.0, 11.0, 9.0]], dtype=torch.float64, device="cuda")
    for deterministic in (False, True):
        previous = _set_deterministic(deterministic)
        try:
            assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 3), spatial_scale=1.0), (x,))
        finally:
            torch.use_deterministic_algorithms(previous)


def test_bad_input_raises_and_leaves_the_device_usable():
    ops = _ops()
    x = make_input(2, 4, 16, 16, torch.float32, False).cuda()
    rois = make_rois(2, 64, 64, 8).cuda()
    rois[2, 0] = 7
    with pytest.raises(ValueError, match="batch index"):
        ops.roi_pool(x, rois, 0.25, 7, 7)
    rois[2, 0] = 0
    rois[3, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        ops.roi_pool(x, rois, 0.25, 7, 7)
    # A corrupt argmax (outside the plane) must not write out of bounds.
    out, argmax = ops.roi_pool(x, rois[:2], 0.25, 7, 7)
    argmax[0, 0, 0, 0] = 10**6
    ops._roi_pool_backward(torch.ones_like(out), x, rois[:2], argmax, 0.25, 7, 7)
    with pytest.raises(TypeError, match="argmax"):
        ops._roi_pool_backward(torch.ones_like(out), x, rois[:2], argmax.long(), 0.25, 7, 7)
    torch.cuda.synchronize()
