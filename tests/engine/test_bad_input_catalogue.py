"""Bad inputs outside the datasets: checkpoints of another model, prediction inputs that are not
images, more ranks than test images."""

import contextlib
import io
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO

from maskrcnn.data import ImageReadError, build_test_loader, read_image
from maskrcnn.engine.config import ConfigError
from maskrcnn.engine.inference import inference_on_dataset
from maskrcnn.engine.predict import list_images
from maskrcnn.engine.run_config import load_model_weights
from maskrcnn.evaluation import COCOEvaluator

REPO = Path(__file__).resolve().parents[2]


def test_checkpoint_of_another_architecture_names_the_keys_and_the_model_config():
    fpn_like = torch.nn.ModuleDict({"backbone": torch.nn.ModuleDict({"fpn": torch.nn.Linear(2, 2)})})
    c4_weights = {"model": {"backbone.res5.weight": torch.zeros(2, 2), "backbone.res5.bias": torch.zeros(2)}}
    with pytest.raises(
        ConfigError,
        match=r"checkpoint c4.pt does not fit the model config: missing "
        r"\['backbone.fpn.weight', 'backbone.fpn.bias'\]; unexpected "
        r"\['backbone.res5.weight', 'backbone.res5.bias'\]; the checkpoint "
        r"was made for model=mask_rcnn_r50_c4",
    ):
        load_model_weights(fpn_like, c4_weights, checkpoint="c4.pt", meta={"model_config": "mask_rcnn_r50_c4"})
    with pytest.raises(ConfigError, match=r"\(wrong model=\?\)"):  # no meta: the likely fix still named
        load_model_weights(fpn_like, c4_weights, checkpoint="c4.pt")


def test_predict_inputs_that_are_not_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(
        FileNotFoundError,
        match=f"inputs: folder {tmp_path / 'empty'} contains no "
        r"\['.bmp', '.jpeg', '.jpg', '.png'\] images",
    ):
        list_images([str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        list_images([str(tmp_path / "missing.jpg")])
    # A file given by name is read as an image: one that is not says so, naming it.
    (files,) = list_images([str(tmp_path / "empty" / "notes.txt")])
    with pytest.raises(ImageReadError, match=f"cannot decode image file \\(corrupt or not an image\\): {files}"):
        read_image(files)


class _OneImage(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return torch.zeros(3, 8, 8), {"image_id": torch.tensor(1)}


class _FixedDetector(torch.nn.Module):
    def forward(self, images):
        return [
            {
                "boxes": torch.tensor([[4.0, 4.0, 24.0, 24.0]]),
                "scores": torch.tensor([0.9]),
                "labels": torch.tensor([1]),
            }
            for _ in images
        ]


def _ground_truth():
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "height": 64, "width": 64}],
        "categories": [{"id": 5, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [4, 4, 20, 20], "area": 400.0, "iscrowd": 0}
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _evaluate():
    loader = build_test_loader(_OneImage())  # sharded by the process group: rank 1 gets no image
    evaluator = COCOEvaluator(coco_gt=_ground_truth(), label_to_category_id={1: 5})
    return len(loader), inference_on_dataset(_FixedDetector(), loader, evaluator, device=torch.device("cpu"))


def _worker(rank, store, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    try:
        batches, metrics = _evaluate()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"batches": batches, "metrics": metrics}))
    finally:
        dist.destroy_process_group()


def test_more_ranks_than_test_images_evaluates_each_image_once(tmp_path):
    context = mp.start_processes(
        _worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            raise AssertionError("the 2-process evaluation did not finish in 120 s")
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (rank0["batches"], rank1["batches"]) == (1, 0)
    _, single = _evaluate()  # one process
    assert rank0["metrics"] == single and single["bbox/AP"] == pytest.approx(1.0)
