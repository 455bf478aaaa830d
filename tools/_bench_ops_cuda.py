"""GPU cases of the RoI-op benchmark: ours against torchvision at Mask R-CNN training shapes.

Imported by ``tools/bench_ops.py`` (``run_gpu_cases``) and runnable on its own:

    python tools/_bench_ops_cuda.py [--quick] [--json results.json]

Shapes: a 1333 x 800 image padded to 1344 x 800, FPN levels P2-P5 (strides 4-32) of 256
channels, batch 2 and 8, 512 sampled RoIs per image, output 7 x 7 (box head) and 14 x 14 (mask
head), sampling ratio 2 and adaptive, float32 and bfloat16, forward and forward+backward.

Cases
  multilevel   maskrcnn.ops.multilevel_roi_align (one fused launch; level assignment included)
               against torchvision.ops.MultiScaleRoIAlign (a Python loop over levels).
  single       maskrcnn.ops.roi_align against torchvision.ops.roi_align on P2 alone.
  determinism  our forward+backward with torch.use_deterministic_algorithms(True) (gather
               backward) against the atomic backward.
Times are medians of CUDA-event timings; `ratio` is peer / ours (> 1: ours is faster). The
bandwidth column is the compulsory traffic (feature maps read once, outputs written once; for
backward also the incoming gradient read and the feature gradients written) over the median time,
a lower bound of the real traffic. torchvision has no bfloat16 CUDA RoI Align in some versions:
such a peer case is reported as unsupported.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import torch

from maskrcnn.fpn import fpn_levels

IMAGE_HW = (800, 1344)  # 1333 x 800 padded to a multiple of 32
STRIDES = (4, 8, 16, 32)
CHANNELS = 256
ROIS_PER_IMAGE = 512


def _make_inputs(batch: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    h, w = IMAGE_HW
    feats = [torch.randn(batch, CHANNELS, h // s, w // s, generator=g).to("cuda", dtype) for s in STRIDES]
    # Box sizes log-uniform in [16, 800] px, aspect ratios in [1/2, 2]: all four levels get RoIs.
    k = batch * ROIS_PER_IMAGE
    size = torch.exp(torch.empty(k).uniform_(math.log(16), math.log(800), generator=g))
    aspect = torch.exp(torch.empty(k).uniform_(math.log(0.5), math.log(2.0), generator=g))
    bw, bh = size * aspect.sqrt(), size / aspect.sqrt()
    cx, cy = torch.rand(k, generator=g) * w, torch.rand(k, generator=g) * h
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).clamp(min=0)
    boxes[:, 2].clamp_(max=w)
    boxes[:, 3].clamp_(max=h)
    image = torch.arange(batch).repeat_interleave(ROIS_PER_IMAGE).float()
    rois = torch.cat([image[:, None], boxes], 1).cuda()
    return feats, rois


def _median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _step(forward, inputs, backward: bool):
    """A closure running forward (and backward with a fixed upstream gradient)."""
    if not backward:
        return lambda: forward()
    for t in inputs:
        t.requires_grad_(True)
    out = forward()
    grad = torch.randn_like(out)

    def run():
        for t in inputs:
            t.grad = None
        forward().backward(grad)

    return run


def _traffic_bytes(feats, rois, out_shape, dtype, backward: bool) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    feat = sum(f.numel() for f in feats) * elem
    out = math.prod(out_shape) * elem
    total = feat + out + rois.numel() * rois.element_size()
    if backward:
        total += out + feat  # incoming gradient read, feature gradients written
    return total


def _deterministic(flag: bool):
    class _Ctx:
        def __enter__(self):
            self.previous = torch.are_deterministic_algorithms_enabled()
            torch.use_deterministic_algorithms(flag)

        def __exit__(self, *exc):
            torch.use_deterministic_algorithms(self.previous)

    return _Ctx()


def run_gpu_cases(*, quick: bool = False, warmup: int = 3, repeats: int = 15) -> list[dict]:
    """Runs every GPU case and prints a table; returns one dict per case (for JSON)."""
    if not torch.cuda.is_available():
        print("GPU cases skipped: no CUDA device (run tools/bench_ops.py on a GPU machine)")
        return []
    import torchvision

    from maskrcnn.ops import multilevel_roi_align, roi_align

    results = []
    batches = (2,) if quick else (2, 8)
    for batch, dtype, out_size, sampling, backward in (
        (b, d, o, s, bw)
        for b in batches
        for d in (torch.float32, torch.bfloat16)
        for o in (7, 14)
        for s in (2, -1)
        for bw in (False, True)
    ):
        feats, rois = _make_inputs(batch, dtype)
        names = [f"p{i + 2}" for i in range(len(feats))]
        scales = [1.0 / s for s in STRIDES]
        box_list = [rois[rois[:, 0] == i, 1:] for i in range(batch)]
        pooler = torchvision.ops.MultiScaleRoIAlign(names, out_size, sampling_ratio=max(sampling, 0))
        image_shapes = [IMAGE_HW] * batch
        tag = dict(
            batch=batch,
            dtype=str(dtype).replace("torch.", ""),
            output=out_size,
            sampling=sampling,
            direction="fwd+bwd" if backward else "fwd",
        )

        def ours_multi():
            return multilevel_roi_align(
                feats,
                rois,
                fpn_levels(rois[:, 1:], min_level=2, max_level=5),
                scales,
                out_size,
                sampling_ratio=sampling,
                aligned=False,
                mode="avg",
            )

        def peer_multi():
            return pooler(dict(zip(names, feats)), box_list, image_shapes)

        def ours_single():
            return roi_align(
                feats[0], rois, out_size, spatial_scale=scales[0], sampling_ratio=sampling, aligned=True, mode="avg"
            )

        def peer_single():
            return torchvision.ops.roi_align(feats[0], rois, out_size, scales[0], max(sampling, 0), True)

        cases = [("multilevel", ours_multi, peer_multi, feats), ("single", ours_single, peer_single, feats[:1])]
        for name, ours, peer, used in cases:
            row = dict(case=name, **tag)
            with _deterministic(False):
                row["ours_ms"] = _median_ms(_step(ours, used, backward), warmup, repeats)
            try:
                with _deterministic(False):
                    row["peer_ms"] = _median_ms(_step(peer, used, backward), warmup, repeats)
                row["ratio"] = row["peer_ms"] / row["ours_ms"]
            except RuntimeError as error:  # e.g. no bfloat16 kernel in the installed torchvision
                row["peer_ms"], row["ratio"], row["peer_error"] = None, None, str(error).splitlines()[0]
            out_shape = (rois.shape[0], CHANNELS, out_size, out_size)
            row["ours_GBps"] = _traffic_bytes(used, rois, out_shape, dtype, backward) / row["ours_ms"] / 1e6
            if backward:
                with _deterministic(True):
                    row["ours_det_ms"] = _median_ms(_step(ours, used, True), warmup, repeats)
                row["det_over_atomic"] = row["ours_det_ms"] / row["ours_ms"]
            results.append(row)
            for t in used:
                t.requires_grad_(False)
                t.grad = None
        feats = rois = box_list = cases = None  # the closures' tensors: free them before empty_cache
        torch.cuda.empty_cache()
    _print_table(results)
    return results


def _print_table(rows: list[dict]) -> None:
    header = (
        f"{'case':<11}{'batch':>6}{'dtype':>10}{'out':>5}{'samp':>6}{'dir':>9}{'ours ms':>10}"
        f"{'tv ms':>10}{'tv/ours':>9}{'GB/s':>8}{'det ms':>9}{'det/atom':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        peer = f"{r['peer_ms']:.3f}" if r.get("peer_ms") is not None else "n/a"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "n/a"
        det = f"{r['ours_det_ms']:.3f}" if "ours_det_ms" in r else ""
        det_ratio = f"{r['det_over_atomic']:.2f}" if "det_over_atomic" in r else ""
        print(
            f"{r['case']:<11}{r['batch']:>6}{r['dtype']:>10}{r['output']:>5}{r['sampling']:>6}{r['direction']:>9}"
            f"{r['ours_ms']:>10.3f}{peer:>10}{ratio:>9}{r['ours_GBps']:>8.0f}{det:>9}{det_ratio:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 only")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    results = run_gpu_cases(quick=args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if results else None, "gpu_cases": results}, f, indent=2)


if __name__ == "__main__":
    main()
