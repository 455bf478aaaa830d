"""Loads the native extension ``maskrcnn._C``, which registers the kernels of ``torch.ops.maskrcnn``,
and, when asked, the device-emulation build of the CUDA kernels (docs/ops.md, "CUDA device
emulation").

torch must be imported first: the extension links against libtorch and expects its symbols
to be loaded already.
"""

from __future__ import annotations

import glob
import os

import torch

try:
    from maskrcnn import _C  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the build state
    raise ImportError(
        "the native RoI ops (maskrcnn._C) are not built or do not load: run `make build` in the "
        f"repository root to (re)build them. Cause: {error}"
    ) from error

# MASKRCNN_CUDA_EMULATION=1: torch.ops.maskrcnn.* on CPU tensors run the CUDA kernels under device
# emulation instead of the CPU kernels (the same rule as cuda_emulation_requested() in
# ops/backend.h, which both libraries read when they register their kernels).
CUDA_EMULATION_REQUESTED = os.environ.get("MASKRCNN_CUDA_EMULATION") == "1"

_emulation_library: str | None = None


def cuda_emulation_library_path() -> str | None:
    """The emulated CUDA kernels' library: ``MASKRCNN_CUDA_EMULATION_LIB`` if set (a sanitized
    build, say), else the one ``make build-cuda-emulation`` put beside ``maskrcnn._C``."""
    explicit = os.environ.get("MASKRCNN_CUDA_EMULATION_LIB")
    if explicit:
        return explicit
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = sorted(glob.glob(os.path.join(package, "_C_cuda_emu*.so")))
    return found[0] if found else None


def load_cuda_emulation() -> None:
    """Loads the emulated CUDA kernels once: they register ``torch.ops.maskrcnn_cuda_emu.*`` (and,
    under MASKRCNN_CUDA_EMULATION=1, the CPU kernels of ``torch.ops.maskrcnn.*``)."""
    global _emulation_library
    if _emulation_library is not None:
        return
    path = cuda_emulation_library_path()
    if path is None or not os.path.isfile(path):
        raise ImportError(
            "the emulated CUDA kernels (maskrcnn/_C_cuda_emu*.so) are not built: run "
            "`make build-cuda-emulation` in the repository root"
            + (f" (MASKRCNN_CUDA_EMULATION_LIB={path} does not exist)" if path else "")
        )
    torch.ops.load_library(path)
    _emulation_library = path


if CUDA_EMULATION_REQUESTED:
    load_cuda_emulation()
