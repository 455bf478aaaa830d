"""RoI Pooling's quantization, RoI Warp's rounded box and RoI Align's sampling for one box,
explained with the ops' own arithmetic (what ``tools/explain_roi.py`` prints and draws).

Every number about the ops comes from the helpers of ``maskrcnn.ops.reference`` (the executable
specification the kernels are tested against): ``pool_geometry``, ``pool_bin_ranges`` and
``round_half_away_from_zero`` for RoI Pooling, ``warp_box`` for RoI Warp (whose samples are then
RoI Align's, unaligned, in the rounded box), ``align_geometry`` and ``align_sample_coords`` for
RoI Align. ``--backward`` runs the ops' real backward on a one-hot output gradient.

Positions are in feature cells on one grid for all methods: cell ``i`` covers image pixels
``[stride * i, stride * (i + 1))``, so its edges are at integers and its value sits at its centre
``i + 0.5``. RoI Align samples in "sample coordinates" where the value of cell ``i`` is at ``i``
(a sample at ``p`` reads the feature at grid position ``p + 0.5``); ``aligned=True`` subtracts the
0.5 from the box first, which is why it lands exactly where the box is and ``aligned=False`` half
a cell (``stride / 2`` pixels) right of and below it. RoI Warp has no offset either: its samples
sit in the rounded box shifted half a cell right and down.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from . import reference as R

DTYPE = torch.float32  # the feature dtype the geometry is shown for (the kernels' float32 arithmetic)


@dataclass(frozen=True)
class Setup:
    image_h: int
    image_w: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    stride: int
    output: tuple[int, int]  # (oh, ow)
    sampling_ratio: int

    @property
    def scale(self) -> float:
        return 1.0 / self.stride

    @property
    def feature_size(self) -> tuple[int, int]:
        """(H, W) of the feature map: the model pads the image to a multiple of the stride."""
        return math.ceil(self.image_h / self.stride), math.ceil(self.image_w / self.stride)


@dataclass(frozen=True)
class Axis:
    """Everything about one axis (x or y) of the box; positions in cells of the common grid."""

    name: str
    stride: int
    box_px: tuple[float, float]  # box edges in image pixels
    exact: tuple[float, float]  # box edges on the feature grid: pixel / stride
    # RoI Pooling
    pool_round: tuple[int, int]  # round(x1 * scale), round(x2 * scale): start and end cell index
    pool_size: int  # max(end - start + 1, 1) cells
    pool_bin: float  # pool_size / pooled
    pool_bins: list[tuple[int, int]]  # cells [begin, end) of each bin, clipped to the map
    # RoI Align, aligned=True and aligned=False (sample coordinates, see the module docstring)
    align_start: float
    align_bin: float
    align_samples: list[list[float]]  # (pooled, grid)
    unaligned_start: float
    unaligned_bin: float
    unaligned_samples: list[list[float]]
    # RoI Warp: RoI Pool's rounded corners (pool_round), RoI Align's unaligned samples inside them
    warp_bin: float  # (round(x2 * scale) - round(x1 * scale)) / pooled, the size clamped to >= 1
    warp_samples: list[list[float]]  # (pooled, grid), sample coordinates

    @property
    def exact_bins(self) -> list[tuple[float, float]]:
        """Where the bins of the box really are: equal parts of [exact start, exact end]."""
        lo, hi = self.exact
        n = len(self.pool_bins)
        return [(lo + (hi - lo) * b / n, lo + (hi - lo) * (b + 1) / n) for b in range(n)]

    def samples(self, method: str) -> list[list[float]]:
        """Sample coordinates (pooled, grid) of method "aligned", "unaligned" or "warp"."""
        return {"aligned": self.align_samples, "unaligned": self.unaligned_samples, "warp": self.warp_samples}[method]

    def bin_edges(self, method: str) -> list[tuple[float, float]]:
        """Bin [start, end) on the common grid for method "pool", "warp", "aligned" or "unaligned"."""
        if method == "pool":
            return [(float(b), float(e)) for b, e in self.pool_bins]
        start, size = {
            "aligned": (self.align_start, self.align_bin),
            "unaligned": (self.unaligned_start, self.unaligned_bin),
            "warp": (float(self.pool_round[0]), self.warp_bin),
        }[method]
        # + 0.5: from sample coordinates back to the grid (cell i's value sits at i + 0.5).
        return [(start + 0.5 + b * size, start + 0.5 + (b + 1) * size) for b in range(len(self.pool_bins))]

    def errors(self, method: str) -> list[float]:
        """Signed error (cells) of every bin's start and end edge against the exact position."""
        return [
            edge - true for got, want in zip(self.bin_edges(method), self.exact_bins) for edge, true in zip(got, want)
        ]


def explain(setup: Setup) -> tuple[Axis, Axis]:
    """The geometry of both axes, (x, y), computed with the reference helpers."""
    acc = R.accumulation_dtype(DTYPE)
    box = torch.tensor(setup.box, dtype=acc)
    height, width = setup.feature_size
    oh, ow = setup.output
    pool = R.pool_geometry(box, setup.scale)
    rounded = R.round_half_away_from_zero(box * torch.tensor(setup.scale, dtype=acc)).to(torch.int64).tolist()
    aligned = R.align_geometry(box, setup.scale, setup.output, setup.sampling_ratio, aligned=True)
    unaligned = R.align_geometry(box, setup.scale, setup.output, setup.sampling_ratio, aligned=False)
    # RoI Warp: RoI Align (unaligned) of the rounded box, which is in feature cells: scale 1.
    warp = R.align_geometry(R.warp_box(box, setup.scale), 1.0, setup.output, setup.sampling_ratio, aligned=False)

    def axis(name, i, pool_start, pool_size, pooled, size, a_start, a_bin, u_start, u_bin, grid_a, grid_u, w):
        w_start, w_bin, w_grid = w
        lo, hi = setup.box[i], setup.box[i + 2]
        return Axis(
            name=name,
            stride=setup.stride,
            box_px=(lo, hi),
            exact=(lo / setup.stride, hi / setup.stride),
            pool_round=(rounded[i], rounded[i + 2]),
            pool_size=pool_size,
            pool_bin=pool_size / pooled,
            pool_bins=R.pool_bin_ranges(pool_start, pool_size, pooled, size, acc),
            align_start=a_start.item(),
            align_bin=a_bin.item(),
            align_samples=R.align_sample_coords(a_start, a_bin, pooled, grid_a).tolist(),
            unaligned_start=u_start.item(),
            unaligned_bin=u_bin.item(),
            unaligned_samples=R.align_sample_coords(u_start, u_bin, pooled, grid_u).tolist(),
            warp_bin=w_bin.item(),
            warp_samples=R.align_sample_coords(w_start, w_bin, pooled, w_grid).tolist(),
        )

    x = axis(
        "x",
        0,
        pool.start_w,
        pool.roi_w,
        ow,
        width,
        aligned.start_w,
        aligned.bin_w,
        unaligned.start_w,
        unaligned.bin_w,
        aligned.grid_w,
        unaligned.grid_w,
        (warp.start_w, warp.bin_w, warp.grid_w),
    )
    y = axis(
        "y",
        1,
        pool.start_h,
        pool.roi_h,
        oh,
        height,
        aligned.start_h,
        aligned.bin_h,
        unaligned.start_h,
        unaligned.bin_h,
        aligned.grid_h,
        unaligned.grid_h,
        (warp.start_h, warp.bin_h, warp.grid_h),
    )
    return x, y


# ------------------------------------------------------------------------------------------------
# Backward: which input cells one output bin sends gradient to
# ------------------------------------------------------------------------------------------------


def smooth_field(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A (1, 1, H, W) float64 feature map with distinct, smoothly varying values (so that max
    pooling has a meaningful winner): a 6 x 6 standard-normal grid (torch.manual_seed(seed)),
    bicubically upsampled to H x W."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, 6, 6, generator=generator, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)


def real_ops():
    """(roi_pool, roi_align, roi_warp) of maskrcnn.ops, the functions the models use; roi_warp
    with the reference's signature (``mode`` positional)."""
    from maskrcnn.ops import roi_align, roi_pool, roi_warp

    def warp(input, rois, output_size, spatial_scale, sampling_ratio, mode):
        return roi_warp(input, rois, output_size, spatial_scale, sampling_ratio, mode=mode)

    return roi_pool, roi_align, warp


def reference_ops():
    return R.roi_pool_reference, R.roi_align_reference, R.roi_warp_reference


def gradient_weights(
    setup: Setup, feature: torch.Tensor, bin_rc: tuple[int, int], ops=None
) -> dict[str, list[tuple[int, int, float]]]:
    """Input cells (row, col, weight) that output bin ``bin_rc`` sends gradient to, for RoI Pool,
    RoI Warp (max), RoI Align (average) and RoI Align (max), both aligned: the backward of the
    ops on a one-hot output gradient. ``feature``: (1, 1, H, W); ``ops``: (roi_pool, roi_align,
    roi_warp), default the real ops."""
    roi_pool, roi_align, roi_warp = ops if ops is not None else real_ops()
    rois = torch.tensor([[0.0, *setup.box]], dtype=feature.dtype)
    runs = {
        "roi_pool": lambda f: roi_pool(f, rois, setup.output, setup.scale),
        "roi_warp_max": lambda f: roi_warp(f, rois, setup.output, setup.scale, setup.sampling_ratio, "max"),
        "roi_align_avg": lambda f: roi_align(f, rois, setup.output, setup.scale, setup.sampling_ratio, True, "avg"),
        "roi_align_max": lambda f: roi_align(f, rois, setup.output, setup.scale, setup.sampling_ratio, True, "max"),
    }
    result = {}
    for name, run in runs.items():
        leaf = feature.detach().clone().requires_grad_(True)
        out = run(leaf)
        one_hot = torch.zeros_like(out)
        one_hot[0, 0, bin_rc[0], bin_rc[1]] = 1.0
        out.backward(one_hot)
        grad = leaf.grad[0, 0]
        result[name] = [(r, c, grad[r, c].item()) for r, c in torch.nonzero(grad).tolist()]
    return result


# ------------------------------------------------------------------------------------------------
# Print-out
# ------------------------------------------------------------------------------------------------


def _f(values, digits=3) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


def error_summary(axes: tuple[Axis, Axis]) -> dict[str, tuple[float, float]]:
    """Largest and mean |error| (cells) of all bin edges of both axes, per method."""
    summary = {}
    for method in ("pool", "warp", "unaligned", "aligned"):
        errors = [abs(e) for a in axes for e in a.errors(method)]
        summary[method] = (max(errors), sum(errors) / len(errors))
    return summary


def report(setup: Setup, axes: tuple[Axis, Axis]) -> str:
    x, y = axes
    if dataclasses.replace(y, name="x") == x:  # a square box on a square map: say it once
        axes = (dataclasses.replace(x, name="x and y"),)
    s, (oh, ow) = setup.stride, setup.output
    height, width = setup.feature_size
    lines = [
        f"Image {setup.image_w} x {setup.image_h} px, box (x1, y1, x2, y2) = {_f(setup.box, 1)} px, "
        f"stride {s} (spatial_scale 1/{s} = {setup.scale:g}), output {oh} x {ow}, sampling_ratio {setup.sampling_ratio}",
        f"Feature map {height} x {width} cells; cell i covers image pixels [{s} i, {s} (i + 1)), "
        f"all positions below are on that grid (cell edges at integers).",
        "",
        "Box on the feature map",
    ]
    for a in axes:
        lines.append(
            f"  {a.name}: {a.box_px[0]:g} / {s} = {a.exact[0]:.3f} .. {a.box_px[1]:g} / {s} = {a.exact[1]:.3f}"
            f"  -> {a.exact[1] - a.exact[0]:.3f} cells ({a.box_px[1] - a.box_px[0]:g} px)"
        )
    lines += ["", "RoI Pooling (Fast R-CNN; our op and torchvision compute exactly this)"]
    for a in axes:
        (r0, r1), n = a.pool_round, len(a.pool_bins)
        covered = (a.pool_bins[0][0], a.pool_bins[-1][1])
        lines += [
            f"  {a.name}: quantization 1, corners rounded to cell indices: round({a.exact[0]:.3f}) = {r0}, "
            f"round({a.exact[1]:.3f}) = {r1}; size = end - start + 1 = {a.pool_size} cells",
            f"     quantization 2, bin = {a.pool_size} / {n} = {a.pool_bin:.3f} cells; bin b covers cells "
            f"[floor(b * {a.pool_bin:.3f}), ceil((b + 1) * {a.pool_bin:.3f})) + {r0}:",
            "     "
            + " ".join(f"[{b},{e})" for b, e in a.pool_bins)
            + f"  ({', '.join(sorted({str(e - b) for b, e in a.pool_bins}))} cells each)",
            f"     the bins pool cells {covered[0]}..{covered[1] - 1} = image px [{covered[0] * s}, {covered[1] * s})"
            f" for a box of [{a.box_px[0]:g}, {a.box_px[1]:g}]",
        ]
    lines += ["", "RoI Warp (MNC, Table 2c's RoIWarp: RoI Pool's rounded corners, RoI Align's unaligned samples)"]
    for a in axes:
        (r0, r1), n = a.pool_round, len(a.pool_bins)
        lines += [
            f"  {a.name}: corners rounded as RoI Pool's: round({a.exact[0]:.3f}) = {r0}, round({a.exact[1]:.3f}) = {r1}; "
            f"size = end - start = {r1 - r0} cells (no + 1; clamped to >= 1)",
            f"     bin = {max(r1 - r0, 1)} / {n} = {a.warp_bin:.3f} cells, {len(a.warp_samples[0])} samples per bin, "
            f"no half-pixel offset (read half a cell right/below, as aligned=False)",
            "     bin edges on the grid: " + _f([a.bin_edges("warp")[0][0]] + [e for _, e in a.bin_edges("warp")]),
            "     sample points (sample coords; + 0.5 on the grid): " + " | ".join(_f(p) for p in a.warp_samples),
        ]
    lines += ["", "RoI Align (Mask R-CNN; no quantization, bilinear samples)"]
    for a in axes:
        grid = len(a.align_samples[0])
        lines += [
            f"  {a.name}: aligned=True : start {a.exact[0]:.3f} - 0.5 = {a.align_start:.3f} (sample coords), "
            f"bin = {a.exact[1] - a.exact[0]:.3f} / {len(a.pool_bins)} = {a.align_bin:.3f} cells, {grid} samples per bin",
            "     bin edges on the grid: "
            + _f([a.bin_edges("aligned")[0][0]] + [e for _, e in a.bin_edges("aligned")]),
            "     sample points (sample coords; + 0.5 on the grid): " + " | ".join(_f(p) for p in a.align_samples),
            f"     aligned=False: start {a.unaligned_start:.3f}, bin {a.unaligned_bin:.3f} (size clamped to >= 1 cell); "
            f"samples " + " | ".join(_f(p) for p in a.unaligned_samples),
        ]
    lines += ["", "Bin edge errors against the exact positions (cells, and image px in brackets)"]
    for a in axes:
        lines.append(f"  {a.name}: bin   exact [start, end)    RoI Pool [start, end)   error start      error end")
        for b, ((t0, t1), (p0, p1)) in enumerate(zip(a.exact_bins, a.bin_edges("pool"))):
            e0, e1 = p0 - t0, p1 - t1
            lines.append(
                f"     {b:>4}   {t0:8.3f} {t1:8.3f}      {p0:5.0f} {p1:5.0f}         "
                f"{e0:+.3f} ({e0 * s:+5.1f})  {e1:+.3f} ({e1 * s:+5.1f})"
            )
    names = {
        "pool": "RoI Pool",
        "warp": "RoI Warp",
        "unaligned": "RoI Align aligned=False",
        "aligned": "RoI Align aligned=True",
    }
    for method, (largest, mean) in error_summary((x, y)).items():
        name = names[method]
        lines.append(
            f"  {name:<24} largest |error| {largest:.3f} cells = {largest * s:5.1f} px, "
            f"mean {mean:.3f} cells = {mean * s:5.1f} px"
        )
    lines += ["", *popular_account(setup, x)]
    return "\n".join(lines)


def popular_account(setup: Setup, a: Axis) -> list[str]:
    """The textbook story (floor the box, floor the bin) beside what the op does, for one axis.
    The floors below are the textbook's arithmetic, not the op's; the op's numbers come from `a`."""
    n, s = len(a.pool_bins), setup.stride
    width = a.exact[1] - a.exact[0]
    floored = math.floor(width)
    lost = width - floored
    last_edge = a.pool_bins[-1][1]
    return [
        f"The popular account ({a.name} axis) and what the op really does",
        f"  Popular: the box is {width:.2f} cells wide, RoI Pooling makes it floor = {floored}; its {n} bins are "
        f"{floored}/{n} = {floored / n:.2f} -> {floored // n} cells",
        f"  against {width:.2f}/{n} = {a.align_bin:.2f} for RoI Align; the {lost:.2f} cell cut off is "
        f"{lost:.2f} x {s} = {lost * s:.0f} px in the image.",
        f"  The op (Fast R-CNN, torchvision, ours) rounds instead of flooring and counts cells inclusively: "
        f"end index round({a.exact[1]:.2f}) = {a.pool_round[1]},",
        f"  size {a.pool_round[1]} - {a.pool_round[0]} + 1 = {a.pool_size} cells, bins {a.pool_size}/{n} = "
        f"{a.pool_bin:.2f} widened to whole cells by floor/ceil (so neighbouring bins can share a cell).",
        f"  Its pooled region ends at cell edge {last_edge}, {last_edge - a.exact[1]:+.2f} cells = "
        f"{(last_edge - a.exact[1]) * s:+.0f} px from the box edge; the misalignment is real, its size and sign "
        f"depend on the box.",
    ]


def backward_report(weights: dict[str, list[tuple[int, int, float]]], bin_rc, seed: int) -> str:
    lines = [
        f"Backward of output bin (row {bin_rc[0]}, col {bin_rc[1]}): input cells (row, col) and the gradient "
        f"they receive from a one-hot output gradient",
        f"  feature map: smooth random field (6 x 6 standard normals, seed {seed}, bicubic upsampling), float64",
    ]
    for name, cells in weights.items():
        total = sum(w for _, _, w in cells)
        lines.append(
            f"  {name:<14} {len(cells)} cells, sum {total:.6f}: " + ", ".join(f"({r},{c}) {w:.4f}" for r, c, w in cells)
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Figure
# ------------------------------------------------------------------------------------------------


def _panel_grid(ax, setup: Setup, view, title: str, axes: tuple[Axis, Axis]):
    """Feature cells (grey lines), the map's border and the exact box (red, dashed)."""
    from matplotlib.patches import Rectangle

    (x0, x1), (y0, y1) = view
    height, width = setup.feature_size
    for i in range(math.ceil(x0), math.floor(x1) + 1):
        ax.axvline(i, color="0.85", lw=0.6, zorder=0)
    for i in range(math.ceil(y0), math.floor(y1) + 1):
        ax.axhline(i, color="0.85", lw=0.6, zorder=0)
    ax.add_patch(Rectangle((0, 0), width, height, fill=False, ec="0.3", lw=1.2, zorder=1))
    x, y = axes
    ax.add_patch(
        Rectangle(
            (x.exact[0], y.exact[0]),
            x.exact[1] - x.exact[0],
            y.exact[1] - y.exact[0],
            fill=False,
            ec="red",
            ls="--",
            lw=2,
            zorder=5,
            label="box (exact)",
        )
    )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)  # image convention: y grows downwards
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"x (feature cells; 1 cell = {setup.stride} px)", fontsize=8)
    ax.set_ylabel("y (feature cells)", fontsize=8)


def _draw_pool_bins(ax, axes: tuple[Axis, Axis], only=None):
    from matplotlib.patches import Rectangle

    x, y = axes
    for r, (yb, ye) in enumerate(y.pool_bins):
        for c, (xb, xe) in enumerate(x.pool_bins):
            if only is not None and (r, c) != only:
                continue
            color = ("tab:blue", "tab:orange")[(r + c) % 2]
            label = "RoI Pool bins (cells shared by two bins darker)" if (r, c) == (only or (0, 0)) else None
            # A small inset keeps the outlines of neighbouring (possibly overlapping) bins apart.
            ax.add_patch(
                Rectangle(
                    (xb + 0.06, yb + 0.06),
                    xe - xb - 0.12,
                    ye - yb - 0.12,
                    fc=color,
                    alpha=0.18,
                    ec=color,
                    lw=1.2,
                    zorder=2,
                    label=label,
                )
            )


def _draw_align_bins(ax, axes: tuple[Axis, Axis], method: str, only=None):
    from matplotlib.patches import Rectangle

    x, y = axes
    xs, ys = x.samples(method), y.samples(method)
    for r, (yb, ye) in enumerate(y.bin_edges(method)):
        for c, (xb, xe) in enumerate(x.bin_edges(method)):
            if only is not None and (r, c) != only:
                continue
            first = (r, c) == (only or (0, 0))
            ax.add_patch(
                Rectangle(
                    (xb, yb),
                    xe - xb,
                    ye - yb,
                    fill=False,
                    ec="tab:green",
                    lw=1.0,
                    zorder=3,
                    label=("RoI Warp bins" if method == "warp" else "RoI Align bins") if first else None,
                )
            )
            # + 0.5: a sample at p reads the feature at grid position p + 0.5 (the cell centre convention).
            px = [p + 0.5 for p in xs[c] for _ in ys[r]]
            py = [p + 0.5 for _ in xs[c] for p in ys[r]]
            ax.scatter(px, py, s=9, color="tab:green", zorder=4, label="sample points" if first else None)


def _view(setup: Setup, axes: tuple[Axis, Axis], margin: float = 1.0):
    height, width = setup.feature_size
    view = []
    for a, size in zip(axes, (width, height)):
        points = [
            a.exact[0],
            a.exact[1],
            a.pool_bins[0][0],
            a.pool_bins[-1][1],
            *(e for method in ("unaligned", "warp") for pair in a.bin_edges(method) for e in pair),
        ]
        view.append((max(min(points) - margin, -1.0), min(max(points) + margin, size + 1.0)))
    return view


def draw_figure(setup: Setup, axes: tuple[Axis, Axis], path: str, feature=None, weights=None, bin_rc=None):
    """Top row: RoI Pooling's integer bins, RoI Warp's bins and samples in the rounded box, RoI
    Align's bins and samples (aligned, unaligned). With ``weights`` (from gradient_weights) a
    second row shows the gradient of bin ``bin_rc`` for each of the four."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x, y = axes
    rows = 2 if weights else 1
    fig, grid = plt.subplots(rows, 4, figsize=(21, 5.6 * rows), squeeze=False)
    view = _view(setup, axes)
    ax = grid[0][0]
    _panel_grid(
        ax,
        setup,
        view,
        f"RoI Pooling: corners rounded to cells, {x.pool_size} x {y.pool_size} cells,\n"
        f"bins of {x.pool_bin:.2f} x {y.pool_bin:.2f} cells snapped to whole cells (floor / ceil)",
        axes,
    )
    _draw_pool_bins(ax, axes)
    ax = grid[0][1]
    _panel_grid(
        ax,
        setup,
        view,
        f"RoI Warp: corners rounded as RoI Pool's, bins of {x.warp_bin:.2f} x {y.warp_bin:.2f} cells,\n"
        f"{len(x.warp_samples[0])} x {len(y.warp_samples[0])} bilinear samples per bin "
        f"(no offset: read {setup.stride / 2:g} px right/below)",
        axes,
    )
    _draw_align_bins(ax, axes, "warp")
    for method, ax in (("aligned", grid[0][2]), ("unaligned", grid[0][3])):
        _panel_grid(
            ax,
            setup,
            view,
            f"RoI Align, aligned={method == 'aligned'}: bins of {x.align_bin:.2f} x "
            f"{y.align_bin:.2f} cells,\n{len(x.align_samples[0])} x {len(y.align_samples[0])} bilinear samples "
            f"per bin" + ("" if method == "aligned" else f" (read {setup.stride / 2:g} px right/below)"),
            axes,
        )
        _draw_align_bins(ax, axes, method)
    for ax in grid[0]:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    if weights:
        height, width = feature.shape[-2:]
        r, c = bin_rc
        (xb, xe), (yb, ye) = x.pool_bins[c], y.pool_bins[r]
        (ab, ae), (bb, be) = x.bin_edges("aligned")[c], y.bin_edges("aligned")[r]
        (wb, we), (vb, ve) = x.bin_edges("warp")[c], y.bin_edges("warp")[r]
        zoom = [(min(xb, ab, wb) - 1.5, max(xe, ae, we) + 1.5), (min(yb, bb, vb) - 1.5, max(ye, be, ve) + 1.5)]
        titles = {
            "roi_pool": "RoI Pool: gradient to the argmax cell",
            "roi_warp_max": "RoI Warp max: neighbours of the winning sample",
            "roi_align_avg": "RoI Align avg: bilinear weights / samples",
            "roi_align_max": "RoI Align max: neighbours of the winning sample",
        }
        for ax, (name, cells) in zip(grid[1], weights.items()):
            _panel_grid(ax, setup, zoom, f"{titles[name]}, output bin ({r}, {c})", axes)
            ax.imshow(feature[0, 0].numpy(), cmap="gray", extent=(0, width, height, 0), alpha=0.45, zorder=0)
            if name == "roi_pool":
                _draw_pool_bins(ax, axes, only=bin_rc)
            else:
                _draw_align_bins(ax, axes, "warp" if name == "roi_warp_max" else "aligned", only=bin_rc)
            top = max(w for _, _, w in cells)
            for row, col, w in cells:
                ax.add_patch(Rectangle((col, row), 1, 1, fc=plt.cm.Reds(0.25 + 0.75 * w / top), alpha=0.8, zorder=1))
                ax.text(col + 0.5, row + 0.5, f"{w:.3f}", ha="center", va="center", fontsize=7, zorder=6)
            ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
    fig.suptitle(
        f"Box {tuple(round(v, 1) for v in setup.box)} px on a stride-{setup.stride} feature map, "
        f"output {setup.output[0]} x {setup.output[1]}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
