"""Optimizer and iteration-based learning-rate schedule (detectron2's solver, in small).

The schedule is a multiplier of the base learning rate, evaluated at the 0-based iteration whose
step it drives: ``lr(it) = base_lr * warmup(it) * decay(it)``. It is wrapped in a ``LambdaLR`` so
``scheduler.step()`` is called once per iteration and ``state_dict()`` round-trips for resume.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from .choices import Schedule, WarmupMethod, check_choice

logger = logging.getLogger(__name__)

# Normalization layers whose affine parameters should usually not be decayed (they are scales and
# shifts, not weights that over-fit; decaying BN's gamma shrinks features for no benefit).
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # torchvision's FrozenBatchNorm2d has no trainable parameters, but any other "*Norm*" class
    # (e.g. a custom FrozenBN made trainable) is treated like a norm too.
    return isinstance(module, NORM_TYPES) or "norm" in type(module).__name__.lower()


def build_optimizer(
    model: nn.Module,
    *,
    base_lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
    nesterov: bool = False,
) -> torch.optim.SGD:
    """SGD with momentum over the trainable parameters of ``model``.

    ``weight_decay_norm`` / ``weight_decay_bias``: decay of normalization-layer parameters and of
    biases; ``None`` means "same as ``weight_decay``" (0.0 turns decay off for them). A parameter
    shared by several modules is optimized once.
    """
    check_solver_values(base_lr=base_lr)
    decay_norm = weight_decay if weight_decay_norm is None else weight_decay_norm
    decay_bias = weight_decay if weight_decay_bias is None else weight_decay_bias

    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if norm:
                decay = decay_norm
            elif name == "bias":
                decay = decay_bias
            else:
                decay = weight_decay
            groups.setdefault(float(decay), []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # Sorted so the group order (and so the optimizer state_dict layout) is deterministic.
    param_groups = [{"params": params, "weight_decay": decay} for decay, params in sorted(groups.items())]
    return torch.optim.SGD(param_groups, lr=base_lr, momentum=momentum, nesterov=nesterov)


def check_solver_values(
    *, base_lr: float | None = None, max_iter: int | None = None, steps: Sequence[int] | None = None
) -> None:
    """ValueError ``solver.<key>: ...`` for a learning rate, run length or step list the solver
    cannot use (the config validation reports the same message as a config error)."""
    if base_lr is not None and not base_lr > 0:
        raise ValueError(f"solver.base_lr: must be > 0, got {base_lr}")
    if max_iter is not None and max_iter <= 0:
        raise ValueError(f"solver.max_iter: must be > 0, got {max_iter}")
    if steps is not None:
        steps = list(steps)
        if steps != sorted(steps) or any(s <= 0 or (max_iter is not None and s > max_iter) for s in steps):
            raise ValueError(f"solver.steps: must be increasing iterations in (0, max_iter={max_iter}], got {steps}")


class LRMultiplier:
    """Callable ``it -> factor`` of the base LR: linear (or constant) warmup then multi-step or cosine.

    A plain object (not a closure) so ``LambdaLR.state_dict()`` saves its fields.
    """

    def __init__(
        self,
        *,
        max_iter: int,
        name: str = "multistep",
        steps: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        warmup_method: str = "linear",
        cosine_end_factor: float = 0.0,
    ):
        check_choice(name, Schedule, "solver.scheduler")
        check_choice(warmup_method, WarmupMethod, "solver.warmup_method")
        steps = [int(s) for s in steps]
        check_solver_values(max_iter=max_iter, steps=steps)
        if warmup_iters > max_iter:
            logger.warning(
                "solver.warmup_iters=%d > solver.max_iter=%d: the whole run is in warmup and never reaches base_lr",
                warmup_iters,
                max_iter,
            )
        self.max_iter = int(max_iter)
        self.name = name
        self.steps = steps
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = warmup_method
        self.cosine_end_factor = float(cosine_end_factor)

    def decay(self, it: int) -> float:
        if self.name == "multistep":
            return self.gamma ** bisect.bisect_right(self.steps, it)
        progress = min(it, self.max_iter) / self.max_iter
        end = self.cosine_end_factor
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def warmup(self, it: int) -> float:
        if it >= self.warmup_iters:
            return 1.0
        if self.warmup_method == "constant":
            return self.warmup_factor
        alpha = it / self.warmup_iters
        return self.warmup_factor * (1.0 - alpha) + alpha

    def __call__(self, it: int) -> float:
        return self.warmup(it) * self.decay(it)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` over :class:`LRMultiplier` (kwargs as its constructor); step once per iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRMultiplier(**kwargs))


def optimizer_from_config(model: nn.Module, solver) -> torch.optim.SGD:
    """:func:`build_optimizer` from a validated ``solver`` config group (``configs/solver/*.yaml``);
    the one place training and profiling turn the config into an optimizer."""
    return build_optimizer(
        model,
        base_lr=solver.base_lr,
        momentum=solver.momentum,
        nesterov=solver.nesterov,
        weight_decay=solver.weight_decay,
        weight_decay_norm=solver.weight_decay_norm,
        weight_decay_bias=solver.weight_decay_bias,
    )


def lr_scheduler_from_config(optimizer: torch.optim.Optimizer, solver) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`build_lr_scheduler` from a validated ``solver`` config group (enum choices as names)."""
    return build_lr_scheduler(
        optimizer,
        max_iter=solver.max_iter,
        name=solver.scheduler.name,
        steps=list(solver.steps),
        gamma=solver.gamma,
        warmup_iters=solver.warmup_iters,
        warmup_factor=solver.warmup_factor,
        warmup_method=solver.warmup_method.name,
        cosine_end_factor=solver.cosine_end_factor,
    )
