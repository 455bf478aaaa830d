#!/usr/bin/env python
"""Aggregated table, JSON and chart of RoI-layer ablation runs (repeated seeds), in the shape of
Table 2c of the Mask R-CNN paper.

    python tools/ablation_report.py studies/c4_roi_layers                    # a study's runs
    python tools/ablation_report.py multirun/<date>/<time> --baseline roi_pool
    python tools/ablation_report.py DIR [DIR ...] --out-dir report/ [--out table.md]

Every run folder below the directories (any folder with a ``.hydra/config.yaml``) is one run; runs
are grouped by variant (the study runner's variant name, else the RoI layer's name) and each
metric is given as mean ± std over seeds with n; Δ vs the baseline is paired by seed. Runs that
failed or did not finish are listed, never dropped. COCO-style box and mask AP (AP, AP50, AP75,
APs, APm, APl) and VOC07 11-point / area mAP, in percent; seconds per training iteration.
Writes report.md, report.json and chart.png into --out-dir (default: the first directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskrcnn.optional import MissingDependency, require
from maskrcnn.studies import write_report
from maskrcnn.studies.report import collect_runs, disambiguate_labels, find_run_dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+", help="study or sweep directories")
    parser.add_argument(
        "--baseline", default=None, help="variant the Δ column compares with (default: roi_pool when present)"
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="where report.md/json and chart.png go")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    parser.add_argument("--title", default=None)
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    if not args.no_chart:
        try:
            require("matplotlib", purpose="the chart (chart.png)")
        except MissingDependency as missing:
            parser.error(f"{missing}; or add --no-chart")
    runs: list[Path] = []
    for directory in args.directories:
        if not directory.is_dir():
            parser.error(f"{directory} is not a directory")
        found = find_run_dirs(directory)
        if not found:
            parser.error(f"no run directories (with .hydra/config.yaml) below {directory}")
        runs += [r for r in found if r not in runs]
    records = collect_runs(runs)
    disambiguate_labels(records)
    labels = {r.directory: r.label for r in records}
    variants = list(dict.fromkeys(r.label for r in records))
    baseline = args.baseline or ("roi_pool" if "roi_pool" in variants else None)
    if baseline is not None and baseline not in variants:
        parser.error(f"--baseline {baseline!r} is not one of the variants: {', '.join(variants)}")
    out = write_report(
        runs,
        out_dir=args.out_dir or args.directories[0],
        title=args.title,
        baseline=baseline,
        variants=variants,
        labels=labels,
        chart=not args.no_chart,
    )
    print(out["markdown"])
    for kind, path in out["paths"].items():
        print(f"{kind}: {path}")
    if args.out is not None:
        args.out.write_text(out["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
