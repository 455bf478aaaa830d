"""Distributed evaluation: 2 CPU processes (gloo) gather their predictions; each image counted once."""

import contextlib
import io
import json
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO

from maskrcnn.evaluation import COCOEvaluator, VOCEvaluator

WORLD_SIZE = 2
# image id -> which ranks process it (image 1 on both: a padded sampler repeats it)
SHARDS = {0: [1, 3], 1: [2, 1]}


def ground_truth():
    def ann(id, image_id, category_id, box, iscrowd=0):
        x, y, w, h = box
        return {
            "id": id,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": box,
            "area": float(w * h),
            "iscrowd": iscrowd,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        }

    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": 64, "width": 64} for i in (1, 2, 3)],
        "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [
            ann(1, 1, 5, [4, 4, 20, 20]),
            ann(2, 1, 9, [30, 30, 20, 20]),
            ann(3, 2, 5, [10, 10, 30, 30]),
            ann(4, 3, 9, [0, 0, 10, 10]),
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    voc = [
        {
            "image_id": image_id,
            "boxes": torch.tensor(
                [[x, y, x + w, y + h] for a in coco.imgToAnns[image_id] for x, y, w, h in [a["bbox"]]]
            ),
            "labels": torch.tensor([{5: 1, 9: 2}[a["category_id"]] for a in coco.imgToAnns[image_id]]),
            "difficult": torch.zeros(len(coco.imgToAnns[image_id]), dtype=torch.bool),
        }
        for image_id in (1, 2, 3)
    ]
    return coco, voc


def outputs():
    """Model outputs per image: hits, a near miss and false positives, so that a lost or doubled
    image changes the numbers."""

    def out(boxes, scores, labels):
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels),
        }

    return {
        1: out([[4, 4, 24, 24], [31, 29, 50, 52], [40, 0, 60, 20]], [0.9, 0.6, 0.7], [1, 2, 1]),
        2: out([[12, 10, 40, 42], [0, 40, 20, 60]], [0.8, 0.95], [1, 2]),
        3: out([[1, 0, 11, 10], [30, 30, 60, 60]], [0.3, 0.85], [2, 1]),
    }


def evaluate(image_ids, predictions=None):
    coco, voc = ground_truth()
    predictions = predictions or outputs()
    coco_evaluator = COCOEvaluator(coco_gt=coco, label_to_category_id={1: 5, 2: 9})
    voc_evaluator = VOCEvaluator(annotations=voc, class_names=["a", "b"])
    for image_id in image_ids:
        for evaluator in (coco_evaluator, voc_evaluator):
            evaluator.process([{"image_id": torch.tensor(image_id)}], [predictions[image_id]])
    return {**coco_evaluator.evaluate(), **voc_evaluator.evaluate()}


def worker(rank, store, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )
    try:
        metrics = evaluate(SHARDS[rank])
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(metrics, f)
    finally:
        dist.destroy_process_group()


def test_two_process_gather_counts_each_image_once(tmp_path):
    context = mp.start_processes(
        worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            raise AssertionError("the 2-process evaluation did not finish in 180 s")
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())

    expected = evaluate([1, 2, 3])  # one process, each image once
    assert rank1 == {}
    assert rank0 == expected
    # the shard of rank 0 alone, or image 1's detections counted twice, score differently
    assert evaluate(SHARDS[0]) != expected
    doubled = outputs()
    doubled[1] = {key: torch.cat([value, value]) for key, value in doubled[1].items()}
    assert evaluate([1, 2, 3], doubled) != expected
    assert 0.0 < expected["bbox/AP"] < 1.0 and 0.0 < expected["voc/mAP50"] < 1.0
