"""Refactoring guard: the small models give the same losses and detections as when this test was written.

Not an accuracy test (that is the oracles' job, e.g. test_torchvision_parity.py): it proves that a
change meant to move code around did not change what the models compute. Each small model of
``configs/model`` is composed from its Hydra config, its weights are set from a generator seeded by
each parameter's *name* (so a legitimate change of construction order does not matter, a renamed
or reshaped parameter does), then one training-mode forward on a fixed batch records every loss
and one eval-mode forward records the detections (boxes, scores, labels, a mask checksum).

The expected values, ``golden_outputs.json`` next to this file, were written by the code before
the refactor::

    OMP_NUM_THREADS=1 python tests/modeling/test_refactor_golden.py --regen

Regenerate only for a change that is *meant* to change the numbers, and say so in the commit.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # modeling_helpers, also when run as a script

from modeling_helpers import build_model, needs_ops, two_samples_data  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden_outputs.json"
MODELS = ["mask_rcnn_r18_c4_small", "mask_rcnn_r18_fpn_small", "faster_rcnn_r18_fpn_small", "faster_rcnn_r18_c4_small"]
# Few proposals and RoIs (the C4 head runs res5 on every RoI), every detection kept (score 0).
OVERRIDES = [
    "model.rpn.pre_nms_topk_train=300",
    "model.rpn.post_nms_topk_train=50",
    "model.rpn.pre_nms_topk_test=100",
    "model.rpn.post_nms_topk_test=20",
    "model.roi_heads.batch_size_per_image=16",
    "model.transform.min_size_test=96",
    "model.roi_heads.score_thresh=0.0",
    "model.roi_heads.detections_per_img=8",
]
# Tolerances. The same code on the same machine and thread count gives bit-identical numbers; a
# refactor that reorders float operations (another summation order in a kernel, a fused op) moves
# float32 results by a few ulps (1e-7 relative), which the network amplifies by 1-2 orders of
# magnitude. rtol 1e-5 allows that and nothing more: a changed formula, a dropped term, another
# sample or another weight moves these numbers by 1e-3 or more. atol covers values near 0
# (losses of ~1e-4, box coordinates near the image border).
RTOL = 1e-5
ATOL = {"loss": 1e-6, "boxes": 1e-3, "scores": 1e-6, "masks": 1e-3}


def _init_by_name(model: torch.nn.Module) -> None:
    """Deterministic weights that depend only on each parameter's name and shape.

    Matrices and kernels: N(0, 1/fan_in) (LeCun), which keeps activations O(1) through the GroupNorm
    ResNets; vectors (biases, norm scales): 1 for norm weights, small noise around 0 otherwise.
    """
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.01 * noise)


def _mask_checksum(masks: torch.Tensor) -> list[list[float]]:
    """Per detection: total probability and its centroid (x, y) in pixels: shape and place of each mask."""
    m = masks[:, 0].double()
    h, w = m.shape[-2:]
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    total = m.sum(dim=(1, 2))
    safe = total.clamp(min=1e-12)
    return torch.stack([total, (m * xs).sum(dim=(1, 2)) / safe, (m * ys).sum(dim=(1, 2)) / safe], 1).tolist()


def run_model(name: str) -> dict:
    """Losses of one training forward and detections of one eval forward, as plain JSON values."""
    torch.manual_seed(0)
    net = build_model(name, "roi_align", num_classes=3, overrides=OVERRIDES)
    _init_by_name(net)
    images, targets = two_samples_data()
    if name.startswith("faster"):
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    torch.manual_seed(1)  # the RPN's and RoI heads' sampling
    losses = net.train()(images, targets)
    out = {"losses": {k: float(v.detach()) for k, v in sorted(losses.items())}, "detections": []}
    with torch.no_grad():
        dets = net.eval()(images)
    for d in dets:
        rec = {"boxes": d["boxes"].tolist(), "scores": d["scores"].tolist(), "labels": d["labels"].tolist()}
        if "masks" in d:
            rec["masks"] = _mask_checksum(d["masks"])
        out["detections"].append(rec)
    return out


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _close(actual, expected, atol: float, what: str) -> None:
    a = torch.tensor(actual, dtype=torch.float64)
    e = torch.tensor(expected, dtype=torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != golden {tuple(e.shape)}"
    torch.testing.assert_close(a, e, rtol=RTOL, atol=atol, msg=lambda m: f"{what}: {m}")


@needs_ops
@pytest.mark.parametrize("name", MODELS)
def test_same_losses_and_detections_as_before(name, one_thread):
    expected = json.loads(GOLDEN.read_text())[name]
    got = run_model(name)
    assert sorted(got["losses"]) == sorted(expected["losses"])
    for key, value in expected["losses"].items():
        _close([got["losses"][key]], [value], ATOL["loss"], f"{name} {key}")
    assert len(got["detections"]) == len(expected["detections"])
    for i, (g, e) in enumerate(zip(got["detections"], expected["detections"])):
        assert len(e["labels"]) > 0, "the golden run must detect something to guard the box path"
        assert g["labels"] == e["labels"], f"{name} image {i}: labels"
        _close(g["scores"], e["scores"], ATOL["scores"], f"{name} image {i} scores")
        _close(g["boxes"], e["boxes"], ATOL["boxes"], f"{name} image {i} boxes")
        assert ("masks" in g) == ("masks" in e)
        if "masks" in e:
            _close(g["masks"], e["masks"], ATOL["masks"], f"{name} image {i} masks")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit(f"usage: python {Path(__file__).name} --regen   (rewrites {GOLDEN.name})")
    torch.set_num_threads(1)
    GOLDEN.write_text(json.dumps({name: run_model(name) for name in MODELS}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
