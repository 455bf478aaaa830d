"""Inputs and targets shared by the tests of the CUDA RoI kernels (tests/ops/test_cuda_*.py).

Every such test runs on two targets (the ``target`` fixture of tests/ops/conftest.py): the real
kernels on a GPU (``cuda``, skipped without one) and the same kernel sources compiled for device
emulation on the CPU (``emulated``, torch.ops.maskrcnn_cuda_emu, always), with the same oracles.

Imported by the test modules as ``cuda_cases`` (pytest puts tests/ops on sys.path).
"""

from __future__ import annotations

import torch

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# (rtol, atol) of CUDA against the CPU kernel for each dtype: float32 / float64 differ only in
# summation order (FMA contraction); half types are rounded once from a float32 accumulator.
TOL = {
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-12, 1e-12),
}


def _ops():
    import maskrcnn.ops  # noqa: F401  (loads the extension and registers autograd / fake kernels)

    return torch.ops.maskrcnn


class Target:
    """Where the CUDA kernels run: ``cuda`` (a GPU, torch.ops.maskrcnn on CUDA tensors) or
    ``emulated`` (torch.ops.maskrcnn_cuda_emu on CPU tensors)."""

    def __init__(self, name: str):
        self.name = name
        self.is_gpu = name == "cuda"
        if self.is_gpu:
            self.ops = _ops()
            self.device = torch.device("cuda")
        else:
            from maskrcnn.ops import cuda_emulation_ops

            self.ops = cuda_emulation_ops()
            self.device = torch.device("cpu")

    def to(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the target's device (a copy, so that a test may change it freely)."""
        return t.to(self.device) if self.is_gpu else t.clone()

    def synchronize(self) -> None:
        """Waits for the device (an illegal memory access would surface here on a GPU)."""
        if self.is_gpu:
            torch.cuda.synchronize()

    def size(self, gpu: int, emulated: int) -> int:
        """A problem size: the GPU's, or a smaller one that keeps the emulated run to seconds."""
        return gpu if self.is_gpu else emulated

    def __repr__(self) -> str:
        return f"Target({self.name!r})"


def with_deterministic(flag: bool, fn):
    """fn() with torch.use_deterministic_algorithms(flag), restoring the previous setting."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(flag)
    try:
        return fn()
    finally:
        torch.use_deterministic_algorithms(previous)


def make_rois(
    num_images: int, height: int, width: int, count: int, *, seed: int = 0, dtype=torch.float32
) -> torch.Tensor:
    """(K, 5) boxes in image pixels: ordinary, tiny, degenerate (x2 < x1), and partly or wholly
    outside the image, over `num_images` images (in shuffled image order)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * torch.tensor([width, height]) * 1.2 - 0.1 * torch.tensor([width, height])
    wh = torch.rand(count, 2, generator=g) * torch.tensor([width, height]) * 0.6
    kind = torch.arange(count) % 6
    wh[kind == 1] *= 0.01  # tiny
    wh[kind == 2] *= -0.2  # degenerate: x2 < x1, y2 < y1
    xy[kind == 3] += torch.tensor([width, height]) * 0.9  # mostly outside (bottom right)
    xy[kind == 4] -= torch.tensor([width, height]) * 0.9  # mostly outside (top left)
    batch = torch.randint(0, num_images, (count, 1), generator=g).float()
    rois = torch.cat([batch, xy, xy + wh], dim=1)
    return rois.to(dtype)


def make_input(n, c, h, w, dtype, channels_last, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def rois_for(dtype, rois):
    return rois.to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
