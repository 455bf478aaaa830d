"""Fake (meta) kernels, autograd formulas and autocast kernels of ``torch.ops.maskrcnn.*``,
registered through ``torch.library`` so that ``torch.library.opcheck`` passes, ``torch.compile``
traces the ops without graph breaks and they run under ``torch.autocast`` as torchvision's do.

The backward ops receive the forward's input again (max mode finds the winning sample anew
instead of storing it). Double backward is not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _loader  # noqa: F401  (the schemas must exist before we register on them)


def memory_format_of(t: Tensor) -> torch.memory_format:
    """The layout the kernels write their outputs in: channels_last when ``t`` is channels_last
    and not also plain contiguous (same rule as ``is_channels_last`` in ops/roi_checks.h)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _empty_like_layout(shape, like: Tensor, dtype=None) -> Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format_of(like))


# ---------------------------------------------------------------------------------------------
# Fake kernels: output shapes, dtypes and layouts without computing anything.
# ---------------------------------------------------------------------------------------------


def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, mode):
    return _empty_like_layout((rois.shape[0], input.shape[1], pooled_height, pooled_width), input)


def _roi_align_backward_fake(
    grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, mode
):
    return _empty_like_layout(input.shape, input)


def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return _empty_like_layout(shape, input), _empty_like_layout(shape, input, torch.int32)


def _roi_pool_backward_fake(grad, input, rois, argmax, spatial_scale, pooled_height, pooled_width):
    return _empty_like_layout(input.shape, input)


def roi_pool_codes_dtype(height, width, pooled_height, pooled_width) -> torch.dtype:
    """The dtype of ``_roi_pool_compact``'s codes for a height x width map: uint8 where the bins
    of every RoI inside the map are at most 15 cells high and wide (roi size at most the map's
    + 1 cells, bins at most ceil(size / pooled) + 1 cells), else int16. The same rule as
    ``codes_fit_in_byte`` in ops/cpu/roi_pool_kernel.h."""

    def fits(size, pooled):
        return (size + pooled) // pooled + 1 <= 15

    return torch.uint8 if fits(height, pooled_height) and fits(width, pooled_width) else torch.int16


def _roi_pool_compact_fake(input, rois, spatial_scale, pooled_height, pooled_width, with_codes):
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    if with_codes:
        dtype = roi_pool_codes_dtype(input.shape[2], input.shape[3], pooled_height, pooled_width)
        codes = _empty_like_layout(shape, input, dtype)
    else:
        codes = input.new_empty((0,), dtype=torch.uint8)
    return _empty_like_layout(shape, input), codes


def _roi_pool_compact_backward_fake(grad, input, rois, codes, spatial_scale, pooled_height, pooled_width):
    return _empty_like_layout(input.shape, input)


def _multilevel_roi_align_fake(
    features, rois, levels, spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned, mode
):
    return _empty_like_layout((rois.shape[0], features[0].shape[1], pooled_height, pooled_width), features[0])


def _multilevel_roi_align_backward_fake(
    grad, features, rois, levels, spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned, mode
):
    return [_empty_like_layout(f.shape, f) for f in features]


# ---------------------------------------------------------------------------------------------
# Autograd: gradients with respect to the feature maps (none for rois, levels, parameters).
# ---------------------------------------------------------------------------------------------


def _roi_align_setup_context(ctx, inputs, output):
    input, rois, *params = inputs
    ctx.save_for_backward(input, rois)
    ctx.params = params  # spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, mode


def _roi_align_backward_by(backward_op):
    def backward(ctx, grad):
        input, rois = ctx.saved_tensors
        grad_input = backward_op(grad, input, rois, *ctx.params)
        return (grad_input,) + (None,) * 7

    return backward


def _roi_pool_setup_context(ctx, inputs, output):
    # roi_pool: (input, rois, spatial_scale, pooled_height, pooled_width); _roi_pool_compact has
    # with_codes after them. The second output (argmax or codes) is what the backward scatters by.
    input, rois, *params = inputs
    _, winners = output
    ctx.mark_non_differentiable(winners)
    # The winners get no gradient: without this, autograd would hand the backward a zero-filled
    # tensor of their size (K, C, PH, PW), whose allocation and page faults cost as much as the
    # whole backward kernel on the large heads (docs/ops.md).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(input, rois, winners)
    ctx.params = params[:3]  # spatial_scale, pooled_height, pooled_width
    ctx.num_inputs = len(inputs)


def _roi_pool_backward_by(backward_op):
    """The autograd formula of a RoI Pool forward whose backward op is ``backward_op``."""

    def backward(ctx, grad, grad_winners):
        if grad is None:  # grads are not materialized (see _roi_pool_setup_context)
            return (None,) * ctx.num_inputs
        input, rois, winners = ctx.saved_tensors
        grad_input = backward_op(grad, input, rois, winners, *ctx.params)
        return (grad_input,) + (None,) * (ctx.num_inputs - 1)

    return backward


def _multilevel_setup_context(ctx, inputs, output):
    features, rois, levels, *params = inputs
    ctx.num_levels = len(features)
    ctx.save_for_backward(rois, levels, *features)
    ctx.params = params  # spatial_scales, pooled_height, pooled_width, sampling_ratio, aligned, mode


def _multilevel_backward_by(backward_op):
    def backward(ctx, grad):
        rois, levels, *features = ctx.saved_tensors
        grads = backward_op(grad, features, rois, levels, *ctx.params)
        return (list(grads),) + (None,) * 8

    return backward


_FAKE_KERNELS = {
    "roi_align": _roi_align_fake,
    "_roi_align_backward": _roi_align_backward_fake,
    "roi_pool": _roi_pool_fake,
    "_roi_pool_backward": _roi_pool_backward_fake,
    "_roi_pool_compact": _roi_pool_compact_fake,
    "_roi_pool_compact_backward": _roi_pool_compact_backward_fake,
    "multilevel_roi_align": _multilevel_roi_align_fake,
    "_multilevel_roi_align_backward": _multilevel_roi_align_backward_fake,
}


def register_fake_and_autograd(namespace: str) -> None:
    """Fake kernels and autograd formulas of the ops of ``namespace``: ``maskrcnn`` (at import) or
    ``maskrcnn_cuda_emu``, the emulated CUDA kernels under the same schemas (ops/schemas.h)."""
    ops = getattr(torch.ops, namespace)
    for name, fake in _FAKE_KERNELS.items():
        torch.library.register_fake(f"{namespace}::{name}", fake)
    torch.library.register_autograd(
        f"{namespace}::roi_align",
        _roi_align_backward_by(ops._roi_align_backward),
        setup_context=_roi_align_setup_context,
    )
    for forward, backward in (("roi_pool", "_roi_pool_backward"), ("_roi_pool_compact", "_roi_pool_compact_backward")):
        torch.library.register_autograd(
            f"{namespace}::{forward}",
            _roi_pool_backward_by(getattr(ops, backward)),
            setup_context=_roi_pool_setup_context,
        )
    torch.library.register_autograd(
        f"{namespace}::multilevel_roi_align",
        _multilevel_backward_by(ops._multilevel_roi_align_backward),
        setup_context=_multilevel_setup_context,
    )


register_fake_and_autograd("maskrcnn")
_registered_namespaces = {"maskrcnn"}


def cuda_emulation_ops():
    """``torch.ops.maskrcnn_cuda_emu``: the CUDA kernels under device emulation, on CPU tensors,
    with the schemas, fake kernels and autograd of ``torch.ops.maskrcnn`` (loaded on first use;
    ImportError naming `make build-cuda-emulation` when they are not built)."""
    _loader.load_cuda_emulation()
    if "maskrcnn_cuda_emu" not in _registered_namespaces:
        register_fake_and_autograd("maskrcnn_cuda_emu")
        _registered_namespaces.add("maskrcnn_cuda_emu")
    return torch.ops.maskrcnn_cuda_emu


def kernel_backend() -> str:
    """Which kernels serve ``torch.ops.maskrcnn.*`` on CPU tensors in this process:
    ``"cuda-emulation"`` under MASKRCNN_CUDA_EMULATION=1 (the CUDA kernels, emulated), else
    ``"native"`` (the CPU kernels; CUDA tensors always run the real CUDA kernels)."""
    return "cuda-emulation" if _loader.CUDA_EMULATION_REQUESTED else "native"


# ---------------------------------------------------------------------------------------------
# Autocast (CPU and CUDA): torchvision's rule. The op runs without autocast on float32 copies of
# float16 / bfloat16 features and rois (float64 stays), and the output comes back in the dtype of
# the input; this is what lets features and rois of mixed float dtypes meet. Where the kernels
# take the dtypes as they are (rois of the input's dtype, or float32 rois with half features)
# they run on them directly: they compute in float32 anyway, so the result is the same without
# copying the feature maps.
# ---------------------------------------------------------------------------------------------


def _native(input: Tensor, rois: Tensor) -> bool:
    half = input.dtype in (torch.float16, torch.bfloat16)
    return rois.dtype == input.dtype or (half and rois.dtype == torch.float32)


def _to_float32(t: Tensor) -> Tensor:
    return t.to(torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t


def _autocast_kernels(key: str):
    exclude = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def roi_align(input, rois, *params):
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            if _native(input, rois):
                return torch.ops.maskrcnn.roi_align(input, rois, *params)
            out = torch.ops.maskrcnn.roi_align(_to_float32(input), _to_float32(rois), *params)
        return out.to(input.dtype)

    def roi_pool_by(op):  # roi_pool and _roi_pool_compact: (output, winners), winners as they are
        def roi_pool(input, rois, *params):
            with torch._C._ExcludeDispatchKeyGuard(exclude):
                if _native(input, rois):
                    return op(input, rois, *params)
                out, winners = op(_to_float32(input), _to_float32(rois), *params)
            return out.to(input.dtype), winners

        return roi_pool

    def multilevel_roi_align(features, rois, levels, *params):
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            if _native(features[0], rois):
                return torch.ops.maskrcnn.multilevel_roi_align(features, rois, levels, *params)
            out = torch.ops.maskrcnn.multilevel_roi_align(
                [_to_float32(f) for f in features], _to_float32(rois), levels, *params
            )
        return out.to(features[0].dtype)

    return {
        "roi_align": roi_align,
        "roi_pool": roi_pool_by(torch.ops.maskrcnn.roi_pool),
        "_roi_pool_compact": roi_pool_by(torch.ops.maskrcnn._roi_pool_compact),
        "multilevel_roi_align": multilevel_roi_align,
    }


_autocast_lib = torch.library.Library("maskrcnn", "IMPL")  # kept alive: the registrations live with it
for _key in ("AutocastCPU", "AutocastCUDA"):
    for _name, _kernel in _autocast_kernels(_key).items():
        _autocast_lib.impl(_name, _kernel, _key)
