"""CocoDetection on the real coco-mini (crowd RLE, multi-part polygons, category gaps, grayscale)
and on small hand-made files (clean-up counts, decoding of 1-channel and CMYK JPEGs)."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.data import CocoDetection, read_image
from maskrcnn.data.transforms import ResizeShortestEdge, build_transforms


@pytest.fixture(scope="module")
def coco_mini(shared_data):
    root = shared_data / "coco-mini"
    return CocoDetection(
        image_dir=str(root / "train2017"), annotation_file=str(root / "annotations" / "instances_train2017.json")
    )


def test_crowd_excluded_from_targets_kept_for_evaluation(coco_mini):
    coco = coco_mini.coco
    crowd = [a for a in coco.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 8 and all(isinstance(a["segmentation"]["counts"], list) for a in crowd)
    assert coco_mini.stats["crowd_ignored"] == 8
    assert coco_mini.stats["objects"] == len(coco.dataset["annotations"]) - 8
    # The crowd RLE (uncompressed counts) still decodes through the evaluator's COCO object.
    assert coco.annToMask(crowd[0]).sum() > 0
    crowd_image = crowd[0]["image_id"]
    idx = next(i for i, r in enumerate(coco_mini.records) if r["image_id"] == crowd_image)
    _, target = coco_mini[idx]
    n_plain = sum(1 for a in coco.imgToAnns[crowd_image] if not a["iscrowd"])
    assert len(target["labels"]) == n_plain == len(target["masks"])


def test_category_gaps_map_to_contiguous_labels(coco_mini):
    cat_ids = sorted(coco_mini.coco.getCatIds())
    assert len(cat_ids) == 80 and cat_ids[-1] == 90  # COCO's gaps
    assert coco_mini.num_classes == 80
    assert sorted(coco_mini.label_to_category_id) == list(range(1, 81))
    assert coco_mini.category_id_to_label[90] == 80 and coco_mini.label_to_category_id[12] == 13
    for cid in cat_ids:
        assert coco_mini.label_to_category_id[coco_mini.category_id_to_label[cid]] == cid
        assert coco_mini.class_names[coco_mini.category_id_to_label[cid] - 1] == coco_mini.coco.cats[cid]["name"]
    _, target = coco_mini[0]
    record = coco_mini.records[0]
    want = [
        coco_mini.category_id_to_label[a["category_id"]]
        for a in coco_mini.coco.imgToAnns[record["image_id"]]
        if not a["iscrowd"]
    ]
    assert target["labels"].tolist() == want


def test_multipart_polygons_decode_like_pycocotools(coco_mini):
    coco = coco_mini.coco
    checked = 0
    for idx, record in enumerate(coco_mini.records):
        anns = [a for a in coco.imgToAnns[record["image_id"]] if not a["iscrowd"]]
        if not any(len(a["segmentation"]) >= 3 for a in anns):
            continue
        image, target = coco_mini[idx]
        assert image.shape[1:] == (record["height"], record["width"])
        for ann, mask, box in zip(anns, target["masks"], target["boxes"]):
            np.testing.assert_array_equal(mask.numpy(), coco.annToMask(ann))
            x, y, w, h = ann["bbox"]
            torch.testing.assert_close(box, torch.tensor([x, y, x + w, y + h]))
        checked += 1
        if checked == 2:
            break
    assert checked == 2


def test_resized_masks_match_full_resolution(coco_mini):
    """Polygons scaled before rasterizing agree with rasterize-then-resize."""
    ds = CocoDetection(
        image_dir=coco_mini.image_dir,
        annotation_file=coco_mini.annotation_file,
        transforms=ResizeShortestEdge(min_size=800, max_size=1333),
    )
    image, target = ds[3]
    _, full = coco_mini[3]
    h, w = image.shape[1:]
    for small, big in zip(target["masks"].numpy(), full["masks"].numpy()):
        ref = cv2.resize(big, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        inter, union = (small & ref).sum(), (small | ref).sum()
        assert union == 0 or inter / union > 0.8 or union < 50


def test_grayscale_image_decodes_to_three_channels(shared_data, coco_mini):
    path = shared_data / "coco-mini" / "train2017" / "000000113488.jpg"  # a black-and-white photo
    rgb = read_image(path)
    assert rgb.shape == (361, 640, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[..., 0].astype(int) - rgb[..., 2]).max() <= 3
    idx = next(i for i, r in enumerate(coco_mini.records) if r["file_name"].endswith("000000113488.jpg"))
    image, _ = coco_mini[idx]
    assert image.shape == (3, 361, 640)


def test_single_channel_and_cmyk_jpegs(tmp_path):
    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur(rng.integers(0, 255, (40, 60), dtype=np.uint8), (7, 7), 2)
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.jpg", quality=100)
    rgb = read_image(tmp_path / "gray.jpg")
    assert rgb.shape == (40, 60, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.abs(rgb[..., 0].astype(int) - gray).max() <= 3

    colour = np.zeros((32, 48, 3), np.uint8)
    colour[:, :16] = (255, 0, 0)
    colour[:, 16:32] = (0, 255, 0)
    colour[:, 32:] = (0, 0, 255)
    Image.fromarray(colour).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    rgb = read_image(tmp_path / "cmyk.jpg")
    assert rgb.shape == (32, 48, 3)
    assert np.abs(rgb[4:-4, [4, 20, 40]].astype(int) - colour[4:-4, [4, 20, 40]]).max() < 40


def _write_coco(tmp_path, annotations, size=(40, 50)):
    h, w = size
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((h, w, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "b.jpg"), np.full((h, w, 3), 128, np.uint8))
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": h, "width": w},
            {"id": 2, "file_name": "b.jpg", "height": h, "width": w},
        ],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "x"}, {"id": 7, "name": "y"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _ann(i, bbox, segm, cat=3, image_id=1):
    return {
        "id": i,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "segmentation": segm,
        "area": 1.0,
        "iscrowd": 0,
    }


def test_clean_up_is_counted(tmp_path):
    square = [[10, 10, 20, 10, 20, 20, 10, 20]]
    path = _write_coco(
        tmp_path,
        [
            _ann(1, [10, 10, 10, 10], square),  # fine
            _ann(2, [10, 10, 10, 10], [[10, 10, 20, 10], square[0]]),  # one part with 2 points: part dropped
            _ann(3, [10, 10, 10, 10], [[10, 10, 20, 10]]),  # no usable part: object dropped
            _ann(4, [45, 30, 20, 20], square, cat=7),  # crosses the border: clipped
            _ann(5, [60, 10, 5, 5], square),  # outside the image: dropped
            _ann(6, [10, 10, 0, 5], square),  # zero width: dropped
            _ann(7, [10, 10, 4, 4], square, image_id=2),  # image 2: one plain object
        ],
    )
    ds = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))
    s = ds.stats
    assert (
        s["polygon_part_dropped"],
        s["no_valid_segmentation"],
        s["box_clipped"],
        s["box_outside_image"],
        s["degenerate_box"],
    ) == (2, 1, 1, 1, 1)
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 1, 2]
    torch.testing.assert_close(target["boxes"][2], torch.tensor([45.0, 30.0, 50.0, 40.0]))
    assert target["masks"].shape == (3, 40, 50) and target["masks"][1].sum() == 100


def test_filter_empty(tmp_path):
    path = _write_coco(tmp_path, [_ann(1, [10, 10, 10, 10], [[10, 10, 20, 10, 20, 20, 10, 20]])])
    train = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path), filter_empty=True)
    full = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path), filter_empty=False)
    assert len(train) == 1 and train.stats["empty_image_filtered"] == 1 and len(full) == 2
    _, target = full[1]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 40, 50)


def test_unknown_category_and_size_mismatch_are_errors(tmp_path):
    path = _write_coco(tmp_path, [_ann(1, [1, 1, 5, 5], [[1, 1, 6, 1, 6, 6]], cat=99)])
    with pytest.raises(ValueError, match=r"ann.json.*category_id 99"):
        CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))
    path = _write_coco(tmp_path, [_ann(1, [1, 1, 5, 5], [[1, 1, 6, 1, 6, 6]])], size=(40, 50))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((30, 50, 3), np.uint8))
    ds = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))
    with pytest.raises(ValueError, match=r"a\.jpg.*50x30.*50x40"):
        ds[0]


def test_hydra_built_transforms(coco_mini):
    ds = CocoDetection(
        image_dir=coco_mini.image_dir,
        annotation_file=coco_mini.annotation_file,
        transforms=build_transforms(min_size=[320, 352], max_size=400, flip_prob=0.5),
    )
    image, target = ds.get(0, rng=np.random.default_rng(0))
    assert min(image.shape[1:]) in (320, 352) or max(image.shape[1:]) == 400
    assert target["masks"].shape[1:] == image.shape[1:]
