"""Explain RoI Pooling's quantization, RoI Warp's rounded box and RoI Align's sampling for one box, with the ops' own arithmetic.

    python tools/explain_roi.py --image-size 800 800 --box 0 0 665 665 --stride 32 \\
        --output-size 7 --sampling-ratio 2 [--figure out.png] [--backward 3,4]

Every number comes from the ops' own arithmetic (``maskrcnn.ops.reference``); ``--backward`` runs
the ops' real backward on a one-hot output gradient. The explanation, and the grid conventions of
its positions (feature cells; RoI Align's and RoI Warp's sample coordinates, ``aligned=True`` /
``False``), are in maskrcnn/ops/explain.py.
"""

from __future__ import annotations

import argparse
import math
import sys

from maskrcnn.ops.explain import Setup, backward_report, draw_figure, explain, gradient_weights, report, smooth_field
from maskrcnn.optional import MissingDependency, require


def _bin(text: str) -> tuple[int, int]:
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL (two integers), got {text!r}") from None
    return row, col


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=(800, 800),
        help="image height and width in pixels",
    )
    parser.add_argument(
        "--box",
        nargs=4,
        type=float,
        metavar=("X1", "Y1", "X2", "Y2"),
        default=(0, 0, 665, 665),
        help="the RoI in image pixels",
    )
    parser.add_argument("--stride", type=int, default=32, help="feature stride (spatial_scale = 1 / stride)")
    parser.add_argument(
        "--output-size", nargs="+", type=int, metavar="N", default=(7,), help="output bins: N, or OH OW"
    )
    parser.add_argument(
        "--sampling-ratio", type=int, default=2, help="RoI Align sample points per bin and axis (<= 0: adaptive)"
    )
    parser.add_argument("--figure", metavar="PNG", help="write the figure to this file")
    parser.add_argument(
        "--backward", type=_bin, metavar="ROW,COL", help="show which input cells this output bin sends gradient to"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the feature map used by --backward")
    args = parser.parse_args(argv)

    h, w = args.image_size
    x1, y1, x2, y2 = args.box
    if h <= 0 or w <= 0:
        parser.error(f"--image-size must be positive, got {h} {w}")
    if args.stride <= 0:
        parser.error(f"--stride must be a positive number of pixels, got {args.stride}")
    if len(args.output_size) not in (1, 2) or min(args.output_size) <= 0:
        parser.error(f"--output-size must be one or two positive integers, got {args.output_size}")
    if not all(math.isfinite(v) for v in args.box):
        parser.error(f"--box must be finite, got {args.box}")
    if x2 < x1 or y2 < y1:
        parser.error(f"--box needs x1 <= x2 and y1 <= y2, got x1={x1:g} x2={x2:g} y1={y1:g} y2={y2:g}")
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        parser.error(
            f"--box {x1:g} {y1:g} {x2:g} {y2:g} is not inside the {h} x {w} image "
            f"(0 <= x1, x2 <= {w}, 0 <= y1, y2 <= {h})"
        )
    oh, ow = args.output_size * 2 if len(args.output_size) == 1 else args.output_size
    args.output_size = (oh, ow)
    if args.figure:
        try:
            require("matplotlib", purpose="--figure")
        except MissingDependency as missing:
            parser.error(str(missing))
    if args.backward is not None and not (0 <= args.backward[0] < oh and 0 <= args.backward[1] < ow):
        parser.error(
            f"--backward {args.backward[0]},{args.backward[1]} is not an output bin "
            f"(rows 0..{oh - 1}, cols 0..{ow - 1})"
        )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = Setup(
        image_h=args.image_size[0],
        image_w=args.image_size[1],
        box=tuple(args.box),
        stride=args.stride,
        output=args.output_size,
        sampling_ratio=args.sampling_ratio,
    )
    axes = explain(setup)
    print(report(setup, axes))
    feature = weights = None
    if args.backward is not None:
        feature = smooth_field(*setup.feature_size, seed=args.seed)
        weights = gradient_weights(setup, feature, args.backward)
        print()
        print(backward_report(weights, args.backward, args.seed))
    if args.figure:
        draw_figure(setup, axes, args.figure, feature, weights, args.backward)
        print(f"\nfigure written to {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
