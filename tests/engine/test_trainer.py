"""Trainer loop on a tiny real module: updates, non-finite loss policies, clipping, AMP (fp16 gradient
overflow skipped by the GradScaler and counted), resume."""

import json
import warnings

import pytest
import torch
from torch import nn

from maskrcnn.engine import Checkpointer, MetricsLogger, NonFiniteLossError, OutputDirError, Trainer
from maskrcnn.engine.solver import build_lr_scheduler, build_optimizer
from maskrcnn.events import put_scalar


class TinyDetectorLike(nn.Module):
    """Returns a dict of two losses like a detector; ``nan_at`` makes ``loss_b`` NaN on that call."""

    def __init__(self, nan_at=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 4)
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, images, targets):
        self.calls += 1
        feats = torch.stack([self.conv(img[None]).mean(dim=(0, 2, 3)) for img in images])
        pred = self.head(feats)
        boxes = torch.stack([t["boxes"][0] for t in targets]) / 32.0
        loss_a = (pred - boxes).pow(2).mean()
        loss_b = 0.1 * pred.abs().mean()
        if self.calls == self.nan_at:
            loss_b = loss_b * float("nan")
        put_scalar("rpn/num_fg", 3.0)
        put_scalar("roi/accuracy", 0.5)
        return {"loss_a": loss_a, "loss_b": loss_b}


class Loader:
    """Infinite deterministic batches with a restorable position (like the data engineer's loader)."""

    def __init__(self, batch=2):
        self.batch = batch
        self.position = 0

    def __iter__(self):
        while True:
            g = torch.Generator().manual_seed(self.position)
            self.position += 1
            images = tuple(torch.rand(3, 16, 16, generator=g) for _ in range(self.batch))
            targets = tuple({"boxes": torch.rand(1, 4, generator=g) * 32, "image_id": i} for i in range(self.batch))
            yield images, targets

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def make_trainer(tmp_path, *, max_iter=6, nan_at=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = TinyDetectorLike(nan_at=nan_at)
    opt = build_optimizer(model, base_lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = build_lr_scheduler(opt, max_iter=max_iter, steps=[max(max_iter // 2, 1)], warmup_iters=2)
    return Trainer(
        model=model,
        optimizer=opt,
        scheduler=sched,
        train_loader=Loader(),
        max_iter=max_iter,
        device=torch.device("cpu"),
        checkpointer=Checkpointer(directory=tmp_path, keep_last=2),
        metrics=MetricsLogger(directory=tmp_path),
        log_period=2,
        **kwargs,
    )


def test_trains_logs_and_saves_final(tmp_path):
    evals = []
    trainer = make_trainer(
        tmp_path, checkpoint_period=2, eval_period=4, evaluate_fn=lambda it: evals.append(it) or {"bbox/AP": 0.25 * it}
    )
    before = trainer.model.head.weight.detach().clone()
    result = trainer.train()
    assert not torch.equal(before, trainer.model.head.weight)
    assert evals == [4, 6] and result == {"bbox/AP": 1.5}
    assert (tmp_path / "model_final.pt").exists()
    assert sorted(p.name for p in tmp_path.glob("model_0*.pt")) == ["model_0000002.pt", "model_0000004.pt"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train_records] == [2, 4, 6]
    for key in ("loss_a", "loss_b", "lr", "time/iter", "time/data", "rpn/num_fg", "roi/accuracy"):
        assert key in train_records[0], key
    assert {"iteration": 4, "bbox/AP": 1.0} in records
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    line = trainer.metrics.progress_line(6, 6)
    assert "iter 6/6" in line and "loss_a" in line and "eta" in line
    trainer.metrics.close()


def test_nonfinite_loss_stops_with_name_and_iteration(tmp_path):
    trainer = make_trainer(tmp_path, nan_at=3)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: loss=nan, loss_b=nan"):
        trainer.train()
    assert trainer.iteration == 2


def test_nonfinite_loss_skip_leaves_weights_untouched(tmp_path):
    trainer = make_trainer(tmp_path, nan_at=3, nonfinite="skip", max_iter=3)
    trainer.max_iter = 2
    trainer.train()
    after_two = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.max_iter = 3
    trainer.train()  # iteration 3 is NaN: skipped, no update
    assert trainer.iteration == 3 and trainer.skipped_steps == 1
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, after_two[k]), k


def test_a_skipped_first_step_advances_the_schedule_without_torch_warning(tmp_path):
    trainer = make_trainer(tmp_path, nan_at=1, nonfinite="skip", max_iter=2)
    lrs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            lrs.append(trainer.optimizer.param_groups[0]["lr"])
            trainer.max_iter = len(lrs)
            trainer.train()
    assert trainer.iteration == 2 and trainer.skipped_steps == 1
    assert lrs[1] != lrs[0]  # the schedule moved on past the skipped step
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def _first_step_size(trainer):
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return float((after - before).norm()) / lr, float(before.norm())


def test_gradient_clipping_bounds_the_update(tmp_path):
    clip = 1e-3
    clipped = make_trainer(tmp_path / "a", clip_grad_norm=clip, max_iter=1)
    step, param_norm = _first_step_size(clipped)
    # first SGD step (no momentum history): lr * (clipped grad + wd * theta)
    assert step <= clip + 1e-4 * param_norm + 1e-6
    assert clipped.metrics.history["grad_norm"].values[-1] > 10 * clip  # the raw norm was larger
    free_step, _ = _first_step_size(make_trainer(tmp_path / "b", max_iter=1))
    assert free_step > 10 * step


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_modes_train(tmp_path, amp):
    trainer = make_trainer(tmp_path, amp=amp, max_iter=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert trainer.iteration == 2
    assert (amp == "fp16") == trainer.scaler.is_enabled()
    # fp16's first step overflows at the GradScaler's initial scale and is skipped; the schedule
    # still advances, without torch's "lr_scheduler.step() before optimizer.step()" warning
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_fp16_gradient_overflow_is_skipped_by_the_scaler_and_counted(tmp_path, caplog):
    trainer = make_trainer(tmp_path, amp="fp16", max_iter=2, clip_grad_norm=10.0)
    # A small initial scale: the tiny model's own gradients never overflow, only the injected one.
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    model = trainer.model
    # A finite loss with an infinite gradient on the third forward/backward (iteration 3).
    model.head.weight.register_hook(lambda g: g * float("inf") if model.calls == 3 else g)
    trainer.train()
    assert trainer.amp_skipped_steps == 0
    after_two = {k: v.clone() for k, v in model.state_dict().items()}
    scale = trainer.scaler.get_scale()
    trainer.max_iter = 3
    with caplog.at_level("INFO", logger="maskrcnn.engine.trainer"):
        trainer.train()
    assert trainer.iteration == 3 and trainer.amp_skipped_steps == 1 and trainer.skipped_steps == 0
    assert trainer.scaler.get_scale() == scale / 2
    for k, v in model.state_dict().items():  # the step was skipped: no update at all
        assert torch.equal(v, after_two[k]), k
    assert "iteration 3: fp16 gradients overflowed" in caplog.text
    trainer.max_iter = 4
    trainer.train()
    assert not torch.equal(model.head.weight, after_two["head.weight"])  # training goes on
    assert trainer.amp_skipped_steps == 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["amp/skipped_steps"]) for r in records if "loss" in r] == [(2, 0), (3, 1), (4, 1)]
    assert all(r["iteration"] != 3 or "grad_norm" not in r for r in records)  # no inf norm logged
    assert "fp16 skipped 1" in trainer.metrics.progress_line(4, 4)
    # the count survives a resume
    resumed = make_trainer(tmp_path / "resumed", amp="fp16", max_iter=4)
    resumed.load_state_dict(trainer.state_dict())
    assert resumed.amp_skipped_steps == 1
    trainer.metrics.close()
    resumed.metrics.close()


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path):
    full = make_trainer(tmp_path / "full", checkpoint_period=3)
    full.train()
    partial = make_trainer(tmp_path / "part", checkpoint_period=3)
    partial.max_iter = 3
    partial.train()
    resumed = make_trainer(tmp_path / "res", seed=123)  # different init: everything must come from the file
    resumed.load_state_dict(Checkpointer.load(tmp_path / "part" / "model_final.pt"))
    assert resumed.iteration == 3
    resumed.train()
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)


def test_resume_at_an_evaluation_iteration_evaluates_again_and_continues_identically(tmp_path):
    # The checkpoint of iteration 4 is saved just before the evaluation at 4, which an interruption
    # may cut off: the resumed run evaluates at 4 first, then goes on exactly as the full run.
    full_evals, resumed_evals = [], []
    full = make_trainer(
        tmp_path / "full",
        max_iter=8,
        checkpoint_period=4,
        eval_period=4,
        evaluate_fn=lambda it: full_evals.append(it) or {"bbox/AP": 0.1},
    )
    full.train()
    source = tmp_path / "full" / "model_0000004.pt"
    resumed = make_trainer(
        tmp_path / "res",
        max_iter=8,
        seed=9,
        checkpoint_period=4,
        eval_period=4,
        evaluate_fn=lambda it: resumed_evals.append(it) or {"bbox/AP": 0.1},
    )
    resumed.load_state_dict(Checkpointer.load(source))
    resumed.train()
    assert full_evals == [4, 8] and resumed_evals == [4, 8]
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    # Between evaluation iterations a resume does not evaluate first.
    between = make_trainer(
        tmp_path / "between",
        max_iter=8,
        checkpoint_period=2,
        eval_period=4,
        evaluate_fn=lambda it: resumed_evals.append(it) or {},
    )
    between.load_state_dict(Checkpointer.load(tmp_path / "full" / "model_0000004.pt"))
    between.iteration = 6
    resumed_evals.clear()
    between.train()
    assert resumed_evals == [8]


def test_resume_of_a_finished_run_evaluates_the_final_weights_again(tmp_path):
    # The final checkpoint is written before the final evaluation; a run stopped between the two
    # must not end without final metrics when it is resumed.
    full = make_trainer(tmp_path / "full", max_iter=4, evaluate_fn=lambda it: {"bbox/AP": 0.5})
    assert full.train() == {"bbox/AP": 0.5}
    full.metrics.close()
    evals = []
    resumed = make_trainer(
        tmp_path / "full", max_iter=4, seed=7, evaluate_fn=lambda it: evals.append(it) or {"bbox/AP": 0.5}
    )
    resumed.load_state_dict(Checkpointer.load(tmp_path / "full" / "model_final.pt"))
    before = {k: v.clone() for k, v in resumed.model.state_dict().items()}
    assert resumed.train() == {"bbox/AP": 0.5}
    assert evals == [4]
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # nothing trained
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0)
    resumed.metrics.close()


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="trainer.amp"):
        make_trainer(tmp_path, amp="fp8")
    with pytest.raises(ValueError, match="trainer.nonfinite"):
        make_trainer(tmp_path, nonfinite="ignore")


def test_a_new_run_never_overwrites_another_runs_checkpoints(tmp_path):
    first = make_trainer(tmp_path, checkpoint_period=2, max_iter=4)
    first.train()
    first.metrics.close()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("model_*.pt")}
    second = make_trainer(tmp_path, max_iter=4, seed=1)  # same folder, not resumed
    with pytest.raises(OutputDirError, match="already holds another run's checkpoints.*resume=true"):
        second.train()
    assert second.iteration == 0 and second.model.calls == 0  # stopped before training
    assert {p.name: p.read_bytes() for p in tmp_path.glob("model_*.pt")} == before
    second.metrics.close()
