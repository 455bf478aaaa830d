"""The device emulation of the CUDA kernels itself (ops/cuda/emulation, docs/ops.md "CUDA device
emulation"): the package-wide switch MASKRCNN_CUDA_EMULATION=1, determinism under other thread
interleavings, and a few training iterations of a model on the emulated kernels.

The kernels' own behaviour is tested on both targets by tests/ops/test_cuda_*.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cuda_cases import make_input, make_rois, with_deterministic

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulated(target):
    if target.is_gpu:
        pytest.skip("a test of the emulation")
    return target


def _run_python(code: str, emulation: bool, timeout: int = 600) -> str:
    env = dict(os.environ)
    env.pop("MASKRCNN_CUDA_EMULATION", None)
    if emulation:
        env["MASKRCNN_CUDA_EMULATION"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


_BACKEND_PROBE = r"""
import json, torch, maskrcnn.ops as ops
dump = {op: torch._C._dispatch_dump(f"maskrcnn::{op}") for op in ("roi_align", "roi_pool", "multilevel_roi_align")}
cpu_lines = {op: [l for l in d.splitlines() if l.startswith("CPU")] for op, d in dump.items()}
from torch.utils._python_dispatch import TorchDispatchMode
class Calls(TorchDispatchMode):
    seen = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
x = torch.randn(1, 2, 8, 8, requires_grad=True)
with Calls():
    ops.roi_pool(x, torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0]]), 2).sum().backward()
pool_ops = sorted({n for n in Calls.seen if n.startswith("maskrcnn.")})
print(json.dumps({"backend": ops.kernel_backend(), "cpu": cpu_lines, "roi_pool_calls": pool_ops}))
"""


@pytest.mark.parametrize("emulation", [False, True])
def test_the_switch_selects_the_kernels_of_torch_ops_maskrcnn(emulated, emulation):
    """MASKRCNN_CUDA_EMULATION=1 registers the emulated CUDA kernels, and only them, as the CPU
    kernels of torch.ops.maskrcnn (the dispatcher names the file that registered each kernel),
    kernel_backend() says so, and the functional roi_pool calls the public op (whose CPU kernel is
    then the CUDA one) instead of the CPU-only compact op."""
    report = json.loads(_run_python(_BACKEND_PROBE, emulation).strip().splitlines()[-1])
    assert report["backend"] == ("cuda-emulation" if emulation else "native")
    for op, lines in report["cpu"].items():
        assert len(lines) == 1, (op, lines)
        from_cuda_source = "ops/cuda/" in lines[0]
        assert from_cuda_source == emulation, (op, lines[0])
    # maskrcnn.ops.roi_pool takes the CPU-only compact op natively, the public (CUDA) op under emulation.
    if emulation:
        assert report["roi_pool_calls"] == ["maskrcnn._roi_pool_backward", "maskrcnn.roi_pool"]
    else:
        assert report["roi_pool_calls"] == ["maskrcnn._roi_pool_compact", "maskrcnn._roi_pool_compact_backward"]


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("os_threads", ["1", "2"])
def test_deterministic_backward_is_bitwise_equal_under_other_interleavings(emulated, mode, os_threads, monkeypatch):
    """The gather backward is bitwise reproducible whatever the order in which blocks and threads
    run and atomics interleave (perturbed schedules, blocks on 1 or 2 OS threads); the atomic
    backward's sums do change with the order (so the perturbation is real) and stay within
    tolerance of the gather's."""
    monkeypatch.setenv("MASKRCNN_CUDA_EMULATION_THREADS", os_threads)
    ops = emulated.ops
    x = make_input(2, 10, 19, 23, torch.float32, False)
    rois = make_rois(2, 19 * 4, 23 * 4, 150, seed=21)
    grad = torch.randn(150, 10, 5, 5, generator=torch.Generator().manual_seed(22))
    args = (grad, x, rois, 0.25, 5, 5, 2, True, mode)
    deterministic, atomic = [], []
    try:
        for seed in (0, 1, 2, 3):
            ops._set_schedule(seed)
            deterministic.append(with_deterministic(True, lambda: ops._roi_align_backward(*args)))
            atomic.append(with_deterministic(False, lambda: ops._roi_align_backward(*args)))
    finally:
        ops._set_schedule(0)
    for d in deterministic[1:]:
        assert torch.equal(d, deterministic[0])
    for a in atomic:
        torch.testing.assert_close(a, deterministic[0], rtol=1e-5, atol=1e-5)
    if mode == "avg":  # many RoIs share cells: float sums in another order round differently
        assert any(not torch.equal(a, atomic[0]) for a in atomic[1:])


def test_roi_pool_deterministic_backward_under_other_interleavings(emulated):
    ops = emulated.ops
    x = make_input(2, 9, 21, 27, torch.float32, True)
    rois = make_rois(2, 21 * 4, 27 * 4, 120, seed=23)
    out, argmax = ops.roi_pool(x, rois, 0.25, 4, 4)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(24))
    results = []
    try:
        for seed in (0, 5, 6):
            ops._set_schedule(seed)
            results.append(with_deterministic(True, lambda: ops._roi_pool_backward(grad, x, rois, argmax, 0.25, 4, 4)))
    finally:
        ops._set_schedule(0)
    assert all(torch.equal(r, results[0]) for r in results[1:])
    expected = torch.ops.maskrcnn._roi_pool_backward(grad, x, rois, argmax, 0.25, 4, 4)
    torch.testing.assert_close(results[0], expected)


def test_training_steps_on_the_emulated_kernels_match_the_cpu_kernels(emulated):
    """Two training steps of small Mask R-CNNs (FPN: the fused multi-level RoI Align; C4: RoI
    Pool): in a child with MASKRCNN_CUDA_EMULATION=1 every RoI op of the models runs the CUDA
    kernels' code; the losses and gradient norms follow the CPU kernels' (this process) within
    float tolerance."""
    import emulation_training

    emulation = json.loads(_run_python(_CHILD, True).strip().splitlines()[-1])
    assert emulation["backend"] == "cuda-emulation"
    for model, roi_layer in emulation_training.CASES:
        native = emulation_training.train_steps(model, roi_layer)
        emulated_history = emulation["runs"][f"{model}/{roi_layer}"]
        for a, b in zip(native, emulated_history, strict=True):
            assert a["losses"].keys() == b["losses"].keys()
            for name in a["losses"]:
                assert b["losses"][name] == pytest.approx(a["losses"][name], rel=1e-3, abs=1e-4), (model, name)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3), model


_CHILD = "import sys; sys.path.insert(0, 'tests/ops'); import emulation_training; emulation_training.main()"
