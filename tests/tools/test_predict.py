"""tools/predict.py: COCO-format results (RLE masks, XYWH boxes, category ids) and drawings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from maskrcnn.evaluation.coco_evaluation import encode_masks

REPO = Path(__file__).resolve().parents[2]
SMALL = ["model.transform.min_size_test=96", "model.transform.max_size_test=160",
         "model.rpn.post_nms_topk_test=50", "roi_layer=torchvision"]


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("predict", overrides=SMALL + ["checkpoint=x", "inputs=[x]"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    ckpt = tmp / "model.pt"
    torch.save({"model": model.state_dict(), "meta": {"label_to_category_id": {1: 11, 2: 22, 3: 33}}}, ckpt)
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (70, 90), "b.jpg": (96, 64)}.items():
        img = (rng.random((h, w, 3)) * 80).astype(np.uint8)
        img[10:50, 15:60] = (230, 40, 40)
        cv2.imwrite(str(images / name), img)
    (images / "notes.txt").write_text("not an image")
    return tmp, ckpt, images, model


def test_cli_on_a_folder_with_drawings(setup):
    tmp, ckpt, images, model = setup
    out = tmp / "res" / "results.json"
    cmd = [sys.executable, str(REPO / "tools" / "predict.py"), *SMALL, f"checkpoint={ckpt}",
           f"inputs=[{images}]", f"output={out}", "visualize=true", "vis_score_threshold=0.0",
           f"hydra.run.dir={tmp / 'hydra'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {r["file_name"] for r in results} == {"a.png", "b.jpg"}
    assert {r["category_id"] for r in results} <= {11, 22, 33}  # mapped through the checkpoint's meta
    for r in results:
        assert set(r) == {"file_name", "image_id", "category_id", "bbox", "score", "segmentation"}
        assert len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0
    # The same detections as the model run here on the same file.
    rgb = cv2.cvtColor(cv2.imread(str(images / "a.png")), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        det = model([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255])[0]
    mine = [r for r in results if r["file_name"] == "a.png"]
    assert len(mine) == det["boxes"].shape[0] > 0
    x1, y1, x2, y2 = det["boxes"][0].tolist()
    assert mine[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-3)
    assert mine[0]["score"] == pytest.approx(det["scores"][0].item(), abs=1e-6)
    decoded = mask_util.decode(mine[0]["segmentation"])
    assert decoded.shape == (70, 90)
    assert np.array_equal(decoded, (det["masks"][0, 0] > 0.5).numpy().astype(np.uint8))  # as the evaluator
    # Not images of a dataset: image ids are the input indices, also in the drawings' names.
    assert {(r["file_name"], r["image_id"]) for r in results} == {("a.png", 0), ("b.jpg", 1)}
    drawings = sorted(p.name for p in (tmp / "res" / "results_vis").iterdir())
    assert drawings == ["image_0_a.png", "image_1_b.png"]
    assert cv2.imread(str(tmp / "res" / "results_vis" / "image_0_a.png")).shape == (70, 90, 3)


def test_coco_results_and_fallback_to_labels():
    tool = _load_tool("predict")
    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:8, 3:9] = 0.9
    masks[1, 0, 10:20, 0:30] = 0.6
    det = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 8.0], [0.0, 10.0, 30.0, 20.0]]),
           "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([2, 1]), "masks": masks}
    res = tool.to_coco_results("x.jpg", 7, det, label_to_category_id=None, score_threshold=0.5, mask_threshold=0.5)
    assert len(res) == 1 and res[0]["category_id"] == 2 and res[0]["image_id"] == 7
    assert res[0]["bbox"] == [3.0, 2.0, 6.0, 6.0]
    assert mask_util.area(res[0]["segmentation"]) == 36
    res = tool.to_coco_results("x.jpg", 7, det, label_to_category_id={1: 5, 2: 9}, score_threshold=0.0,
                               mask_threshold=0.5)
    assert [r["category_id"] for r in res] == [9, 5]
    # The evaluator's encoding: a pixel at exactly the threshold is background (> 0.5).
    masks[0, 0, 2:4, 3:9] = 0.5
    res = tool.to_coco_results("x.jpg", 7, det, label_to_category_id=None, score_threshold=0.5, mask_threshold=0.5)
    assert mask_util.area(res[0]["segmentation"]) == 24
    assert res[0]["segmentation"] == encode_masks(masks[:1])[0]


def test_bad_inputs_are_named(tmp_path):
    tool = _load_tool("predict")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        tool.list_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(FileNotFoundError, match="no"):
        tool.list_images([str(tmp_path)])
