"""GPU check: the RoI layer makes no host synchronisation inside the model's training step.

Builds the small Mask R-CNN (FPN, our fused RoI Align) on the GPU, runs one warm-up training step,
then a second one with ``torch.cuda.set_sync_debug_mode("error")`` switched on around every
forward and backward of the model's RoI poolers (module hooks), so that any synchronisation
there (a ``.item()``, a pageable copy, a ``nonzero``) raises. The poolers call the ops inside
``maskrcnn.ops.trusted_rois()``, which skips the public ops' one validated synchronisation.
Run by tools/gpu_check.sh (step ``sync``); exits 0 and prints the poolers it watched on success.

    python tools/check_roi_sync.py [--model mask_rcnn_r18_fpn_small] [--roi-layer roi_align]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "modeling"))


def _watch(module: torch.nn.Module) -> None:
    """Sync debug mode "error" during the module's forward and backward."""

    def on(*_):
        torch.cuda.set_sync_debug_mode("error")

    def off(*_):
        torch.cuda.set_sync_debug_mode("default")

    module.register_forward_pre_hook(on)
    module.register_forward_hook(off)
    module.register_full_backward_pre_hook(on)
    module.register_full_backward_hook(off)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mask_rcnn_r18_fpn_small")
    parser.add_argument("--roi-layer", default="roi_align")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("check_roi_sync: no CUDA GPU visible", file=sys.stderr)
        return 2
    from modeling_helpers import build_model, synthetic_sample

    from maskrcnn.modeling.poolers import MultiLevelRoIPooler

    torch.manual_seed(0)
    model = build_model(args.model, args.roi_layer).cuda().train()
    poolers = [name for name, m in model.named_modules() if isinstance(m, MultiLevelRoIPooler)]
    if not poolers:
        print(f"check_roi_sync: {args.model} has no MultiLevelRoIPooler", file=sys.stderr)
        return 2
    samples = [synthetic_sample(256, 320, [[20, 30, 120, 150], [150, 40, 300, 200]], [1, 2], seed=s) for s in (0, 1)]
    images = [s[0].cuda() for s in samples]
    targets = [{k: v.cuda() for k, v in s[1].items()} for s in samples]

    def step():
        losses = model(images, targets)
        model.zero_grad()
        sum(losses.values()).backward()
        torch.cuda.synchronize()

    step()  # warm-up: lazy initialisation may synchronise
    for name in poolers:
        _watch(model.get_submodule(name))
    step()
    print(f"no host synchronisation in the forward and backward of {', '.join(poolers)} ({args.roi_layer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
