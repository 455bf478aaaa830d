"""The RoI ops under torch.fx.symbolic_trace (leaf functions), torch.jit.script and torch.export:
each traced / scripted / exported program gives the eager result."""

from __future__ import annotations

import warnings

import pytest
import torch
from ops_helpers import assorted_rois, feature_map
from torch import Tensor, nn

from maskrcnn import ops
from maskrcnn.ops import multilevel_roi_align, roi_align, roi_pool, roi_warp
from maskrcnn.ops.functional import _roi_warp

SCALE = 0.5
X = feature_map(dtype=torch.float32)  # (3, 4, 13, 17)
ROIS = assorted_rois(3, 13, 17, SCALE, dtype=torch.float32)
BOXES = [ROIS[ROIS[:, 0] == i, 1:] for i in range(3)]
LEVELS = torch.arange(ROIS.shape[0]) % 2
COARSE = feature_map(h=7, w=9, dtype=torch.float32, seed=1)


class Heads(nn.Module):
    """User code calling the ops through the package, as torchvision code calls torchvision.ops."""

    def forward(self, x: Tensor, rois: Tensor, coarse: Tensor, levels: Tensor) -> Tensor:
        a = ops.roi_align(x, rois, 3, SCALE, 2, True)
        m = ops.roi_align(x, rois, (3, 3), spatial_scale=SCALE, sampling_ratio=-1, mode="max")
        p = ops.roi_pool(x, rois, 3, SCALE)
        f = ops.multilevel_roi_align([x, coarse], rois, levels, [SCALE, SCALE / 2], 3, 2, False)
        w = ops.roi_warp(x, rois, 3, SCALE, 2, mode="max")
        return a + m - p * f + w


MODULES = {
    "RoIAlign": (lambda: ops.RoIAlign(3, SCALE, 2, True, mode="max"), (X, ROIS)),
    "RoIAlign list": (lambda: ops.RoIAlign((3, 2), SCALE, -1), (X, BOXES)),
    "RoIPool": (lambda: ops.RoIPool(3, SCALE), (X, ROIS)),
    "RoIPool list": (lambda: ops.RoIPool((2, 3), SCALE), (X, BOXES)),
    "RoIWarp": (lambda: ops.RoIWarp(3, SCALE, 2, mode="avg"), (X, ROIS)),
    "RoIWarp list": (lambda: ops.RoIWarp((3, 2), SCALE), (X, BOXES)),
    "functional ops": (Heads, (X, ROIS, COARSE, LEVELS)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_fx_symbolic_trace_keeps_the_ops_as_leaves(name):
    make, args = MODULES[name]
    module = make()
    traced = torch.fx.symbolic_trace(module)
    called = {n.target for n in traced.graph.nodes if n.op == "call_function"}
    assert called & {roi_align, roi_pool, multilevel_roi_align, roi_warp, _roi_warp}
    assert torch.equal(traced(*args), module(*args))


def test_fx_hint_for_ops_imported_by_name():
    class ByName(nn.Module):
        def forward(self, x):
            return roi_align(x, ROIS, 2)  # this test module did not torch.fx.wrap("roi_align")

    with pytest.raises(TypeError, match=r"torch.fx.wrap\('<name>'\)"):
        torch.fx.symbolic_trace(ByName())


def scripted(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still supported
        return torch.jit.script(fn)


# TorchScript does not read globals: literal scales.
def align_tensor(x: Tensor, rois: Tensor) -> Tensor:
    return roi_align(x, rois, 3, 0.5, 2, True) + roi_align(x, rois, [3, 3], 0.5, -1, False, "max")


def align_list(x: Tensor, boxes: list[Tensor]) -> Tensor:
    return roi_align(x, boxes, (2, 3), spatial_scale=0.5, sampling_ratio=0, aligned=True)


def pool_tensor(x: Tensor, rois: Tensor) -> Tensor:
    return roi_pool(x, rois, 3, 0.5)


def pool_list(x: Tensor, boxes: list[Tensor]) -> Tensor:
    return roi_pool(x, boxes, [2, 3], 0.5)


def multilevel(x: Tensor, coarse: Tensor, rois: Tensor, levels: Tensor) -> Tensor:
    return multilevel_roi_align([x, coarse], rois, levels, [0.5, 0.25], 3, 2, True, "avg")


SCRIPT_CASES = {
    "roi_align tensor": (align_tensor, (X, ROIS)),
    "roi_align list": (align_list, (X, BOXES)),
    "roi_pool tensor": (pool_tensor, (X, ROIS)),
    "roi_pool list": (pool_list, (X, BOXES)),
    "multilevel_roi_align": (multilevel, (X, COARSE, ROIS, LEVELS)),
}


@pytest.mark.parametrize("name", list(SCRIPT_CASES))
def test_torchscript_equals_eager(name):
    fn, args = SCRIPT_CASES[name]
    assert torch.equal(scripted(fn)(*args), fn(*args))


@pytest.mark.parametrize("name", ["RoIAlign", "RoIAlign list", "RoIPool", "RoIPool list", "RoIWarp", "RoIWarp list"])
def test_torchscript_modules_equal_eager(name):
    make, args = MODULES[name]
    module = make()
    assert torch.equal(scripted(module)(*args), module(*args))


def test_torchscript_gradient_equals_eager():
    x = X.clone().requires_grad_()
    (g,) = torch.autograd.grad(align_tensor(x, ROIS).sum(), x)
    (g_script,) = torch.autograd.grad(scripted(align_tensor)(x, ROIS).sum(), x)
    assert torch.equal(g_script, g)


class ListAlign(nn.Module):
    def forward(self, x: Tensor, b0: Tensor, b1: Tensor, b2: Tensor) -> Tensor:
        return ops.roi_align(x, [b0, b1, b2], 3, SCALE, 2, True)


EXPORT_CASES = {
    "roi_align": (lambda: ops.RoIAlign(3, SCALE, 2, True, mode="max"), (X, ROIS)),
    "roi_align list": (ListAlign, (X, *BOXES)),
    "roi_pool": (lambda: ops.RoIPool(3, SCALE), (X, ROIS)),
    "roi_warp": (lambda: ops.RoIWarp(3, SCALE, -1), (X, ROIS)),
    "all ops": (Heads, (X, ROIS, COARSE, LEVELS)),
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_torch_export_equals_eager(name):
    make, args = EXPORT_CASES[name]
    module = make()
    program = torch.export.export(module, args)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("maskrcnn.") for t in targets), targets  # our kernels, not a decomposition
    assert torch.equal(program.module()(*args), module(*args))
