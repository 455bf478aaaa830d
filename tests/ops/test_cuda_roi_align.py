"""Tests of the CUDA RoI Align kernels (ops/cuda/roi_align*.cu) on both targets: a GPU (marker
`cuda`) and the device emulation of the same sources (always; tests/ops/conftest.py).

Oracles: our CPU kernels (same arithmetic header, deterministic), the reference implementation,
and torchvision.ops.roi_align.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from cuda_cases import DTYPES, TOL, _ops, make_input, make_rois, rois_for, with_deterministic

CASES = list(itertools.product(DTYPES, [False, True], ["avg", "max"], [True, False], [2, -1]))


@pytest.mark.parametrize("dtype,channels_last,mode,aligned,sampling", CASES)
def test_forward_and_backward_match_cpu_kernels(target, dtype, channels_last, mode, aligned, sampling):
    ops = _ops()
    x = make_input(2, 7, 23, 31, dtype, channels_last)
    rois = rois_for(dtype, make_rois(2, 23 * 4, 31 * 4, 40))
    args = (0.25, 5, 4, sampling, aligned, mode)
    out_cpu = ops.roi_align(x, rois, *args)
    out_dev = target.ops.roi_align(target.to(x), target.to(rois), *args)
    assert (
        out_dev.is_contiguous(memory_format=torch.channels_last)
        == out_cpu.is_contiguous(memory_format=torch.channels_last)
        and out_dev.shape == out_cpu.shape
    )
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out_dev.cpu(), out_cpu, rtol=rtol, atol=atol)

    grad = torch.randn(out_cpu.shape, dtype=torch.float64).to(dtype)
    g_cpu = ops._roi_align_backward(grad, x, rois, *args)
    for deterministic in (False, True):
        g_dev = with_deterministic(
            deterministic,
            lambda: target.ops._roi_align_backward(target.to(grad), target.to(x), target.to(rois), *args),
        )
        assert g_dev.dtype == dtype and g_dev.shape == x.shape
        assert g_dev.is_contiguous(memory_format=torch.channels_last) == channels_last
        if mode == "max" and dtype in (torch.float16, torch.bfloat16):
            # A near-tie between two samples may be broken differently after float32 rounding of
            # the same values in another order: compare where both kernels picked the same winner.
            mask = (g_dev.cpu() - g_cpu).abs() <= atol + rtol * g_cpu.abs()
            assert mask.float().mean() > 0.99
        else:
            torch.testing.assert_close(g_dev.cpu(), g_cpu, rtol=rtol * 4, atol=atol * 4)


@pytest.mark.parametrize("mode,aligned,sampling", list(itertools.product(["avg", "max"], [True, False], [2, -1])))
def test_forward_matches_reference(target, mode, aligned, sampling):
    from maskrcnn.ops.reference import roi_align_reference

    x = make_input(2, 3, 17, 19, torch.float64, False)
    rois = make_rois(2, 17 * 2, 19 * 2, 24, dtype=torch.float64)
    out = target.ops.roi_align(target.to(x), target.to(rois), 0.5, 3, 4, sampling, aligned, mode)
    ref = roi_align_reference(x, rois, (3, 4), 0.5, sampling, aligned, mode)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,channels_last,aligned,sampling",
    list(itertools.product([torch.float32, torch.float64], [False, True], [True, False], [2, 0])),
)
def test_matches_torchvision(target, dtype, channels_last, aligned, sampling):
    torchvision = pytest.importorskip("torchvision")
    x = target.to(make_input(2, 16, 40, 48, dtype, channels_last)).requires_grad_()
    rois = target.to(make_rois(2, 160, 192, target.size(64, 32), dtype=dtype))
    ours = target.ops.roi_align(x, rois, 0.25, 7, 7, sampling, aligned, "avg")
    theirs = torchvision.ops.roi_align(x, rois, (7, 7), 0.25, sampling, aligned)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
    grad = torch.randn_like(theirs)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("mode,deterministic", list(itertools.product(["avg", "max"], [False, True])))
def test_gradcheck_float64(target, mode, deterministic):
    x = target.to(make_input(2, 2, 9, 11, torch.float64, False)).requires_grad_()
    # Boxes away from ties of max mode (random inputs) and inside the map.
    rois = target.to(
        torch.tensor(
            [[0, 3.1, 2.2, 30.5, 25.7], [1, 10.3, 4.9, 38.2, 33.1], [1, -4.0, -3.0, 12.0, 9.5]], dtype=torch.float64
        )
    )
    assert with_deterministic(
        deterministic,
        lambda: torch.autograd.gradcheck(
            lambda t: target.ops.roi_align(t, rois, 0.25, 3, 3, 2, True, mode), (x,), eps=1e-6, atol=1e-7
        ),
    )


@pytest.mark.parametrize(
    "dtype,channels_last,mode,sampling", list(itertools.product(DTYPES, [False, True], ["avg", "max"], [2, -1]))
)
def test_deterministic_backward_is_bitwise_reproducible_and_close_to_atomic(
    target, dtype, channels_last, mode, sampling
):
    ops = _ops()
    # Many overlapping RoIs (crowded like sampled proposals) so that atomics do race; 70 channels
    # make two channel groups of the gather.
    k = target.size(600, 120)
    x = make_input(2, 70, 37, 45, dtype, channels_last)
    rois = rois_for(dtype, make_rois(2, 37 * 4, 45 * 4, k, seed=3))
    grad = torch.randn(k, 70, 7, 7, dtype=torch.float64).to(dtype)
    args = (target.to(grad), target.to(x), target.to(rois), 0.25, 7, 7, sampling, True, mode)
    first = with_deterministic(True, lambda: target.ops._roi_align_backward(*args))
    second = with_deterministic(True, lambda: target.ops._roi_align_backward(*args))
    assert torch.equal(first, second)
    assert first.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    atomic = with_deterministic(False, lambda: target.ops._roi_align_backward(*args))
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(first, atomic, rtol=rtol * 4, atol=atol * 4)
    cpu = ops._roi_align_backward(grad, x, rois, 0.25, 7, 7, sampling, True, mode)
    torch.testing.assert_close(first.cpu(), cpu, rtol=rtol * 4, atol=atol * 4)


def test_deterministic_backward_handles_more_rois_per_tile_than_the_shared_list(target):
    """More than 256 RoIs over one tile: the gather collects them in several rounds."""
    ops = _ops()
    x = make_input(1, 9, 8, 32, torch.float32, False)
    g = torch.Generator().manual_seed(5)
    boxes = torch.rand(700, 4, generator=g) * 8
    rois = torch.cat([torch.zeros(700, 1), boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    grad = torch.randn(700, 9, 2, 2)
    det = with_deterministic(
        True,
        lambda: target.ops._roi_align_backward(
            target.to(grad), target.to(x), target.to(rois), 1.0, 2, 2, 2, True, "avg"
        ),
    )
    cpu = ops._roi_align_backward(grad, x, rois, 1.0, 2, 2, 2, True, "avg")
    torch.testing.assert_close(det.cpu(), cpu, rtol=1e-5, atol=1e-5)


def _nan_case():
    # A 4x4 map with NaN at (0, 0), box [-3, -3, 1, 1], one bin of 2 x 2 samples at y, x in
    # {-2, 0} (unaligned, scale 1). Only (0, 0) is on the map (coordinates in [-1, size]); the three
    # off-map samples (value 0) come first in row-major order. The maximum starts from the first
    # on-map sample, NaN, which stays: the bin is NaN and its gradient goes to cell (0, 0), as in
    # the reference and the CPU kernel. (The CUDA kernel started from the first sample, an
    # off-map 0, and gave 0 and no gradient.)
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    rois = torch.tensor([[0.0, -3.0, -3.0, 1.0, 1.0]], dtype=torch.float64)
    return x, rois


def test_max_mode_follows_the_cpu_kernel_on_nan(target):
    from maskrcnn.ops.reference import roi_align_reference

    ops = _ops()
    x, rois = _nan_case()
    args = (1.0, 1, 1, 2, False, "max")
    expected = roi_align_reference(x, rois, (1, 1), 1.0, 2, False, "max")
    assert torch.isnan(expected).all() and torch.isnan(ops.roi_align(x, rois, *args)).all()
    out = target.ops.roi_align(target.to(x), target.to(rois), *args)
    assert torch.isnan(out).all()
    grad = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    g_cpu = ops._roi_align_backward(grad, x, rois, *args)
    for deterministic in (False, True):
        g = with_deterministic(
            deterministic,
            lambda: target.ops._roi_align_backward(target.to(grad), target.to(x), target.to(rois), *args),
        )
        torch.testing.assert_close(g.cpu(), g_cpu, equal_nan=True)


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_mode_matches_cpu_with_off_map_samples_negative_values_and_nan(target, channels_last):
    """Max over bins that straddle the border: an off-map sample is 0 and competes (ties to the
    first sample in row-major order), the maximum starts from the first on-map sample, a NaN
    there stays. Forward and both backward paths equal the CPU kernel exactly (float64)."""
    ops = _ops()
    g = torch.Generator().manual_seed(11)
    x = -torch.rand(2, 5, 9, 11, generator=g, dtype=torch.float64)  # all negative: off-map 0 wins
    x[:, 1] = torch.rand(2, 9, 11, generator=g, dtype=torch.float64)  # all positive: on-map wins
    x[:, 2] = 0.0  # exact ties with the off-map zeros
    x[0, 3, 0, :4] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = make_rois(2, 9 * 2, 11 * 2, 30, seed=12, dtype=torch.float64)
    for aligned, sampling in itertools.product([True, False], [2, 3, -1]):
        args = (0.5, 3, 2, sampling, aligned, "max")
        expected = ops.roi_align(x, rois, *args)
        out = target.ops.roi_align(target.to(x), target.to(rois), *args)
        torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=0, equal_nan=True)
        grad = torch.rand(expected.shape, generator=g, dtype=torch.float64)
        g_cpu = ops._roi_align_backward(grad, x, rois, *args)
        for deterministic in (False, True):
            g_dev = with_deterministic(
                deterministic,
                lambda: target.ops._roi_align_backward(target.to(grad), target.to(x), target.to(rois), *args),
            )
            torch.testing.assert_close(g_dev.cpu(), g_cpu, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_deterministic_backward_of_an_empty_batch(target):
    """A batch of no images has no cells: the gradient is empty, and the gather launches nothing
    (it used to launch a grid of 0 blocks, an invalid configuration). The
    backward does not check RoI values (that costs a synchronisation per step), so the RoI's
    batch index 0 reaches the kernels, which skip it."""
    x = torch.zeros(0, 3, 5, 5)
    rois = torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    grad = torch.ones(1, 3, 2, 2)
    for deterministic in (False, True):
        g = with_deterministic(
            deterministic,
            lambda: target.ops._roi_align_backward(
                target.to(grad), target.to(x), target.to(rois), 1.0, 2, 2, 2, True, "avg"
            ),
        )
        assert g.shape == x.shape


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_huge_adaptive_roi_is_pooled_from_its_on_map_samples(target, mode):
    """A box far taller than the map with adaptive sampling: 2^30 - 1 sample rows per bin (just
    within the value check's limit), of which only those on the map are visited (the
    CUDA kernels used to visit them all), and the deterministic backward does not drop the RoI although
    bins x samples (3 x (2^30 - 1)) exceeds 2^31 (its sample range was an int)."""
    ops = _ops()
    x = make_input(1, 2, 24, 20, torch.float64, False)
    half_height = (3 * (2**30 - 1) - 0.5) / 2  # ceil(height / 3) = 2^30 - 1 rows of samples per bin
    rois = torch.tensor([[0.0, 2.0, -half_height, 8.0, half_height]], dtype=torch.float64)
    args = (1.0, 3, 7, -1, True, mode)
    expected = ops.roi_align(x, rois, *args)
    out = target.ops.roi_align(target.to(x), target.to(rois), *args)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-9, atol=1e-20)
    grad = torch.rand(expected.shape, dtype=torch.float64)
    g_cpu = ops._roi_align_backward(grad, x, rois, *args)
    assert g_cpu.abs().sum() > 0
    for deterministic in (False, True):
        g = with_deterministic(
            deterministic,
            lambda: target.ops._roi_align_backward(target.to(grad), target.to(x), target.to(rois), *args),
        )
        torch.testing.assert_close(g.cpu(), g_cpu, rtol=1e-9, atol=1e-20)


def test_deterministic_buffers_are_not_filled_first(target):
    """Under use_deterministic_algorithms(True) PyTorch fills every tensor it allocates with NaN;
    the gather writes its buffers (gradient, footprints, winners) whole, so they are allocated
    without that fill. The profiler sees every fill_ inside the op; the
    inputs are given in the layouts and dtypes the backward uses, so it makes no copies."""
    x = target.to(make_input(2, 8, 20, 24, torch.float32, False))
    rois = target.to(make_rois(2, 80, 96, 12))
    grad = target.to(torch.randn(12, 8, 7, 7)).contiguous(memory_format=torch.channels_last)

    def fills():
        with torch.profiler.profile() as prof:
            target.ops._roi_align_backward(grad, x, rois, 0.25, 7, 7, 2, True, "max")
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::fill_", "aten::zero_"))

    assert with_deterministic(True, fills) == 0
    assert with_deterministic(False, fills) >= 1  # the atomic path does zero its buffer


@pytest.mark.cuda
def test_int64_indexing_path():
    """K * C * oh * ow > 2^31 (tiny C, many RoIs): the kernels switch to 64-bit indices.
    GPU only: the output alone is 4 GiB, far beyond what the emulation runs in seconds."""
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


@pytest.mark.cuda
def test_single_level_forward_on_the_gpu_with_bad_rois_names_them():
    """Finding 1: the single-level forward multiplied CUDA boxes by a CPU scale tensor (a device
    mismatch on every call), and its error path did the same. GPU only: on the emulation every
    tensor is on the CPU."""
    ops = _ops()
    x = make_input(2, 4, 16, 16, torch.float32, False).cuda()
    rois = make_rois(2, 64, 64, 8).cuda()
    assert ops.roi_align(x, rois, 0.25, 7, 7, -1, True, "avg").isfinite().all()
    out, _ = ops.roi_pool(x, rois, 0.25, 7, 7)
    assert out.isfinite().all()
    rois[3, 2] = 1e15
    with pytest.raises(ValueError, match="too large"):
        ops.roi_align(x, rois, 0.25, 7, 7, 2, True, "avg")
    torch.cuda.synchronize()


@pytest.mark.parametrize("bad", ["batch_high", "batch_negative", "batch_fraction", "nan", "inf"])
def test_bad_rois_raise_and_leave_the_device_usable(target, bad):
    x = target.to(make_input(2, 4, 16, 16, torch.float32, False))
    rois = target.to(make_rois(2, 64, 64, 8))
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
        target.ops.roi_align(x, rois, 0.25, 7, 7, 2, True, "avg")
    target.synchronize()
    assert target.ops.roi_align(x, rois[:5], 0.25, 7, 7, 2, True, "avg").isfinite().all()


def test_bad_arguments_raise(target):
    x = target.to(make_input(1, 4, 16, 16, torch.float32, False))
    rois = target.to(make_rois(1, 64, 64, 4))
    if target.is_gpu:  # the emulation has one device
        with pytest.raises(ValueError, match="device"):
            target.ops.roi_align(x, rois.cpu(), 0.25, 7, 7, 2, True, "avg")
    with pytest.raises(TypeError, match="rois"):
        target.ops.roi_align(x, rois.double(), 0.25, 7, 7, 2, True, "avg")
    with pytest.raises(TypeError, match="input"):
        target.ops.roi_align(x.int(), rois, 0.25, 7, 7, 2, True, "avg")
    with pytest.raises(ValueError, match="spatial_scale"):
        target.ops.roi_align(x, rois, -1.0, 7, 7, 2, True, "avg")
    with pytest.raises(ValueError, match="mode"):
        target.ops.roi_align(x, rois, 0.25, 7, 7, 2, True, "median")
    with pytest.raises(ValueError, match="grad"):
        target.ops._roi_align_backward(target.to(torch.zeros(4, 4, 6, 7)), x, rois, 0.25, 7, 7, 2, True, "avg")
    target.synchronize()


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(target, channels_last):
    x = target.to(make_input(2, 3, 12, 14, torch.float32, channels_last)).requires_grad_()
    rois = target.to(make_rois(2, 48, 56, 6))
    torch.library.opcheck(target.ops.roi_align.default, (x, rois, 0.25, 3, 3, 2, True, "avg"))
    torch.library.opcheck(target.ops.roi_align.default, (x, rois, 0.25, 3, 3, -1, False, "max"))


def test_trusted_rois_skip_the_value_check_and_stay_memory_safe(target):
    """Inside trusted_rois (the model's poolers) the CUDA ops do not check RoI values, which saves
    their host synchronisation; a bad RoI is then skipped by the kernels (zero output), never
    read out of bounds."""
    x = target.to(make_input(2, 3, 12, 14, torch.float32, False))
    rois = target.to(make_rois(2, 48, 56, 6))
    good = target.ops.roi_align(x, rois, 0.25, 3, 3, 2, True, "avg")
    rois[2, 0] = 7  # no such image
    with pytest.raises(ValueError, match="batch index"):
        target.ops.roi_align(x, rois, 0.25, 3, 3, 2, True, "avg")
    assert target.ops._trust_roi_values(True) is False
    try:
        out = target.ops.roi_align(x, rois, 0.25, 3, 3, 2, True, "avg")
    finally:
        assert target.ops._trust_roi_values(False) is True
    target.synchronize()
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(out[keep], good[keep])


def test_trusted_rois_context_restores_the_setting_and_cpu_ops_still_check():
    from maskrcnn.ops import kernel_backend, roi_align, trusted_rois

    x = make_input(1, 2, 8, 8, torch.float32, False)
    rois = torch.tensor([[3.0, 0.0, 0.0, 4.0, 4.0]])
    with pytest.raises(RuntimeError, match="inner"):
        with trusted_rois():
            assert torch.ops.maskrcnn._trust_roi_values(True) is True  # set by the context
            if kernel_backend() == "native":
                with pytest.raises(ValueError, match="batch index"):  # the CPU kernels always check
                    roi_align(x, rois, 2)
            else:  # MASKRCNN_CUDA_EMULATION=1: the CUDA kernels skip the unchecked bad RoI
                assert torch.equal(roi_align(x, rois, 2), torch.zeros(1, 2, 2, 2))
            raise RuntimeError("inner")
    assert torch.ops.maskrcnn._trust_roi_values(False) is False  # restored
