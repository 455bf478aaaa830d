"""Training-loader throughput (images/second) on coco-mini at 1333 x 800, with 0, 1 and 2 workers.

    python tools/bench_data.py [--root ../shared/data/coco-mini] [--images 60] [--json out.json]

Two mask pipelines on the same images and transforms, in one process:
  ours:          polygons are scaled with the image and rasterized once at the final size
                 (inside each object's box when the image was resized);
  full_res_mask: the naive peer, every mask rasterized at the file's size, then each bitmap
                 resized (what a loader that decodes masks before transforming does).
Prints a table of medians over --repeats runs and the ratio, and writes JSON when asked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pycocotools.mask as mask_utils
import torch

from maskrcnn.data import CocoDetection, build_train_loader
from maskrcnn.data.masks import InstanceMasks
from maskrcnn.data.transforms import build_transforms
from maskrcnn.engine.config import REPO_ROOT


class FullResolutionMasks(CocoDetection):
    """The peer: masks decoded at the file's size before any transform, then resized as bitmaps."""

    def _load_masks(self, record):
        h, w = record["height"], record["width"]
        rles = [
            s if isinstance(s, dict) else mask_utils.merge(mask_utils.frPyObjects(s, h, w)) for s in record["segms"]
        ]
        return InstanceMasks.from_coco_segmentations(rles, height=h, width=w)


def measure(dataset, *, num_workers: int, batch_size: int, images: int, seed: int) -> float:
    """Images per second over ``images`` images after one warm-up batch (workers started)."""
    loader = build_train_loader(dataset, batch_size=batch_size, num_workers=num_workers, seed=seed)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = 0
    for images_, _ in itertools.islice(it, max(1, images // batch_size)):
        n += len(images_)
    elapsed = time.perf_counter() - start
    del it
    return n / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO_ROOT.parent / "shared" / "data" / "coco-mini"))
    parser.add_argument("--images", type=int, default=60, help="images timed per run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--pipelines", nargs="+", default=["ours", "full_res_mask"], choices=["ours", "full_res_mask"])
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    root = Path(args.root)
    ann = root / "annotations" / "instances_train2017.json"
    if not ann.is_file():
        parser.error(f"no coco-mini at {root} (expected {ann}); pass --root")
    kwargs = dict(
        image_dir=str(root / "train2017"),
        annotation_file=str(ann),
        transforms=build_transforms(min_size=args.min_size, max_size=args.max_size, flip_prob=0.5),
    )
    datasets = {"ours": CocoDetection(**kwargs), "full_res_mask": FullResolutionMasks(**kwargs)}

    results = []
    print(
        f"coco-mini training loader, {args.min_size} x {args.max_size}, batch {args.batch_size}, "
        f"{args.images} images per run, median of {args.repeats}; torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} cpus"
    )
    print(f"{'workers':>7} " + " ".join(f"{p + ' img/s':>20}" for p in args.pipelines) + "   ratio")
    # Repeats interleave the worker counts and pipelines, so that a change of the machine's load
    # during the benchmark (shared machines) shifts every row alike.
    runs = {(w, p): [] for w in args.workers for p in args.pipelines}
    for r in range(args.repeats):
        for workers in args.workers:
            for p in args.pipelines:
                runs[workers, p].append(
                    measure(datasets[p], num_workers=workers, batch_size=args.batch_size, images=args.images, seed=r)
                )
    for workers in args.workers:
        row = {"workers": workers}
        for p in args.pipelines:
            row[p] = statistics.median(runs[workers, p])
            row[p + "_runs"] = runs[workers, p]
        ratio = row["ours"] / row["full_res_mask"] if {"ours", "full_res_mask"} <= set(row) else float("nan")
        row["ratio_ours_over_full_res_mask"] = ratio
        results.append(row)
        print(f"{workers:>7} " + " ".join(f"{row[p]:>20.2f}" for p in args.pipelines) + f"   {ratio:5.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
