"""VOCDetection on the real BCCD set and on hand-made VOCdevkit folders."""

import numpy as np
import pytest
import torch

from maskrcnn.data import VOCDetection
from maskrcnn.data.synthetic import write_palette_png

BCCD_CLASSES = ["RBC", "WBC", "Platelets"]


@pytest.fixture(scope="module")
def bccd_root(shared_data):
    return str(shared_data / "bccd" / "BCCD")


def test_bccd_splits_and_concatenation(bccd_root):
    sizes = {
        split: len(VOCDetection(sets=[(bccd_root, split)], class_names=BCCD_CLASSES, filter_empty=False))
        for split in ("train", "val", "test", "trainval")
    }
    assert sizes == {"train": 205, "val": 87, "test": 72, "trainval": 292}
    both = VOCDetection(
        sets=[{"root": bccd_root, "split": "train"}, {"root": bccd_root, "split": "val"}],
        class_names=BCCD_CLASSES,
        filter_empty=False,
    )
    assert len(both) == 292
    assert [r["image_id"] for r in both.records] == list(range(292))


def test_bccd_boxes_are_zero_based_and_degenerate_ones_dropped(bccd_root):
    ds = VOCDetection(sets=[(bccd_root, "trainval"), (bccd_root, "test")], class_names=BCCD_CLASSES)
    assert ds.stats["degenerate_box"] == 2  # BloodImage_00338 and _00343: xmin == xmax, ymin == ymax
    assert ds.stats["objects"] == 4888 - 2
    idx = next(i for i, r in enumerate(ds.records) if r["file_id"] == "BloodImage_00338")
    ann = ds.get_annotation(idx)
    _, target = ds[idx]
    assert len(ann["boxes"]) == len(target["boxes"]) + 1  # evaluation sees every object
    assert [503.0, 336.0, 504.0, 337.0] in ann["boxes"].tolist()
    first = next(i for i, r in enumerate(ds.records) if r["file_id"] == "BloodImage_00000")
    _, target = ds[first]
    # XML: WBC xmin=260 ymin=177 xmax=491 ymax=376 (1-based inclusive) -> 0-based edges
    assert target["boxes"][0].tolist() == [259.0, 176.0, 491.0, 376.0] and target["labels"][0] == 2
    assert "masks" not in target and target["orig_size"].tolist() == [480, 640]


def _voc_folder(root, objects, size=(40, 60), split="train"):
    h, w = size
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    import cv2

    cv2.imwrite(str(root / "JPEGImages" / "img1.jpg"), np.zeros((h, w, 3), np.uint8))
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, d, b in objects
    )
    (root / "Annotations" / "img1.xml").write_text(
        f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("img1\n")


def test_difficult_clipping_and_outside(tmp_path):
    _voc_folder(
        tmp_path,
        [
            ("cat", 0, (1, 1, 10, 10)),
            ("dog", 1, (5, 5, 20, 20)),
            ("cat", 0, (50, 30, 70, 45)),
            ("dog", 0, (70, 5, 80, 10)),
        ],
    )
    ds = VOCDetection(sets=[(str(tmp_path), "train")])
    assert ds.stats["difficult_ignored"] == 1 and ds.stats["box_clipped"] == 1 and ds.stats["box_outside_image"] == 1
    _, target = ds[0]
    assert target["boxes"].tolist() == [[0, 0, 10, 10], [49, 29, 60, 40]]
    assert target["labels"].tolist() == [8, 8]  # "cat" is the 8th PASCAL class
    ann = ds.get_annotation(0)
    assert ann["difficult"].tolist() == [False, True, False, False] and len(ann["boxes"]) == 4
    with_difficult = VOCDetection(sets=[(str(tmp_path), "train")], use_difficult=True)
    assert with_difficult[0][1]["labels"].tolist() == [8, 12, 8]


def test_unknown_class_and_missing_files_are_errors(tmp_path):
    _voc_folder(tmp_path, [("unicorn", 0, (1, 1, 10, 10))])
    with pytest.raises(ValueError, match=r"img1\.xml.*'unicorn'"):
        VOCDetection(sets=[(str(tmp_path), "train")])
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val\.txt"):
        VOCDetection(sets=[(str(tmp_path), "val")])
    (tmp_path / "Annotations" / "img1.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match=r"img1\.xml"):
        VOCDetection(sets=[(str(tmp_path), "train")])


def test_segmentation_pngs_with_void_border(tmp_path):
    _voc_folder(tmp_path, [("cat", 0, (3, 3, 12, 12)), ("dog", 0, (21, 6, 40, 30)), ("dog", 1, (1, 1, 2, 2))])
    (tmp_path / "SegmentationObject").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    inst = np.zeros((40, 60), np.uint8)
    cls = np.zeros((40, 60), np.uint8)
    inst[2:12, 2:12], cls[2:12, 2:12] = 1, 8
    inst[5:30, 20:40], cls[5:30, 20:40] = 2, 12
    inst[0:2, 0:2], cls[0:2, 0:2] = 3, 12
    for png in (inst, cls):  # VOC's 255 outline around each object: void, in no mask
        png[2, 2:12] = png[5, 20:40] = 255
    write_palette_png(str(tmp_path / "SegmentationObject" / "img1.png"), inst)
    write_palette_png(str(tmp_path / "SegmentationClass" / "img1.png"), cls)
    ds = VOCDetection(sets=[(str(tmp_path), "train")], with_masks=True)
    _, target = ds[0]
    assert target["masks"].shape == (2, 40, 60)
    expected = np.zeros((2, 40, 60), np.uint8)
    expected[0, 3:12, 2:12] = 1
    expected[1, 6:30, 20:40] = 1
    np.testing.assert_array_equal(target["masks"].numpy(), expected)
    assert target["boxes"].tolist() == [[2, 2, 12, 12], [20, 5, 40, 30]]


def test_with_masks_keeps_only_segmented_images(tmp_path, bccd_root):
    ds = VOCDetection(sets=[(bccd_root, "val")], class_names=BCCD_CLASSES, with_masks=True, filter_empty=False)
    assert len(ds) == 0 and ds.stats["no_segmentation"] == 87
    loose = VOCDetection(sets=[(bccd_root, "val")], class_names=BCCD_CLASSES)
    image, target = loose[0]
    assert image.shape == (3, 480, 640) and target["boxes"].dtype == torch.float32
