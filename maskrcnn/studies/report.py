"""The aggregated report of a study: mean ± std over seeds per variant, paired Δ vs the baseline,
missing and failed runs listed, as Markdown, JSON and a chart; the learning curves (:mod:`.curves`)
and, for a study that asks for it, the study next to a table of the paper (:mod:`.paper_table`).

Values are in percent, like the papers. ``std`` is the sample standard deviation over seeds
(n - 1 in the denominator; blank for n = 1). ``Δ`` compares each variant with the baseline seed by
seed (same seed: same initial weights and data order) over the seeds both finished: the mean of
the per-seed differences ± their standard deviation, with the number of pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from . import paper_table as paper
from .curves import aggregate_curves, curves_markdown, write_curves_chart
from .runner import read_run_info, run_state
from .spec import PaperTableSpec
from .stats import TASK_TITLES, TASKS, metric_label, metric_value, pm, save_figure, summarize


@dataclass
class RunRecord:
    directory: Path
    label: str
    seed: int | None
    state: str
    metrics: dict | None
    roi: dict = field(default_factory=dict)
    cpu_s: float | None = None
    wall_s: float | None = None


def _read_config(directory: Path) -> dict:
    path = directory / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def collect_runs(
    directories: list[Path], *, labels: dict[Path, str] | None = None, seeds: dict[Path, int] | None = None
) -> list[RunRecord]:
    """One record per run folder: its variant label (given, else the runner's, else the RoI
    layer's name), seed (the run's, else given), state and, when finished, its final metrics."""
    records = []
    for directory in directories:
        directory = Path(directory)
        cfg = _read_config(directory)
        info = read_run_info(directory)
        roi = cfg.get("roi_layer") or {}
        label = (labels or {}).get(directory) or info.get("variant") or roi.get("name") or directory.name
        seed = cfg.get("seed", info.get("seed", (seeds or {}).get(directory)))
        state = run_state(directory)
        complete = all("cpu_s" in attempt for attempt in info.get("attempts", []))
        metrics = None
        if state == "finished":
            metrics = json.loads((directory / "metrics.json").read_text())
        records.append(
            RunRecord(
                directory=directory,
                label=str(label),
                seed=seed,
                state=state,
                metrics=metrics,
                roi=roi,
                # A run with an attempt cut off (no times recorded) has an unknown cost.
                cpu_s=info.get("cpu_s") if complete else None,
                wall_s=info.get("wall_s") if complete else None,
            )
        )
    return records


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders below ``root`` (those with a Hydra ``.hydra/config.yaml``): a study's or a
    ``-m`` sweep's, in job order where Hydra recorded it, else by path."""
    runs = [p.parent.parent for p in Path(root).rglob(".hydra/config.yaml")]

    def order(run: Path):
        hydra_file = run / ".hydra" / "hydra.yaml"
        if hydra_file.is_file():
            num = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num")
            if num is not None:
                return (0, int(num), str(run))
        return (1, 0, str(run))

    return sorted(runs, key=order)


def disambiguate_labels(records: list[RunRecord]) -> None:
    """Where runs of one label have different RoI-layer configs (a sweep over
    ``roi_layer.sampling_ratio`` keeps the name ``roi_align``), append the differing settings."""
    by_label: dict[str, list[RunRecord]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    for label, runs in by_label.items():
        configs = [{k: v for k, v in r.roi.items() if k != "_target_"} for r in runs]
        keys = sorted({k for c in configs for k in c if len({json.dumps(x.get(k)) for x in configs}) > 1})
        if keys:
            for r, c in zip(runs, configs):
                r.label = f"{label} (" + ", ".join(f"{k}={c.get(k)}" for k in keys) + ")"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it (reports get committed)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def describe_roi_layer(roi: dict) -> dict[str, str]:
    """Table 2c's descriptive columns of a RoI layer config (plus its sample points)."""
    if not roi:
        return {"op": "?", "bilinear": "", "agg.": "", "aligned": "", "samples": ""}
    op = roi.get("op", roi.get("name", "?"))
    if op == "roi_pool":
        return {"op": "RoIPool", "bilinear": "", "agg.": "max", "aligned": "", "samples": ""}
    sr = roi.get("sampling_ratio", 0)
    if op == "roi_warp":  # RoI Align of the box rounded to the grid: never the half-pixel offset
        return {
            "op": "RoIWarp",
            "bilinear": "✓",
            "agg.": str(roi.get("mode", "max")),
            "aligned": "",
            "samples": "adaptive" if sr is None or int(sr) <= 0 else f"{int(sr)}x{int(sr)}",
        }
    return {
        "op": "RoIAlign",
        "bilinear": "✓",
        "agg.": str(roi.get("mode", "avg")),
        "aligned": "✓" if roi.get("aligned", True) else "",
        "samples": "adaptive" if sr is None or int(sr) <= 0 else f"{int(sr)}x{int(sr)}",
    }


def aggregate(records: list[RunRecord], *, baseline: str | None = None, variants: list[str] | None = None) -> dict:
    """Per variant (in ``variants`` order, else first-seen): the metrics' statistics over finished
    seeds, the paired Δ vs ``baseline``, timing; and the runs that are not finished."""
    order = list(variants or [])
    for r in records:
        if r.label not in order:
            order.append(r.label)
    finished = [r for r in records if r.metrics is not None]
    tasks = [
        t for t, (keys, _, _) in TASKS.items() if any(metric_value(r.metrics, keys[0]) is not None for r in finished)
    ]
    out = {"tasks": tasks, "baseline": baseline, "variants": {}, "not_finished": []}
    for label in order:
        runs = [r for r in records if r.label == label]
        done = [r for r in runs if r.metrics is not None]
        entry = {
            "roi_layer": describe_roi_layer(runs[0].roi) if runs else {},
            "seeds": sorted(r.seed for r in done if r.seed is not None),
            "n": len(done),
            "metrics": {},
        }
        for task in tasks:
            for key in TASKS[task][0]:
                entry["metrics"][key] = summarize([v for r in done if (v := metric_value(r.metrics, key)) is not None])
        times = [r.metrics["time/iter"] for r in done if isinstance(r.metrics.get("time/iter"), (int, float))]
        entry["time/iter"] = summarize(times)
        entry["cpu_min/run"] = summarize([r.cpu_s / 60 for r in done if r.cpu_s is not None])
        entry["wall_min/run"] = summarize([r.wall_s / 60 for r in done if r.wall_s is not None])
        out["variants"][label] = entry
        out["not_finished"] += [
            {"variant": label, "seed": r.seed, "state": r.state, "directory": _shown(r.directory)}
            for r in runs
            if r.metrics is None
        ]
    if baseline is not None and baseline in out["variants"]:
        base = {r.seed: r for r in finished if r.label == baseline}
        for label, entry in out["variants"].items():
            if label == baseline:
                continue
            entry["delta"] = {}
            mine = {r.seed: r for r in finished if r.label == label}
            pairs = sorted(set(mine) & set(base), key=lambda s: (s is None, s))
            for task in tasks:
                for key in TASKS[task][2]:
                    diffs = [
                        mine[s].metrics[key] - base[s].metrics[key]
                        for s in pairs
                        if metric_value(mine[s].metrics, key) is not None
                        and metric_value(base[s].metrics, key) is not None
                    ]
                    entry["delta"][key] = summarize(diffs)
    return out


def _cost(entry: dict) -> str:
    cost = entry["cpu_min/run"]
    text = pm(cost, 1, 1)
    return text if cost["n"] in (0, entry["n"]) else f"{text} (n={cost['n']})"


def to_markdown(agg: dict, *, title: str | None = None) -> str:
    lines = [f"### {title}", ""] if title else []
    variants = agg["variants"]
    baseline = agg["baseline"]
    lines += [
        "| variant | RoI layer | bilinear | agg. | aligned | samples/bin | n (seeds) | s/iter | CPU min/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in variants.items():
        d = e["roi_layer"] or describe_roi_layer({})
        seeds = ",".join(str(s) for s in e["seeds"])
        lines.append(
            f"| `{label}` | {d['op']} | {d['bilinear']} | {d['agg.']} | {d['aligned']} | {d['samples']} "
            f"| {e['n']} ({seeds}) | {pm(e['time/iter'], 1, 3)} | {_cost(e)} |"
        )
    untimed = sum(e["n"] - e["cpu_min/run"]["n"] for e in variants.values())
    if untimed:
        lines += [
            "",
            f"CPU min/run is over the runs whose every attempt was timed (n=k where fewer than the "
            f"variant's runs); {untimed} finished run(s) had an attempt cut off with the runner, "
            f"whose CPU time is unknown.",
        ]
    for task in agg["tasks"]:
        keys, _, delta_keys = TASKS[task]
        head = [metric_label(k) for k in keys]
        if baseline is not None:
            head += [f"Δ {metric_label(k)} vs `{baseline}`" for k in delta_keys]
        lines += [
            "",
            f"**{TASK_TITLES[task]}**, mean ± std over seeds, percent",
            "",
            "| variant | n | " + " | ".join(head) + " |",
            "|" + "---|" * (len(head) + 2),
        ]
        for label, e in variants.items():
            row = [f"`{label}`", str(e["n"])] + [pm(e["metrics"].get(k)) for k in keys]
            if baseline is not None:
                if label == baseline:
                    row += ["(baseline)"] * len(delta_keys)
                else:
                    row += [
                        pm(e["delta"].get(k), signed=True)
                        + (f" (n={e['delta'][k]['n']})" if e["delta"].get(k) and e["delta"][k]["n"] else "")
                        for k in delta_keys
                    ]
            lines.append("| " + " | ".join(row) + " |")
    if agg["not_finished"]:
        lines += ["", "Runs not in the table:", ""]
        lines += [f"- `{m['variant']}` seed {m['seed']}: {m['state']} ({m['directory']})" for m in agg["not_finished"]]
    return "\n".join(lines) + "\n"


def write_chart(agg: dict, path: Path, *, title: str | None = None) -> Path:
    """Grouped bars with error bars (std over seeds): per task (box, mask, VOC) a panel, per
    variant a group, its AP and AP75 (VOC: 11-point and area mAP) side by side."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the study chart needs matplotlib: pip install -e '.[viz]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = agg["tasks"] or ["bbox"]
    labels = list(agg["variants"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.0 + 0.9 * max(3, len(labels)) * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        keys = TASKS[task][1]
        width = 0.8 / len(keys)
        for j, key in enumerate(keys):
            means = [100 * (agg["variants"][v]["metrics"].get(key, {}).get("mean") or 0.0) for v in labels]
            errs = [100 * (agg["variants"][v]["metrics"].get(key, {}).get("std") or 0.0) for v in labels]
            xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(labels))]
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=metric_label(key))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(TASK_TITLES[task], fontsize=9)
        ax.set_ylabel("percent")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, title)


def write_report(
    directories: list[Path],
    *,
    out_dir: Path,
    title: str | None = None,
    baseline: str | None = None,
    variants: list[str] | None = None,
    labels: dict[Path, str] | None = None,
    seeds: dict[Path, int] | None = None,
    chart: bool = True,
    paper_table: PaperTableSpec | None = None,
) -> dict:
    """Collects, aggregates and writes ``report.md``, ``report.json``, ``chart.png`` and
    ``curves.png`` into ``out_dir``; returns ``{"aggregate", "markdown", "paths"}``. Each variant's
    learning curve goes into its ``curve``; with ``paper_table`` (a study spec's) the table
    next to the paper's goes into the Markdown and ``paper_table``."""
    records = collect_runs(directories, labels=labels, seeds=seeds)
    agg = aggregate(records, baseline=baseline, variants=variants)
    curves = aggregate_curves(records, list(agg["variants"]), agg["tasks"])
    for label, curve in curves.items():
        agg["variants"][label]["curve"] = curve
    markdown = to_markdown(agg, title=title)
    if paper_table is not None:
        rows = paper.paper_rows(paper_table.table, paper_table.rows)
        agg["paper_table"] = paper.paper_table(agg, rows, paper_table.table)
        markdown += "\n" + paper.to_markdown(agg["paper_table"])
    markdown += curves_markdown(curves, agg["tasks"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "report.md", "json": out_dir / "report.json"}
    paths["markdown"].write_text(markdown)
    paths["json"].write_text(json.dumps({"title": title, **agg}, indent=2) + "\n")
    if chart and any(e["n"] for e in agg["variants"].values()):
        paths["chart"] = write_chart(agg, out_dir / "chart.png", title=title)
    if chart and (curves_png := write_curves_chart(curves, agg["tasks"], out_dir / "curves.png", title=title)):
        paths["curves"] = curves_png
    return {"aggregate": agg, "markdown": markdown, "paths": paths}
