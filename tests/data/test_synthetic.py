"""The synthetic dataset: files read back through the loaders equal the generated ground truth."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from maskrcnn.data import CocoDetection, VOCDetection
from maskrcnn.data.synthetic import CLASS_NAMES, generate_split, uncompressed_rle


def _coco(root, split):
    return CocoDetection(
        image_dir=str(root / split),
        annotation_file=str(root / "annotations" / f"instances_{split}.json"),
        filter_empty=False,
    )


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_round_trip(synthetic_coco, split):
    root, truth = synthetic_coco
    ds = _coco(root, split)
    assert len(ds) == len(truth[split])
    assert ds.class_names == CLASS_NAMES
    for i, sample in enumerate(truth[split]):
        image, target = ds[i]
        assert image.shape == (3, *sample.image.shape[:2]) and image.dtype == torch.uint8
        np.testing.assert_array_equal(target["masks"].numpy(), sample.masks)
        np.testing.assert_array_equal(target["boxes"].numpy(), sample.boxes)
        np.testing.assert_array_equal(target["labels"].numpy(), sample.labels)
        # JPEG (quality 95) removes much of the pixel noise but changes pixels little; masks stay exact.
        assert np.abs(image.permute(1, 2, 0).numpy().astype(np.float64) - sample.image).mean() < 8


def test_coco_file_uses_polygons_and_both_rle_kinds(synthetic_coco):
    root, truth = synthetic_coco
    anns = json.loads((root / "annotations" / "instances_train.json").read_text())["annotations"]
    kinds = {
        "polygon" if isinstance(a["segmentation"], list) else "rle_" + type(a["segmentation"]["counts"]).__name__
        for a in anns
    }
    assert kinds == {"polygon", "rle_str", "rle_list"}
    assert all(a["iscrowd"] == 0 for a in anns)
    assert sum(len(s.labels) for s in truth["train"]) == len(anns)


@pytest.mark.parametrize("split", ["train", "val"])
def test_voc_round_trip(synthetic_voc, split):
    root, truth = synthetic_voc
    ds = VOCDetection(
        sets=[{"root": str(root), "split": split}], class_names=CLASS_NAMES, with_masks=True, filter_empty=False
    )
    assert len(ds) == len(truth[split])
    for i, sample in enumerate(truth[split]):
        _, target = ds[i]
        np.testing.assert_array_equal(target["masks"].numpy(), sample.masks)
        np.testing.assert_array_equal(target["boxes"].numpy(), sample.boxes)
        np.testing.assert_array_equal(target["labels"].numpy(), sample.labels)
        ann = ds.get_annotation(i)
        np.testing.assert_array_equal(ann["boxes"], sample.boxes)
        assert not ann["difficult"].any()


def test_voc_layout_and_trainval(synthetic_voc):
    root, truth = synthetic_voc
    main = root / "ImageSets" / "Main"
    train = main.joinpath("train.txt").read_text().split()
    val = main.joinpath("val.txt").read_text().split()
    assert main.joinpath("trainval.txt").read_text().split() == train + val
    assert train == [s.name for s in truth["train"]]
    for sub, ext in (
        ("JPEGImages", "jpg"),
        ("Annotations", "xml"),
        ("SegmentationObject", "png"),
        ("SegmentationClass", "png"),
    ):
        assert all((root / sub / f"{n}.{ext}").is_file() for n in train + val), sub


def test_generator_reproducible_and_varied():
    a = generate_split(split="train", num_images=6, seed=3)
    b = generate_split(split="train", num_images=6, seed=3)
    c = generate_split(split="train", num_images=6, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.masks, y.masks)
    assert any(x.image.shape != y.image.shape or not np.array_equal(x.image, y.image) for x, y in zip(a, c))
    # a split's images do not depend on its length; train and val differ
    assert np.array_equal(generate_split(split="train", num_images=2, seed=3)[1].image, a[1].image)
    assert not np.array_equal(generate_split(split="val", num_images=1, seed=3)[0].image, a[0].image)


def test_generator_statistics():
    """Several classes, all three COCO size buckets, occlusion, and masks that never overlap."""
    samples = generate_split(split="train", num_images=40, seed=0)
    areas = np.array([m.sum() for s in samples for m in s.masks])
    labels = np.concatenate([s.labels for s in samples])
    assert set(labels.tolist()) == {1, 2, 3}
    assert (areas < 32**2).mean() > 0.1 and (areas >= 96**2).mean() > 0.05
    assert ((areas >= 32**2) & (areas < 96**2)).mean() > 0.3
    assert np.median(areas) > 1000  # not too tiny on average
    assert sum(p is None for s in samples for p in s.polygons) > 10  # occluded objects
    shapes = {s.image.shape[:2] for s in samples}
    assert len(shapes) == 3  # square, landscape, portrait
    for s in samples:
        assert s.masks.sum(axis=0).max() <= 1  # visible masks are disjoint (occlusion is exact)
        for m, box in zip(s.masks, s.boxes):
            ys, xs = np.nonzero(m)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_uncompressed_rle_matches_pycocotools():
    rng = np.random.default_rng(0)
    for first in (0, 1):
        m = (rng.random((7, 9)) > 0.5).astype(np.uint8)
        m[0, 0] = first
        rle = uncompressed_rle(m)
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))
        np.testing.assert_array_equal(decoded, m)


def test_max_objects_and_min_visible_bound_the_scenes():
    # min_visible=1.0 forbids any occlusion: every object is fully visible, so it keeps its polygon.
    samples = generate_split(split="train", num_images=12, seed=5, max_objects=2, min_visible=1.0)
    assert all(1 <= len(s.labels) <= 2 for s in samples)
    assert all(p is not None for s in samples for p in s.polygons)
    # The default allows occlusion: some object somewhere loses part of its shape.
    crowded = generate_split(split="train", num_images=12, seed=5)
    assert any(p is None for s in crowded for p in s.polygons)


def test_make_synthetic_rejects_bad_scene_knobs(tmp_path):
    from maskrcnn.data.synthetic import make_synthetic

    with pytest.raises(ValueError, match="max_objects"):
        make_synthetic(out=str(tmp_path), format="coco", num_images=1, max_objects=0)
    with pytest.raises(ValueError, match="min_visible"):
        make_synthetic(out=str(tmp_path), format="coco", num_images=1, min_visible=0.0)


def test_simple_scenes_are_upright_uncluttered_and_medium_or_larger():
    samples = generate_split(split="train", num_images=30, seed=2, scene="simple")
    fills = {1: [], 2: [], 3: []}
    for s in samples:
        assert 1 <= len(s.labels) <= 4
        background = s.masks.sum(axis=0) == 0
        # A plain background: only the pixel noise (sigma 6) varies around one colour.
        assert s.image[background].astype(np.float64).std(axis=0).max() < 10
        for m, label, poly, box in zip(s.masks, s.labels, s.polygons, s.boxes):
            assert (
                m.sum() >= 0.6 * 40**2
                or box[0] == 0
                or box[1] == 0
                or box[2] == s.image.shape[1]
                or box[3] == s.image.shape[0]
            )  # only the border cuts them smaller
            inside = box[0] > 0 and box[1] > 0 and box[2] < s.image.shape[1] and box[3] < s.image.shape[0]
            if poly is not None and inside:
                fills[int(label)].append(m.sum() / ((box[2] - box[0]) * (box[3] - box[1])))
    # Upright shapes fill their box by their kind: rectangle ~1, ellipse ~pi/4, triangle ~1/2.
    assert np.min(fills[2]) > 0.9
    assert abs(np.median(fills[1]) - np.pi / 4) < 0.05
    assert abs(np.median(fills[3]) - 0.5) < 0.06
    # At least 80% of every object stays visible by default: little occlusion.
    assert np.mean([p is None for s in samples for p in s.polygons]) < 0.3


def _unoccluded_rectangle_fills(samples):
    """How much of its box each unoccluded rectangle fills: 1 upright, less when rotated."""
    return [
        m.sum() / ((b[2] - b[0]) * (b[3] - b[1]))
        for s in samples
        for m, label, p, b in zip(s.masks, s.labels, s.polygons, s.boxes)
        if label == 2 and p is not None
    ]


def test_standard_scenes_rotate_the_shapes():
    samples = generate_split(split="train", num_images=30, seed=2)
    assert np.min(_unoccluded_rectangle_fills(samples)) < 0.75


def test_unknown_scene_is_rejected(tmp_path):
    from maskrcnn.data.synthetic import make_synthetic

    with pytest.raises(ValueError, match="scene must be one of"):
        make_synthetic(out=str(tmp_path), format="coco", num_images=1, scene="hard")


def test_intermediate_scenes_keep_small_objects_without_tiny_ones_and_less_occlusion():
    from maskrcnn.data.base import area_bucket
    from maskrcnn.data.synthetic import SCENE_DEFAULTS

    samples = generate_split(split="train", num_images=60, seed=3, scene="intermediate")
    standard = generate_split(split="train", num_images=60, seed=3)
    assert SCENE_DEFAULTS["intermediate"] == (4, 0.7)
    assert all(1 <= len(s.labels) <= 4 for s in samples)
    inside = [
        m.sum()
        for s in samples
        for m, p, b in zip(s.masks, s.polygons, s.boxes)
        if p is not None and b[0] > 0 and b[1] > 0 and b[2] < s.image.shape[1] and b[3] < s.image.shape[0]
    ]
    # Unoccluded objects inside the image keep their drawn area, 20^2 at least (standard: 14^2).
    assert min(inside) >= 0.9 * 400
    assert min(m.sum() for s in standard for m, p in zip(s.masks, s.polygons) if p is not None) < 400
    buckets = [area_bucket(m.sum()) for s in samples for m in s.masks]
    assert 0.15 < buckets.count("small") / len(buckets) < 0.45
    # Rotated shapes, as in the standard scenes.
    assert np.min(_unoccluded_rectangle_fills(samples)) < 0.75

    # Fainter background texture than the standard scenes' (background pixels' spread per image).
    def background_spread(s):
        return s.image[s.masks.sum(axis=0) == 0].astype(np.float64).std(axis=0).mean()

    assert np.median([background_spread(s) for s in samples]) < np.median([background_spread(s) for s in standard])
