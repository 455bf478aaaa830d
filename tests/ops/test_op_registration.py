"""torch.library integration: gradcheck in float64, opcheck of every op (schema, fake kernel,
autograd registration, AOT dispatch), and torch.compile(fullgraph=True) through the ops."""

import pytest
import torch
from ops_helpers import random_rois

from maskrcnn.ops import multilevel_roi_align, roi_align, roi_pool

ops = torch.ops.maskrcnn


def small_case(seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64).requires_grad_(requires_grad)
    rois = torch.tensor(
        [[0, 1.3, 0.7, 9.1, 8.2], [1, -3.0, 2.5, 6.0, 14.0], [1, 4.2, 4.9, 5.1, 5.3]], dtype=torch.float64
    )
    return x, rois


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [True, False])
def test_gradcheck_roi_align(mode, aligned):
    x, rois = small_case()
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (3, 2), 0.5, 2, aligned, mode), (x,))


def test_gradcheck_roi_pool():
    x, rois = small_case(seed=1)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 2), 0.5), (x,))


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_gradcheck_multilevel(mode):
    x, rois = small_case(seed=2)
    coarse = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    levels = torch.tensor([0, 1, 0])
    assert torch.autograd.gradcheck(
        lambda a, b: multilevel_roi_align([a, b], rois, levels, [0.5, 0.25], 2, -1, True, mode), (x, coarse)
    )


def opcheck_cases():
    x, rois = small_case(requires_grad=True)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    coarse = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    levels = torch.tensor([0, 1, 0])
    _, argmax = ops.roi_pool(x.detach(), rois, 0.5, 3, 2)
    _, codes = ops._roi_pool_compact(x.detach(), rois, 0.5, 3, 2, True)
    wide = torch.randn(2, 2, 20, 16, dtype=torch.float64, requires_grad=True)  # int16 codes at 1 x 1
    grad = torch.randn(3, 2, 3, 2, dtype=torch.float64)
    return {
        "roi_align avg": (ops.roi_align.default, (x, rois, 0.5, 3, 2, 2, True, "avg")),
        "roi_align max channels_last": (ops.roi_align.default, (xc, rois, 0.5, 3, 2, -1, False, "max")),
        "roi_pool": (ops.roi_pool.default, (x, rois, 0.5, 3, 2)),
        "_roi_pool_compact": (ops._roi_pool_compact.default, (x, rois, 0.5, 3, 2, True)),
        "_roi_pool_compact int16 channels_last": (
            ops._roi_pool_compact.default,
            (wide.detach().contiguous(memory_format=torch.channels_last).requires_grad_(), rois, 1.0, 1, 1, True),
        ),
        "_roi_pool_compact without codes": (ops._roi_pool_compact.default, (x.detach(), rois, 0.5, 3, 2, False)),
        "multilevel_roi_align": (
            ops.multilevel_roi_align.default,
            ([x, coarse], rois, levels, [0.5, 0.25], 3, 2, 2, True, "avg"),
        ),
        "_roi_align_backward": (ops._roi_align_backward.default, (grad, x.detach(), rois, 0.5, 3, 2, 2, True, "max")),
        "_roi_pool_backward": (ops._roi_pool_backward.default, (grad, x.detach(), rois, argmax, 0.5, 3, 2)),
        "_roi_pool_compact_backward": (
            ops._roi_pool_compact_backward.default,
            (grad, x.detach(), rois, codes, 0.5, 3, 2),
        ),
        "_multilevel_roi_align_backward": (
            ops._multilevel_roi_align_backward.default,
            (grad, [x.detach(), coarse.detach()], rois, levels, [0.5, 0.25], 3, 2, 2, True, "avg"),
        ),
    }


@pytest.mark.parametrize("name", list(opcheck_cases()))
def test_opcheck(name):
    op, args = opcheck_cases()[name]
    torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()

    def heads(x, rois):
        a = roi_align(x, rois, 3, 0.5, 2, True, "avg")
        m = roi_align(x, rois, 3, 0.5, -1, False, "max")
        p = roi_pool(x, rois, 3, 0.5)
        return (a * 2 + m - p).sum(dim=(2, 3))

    x = torch.randn(2, 4, 12, 13, requires_grad=True)
    rois = random_rois(2, 12, 13, 0.5, k=8, dtype=torch.float32)
    compiled = torch.compile(heads, fullgraph=True)  # inductor: our ops run as extern kernels
    y_eager = heads(x, rois)
    (g_eager,) = torch.autograd.grad(y_eager.sum(), x)
    y = compiled(x, rois)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(g, g_eager)
