"""Learning curves of a study: the periodic evaluations (``solver.eval_period``) in each run's
``metrics.jsonl``, mean ± std over the finished seeds of each variant per iteration, as data for
``report.json``, a Markdown table and ``curves.png``.

A run that was interrupted and resumed from a checkpoint may have evaluated an iteration twice, or
evaluated iterations past its checkpoint before the interruption: the last line of an iteration is
the one kept. Only finished runs enter the means, and only at the iterations every finished seed of
the variant evaluated; the partial curves of unfinished runs are listed apart. Values in percent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .stats import TASK_NAMES, TASKS, metric_label, metric_value, pm, save_figure, summarize

if TYPE_CHECKING:
    from .report import RunRecord


def curve_keys(tasks: list[str]) -> list[str]:
    """The metrics a curve follows: per task its charted pair (AP and AP75, or VOC's two mAPs)."""
    return [key for task in tasks for key in TASKS[task][1]]


def read_curve(directory: Path, keys: list[str]) -> dict[int, dict[str, float | None]]:
    """``{iteration: {key: percent or None}}`` of the evaluation lines (those with any of ``keys``)
    of ``directory/metrics.jsonl``, sorted by iteration, the last line of an iteration winning;
    ``{}`` without the file. None marks a value that is not a measurement (COCOeval's -1)."""
    path = Path(directory) / "metrics.jsonl"
    if not path.is_file():
        return {}
    points = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short when the run was killed
        if isinstance(record, dict) and "iteration" in record and any(k in record for k in keys):
            points[int(record["iteration"])] = {
                k: None if (v := metric_value(record, k)) is None else 100 * v for k in keys
            }
    return dict(sorted(points.items()))


def _run_names(records: list[RunRecord]) -> list[str]:
    """A name per run: its seed, or its folder where seeds are unknown or repeat."""
    names = [str(r.seed) for r in records]
    if None in [r.seed for r in records] or len(set(names)) < len(names):
        names = [f"{r.seed} ({r.directory})" for r in records]
    return names


def variant_curve(runs: list[RunRecord], keys: list[str]) -> dict:
    """The curve of one variant's runs: ``{"unit": "percent", "n", "seeds", "iterations",
    "metrics": {key: {"mean", "std", "n", "per_seed": {seed: [value per iteration]}}},
    "left_out_iterations", "partial": [{"seed", "state", "iterations"}]}``. ``n`` counts the
    finished seeds; a point is an iteration all of them evaluated (the others are
    ``left_out_iterations``); ``std`` is None for one seed; ``partial`` lists the curves of
    unfinished runs, not in the means."""
    finished = [(r, read_curve(r.directory, keys)) for r in runs if r.metrics is not None]
    evaluated = [set(points) for _, points in finished]
    iterations = sorted(set.intersection(*evaluated)) if evaluated else []
    names = _run_names([r for r, _ in finished])
    metrics = {}
    for key in keys:
        per_seed = {name: [points[it][key] for it in iterations] for name, (_, points) in zip(names, finished)}
        stats = [summarize([v for v in column if v is not None]) for column in zip(*per_seed.values())]
        metrics[key] = {
            "mean": [s["mean"] for s in stats],
            "std": [s["std"] for s in stats],
            "n": [s["n"] for s in stats],
            "per_seed": per_seed,
        }
    partial = []
    for r in runs:
        if r.metrics is None and (points := read_curve(r.directory, keys)):
            partial.append({"seed": r.seed, "state": r.state, "iterations": list(points)})
    return {
        "unit": "percent",
        "n": len(finished),
        "seeds": [r.seed for r, _ in finished],
        "iterations": iterations,
        "metrics": metrics,
        "left_out_iterations": sorted(set().union(*evaluated) - set(iterations)),
        "partial": partial,
    }


def aggregate_curves(records: list[RunRecord], variants: list[str], tasks: list[str]) -> dict[str, dict]:
    """``{variant: variant_curve(...)}`` for the runs of each of ``variants`` (by their label)."""
    keys = curve_keys(tasks)
    return {label: variant_curve([r for r in records if r.label == label], keys) for label in variants}


def curves_markdown(curves: dict[str, dict], tasks: list[str]) -> str:
    """The report's section on the curves: per task a table of its AP (VOC: 11-point mAP) with a
    row per variant and a column per iteration, mean ± std; then the iterations left out and the
    partial curves. ``""`` when no run has an evaluation point."""
    if not any(c["iterations"] or c["partial"] or c["left_out_iterations"] for c in curves.values()):
        return ""
    lines = [
        "",
        "**Learning curves**: mean ± std over each variant's finished seeds (n) at the iterations "
        "(columns) that all of them evaluated, percent; `curves.png` also shows AP75 and the min–max over seeds",
    ]
    columns = sorted({it for c in curves.values() for it in c["iterations"]})
    for key in [TASKS[task][1][0] for task in tasks] if columns else []:
        lines += ["", f"*{TASK_NAMES[key.split('/')[0]]} {metric_label(key)}*", ""]
        lines += ["| variant | n | " + " | ".join(map(str, columns)) + " |", "|" + "---|" * (len(columns) + 2)]
        for label, c in curves.items():
            at = dict(zip(c["iterations"], zip(c["metrics"][key]["mean"], c["metrics"][key]["std"])))
            cells = [pm({"mean": at[it][0], "std": at[it][1]} if it in at else None, scale=1.0) for it in columns]
            lines.append(f"| `{label}` | {c['n']} | " + " | ".join(cells) + " |")
    left_out = [
        f"`{label}` {', '.join(map(str, c['left_out_iterations']))}"
        for label, c in curves.items()
        if c["left_out_iterations"]
    ]
    if left_out:
        lines += ["", "Iterations left out (not evaluated by every finished seed): " + "; ".join(left_out) + "."]
    partial = [(label, p) for label, c in curves.items() for p in c["partial"]]
    if partial:
        lines += ["", "Partial curves, not in the means:", ""]
        lines += [
            f"- `{label}` seed {p['seed']} ({p['state']}): iterations {', '.join(map(str, p['iterations']))}"
            for label, p in partial
        ]
    return "\n".join(lines) + "\n"


def write_curves_chart(
    curves: dict[str, dict], tasks: list[str], path: Path, *, title: str | None = None
) -> Path | None:
    """``curves.png``: a panel per charted metric (a row per task: box, mask or VOC; its AP and AP75
    side by side), x = iteration, per variant the mean over its finished seeds (line) and the
    min–max over them (band). Returns ``path``, or None (nothing written) when no variant has a point."""
    if not any(c["iterations"] for c in curves.values()):
        return None
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the study chart needs matplotlib: pip install -e '.[viz]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in tasks if t in TASKS]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(9.0, 3.0 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for ax, key in zip(row, TASKS[task][1]):
            for i, (label, c) in enumerate(curves.items()):
                if not c["iterations"]:
                    continue
                m = c["metrics"][key]
                seeds = list(zip(*m["per_seed"].values()))  # per iteration, the seeds' values
                low = [min((v for v in vs if v is not None), default=float("nan")) for vs in seeds]
                high = [max((v for v in vs if v is not None), default=float("nan")) for vs in seeds]
                mean = [float("nan") if v is None else v for v in m["mean"]]
                ax.plot(c["iterations"], mean, marker="o", ms=3, color=f"C{i}", label=f"{label} (n={c['n']})")
                ax.fill_between(c["iterations"], low, high, color=f"C{i}", alpha=0.2, linewidth=0)
            ax.set_title(f"{TASK_NAMES[task]} {metric_label(key)}", fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
            ax.set_ylabel("percent", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, title="mean over seeds; band: min–max", title_fontsize=7)
    return save_figure(fig, path, title)
