"""Study specs: ``configs/study/<name>.yaml`` read into a validated :class:`StudySpec`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..engine.config import REPO_ROOT

STUDY_DIR = REPO_ROOT / "configs" / "study"
_KEYS = {"title", "overrides", "seeds", "baseline", "variants", "shared"}


@dataclass(frozen=True)
class StudySpec:
    """One study: ``variants`` maps a variant name to its extra ``tools/train.py`` overrides.

    ``shared`` maps a variant to ``"<other study>/<variant>"`` whose runs (same config and seeds)
    it reuses instead of training them again.
    """

    name: str
    title: str
    overrides: list[str]
    seeds: list[int]
    baseline: str
    variants: dict[str, list[str]]
    shared: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the spec file; shared studies are looked up beside it

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
    return StudySpec(
        name=path.stem,
        title=str(raw["title"]),
        overrides=[str(o) for o in raw.get("overrides") or []],
        seeds=seeds,
        baseline=str(raw["baseline"]),
        variants=variants,
        shared=shared,
        path=path,
    )
