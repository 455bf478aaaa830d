"""Box coder, matcher, sampler, anchors and backbones against torchvision and hand-worked cases."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from maskrcnn.modeling import AnchorGenerator, BoxCoder, Matcher, ResNetC4, ResNetFPN, sample_balanced


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 60], 1)


def test_box_coder_matches_torchvision_and_round_trips():
    ours = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    ref = tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    gt, props = _boxes(50, 0), _boxes(50, 1)
    deltas = ours.encode(gt, props)
    torch.testing.assert_close(deltas, ref.encode_single(gt, props), rtol=0, atol=0)
    torch.testing.assert_close(ours.decode(deltas, props), gt, rtol=1e-5, atol=1e-3)
    multi = torch.randn(50, 12)
    torch.testing.assert_close(ours.decode(multi, props), ref.decode_single(multi, props), rtol=0, atol=0)
    # A huge dw is clamped at log(1000/16) instead of overflowing.
    big = ours.decode(torch.tensor([[0.0, 0.0, 1e4, 0.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert torch.isfinite(big).all() and big[0, 2] - big[0, 0] == pytest.approx(10 * 1000 / 16, rel=1e-4)


def test_matcher_hand_worked():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.1, 0.6, 0.25, 0.3]])
    m = Matcher(high=0.7, low=0.3, allow_low_quality_matches=False)(iou)
    assert m.tolist() == [0, -2, -1, -2]
    # Low-quality: GT 1's best prediction (column 1, 0.6) is matched to GT 1 despite < 0.7.
    m = Matcher(high=0.7, low=0.3, allow_low_quality_matches=True)(iou)
    assert m.tolist() == [0, 1, -1, -2]


@pytest.mark.parametrize("allow", [True, False])
def test_matcher_matches_torchvision(allow):
    g = torch.Generator().manual_seed(3)
    iou = torch.rand(7, 300, generator=g) ** 3
    ours = Matcher(high=0.7, low=0.3, allow_low_quality_matches=allow)(iou.clone())
    ref = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=allow)(iou.clone())
    assert torch.equal(ours, ref)


def test_sample_balanced():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 50)
    pos, neg = sample_balanced(labels, batch_size=64, positive_fraction=0.25)
    assert pos.numel() == 10 and neg.numel() == 54  # few positives: negatives fill up
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all() and len(set(pos.tolist())) == 10
    labels = torch.tensor([2] * 100 + [0] * 100)
    pos, neg = sample_balanced(labels, batch_size=64, positive_fraction=0.25)
    assert pos.numel() == 16 and neg.numel() == 48


def test_anchors_match_torchvision():
    sizes = [[32], [64], [128], [256], [512]]
    ratios = [[0.5, 1.0, 2.0]] * 5
    shapes = [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]
    feats = [torch.zeros(1, 1, h, w) for h, w in shapes]
    ref = TVAnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in ratios))(
        ImageList(torch.zeros(1, 3, 128, 160), [(120, 150)]), feats
    )[0]
    ours = AnchorGenerator(sizes=sizes, aspect_ratios=[[0.5, 1.0, 2.0]])(
        (128, 160), shapes, dtype=torch.float32, device=torch.device("cpu")
    )
    assert torch.equal(torch.cat(ours), ref)


def test_resnet_fpn_shapes_and_freezing():
    bb = ResNetFPN(depth=18, norm="bn", freeze_at=2, out_channels=32)
    out = bb(torch.randn(1, 3, 96, 128))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for name, s in bb.strides.items():
        assert out[name].shape == (1, 32, -(-96 // s), -(-128 // s))
    assert not any(p.requires_grad for p in bb.body.conv1.parameters())
    assert not any(p.requires_grad for p in bb.body.layer1.parameters())
    assert all(p.requires_grad for p in bb.body.layer2.parameters())
    c4 = ResNetC4(depth=18, norm="gn", freeze_at=0)
    assert c4(torch.randn(1, 3, 64, 64))["res4"].shape == (1, 256, 4, 4)


def test_imagenet_weights_load_from_a_local_file(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetFPN(depth=18, norm="frozen_bn", weights=str(path), out_channels=16)
    torch.testing.assert_close(bb.body.layer3[1].conv2.weight, ref.layer3[1].conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(bb.body.bn1.running_var, ref.bn1.running_var, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResNetFPN(depth=18, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="GroupNorm"):
        ResNetFPN(depth=18, norm="gn", weights=str(path))
    with pytest.raises(ValueError, match="does not match"):
        ResNetFPN(depth=50, weights=str(path))
    with pytest.raises(ValueError, match="depth"):
        ResNetFPN(depth=20)
