"""Trained results do not depend on the ops' defaults: every RoI layer the configs build (each
configs/roi_layer/*.yaml and the inline ones of configs/model/) pools exactly what the reference
computes with the config's own ``aligned`` / ``sampling_ratio`` / ``mode``, and the mask targets
keep torchvision's arithmetic (aligned=False, adaptive sampling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from maskrcnn.modeling import MultiLevelRoIPooler, RoILayerSpec, assign_fpn_levels
from maskrcnn.modeling.mask_head import mask_targets
from maskrcnn.ops import roi_align_reference, roi_pool_reference, roi_warp_reference

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STRIDES = [4, 8, 16, 32]


def roi_layer_configs() -> dict[str, dict]:
    layers = {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted((CONFIGS / "roi_layer").glob("*.yaml"))}
    for path in sorted((CONFIGS / "model").rglob("*.yaml")):  # with base/, the parts the models compose
        config = OmegaConf.to_container(OmegaConf.load(path))
        if config.get("_target_") == "maskrcnn.modeling.RoILayerSpec":
            layers[f"model/{path.relative_to(CONFIGS / 'model').with_suffix('')}"] = config
        heads = config.get("roi_heads", {})
        for pooler in ("box_pooler", "mask_pooler"):
            layer = (heads.get(pooler) or {}).get("roi_layer")
            if isinstance(layer, dict):
                layers[f"{path.stem}.{pooler}"] = layer
    return layers


LAYERS = roi_layer_configs()


def features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        f"p{i + 2}": torch.randn(2, 3, 64 // s, 80 // s, generator=g, dtype=torch.float64)
        for i, s in enumerate([1, 2, 4, 8])
    }


def boxes(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (12, 9):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 250
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) ** 2 * 300 + 1  # all four levels
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def reference(cfg: dict, x, rois, size, scale):
    if cfg["op"] == "roi_pool":
        return roi_pool_reference(x, rois, size, scale)
    if cfg["op"] == "roi_warp":  # rounded on the RoI's own level, as RoI Pool on that level would
        assert cfg["aligned"] is False
        return roi_warp_reference(x, rois, size, scale, sampling_ratio=cfg["sampling_ratio"], mode=cfg["mode"])
    return roi_align_reference(
        x, rois, size, scale, sampling_ratio=cfg["sampling_ratio"], aligned=cfg["aligned"], mode=cfg["mode"]
    )


def test_every_config_is_found():
    assert {
        "roi_align",
        "roi_align_unaligned",
        "roi_align_max",
        "roi_pool",
        "roi_warp",
        "roi_warp_avg",
        "torchvision",
    } <= set(LAYERS)
    assert "model/base/torchvision_roi_align" in LAYERS  # the RoI layer of the *_torchvision models


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("levels", [1, 4])
def test_pooler_equals_reference_with_the_configs_settings(name, levels):
    cfg = {k: v for k, v in LAYERS[name].items() if k != "_target_"}
    if cfg["op"] in ("roi_align", "roi_warp"):  # the configs must not rely on a default that differs between libraries
        assert {"aligned", "sampling_ratio", "mode"} <= set(cfg), f"{name} must set aligned, sampling_ratio, mode"
    names = ["p2", "p3", "p4", "p5"][:levels]
    pooler = MultiLevelRoIPooler(
        output_size=5, in_features=names, strides=STRIDES[:levels], roi_layer=RoILayerSpec(**cfg)
    )
    feats, b = features(), boxes()
    out = pooler(feats, b)
    rois = torch.cat([torch.cat([torch.full((len(x), 1), float(i), dtype=x.dtype), x], 1) for i, x in enumerate(b)])
    level = assign_fpn_levels(rois[:, 1:], min_level=2, max_level=1 + levels)
    expected = torch.zeros_like(out)
    for lv, n in enumerate(names):
        idx = torch.where(level == lv)[0]
        expected[idx] = reference(cfg, feats[n], rois[idx], 5, 1.0 / STRIDES[lv])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["ours", "torchvision"])
def test_mask_targets_are_unaligned_adaptive_roi_align(backend):
    g = torch.Generator().manual_seed(0)
    masks = [(torch.rand(n, 40, 50, generator=g) > 0.5).to(torch.uint8) for n in (3, 2)]
    b = [x[:5].float() * 0.15 for x in boxes(1)]  # five boxes per image, inside the 40 x 50 masks
    matched = [torch.tensor([0, 2, 1, 1, 0]), torch.tensor([1, 0, 0, 1, 1])]
    out = mask_targets(masks, b, matched, 7, backend=backend)
    expected = torch.cat(
        [
            roi_align_reference(
                m[:, None].float(), torch.cat([i[:, None].float(), x], 1), 7, 1.0, sampling_ratio=0, aligned=False
            )[:, 0]
            for m, x, i in zip(masks, b, matched)
        ]
    )
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
