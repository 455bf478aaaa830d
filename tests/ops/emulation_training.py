"""A few training steps of a small Mask R-CNN, reporting losses and gradient norms: run in the test
process (the CPU kernels) and in a child with MASKRCNN_CUDA_EMULATION=1 (the emulated CUDA
kernels) by tests/ops/test_cuda_emulation.py. (A plain module, imported as ``emulation_training``.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modeling"))

# Few proposals and RoIs: the emulated kernels run every CUDA thread as a fiber.
FAST = [
    "model.rpn.pre_nms_topk_train=200",
    "model.rpn.post_nms_topk_train=50",
    "model.roi_heads.batch_size_per_image=32",
]
CASES = [("mask_rcnn_r18_fpn_small", "roi_align"), ("mask_rcnn_r18_c4_small", "roi_pool")]


def train_steps(model_name: str, roi_layer: str, steps: int = 2) -> list[dict]:
    from modeling_helpers import build_model, synthetic_sample

    torch.manual_seed(1)
    model = build_model(model_name, roi_layer, overrides=FAST).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    samples = [synthetic_sample(96, 128, [[10, 12, 60, 70], [70, 20, 120, 80]], [1, 2], seed=s) for s in (3, 4)]
    images = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    history = []
    for step in range(steps):
        torch.manual_seed(100 + step)
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
        history.append({"losses": {k: v.item() for k, v in losses.items()}, "grad_norm": norm.item()})
        optimizer.step()
    return history


def main() -> None:
    import maskrcnn.ops as ops

    runs = {f"{m}/{r}": train_steps(m, r) for m, r in CASES}
    print(json.dumps({"backend": ops.kernel_backend(), "runs": runs}))


if __name__ == "__main__":
    main()
