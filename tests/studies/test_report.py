"""The study report on fabricated run folders with known numbers: mean, std, n, paired Δ, COCO
and VOC metric sets, missing / failed / unfinished runs, the chart, and tools/ablation_report.py."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from maskrcnn.studies import aggregate, collect_runs, write_report
from maskrcnn.studies.report import to_markdown

REPO = Path(__file__).resolve().parents[2]
ROI = {
    "roi_pool": {"name": "roi_pool", "op": "roi_pool"},
    "roi_align": {"name": "roi_align", "op": "roi_align", "aligned": True, "mode": "avg", "sampling_ratio": 0},
    "roi_align_max": {"name": "roi_align_max", "op": "roi_align", "aligned": True, "mode": "max", "sampling_ratio": 2},
}


def make_run(
    folder: Path, roi, seed: int, metrics: dict | None, *, max_iter=100, iteration=None, info=None, job=None
) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create(
            {"seed": seed, "roi_layer": ROI[roi] if isinstance(roi, str) else roi, "solver": {"max_iter": max_iter}}
        ),
        folder / ".hydra" / "config.yaml",
    )
    if job is not None:
        OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": job}}}), folder / ".hydra" / "hydra.yaml")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps({"iteration": iteration or max_iter, **metrics}))
    if info is not None:
        (folder / "run_info.json").write_text(json.dumps(info))
    return folder


def coco(box, mask, t=0.5):
    m = {"time/iter": t}
    for prefix, ap in (("bbox", box), ("segm", mask)):
        m.update(
            {
                f"{prefix}/AP": ap,
                f"{prefix}/AP50": ap + 0.2,
                f"{prefix}/AP75": ap - 0.05,
                f"{prefix}/APs": ap / 2,
                f"{prefix}/APm": ap,
                f"{prefix}/APl": -1.0,
            }
        )
    return m


@pytest.fixture()
def study(tmp_path):
    """roi_pool seeds 0-2 (mask AP .20 .22 .24), roi_align seeds 0-2 (.25 .26 .30), roi_align seed 3
    without a baseline partner; roi_align_max: one finished, one failed, one unfinished run."""
    root = tmp_path / "study"
    runs = []
    for seed, mask in enumerate([0.20, 0.22, 0.24]):
        runs.append(
            make_run(
                root / "roi_pool" / f"seed{seed}",
                "roi_pool",
                seed,
                coco(mask + 0.1, mask, t=0.4),
                info={"variant": "roi_pool", "cpu_s": 300.0 + 60 * seed, "wall_s": 400.0},
            )
        )
    for seed, mask in enumerate([0.25, 0.26, 0.30, 0.40]):
        runs.append(make_run(root / "roi_align" / f"seed{seed}", "roi_align", seed, coco(mask + 0.1, mask, t=0.6)))
    runs.append(make_run(root / "roi_align_max" / "seed0", "roi_align_max", 0, coco(0.3, 0.28)))
    runs.append(
        make_run(root / "roi_align_max" / "seed1", "roi_align_max", 1, None, info={"attempts": [{"returncode": 1}]})
    )
    runs.append(
        make_run(root / "roi_align_max" / "seed2", "roi_align_max", 2, coco(0.1, 0.1), max_iter=200, iteration=100)
    )  # an evaluation half-way, then stopped
    return root, runs


def test_mean_std_n_and_paired_delta(study):
    root, runs = study
    agg = aggregate(collect_runs(runs), baseline="roi_pool")
    assert agg["tasks"] == ["bbox", "segm"]
    pool, align, amax = (agg["variants"][k] for k in ("roi_pool", "roi_align", "roi_align_max"))
    assert pool["n"] == 3 and pool["seeds"] == [0, 1, 2]
    assert pool["metrics"]["segm/AP"]["mean"] == pytest.approx(0.22)
    assert pool["metrics"]["segm/AP"]["std"] == pytest.approx(0.02)  # sample std of .20 .22 .24
    assert align["metrics"]["segm/AP"]["mean"] == pytest.approx(np.mean([0.25, 0.26, 0.30, 0.40]))
    assert align["metrics"]["segm/AP"]["std"] == pytest.approx(np.std([0.25, 0.26, 0.30, 0.40], ddof=1))
    # APl is -1 everywhere (no large objects): no value, not a zero
    assert pool["metrics"]["segm/APl"]["n"] == 0 and pool["metrics"]["segm/APl"]["mean"] is None
    # Δ pairs seeds 0-2 only (seed 3 has no roi_pool run): differences .05 .04 .06
    delta = align["delta"]["segm/AP"]
    assert delta["n"] == 3 and delta["mean"] == pytest.approx(0.05) and delta["std"] == pytest.approx(0.01)
    assert amax["n"] == 1 and amax["metrics"]["segm/AP"]["std"] is None
    assert amax["delta"]["segm/AP"]["mean"] == pytest.approx(0.28 - 0.20) and amax["delta"]["segm/AP"]["n"] == 1
    assert "delta" not in pool
    assert pool["cpu_min/run"]["mean"] == pytest.approx(6.0) and pool["time/iter"]["mean"] == pytest.approx(0.4)
    missing = {(m["variant"], m["seed"]): m["state"] for m in agg["not_finished"]}
    assert missing == {("roi_align_max", 1): "failed", ("roi_align_max", 2): "unfinished"}


def test_a_run_with_a_cut_off_attempt_has_an_unknown_cost(tmp_path):
    # The runner was stopped during seed 1's first attempt (no times recorded); its second
    # attempt's CPU time alone would understate the run's cost.
    timed = {"attempts": [{"returncode": 0, "cpu_s": 600.0, "wall_s": 700.0}], "cpu_s": 600.0, "wall_s": 700.0}
    cut = {
        "attempts": [{"started": "x"}, {"returncode": 0, "cpu_s": 60.0, "wall_s": 70.0}],
        "cpu_s": 60.0,
        "wall_s": 70.0,
    }
    runs = [
        make_run(tmp_path / "p" / "seed0", "roi_pool", 0, coco(0.3, 0.3), info={"variant": "p", **timed}),
        make_run(tmp_path / "p" / "seed1", "roi_pool", 1, coco(0.3, 0.3), info={"variant": "p", **cut}),
    ]
    records = collect_runs(runs)
    assert [r.cpu_s for r in records] == [600.0, None]
    agg = aggregate(records)
    cost = agg["variants"]["p"]["cpu_min/run"]
    assert agg["variants"]["p"]["n"] == 2 and cost["n"] == 1 and cost["mean"] == pytest.approx(10.0)
    table = to_markdown(agg)
    assert "| 10.0 (n=1) |" in table and "1 finished run(s) had an attempt cut off" in table


def test_markdown_json_and_chart(study, tmp_path):
    root, runs = study
    out = write_report(
        runs,
        out_dir=tmp_path / "report",
        title="T",
        baseline="roi_pool",
        variants=["roi_pool", "roi_align", "roi_align_max"],
    )
    md = out["markdown"]
    lines = md.splitlines()
    mask_table = lines[lines.index("**Masks (COCO-style AP)**, mean ± std over seeds, percent") + 2 :]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in mask_table
        if line.startswith("| `")
    }
    assert rows["`roi_pool`"][:2] == ["3", "22.0 ± 2.0"] and rows["`roi_pool`"][-1] == "(baseline)"
    assert rows["`roi_align`"][-2] == "+5.0 ± 1.0 (n=3)"
    assert rows["`roi_align_max`"][1] == "28.0" and rows["`roi_align_max`"][6] == "–"  # APl: no value
    assert "`roi_align_max` seed 1: failed" in md and "`roi_align_max` seed 2: unfinished" in md
    assert "| `roi_align_max` | RoIAlign | ✓ | max | ✓ | 2x2 | 1 (0) |" in md
    assert "| `roi_pool` | RoIPool |  | max |  |  | 3 (0,1,2) | 0.400 ± 0.000 | 6.0 ± 1.0 |" in md
    saved = json.loads(out["paths"]["json"].read_text())
    assert saved["variants"]["roi_align"]["delta"]["segm/AP"]["n"] == 3
    assert out["paths"]["markdown"].read_text() == md
    import matplotlib.image

    image = matplotlib.image.imread(out["paths"]["chart"])
    assert image.shape[0] > 100 and image.shape[1] > 200
    assert float(image[..., :3].std()) > 0.05  # bars and text, not a blank canvas


def test_voc_metric_set(tmp_path):
    runs = [
        make_run(tmp_path / f"p{s}", "roi_pool", s, {"voc/mAP50_07": 0.70 + 0.01 * s, "voc/mAP50": 0.72})
        for s in (0, 1)
    ]
    runs += [
        make_run(tmp_path / f"a{s}", "roi_align", s, {"voc/mAP50_07": 0.75, "voc/mAP50": 0.74 + 0.02 * s})
        for s in (0, 1)
    ]
    out = write_report(runs, out_dir=tmp_path / "r", baseline="roi_pool")
    agg = out["aggregate"]
    assert agg["tasks"] == ["voc"]
    assert agg["variants"]["roi_align"]["delta"]["voc/mAP50_07"]["mean"] == pytest.approx(0.045)
    assert agg["variants"]["roi_align"]["delta"]["voc/mAP50"]["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert "VOC07 11-pt" in out["markdown"] and "Boxes" not in out["markdown"]
    assert out["paths"]["chart"].is_file()


def test_ablation_report_cli_groups_a_sweep_and_tells_sampling_ratios_apart(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ablation_report", REPO / "tools" / "ablation_report.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sweep = tmp_path / "multirun"
    for job, (sr, seed, ap) in enumerate([(1, 0, 0.3), (2, 0, 0.4), (1, 1, 0.32), (2, 1, 0.38)]):
        make_run(sweep / f"{job}_roi_align", {**ROI["roi_align"], "sampling_ratio": sr}, seed, coco(ap, ap), job=job)
    assert tool.main([str(sweep), "--baseline", "roi_align (sampling_ratio=1)", "--out", str(tmp_path / "t.md")]) == 0
    printed = capsys.readouterr().out
    assert "| `roi_align (sampling_ratio=2)` | 2 |" in printed
    assert "+8.0 ± 2.8 (n=2)" in printed  # box AP: +.10 and +.06
    assert (sweep / "report.json").is_file() and (sweep / "chart.png").is_file()
    assert (tmp_path / "t.md").read_text() in printed
    with pytest.raises(SystemExit):
        tool.main([str(sweep), "--baseline", "roi_pool"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "empty")])


def test_roi_warp_configs_are_described_as_table_2cs_roi_warp():
    from maskrcnn.studies.report import describe_roi_layer

    configs = REPO / "configs" / "roi_layer"
    warp = describe_roi_layer(OmegaConf.to_container(OmegaConf.load(configs / "roi_warp.yaml")))
    assert warp == {"op": "RoIWarp", "bilinear": "✓", "agg.": "max", "aligned": "", "samples": "2x2"}
    avg = describe_roi_layer(OmegaConf.to_container(OmegaConf.load(configs / "roi_warp_avg.yaml")))
    assert (avg["op"], avg["agg."], avg["samples"]) == ("RoIWarp", "avg", "adaptive")
