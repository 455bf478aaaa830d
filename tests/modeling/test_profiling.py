"""maskrcnn.profiling: every part of a Mask R-CNN step is timed, nested parts fit in their parents,
the instrumentation changes no result and leaves the model as it was."""

from __future__ import annotations

import itertools

import torch
from modeling_helpers import build_model

from maskrcnn.modeling import roi_heads as roi_heads_module
from maskrcnn.profiling import PARTS, format_report, profile_training_steps, time_interleaved

FAST = [
    "model.rpn.pre_nms_topk_train=300",
    "model.rpn.post_nms_topk_train=100",
    "model.roi_heads.batch_size_per_image=64",
]


def _run(model, two_samples, instrumented: bool):
    torch.manual_seed(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if instrumented:
        return profile_training_steps(
            model, opt, itertools.repeat(two_samples), device=torch.device("cpu"), steps=2, warmup=1
        )
    for _ in range(3):
        losses = model(*two_samples)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def test_parts_are_timed_nested_and_change_nothing(two_samples):
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "torchvision", overrides=FAST).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    original_targets = roi_heads_module.mask_targets
    report = _run(model, two_samples, instrumented=True)

    assert len(report["steps"]) == 2
    parents = dict(PARTS)
    for step in report["steps"]:
        assert set(step) == {name for name, _ in PARTS}  # every part of the FPN Mask R-CNN ran
        assert all(v > 0 for v in step.values())
        for name, parent in PARTS:
            if parent is not None:
                assert step[name] <= step[parent] + 1e-6, (name, parent)
        kids = [n for n, p in parents.items() if p == "step"]
        assert sum(step[k] for k in kids) <= step["step"] + 1e-6

    # Restored: no instance attribute shadows a method, the module function is the original.
    assert roi_heads_module.mask_targets is original_targets
    for m in (model.transform, model.backbone, model.rpn, model.rpn.head, model.roi_heads, model.roi_heads.box_head):
        assert "forward" not in vars(m)
    assert "_sample" not in vars(model.roi_heads) and "_losses" not in vars(model.rpn)

    # The same three steps without instrumentation give the same losses.
    model.load_state_dict(state)
    plain = _run(model, two_samples, instrumented=False)
    assert plain == report["losses"]

    table = format_report(report)
    assert table.splitlines()[1].split()[0] == "step" and "mask.targets" in table and "(rest)" in table


def test_benchmark_timer_interleaves_the_calls_and_times_each():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = time_interleaved(fns, repeats=3, warmup=2, device=torch.device("cpu"))
    # warm-up and timed calls alike take turns, so a change of load hits both
    assert calls == ["a", "b"] * 5
    assert set(times) == {"a", "b"}
    for wall, cpu in times.values():
        assert len(wall) == len(cpu) == 3 and all(t >= 0 for t in wall + cpu)
