"""A test-only training set that sends a signal to its own process at an exact image read: the
signal then arrives during a known iteration, in the process (rank, sweep point) the test picks,
once per run folder (a marker file), so that a resumed or requeued run is not signalled again."""

from __future__ import annotations

import os
import signal
from pathlib import Path


class SignalAt:
    """``dataset`` whose ``read``-th image read in this process (1-based, num_workers=0) sends
    ``sig`` to the process, when ``RANK`` is ``rank`` and ``when == signal_when`` (a sweep point
    picks itself with e.g. ``when: ${roi_layer.name}``), unless ``marker`` exists (it is created)."""

    def __init__(self, *, dataset, sig: str, read: int, marker: str, rank: int = 0, when=None, signal_when=None):
        self.dataset, self.sig, self.read, self.marker = dataset, signal.Signals[sig], int(read), Path(marker)
        self.armed = int(os.environ.get("RANK", "0")) == int(rank) and when == signal_when
        self.reads = 0

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):  # aspect_ratios, class_names, ... of the wrapped dataset
        if name == "dataset":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def get(self, idx, rng=None):
        self.reads += 1
        if self.armed and self.reads == self.read and not self.marker.exists():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
            os.kill(os.getpid(), self.sig)
        return self.dataset.get(idx, rng=rng)
