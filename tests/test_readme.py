"""The README's quick start, run as written on a small synthetic set with a few iterations.

The commands are read from the README itself, so an edit there that breaks a command fails here.
Each command runs in a fresh working directory; what the test changes is only size: fewer
images, two iterations, no loader workers, one thread, and the data root of that directory (a
relative `paths.data_root` is relative to the repository root, where a user's own datasets may lie).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Quick start"

# Appended to every `tools/train.py` command: two iterations, one checkpoint, nothing in parallel.
TINY_TRAINING = [
    "solver.max_iter=2",
    "solver.warmup_iters=1",
    "solver.checkpoint_period=2",
    "trainer.log_period=1",
    "trainer.num_workers=0",
    "trainer.vis_images=1",
]


def quick_start_commands() -> list[str]:
    """The indented command lines of the README's quick-start section, without their comments."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index(SECTION)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return [line.split("  #")[0].strip() for line in lines[start:end] if line.startswith("    ")]


def run(argv: list[str], cwd: Path) -> str:
    # The checkout's package, as `source .venv/bin/activate` gives; one thread: on these tiny inputs
    # a second one only spins (measured: 31 s for the test, against 60 s with two threads).
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def the_one(pattern: str, cwd: Path) -> Path:
    """The single run folder a `<date>/<time>` placeholder stands for."""
    found = sorted(cwd.glob(pattern))
    assert len(found) == 1, f"expected one folder {pattern} in {cwd}, found {found}"
    return found[0].relative_to(cwd)


def test_quick_start_commands_run_as_written(tmp_path):
    commands = quick_start_commands()
    assert commands[0] == "source .venv/bin/activate"
    assert commands[-1].startswith("tensorboard --logdir")  # a server: tests/tools/test_tensorboard.py
    data_root = f"paths.data_root={tmp_path / 'datasets'}"
    printed = {}  # tool -> what its last run printed
    for command in commands[1:-1]:
        if "outputs/demo/<date>/<time>" in command:
            command = command.replace("outputs/demo/<date>/<time>", str(the_one("outputs/demo/*/*", tmp_path)))
        if "multirun/<date>/<time>" in command:
            command = command.replace("multirun/<date>/<time>", str(the_one("multirun/*/*", tmp_path)))
        argv = shlex.split(command)
        assert argv[0] == "python" and argv[1].startswith("tools/"), f"not a tool command: {command}"
        tool = argv[1].removeprefix("tools/").removesuffix(".py")
        argv = [sys.executable, str(REPO / argv[1])] + argv[2:]
        if tool == "make_synthetic":
            argv[argv.index("--num-images") + 1] = "8"
        elif tool == "train":
            argv += TINY_TRAINING + [data_root]
        else:
            assert tool in ("eval", "predict", "ablation_report"), f"the test does not know {command}"
        printed[tool] = run(argv, tmp_path)

    run_dir = tmp_path / the_one("outputs/demo/*/*", tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and 0.0 <= metrics["segm/AP"] <= 1.0
    assert (run_dir / "model_final.pt").is_file()
    assert f"'segm/AP': {round(metrics['segm/AP'], 4)}" in printed["eval"]  # eval reproduces the run's own
    predict_out = next(cmd for cmd in commands if "tools/predict.py" in cmd)
    output = tmp_path / next(a.split("=", 1)[1] for a in shlex.split(predict_out) if a.startswith("output="))
    val_images = list((tmp_path / "datasets" / "synthetic_simple" / "val").glob("*.jpg"))
    assert isinstance(json.loads(output.read_text()), list)  # two iterations may detect nothing
    assert len(list(output.with_name(output.stem + "_vis").glob("*.png"))) == len(val_images) > 0
    sweep = tmp_path / the_one("multirun/*/*", tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()) == ["0_roi_pool", "1_roi_align"]
    assert "roi_pool" in printed["ablation_report"] and "roi_align" in printed["ablation_report"]
