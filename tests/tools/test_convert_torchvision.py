"""tools/convert_torchvision.py: torchvision weights -> our checkpoint, loadable by the *_torchvision configs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from maskrcnn.engine import predict as predict_run
from maskrcnn.engine.torchvision_convert import convert

REPO = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("tool_convert_torchvision", REPO / "tools" / "convert_torchvision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ours(model: str, num_classes: int):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(overrides=[f"+model={model}", "+roi_layer=roi_align"])
    with open_dict(cfg):
        cfg.dataset = OmegaConf.create({"num_classes": num_classes})
    return instantiate(cfg.model)


@pytest.mark.parametrize("arch,model", [("fasterrcnn_resnet50_fpn", "faster_rcnn_r50_fpn_torchvision")])
def test_cli_converts_and_loads_strictly(tmp_path, capsys, arch, model):
    tv = getattr(torchvision.models.detection, arch)(weights=None, weights_backbone=None, num_classes=91)
    src = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / "ours.pt"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "convert_torchvision.py"),
            "--arch",
            arch,
            "--weights",
            str(src),
            "--out",
            str(out),
            "--coco80",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "num_classes=80" in proc.stdout
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["num_classes"] == 80 and ckpt["meta"]["label_to_category_id"][80] == 90
    ours = _ours(model, 80)
    ours.load_state_dict(ckpt["model"], strict=True)
    # --coco80 keeps the background row and the rows of the category ids, in order.
    w = tv.roi_heads.box_predictor.cls_score.weight
    torch.testing.assert_close(ours.roi_heads.box_predictor.cls_score.weight[[0, 1, 12, 80]], w[[0, 1, 13, 90]])
    b = tv.roi_heads.box_predictor.bbox_pred.weight.view(91, 4, -1)
    torch.testing.assert_close(ours.roi_heads.box_predictor.bbox_pred.weight.view(81, 4, -1)[12], b[13])
    # The wrong --arch and missing files are named (in-process: main() returns 2).
    tool = _load_tool()
    assert tool.main(["--arch", "maskrcnn_resnet50_fpn", "--weights", str(src), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no mask head" in capsys.readouterr().err
    assert tool.main(["--arch", arch, "--weights", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "nope.pth" in capsys.readouterr().err


def test_unknown_keys_are_reported():
    from maskrcnn.modeling.torchvision_compat import convert_torchvision_state_dict

    with pytest.raises(ValueError, match="unexpected keys"):
        convert_torchvision_state_dict(
            {"roi_heads.box_predictor.cls_score.weight": torch.zeros(2, 3), "foo.bar": torch.zeros(1)},
            arch="fasterrcnn_resnet50_fpn",
        )


def test_converted_checkpoint_describes_itself_to_predict(tmp_path):
    """The README's predict command on converted weights: no dataset.num_classes needed, the
    model config and COCO class names come from the checkpoint."""
    import cv2
    import numpy as np

    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    src = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / "ours.pt"
    meta = convert("fasterrcnn_resnet50_fpn", src, out)
    assert meta["model_config"] == "faster_rcnn_r50_fpn_torchvision" and meta["num_classes"] == 90
    assert meta["class_names"][0] == "person" and len(meta["class_names"]) == 90
    assert meta["config"]["model"]["roi_heads"]["box_predictor"]["num_classes"] == "${dataset.num_classes}"
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 120, np.uint8))
    # The README's command (model= as converted), small test-time size to stay fast.
    overrides = [
        "model=faster_rcnn_r50_fpn_torchvision",
        f"checkpoint={out}",
        f"inputs=[{image}]",
        f"output={tmp_path / 'results.json'}",
        "model.transform.min_size_test=64",
        "model.transform.max_size_test=64",
        "device=cpu",
    ]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("predict", overrides=overrides)
    results = predict_run.predict(cfg, overrides=overrides)
    assert all(1 <= r["category_id"] <= 90 for r in results)
    from maskrcnn.engine.run_config import load_run_config

    names = predict_run.dataset_metadata(load_run_config(out, torch.load(out, weights_only=True)).meta, None)[1]
    assert names[:3] == ["person", "bicycle", "car"]
    # An explicit, different class count is one clear message with both values and the fix.
    from maskrcnn.engine import ConfigError

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("predict", overrides=[*overrides, "dataset.num_classes=3"])
    with pytest.raises(ConfigError, match="num_classes=90.*dataset.num_classes=3.*add dataset.num_classes=90"):
        predict_run.predict(cfg, overrides=[*overrides, "dataset.num_classes=3"])
