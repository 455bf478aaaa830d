"""The iteration-based training loop: AMP, gradient clipping, non-finite losses, checkpoints, evaluation.

The trainer owns no model-building logic: ``tools/train.py`` builds the model (wrapped in
DistributedDataParallel when distributed), optimizer, scheduler and loader, and passes an
``evaluate_fn(iteration) -> dict`` that runs the periodic evaluation.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from maskrcnn.events import recording

from ..distributed import (
    all_gather_object,
    broadcast_object,
    get_rank,
    get_world_size,
    is_main_process,
    reduce_mean,
)
from .checkpoint import Checkpointer, OutputDirError, rng_state, set_rng_state, tensor_nbytes
from .choices import Amp, NonFinite, check_choice
from .inference import autocast
from .metrics import MetricsLogger
from .stop_signals import StopSignals, TrainingStopped

logger = logging.getLogger(__name__)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite (``trainer.nonfinite=stop``)."""


class Trainer:
    """Runs ``max_iter`` SGD iterations of a detector that returns a dict of losses in training mode.

    Args:
        model: detector (possibly DDP-wrapped); ``model(images, targets) -> {loss_name: scalar}``.
        optimizer, scheduler: from :mod:`maskrcnn.engine.solver`; the scheduler steps every iteration.
        train_loader: infinite iterable of ``(images, targets)`` batches; if it has
            ``state_dict()`` / ``load_state_dict()`` its position is checkpointed.
        max_iter: total iterations.
        device: where images and targets are moved.
        checkpointer: writes checkpoints (main process only).
        metrics: :class:`MetricsLogger` (disabled on non-main ranks).
        amp: "none", "bf16" (autocast bfloat16) or "fp16" (autocast float16 with a GradScaler).
        clip_grad_norm: max total L2 norm of the gradients; <= 0 disables clipping.
        nonfinite: "stop" raises :class:`NonFiniteLossError` naming the loss and iteration;
            "skip" drops that step (no parameter update) and continues. Under "fp16" a finite loss
            whose gradients overflow (inf/NaN) is not an error: the GradScaler skips that step and
            lowers the loss scale, as usual; such steps are counted (``amp_skipped_steps``, logged
            as ``amp/skipped_steps``, the total so far) and each is logged.
        log_period, checkpoint_period, eval_period: in iterations; eval_period <= 0 evaluates
            only at the end. ``evaluate_fn(iteration)`` runs the evaluation (all ranks).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader: Iterable,
        max_iter: int,
        device: torch.device,
        checkpointer: Checkpointer,
        metrics: MetricsLogger,
        amp: str = "none",
        clip_grad_norm: float = 0.0,
        nonfinite: str = "stop",
        log_period: int = 20,
        checkpoint_period: int = 1000,
        eval_period: int = 0,
        evaluate_fn: Callable[[int], dict] | None = None,
    ):
        check_choice(amp, Amp, "trainer.amp")
        check_choice(nonfinite, NonFinite, "trainer.nonfinite")
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.max_iter = int(max_iter)
        self.device = device
        self.checkpointer = checkpointer
        self.metrics = metrics
        self.amp = amp
        # A GradScaler only for float16 (bfloat16 has float32's range and needs no loss scaling).
        self.scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
        self.clip_grad_norm = float(clip_grad_norm)
        self.nonfinite = nonfinite
        self.log_period = max(int(log_period), 1)
        self.checkpoint_period = int(checkpoint_period)
        self.eval_period = int(eval_period)
        self.evaluate_fn = evaluate_fn
        self.iteration = 0  # number of finished iterations
        self.skipped_steps = 0  # non-finite losses skipped (nonfinite=skip)
        self.amp_skipped_steps = 0  # fp16 steps the GradScaler skipped (inf/NaN gradients)
        self.last_eval: dict = {}
        self._resume_rng: dict | None = None

    # ----------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "rng": rng_state(),
            "skipped_steps": {"nonfinite": self.skipped_steps, "amp": self.amp_skipped_steps},
        }
        if hasattr(self.train_loader, "state_dict"):
            state["loader"] = self.train_loader.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore everything :meth:`state_dict` saved. The RNG states are applied when
        :meth:`train` starts (after the data iterator is created, which draws random seeds)."""
        unwrap(self.model).load_state_dict(state["model"])
        # Each rank draws its own random stream (RPN / RoI sampling): its own state when the
        # checkpoint has one per rank for this many ranks, else rank 0's.
        per_rank = state.get("rng_per_rank")
        rng = per_rank[get_rank()] if per_rank and len(per_rank) == get_world_size() else state.get("rng")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if "loader" in state and hasattr(self.train_loader, "load_state_dict"):
            self.train_loader.load_state_dict(state["loader"])
        self.iteration = int(state["iteration"])
        skipped = state.get("skipped_steps", {})
        self.skipped_steps = int(skipped.get("nonfinite", 0))
        self.amp_skipped_steps = int(skipped.get("amp", 0))
        self._resume_rng = rng

    # ------------------------------------------------------------------------------------ loop
    def train(self) -> dict:
        """Train from ``self.iteration`` to ``max_iter``; returns the last evaluation's metrics.

        SIGTERM, SIGUSR1 or SIGUSR2 during the iterations (and the final save) stop the run after
        the iteration in progress: every rank stops after the same one, rank 0 saves its checkpoint
        (the periodic kind) and :class:`TrainingStopped` is raised on every rank (see
        :mod:`maskrcnn.engine.stop_signals`). A run resumed at ``max_iter`` from such a checkpoint
        writes the final one and evaluates, as an uninterrupted run does; a run resumed from its
        final checkpoint trains nothing and evaluates the final weights again.
        """
        finished = broadcast_object(self.checkpointer.final_path.is_file())
        if self.iteration >= self.max_iter and finished:
            logger.info(f"nothing to train: iteration {self.iteration} >= max_iter {self.max_iter}")
            if self.evaluate_fn is not None:
                # The final checkpoint is written before the final evaluation, which an
                # interruption may have cut off: evaluate the final weights again (same numbers),
                # so that a resumed finished run always ends with its final metrics.
                logger.info(f"evaluating the final weights (iteration {self.iteration})")
                self.evaluate()
            return self.last_eval
        self.check_output()
        logger.info(f"training from iteration {self.iteration} to {self.max_iter}")
        if self.eval_period > 0 and 0 < self.iteration < self.max_iter and self.iteration % self.eval_period == 0:
            # Resumed from the checkpoint saved just before a periodic evaluation, which the
            # interruption may have cut off: evaluate again (same weights, same numbers), so that
            # learning curves have every point. It leaves the random streams as they were.
            logger.info(f"resumed at an evaluation iteration: evaluating at {self.iteration} first")
            self.evaluate()
        self.model.train()
        data_iter = iter(self.train_loader)
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with StopSignals(progress=lambda: self.iteration + 1) as stop:
            while self.iteration < self.max_iter:
                self.run_step(data_iter)
                it = self.iteration
                if it % self.log_period == 0 or it == self.max_iter:
                    if self.scaler.is_enabled():  # a running total, put once so the write keeps it exact
                        self.metrics.put({"amp/skipped_steps": self.amp_skipped_steps})
                    self.metrics.write(it)
                    if is_main_process():
                        logger.info(self.metrics.progress_line(it, self.max_iter))
                if stop.agreed(self.device):  # before the periodic evaluation, which may be long
                    self.stop_at_signal(stop)
                if it < self.max_iter:
                    if self.checkpoint_period > 0 and it % self.checkpoint_period == 0:
                        self.save_checkpoint()
                    if self.eval_period > 0 and it % self.eval_period == 0:
                        self.evaluate()
            self.save_checkpoint(final=True)
        self.evaluate()
        if self.skipped_steps:
            logger.warning(f"{self.skipped_steps} steps were skipped because of non-finite losses")
        if self.amp_skipped_steps:
            logger.info(
                f"{self.amp_skipped_steps} fp16 steps were skipped by the GradScaler (inf/NaN gradients); "
                f"final loss scale {self.scaler.get_scale():g}"
            )
        return self.last_eval

    def stop_at_signal(self, stop: StopSignals) -> None:
        """Save the checkpoint of the finished iteration (rank 0), wait until it is written (all
        ranks), log who received which signal when, and raise :class:`TrainingStopped`."""
        self.save_checkpoint()
        # A collective after the save: no rank leaves (and no scheduler kills the job) before the
        # checkpoint is complete, and the signals that arrived during the save are counted too.
        received = stop.gathered()
        path = self.checkpointer.periodic_path(self.iteration)
        names = list(dict.fromkeys(name for per_rank in received for name, _ in per_rank))
        if is_main_process():
            arrivals = "; ".join(
                f"{', '.join(f'{name} during iteration {at}' for name, at in per_rank)} at rank {rank}"
                for rank, per_rank in enumerate(received)
                if per_rank
            )
            logger.warning(f"{arrivals}: stopped after iteration {self.iteration}, checkpoint {path}")
        raise TrainingStopped(signals=names, iteration=self.iteration, checkpoint=path, received=received)

    def run_step(self, data_iter) -> None:
        start = time.perf_counter()
        images, targets = next(data_iter)
        data_time = time.perf_counter() - start
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [
            {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
            for t in targets
        ]
        with recording() as events, autocast(self.device, self.amp):
            loss_dict = self.model(images, targets)
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise TypeError(
                f"the model returned {type(loss_dict).__name__} in training mode; expected a dict of losses"
            )
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        total = sum(loss_dict.values())
        # Reduced over ranks so every rank takes the same decision on a non-finite loss.
        reduced = reduce_mean({**{k: v.detach() for k, v in loss_dict.items()}, "loss": total.detach()})
        values = {k: float(v) for k, v in reduced.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        step_index = self.iteration + 1  # 1-based, as printed in the progress line
        amp_skipped = False
        if bad:
            names = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            if self.nonfinite == "stop":
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {step_index}: {names} "
                    f"(lower solver.base_lr, enable trainer.clip_grad_norm, or set trainer.nonfinite=skip)"
                )
            logger.warning(f"skipping iteration {step_index}: non-finite loss {names}")
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if self.clip_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
                values["grad_norm"] = float(grad_norm)
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 0.0
            self.scaler.step(self.optimizer)  # skips optimizer.step() if a gradient is inf/NaN
            self.scaler.update()
            # update() lowers the scale exactly when it found inf/NaN gradients (the same on every
            # rank: DDP has already averaged them).
            amp_skipped = self.scaler.is_enabled() and self.scaler.get_scale() < scale
            if amp_skipped:
                self.amp_skipped_steps += 1
                values.pop("grad_norm", None)  # the norm of overflowed gradients means nothing
                logger.info(
                    f"iteration {step_index}: fp16 gradients overflowed, the GradScaler skipped "
                    f"the step and lowered the loss scale to {self.scaler.get_scale():g}"
                )
        lr = self.optimizer.param_groups[0]["lr"]
        if bad or amp_skipped:
            # The schedule follows the iteration, also past a skipped step (a non-finite loss, or fp16
            # gradients that overflowed, as at fp16's first step): torch's warning that the
            # scheduler stepped before the optimizer is then expected, not a mistake. (Only here:
            # catch_warnings makes once-per-place warnings show again.)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                self.scheduler.step()
        else:
            self.scheduler.step()
        self.iteration += 1

        scalars = {k: v for k, v in values.items() if k not in bad}
        scalars["lr"] = lr
        scalars["time/iter"] = time.perf_counter() - start
        scalars["time/data"] = data_time
        if self.device.type == "cuda":
            scalars["memory/peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.amp == "fp16":
            scalars["amp/loss_scale"] = self.scaler.get_scale()
        # The model's counters (rpn/num_pos, roi/num_fg, roi/cls_accuracy ...) under their own names.
        scalars.update({k: v for k, v in events.scalars.items() if k not in scalars})
        self.metrics.put(scalars)

    # ------------------------------------------------------------------- checkpoints, evaluation
    def check_output(self) -> None:
        """Stop before the first iteration (every rank, with rank 0's message) if the checkpoints
        cannot be written: another run's are in the directory (this one did not resume), it is not
        writable, or it has no space for one."""
        problem = None
        if is_main_process():
            # Weights + momentum when the optimizer has no state yet; the real size once it has.
            needed = max(tensor_nbytes(self.state_dict()), 2 * tensor_nbytes(unwrap(self.model).state_dict()))
            try:
                self.checkpointer.check_output(resumed=self.iteration > 0, needed_bytes=needed)
            except OutputDirError as e:
                problem = str(e)
        problem = broadcast_object(problem)
        if problem:
            raise OutputDirError(problem)

    def save_checkpoint(self, final: bool = False) -> None:
        rngs = all_gather_object(rng_state())  # every rank's, so that a resume continues each one
        if is_main_process():
            state = self.state_dict()
            if len(rngs) > 1:
                state["rng_per_rank"] = rngs
            path = self.checkpointer.save(state, final=final)
            logger.info(f"saved checkpoint {path}")

    def evaluate(self) -> dict:
        if self.evaluate_fn is None:
            return {}
        # Evaluation must not change the training random stream: a run that evaluates at some
        # iteration and one resumed just after it continue identically.
        saved = rng_state()
        try:
            results = self.evaluate_fn(self.iteration) or {}
        finally:
            set_rng_state(saved)
        self.last_eval = results
        self.metrics.log(self.iteration, results)
        self.model.train()
        return results
