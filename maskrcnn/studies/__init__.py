"""Repeated-seed studies (RoI-layer ablations): specs, a resumable runner and the aggregated report.

A study (``configs/study/<name>.yaml``) is a set of training runs, one per (variant, seed): the
same base overrides of ``tools/train.py`` plus the variant's own. ``tools/run_study.py`` runs the
missing ones and writes the report; ``tools/ablation_report.py`` aggregates any run folders.
"""

from .report import aggregate, collect_runs, write_report
from .runner import plan_runs, run_study
from .spec import StudySpec, load_study

__all__ = ["StudySpec", "load_study", "plan_runs", "run_study", "collect_runs", "aggregate", "write_report"]
