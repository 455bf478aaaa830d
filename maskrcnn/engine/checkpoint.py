"""Checkpoints: atomic writes, the last K kept, resume from the newest one in a run directory.

A checkpoint is a dict with at least ``model`` (the state_dict of the unwrapped model, so it loads
with or without DistributedDataParallel) and ``iteration`` (the number of finished iterations).
The trainer adds ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (see :func:`rng_state`) and
``loader`` (the train loader's position) for resume, and the :class:`Checkpointer` adds ``meta``
(the run's config, model config name, classes: see :mod:`maskrcnn.engine.run_config`) so that
evaluation and prediction rebuild the model as trained. Files are ``model_0000123.pt`` (periodic,
the number is the iteration count) and ``model_final.pt`` (end of training).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

_PERIODIC = re.compile(r"^model_(\d{7,})\.pt$")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``.

    A reader (or a resume after a crash) sees either the previous file or the complete new one,
    never a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict:
    """The random states a training step consumes: python, numpy, torch CPU and every CUDA device."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # resumed on a different number of GPUs: restore what matches
            for index, s in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, index)


class Checkpointer:
    """Writes and finds the checkpoints of one run directory.

    Args:
        directory: the run's output directory.
        keep_last: how many periodic checkpoints to keep (older ones are deleted after a save);
            0 or less keeps all. ``model_final.pt`` is never deleted.
        meta: written as ``meta`` into every checkpoint (what the run was: config, classes).
    """

    def __init__(self, *, directory: str | os.PathLike, keep_last: int = 3, meta: dict | None = None):
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self.meta = meta

    def periodic_path(self, iteration: int) -> Path:
        return self.directory / f"model_{iteration:07d}.pt"

    @property
    def final_path(self) -> Path:
        return self.directory / "model_final.pt"

    def periodic_checkpoints(self) -> list[tuple[int, Path]]:
        """(iteration, path) of the periodic checkpoints present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _PERIODIC.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, state: dict, *, final: bool = False) -> Path:
        if "model" not in state or "iteration" not in state:
            raise ValueError("a checkpoint needs at least the keys 'model' and 'iteration'")
        path = self.final_path if final else self.periodic_path(int(state["iteration"]))
        if self.meta is not None:
            state = {**state, "meta": self.meta}
        atomic_save(state, path)
        if not final:
            self._prune()
        return path

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for _, old in self.periodic_checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The newest checkpoint: ``model_final.pt`` if training finished, else the highest iteration."""
        if self.final_path.is_file():
            return self.final_path
        found = self.periodic_checkpoints()
        return found[-1][1] if found else None

    @staticmethod
    def load(path: str | os.PathLike) -> dict:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        # weights_only=False: the checkpoint holds numpy RNG state and python tuples; we only load
        # files this framework wrote.
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError(f"checkpoint {path} is not a dict with a 'model' state_dict")
        return state
