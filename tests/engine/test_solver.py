"""Solver: parameter groups and weight decay, LR schedules against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from maskrcnn.engine.solver import LRMultiplier, build_lr_scheduler, build_optimizer


def _lrs(scheduler, optimizer, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_multistep_with_linear_warmup_matches_hand_values():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, base_lr=0.02, weight_decay=0.0)
    sched = build_lr_scheduler(
        opt, max_iter=40, name="multistep", steps=[20, 30], gamma=0.1, warmup_iters=10, warmup_factor=0.001
    )
    lrs = _lrs(sched, opt, 40)
    assert lrs[0] == pytest.approx(0.02 * 0.001)
    # it=5: factor = 0.001 * (1 - 0.5) + 0.5 = 0.5005
    assert lrs[5] == pytest.approx(0.02 * 0.5005)
    assert lrs[9] == pytest.approx(0.02 * (0.001 * 0.1 + 0.9))
    assert lrs[10] == pytest.approx(0.02)
    assert lrs[19] == pytest.approx(0.02)
    assert lrs[20] == pytest.approx(0.002)
    assert lrs[29] == pytest.approx(0.002)
    assert lrs[30] == pytest.approx(0.0002)
    assert lrs[39] == pytest.approx(0.0002)


def test_cosine_and_constant_warmup():
    m = LRMultiplier(max_iter=100, name="cosine", warmup_iters=4, warmup_factor=0.1, warmup_method="constant")
    assert m(0) == pytest.approx(0.1 * 1.0)
    assert m(3) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.03)))
    assert m(50) == pytest.approx(0.5)
    assert m(75) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert m(100) == pytest.approx(0.0, abs=1e-12)
    end = LRMultiplier(max_iter=10, name="cosine", cosine_end_factor=0.2)
    assert end(10) == pytest.approx(0.2)
    assert end(5) == pytest.approx(0.2 + 0.8 * 0.5)


def test_scheduler_state_round_trips():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, base_lr=0.1)
    sched = build_lr_scheduler(opt, max_iter=20, steps=[5], warmup_iters=3)
    _lrs(sched, opt, 7)
    opt2 = build_optimizer(model, base_lr=0.1)
    sched2 = build_lr_scheduler(opt2, max_iter=20, steps=[5], warmup_iters=3)
    # as the trainer resumes: optimizer (holds the current lr) then scheduler (iteration, multiplier)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert _lrs(sched2, opt2, 5) == pytest.approx(_lrs(sched, opt, 5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_iter=10, name="poly"), "scheduler"),
        (dict(max_iter=10, steps=[8, 4]), "steps"),
        (dict(max_iter=10, steps=[11]), "steps"),
        (dict(max_iter=0), "max_iter"),
        (dict(max_iter=10, warmup_method="exp"), "warmup_method"),
    ],
)
def test_bad_schedule_arguments_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRMultiplier(**kwargs)


def test_warmup_longer_than_the_run_warns_with_both_values(caplog):
    with caplog.at_level("WARNING", logger="maskrcnn.engine.solver"):
        LRMultiplier(max_iter=10, warmup_iters=10)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="maskrcnn.engine.solver"):
        m = LRMultiplier(max_iter=10, warmup_iters=50)
    assert "warmup_iters=50 > solver.max_iter=10" in caplog.text
    assert m(9) < 0.25  # still mid-warmup at the last iteration: what the warning is about


def test_weight_decay_groups_norm_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1, bias=False))
    model[3].weight.requires_grad_(False)  # frozen params are not optimized
    opt = build_optimizer(
        model, base_lr=0.1, momentum=0.9, weight_decay=1e-4, weight_decay_norm=0.0, weight_decay_bias=1e-5
    )
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert by_decay[0.0] == {id(model[1].weight), id(model[1].bias), id(model[2].weight), id(model[2].bias)}
    assert by_decay[1e-5] == {id(model[0].bias)}
    assert by_decay[1e-4] == {id(model[0].weight)}
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    # None: same decay for everything -> one group
    opt = build_optimizer(model, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=None)
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 6


def test_sgd_step_applies_momentum_and_decay_like_torch():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 1), nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    ours = build_optimizer(a, base_lr=0.1, momentum=0.9, weight_decay=0.01, weight_decay_bias=0.0)
    ref = torch.optim.SGD(
        [{"params": [b.weight], "weight_decay": 0.01}, {"params": [b.bias], "weight_decay": 0.0}], lr=0.1, momentum=0.9
    )
    x = torch.randn(8, 3)
    for _ in range(3):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight)
    torch.testing.assert_close(a.bias, b.bias)
