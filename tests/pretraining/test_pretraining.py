import json

import numpy as np
import pytest
import torch

from maskrcnn.data.synthetic import SyntheticSample
from maskrcnn.pretraining import BACKGROUND, PretrainConfig, SyntheticCrops, pretrain_backbone
from maskrcnn.pretraining.crops import PIXEL_MEAN, PIXEL_STD


def _scene(colour=(250, 20, 20), box=(40, 30, 70, 50), label=2, size=(100, 120)):
    """A grey image with one axis-aligned object of one colour filling ``box`` (x0, y0, x1, y1)."""
    h, w = size
    image = np.full((h, w, 3), 100, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    image[mask.astype(bool)] = colour
    return SyntheticSample(
        name="s", image=image, masks=mask[None], labels=np.array([label]), boxes=np.array([box], np.float32)
    )


def _pixels(crop: torch.Tensor) -> np.ndarray:
    """(size, size, 3) uint8-scale pixels of a normalised crop."""
    return (crop.numpy().transpose(1, 2, 0) * PIXEL_STD + PIXEL_MEAN) * 255


def test_object_crops_frame_their_object_and_carry_its_class():
    crops = SyntheticCrops([_scene()], size=32, context=(1.2, 1.2))
    assert len(crops) == 2
    image, label = crops[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == 1  # rectangle (labels 1..3 become 0..2)
    pixels = _pixels(image)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60)
    # The box is 30 x 20 in a square of 1.2 * 30 = 36 px: the object spans 30/36 of the width and
    # 20/36 of the height of the crop (centre jitter moves it by up to 3.6 px, not its size).
    assert red[16].sum() == pytest.approx(32 * 30 / 36, abs=2)
    assert red[:, 16].sum() == pytest.approx(32 * 20 / 36, abs=2)


def test_background_crops_avoid_objects_and_pad_with_the_mean_colour():
    scene = _scene(box=(0, 0, 60, 100), size=(100, 120))  # the left half is object
    crops = SyntheticCrops([scene], size=16, background_sides=(24, 48), max_background_fg=0.05)
    for epoch in range(5):
        crops.set_epoch(epoch)
        image, label = crops[1]
        assert label == BACKGROUND
        pixels = _pixels(image)
        assert (np.abs(pixels - 100).max(axis=-1) < 8).mean() > 0.9
    # A crop reaching past the border is padded with the image's mean colour (red channel about
    # 101 here: grey 100, the object 250), not with zeros.
    edge = SyntheticCrops([_scene(box=(0, 0, 10, 10))], size=20, context=(3.0, 3.0))
    assert _pixels(edge[0][0])[..., 0].min() > 90


def test_crops_repeat_for_a_seed_and_epoch_and_change_with_the_epoch():
    scene = _scene()
    a, b = SyntheticCrops([scene], size=16, seed=3), SyntheticCrops([scene], size=16, seed=3)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[1][0], b[1][0])
    b.set_epoch(1)
    assert not torch.equal(a[0][0], b[0][0])


def test_crops_need_an_object():
    empty = SyntheticSample(
        name="e",
        image=np.zeros((20, 20, 3), np.uint8),
        masks=np.zeros((0, 20, 20), np.uint8),
        labels=np.zeros(0, np.int64),
        boxes=np.zeros((0, 4), np.float32),
    )
    with pytest.raises(ValueError, match="at least one object"):
        SyntheticCrops([empty])


@pytest.mark.parametrize("task", ["crops", "segmentation"])
def test_batchnorm_weights_load_as_imagenet_weights_into_the_detection_backbones(tmp_path, task):
    from maskrcnn.modeling import ResNetC4
    from maskrcnn.modeling.box_head import Res5Head

    out = tmp_path / "r18.pth"
    config = PretrainConfig(
        task=task, norm="bn", scenes=12, epochs=2, batch_size=4, crop_size=32, image_size=96, holdout=0.25
    )
    report = pretrain_backbone(config, out)
    saved = torch.load(out, weights_only=True)
    assert saved["fc.weight"].shape == (BACKGROUND + 1, 512)
    written = json.loads((tmp_path / "r18.pth.json").read_text())
    assert written["config"]["scenes"] == 12 and len(written["history"]) == 2
    assert 0.0 <= written["holdout_score"] <= 1.0 and written == json.loads(json.dumps(report))
    assert written["holdout_metric"] == ("accuracy" if task == "crops" else "mean IoU")
    assert len(written["holdout_per_class"]) == BACKGROUND + 1
    backbone = ResNetC4(depth=18, norm="frozen_bn", freeze_at=1, weights=str(out))
    assert torch.equal(backbone.body.layer3[1].conv2.weight, saved["layer3.1.conv2.weight"])
    assert torch.equal(backbone.body.bn1.running_mean, saved["bn1.running_mean"])
    head = Res5Head(depth=18, norm="frozen_bn", weights=str(out))
    res5 = dict(head.named_parameters()) | dict(head.named_buffers())
    conv = next(v for k, v in res5.items() if k.endswith("0.conv1.weight"))
    assert torch.equal(conv, saved["layer4.0.conv1.weight"])
    # The training moved the weights away from torchvision's initialisation.
    assert report["history"][0]["loss"] > 0


def test_segmentation_labels_follow_the_visible_masks_and_flip_with_the_image():
    from maskrcnn.pretraining.segmentation import SceneSegmentation

    scene = _scene(box=(10, 20, 30, 60), label=3, size=(80, 50))
    image, labels = SceneSegmentation([scene], flip=False)[0]
    assert image.shape == (3, 80, 50) and labels.shape == (80, 50) and labels.dtype == torch.int64
    expected = torch.zeros(80, 50, dtype=torch.int64)
    expected[20:60, 10:30] = 3
    assert torch.equal(labels, expected)
    flipped = SceneSegmentation([scene], seed=0)
    for epoch in range(8):  # some epoch flips: the labels move with the pixels
        flipped.set_epoch(epoch)
        image, labels = flipped[0]
        red = torch.from_numpy(_pixels(image)[..., 0] > 200)
        assert torch.equal(red, labels == 3)


def test_padded_batches_ignore_the_padding_and_iou_counts_pixels():
    from maskrcnn.pretraining.segmentation import collate_padded, confusion, iou_per_class

    a = (torch.ones(3, 4, 6), torch.ones(4, 6, dtype=torch.int64))
    b = (torch.ones(3, 6, 4), torch.full((6, 4), 2))
    images, labels = collate_padded([a, b])
    assert images.shape == (2, 3, 6, 6) and labels.shape == (2, 6, 6)
    assert (labels[0, 4:] == -1).all() and (labels[1, :, 4:] == -1).all() and images[0, :, 4:].abs().sum() == 0
    # Predict class 1 everywhere: image 0's 24 pixels right, image 1's 24 pixels (class 2) wrong.
    logits = torch.zeros(2, 3, 6, 6)
    logits[:, 1] = 1.0
    matrix = confusion(logits, labels, 3)
    assert matrix.tolist() == [[0, 0, 0], [0, 24, 0], [0, 24, 0]]
    assert iou_per_class(matrix) == [0.0, 0.5, 0.0]


def test_the_segmentation_net_predicts_every_pixel():
    import torchvision

    from maskrcnn.pretraining.segmentation import SegmentationNet

    net = SegmentationNet(torchvision.models.resnet18(num_classes=4), num_classes=4)
    assert net(torch.zeros(2, 3, 72, 100)).shape == (2, 4, 72, 100)


def test_an_unknown_task_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        pretrain_backbone(PretrainConfig(task="detection"), tmp_path / "x.pth")


def test_groupnorm_weights_load_into_groupnorm_backbones_only(tmp_path):
    from maskrcnn.modeling import ResNetFPN

    out = tmp_path / "r18_gn.pth"
    pretrain_backbone(PretrainConfig(scenes=8, epochs=1, batch_size=4, image_size=96, holdout=0.25), out)
    saved = torch.load(out, weights_only=True)
    assert not any(k.endswith("running_mean") for k in saved)
    backbone = ResNetFPN(depth=18, norm="gn", freeze_at=0, weights=str(out), out_channels=64)
    assert torch.equal(backbone.body.layer2[0].bn1.weight, saved["layer2.0.bn1.weight"])
    assert torch.equal(backbone.body.layer4[1].conv2.weight, saved["layer4.1.conv2.weight"])
    with pytest.raises(ValueError, match="GroupNorm weights .* use backbone.norm=gn"):
        ResNetFPN(depth=18, norm="frozen_bn", weights=str(out))
