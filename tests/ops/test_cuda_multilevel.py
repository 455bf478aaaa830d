"""Tests of the fused multi-level RoI Align (ops/cuda/multilevel_roi_align.cu) on both targets: a
GPU (marker `cuda`) and the device emulation of the same source (always; tests/ops/conftest.py).

The fused op must equal pooling each level's RoIs with the single-level op (same kernels, so
bitwise in the forward and in the deterministic backward), must not synchronise with the host
(it is captured in a CUDA graph), and must raise on bad levels.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from cuda_cases import TOL, _ops, make_input, make_rois, rois_for, with_deterministic

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def _pyramid(dtype, channels_last, n=2, c=12, size=(96, 128), device="cuda"):
    h, w = size
    return [
        make_input(n, c, int(h * s), int(w * s), dtype, channels_last, seed=10 + i).to(device)
        for i, s in enumerate(SCALES)
    ]


def _levels(rois):
    area = (rois[:, 3] - rois[:, 1]).clamp(min=0) * (rois[:, 4] - rois[:, 2]).clamp(min=0)
    return torch.clamp(torch.floor(4 + torch.log2(area.sqrt() / 224 + 1e-8)), 2, 5).long() - 2


@pytest.mark.parametrize(
    "dtype,channels_last,mode,aligned,sampling",
    list(
        itertools.product(
            [torch.bfloat16, torch.float32, torch.float64], [False, True], ["avg", "max"], [True, False], [2, -1]
        )
    ),
)
def test_fused_equals_per_level_roi_align(target, dtype, channels_last, mode, aligned, sampling):
    ops = target.ops
    feats = _pyramid(dtype, channels_last, device=target.device)
    rois = target.to(rois_for(dtype, make_rois(2, 96, 128, target.size(80, 40), seed=4)))
    rois[:, 1:] *= 8  # spread the sizes over the levels
    levels = _levels(rois)
    args = (7, 7, sampling, aligned, mode)
    fused = ops.multilevel_roi_align(feats, rois, levels, SCALES, *args)
    grad = target.to(torch.randn(fused.shape, dtype=torch.float64).to(dtype))
    for deterministic in (False, True):
        grads = with_deterministic(
            deterministic, lambda: ops._multilevel_roi_align_backward(grad, feats, rois, levels, SCALES, *args)
        )
        for lvl, (f, s) in enumerate(zip(feats, SCALES)):
            idx = (levels == lvl).nonzero().squeeze(1)
            single = ops.roi_align(f, rois[idx], s, *args)
            assert torch.equal(fused[idx], single)
            g_single = with_deterministic(
                deterministic, lambda: ops._roi_align_backward(grad[idx].contiguous(), f, rois[idx], s, *args)
            )
            assert grads[lvl].shape == f.shape and grads[lvl].dtype == dtype
            if deterministic:  # same RoIs in the same order: the same sums in the same order
                assert torch.equal(grads[lvl], g_single)
            else:
                rtol, atol = TOL[dtype]
                torch.testing.assert_close(grads[lvl], g_single, rtol=rtol * 4, atol=atol * 4)


def test_matches_cpu_kernel_and_torchvision_multiscale(target):
    torchvision = pytest.importorskip("torchvision")
    feats = _pyramid(torch.float32, False, c=8, device=target.device)
    rois = target.to(make_rois(2, 96, 128, 60, seed=6))
    rois[:, 1:] *= 8
    levels = _levels(rois)
    fused = target.ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, 2, False, "avg")
    cpu = _ops().multilevel_roi_align([f.cpu() for f in feats], rois.cpu(), levels.cpu(), SCALES, 7, 7, 2, False, "avg")
    torch.testing.assert_close(fused.cpu(), cpu, rtol=1e-5, atol=1e-5)
    for lvl, (f, s) in enumerate(zip(feats, SCALES)):
        idx = (levels == lvl).nonzero().squeeze(1)
        theirs = torchvision.ops.roi_align(f, rois[idx], (7, 7), s, 2, False)
        torch.testing.assert_close(fused[idx], theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_forward_and_backward_capture_in_a_cuda_graph():
    """No host synchronisation: capturing would fail on one. GPU only: graphs need a GPU."""
    ops = _ops()
    feats = _pyramid(torch.float32, True, c=16)
    rois = make_rois(2, 96, 128, 64, seed=8).cuda()
    rois[:, 1:] *= 8
    levels = _levels(rois)
    grad = torch.randn(64, 16, 7, 7, device="cuda")
    eager = ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, -1, True, "avg")
    eager_grads = with_deterministic(
        True, lambda: ops._multilevel_roi_align_backward(grad, feats, rois, levels, SCALES, 7, 7, -1, True, "avg")
    )
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graphs recommends
        ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, -1, True, "avg")
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.cuda.graph(graph):
            out = ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, -1, True, "avg")
            grads = ops._multilevel_roi_align_backward(grad, feats, rois, levels, SCALES, 7, 7, -1, True, "avg")
    finally:
        torch.use_deterministic_algorithms(previous)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    for a, b in zip(grads, eager_grads):
        assert torch.equal(a, b)


def test_bad_levels_raise(target):
    ops = target.ops
    feats = _pyramid(torch.float32, False, c=4, device=target.device)
    rois = target.to(make_rois(2, 96, 128, 10))
    levels = target.to(torch.zeros(10, dtype=torch.long))
    levels[3] = 4
    with pytest.raises(ValueError, match="levels"):
        ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, 2, True, "avg")
    levels[3] = 0
    rois[4, 0] = 5
    with pytest.raises(ValueError, match="batch index"):
        ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, 2, True, "avg")
    with pytest.raises(ValueError, match="levels"):
        ops.multilevel_roi_align(feats * 3, rois, levels, SCALES * 3, 7, 7, 2, True, "avg")  # 12 > 8 levels
    target.synchronize()


def test_mixed_layouts_return_gradients_in_each_levels_layout(target):
    feats = _pyramid(torch.float32, False, c=8, device=target.device)
    feats[1] = feats[1].contiguous(memory_format=torch.channels_last)
    rois = target.to(make_rois(2, 96, 128, 30, seed=9))
    rois[:, 1:] *= 8
    levels = _levels(rois)
    out = target.ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, 2, True, "avg")
    cpu = _ops().multilevel_roi_align([f.cpu() for f in feats], rois.cpu(), levels.cpu(), SCALES, 7, 7, 2, True, "avg")
    torch.testing.assert_close(out.cpu(), cpu, rtol=1e-5, atol=1e-5)
    grads = target.ops._multilevel_roi_align_backward(
        torch.ones_like(out), feats, rois, levels, SCALES, 7, 7, 2, True, "avg"
    )
    assert grads[1].is_contiguous(memory_format=torch.channels_last)
    assert grads[0].is_contiguous()


@pytest.mark.cuda
def test_forward_synchronises_with_the_host_once():
    """The value check reads one flag back; building the per-RoI scales copies nothing from the
    host (a pageable copy of the level table used to be a second
    synchronisation). GPU only: the emulation has no host-device boundary."""
    import warnings

    ops = _ops()
    feats = _pyramid(torch.float32, False, c=4)
    rois = make_rois(2, 96, 128, 20, seed=13).cuda()
    rois[:, 1:] *= 8
    levels = _levels(rois)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ops.multilevel_roi_align(feats, rois, levels, SCALES, 7, 7, -1, True, "avg")
            ops.roi_align(feats[0], rois, SCALES[0], 7, 7, -1, True, "avg")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    synchronising = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(synchronising) == 2, [str(w.message) for w in synchronising]  # one per call
