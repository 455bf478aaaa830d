"""Restarts under ``torchrun --max-restarts=K``: the same run directory, resumed without a flag.

torchelastic restarts the whole worker group after a worker dies and tells the new workers how
many restarts happened (``TORCHELASTIC_RESTART_COUNT``). The agent process itself survives, so its
start time names the run directory: every attempt of one ``torchrun`` command agrees on it, and
the restarted workers find the checkpoints of the attempts before them.
"""

from __future__ import annotations

import os
import time


def restart_count() -> int:
    """How many times torchelastic restarted this worker group (0: first attempt, or no torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def under_torchelastic() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def parent_start_time() -> float | None:
    """The start time (seconds since the epoch) of this process's parent, from /proc; None where
    there is no /proc (not Linux)."""
    try:
        with open(f"/proc/{os.getppid()}/stat") as f:
            # "pid (comm) state ppid ...": field 22 (starttime, clock ticks after boot) is the
            # 20th after the command name, which may itself hold spaces or parentheses.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_stamp() -> str:
    """``<date>/<time>`` naming the run directory: when the torchelastic agent started (the same
    for every restart of the worker group), else now."""
    started = parent_start_time() if under_torchelastic() else None
    return time.strftime("%Y-%m-%d/%H-%M-%S", time.localtime(started if started is not None else time.time()))
