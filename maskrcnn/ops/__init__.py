"""The RoI layer: our RoI Align / RoI Pool kernels (``torch.ops.maskrcnn.*``), their functional
API, nn.Modules and the pure-PyTorch reference implementation (the tests' oracle)."""

from . import _loader, _registration  # noqa: F401  (load the kernels, register fake/autograd)
from .functional import multilevel_roi_align, roi_align, roi_pool
from .modules import RoIAlign, RoIPool
from .reference import roi_align_reference, roi_pool_reference

__all__ = [
    "RoIAlign",
    "RoIPool",
    "multilevel_roi_align",
    "roi_align",
    "roi_align_reference",
    "roi_pool",
    "roi_pool_reference",
]
