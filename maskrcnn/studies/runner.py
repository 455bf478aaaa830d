"""The resumable study runner: one ``tools/train.py`` process per (variant, seed), run folders kept.

Layout: ``<root>/<study>/<variant>/seed<k>/`` is the Hydra run directory of one run (checkpoints,
logs, ``metrics.json``) plus ``run_info.json`` (command, attempts, wall and CPU seconds; an
attempt cut off with the runner has no times) and
``train.out`` (the process output). Running a study again skips finished runs (a ``metrics.json``
of the last iteration), resumes unfinished ones from their newest checkpoint and retries failed
ones. A lock file per run lets several runner processes share one study without running a run
twice; a lock left by a process that died is taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..engine.checkpoint import atomic_write_text
from ..engine.config import REPO_ROOT
from .spec import StudySpec, load_study

log = logging.getLogger(__name__)

TRAIN_SCRIPT = REPO_ROOT / "tools" / "train.py"
LOCK_NAME = ".study.lock"


@dataclass(frozen=True)
class PlannedRun:
    study: str
    variant: str
    seed: int
    directory: Path
    overrides: tuple[str, ...]


def plan_runs(spec: StudySpec, root: str | Path) -> list[PlannedRun]:
    """The runs of ``spec`` in seed-major order (every variant of seed 0, then of seed 1, ...), so
    that a study stopped half-way has comparable seeds of every variant. Shared variants point at
    the other study's folders, after checking that their overrides are the same."""
    root = Path(root)
    runs = []
    for seed in spec.seeds:
        for variant in spec.variants:
            overrides = spec.run_overrides(variant, seed)
            directory = root / spec.name / variant / f"seed{seed}"
            if variant in spec.shared:
                other_name, other_variant = spec.shared[variant].split("/")
                other = load_study(spec.path.parent / f"{other_name}.yaml" if spec.path else other_name)
                if other_variant not in other.variants or seed not in other.seeds:
                    raise ValueError(
                        f"study {spec.name}: shared {variant} -> {spec.shared[variant]} has no "
                        f"variant {other_variant!r} with seed {seed} in study {other_name}"
                    )
                theirs = other.run_overrides(other_variant, seed)
                if sorted(theirs) != sorted(overrides):
                    raise ValueError(
                        f"study {spec.name}: variant {variant} cannot share the runs of "
                        f"{spec.shared[variant]}: overrides differ ({overrides} vs {theirs})"
                    )
                directory = root / other_name / other_variant / f"seed{seed}"
            runs.append(PlannedRun(spec.name, variant, seed, directory, tuple(overrides)))
    return runs


def run_state(directory: Path) -> str:
    """``finished`` (metrics of the last iteration), ``failed`` (the last attempt exited with an
    error), ``unfinished`` (started, not done) or ``not started``."""
    metrics = directory / "metrics.json"
    config = directory / ".hydra" / "config.yaml"
    if metrics.is_file() and config.is_file():
        try:
            max_iter = OmegaConf.select(OmegaConf.load(config), "solver.max_iter")
            iteration = json.loads(metrics.read_text()).get("iteration")
        except (OSError, ValueError):
            max_iter = iteration = None
        if max_iter is not None and iteration is not None and iteration >= max_iter:
            return "finished"
    info = read_run_info(directory)
    if info.get("attempts") and info["attempts"][-1].get("returncode") not in (0, None):
        return "failed"
    started = directory.is_dir() and any(p.name != LOCK_NAME for p in directory.iterdir())
    return "unfinished" if started else "not started"


def read_run_info(directory: Path) -> dict:
    try:
        return json.loads((directory / "run_info.json").read_text())
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_lock(directory: Path) -> bool:
    """Takes the run's lock (a file holding host and pid); a lock of a dead local process is stale."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
                stale = host == socket.gethostname() and not _pid_alive(int(pid))
            except (OSError, ValueError):
                stale = True  # unreadable or half-written: its writer died mid-write
            if not stale:
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


def unlock(directory: Path) -> None:
    (directory / LOCK_NAME).unlink(missing_ok=True)


def code_version() -> str:
    """The commit of the code that runs (with ``+dirty`` for uncommitted changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def execute(run: PlannedRun, *, threads: int, python: str = sys.executable, train_script: Path = TRAIN_SCRIPT) -> str:
    """Runs (or resumes) one training run in its folder; returns its state afterwards."""
    directory = run.directory
    checkpoints = sorted(directory.glob("model_*.pt"))
    command = [python, str(train_script), *run.overrides, f"hydra.run.dir={directory}"]
    if checkpoints:
        command.append("resume=true")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    info = read_run_info(directory) or {
        "study": run.study,
        "variant": run.variant,
        "seed": run.seed,
        "overrides": list(run.overrides),
        "attempts": [],
    }
    attempt = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "threads": threads,
        "host": socket.gethostname(),
        "code": code_version(),
        "command": command,
        "resumed": bool(checkpoints),
    }
    # Recorded before it runs: an attempt cut off with the runner (a session's end, a kill) stays
    # in the record without times, so a run's cost is never summed from part of its attempts.
    info["attempts"].append(attempt)
    atomic_write_text(json.dumps(info, indent=2) + "\n", directory / "run_info.json")
    start = time.perf_counter()
    with open(directory / "train.out", "a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
        # wait4 gives the CPU time of exactly this child (wall time is inflated on a shared machine).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    attempt.update(
        wall_s=round(time.perf_counter() - start, 2),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
        returncode=process.returncode,
    )
    timed = [a for a in info["attempts"] if "cpu_s" in a]
    info["wall_s"] = round(sum(a["wall_s"] for a in timed), 2)
    info["cpu_s"] = round(sum(a["cpu_s"] for a in timed), 2)
    atomic_write_text(json.dumps(info, indent=2) + "\n", directory / "run_info.json")
    return run_state(directory)


def run_study(
    specs: list[StudySpec],
    *,
    root: str | Path,
    workers: int = 1,
    threads: int = 1,
    python: str = sys.executable,
    dry_run: bool = False,
    train_script: Path = TRAIN_SCRIPT,
) -> dict[Path, str]:
    """Runs every missing run of ``specs`` with ``workers`` parallel processes of ``threads`` CPU
    threads each; returns the state of every planned run afterwards (folder -> state)."""
    planned: dict[Path, PlannedRun] = {}
    for spec in specs:
        for run in plan_runs(spec, root):
            planned.setdefault(run.directory, run)
    todo = [run for run in planned.values() if run_state(run.directory) != "finished"]
    log.info("%d runs planned, %d finished, %d to run", len(planned), len(planned) - len(todo), len(todo))
    if dry_run:
        for run in todo:
            log.info(
                "would run %s/%s seed %d (%s) in %s",
                run.study,
                run.variant,
                run.seed,
                run_state(run.directory),
                run.directory,
            )
        return {d: run_state(d) for d in planned}
    queue = list(todo)
    queue_lock = threading.Lock()

    def worker() -> None:
        while True:
            with queue_lock:
                if not queue:
                    return
                run = queue.pop(0)
            before = run_state(run.directory)
            if before == "finished" or not try_lock(run.directory):
                continue  # done meanwhile, or another runner process has it
            try:
                log.info(
                    "%s/%s seed %d: %s",
                    run.study,
                    run.variant,
                    run.seed,
                    "resuming" if before == "unfinished" else "starting" if before == "not started" else "retrying",
                )
                state = execute(run, threads=threads, python=python, train_script=train_script)
                info = read_run_info(run.directory)
                log.info(
                    "%s/%s seed %d: %s after %.1f min (%.1f CPU min)%s",
                    run.study,
                    run.variant,
                    run.seed,
                    state,
                    info["attempts"][-1]["wall_s"] / 60,
                    info["attempts"][-1]["cpu_s"] / 60,
                    "" if state == "finished" else f"; see {run.directory / 'train.out'}",
                )
            finally:
                unlock(run.directory)

    threads_ = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, workers))]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    return {d: run_state(d) for d in planned}
