"""tools/check_dataset.py: counts, reasons and histograms, through the real command line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*overrides):
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "check_dataset.py"), *overrides],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )


def _value(out: str, key: str) -> str:
    line = next(line for line in out.splitlines() if line.strip().startswith(key + ":"))
    return line.split(":", 1)[1].strip()


def test_check_dataset_on_bccd(shared_data, tmp_path):
    res = _run("dataset=bccd", f"dataset.bccd_root={shared_data / 'bccd' / 'BCCD'}", "split=train")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "== bccd / train" in out
    assert _value(out, "images") == "292"
    assert _value(out, "degenerate_box") == "2" and _value(out, "box_outside_image") == "0"
    assert _value(out, "unreadable_image") == "0"
    classes = {
        parts[1]: int(parts[2])
        for parts in (line.split() for line in out.splitlines())
        if len(parts) == 4 and parts[1] in ("RBC", "WBC", "Platelets")
    }
    assert sum(classes.values()) == int(_value(out, "objects"))
    assert classes["RBC"] > classes["WBC"] > 0 and classes["Platelets"] > 0
    sizes = {
        line.split()[0]: int(line.split()[-2])
        for line in out.splitlines()
        if line.strip().split(" ")[0] in ("small", "medium", "large")
    }
    assert sum(sizes.values()) == int(_value(out, "objects"))
    # Hydra writes nothing: the run dir is '.', no .hydra folder, logging to stdout only
    assert not (REPO_ROOT / ".hydra").exists() and not (REPO_ROOT / "check_dataset.log").exists()


def test_summary_counts_unreadable_images_and_sizes(tmp_path):

    from maskrcnn.data import CocoDetection
    from maskrcnn.data.check import summarize
    from maskrcnn.data.synthetic import make_synthetic

    truth = make_synthetic(out=str(tmp_path), format="coco", num_images=4, num_val=1, seed=1, image_size=128)
    (tmp_path / "train" / "train_000002.jpg").write_bytes(b"garbage")
    ds = CocoDetection(
        image_dir=str(tmp_path / "train"), annotation_file=str(tmp_path / "annotations" / "instances_train.json")
    )
    text, bad = summarize(ds, check_images=True)
    assert bad == 1 and "train_000002.jpg" in text and _value(text, "unreadable_image") == "1"
    areas = np.array([m.sum() for s in truth["train"] for m in s.masks])
    assert _value(text, "objects") == str(len(areas))
    small = next(line for line in text.splitlines() if line.strip().startswith("small"))
    assert int(small.split()[-2]) == int((areas < 32**2).sum())
    text, bad = summarize(ds, check_images=False)
    assert bad == 0 and "not checked" in text
