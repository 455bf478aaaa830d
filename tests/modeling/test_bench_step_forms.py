"""tools/bench_step.py: the channels_last form trains the same model (same losses, weights in
channels_last), the baseline form is an untouched copy, and the form list is checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from modeling_helpers import build_model

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_step.py"
FAST = ["model.rpn.pre_nms_topk_train=300", "model.rpn.post_nms_topk_train=100"]


def _load_tool():
    spec = importlib.util.spec_from_file_location("bench_step", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_step = _load_tool()


def test_channels_last_form_gives_the_same_losses_and_leaves_the_model_alone(two_samples):
    torch.manual_seed(0)
    model = build_model("mask_rcnn_r18_fpn_small", "roi_align", overrides=FAST).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    contiguous = bench_step.make_form(model, "contiguous")
    channels_last = bench_step.make_form(model, "channels_last")
    conv = channels_last.backbone.body.layer1[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch = two_samples
    a = bench_step.step(contiguous, torch.optim.SGD(contiguous.parameters(), lr=1e-3), batch)
    b = bench_step.step(channels_last, torch.optim.SGD(channels_last.parameters(), lr=1e-3), batch)
    assert a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    for k, v in model.state_dict().items():  # the forms are copies: the model did not train
        assert torch.equal(v, before[k]), k


def test_forms_must_start_with_the_baseline(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_step.main(["--forms", "channels_last,contiguous"])
    assert exit_info.value.code == 2
    assert "must start with contiguous" in capsys.readouterr().err
