"""Learning curves of the study report on fabricated run folders with known metrics.jsonl: the last
line per iteration (a resumed run's repeats), iterations only some seeds evaluated, unfinished
runs' partial curves, the numbers against hand-computed means and sample stds, the Markdown table,
report.json and curves.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from maskrcnn.studies import write_report
from maskrcnn.studies.curves import curve_keys, read_curve

TRAIN_LINE = {"loss": 1.5, "loss_mask": 0.4, "lr": 0.01, "time/iter": 0.5}


def evaluation(iteration: int, mask: float, box: float) -> dict:
    return {"iteration": iteration, "segm/AP": mask, "segm/AP75": mask / 2, "segm/APl": -1.0,
            "bbox/AP": box, "bbox/AP75": box / 2}  # fmt: skip


def make_run(folder: Path, seed: int, lines: list, *, finished: bool, max_iter: int = 300) -> Path:
    """A run folder: Hydra config, ``metrics.jsonl`` from ``lines`` (dicts, or raw text for a line
    cut short) and, when ``finished``, ``metrics.json`` holding the last evaluation."""
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "solver": {"max_iter": max_iter},
        "roi_layer": {"name": folder.parent.name, "op": "roi_align"},
    }
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    (folder / "metrics.jsonl").write_text("\n".join(text) + "\n")
    if finished:
        final = [line for line in lines if isinstance(line, dict) and "segm/AP" in line][-1]
        (folder / "metrics.json").write_text(json.dumps(final))
    return folder


@pytest.fixture()
def study(tmp_path):
    """pool: 3 finished seeds evaluated at 100, 200, 300 (mask AP in %: 10 20 30 / 12 26 32 / 14 23 34;
    seed 1 was resumed and evaluated 200 twice, first 99; seed 2 also evaluated 150).
    align: 2 finished seeds (15 25 35 / 17 29 39) and one unfinished with evaluations at 100 and 200
    (90, far off: it must not enter the means) and a last line cut short."""
    root = tmp_path / "study"
    runs = [
        make_run(root / "pool" / "seed0", 0, [
            {"iteration": 50, **TRAIN_LINE}, evaluation(100, 0.10, 0.20), {"iteration": 150, **TRAIN_LINE},
            evaluation(200, 0.20, 0.30), evaluation(300, 0.30, 0.40),
        ], finished=True),
        make_run(root / "pool" / "seed1", 1, [
            evaluation(100, 0.12, 0.22), evaluation(200, 0.99, 0.99), {"iteration": 250, **TRAIN_LINE},
            # interrupted at 250, resumed from the checkpoint of 100: 200 is evaluated again
            evaluation(200, 0.26, 0.36), evaluation(300, 0.32, 0.42),
        ], finished=True),
        make_run(root / "pool" / "seed2", 2, [
            evaluation(100, 0.14, 0.24), evaluation(150, 0.50, 0.50), evaluation(200, 0.23, 0.33),
            evaluation(300, 0.34, 0.44),
        ], finished=True),
        make_run(root / "align" / "seed0", 0, [evaluation(i, m, m) for i, m in ((100, .15), (200, .25), (300, .35))],
                 finished=True),
        make_run(root / "align" / "seed1", 1, [evaluation(i, m, m) for i, m in ((100, .17), (200, .29), (300, .39))],
                 finished=True),
        make_run(root / "align" / "seed2", 2, [evaluation(100, 0.9, 0.9), evaluation(200, 0.9, 0.9),
                                               '{"iteration": 300, "segm/AP": 0.'], finished=False),
    ]  # fmt: skip
    return runs


def test_read_curve_keeps_the_last_line_of_each_iteration(study):
    curve = read_curve(study[1], curve_keys(["segm"]))
    assert list(curve) == [100, 200, 300]  # training lines (50, 150, 250) are not evaluations
    assert curve[200] == {"segm/AP": pytest.approx(26.0), "segm/AP75": pytest.approx(13.0)}
    assert list(read_curve(study[-1], curve_keys(["segm"]))) == [100, 200]  # the cut line is skipped
    assert read_curve(study[0].parent / "nowhere", ["segm/AP"]) == {}


def test_curve_means_over_finished_seeds_at_common_iterations(study, tmp_path):
    out = write_report(study, out_dir=tmp_path / "report", variants=["pool", "align"], baseline="pool")
    pool = out["aggregate"]["variants"]["pool"]["curve"]
    assert pool["n"] == 3 and pool["seeds"] == [0, 1, 2] and pool["unit"] == "percent"
    assert pool["iterations"] == [100, 200, 300] and pool["left_out_iterations"] == [150]
    mask = pool["metrics"]["segm/AP"]
    assert mask["per_seed"] == {"0": pytest.approx([10, 20, 30]), "1": pytest.approx([12, 26, 32]),
                                "2": pytest.approx([14, 23, 34])}  # fmt: skip
    assert mask["mean"] == pytest.approx([12.0, 23.0, 32.0])
    assert mask["std"] == pytest.approx([2.0, 3.0, 2.0])  # sample std: (-2, 0, 2), (-3, 3, 0), (-2, 0, 2)
    assert mask["n"] == [3, 3, 3]
    assert pool["metrics"]["bbox/AP75"]["mean"] == pytest.approx([11.0, 16.5, 21.0])
    assert pool["partial"] == []

    align = out["aggregate"]["variants"]["align"]["curve"]
    assert align["n"] == 2 and align["iterations"] == [100, 200, 300] and align["left_out_iterations"] == []
    assert align["metrics"]["segm/AP"]["mean"] == pytest.approx([16.0, 27.0, 37.0])  # not the unfinished 90s
    assert align["metrics"]["segm/AP"]["std"] == pytest.approx([2**0.5, 8**0.5, 8**0.5])
    assert align["partial"] == [{"seed": 2, "state": "unfinished", "iterations": [100, 200]}]

    saved = json.loads(out["paths"]["json"].read_text())
    assert saved["variants"]["pool"]["curve"]["metrics"]["segm/AP"]["mean"] == pytest.approx([12.0, 23.0, 32.0])
    # the final numbers of the report are the curves' last points
    assert saved["variants"]["pool"]["metrics"]["segm/AP"]["mean"] == pytest.approx(0.32)


def test_curves_markdown_and_png(study, tmp_path):
    out = write_report(study, out_dir=tmp_path / "report", title="T", variants=["pool", "align"])
    lines = out["markdown"].splitlines()
    mask = lines[lines.index("*mask AP*") + 2 :][:4]
    assert mask == [
        "| variant | n | 100 | 200 | 300 |",
        "|---|---|---|---|---|",
        "| `pool` | 3 | 12.0 ± 2.0 | 23.0 ± 3.0 | 32.0 ± 2.0 |",
        "| `align` | 2 | 16.0 ± 1.4 | 27.0 ± 2.8 | 37.0 ± 2.8 |",
    ]
    box = lines[lines.index("*box AP*") + 4]
    assert box == "| `pool` | 3 | 22.0 ± 2.0 | 33.0 ± 3.0 | 42.0 ± 2.0 |"
    assert lines.index("*box AP*") < lines.index("*mask AP*")  # the report's task order
    assert "Iterations left out (not evaluated by every finished seed): `pool` 150." in lines
    assert "- `align` seed 2 (unfinished): iterations 100, 200" in lines
    assert "`align` seed 2: unfinished" in out["markdown"]  # the report's own list of missing runs
    assert out["paths"]["markdown"].read_text() == out["markdown"]

    import matplotlib.image

    assert out["paths"]["curves"] == tmp_path / "report" / "curves.png"
    image = matplotlib.image.imread(out["paths"]["curves"])
    assert image.shape[0] > 300 and image.shape[1] > 500  # 2 rows (box, mask) x 2 panels
    assert float(image[..., :3].std()) > 0.05


def test_no_evaluations_no_curves_and_no_chart_flag(tmp_path):
    # finished runs from before periodic evaluation: metrics.json only
    runs = []
    for seed in (0, 1):
        run = make_run(tmp_path / "old" / f"seed{seed}", seed, [evaluation(300, 0.3, 0.3)], finished=True)
        (run / "metrics.jsonl").unlink()
        runs.append(run)
    out = write_report(runs, out_dir=tmp_path / "r1")
    assert "Learning curves" not in out["markdown"] and "curves" not in out["paths"]
    assert not (tmp_path / "r1" / "curves.png").exists() and (tmp_path / "r1" / "chart.png").is_file()
    curve = out["aggregate"]["variants"]["old"]["curve"]
    assert curve["n"] == 2 and curve["iterations"] == [] and curve["metrics"]["segm/AP"]["mean"] == []

    # one seed with evaluations and one without: no common point, the other seed's are left out
    make_run(tmp_path / "mixed" / "seed0", 0, [evaluation(150, 0.1, 0.1), evaluation(300, 0.3, 0.3)], finished=True)
    out = write_report([runs[0], tmp_path / "mixed" / "seed0"], out_dir=tmp_path / "r2", labels={
        runs[0]: "v", tmp_path / "mixed" / "seed0": "v"})  # fmt: skip
    assert out["aggregate"]["variants"]["v"]["curve"]["left_out_iterations"] == [150, 300]
    assert "`v` 150, 300." in out["markdown"] and "*mask AP*" not in out["markdown"]
    assert not (tmp_path / "r2" / "curves.png").exists()

    with_points = [
        make_run(tmp_path / "new" / f"seed{s}", s, [evaluation(300, 0.3, 0.3)], finished=True) for s in (0, 1)
    ]
    out = write_report(with_points, out_dir=tmp_path / "r3", chart=False)
    assert "*mask AP*" in out["markdown"] and not (tmp_path / "r3" / "curves.png").exists()


def test_voc_curves(tmp_path):
    runs = []
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.7, 0.8)]):
        lines = [
            {"iteration": 100, "voc/mAP50_07": a, "voc/mAP50": b},
            {"iteration": 200, "voc/mAP50_07": b, "voc/mAP50": b},
        ]
        run = make_run(tmp_path / "voc" / f"seed{seed}", seed, lines, max_iter=200, finished=False)
        (run / "metrics.json").write_text(json.dumps(lines[-1]))
        runs.append(run)
    out = write_report(runs, out_dir=tmp_path / "r")
    curve = out["aggregate"]["variants"]["voc"]["curve"]
    assert set(curve["metrics"]) == {"voc/mAP50_07", "voc/mAP50"}
    assert curve["metrics"]["voc/mAP50_07"]["mean"] == pytest.approx([60.0, 70.0])
    assert "*mAP50 VOC07 11-pt*" in out["markdown"] and "| `voc` | 2 | 60.0 ± 14.1 | 70.0 ± 14.1 |" in out["markdown"]
    assert out["paths"]["curves"].is_file()
