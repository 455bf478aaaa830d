"""Study specs: ``configs/study/<name>.yaml`` read into a validated :class:`StudySpec`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..engine.config import REPO_ROOT
from .paper_table import PAPER

STUDY_DIR = REPO_ROOT / "configs" / "study"
_KEYS = {"title", "overrides", "seeds", "baseline", "variants", "shared", "paper_table"}


@dataclass(frozen=True)
class PaperTableSpec:
    """A study's ``paper_table``: the Mask R-CNN paper's table (``2c`` or ``2d``, the keys of
    :data:`paper_table.PAPER`) that the report puts the study next to, and its lines: per variant
    shown, in this order, the id of the paper row it reproduces, or None for a line of ours only."""

    table: str
    rows: dict[str, str | None]


@dataclass(frozen=True)
class StudySpec:
    """One study: ``variants`` maps a variant name to its extra ``tools/train.py`` overrides.

    ``shared`` maps a variant to ``"<other study>/<variant>"`` whose runs (same config and seeds)
    it reuses instead of training them again. ``paper_table`` (optional) puts the report next to
    a table of the Mask R-CNN paper (:class:`PaperTableSpec`).
    """

    name: str
    title: str
    overrides: list[str]
    seeds: list[int]
    baseline: str
    variants: dict[str, list[str]]
    shared: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the spec file; shared studies are looked up beside it
    paper_table: PaperTableSpec | None = None

    def run_overrides(self, variant: str, seed: int) -> list[str]:
        """The ``tools/train.py`` overrides of one run (without its run directory)."""
        return [*self.overrides, *self.variants[variant], f"seed={seed}"]


def available_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name_or_path: str | Path) -> StudySpec:
    """A study by name (``configs/study/<name>.yaml``) or by path; errors name the problem."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"unknown study {str(name_or_path)!r}: no file {path}; available: {', '.join(available_studies())}"
        )
    raw = yaml.safe_load(path.read_text()) or {}
    where = f"study {path.stem} ({path})"
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(_KEYS)}")
    for key in ("title", "seeds", "variants", "baseline"):
        if key not in raw:
            raise ValueError(f"{where}: missing key {key!r}")
    variants = {str(k): [str(o) for o in (v or [])] for k, v in raw["variants"].items()}
    seeds = [int(s) for s in raw["seeds"]]
    if not variants or not seeds:
        raise ValueError(f"{where}: needs at least one variant and one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds {seeds} repeat")
    if raw["baseline"] not in variants:
        raise ValueError(f"{where}: baseline {raw['baseline']!r} is not one of the variants {list(variants)}")
    shared = {str(k): str(v) for k, v in (raw.get("shared") or {}).items()}
    for variant, target in shared.items():
        if variant not in variants or target.count("/") != 1:
            raise ValueError(f"{where}: shared entry {variant}: {target} must map a variant to '<study>/<variant>'")
    for variant, overrides in variants.items():
        bad = [o for o in overrides + list(raw.get("overrides") or []) if o.startswith(("seed=", "hydra.run.dir="))]
        if bad:
            raise ValueError(f"{where}: variant {variant} sets {bad}; seeds and run folders are the runner's")
    paper_table = _paper_table(raw.get("paper_table"), variants, where)
    return StudySpec(
        name=path.stem,
        title=str(raw["title"]),
        overrides=[str(o) for o in raw.get("overrides") or []],
        seeds=seeds,
        baseline=str(raw["baseline"]),
        variants=variants,
        shared=shared,
        path=path,
        paper_table=paper_table,
    )


def _paper_table(raw, variants: dict[str, list[str]], where: str) -> PaperTableSpec | None:
    """The validated ``paper_table`` entry of a spec (None without one)."""
    if raw is None:
        return None
    shape = f"paper_table must be {{table: {'|'.join(PAPER)}, rows: {{<variant>: <paper row or null>, ...}}}}"
    if not isinstance(raw, dict) or set(raw) != {"table", "rows"}:
        raise ValueError(f"{where}: {shape}, not {raw!r}")
    table, rows = str(raw["table"]), raw["rows"]
    if table not in PAPER:
        raise ValueError(f"{where}: paper_table.table {table!r} is not one of {list(PAPER)}")
    if not isinstance(rows, dict) or not rows:
        raise ValueError(f"{where}: paper_table.rows must map variants to rows of Table {table}, not {rows!r}")
    for variant, row in rows.items():
        if str(variant) not in variants:
            raise ValueError(f"{where}: paper_table.rows: {variant!r} is not one of the variants {list(variants)}")
        if row is not None and row not in PAPER[table]:
            raise ValueError(
                f"{where}: paper_table.rows.{variant}: {row!r} is not a row of Table {table} ({', '.join(PAPER[table])})"
            )
    return PaperTableSpec(table=table, rows={str(v): None if r is None else str(r) for v, r in rows.items()})
