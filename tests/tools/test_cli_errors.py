"""The command line on bad input: one line naming the culprit and the fix, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _train(tmp_path, *overrides):
    run = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "experiment=demo",
                          f"hydra.run.dir={tmp_path / 'run'}", *overrides],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    return run.returncode, run.stdout + run.stderr


@pytest.mark.parametrize("override, expected", [
    ("roi_layer=roi_algn", ["Could not find 'roi_layer/roi_algn'", "Available options in 'roi_layer'", "roi_align"]),
    ("solver.base_lrr=0.1", ["Could not override 'solver.base_lrr'", "Key 'base_lrr' is not in struct"]),
])
def test_hydra_rejects_unknown_options_and_keys_without_a_traceback(tmp_path, override, expected):
    code, output = _train(tmp_path, override)
    assert code == 1
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output, output
