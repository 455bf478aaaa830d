"""After a stop signal: leave so that the job is requeued; after a requeue: continue by itself.

A run stopped by a signal (:class:`~maskrcnn.engine.stop_signals.TrainingStopped`, its checkpoint
written) leaves through :func:`exit_after_stop`:

- in a job of hydra-submitit-launcher (``hydra/launcher=slurm`` or ``local``) that received
  submitit's signal (SIGUSR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise: SLURM's warning
  before the time limit, a preemption on clusters that signal it, the local executor's time-out),
  rank 0 hands over to submitit's own handler, which counts the time-outs against
  ``max_num_timeout``, saves the launcher's job again (its ``checkpoint`` method: the same sweep
  point, the same folder) and requeues it (``scontrol requeue``; exit status 144 for the local
  executor);
- otherwise every rank exits with :data:`EXIT_STOPPED`: SIGTERM is also what ``scancel`` sends, so
  the scheduler decides (SLURM requeues a preempted job itself with ``PreemptMode=REQUEUE``).

A job that comes back (same scheduler job id; ``SLURM_RESTART_COUNT`` > 0 after a SLURM requeue)
finds its run folder, which the requeued launcher job names again, and resumes from the newest
readable checkpoint that the same job wrote (:func:`requeued_checkpoint`); the checkpoints carry
the job id in ``meta["job"]``. Checkpoints of another job are never resumed from.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from ..distributed import is_main_process
from .checkpoint import Checkpointer
from .cluster import pickle_modules_by_name
from .stop_signals import TrainingStopped

logger = logging.getLogger(__name__)

# EX_TEMPFAIL of sysexits.h: "a temporary failure, the user is invited to retry". docs/errors.md.
EXIT_STOPPED = 75


def scheduler_job() -> str | None:
    """``<scheduler>:<job id>`` of the job this process belongs to (the same after a requeue, and
    for every task of the job): submitit's job (``slurm:1234_0``, ``local:<controller pid>``) or,
    without submitit, SLURM's (``slurm:1234`` or ``slurm:<array job>_<task>``); None elsewhere."""
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        env = submitit.JobEnvironment()
        return f"{env.cluster}:{env.job_id}"
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"slurm:{array}_{task}"
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm:{job}" if job else None


def slurm_restart_count() -> int:
    """How many times SLURM requeued this job (``SLURM_RESTART_COUNT``; 0 when not under SLURM)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def requeued_checkpoint(checkpointer: Checkpointer, job: str) -> Path | None:
    """The newest readable checkpoint of ``checkpointer``'s folder when the job ``job`` wrote it
    (this job was requeued), else None (a fresh job; another job's checkpoints are left to
    :meth:`Checkpointer.check_output`, which refuses them)."""
    latest = checkpointer.latest()
    if latest is None:
        return None
    meta = Checkpointer.load(latest).get("meta") or {}
    return latest if meta.get("job") == job else None


def submitit_requeue_handler(signals: list[str]):
    """submitit's requeue handler when this is a submitit job and one of ``signals`` is the one
    submitit requeues on (it installed the handler for it), else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    usr_sig = submitit.JobEnvironment._usr_sig()
    handler = signal.getsignal(usr_sig)
    if usr_sig.name not in signals or getattr(handler, "__name__", "") != "checkpoint_and_try_requeue":
        return None
    return lambda: handler(usr_sig, None)


def exit_after_stop(stopped: TrainingStopped, *, run_dir: Path) -> NoReturn:
    """Leave a run stopped by a signal: submitit's requeue, or exit status :data:`EXIT_STOPPED`."""
    requeue = submitit_requeue_handler(stopped.signals)
    if requeue is not None:
        if is_main_process():
            logger.warning(f"requeueing this job through submitit: it continues from {stopped.checkpoint.name}")
        pickle_modules_by_name()  # submitit pickles the launcher's job again, task function included
        requeue()  # rank 0: exits (or raises when submitit will not requeue); other ranks: returns
    elif is_main_process():
        if scheduler_job() is not None:
            continues = "a requeue of this job continues from it by itself"
        else:
            continues = f"continue with the same command and hydra.run.dir={run_dir} resume=true"
        logger.warning(f"exit status {EXIT_STOPPED} ({' + '.join(stopped.signals)}): {continues}")
    sys.exit(EXIT_STOPPED)
