#!/usr/bin/env python
"""Run (or continue) repeated-seed studies and write their reports (configs/study/<name>.yaml).

    python tools/run_study.py c4_roi_layers                       # Study 1 of docs/results.md
    python tools/run_study.py c4_roi_layers c4_sampling fpn_roi_layers bccd_roi_layers --workers 2
    python tools/run_study.py c4_roi_layers --dry-run             # what is finished, what would run
    python tools/run_study.py c4_roi_layers --report-only         # the report of what is there

Resumable: finished runs are skipped, unfinished ones continue from their newest checkpoint,
failed ones are retried. Each run uses --threads CPU threads (OMP_NUM_THREADS); --workers runs
that many at once. Reports go to <root>/<study>/report.{md,json}, chart.png and curves.png (the
learning curves) (or --report-dir); a study with a paper_table puts its numbers next to Table 2c/2d
of the Mask R-CNN paper in report.md and report.json.
docs/results.md was made with:
    python tools/run_study.py c4_roi_layers c4_sampling fpn_roi_layers bccd_roi_layers --workers 2 --threads 1
    python tools/run_study.py c4_roi_layers c4_sampling fpn_roi_layers bccd_roi_layers --report-only --report-dir docs/results
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from maskrcnn.optional import MissingDependency, require
from maskrcnn.studies import load_study, run_study, write_report
from maskrcnn.studies.runner import REPO_ROOT, plan_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study names (configs/study/*.yaml) or paths")
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "studies", help="where run folders go")
    parser.add_argument("--workers", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--dry-run", action="store_true", help="list the runs that would run")
    parser.add_argument("--report-only", action="store_true", help="write the reports without running")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="write each study's report into <report-dir>/<study>/ (default: its run folder)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        if not args.dry_run:
            require("matplotlib", purpose="the study reports' chart.png")  # before hours of training
        specs = [load_study(name) for name in args.studies]
        for spec in specs:
            plan_runs(spec, args.root)  # config errors before anything runs
    except (ValueError, MissingDependency) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.report_only:
        run_study(specs, root=args.root, workers=args.workers, threads=args.threads, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    for spec in specs:
        report_dir = (args.report_dir or args.root) / spec.name
        runs = plan_runs(spec, args.root)
        out = write_report(
            [r.directory for r in runs],
            out_dir=report_dir,
            title=spec.title,
            baseline=spec.baseline,
            variants=list(spec.variants),
            labels={r.directory: r.variant for r in runs},
            seeds={r.directory: r.seed for r in runs},
            paper_table=spec.paper_table,
        )
        print(out["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
