"""Training-step scalars recorded by the model and read by the trainer (RPN / RoI counters).

The trainer opens one :class:`EventStorage` around each training forward; modules call
:func:`put_scalar` while they compute their losses, and the trainer logs what was recorded. Outside
such a block (evaluation, tests, a user's own loop) ``put_scalar`` records nothing::

    with recording() as events:
        losses = model(images, targets)
    events.scalars  # {"rpn/num_pos": 12.0, "roi/num_fg": 31.0, "roi/cls_accuracy": 0.88, ...}
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["EventStorage", "put_scalar", "recording"]


class EventStorage:
    """The scalars of one step, by name (the last value of a name wins)."""

    def __init__(self) -> None:
        self.scalars: dict[str, float] = {}

    def put_scalar(self, name: str, value: float) -> None:
        self.scalars[name] = float(value)


_active: list[EventStorage] = []


@contextmanager
def recording() -> Iterator[EventStorage]:
    """A fresh storage that :func:`put_scalar` writes to until the block ends (blocks nest)."""
    storage = EventStorage()
    _active.append(storage)
    try:
        yield storage
    finally:
        _active.remove(storage)


def put_scalar(name: str, value: float) -> None:
    """Record ``name = value`` in the innermost open storage; nothing happens outside one."""
    if _active:
        _active[-1].put_scalar(name, value)
