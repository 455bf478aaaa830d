"""Restarts under ``torchrun --max-restarts=K``: the same run directory, resumed without a flag.

torchelastic restarts the whole worker group after a worker dies and tells the new workers how
many restarts happened (``TORCHELASTIC_RESTART_COUNT``). The agent process itself survives, so its
start time names the run directory: every attempt of one ``torchrun`` command agrees on it, and
the restarted workers find the checkpoints of the attempts before them.

The process group of a restarted attempt needs a store namespace of its own. torchrun's agent
hosts one TCPStore for the whole job (``TORCHELASTIC_USE_AGENT_STORE=True``) and workers join it
as clients, so the keys an attempt wrote (gloo's per-rank listening addresses among them) are
still there when the next attempt starts. A restarted rank that reaches its gloo rendezvous first
reads a dead peer's address from the attempt before and fails with "connectFullMesh ... Connection
refused" (a race: it fails only when that peer starts late). Prefixing the store with the attempt
number gives every attempt fresh keys. The restart count is the same for every worker only when
one agent runs the job (one node); with several nodes the agents count restarts differently (a
node that did not fail restarts without counting), so there we keep torch's default and say how
to get a fresh store per attempt instead (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``).

Only torch and the standard library are imported here: :mod:`maskrcnn.distributed` imports this
module at its top, and everything else imports that one.
"""

from __future__ import annotations

import datetime
import logging
import os
import time

import torch.distributed as dist

logger = logging.getLogger(__name__)


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


def attempt_store(timeout: datetime.timedelta) -> tuple[dist.Store, int, int] | None:
    """``(store, rank, world_size)`` for this attempt's process group, or None for torch's
    ``env://`` default.

    Under torchrun on one node: the job's store (as ``env://`` would build it) under the prefix
    ``maskrcnn/attempt_<restart count>/``, so that no key of an earlier attempt is read (see the
    module docstring), with the rank and world size the rendezvous read from torchrun's
    environment. Without torchrun, or with several nodes, None.
    """
    if not under_torchelastic():
        return None
    if int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1) != 1:
        if restart_count() > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            logger.warning(
                "elastic restart %d on %s nodes shares torchrun's store with the attempts before it; if the "
                "process group fails to connect, launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                "in its environment (a fresh store per attempt)",
                restart_count(),
                os.environ["GROUP_WORLD_SIZE"],
            )
        return None
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"maskrcnn/attempt_{restart_count()}/", store), rank, world_size
