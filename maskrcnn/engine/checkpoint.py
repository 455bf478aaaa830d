"""Checkpoints: atomic writes, the last K kept, resume from the newest one in a run directory.

A checkpoint is a dict with at least ``model`` (the state_dict of the unwrapped model, so it loads
with or without DistributedDataParallel) and ``iteration`` (the number of finished iterations).
The trainer adds ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (see :func:`rng_state`) and
``loader`` (the train loader's position) for resume, and the :class:`Checkpointer` adds ``meta``
(the run's config, model config name, classes: see :mod:`maskrcnn.engine.run_config`) so that
evaluation and prediction rebuild the model as trained. Files are ``model_0000123.pt`` (periodic,
the number is the iteration count) and ``model_final.pt`` (end of training).

Every checkpoint gets a checksum file next to it (``model_0000123.pt.sha256``, in ``sha256sum``
format, written after the checkpoint), so a truncated or overwritten file is recognised before
it is loaded; a checkpoint without one (older runs, or a crash between the two writes) is checked
by loading it. Resume takes the newest checkpoint that passes, warning about each one that does
not, and stops with :class:`CheckpointError` when none does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

_PERIODIC = re.compile(r"^model_(\d{7,})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, empty, not a checkpoint, or none readable."""


class OutputDirError(ValueError):
    """The run directory cannot take this run's checkpoints (another run's are there, not writable,
    no space)."""


def tensor_nbytes(obj: Any) -> int:
    """Bytes of the tensors in a nested dict/list/tuple (a checkpoint's size, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_nbytes(v) for v in obj)
    return 0


def checksum_path(path: str | os.PathLike) -> Path:
    """The checksum file of a checkpoint: ``<name>.sha256`` next to it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` as :func:`_atomic_write` does: never a half-written file."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def _atomic_write(path: Path, write) -> None:
    """``write(binary file)`` into a temporary file in ``path``'s directory, fsync, then
    ``os.replace``: a reader sees the previous file or the complete new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_checksum(path: str | os.PathLike) -> Path:
    """Write ``<path>.sha256`` (``sha256sum -c`` reads it) for the file as it is now."""
    path = Path(path)
    target = checksum_path(path)
    atomic_write_text(f"{file_sha256(path)}  {path.name}\n", target)
    return target


def verify_checksum(path: str | os.PathLike) -> bool:
    """Check ``path`` against its checksum file: True if it matches, False if there is none.

    Raises :class:`CheckpointError` naming the file when the content differs (truncated, empty,
    overwritten) or the checksum file is unreadable.
    """
    path = Path(path)
    target = checksum_path(path)
    if not target.is_file():
        return False
    try:
        expected = target.read_text().split()[0]
    except (OSError, UnicodeDecodeError, IndexError) as e:
        raise CheckpointError(f"the checksum file {target} of checkpoint {path} is unreadable ({e})") from None
    if file_sha256(path) != expected:
        size = path.stat().st_size
        raise CheckpointError(
            f"checkpoint {path} does not match its checksum file {target.name} ({size} bytes: truncated or overwritten)"
        )
    return True


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``.

    A reader (or a resume after a crash) sees either the previous file or the complete new one,
    never a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: torch.save(obj, f))


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
        # The old checksum goes first: a crash before the new one is written leaves a checkpoint
        # that is checked by loading, never a good checkpoint with a stale checksum.
        checksum_path(path).unlink(missing_ok=True)
        atomic_save(state, path)
        write_checksum(path)
        if not final:
            self._prune()
        return path

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for _, old in self.periodic_checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)
            checksum_path(old).unlink(missing_ok=True)

    def check_output(self, *, resumed: bool, needed_bytes: int) -> None:
        """Before training: may and can this run write its checkpoints here?

        Raises :class:`OutputDirError` (naming the directory and the fix) when a run that did not
        resume finds checkpoints there (another run's: they are never overwritten), when the
        directory is not writable, or when it has less free space than ``needed_bytes`` (about one
        checkpoint).
        """
        if not resumed and self.candidates():
            names = ", ".join(p.name for p in self.candidates()[:3])
            raise OutputDirError(
                f"{self.directory} already holds another run's checkpoints ({names}): add "
                f"resume=true to continue that run, or give this run its own hydra.run.dir"
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=self.directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputDirError(
                f"the run directory {self.directory} is not writable ({e.strerror or e}): give a writable hydra.run.dir"
            ) from None
        free = shutil.disk_usage(self.directory).free
        if free < needed_bytes:
            raise OutputDirError(
                f"the run directory {self.directory} has {free / 2**20:.0f} MiB free, a checkpoint "
                f"needs about {needed_bytes / 2**20:.0f} MiB: free some space or give another "
                f"hydra.run.dir"
            )

    def candidates(self) -> list[Path]:
        """The checkpoints present, newest first: ``model_final.pt``, then by falling iteration."""
        found = [p for _, p in reversed(self.periodic_checkpoints())]
        return ([self.final_path] if self.final_path.is_file() else []) + found

    def latest(self) -> Path | None:
        """The newest readable checkpoint (``model_final.pt`` if training finished, else the highest
        iteration), or None when the directory holds none.

        A checkpoint that fails its check is skipped with a warning naming it; when there are
        checkpoints but none is readable this raises :class:`CheckpointError` rather than letting
        a resume start from scratch over the run's outputs.
        """
        candidates = self.candidates()
        failures = []
        for path in candidates:
            try:
                if not verify_checksum(path):
                    self.load(path)  # no checksum file: reading it is the check
            except CheckpointError as e:
                failures.append(path.name)
                logger.warning(f"{e}; falling back to the previous checkpoint")
                continue
            return path
        if failures:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory}: {', '.join(failures)} cannot be read; "
                f"restore a good copy there, or delete them to train this run from scratch"
            )
        return None

    @staticmethod
    def load(path: str | os.PathLike) -> dict:
        """Read a checkpoint (checked against its checksum file when it has one).

        Raises FileNotFoundError if it does not exist and :class:`CheckpointError` (one line naming
        the file) if it is truncated, empty or not a checkpoint of this framework.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        verify_checksum(path)
        try:
            # weights_only=False: the checkpoint holds numpy RNG state and python tuples; we only
            # load files this framework wrote.
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated zip, empty file, not a torch file: torch's messages vary
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {path} cannot be read ({path.stat().st_size} bytes: {reason})") from None
        if not isinstance(state, dict) or "model" not in state:
            raise CheckpointError(f"checkpoint {path} is not a dict with a 'model' state_dict")
        return state
