"""tools/make_synthetic.py: the command writes both splits, reproducibly from the seed."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO_ROOT / "tools" / "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_coco_layout_and_reproducible(tmp_path, capsys):
    tool = _tool()
    args = ["--format", "coco", "--num-images", "5", "--num-val", "2", "--seed", "3", "--image-size", "128"]
    assert tool.main(["--out", str(tmp_path / "a")] + args) == 0
    assert "train: 5 images" in capsys.readouterr().out
    tool.main(["--out", str(tmp_path / "b")] + args)
    a = _digest(tmp_path / "a")
    assert a == _digest(tmp_path / "b")
    assert sorted(a) == sorted(
        ["annotations/instances_train.json", "annotations/instances_val.json"]
        + [f"train/train_{i:06d}.jpg" for i in range(5)]
        + [f"val/val_{i:06d}.jpg" for i in range(2)]
    )
    data = json.loads((tmp_path / "a" / "annotations" / "instances_train.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["ellipse", "rectangle", "triangle"]
    assert max(max(i["height"], i["width"]) for i in data["images"]) == 128
    tool.main(["--out", str(tmp_path / "c"), *args[:-3], "4", "--image-size", "128"])
    assert _digest(tmp_path / "c") != a


def test_voc_layout(tmp_path):
    _tool().main(
        [
            "--out",
            str(tmp_path),
            "--format",
            "voc",
            "--num-images",
            "3",
            "--num-val",
            "1",
            "--seed",
            "0",
            "--image-size",
            "96",
        ]
    )
    sets = tmp_path / "ImageSets" / "Main"
    assert sets.joinpath("trainval.txt").read_text().split() == [
        "train_000000",
        "train_000001",
        "train_000002",
        "val_000000",
    ]
    for sub in ("JPEGImages", "Annotations", "SegmentationObject", "SegmentationClass"):
        assert len(list((tmp_path / sub).iterdir())) == 4


def test_scene_option_changes_the_images(tmp_path):
    tool = _tool()
    args = ["--num-images", "3", "--num-val", "1", "--seed", "0", "--image-size", "96"]
    tool.main(["--out", str(tmp_path / "standard")] + args)
    tool.main(["--out", str(tmp_path / "simple"), "--scene", "simple"] + args)
    tool.main(["--out", str(tmp_path / "simple2"), "--scene", "simple"] + args)
    assert _digest(tmp_path / "simple") == _digest(tmp_path / "simple2")
    assert _digest(tmp_path / "simple") != _digest(tmp_path / "standard")
    with pytest.raises(SystemExit):
        tool.main(["--out", str(tmp_path / "x"), "--scene", "hard"] + args)


def test_bad_arguments(tmp_path):
    tool = _tool()
    with pytest.raises(ValueError, match="num_images"):
        tool.main(["--out", str(tmp_path), "--num-images", "0"])
    with pytest.raises(SystemExit):
        tool.main(["--out", str(tmp_path), "--format", "yolo"])
