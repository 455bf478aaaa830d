"""Datasets give (3, H, W) uint8 images, through DataLoader workers too; as float they are the old
float32 [0, 1] images bit for bit."""

from __future__ import annotations

import numpy as np
import torch

from maskrcnn.data import CocoDetection, build_train_loader
from maskrcnn.data.base import to_chw_float, to_chw_uint8
from maskrcnn.data.transforms import build_transforms
from maskrcnn.modeling.transform import to_float_image


def test_uint8_over_255_is_the_float_conversion_bit_for_bit():
    # Every uint8 value, in an image: OpenCV's float conversion (the datasets' former output and
    # tools/predict.py's input) is the oracle of the model's uint8 -> float.
    image = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)
    image[..., 1] = image[..., 1][::-1]
    chw = to_chw_uint8(image)
    assert chw.dtype == np.uint8 and chw.flags.c_contiguous and chw.shape == (3, 16, 16)
    np.testing.assert_array_equal(chw, image.transpose(2, 0, 1))
    assert torch.equal(to_float_image(torch.from_numpy(chw)), torch.from_numpy(to_chw_float(image)))


def _coco(root, split, transforms=None):
    return CocoDetection(
        image_dir=str(root / split),
        annotation_file=str(root / "annotations" / f"instances_{split}.json"),
        filter_empty=False,
        transforms=transforms,
    )


def test_dataset_images_are_uint8_chw(synthetic_coco):
    root, truth = synthetic_coco
    ds = _coco(root, "val")
    for i, sample in enumerate(truth["val"][:3]):
        image, _ = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, *sample.image.shape[:2])
        assert image.is_contiguous()
        # JPEG (quality 95) changes pixels little.
        assert np.abs(image.permute(1, 2, 0).numpy().astype(np.float64) - sample.image).mean() < 8


def test_worker_batches_equal_in_process_batches(synthetic_coco):
    # Resize and flip run on the uint8 image; a worker process hands over the same uint8 tensors.
    root, _ = synthetic_coco
    ds = _coco(root, "train", transforms=build_transforms(min_size=[96, 128], max_size=200, flip_prob=0.5))
    batches = {}
    for workers in (0, 1):
        it = iter(build_train_loader(ds, batch_size=2, num_workers=workers, seed=3))
        batches[workers] = [next(it) for _ in range(3)]
    for (im0, t0), (im1, t1) in zip(batches[0], batches[1]):
        for a, b, ta, tb in zip(im0, im1, t0, t1):
            assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)
            assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["masks"], tb["masks"])
    assert all(min(im.shape[-2:]) in (96, 128) for images, _ in batches[0] for im in images)  # resized
