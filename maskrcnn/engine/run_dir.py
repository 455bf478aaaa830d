"""The run folder of a training run: naming it for a resume, and not leaving it empty on failure."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError

logger = logging.getLogger(__name__)

# What Hydra itself writes into a run folder before the job starts.
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def require_named_run(*, resume: bool, hydra_overrides: Sequence[str], multirun: bool, output_dir) -> None:
    """``resume=true`` continues the run whose folder the command line names; without one Hydra
    makes a fresh, time-stamped folder and the run would silently start from scratch.

    Raises:
        ConfigError: ``resume=true`` without ``hydra.run.dir`` (``hydra.sweep.dir`` for ``-m``).
    """
    if not resume:
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(o.lstrip("+").split("=", 1)[0] == key for o in hydra_overrides):
        return
    raise ConfigError(
        f"resume=true continues a run in the folder named by {key}, but the command line names "
        f"none (this run would start from scratch in the new folder {output_dir}): add "
        f"{key}=<the run's folder>, e.g. {key}=outputs/2026-01-31/12-00-00"
    )


def remove_empty_run_dir(run_dir: str | Path, *, log_name: str) -> bool:
    """Delete ``run_dir`` when it holds only what Hydra wrote before the job (``.hydra/`` and the
    job's log ``log_name``), and then its parents made empty by that inside the working directory
    (``outputs/<date>/``). A folder with anything else in it is kept. Returns whether it was deleted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    names = {p.name for p in run_dir.iterdir()}
    if not names <= {".hydra", log_name}:
        return False
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.exists() and not (hydra_dir.is_dir() and {p.name for p in hydra_dir.iterdir()} <= HYDRA_FILES):
        return False
    if (run_dir / log_name).is_dir():
        return False
    shutil.rmtree(run_dir)
    cwd = Path.cwd().resolve()
    parent = run_dir.resolve().parent
    while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    logger.warning("removed the run folder %s: the run failed before writing anything into it", run_dir)
    return True
