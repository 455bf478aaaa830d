"""Per-category AP tables as markdown (for logs, README excerpts and ablation reports)."""

from __future__ import annotations

import math


def format_per_category_table(per_category: dict[str, dict[str, float]], *, digits: int = 3) -> str:
    """Render per-category APs as a markdown table.

    Args:
        per_category: column name -> {category name -> AP as a fraction in [0, 1]}, e.g.
            ``{"bbox": {"person": 0.41, ...}, "segm": {...}}``. Rows are the union of the
            category names in order of first appearance; a category missing from a column
            (no ground truth in it) prints as ``n/a``.
        digits: decimals printed.

    Returns:
        The table as a string with one header row, e.g.::

            | category | bbox | segm |
            |---|---:|---:|
            | person | 0.410 | 0.382 |
    """
    columns = list(per_category)
    names: list[str] = []
    seen = set()
    for column in columns:
        for name in per_category[column]:
            if name not in seen:
                seen.add(name)
                names.append(name)

    def cell(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.{digits}f}"

    lines = [
        "| category | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in names:
        cells = [cell(per_category[column].get(name)) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_category_from_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Recover the per-category columns from a flat metric dict (for printing a table of the
    output of :func:`~maskrcnn.evaluation.score_coco_results`, or of a saved metrics.json).

    ``bbox/AP-person`` -> column "bbox", ``segm/AP-person`` -> "segm", ``voc/AP50-cell`` -> "AP50",
    ``voc/AP50_07-cell`` -> "AP50_07".
    """
    columns: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        prefix, _, rest = key.partition("/")
        metric, dash, name = rest.partition("-")
        if not dash or not metric.startswith("AP"):
            continue
        column = prefix if prefix in ("bbox", "segm") else metric
        columns.setdefault(column, {})[name] = value
    return columns
