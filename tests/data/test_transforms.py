"""Transforms: flips, resizes and jitter keep image, boxes and masks consistent."""

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from maskrcnn.data.masks import InstanceMasks
from maskrcnn.data.synthetic import generate_split
from maskrcnn.data.transforms import (
    ColorJitter,
    Compose,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    hflip,
    resized_shape,
)


def _sample(i=0, polygons=True):
    s = generate_split(split="val", num_images=i + 1, seed=11)[i]
    h, w = s.image.shape[:2]
    if polygons:  # polygons where the generator has them, RLE otherwise: both code paths
        segms = [[p] if p is not None else mask_utils.encode(np.asfortranarray(m)) for p, m in zip(s.polygons, s.masks)]
        masks = InstanceMasks.from_coco_segmentations(segms, height=h, width=w)
    else:
        label_map = np.zeros((h, w), np.uint8)
        for k, m in enumerate(s.masks, start=1):
            label_map[m.astype(bool)] = k
        masks = InstanceMasks.from_label_map(label_map, list(range(1, len(s.masks) + 1)))
    return s, {"boxes": s.boxes.copy(), "labels": s.labels.copy(), "masks": masks}


def _mask_boxes(masks):
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("polygons", [True, False])
def test_flip_twice_is_identity_and_flip_matches_numpy(polygons):
    s, target = _sample(polygons=polygons)
    image, flipped = hflip(s.image, target)
    np.testing.assert_array_equal(image, s.image[:, ::-1])
    masks = flipped["masks"].to_array()
    if polygons:  # mirrored vertices rasterize to the mirrored mask up to pycocotools' edge ties
        np.testing.assert_allclose(_mask_boxes(masks), flipped["boxes"], atol=1.0)
        diff = (masks != s.masks[:, :, ::-1]).sum((1, 2))
        assert (diff <= 0.005 * s.masks.sum((1, 2)) + 2).all(), diff
    else:  # bitmaps flip exactly
        np.testing.assert_array_equal(_mask_boxes(masks), flipped["boxes"])
        np.testing.assert_array_equal(masks, s.masks[:, :, ::-1])
    image2, back = hflip(image, flipped)
    np.testing.assert_array_equal(image2, s.image)
    np.testing.assert_array_equal(back["boxes"], s.boxes)
    np.testing.assert_array_equal(back["masks"].to_array(), s.masks)


@pytest.mark.parametrize("polygons", [True, False])
def test_resize_keeps_boxes_and_masks_consistent(polygons):
    s, target = _sample(1, polygons=polygons)
    h, w = s.image.shape[:2]
    image, out = ResizeShortestEdge(min_size=400, max_size=1000)(s.image, target, np.random.default_rng(0))
    nh, nw = image.shape[:2]
    assert min(nh, nw) == 400 and (nh, nw) == resized_shape(h, w, 400, 1000)
    masks = out["masks"].to_array()
    assert masks.shape == (len(s.masks), nh, nw)
    # boxes scaled by the resize agree with the boxes of the resized masks within a pixel or two
    np.testing.assert_allclose(_mask_boxes(masks), out["boxes"], atol=2.0)
    # and the masks' areas scale with the image area
    ratio = nh * nw / (h * w)
    np.testing.assert_allclose(masks.sum((1, 2)), s.masks.sum((1, 2)) * ratio, rtol=0.1, atol=30)


def test_resize_max_size_and_multiscale_choice():
    assert resized_shape(480, 640, 800, 1333) == (800, 1067)
    assert resized_shape(200, 1000, 800, 1333) == (267, 1333)  # the long side caps
    t = ResizeShortestEdge(min_size=[100, 120, 140], max_size=None)
    rng = np.random.default_rng(0)
    image = np.zeros((50, 80, 3), np.uint8)
    target = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    seen = {t(image, target, rng)[0].shape[0] for _ in range(40)}
    assert seen == {100, 120, 140}
    with pytest.raises(ValueError, match="min_size"):
        ResizeShortestEdge(min_size=0)


def test_random_flip_probability_and_seeded_reproducibility():
    s, target = _sample()
    t = RandomHorizontalFlip(prob=0.5)
    flips = [not np.array_equal(t(s.image, target, np.random.default_rng(i))[0], s.image) for i in range(40)]
    assert 8 < sum(flips) < 32
    a = t(s.image, target, np.random.default_rng(5))[1]["boxes"]
    b = t(s.image, target, np.random.default_rng(5))[1]["boxes"]
    np.testing.assert_array_equal(a, b)


def test_jitter_changes_pixels_not_geometry():
    s, target = _sample()
    image, out = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, prob=1.0)(
        s.image, target, np.random.default_rng(1)
    )
    assert image.shape == s.image.shape and image.dtype == np.uint8 and not np.array_equal(image, s.image)
    assert out is target


def test_compose_from_hydra():
    cfg = OmegaConf.create(
        {
            "_target_": "maskrcnn.data.transforms.Compose",
            "transforms": [
                {"_target_": "maskrcnn.data.transforms.ResizeShortestEdge", "min_size": [64], "max_size": 100},
                {"_target_": "maskrcnn.data.transforms.RandomHorizontalFlip", "prob": 1.0},
            ],
        }
    )
    t = instantiate(cfg)
    s, target = _sample()
    image, out = t(s.image, target, np.random.default_rng(0))
    assert min(image.shape[:2]) == 64
    assert out["masks"].to_array().shape[1:] == image.shape[:2]
    np.testing.assert_allclose(_mask_boxes(out["masks"].to_array()), out["boxes"], atol=2.0)
    built = instantiate(
        OmegaConf.create(
            {
                "_target_": "maskrcnn.data.transforms.build_transforms",
                "min_size": [64, 72],
                "max_size": 100,
                "flip_prob": 0.5,
                "jitter": True,
            }
        )
    )
    assert [type(x).__name__ for x in built.transforms] == ["ColorJitter", "ResizeShortestEdge", "RandomHorizontalFlip"]
    assert isinstance(built, Compose)
