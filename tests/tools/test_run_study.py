"""tools/run_study.py end to end with the real tools/train.py on tiny synthetic data: a 2-variant
study runs, writes its report, and a second call skips the finished runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("train_test_helpers", Path(__file__).with_name("test_train.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from maskrcnn.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("tiny_study")
    make_synthetic(out=str(root / "data"), format="coco", num_images=6, num_val=2, seed=0, image_size=64)
    (root / "cfg" / "dataset").mkdir(parents=True)
    (root / "cfg" / "dataset" / "tiny_synthetic.yaml").write_text(helpers.TINY_DATASET)
    return root


def test_study_runs_reports_and_skips_finished_runs(tiny):
    base = helpers.overrides(tiny, **{"solver.max_iter": 2, "trainer.vis_images": 0})
    spec = tiny / "tiny_study.yaml"
    spec.write_text(
        "title: tiny\n"
        f"overrides: {json.dumps(base)}\n"
        "seeds: [0]\nbaseline: roi_pool\n"
        "variants: {roi_pool: [roi_layer=roi_pool], roi_align: [roi_layer=roi_align]}\n"
    )
    root = tiny / "studies"
    cmd = [sys.executable, str(REPO / "tools" / "run_study.py"), str(spec), "--root", str(root)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((root / "tiny_study" / "report.json").read_text())
    assert report["not_finished"] == []
    for variant in ("roi_pool", "roi_align"):
        run = root / "tiny_study" / variant / "seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert report["variants"][variant]["metrics"]["segm/AP"]["values"] == [metrics["segm/AP"]]
        info = json.loads((run / "run_info.json").read_text())
        assert info["attempts"][0]["returncode"] == 0 and info["cpu_s"] > 0
        assert (run / "model_final.pt").is_file()
    assert (root / "tiny_study" / "chart.png").is_file()
    assert "| `roi_align` | RoIAlign | ✓ | avg | ✓ | adaptive | 1 (0) |" in done.stdout

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=200)
    assert again.returncode == 0 and "2 runs planned, 2 finished, 0 to run" in again.stderr
    bad = subprocess.run(
        [sys.executable, str(REPO / "tools" / "run_study.py"), "no_such_study"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown study 'no_such_study'" in bad.stderr
    assert "Traceback" not in bad.stderr
