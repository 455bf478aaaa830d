"""Training jobs started by Hydra's submitit launcher (``hydra/launcher=slurm``, ``local``).

A job of several tasks (``tasks_per_node`` > 1 or ``nodes`` > 1: one task per GPU) is one
DistributedDataParallel run: each task gets the environment torchrun would give it (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR = the job's first node, MASTER_PORT
from the job id), so the training code is the same as under ``torchrun --nproc_per_node=N``.
"""

from __future__ import annotations

import copyreg
import importlib
import os
import sys
import types

__all__ = ["export_submitit_task_env", "pickle_modules_by_name", "require_launcher"]


def export_submitit_task_env() -> bool:
    """Inside a submitit job of several tasks, export torchrun's variables for this task.

    Returns whether it did (False outside submitit and for single-task jobs). All GPUs of the node
    stay visible to every task, which uses ``cuda:LOCAL_RANK`` (as under torchrun).
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


# configs/hydra/launcher/ entries that run through hydra-submitit-launcher.
SUBMITIT_LAUNCHERS = ("slurm", "local", "submitit_slurm", "submitit_local")


def require_launcher(argv: list[str]) -> None:
    """A ``hydra/launcher=slurm|local`` command line without the launcher installed stops with one
    line naming the extra (Hydra itself would only say that the config is not found)."""
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith(("hydra/launcher=", "+hydra/launcher="))]
    if any(name in SUBMITIT_LAUNCHERS for name in chosen):
        from maskrcnn.optional import require

        require("hydra_plugins.hydra_submitit_launcher", purpose=f"hydra/launcher={chosen[-1]}")
        pickle_modules_by_name()


def pickle_modules_by_name() -> None:
    """Let cloudpickle send tools/train.py's task function to submitit's job processes.

    The launcher pickles the task function of ``__main__`` by value, with the modules its code
    names; torch replaces some of its modules by instances of ModuleType subclasses
    (``torch.backends.cudnn`` is a ``CudnnModule``), which pickle cannot copy. Such a module is
    pickled as its import instead, as a plain module is.
    """
    for module in list(sys.modules.values()):
        kind = type(module)
        if isinstance(module, types.ModuleType) and kind is not types.ModuleType and kind not in copyreg.dispatch_table:
            copyreg.pickle(kind, _import_by_name)


def _import_by_name(module: types.ModuleType):
    return importlib.import_module, (module.__name__,)
