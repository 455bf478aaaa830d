"""``trusted_rois()``: RoIs the caller vouches for, so that the CUDA ops skip their value check and
the host synchronisation it costs (docs/ops.md, "Errors").

The CUDA ops check every RoI (integer batch index in range, finite and representable boxes) with
one read of a flag from the device per call. The model's poolers build their RoIs from clipped
proposals and number the images themselves, so they call the ops inside ``trusted_rois()``, and a
training step then makes no synchronisation in the RoI layer. The kernels stay memory-safe
either way: a bad RoI they are given is skipped (zero output, no gradient). The CPU ops always
check; under ``torch.compile`` the context does nothing (the checks run when the graph runs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from . import _loader  # noqa: F401  (the op must be registered)


@contextlib.contextmanager
def trusted_rois() -> Iterator[None]:
    """Within the block, this thread's CUDA RoI ops do not check the values of their RoIs."""
    if torch.compiler.is_compiling():
        yield
        return
    previous = torch.ops.maskrcnn._trust_roi_values(True)
    try:
        yield
    finally:
        torch.ops.maskrcnn._trust_roi_values(previous)
