"""Every bad input of docs/ops.md raises a clear error naming the argument; none crashes.

The Python API checks what it can without reading data (ValueError / TypeError); the kernels
check the values (batch index, finite boxes, levels, argmax) and the raw torch.ops entry points
repeat the static checks. The raw calls run in a subprocess to prove the interpreter survives.
"""

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from ops_helpers import cpu_kernels_only

from maskrcnn.ops import roi_align, roi_pool, roi_warp

X = torch.randn(2, 3, 8, 9)
GOOD = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 2.0, 0.0, 7.0, 7.0]])


def with_box(index=0.0, box=(1.0, 1.0, 6.0, 5.0)):
    return torch.tensor([[index, *box]])


BAD_CALLS = [
    # (description, call, exception type, message fragment)
    ("rois (K, 4) tensor", lambda op: op(X, GOOD[:, 1:], 2), ValueError, r"rois must be a \(K, 5\)"),
    ("rois 1-D", lambda op: op(X, GOOD[0], 2), ValueError, r"rois must be a \(K, 5\)"),
    ("rois list of wrong length", lambda op: op(X, [GOOD[:, 1:]], 2), ValueError, "one \\(K_i, 4\\) tensor per image"),
    ("rois list of (K, 5)", lambda op: op(X, [GOOD, GOOD], 2), ValueError, r"rois\[0\] must be a \(K_i, 4\)"),
    ("rois not a tensor", lambda op: op(X, "boxes", 2), TypeError, "rois must be"),
    (
        "batch index too large",
        lambda op: op(X, with_box(2.0), 2),
        ValueError,
        r"batch index\) must be an integer in \[0, 2\)",
    ),
    ("batch index negative", lambda op: op(X, with_box(-1.0), 2), ValueError, "batch index"),
    ("batch index not integral", lambda op: op(X, with_box(0.5), 2), ValueError, "batch index"),
    ("NaN box", lambda op: op(X, with_box(box=(1.0, math.nan, 3.0, 4.0)), 2), ValueError, "finite box coordinates"),
    ("inf box", lambda op: op(X, with_box(box=(1.0, 1.0, math.inf, 4.0)), 2), ValueError, "finite box coordinates"),
    ("absurdly large box", lambda op: op(X, with_box(box=(0.0, 0.0, 1e13, 1e13)), 2), ValueError, "too large"),
    ("negative scale", lambda op: op(X, GOOD, 2, -0.5), ValueError, "spatial_scale must be positive and finite"),
    ("zero scale", lambda op: op(X, GOOD, 2, 0.0), ValueError, "spatial_scale must be positive and finite"),
    ("NaN scale", lambda op: op(X, GOOD, 2, math.nan), ValueError, "spatial_scale must be positive and finite"),
    ("scale not a number", lambda op: op(X, GOOD, 2, "1/4"), TypeError, "spatial_scale must be a number"),
    ("zero output size", lambda op: op(X, GOOD, 0), ValueError, "output_size must be positive"),
    ("negative output size", lambda op: op(X, GOOD, (3, -2)), ValueError, "output_size must be positive"),
    ("float output size", lambda op: op(X, GOOD, 2.5), TypeError, "output_size must be an int"),
    (
        "integer input",
        lambda op: op(X.to(torch.int32), GOOD, 2),
        TypeError,
        "input must be float16, bfloat16, float32 or float64",
    ),
    ("3-D input", lambda op: op(X[0], GOOD, 2), ValueError, r"input must be a 4-D \(N, C, H, W\)"),
    ("rois dtype mismatch", lambda op: op(X, GOOD.double(), 2), TypeError, "rois must have dtype torch.float32"),
    (
        "float64 rois for half input",
        lambda op: op(X.half(), GOOD.double(), 2),
        TypeError,
        "torch.float16 or torch.float32",
    ),
    (
        "rois on another device",
        lambda op: op(X, GOOD.to("meta"), 2),
        ValueError,
        "rois must be on the device of the input",
    ),
]


@pytest.mark.parametrize("op", [roi_align, roi_pool, roi_warp], ids=["roi_align", "roi_pool", "roi_warp"])
@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_functional_api_rejects(op, case):
    _, call, error, message = case
    with pytest.raises(error, match=message):
        call(op)


def test_roi_align_specific_arguments():
    with pytest.raises(ValueError, match="mode must be 'avg' or 'max'"):
        roi_align(X, GOOD, 2, mode="mean")
    with pytest.raises(TypeError, match="sampling_ratio must be an int"):
        roi_align(X, GOOD, 2, sampling_ratio=2.0)
    # Adaptive sampling of a huge (finite) box would need more than 2^30 samples per bin.
    with pytest.raises(ValueError, match="too large for adaptive sampling"):
        roi_align(X, with_box(box=(0.0, 0.0, 1e6, 1e6)), 1, 1.0, sampling_ratio=0)
    # The same box with a fixed sampling ratio is fine: only its samples on the map cost work.
    assert torch.isfinite(roi_align(X, with_box(box=(0.0, 0.0, 1e6, 1e6)), 1, 1.0, sampling_ratio=2)).all()


# Raw operator calls with bad arguments, bypassing the Python checks. Each must raise the given
# Python exception; the script prints one line per case and exits normally.
RAW_SCRIPT = textwrap.dedent(
    """
    import math, torch
    import maskrcnn.ops  # noqa: F401
    ops = torch.ops.maskrcnn
    x = torch.randn(2, 3, 8, 9)
    r = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 2.0, 0.0, 7.0, 7.0]])
    def box(*v): return torch.tensor([list(v)])
    y, arg = ops.roi_pool(x, r, 1.0, 2, 2)
    g = torch.ones(2, 3, 2, 2)
    cases = {
        "rois shape": (lambda: ops.roi_align(x, r[:, 1:], 1.0, 2, 2, 2, True, "avg"), ValueError),
        "batch index": (lambda: ops.roi_align(x, box(7.0, 1, 1, 3, 3), 1.0, 2, 2, 2, True, "avg"), ValueError),
        "negative batch index": (lambda: ops.roi_pool(x, box(-1.0, 1, 1, 3, 3), 1.0, 2, 2), ValueError),
        "nan box": (lambda: ops.roi_align(x, box(0, math.nan, 1, 3, 3), 1.0, 2, 2, 2, True, "max"), ValueError),
        "inf box": (lambda: ops.roi_pool(x, box(0, 1, 1, math.inf, 3), 1.0, 2, 2), ValueError),
        "huge pool box": (lambda: ops.roi_pool(x, box(0, -1e30, 0, 1e30, 3), 1.0, 2, 2), ValueError),
        "huge adaptive box": (lambda: ops.roi_align(x, box(0, 0, 0, 3e38, 3e38), 1.0, 1, 1, 0, True, "avg"), ValueError),
        "zero output": (lambda: ops.roi_align(x, r, 1.0, 0, 2, 2, True, "avg"), ValueError),
        "negative output": (lambda: ops.roi_pool(x, r, 1.0, 2, -3), ValueError),
        "negative scale": (lambda: ops.roi_align(x, r, -1.0, 2, 2, 2, True, "avg"), ValueError),
        "nan scale": (lambda: ops.roi_pool(x, r, math.nan, 2, 2), ValueError),
        "huge sampling ratio": (lambda: ops.roi_align(x, r, 1.0, 2, 2, 1 << 20, True, "avg"), ValueError),
        "bad mode": (lambda: ops.roi_align(x, r, 1.0, 2, 2, 2, True, "median"), ValueError),
        "integer input": (lambda: ops.roi_align(x.int(), r, 1.0, 2, 2, 2, True, "avg"), TypeError),
        "rois dtype": (lambda: ops.roi_pool(x, r.double(), 1.0, 2, 2), TypeError),
        "empty map": (lambda: ops.roi_align(x[:, :, :0], r, 1.0, 2, 2, 2, True, "avg"), ValueError),
        "grad shape": (lambda: ops._roi_align_backward(g[:1], x, r, 1.0, 2, 2, 2, True, "avg"), ValueError),
        "pool grad shape": (lambda: ops._roi_pool_backward(g[:, :1], x, r, arg, 1.0, 2, 2), ValueError),
        "argmax out of range": (lambda: ops._roi_pool_backward(g, x, r, torch.full_like(arg, 10**6), 1.0, 2, 2), ValueError),
        "argmax below -1": (lambda: ops._roi_pool_backward(g, x, r, torch.full_like(arg, -5), 1.0, 2, 2), ValueError),
        "argmax dtype": (lambda: ops._roi_pool_backward(g, x, r, arg.long(), 1.0, 2, 2), TypeError),
        "level out of range": (lambda: ops.multilevel_roi_align([x], r, torch.tensor([0, 1]), [1.0], 2, 2, 2, True, "avg"), ValueError),
        "level count": (lambda: ops.multilevel_roi_align([x], r, torch.tensor([0]), [1.0], 2, 2, 2, True, "avg"), ValueError),
        "scales count": (lambda: ops.multilevel_roi_align([x, x], r, torch.tensor([0, 1]), [1.0], 2, 2, 2, True, "avg"), ValueError),
        "no features": (lambda: ops.multilevel_roi_align([], r, torch.tensor([0, 1]), [], 2, 2, 2, True, "avg"), ValueError),
    }
    for name, (call, error) in cases.items():
        try:
            call()
        except error as e:
            print("RAISED", name, "|", str(e).splitlines()[0])
        else:
            print("NO ERROR", name)
    print("SURVIVED")
    """
)


@cpu_kernels_only("the CUDA backward passes check no values (no host synchronisation): a corrupt argmax is skipped")
def test_raw_operators_raise_and_the_interpreter_survives():
    done = subprocess.run([sys.executable, "-c", RAW_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "SURVIVED"
    assert not [line for line in lines if line.startswith("NO ERROR")], done.stdout
    assert sum(line.startswith("RAISED") for line in lines) == 25, done.stdout
