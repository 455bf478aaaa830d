"""Fine-tuning from torchvision's COCO weights onto a 3-class dataset through tools/train.py, with
the one override ``model.init=MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` (offline: the weights are
random ones seeded into a temporary torch hub cache under torchvision's file name)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from test_train import PY, REPO, overrides, tiny  # noqa: F401  (tiny is a fixture)

WEIGHTS = torchvision.models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1


def test_finetune_from_cached_torchvision_coco_weights(tiny, tmp_path):  # noqa: F811
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    source = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    torch.save(source, home / "hub" / "checkpoints" / Path(urlparse(WEIGHTS.url).path).name)

    run = tmp_path / "run"
    args = overrides(
        tiny,
        **{
            "model": "mask_rcnn_r50_fpn_torchvision",
            "solver.max_iter": 2,
            "model.roi_heads.mask_head.num_convs": 4,
            "trainer.vis_images": 0,
        },
    )
    cmd = [
        PY,
        str(REPO / "tools" / "train.py"),
        *args,
        f"hydra.run.dir={run}",
        "model.init=MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    ]
    env = {**os.environ, "TORCH_HOME": str(home)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    log = (run / "train.log").read_text()
    assert "model.init=MaskRCNN_ResNet50_FPN_Weights.COCO_V1: kept" in log and "6 new tensors" in log
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight [4, 256, 1, 1] (source [91, 256, 1, 1])" in log
    final = torch.load(run / "model_final.pt", map_location="cpu", weights_only=False)
    state = final["model"]
    # The frozen stem and res2 (freeze_at=2) are torchvision's tensors exactly; the heads trained on.
    for key in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv1.weight", "backbone.body.bn1.running_var"):
        torch.testing.assert_close(state[key], source[key], rtol=0, atol=0, msg=key)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
    assert final["meta"]["num_classes"] == 3
    assert (run / "metrics.json").is_file()
