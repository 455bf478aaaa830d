"""Missing and corrupt files: errors that name the file, or counted skips."""

import shutil

import cv2
import numpy as np
import pytest

from maskrcnn.data import CocoDetection, ImageReadError, VOCDetection, read_image
from maskrcnn.data.io import read_label_png


@pytest.fixture()
def broken_coco(synthetic_coco, tmp_path):
    root, _ = synthetic_coco
    images = tmp_path / "train"
    shutil.copytree(root / "train", images)
    names = sorted(p.name for p in images.iterdir())
    (images / names[0]).unlink()  # missing
    (images / names[1]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # corrupt
    (images / names[2]).write_bytes(b"")  # empty
    return images, root / "annotations" / "instances_train.json", names


def test_missing_and_corrupt_images_raise_naming_the_file(broken_coco):
    images, ann, names = broken_coco
    ds = CocoDetection(image_dir=str(images), annotation_file=str(ann))
    with pytest.raises(ImageReadError, match=f"not found: .*{names[0]}"):
        ds[0]
    with pytest.raises(ImageReadError, match=f"cannot decode .*{names[1]}.*set dataset.train.skip_corrupt=true"):
        ds[1]
    with pytest.raises(ImageReadError, match=f"empty: .*{names[2]}"):
        ds[2]
    image, _ = ds[3]
    assert image.shape[0] == 3


def test_skip_corrupt_skips_and_counts(broken_coco):
    images, ann, names = broken_coco
    ds = CocoDetection(image_dir=str(images), annotation_file=str(ann), skip_corrupt=True)
    _, target = ds[0]  # the three bad files are skipped: we get image 4
    assert target["image_id"] == ds.records[3]["image_id"]
    assert ds.stats["skipped_corrupt_image"] == 3


def test_missing_annotation_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoDetection(image_dir=str(tmp_path), annotation_file=str(tmp_path / "nothere.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        CocoDetection(image_dir=str(tmp_path), annotation_file=str(tmp_path / "bad.json"))
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("img7\n")
    with pytest.raises(FileNotFoundError, match=r"needs JPEGImages/ and either Annotations/"):
        VOCDetection(sets=[(str(tmp_path), "train")])
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match=r"Annotations/img7\.xml"):
        VOCDetection(sets=[(str(tmp_path), "train")])


def test_label_png_errors(tmp_path):
    with pytest.raises(ImageReadError, match="seg.png"):
        read_label_png(tmp_path / "seg.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageReadError, match=r"rgb\.png.*mode 'RGB'"):
        read_label_png(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(ImageReadError, match="junk.png"):
        read_label_png(tmp_path / "junk.png")


def test_read_image_truncated_jpeg_is_named(tmp_path):
    ok, data = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "cut.jpg").write_bytes(data.tobytes()[:20])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
