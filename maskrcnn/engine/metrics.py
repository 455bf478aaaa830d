"""Training metrics: TensorBoard scalars and images, ``metrics.jsonl``, and the progress line.

Only the main process writes (the trainer builds a ``MetricsLogger`` with ``enabled=False`` on
other ranks). Training scalars are :meth:`MetricsLogger.put` every
iteration and written (averaged over the period) by :meth:`MetricsLogger.write` every log period;
evaluation metrics are written at once by :meth:`MetricsLogger.log`. Each write appends one JSON
line ``{"iteration": it, name: value, ...}`` to ``metrics.jsonl`` and writes every value as a
TensorBoard scalar under its name (``loss``, ``loss_mask``, ``lr``, ``time/iter``, ``bbox/AP``, ...),
except the per-class APs (``bbox/AP-person``, ``voc/AP50-cell``): in TensorBoard they go to their
own group (``bbox_per_class/AP-person``) so that the 80-class lists do not bury the summary APs.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


# A per-class metric: "<group>/<AP name>-<class name>", as the evaluators name them.
_PER_CLASS = re.compile(r"^([^/]+)/(AP[A-Za-z0-9_]*-.+)$")


def tensorboard_tag(name: str) -> str:
    """The TensorBoard tag of a metric: per-class APs move to ``<group>_per_class/``, others keep their name."""
    m = _PER_CLASS.match(name)
    return f"{m.group(1)}_per_class/{m.group(2)}" if m else name


class SmoothedValue:
    """A window of the last values, for a stable median in the progress line."""

    def __init__(self, window: int = 20):
        self.values: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.values.append(value)
        self.total += value
        self.count += 1

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.values else float("nan")

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else float("nan")


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))


class MetricsLogger:
    """TensorBoard + ``metrics.jsonl`` writer of one run directory.

    Args:
        directory: output directory; TensorBoard event files go to ``directory/tensorboard``.
        enabled: False on non-main ranks (every method is then a no-op).
    """

    def __init__(self, *, directory: str | Path, enabled: bool = True, window: int = 20):
        self.directory = Path(directory)
        self.enabled = enabled
        self.history: dict[str, SmoothedValue] = defaultdict(lambda: SmoothedValue(window))
        self._pending: dict[str, list[float]] = {}
        self._writer = None
        self._jsonl = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.directory.mkdir(parents=True, exist_ok=True)
            self.tensorboard_dir = self.directory / "tensorboard"
            self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
            self._jsonl = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")

    def put(self, scalars: dict[str, float]) -> None:
        """Record one iteration's scalars; they are written (averaged) at the next :meth:`write`."""
        for name, value in scalars.items():
            value = float(value)
            self.history[name].update(value)
            self._pending.setdefault(name, []).append(value)

    def write(self, iteration: int) -> None:
        """Write the mean of each scalar put since the last write, at step ``iteration``."""
        pending, self._pending = self._pending, {}
        self._emit(iteration, {k: sum(v) / len(v) for k, v in pending.items() if v})

    def log(self, iteration: int, scalars: dict[str, float]) -> None:
        """Write ``scalars`` now (evaluation metrics), at step ``iteration``."""
        self._emit(iteration, {k: float(v) for k, v in scalars.items()})

    def _emit(self, iteration: int, scalars: dict[str, float]) -> None:
        if not self.enabled or not scalars:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(tensorboard_tag(name), value, iteration)
        self._jsonl.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
        self._jsonl.flush()

    def log_image(self, tag: str, image_hwc_uint8: np.ndarray, iteration: int) -> None:
        if self.enabled:
            self._writer.add_image(tag, image_hwc_uint8, iteration, dataformats="HWC")

    def progress_line(self, iteration: int, max_iter: int) -> str:
        """``iter 20/300  loss 1.23 (loss_classifier 0.31 ...)  lr 0.0200  time 0.61s  data 0.01s  eta 0:02:51  mem 812M``."""
        h = self.history
        losses = sorted(k for k in h if k.startswith("loss_"))
        parts = [f"iter {iteration}/{max_iter}"]
        if "loss" in h:
            detail = " ".join(f"{k} {h[k].median:.3f}" for k in losses)
            parts.append(f"loss {h['loss'].median:.3f} ({detail})")
        if "lr" in h:
            parts.append(f"lr {h['lr'].values[-1]:.5g}")
        if "time/iter" in h:
            t = h["time/iter"].median
            parts.append(f"time {t:.3f}s")
            parts.append(f"eta {format_eta(t * (max_iter - iteration))}")
        if "time/data" in h:
            parts.append(f"data {h['time/data'].median:.3f}s")
        if "memory/peak_mb" in h:
            parts.append(f"mem {h['memory/peak_mb'].values[-1]:.0f}M")
        if "amp/skipped_steps" in h and h["amp/skipped_steps"].values[-1] > 0:
            parts.append(f"fp16 skipped {h['amp/skipped_steps'].values[-1]:.0f}")
        return "  ".join(parts)

    def flush(self) -> None:
        if self.enabled:
            self._writer.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.close()
            self._jsonl.close()
            self._writer = None
