"""Benchmark of our RoI ops against torchvision's, in one process on the same inputs.

For each shape (the Mask R-CNN heads) and op (roi_align, roi_pool) it times the
forward and the forward+backward of ours and of torchvision.ops, prints a table of medians and
ratios (torchvision time / our time: > 1 means we are faster) and optionally writes JSON. Ours and
torchvision are timed interleaved, one call of each per round. The
wall-clock ratio is the headline; the CPU-time ratio (process CPU time of all threads) is printed
beside it because on a shared machine other processes inflate wall times unevenly.

    python tools/bench_ops.py                           # all shapes, CPU, 512 RoIs per image
    python tools/bench_ops.py --rois-per-image 64 --repeats 2 --shapes box
    python tools/bench_ops.py --device cuda --json outputs/bench_ops_cuda.json   # + the FPN training cases of tools/_bench_ops_cuda.py

Shapes (two images each; boxes are random RPN-like proposals in input-image pixels):
    box:  256 x 200 x 304 (P2 of 800 x 1216, scale 1/4), 7 x 7, sampling_ratio 2
    mask: 256 x 100 x 152 (P3, scale 1/8), 14 x 14, sampling_ratio 2
    c4:   1024 x 50 x 76 (C4, scale 1/16), 14 x 14, adaptive sampling
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import asdict, dataclass

import torch
import torchvision

import maskrcnn.ops as ops
from maskrcnn.profiling import time_interleaved


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    channels: int
    height: int
    width: int
    spatial_scale: float
    output_size: int
    sampling_ratio: int


SHAPES = {
    "box": Shape("box", 2, 256, 200, 304, 1 / 4, 7, 2),
    "mask": Shape("mask", 2, 256, 100, 152, 1 / 8, 14, 2),
    "c4": Shape("c4", 2, 1024, 50, 76, 1 / 16, 14, 0),
}


# Each implementation: fn(input, rois (K, 5), shape) -> (K, C, oh, ow). Add new peers (or GPU-only
# variants) here; the runner times every entry of an op on the same inputs.
def _ours_align(x, rois, s):
    return ops.roi_align(x, rois, s.output_size, s.spatial_scale, s.sampling_ratio, aligned=True)


def _tv_align(x, rois, s):
    return torchvision.ops.roi_align(x, rois, s.output_size, s.spatial_scale, s.sampling_ratio, aligned=True)


def _ours_pool(x, rois, s):
    return ops.roi_pool(x, rois, s.output_size, s.spatial_scale)


def _tv_pool(x, rois, s):
    return torchvision.ops.roi_pool(x, rois, s.output_size, s.spatial_scale)


IMPLS = {
    "roi_align": {"ours": _ours_align, "torchvision": _tv_align},
    "roi_pool": {"ours": _ours_pool, "torchvision": _tv_pool},
}
PEER = "torchvision"


def random_rois(shape: Shape, rois_per_image: int, device, dtype, seed: int = 0) -> torch.Tensor:
    """RPN-like proposals: log-uniform sizes 16..512 px, aspect ratios 1/2..2, centres uniform over
    the image, clipped to it. Returns (batch * rois_per_image, 5)."""
    g = torch.Generator().manual_seed(seed)
    img_h, img_w = shape.height / shape.spatial_scale, shape.width / shape.spatial_scale
    k = shape.batch * rois_per_image
    size = torch.exp(torch.empty(k).uniform_(math.log(16), math.log(512), generator=g))
    ratio = torch.exp(torch.empty(k).uniform_(math.log(0.5), math.log(2.0), generator=g))
    w, h = size * ratio.sqrt(), size / ratio.sqrt()
    cx, cy = torch.rand(k, generator=g) * img_w, torch.rand(k, generator=g) * img_h
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img_h)
    index = torch.arange(shape.batch).repeat_interleave(rois_per_image).to(boxes.dtype)
    return torch.cat([index[:, None], boxes], dim=1).to(device=device, dtype=dtype)


def bench_shape(shape: Shape, op: str, impls: dict, args, device) -> list[dict]:
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(1)
    feature = torch.randn(shape.batch, shape.channels, shape.height, shape.width, generator=g).to(device, dtype)
    if args.channels_last:
        feature = feature.contiguous(memory_format=torch.channels_last)
    rois = random_rois(shape, args.rois_per_image, device, dtype)
    with torch.no_grad():
        grad = torch.randn_like(next(iter(impls.values()))(feature, rois, shape))
    x = feature.detach().requires_grad_()

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(feature, rois, shape)

        return run

    def forward_backward(fn):
        def run():
            x.grad = None
            fn(x, rois, shape).backward(grad)

        return run

    records = []
    for direction, make in (("forward", forward), ("forward+backward", forward_backward)):
        fns = {name: make(fn) for name, fn in impls.items()}
        timed = time_interleaved(fns, repeats=args.repeats, warmup=args.warmup, device=device)
        for impl_name, (times, cpu) in timed.items():
            records.append(
                {
                    "shape": shape.name,
                    "op": op,
                    "direction": direction,
                    "impl": impl_name,
                    "median_ms": statistics.median(times),
                    "times_ms": times,
                    "median_cpu_ms": statistics.median(cpu),
                    "cpu_ms": cpu,
                }
            )
            print(
                f"  {shape.name:5s} {op:9s} {direction:16s} {impl_name:12s} "
                f"{statistics.median(times):10.2f} ms  (cpu {statistics.median(cpu):10.2f} ms)",
                file=sys.stderr,
                flush=True,
            )
    return records


def summarize(records: list[dict]) -> list[dict]:
    """One row per (shape, op, direction): wall and CPU medians of every impl and the ratios
    peer / ours (`ratio` on the wall clock, `cpu_ratio` on process CPU time)."""
    rows = {}
    for r in records:
        key = (r["shape"], r["op"], r["direction"])
        row = rows.setdefault(key, {"shape": key[0], "op": key[1], "direction": key[2]})
        row[r["impl"]] = r["median_ms"]
        row[r["impl"] + "_cpu"] = r["median_cpu_ms"]
    out = []
    for row in rows.values():
        if "ours" in row and PEER in row:
            row["ratio"] = row[PEER] / row["ours"]
            row["cpu_ratio"] = row[PEER + "_cpu"] / row["ours_cpu"]
        out.append(row)
    return out


def print_table(rows: list[dict]) -> None:
    nan = float("nan")
    header = (
        f"{'shape':6s} {'op':10s} {'direction':17s} {'ours ms':>10s} {PEER + ' ms':>15s} {'ratio':>7s}"
        f" {'cpu ratio':>10s}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['shape']:6s} {r['op']:10s} {r['direction']:17s} {r.get('ours', nan):10.2f} "
            f"{r.get(PEER, nan):15.2f} {r.get('ratio', nan):6.2f}x {r.get('cpu_ratio', nan):9.2f}x"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {list(SHAPES)}")
    parser.add_argument("--ops", default=",".join(IMPLS), help=f"comma-separated subset of {list(IMPLS)}")
    parser.add_argument("--rois-per-image", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true", help="channels_last feature maps")
    parser.add_argument("--json", help="write the records and the summary to this path")
    parser.add_argument("--quick-gpu", action="store_true", help="GPU multi-level cases at batch 2 only")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    shapes = [SHAPES[s] for s in args.shapes.split(",")]
    op_names = args.ops.split(",")
    for name in op_names:
        if name not in IMPLS:
            parser.error(f"unknown op {name!r}; choose from {list(IMPLS)}")

    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}, "
        f"threads {torch.get_num_threads()}, {args.rois_per_image} RoIs/image, dtype {args.dtype}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, median of {args.repeats}",
        file=sys.stderr,
    )
    records = []
    for shape in shapes:
        for op in op_names:
            records += bench_shape(shape, op, IMPLS[op], args, device)
    rows = summarize(records)
    print_table(rows)
    gpu_cases = []
    if device.type == "cuda":
        # The GPU training-shape cases (four FPN levels, fused multi-level RoI Align vs
        # torchvision's roi_align / MultiScaleRoIAlign, deterministic vs atomic backward).
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _bench_ops_cuda import run_gpu_cases

        gpu_cases = run_gpu_cases(quick=args.quick_gpu)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        meta = {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "rois_per_image": args.rois_per_image,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "dtype": args.dtype,
            "channels_last": args.channels_last,
            "shapes": [asdict(s) for s in shapes],
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "summary": rows, "records": records, "gpu_cases": gpu_cases}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
