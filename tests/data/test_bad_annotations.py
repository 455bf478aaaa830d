"""Bad dataset inputs: each stops with a message naming the file and the fix, or is cleaned up
with one warning naming the annotation file, the reasons and the fix."""

import json
import logging

import cv2
import numpy as np
import pytest

from maskrcnn.data import CocoDetection, VOCDetection


def _coco(tmp_path, annotations, **extra):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((40, 50, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 40}],
        "categories": [{"id": 3, "name": "cell"}],
        "annotations": annotations,
        **extra,
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _ann(i, bbox, segm=((1, 1, 6, 1, 6, 6),), cat=3):
    return {
        "id": i,
        "image_id": 1,
        "category_id": cat,
        "bbox": list(bbox),
        "segmentation": [list(p) for p in segm],
        "area": 1.0,
        "iscrowd": 0,
    }


def test_dataset_paths_that_do_not_exist_say_how_to_point_to_or_make_the_data(tmp_path):
    fix = r"point the dataset config \(or paths.data_root\) at your copy.*python tools/make_synthetic.py"
    with pytest.raises(FileNotFoundError, match=f"COCO annotation file not found: {tmp_path}/no.json .*{fix}"):
        CocoDetection(image_dir=str(tmp_path), annotation_file=str(tmp_path / "no.json"))
    path = _coco(tmp_path, [])
    with pytest.raises(FileNotFoundError, match=f"COCO image folder not found: {tmp_path}/imgs .*{fix}"):
        CocoDetection(image_dir=str(tmp_path / "imgs"), annotation_file=str(path))
    with pytest.raises(
        FileNotFoundError,
        match=f"{tmp_path}/VOC2007 is not a VOC-layout folder.*does not exist: point the dataset config's root",
    ):
        VOCDetection(sets=[(str(tmp_path / "VOC2007"), "train")])


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "{not json",
            r"cannot read COCO annotation file .*bad.json: Expecting property name.*must be a COCO instances",
        ),
        ("[1, 2]", r"cannot read COCO annotation file .*bad.json: .*not supported.*must be a COCO instances JSON"),
        (
            '{"info": {}}',
            r"bad.json is not a COCO instances JSON: no list \['images', 'categories'\] \(found keys "
            r"\['info'\]\); it needs 'images', 'annotations' and 'categories'",
        ),
        ('{"images": [], "categories": [], "annotations": {}}', r"no list \['annotations'\]"),
        (
            '{"images": [{"id": 1}], "categories": [{"id": 1, "name": "x"}], "annotations": []}',
            r"bad.json: image entry 1 has no \['file_name', 'height', 'width'\] \(a COCO image entry needs",
        ),
    ],
)
def test_annotation_file_that_is_not_coco_json(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        CocoDetection(image_dir=str(tmp_path), annotation_file=str(tmp_path / "bad.json"))


def test_category_id_not_in_categories_names_the_annotation_and_the_fix(tmp_path):
    path = _coco(tmp_path, [_ann(7, (1, 1, 5, 5), cat=99)])
    with pytest.raises(
        ValueError,
        match=r"ann.json: annotation 7 has category_id 99 which is not in 'categories' "
        r"\(ids \[3\]\): add the category or fix the annotation",
    ):
        CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))


def test_bad_boxes_are_dropped_or_clipped_with_one_warning(tmp_path, caplog):
    nan = float("nan")
    path = _coco(
        tmp_path,
        [
            _ann(1, (nan, 1, 5, 5)),
            _ann(2, (10, 10, -5, 5)),
            _ann(3, (60, 10, 5, 5)),
            _ann(4, (45, 30, 20, 20)),
            _ann(5, (1, 1, 5, 5)),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.base"):
        ds = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))
    _, target = ds[0]
    assert target["boxes"].tolist() == [[45, 30, 50, 40], [1, 1, 6, 6]]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{path}: the annotation clean-up changed ")
    for text in (
        "1 boxes with a NaN/inf coordinate dropped",
        "1 boxes of zero or negative size dropped",
        "1 boxes outside the image dropped",
        "1 boxes crossing the image border clipped",
        "fix those annotations",
        "tools/check_dataset.py",
    ):
        assert text in line, text


def test_polygons_of_fewer_than_3_points_or_nan_coordinates_are_dropped(tmp_path, caplog):
    square = (10, 10, 20, 10, 20, 20, 10, 20)
    path = _coco(
        tmp_path,
        [
            _ann(1, (10, 10, 10, 10), segm=[(10, 10, 20, 10), square]),  # a 2-point part
            _ann(2, (1, 1, 5, 5), segm=[(1, 1, 6, 1)]),  # nothing usable
            _ann(3, (1, 1, 5, 5), segm=[(1, 1, 6, float("nan"), 6, 6)]),
        ],
    )  # NaN coordinate
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.base"):
        ds = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))
    # Checked on the records: rasterizing a NaN polygon would exhaust the memory.
    assert ds.records[0]["segms"] == [[list(square)]]
    assert ds.stats["polygon_part_dropped"] == 3 and ds.stats["no_valid_segmentation"] == 2
    assert "3 polygon parts with fewer than 3 points (or bad coordinates) dropped" in caplog.text
    assert "2 objects without a usable segmentation dropped" in caplog.text


def test_dataset_without_images_says_so(tmp_path):
    path = _coco(tmp_path, [])
    ds = CocoDetection(image_dir=str(tmp_path), annotation_file=str(path))  # filter_empty: nothing left
    with pytest.raises(IndexError, match="CocoDetection has no images"):
        ds[0]
