"""Optional parts without their package: one line naming the package and the extra to install.

Absence is simulated in a subprocess by ``sys.modules[name] = None`` (import then fails as if the
package were not installed) before the tool runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maskrcnn.optional import MissingDependency, require

REPO = Path(__file__).resolve().parents[1]


def run_without(modules: list[str], tool: str, *args: str) -> subprocess.CompletedProcess:
    code = (
        "import runpy, sys\n"
        f"for name in {modules!r}: sys.modules[name] = None\n"
        f"sys.argv = [{tool!r}, *{list(args)!r}]\n"
        f"runpy.run_path({str(REPO / 'tools' / tool)!r}, run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_require_names_the_package_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        MissingDependency,
        match=r"^--figure needs matplotlib, which is not installed: "
        r"pip install -e '\.\[viz\]' \(or pip install matplotlib\)$",
    ):
        require("matplotlib", purpose="--figure")
    import json

    assert require("json", purpose="the results") is json


def test_explain_roi_figure_without_matplotlib(tmp_path):
    figure = tmp_path / "roi.png"
    done = run_without(["matplotlib"], "explain_roi.py", "--box", "0", "0", "100", "100", "--figure", str(figure))
    line = one_line_error(done)
    assert "--figure needs matplotlib" in line and "pip install -e '.[viz]'" in line
    assert not figure.exists()
    # Without --figure the explanation needs no matplotlib.
    done = run_without(["matplotlib"], "explain_roi.py", "--box", "0", "0", "100", "100")
    assert done.returncode == 0 and "RoI Align" in done.stdout, done.stderr[-2000:]


def test_ablation_report_chart_without_matplotlib(tmp_path):
    line = one_line_error(run_without(["matplotlib"], "ablation_report.py", str(tmp_path)))
    assert "chart (chart.png) needs matplotlib" in line and "'.[viz]'" in line and "--no-chart" in line


def test_run_study_without_matplotlib_stops_before_training():
    done = run_without(["matplotlib"], "run_study.py", "no_such_study")
    line = one_line_error(done)
    assert "needs matplotlib" in line and "'.[viz]'" in line


def test_slurm_sweep_without_the_submitit_launcher():
    done = run_without(["hydra_plugins.hydra_submitit_launcher"], "train.py", "-m", "hydra/launcher=slurm")
    line = one_line_error(done)
    assert line == (
        "error: hydra/launcher=slurm needs hydra-submitit-launcher, which is not installed: "
        "pip install -e '.[cluster]' (or pip install hydra-submitit-launcher)"
    )
