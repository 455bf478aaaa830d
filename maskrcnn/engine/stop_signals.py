"""Signals that ask a training run to stop with a checkpoint: SIGTERM, SIGUSR1, SIGUSR2.

A scheduler warns a job before it kills it: SLURM sends ``--signal`` (submitit asks for SIGUSR2)
before the time limit and SIGTERM at preemption, submitit's local executor SIGUSR2 before its
time-out, torchrun SIGTERM to its workers when it is stopped. The handler only records the signal
(a Python handler runs between two bytecodes of the main thread, so anything more could
interrupt a collective or a checkpoint write half-way); the trainer looks at the record after
every iteration, all ranks agree (:meth:`StopSignals.agreed`), rank 0 writes the checkpoint of
the finished iteration and the run leaves with :class:`TrainingStopped`. A second signal, during
the save or later, is recorded and changes nothing. What happens next (a requeue, an exit status)
is :mod:`maskrcnn.engine.requeue`'s business; docs/cluster.md tells users.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from ..distributed import all_gather_object, get_world_size, is_distributed

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class TrainingStopped(Exception):
    """The run stopped at a signal after ``iteration`` with the checkpoint ``checkpoint``.

    ``signals``: the distinct signals any rank received, in order; ``received``: per rank, the
    list of ``(signal name, iteration in progress when it arrived)`` (empty for a rank that got
    none: its peers' signal stopped it).
    """

    def __init__(self, *, signals: list[str], iteration: int, checkpoint: Path, received: list):
        self.signals, self.iteration, self.checkpoint, self.received = signals, iteration, checkpoint, received
        super().__init__(f"stopped by {'+'.join(signals)} after iteration {iteration}; checkpoint {checkpoint}")


class StopSignals:
    """Records SIGTERM / SIGUSR1 / SIGUSR2 while installed (a context manager, main thread only).

    Args:
        progress: the iteration in progress (for the log: when the signal arrived).

    The handlers that were installed before (submitit's, for instance) are kept in
    :attr:`previous` and put back on exit.
    """

    def __init__(self, *, progress: Callable[[], int]):
        self.progress = progress
        self.received: list[tuple[str, int]] = []  # (signal name, iteration in progress), in order
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal.signal's own rule
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _record(self, signum: int, frame) -> None:
        self.received.append((signal.Signals(signum).name, self.progress()))

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank has received a stop signal: the same answer on every rank (a collective
        of one number per iteration), so that all ranks stop after the same iteration."""
        if not is_distributed() or get_world_size() == 1:
            return bool(self.received)
        flag = torch.tensor([1.0 if self.received else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def gathered(self) -> list[list[tuple[str, int]]]:
        """Every rank's :attr:`received` (a copy: a later signal may still be appended), rank order."""
        return all_gather_object(list(self.received))
