"""What the study report, its learning curves and the paper table share: the metric sets per task,
their labels, mean ± sample std over seeds and its formatting."""

from __future__ import annotations

import math
from pathlib import Path

DASH = "–"
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# (task, metric keys, the keys charted, the keys with a Δ column)
TASKS = {
    "bbox": ([f"bbox/{k}" for k in AP_KEYS], ["bbox/AP", "bbox/AP75"], ["bbox/AP", "bbox/AP75"]),
    "segm": ([f"segm/{k}" for k in AP_KEYS], ["segm/AP", "segm/AP75"], ["segm/AP", "segm/AP75"]),
    "voc": (["voc/mAP50_07", "voc/mAP50"], ["voc/mAP50_07", "voc/mAP50"], ["voc/mAP50_07", "voc/mAP50"]),
}
TASK_TITLES = {"bbox": "Boxes (COCO-style AP)", "segm": "Masks (COCO-style AP)", "voc": "VOC mAP at IoU 0.5"}
TASK_NAMES = {"bbox": "box", "segm": "mask", "voc": "mAP50"}  # short, for panel titles and columns
LABELS = {"voc/mAP50_07": "VOC07 11-pt", "voc/mAP50": "area"}


def metric_label(key: str) -> str:
    """``AP75`` for ``segm/AP75``; the VOC keys' names from ``LABELS``."""
    return LABELS.get(key, key.split("/", 1)[1])


def metric_value(metrics: dict, key: str) -> float | None:
    """The value of ``key`` as a float, or None where missing or not a measurement."""
    v = metrics.get(key)
    # COCOeval reports -1 where an area range has no ground truth: not a measurement.
    return None if v is None or not isinstance(v, (int, float)) or v < 0 else float(v)


def summarize(values: list[float]) -> dict:
    """``{"mean", "std", "n", "values"}``: std is the sample std (n - 1), None for n <= 1."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": values}


def pm(stats: dict | None, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """``"22.0 ± 2.0"`` (``scale`` times the mean ± std; the mean alone for n = 1; a dash for none)."""
    if not stats or stats["mean"] is None:
        return DASH
    sign = "+" if signed else ""
    text = f"{scale * stats['mean']:{sign}.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def save_figure(fig, path: Path, title: str | None) -> Path:
    """Titles, lays out, writes (creating the folder) and closes a report figure; returns ``path``."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
