"""tools/predict.py: COCO-format results (RLE masks, XYWH boxes, category ids) and drawings."""

from __future__ import annotations

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

from maskrcnn.engine import predict as predict_run
from maskrcnn.evaluation.coco_evaluation import encode_masks

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "model.transform.min_size_test=96",
    "model.transform.max_size_test=160",
    "model.rpn.post_nms_topk_test=50",
    "roi_layer=torchvision",
]


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
    cmd = [
        sys.executable,
        str(REPO / "tools" / "predict.py"),
        *SMALL,
        f"checkpoint={ckpt}",
        f"inputs=[{images}]",
        f"output={out}",
        "visualize=true",
        "vis_score_threshold=0.0",
        f"hydra.run.dir={tmp / 'hydra'}",
    ]
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
    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:8, 3:9] = 0.9
    masks[1, 0, 10:20, 0:30] = 0.6
    det = {
        "boxes": torch.tensor([[3.0, 2.0, 9.0, 8.0], [0.0, 10.0, 30.0, 20.0]]),
        "scores": torch.tensor([0.9, 0.3]),
        "labels": torch.tensor([2, 1]),
        "masks": masks,
    }
    res = predict_run.to_coco_results(
        "x.jpg", 7, det, label_to_category_id=None, score_threshold=0.5, mask_threshold=0.5
    )
    assert len(res) == 1 and res[0]["category_id"] == 2 and res[0]["image_id"] == 7
    assert res[0]["bbox"] == [3.0, 2.0, 6.0, 6.0]
    assert mask_util.area(res[0]["segmentation"]) == 36
    res = predict_run.to_coco_results(
        "x.jpg", 7, det, label_to_category_id={1: 5, 2: 9}, score_threshold=0.0, mask_threshold=0.5
    )
    assert [r["category_id"] for r in res] == [9, 5]
    # The evaluator's encoding: a pixel at exactly the threshold is background (> 0.5).
    masks[0, 0, 2:4, 3:9] = 0.5
    res = predict_run.to_coco_results(
        "x.jpg", 7, det, label_to_category_id=None, score_threshold=0.5, mask_threshold=0.5
    )
    assert mask_util.area(res[0]["segmentation"]) == 24
    assert res[0]["segmentation"] == encode_masks(masks[:1])[0]


def test_results_file_scores_as_the_in_process_evaluation(tmp_path):
    """The same detections scored twice: by COCOEvaluator in process and, written by predict's
    conversion, by tools/eval.py results= (score_coco_results); masks with pixels at exactly 0.5."""
    from pycocotools.coco import COCO

    from maskrcnn.evaluation import COCOEvaluator, score_coco_results

    h, w = 24, 32
    gt_masks = np.zeros((2, h, w), np.uint8)
    gt_masks[0, 2:12, 3:15] = 1
    gt_masks[1, 14:22, 10:30] = 1
    annotations = []
    for i, (m, cat) in enumerate(zip(gt_masks, (3, 7)), start=1):
        rle = mask_util.encode(np.asfortranarray(m))
        annotations.append(
            {
                "id": i,
                "image_id": 1,
                "category_id": cat,
                "iscrowd": 0,
                "area": float(mask_util.area(rle)),
                "bbox": mask_util.toBbox(rle).tolist(),
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            }
        )
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
                "annotations": annotations,
                "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
            }
        )
    )
    masks = torch.from_numpy(gt_masks[:, None].astype(np.float32)) * 0.9
    masks[0, 0, 2:12, 3:6] = 0.5  # at the threshold: background in both encodings
    masks[1, 0, 13, 10:30] = 0.51  # just above: foreground
    det = {
        "boxes": torch.tensor([[3.0, 2.0, 15.0, 12.0], [10.0, 13.0, 30.0, 22.0]]),
        "scores": torch.tensor([0.9, 0.7]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
    }
    mapping = {1: 3, 2: 7}
    evaluator = COCOEvaluator(coco_gt=COCO(str(gt_file)), label_to_category_id=mapping)
    evaluator.process([{"image_id": 1}], [det])
    in_process = evaluator.evaluate()
    results = predict_run.to_coco_results(
        "a.png", 1, det, label_to_category_id=mapping, score_threshold=0.0, mask_threshold=0.5
    )
    (tmp_path / "results.json").write_text(json.dumps(results))
    from_file = score_coco_results(gt_file, tmp_path / "results.json")
    assert 0 < in_process["segm/AP"] < 1  # the 0.5 column lowers the first mask's IoU
    assert {k: from_file[k] for k in in_process} == in_process
    decoded = mask_util.decode(results[0]["segmentation"])
    assert decoded[2:12, 3:6].sum() == 0 and decoded[2:12, 6:15].all()
    assert mask_util.decode(results[1]["segmentation"])[13, 10:30].all()


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predict_run.list_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(FileNotFoundError, match="no"):
        predict_run.list_images([str(tmp_path)])
