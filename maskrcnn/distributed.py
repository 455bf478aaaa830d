"""torch.distributed helpers: start-up from torchrun's environment, rank queries, reductions.

The one home of the rank / world-size queries for the whole package (engine, data loaders,
evaluators). Everything degrades to the single-process case when no process group is
initialised, so the same code paths run in ``python tools/train.py`` and under
``torchrun --nproc_per_node=N``; a group of one process behaves as no group (the collectives
return their input).

A process group this module creates is destroyed when the interpreter exits (``atexit``), in
every program that uses it (tools, submitit jobs, test workers), not only in those that call
:func:`cleanup` themselves. Why it must be: gloo's worker thread drops its reference to a finished
collective just *after* ``wait()`` has returned to Python, and that drop may free a tensor that
has a Python object, which takes the GIL. When the main thread has meanwhile reached interpreter
finalization, taking the GIL ends the worker thread (``pthread_exit``) inside a C++ destructor:
``terminate called without an active exception``, SIGABRT, and the peer still inside its own
collective fails with "Connection reset by peer". ``atexit`` runs before finalization, and
destroying the group there joins those threads while they can still take the GIL.
"""

from __future__ import annotations

import atexit
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from .elastic import attempt_store


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group described by torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK, ...).

    NCCL when the device is CUDA, gloo on CPU. Returns the device this process should use
    (``cuda:LOCAL_RANK`` on GPU). Idempotent: a second call reuses the existing group.
    """
    device = resolve_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if launched_by_torchrun() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=timeout_minutes)
        attempt = attempt_store(timeout)  # a restarted torchrun attempt gets fresh store keys
        if attempt is None:
            dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        else:
            store, rank, world_size = attempt
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        atexit.register(cleanup)  # before interpreter finalization: see the module docstring
    return device


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available else cpu; anything else is checked for availability."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available (use device=auto or cpu)")
    return resolved


def is_distributed() -> bool:
    """A process group is initialised (it may hold one process: the collectives below check the
    world size themselves)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled)."""
    if not is_distributed() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """A list with every rank's ``obj``, in rank order."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over ranks of each scalar tensor (same keys on every rank), for logging and checks."""
    if not is_distributed() or get_world_size() == 1 or not values:
        return values
    names = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in names])
    dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(names, stacked))


def cleanup() -> None:
    """Destroy the process group (if any); idempotent. Registered at exit by :func:`init_distributed`."""
    if is_distributed():
        dist.destroy_process_group()
