"""Fixtures of the evaluation tests: coco-mini's ground truth and a tiny hand-made COCO ground truth."""

import contextlib
import io
from types import SimpleNamespace

import pytest
from pycocotools.coco import COCO


def coco_from_dict(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def tiny_coco_dict() -> dict:
    """Three 100 x 100 images, two categories with non-contiguous ids (3, 7).

    image 1: a cat-3 box [10, 10, 40, 40] (xywh) and a crowd cat-3 region [60, 60, 30, 30];
    image 2: a cat-7 box [20, 30, 50, 40];
    image 3: no object at all.
    """

    def ann(id, image_id, category_id, x, y, w, h, iscrowd=0):
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        return {
            "id": id,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [x, y, w, h],
            "area": float(w * h),
            "iscrowd": iscrowd,
            "segmentation": [polygon],
        }

    return {
        "images": [{"id": i, "height": 100, "width": 100, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            ann(1, 1, 3, 10, 10, 40, 40),
            ann(2, 1, 3, 60, 60, 30, 30, iscrowd=1),
            ann(3, 2, 7, 20, 30, 50, 40),
        ],
    }


@pytest.fixture
def tiny_coco_dataset():
    """A COCO-format dataset stand-in: the attributes the evaluator reads (`coco`, `label_to_category_id`)."""
    coco = coco_from_dict(tiny_coco_dict())
    return SimpleNamespace(coco=coco, label_to_category_id={1: 3, 2: 7}, class_names=["cat", "dog"])


@pytest.fixture(scope="session")
def coco_mini_json(shared_data):
    path = shared_data / "coco-mini" / "annotations" / "instances_train2017.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing from the shared data")
    return path


@pytest.fixture
def coco_mini(coco_mini_json):
    """A fresh copy per test (COCOeval's segm evaluation turns the ground truth's polygons into RLE
    in place, as it always does):

    coco-mini as the evaluator sees a COCO dataset: the ground truth (crowd included) and the
    contiguous label -> category id map (labels 1..80 in increasing category id, as our loader does)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_mini_json))
    category_ids = sorted(coco.getCatIds())
    return SimpleNamespace(
        coco=coco,
        label_to_category_id={i + 1: c for i, c in enumerate(category_ids)},
        class_names=[coco.cats[c]["name"] for c in category_ids],
    )
