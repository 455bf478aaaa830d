"""The words a config may use for the engine's modes: each vocabulary is written here only.

The config schemas (``maskrcnn/engine/config.py``) type their keys with these enums, so a wrong
word stops the run listing the right ones; the trainer, the solver and inference check their
string arguments against the same members.
"""

from __future__ import annotations

from enum import Enum


class Amp(Enum):
    """``trainer.amp`` / eval ``amp``: autocast dtype (fp16 also scales the loss with a GradScaler)."""

    none = 0
    bf16 = 1
    fp16 = 2


class NonFinite(Enum):
    """``trainer.nonfinite``: what a NaN / inf loss does (stop the run, or skip the step)."""

    stop = 0
    skip = 1


class Schedule(Enum):
    """``solver.scheduler``: step decay at ``solver.steps``, or cosine decay to ``cosine_end_factor``."""

    multistep = 0
    cosine = 1


class WarmupMethod(Enum):
    """``solver.warmup_method``: linear ramp from ``warmup_factor``, or constant ``warmup_factor``."""

    linear = 0
    constant = 1


def check_choice(value: str, choices: type[Enum], key: str) -> str:
    """``value`` if it names a member of ``choices``; else ValueError naming ``key`` and the members."""
    if value not in choices.__members__:
        raise ValueError(f"{key} must be one of {list(choices.__members__)}, got {value!r}")
    return value
