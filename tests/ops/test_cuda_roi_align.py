"""GPU tests of the CUDA RoI Align kernels (ops/cuda/roi_align*.cu), marker `cuda`.

Oracles: our CPU kernels (same arithmetic header, deterministic), the reference implementation,
and torchvision.ops.roi_align. Run on a GPU machine with ``pytest -m cuda tests/ops``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from cuda_cases import DTYPES, TOL, _ops, make_input, make_rois, rois_for

pytestmark = pytest.mark.cuda

CASES = list(itertools.product(DTYPES, [False, True], ["avg", "max"], [True, False], [2, -1]))


@pytest.mark.parametrize("dtype,channels_last,mode,aligned,sampling", CASES)
def test_forward_and_backward_match_cpu_kernels(dtype, channels_last, mode, aligned, sampling):
    ops = _ops()
    x = make_input(2, 7, 23, 31, dtype, channels_last)
    rois = rois_for(dtype, make_rois(2, 23 * 4, 31 * 4, 40))
    args = (0.25, 5, 4, sampling, aligned, mode)
    out_cpu = ops.roi_align(x, rois, *args)
    out_gpu = ops.roi_align(x.cuda(), rois.cuda(), *args)
    assert (
        out_gpu.is_contiguous(memory_format=torch.channels_last)
        == out_cpu.is_contiguous(memory_format=torch.channels_last)
        and out_gpu.shape == out_cpu.shape
    )
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=rtol, atol=atol)

    grad = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    g_cpu = ops._roi_align_backward(grad, x, rois, *args)
    g_gpu = ops._roi_align_backward(grad.cuda(), x.cuda(), rois.cuda(), *args)
    assert g_gpu.dtype == dtype and g_gpu.shape == x.shape
    if mode == "max" and dtype in (torch.float16, torch.bfloat16):
        # A near-tie between two samples may be broken differently after float32 rounding of
        # the same values in another order: compare where both kernels picked the same winner.
        mask = (g_gpu.cpu() - g_cpu).abs() <= atol + rtol * g_cpu.abs()
        assert mask.float().mean() > 0.99
    else:
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=rtol * 4, atol=atol * 4)


@pytest.mark.parametrize("mode,aligned,sampling", list(itertools.product(["avg", "max"], [True, False], [2, -1])))
def test_forward_matches_reference(mode, aligned, sampling):
    from maskrcnn.ops.reference import roi_align_reference

    x = make_input(2, 3, 17, 19, torch.float64, False)
    rois = make_rois(2, 17 * 2, 19 * 2, 24, dtype=torch.float64)
    out = _ops().roi_align(x.cuda(), rois.cuda(), 0.5, 3, 4, sampling, aligned, mode)
    ref = roi_align_reference(x, rois, (3, 4), 0.5, sampling, aligned, mode)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,channels_last,aligned,sampling",
    list(itertools.product([torch.float32, torch.float64], [False, True], [True, False], [2, 0])),
)
def test_matches_torchvision(dtype, channels_last, aligned, sampling):
    torchvision = pytest.importorskip("torchvision")
    x = make_input(2, 16, 40, 48, dtype, channels_last).cuda().requires_grad_()
    rois = make_rois(2, 160, 192, 64, dtype=dtype).cuda()
    ours = _ops().roi_align(x, rois, 0.25, 7, 7, sampling, aligned, "avg")
    theirs = torchvision.ops.roi_align(x, rois, (7, 7), 0.25, sampling, aligned)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
    grad = torch.randn_like(theirs)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("mode,deterministic", list(itertools.product(["avg", "max"], [False, True])))
def test_gradcheck_float64(mode, deterministic):
    from maskrcnn.ops import roi_align

    x = make_input(2, 2, 9, 11, torch.float64, False).cuda().requires_grad_()
    # Boxes away from ties of max mode (random inputs) and inside the map.
    rois = torch.tensor(
        [[0, 3.1, 2.2, 30.5, 25.7], [1, 10.3, 4.9, 38.2, 33.1], [1, -4.0, -3.0, 12.0, 9.5]],
        dtype=torch.float64,
        device="cuda",
    )
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        assert torch.autograd.gradcheck(
            lambda t: roi_align(t, rois, (3, 3), spatial_scale=0.25, sampling_ratio=2, aligned=True, mode=mode),
            (x,),
            eps=1e-6,
            atol=1e-7,
        )
    finally:
        torch.use_deterministic_algorithms(previous)


def _backward(ops, deterministic, *args):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        return ops._roi_align_backward(*args)
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize(
    "dtype,channels_last,mode,sampling", list(itertools.product(DTYPES, [False, True], ["avg", "max"], [2, -1]))
)
def test_deterministic_backward_is_bitwise_reproducible_and_close_to_atomic(dtype, channels_last, mode, sampling):
    ops = _ops()
    # Many overlapping RoIs (crowded like sampled proposals) so that atomics do race.
    x = make_input(2, 70, 37, 45, dtype, channels_last).cuda()
    rois = rois_for(dtype, make_rois(2, 37 * 4, 45 * 4, 600, seed=3)).cuda()
    grad = torch.randn(600, 70, 7, 7, device="cuda", dtype=torch.float64).to(dtype)
    args = (grad, x, rois, 0.25, 7, 7, sampling, True, mode)
    first = _backward(ops, True, *args)
    second = _backward(ops, True, *args)
    assert torch.equal(first, second)
    assert first.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    atomic = _backward(ops, False, *args)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(first, atomic, rtol=rtol * 4, atol=atol * 4)
    cpu = ops._roi_align_backward(grad.cpu(), x.cpu(), rois.cpu(), 0.25, 7, 7, sampling, True, mode)
    torch.testing.assert_close(first.cpu(), cpu, rtol=rtol * 4, atol=atol * 4)


def test_deterministic_backward_handles_more_rois_per_tile_than_the_shared_list():
    """More than 256 RoIs over one tile: the gather collects them in several rounds."""
    ops = _ops()
    x = make_input(1, 9, 8, 32, torch.float32, False).cuda()
    g = torch.Generator().manual_seed(5)
    boxes = torch.rand(700, 4, generator=g) * 8
    rois = torch.cat([torch.zeros(700, 1), boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1).cuda()
    grad = torch.randn(700, 9, 2, 2, device="cuda")
    det = _backward(ops, True, grad, x, rois, 1.0, 2, 2, 2, True, "avg")
    cpu = ops._roi_align_backward(grad.cpu(), x.cpu(), rois.cpu(), 1.0, 2, 2, 2, True, "avg")
    torch.testing.assert_close(det.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_int64_indexing_path():
    """K * C * oh * ow > 2^31 (tiny C, many RoIs): the kernels switch to 64-bit indices."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    ops = _ops()
    x = make_input(2, 1, 32, 32, torch.float16, False).cuda()
    k = 2**31 // (64 * 64) + 1024
    base = make_rois(2, 128, 128, 64, seed=7).cuda()
    rois = base.repeat(k // 64 + 1, 1)[:k].contiguous()
    out = ops.roi_align(x, rois, 0.25, 64, 64, 1, True, "avg")
    assert out.numel() > 2**31
    expect = ops.roi_align(x, rois[-64:], 0.25, 64, 64, 1, True, "avg")
    assert torch.equal(out[-64:], expect)
    grad = torch.zeros_like(out)
    grad[-1] = 1
    g_big = ops._roi_align_backward(grad, x, rois, 0.25, 64, 64, 1, True, "avg")
    g_small = ops._roi_align_backward(grad[-1:].contiguous(), x, rois[-1:], 0.25, 64, 64, 1, True, "avg")
    torch.testing.assert_close(g_big, g_small)


@pytest.mark.parametrize("bad", ["batch_high", "batch_negative", "batch_fraction", "nan", "inf"])
def test_bad_rois_raise_and_leave_the_device_usable(bad):
    ops = _ops()
    x = make_input(2, 4, 16, 16, torch.float32, False).cuda()
    rois = make_rois(2, 64, 64, 8).cuda()
    value = {
        "batch_high": 2.0,
        "batch_negative": -1.0,
        "batch_fraction": 0.5,
        "nan": float("nan"),
        "inf": float("inf"),
    }[bad]
    column = 0 if bad.startswith("batch") else 3
    rois[5, column] = value
    with pytest.raises(ValueError, match="rois"):
        ops.roi_align(x, rois, 0.25, 7, 7, 2, True, "avg")
    torch.cuda.synchronize()  # an illegal memory access would surface here
    assert ops.roi_align(x, rois[:5], 0.25, 7, 7, 2, True, "avg").isfinite().all()


def test_bad_arguments_raise():
    ops = _ops()
    x = make_input(1, 4, 16, 16, torch.float32, False).cuda()
    rois = make_rois(1, 64, 64, 4).cuda()
    with pytest.raises(ValueError, match="device"):
        ops.roi_align(x, rois.cpu(), 0.25, 7, 7, 2, True, "avg")
    with pytest.raises(TypeError, match="rois"):
        ops.roi_align(x, rois.double(), 0.25, 7, 7, 2, True, "avg")
    with pytest.raises(TypeError, match="input"):
        ops.roi_align(x.int(), rois, 0.25, 7, 7, 2, True, "avg")
    with pytest.raises(ValueError, match="spatial_scale"):
        ops.roi_align(x, rois, -1.0, 7, 7, 2, True, "avg")
    with pytest.raises(ValueError, match="mode"):
        ops.roi_align(x, rois, 0.25, 7, 7, 2, True, "median")
    with pytest.raises(ValueError, match="grad"):
        ops._roi_align_backward(torch.zeros(4, 4, 6, 7, device="cuda"), x, rois, 0.25, 7, 7, 2, True, "avg")
    torch.cuda.synchronize()


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x = make_input(2, 3, 12, 14, torch.float32, channels_last).cuda().requires_grad_()
    rois = make_rois(2, 48, 56, 6).cuda()
    torch.library.opcheck(torch.ops.maskrcnn.roi_align.default, (x, rois, 0.25, 3, 3, 2, True, "avg"))
    torch.library.opcheck(torch.ops.maskrcnn.roi_align.default, (x, rois, 0.25, 3, 3, -1, False, "max"))
