"""VOC segmentation PNGs: XML objects paired with their instances (gaps in the instance values,
mismatches warned), and masks-only folders (labelme-style exports without XML or split files)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskrcnn.data import VOCDetection
from maskrcnn.data.synthetic import write_palette_png

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["cat", "dog", "bird"]
H, W = 48, 64

# (class, value, (x1, y1, x2, y2) 0-based pixel edges): six instances whose values have a gap
# (1, 2, 3, 4, 5, 7), as in VOC2011's 2011_000006. The sixth XML object is the instance of value 7.
GAP_OBJECTS = [
    ("cat", 1, (2, 2, 12, 14)),
    ("dog", 2, (14, 2, 30, 12)),
    ("cat", 3, (34, 2, 44, 20)),
    ("bird", 4, (2, 24, 20, 44)),
    ("dog", 5, (24, 26, 40, 46)),
    ("bird", 7, (44, 24, 62, 40)),
]


def write_pngs(
    root,
    file_id,
    objects,
    *,
    obj_dir="SegmentationObject",
    cls_dir="SegmentationClass",
    class_value=lambda name: CLASSES.index(name) + 1,
):
    """Instance and class PNGs with each object a filled rectangle, VOC's 255 border on its top row."""
    inst = np.zeros((H, W), np.uint8)
    cls = np.zeros((H, W), np.uint8)
    for name, value, (x1, y1, x2, y2) in objects:
        inst[y1:y2, x1:x2] = value
        cls[y1:y2, x1:x2] = class_value(name)
        inst[y1, x1:x2] = cls[y1, x1:x2] = 255
    for sub, png in ((obj_dir, inst), (cls_dir, cls)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        write_palette_png(str(root / sub / f"{file_id}.png"), png)
    return inst


def write_xml_folder(root, file_id, objects, split="train"):
    """Annotations (1-based inclusive XML boxes), a black JPEG and the split file."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "JPEGImages" / f"{file_id}.jpg"), np.zeros((H, W, 3), np.uint8))
    xml = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
        f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, _, (x1, y1, x2, y2) in objects
    )
    (root / "Annotations" / f"{file_id}.xml").write_text(
        f"<annotation><size><width>{W}</width><height>{H}</height><depth>3</depth></size>{xml}</annotation>"
    )
    with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as f:
        f.write(f"{file_id}\n")


def expected_masks(inst, values):
    return np.stack([(inst == v).astype(np.uint8) for v in values])


def test_instance_value_gap_loads_every_instance(tmp_path, caplog):
    write_xml_folder(tmp_path, "2011_000006", GAP_OBJECTS)
    inst = write_pngs(tmp_path, "2011_000006", GAP_OBJECTS)
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.voc"):
        ds = VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES, with_masks=True)
    assert not caplog.records
    assert ds.stats["objects"] == 6 and ds.stats["empty_mask"] == 0
    _, target = ds[0]
    assert target["labels"].tolist() == [CLASSES.index(n) + 1 for n, _, _ in GAP_OBJECTS]
    np.testing.assert_array_equal(target["masks"].numpy(), expected_masks(inst, [1, 2, 3, 4, 5, 7]))
    assert target["boxes"].tolist() == [list(b) for _, _, b in GAP_OBJECTS]


def test_instance_gap_with_the_xml_in_another_order(tmp_path):
    # An export numbering its instances in its own order: pairs by overlap, not by position.
    shuffled = [GAP_OBJECTS[i] for i in (5, 3, 0, 4, 1, 2)]
    write_xml_folder(tmp_path, "img", shuffled)
    inst = write_pngs(tmp_path, "img", GAP_OBJECTS)
    ds = VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES, with_masks=True)
    _, target = ds[0]
    np.testing.assert_array_equal(target["masks"].numpy(), expected_masks(inst, [v for _, v, _ in shuffled]))


def test_unmatched_objects_and_instances_are_warned_with_file_and_reason(tmp_path, caplog):
    # XML: the six objects, plus a dog where the PNG has nothing; PNG: an extra cat (value 9) with no XML object.
    xml_objects = GAP_OBJECTS + [("dog", 0, (50, 2, 62, 12))]
    write_xml_folder(tmp_path, "img", xml_objects)
    inst = write_pngs(tmp_path, "img", GAP_OBJECTS + [("cat", 9, (20, 14, 30, 22))])
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.voc"):
        ds = VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES, with_masks=True)
    assert ds.stats["mask_unmatched"] == 1 and ds.stats["instance_without_object"] == 1
    assert len(caplog.records) == 1  # one line per file
    line = caplog.records[0].getMessage()
    assert os.path.join("SegmentationObject", "img.png") in line
    assert "object 7 (dog): no instance of its class covers its box" in line
    assert "instance value 9 (cat): no XML object" in line
    _, target = ds[0]
    np.testing.assert_array_equal(target["masks"].numpy(), expected_masks(inst, [1, 2, 3, 4, 5, 7]))
    assert len(ds.get_annotation(0)["boxes"]) == 7  # evaluation still sees every XML object


def test_voc_convention_class_mismatch_is_warned(tmp_path, caplog):
    objects = GAP_OBJECTS[:3]  # values 1, 2, 3: VOC2012's k-th object = value k
    write_xml_folder(tmp_path, "img", [("bird", 1, objects[0][2])] + objects[1:])
    write_pngs(tmp_path, "img", objects)
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.voc"):
        ds = VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES, with_masks=True)
    assert ds.stats["mask_class_mismatch"] == 1 and ds.stats["objects"] == 2
    assert "object 1 (bird): its instance (value 1) is cat in SegmentationClass" in caplog.text


def test_check_dataset_cli_counts_every_instance_of_a_gap(tmp_path):
    write_xml_folder(tmp_path, "2011_000006", GAP_OBJECTS)
    write_pngs(tmp_path, "2011_000006", GAP_OBJECTS)
    res = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "check_dataset.py"),
            "dataset=synthetic_voc",
            f"dataset.root={tmp_path}",
            f"dataset.class_names=[{','.join(CLASSES)}]",
            "split=train",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = {
        line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in res.stdout.splitlines() if ":" in line
    }
    assert lines["objects"] == "6"
    assert lines["empty_mask"] == lines["mask_unmatched"] == lines["instance_without_object"] == "0"


# --- masks-only folders ----------------------------------------------------------------------------


def masks_only_folder(root, *, obj_dir="SegmentationObject", cls_dir="SegmentationClass"):
    """labelme-style export: JPEGImages/, the two PNG folders, class_names.txt; no XML, no ImageSets/.

    Class values follow class_names.txt (1 = dog, 2 = cat, 3 = bird), not the config's order.
    """
    file_names = ["_background_", "dog", "cat", "bird"]
    (root / "JPEGImages").mkdir(parents=True)
    (root / "class_names.txt").write_text("\n".join(file_names) + "\n")
    a = [("cat", 1, (2, 2, 12, 14)), ("bird", 3, (30, 20, 60, 44))]
    b = [("dog", 2, (10, 4, 40, 30))]
    value = file_names.index
    inst_a = write_pngs(root, "a", a, obj_dir=obj_dir, cls_dir=cls_dir, class_value=value)
    inst_b = write_pngs(root, "b", b, obj_dir=obj_dir, cls_dir=cls_dir, class_value=value)
    for name in ("a", "b", "c"):  # c has no PNGs: no annotation
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), np.zeros((H, W, 3), np.uint8))
    return {"a": (a, inst_a), "b": (b, inst_b)}


@pytest.mark.parametrize(
    "dirs", [("SegmentationObject", "SegmentationClass"), ("SegmentationObjectPNG", "SegmentationClassPNG")]
)  # labelme's PNG folders
def test_masks_only_folder_boxes_from_masks_classes_by_name(tmp_path, dirs):
    truth = masks_only_folder(tmp_path, obj_dir=dirs[0], cls_dir=dirs[1])
    ds = VOCDetection(sets=[(str(tmp_path), "any")], class_names=CLASSES, with_masks=True)
    assert [r["file_id"] for r in ds.records] == ["a", "b"] and ds.stats["no_segmentation"] == 1
    for i, (objects, inst) in enumerate(truth[r["file_id"]] for r in ds.records):
        _, target = ds[i]
        assert target["labels"].tolist() == [CLASSES.index(n) + 1 for n, _, _ in objects]
        # boxes are the extent of the instance's pixels: its 255 top row is void
        assert target["boxes"].tolist() == [[x1, y1 + 1, x2, y2] for _, _, (x1, y1, x2, y2) in objects]
        np.testing.assert_array_equal(target["masks"].numpy(), expected_masks(inst, [v for _, v, _ in objects]))
    ann = ds.get_annotation(0)
    assert ann["labels"].tolist() == [1, 3] and not ann["difficult"].any()
    boxes_only = VOCDetection(sets=[(str(tmp_path), "any")], class_names=CLASSES)
    assert "masks" not in boxes_only[1][1] and boxes_only[1][1]["labels"].tolist() == [2]


def test_masks_only_class_names_from_the_file_and_majority_class(tmp_path, caplog):
    masks_only_folder(tmp_path)
    # Image d: one instance mostly dog with some cat pixels (dog wins), one with only void/background class.
    inst = np.zeros((H, W), np.uint8)
    cls = np.zeros((H, W), np.uint8)
    inst[4:20, 4:20], cls[4:20, 4:20] = 1, 1
    cls[4:8, 4:20] = 2
    inst[30:40, 30:40], cls[30:40, 30:40] = 2, 255
    write_palette_png(str(tmp_path / "SegmentationObject" / "d.png"), inst)
    write_palette_png(str(tmp_path / "SegmentationClass" / "d.png"), cls)
    cv2.imwrite(str(tmp_path / "JPEGImages" / "d.jpg"), np.zeros((H, W, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.voc"):
        ds = VOCDetection(sets=[(str(tmp_path), "train")], class_names=None)
    assert ds.class_names == ["dog", "cat", "bird"]
    d = next(i for i, r in enumerate(ds.records) if r["file_id"] == "d")
    assert ds[d][1]["labels"].tolist() == [1] and ds[d][1]["boxes"].tolist() == [[4, 4, 20, 20]]
    assert ds.stats["instance_without_class"] == 1
    assert "d.png: left out 1 instance(s): instance value 2: no class pixels" in caplog.text


def test_masks_only_errors_say_what_is_needed(tmp_path):
    masks_only_folder(tmp_path)
    with pytest.raises(ValueError, match=r"class_names.txt: classes \['dog', 'bird'\] are not in class_names"):
        VOCDetection(sets=[(str(tmp_path), "train")], class_names=["cat", "horse"])
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/train\.txt.*without ImageSets/ uses every image"):
        VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("b\n")
    assert [r["file_id"] for r in VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES).records] == ["b"]
    empty = tmp_path / "empty"
    (empty / "JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="needs JPEGImages/ and either Annotations/.*SegmentationObject/"):
        VOCDetection(sets=[(str(empty), "train")], class_names=CLASSES)
    with pytest.raises(ValueError, match="class_names is null but .* has no class_names.txt"):
        VOCDetection(sets=[(str(empty), "train")], class_names=None)


def test_split_files_from_main_or_segmentation_and_every_image_without_imagesets(tmp_path):
    for name in ("a", "b"):
        write_xml_folder(tmp_path, name, GAP_OBJECTS[:1])
    (tmp_path / "ImageSets" / "Main" / "train.txt").unlink()
    (tmp_path / "ImageSets" / "Segmentation").mkdir()
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("b\n")
    assert [r["file_id"] for r in VOCDetection(sets=[(str(tmp_path), "train")], class_names=CLASSES).records] == ["b"]
    for sub in ("Main", "Segmentation"):
        (tmp_path / "ImageSets" / sub / "train.txt").unlink(missing_ok=True)
        (tmp_path / "ImageSets" / sub).rmdir()
    (tmp_path / "ImageSets").rmdir()
    ds = VOCDetection(sets=[(str(tmp_path), "whatever")], class_names=CLASSES)
    assert [r["file_id"] for r in ds.records] == ["a", "b"]
