"""A study next to Table 2c / 2d of the Mask R-CNN paper: the paper's numbers (here, once, as data)
and a Markdown table in that table's shape with our mean ± std beside the paper's values.

A study spec selects it with ``paper_table: {table: 2c, rows: {<variant>: <paper row or null>}}``
(see :mod:`maskrcnn.studies.spec`); :func:`paper_rows` turns that into row descriptions and
:func:`paper_table` / :func:`paper_table_markdown` build the table from a study report's data
(``report.json``). A row description is a dict with any of ``layer``, ``align``, ``bilinear``,
``agg`` and the paper's values by metric key (``segm/AP``, ``bbox/AP75``, ...); what a row leaves
out of ``layer`` / ``align`` / ``bilinear`` / ``agg`` is taken from the variant's RoI-layer config.
"""

from __future__ import annotations

from .stats import DASH, TASK_NAMES, metric_label, pm

# He, Gkioxari, Dollár, Girshick: "Mask R-CNN", ICCV 2017 (arXiv:1703.06870), Table 2 (ablations,
# trained on COCO trainval35k, tested on minival; percent). 2c: RoI layers in ResNet-50-C4
# (stride 16), mask AP only. 2d: RoIPool vs RoIAlign in ResNet-50-C5 (stride 32), mask and box AP;
# 2d has no align?/bilinear?/agg. columns: align and bilinear follow from the layer, RoIPool is a
# max, RoIAlign's aggregation is not stated.
# fmt: off
PAPER = {
    "2c": {
        "RoIPool-max": {"layer": "RoIPool", "align": False, "bilinear": False, "agg": "max",
                        "segm/AP": 26.9, "segm/AP50": 48.8, "segm/AP75": 26.4},
        "RoIWarp-max": {"layer": "RoIWarp", "align": False, "bilinear": True, "agg": "max",
                        "segm/AP": 27.2, "segm/AP50": 49.2, "segm/AP75": 27.1},
        "RoIWarp-ave": {"layer": "RoIWarp", "align": False, "bilinear": True, "agg": "ave",
                        "segm/AP": 27.1, "segm/AP50": 48.9, "segm/AP75": 27.1},
        "RoIAlign-max": {"layer": "RoIAlign", "align": True, "bilinear": True, "agg": "max",
                         "segm/AP": 30.2, "segm/AP50": 51.0, "segm/AP75": 31.8},
        "RoIAlign-ave": {"layer": "RoIAlign", "align": True, "bilinear": True, "agg": "ave",
                         "segm/AP": 30.3, "segm/AP50": 51.2, "segm/AP75": 31.5},
    },
    "2d": {
        "RoIPool": {"layer": "RoIPool", "align": False, "bilinear": False, "agg": "max",
                    "segm/AP": 23.6, "segm/AP50": 46.5, "segm/AP75": 21.6,
                    "bbox/AP": 28.2, "bbox/AP50": 52.7, "bbox/AP75": 26.9},
        "RoIAlign": {"layer": "RoIAlign", "align": True, "bilinear": True,
                     "segm/AP": 30.9, "segm/AP50": 51.8, "segm/AP75": 32.1,
                     "bbox/AP": 34.0, "bbox/AP50": 55.3, "bbox/AP75": 36.4},
    },
}
# fmt: on
TABLE_TITLES = {"2c": "Table 2c (ResNet-50-C4, stride 16)", "2d": "Table 2d (ResNet-50-C5, stride 32)"}
DESCRIPTORS = ("layer", "align", "bilinear", "agg")
OUR_KEYS = {task: [f"{task}/AP", f"{task}/AP50", f"{task}/AP75"] for task in ("segm", "bbox")}


def paper_keys(table: str) -> list[str]:
    """The metric keys that ``PAPER[table]`` gives, in the paper's column order (mask, then box)."""
    return [k for task in OUR_KEYS for k in OUR_KEYS[task] if any(k in row for row in PAPER[table].values())]


def paper_rows(table: str, rows: dict[str, str | None]) -> dict[str, dict]:
    """``{variant: row description}`` for a spec's ``rows`` (variant -> paper row id, or None for a
    variant without a paper row): the paper row's descriptors and values plus ``paper_row``, its id."""
    return {variant: {"paper_row": row, **(PAPER[table][row] if row else {})} for variant, row in rows.items()}


def _our_descriptors(roi_layer: dict | None) -> dict:
    """``layer`` / ``align`` / ``bilinear`` / ``agg`` of a variant from the report's description of
    its RoI-layer config (:func:`report.describe_roi_layer`); ``{}`` where it has none."""
    if not roi_layer or roi_layer.get("op", "?") == "?":
        return {}
    agg = roi_layer.get("agg.") or None
    return {
        "layer": roi_layer["op"],
        "align": roi_layer.get("aligned") == "✓",
        "bilinear": roi_layer.get("bilinear") == "✓",
        "agg": "ave" if agg == "avg" else agg,  # the paper's word
    }


def paper_table(report: dict, rows: dict[str, dict], table: str) -> dict:
    """The table's data: ``{"table", "title", "unit": "percent", "ours_keys", "paper_keys", "rows",
    "notes"}``; a row is ``{"variant", "paper_row", "layer", "align", "bilinear", "agg", "n", "ours":
    {key: {"mean", "std", "n"}}, "paper": {key: value}}`` (ours in percent; a variant the report does
    not have gets n = 0). ``notes`` name descriptors where a variant's config and its paper row differ."""
    ours_tasks = [
        t for t in OUR_KEYS if t in report.get("tasks", []) or any(k.startswith(t) for k in paper_keys(table))
    ]
    ours_keys = [k for t in ours_tasks for k in OUR_KEYS[t]]
    out = {
        "table": table,
        "title": TABLE_TITLES[table],
        "unit": "percent",
        "ours_keys": ours_keys,
        "paper_keys": paper_keys(table),
        "rows": [],
        "notes": [],
    }
    for variant, row in rows.items():
        entry = report["variants"].get(variant, {})
        config = _our_descriptors(entry.get("roi_layer"))
        described = {d: row[d] if row.get(d) is not None else config.get(d) for d in DESCRIPTORS}
        differ = [d for d in DESCRIPTORS if row.get(d) is not None and config.get(d) not in (None, row[d])]
        if differ:
            out["notes"].append(
                f"`{variant}` vs {row.get('paper_row') or 'its row'}: "
                + "; ".join(f"{d} {_cell(config[d])} in its config, {_cell(row[d])} in the row" for d in differ)
            )
        ours = {}
        for key in ours_keys:
            stats = entry.get("metrics", {}).get(key) or {}
            mean, std = stats.get("mean"), stats.get("std")
            ours[key] = {
                "mean": None if mean is None else 100 * mean,
                "std": None if std is None else 100 * std,
                "n": stats.get("n", 0),
            }
        out["rows"].append(
            {
                "variant": variant,
                "paper_row": row.get("paper_row"),
                **described,
                "n": entry.get("n", 0),
                "ours": ours,
                "paper": {k: row[k] for k in out["paper_keys"] if row.get(k) is not None},
            }
        )
    return out


def _cell(value) -> str:
    """✓ / ✗ for True / False, the text otherwise, blank for unknown."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "✓" if value else "✗"
    return str(value)


def _column(key: str) -> str:
    return f"{TASK_NAMES[key.split('/')[0]]} {metric_label(key)}"  # "mask AP50"


def to_markdown(data: dict) -> str:
    """The Markdown of :func:`paper_table`'s data: a caption, the table (RoI layer, align?,
    bilinear?, agg., ours as mean ± std, then the paper's values) and the notes."""
    counts = {r["n"] for r in data["rows"]}
    n = (
        f"n = {counts.pop()}"
        if len(counts) == 1
        else "n: " + ", ".join(f"`{r['variant']}` {r['n']}" for r in data["rows"])
    )
    head = ["RoI layer", "align?", "bilinear?", "agg."] + [_column(k) for k in data["ours_keys"]]
    head += [f"paper {_column(k)}" for k in data["paper_keys"]]
    lines = [
        f"**Next to {data['title']} of Mask R-CNN** (He et al. 2017, COCO minival): ours mean ± std over "
        f"seeds ({n}), percent; the paper's values as published",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in data["rows"]:
        layer = f"{r['layer']} (`{r['variant']}`)" if r["layer"] else f"`{r['variant']}`"
        cells = [layer, _cell(r["align"]), _cell(r["bilinear"]), _cell(r["agg"])]
        cells += [pm(r["ours"][k], scale=1.0) for k in data["ours_keys"]]
        cells += [f"{r['paper'][k]:.1f}" if k in r["paper"] else DASH for k in data["paper_keys"]]
        lines.append("| " + " | ".join(cells) + " |")
    if data["notes"]:
        lines += ["", "Config and paper row differ:", ""] + [f"- {note}" for note in data["notes"]]
    return "\n".join(lines) + "\n"


def paper_table_markdown(report: dict, rows: dict[str, dict], table: str) -> str:
    """The Markdown table of ``report`` (a study report's data, as in ``report.json``) in the shape
    of the paper's Table ``table`` (``"2c"`` or ``"2d"``), one line per entry of ``rows``."""
    return to_markdown(paper_table(report, rows, table))
