#!/usr/bin/env python
"""Markdown table of a RoI-layer ablation sweep, in the shape of Table 2c of the Mask R-CNN paper.

    python tools/train.py -m experiment=ablation_voc roi_layer=roi_pool,roi_align,roi_align_max,roi_align_unaligned
    python tools/ablation_report.py multirun/<date>/<time> [--out table.md]

Each run directory of the sweep (any folder below DIR with a ``.hydra/config.yaml``) gives one row:
the RoI layer and its properties (bilinear sampling, aggregation, half-pixel alignment) from the
run's config, and its final evaluation from ``metrics.json``: box AP and mask AP, then AP50, AP75,
APs, APm, APl (of the masks when the model predicts masks, else of the boxes; VOC runs report the
VOC07 11-point and area mAP at IoU 0.5), and the mean training time per iteration. APs are in
percent, like the paper. A run without ``metrics.json`` (failed or unfinished) is listed as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

DASH = "–"


def find_runs(root: Path) -> list[Path]:
    """Run directories below ``root`` (those with a Hydra ``.hydra/config.yaml``), in job order."""
    runs = [p.parent.parent for p in root.rglob(".hydra/config.yaml")]

    def job_num(run: Path):
        hydra_file = run / ".hydra" / "hydra.yaml"
        if hydra_file.is_file():
            num = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num")
            if num is not None:
                return (0, int(num), str(run))
        return (1, 0, str(run))

    return sorted(runs, key=job_num)


def describe_roi_layer(roi: dict) -> dict[str, str]:
    """Table 2c's descriptive columns of a RoI layer config."""
    op = roi.get("op", roi.get("name", "?"))
    if op == "roi_pool":
        return {"bilinear": "", "agg.": "max", "aligned": ""}
    return {
        "bilinear": "✓",
        "agg.": roi.get("mode", "avg"),
        "aligned": "✓" if roi.get("aligned", True) else "",
    }


def _pct(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None or value < 0:  # COCOeval reports -1 where an area range has no ground truth
        return DASH
    return f"{100 * value:.1f}"


def read_run(run: Path) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"), resolve=False)
    roi = cfg.get("roi_layer") or {}
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return {
        "run": run,
        "roi_layer": roi.get("name", "?"),
        "roi": roi,
        "dataset": (cfg.get("dataset") or {}).get("name", "?"),
        "metrics": metrics,
    }


def make_table(runs: list[dict], root: Path) -> str:
    kinds = {("coco" if any(k.startswith(("bbox/", "segm/")) for k in r["metrics"]) else "voc")
             for r in runs if r["metrics"]}
    coco = "coco" in kinds or not kinds
    headers = ["RoI layer", "bilinear", "agg.", "aligned"]
    if coco:
        headers += ["box AP", "mask AP", "AP50", "AP75", "APs", "APm", "APl"]
    if "voc" in kinds:
        headers += ["mAP50 (VOC07 11-pt)", "mAP50 (area)"]
    headers += ["time/iter (s)", "run"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in runs:
        m = r["metrics"]
        row = [f"`{r['roi_layer']}`", *describe_roi_layer(r["roi"]).values()]
        if m is None:
            n_values = len(headers) - len(row) - 1
            row += [DASH] * (n_values - 1) + ["no metrics.json (failed or unfinished)"]
        else:
            if coco:
                detail = "segm" if "segm/AP" in m else "bbox"
                row += [_pct(m, "bbox/AP"), _pct(m, "segm/AP")]
                row += [_pct(m, f"{detail}/{k}") for k in ("AP50", "AP75", "APs", "APm", "APl")]
            if "voc" in kinds:
                row += [_pct(m, "voc/mAP50_07"), _pct(m, "voc/mAP50")]
            t = m.get("time/iter")
            row.append(f"{t:.3f}" if isinstance(t, (int, float)) else DASH)
        row.append(str(r["run"].relative_to(root)) if r["run"] != root else ".")
        lines.append("| " + " | ".join(row) + " |")
    datasets = sorted({r["dataset"] for r in runs})
    detail = "AP50..APl are mask APs where the model predicts masks, else box APs; " if coco else ""
    caption = (f"RoI-layer ablation on {', '.join(datasets)} ({len(runs)} runs). {detail}"
               f"values in percent; time/iter is the mean training time per iteration.")
    return caption + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="the multirun directory of the sweep")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    root = args.directory
    if not root.is_dir():
        parser.error(f"{root} is not a directory")
    runs = [read_run(run) for run in find_runs(root)]
    if not runs:
        parser.error(f"no run directories (with .hydra/config.yaml) below {root}")
    table = make_table(runs, root)
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
