#!/usr/bin/env python
"""Convert torchvision's Mask / Faster R-CNN ResNet-50-FPN weights into our checkpoint format.

    python tools/convert_torchvision.py --arch maskrcnn_resnet50_fpn \\
        --weights maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --out mask_rcnn_r50_fpn_coco.pt [--coco80]

The output ``{"model": state_dict, "meta": {...}}`` describes itself: ``meta`` holds the model
config (``configs/model/*_torchvision.yaml`` as composed now), its name, ``num_classes`` (90 for
torchvision's COCO weights, whose labels are COCO category ids; 80 with ``--coco80``, which keeps
the 80 used categories in ascending id order, the labels of our COCO dataset), the COCO class
names and, with ``--coco80``, the category ids. tools/predict.py and tools/eval.py rebuild the model
from it (``checkpoint=OUT.pt`` is enough). Nothing is downloaded: give a local file. The conversion is
maskrcnn.engine.torchvision_convert.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskrcnn.engine.torchvision_convert import convert
from maskrcnn.modeling.torchvision_compat import ARCHS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--weights", required=True, type=Path, help="torchvision state dict (.pth), local file")
    parser.add_argument("--out", required=True, type=Path, help="our checkpoint to write (.pt)")
    parser.add_argument("--coco80", action="store_true", help="keep the 80 COCO categories (contiguous labels)")
    args = parser.parse_args(argv)
    try:
        meta = convert(args.arch, args.weights, args.out, args.coco80)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {meta['arch']} (model={meta['model_config']}) with num_classes={meta['num_classes']}; "
        f"tools/predict.py and tools/eval.py read both from the checkpoint"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
