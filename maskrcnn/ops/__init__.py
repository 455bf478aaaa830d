"""The RoI layer: our RoI Align / RoI Pool kernels (``torch.ops.maskrcnn.*``), their functional
API and nn.Modules (drop-ins for torchvision.ops: same signatures and defaults), RoI Warp (RoI
Align of boxes rounded as RoI Pool rounds them), the fused FPN pooler ``MultiScaleRoIAlign`` and
the pure-PyTorch reference implementation (the tests' oracle). Semantics: docs/ops.md."""

import torch.fx

from . import _loader, _registration  # noqa: F401  (load the kernels, register fake/autograd/autocast)
from ._registration import cuda_emulation_ops, kernel_backend
from .functional import multilevel_roi_align, quantize_rois, roi_align, roi_pool, roi_warp
from .modules import RoIAlign, RoIPool, RoIWarp
from .multiscale import MultiScaleRoIAlign
from .reference import roi_align_reference, roi_pool_reference, roi_warp_reference
from .trust import trusted_rois

# Leaves for torch.fx.symbolic_trace when called as maskrcnn.ops.roi_align(...) (the package's names).
torch.fx.wrap("roi_align")
torch.fx.wrap("roi_pool")
torch.fx.wrap("roi_warp")
torch.fx.wrap("multilevel_roi_align")

__all__ = [
    "cuda_emulation_ops",
    "kernel_backend",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIPool",
    "RoIWarp",
    "multilevel_roi_align",
    "quantize_rois",
    "roi_align",
    "roi_align_reference",
    "roi_pool",
    "roi_pool_reference",
    "roi_warp",
    "roi_warp_reference",
    "trusted_rois",
]
