"""tools/ablation_report.py on hand-made run directories (the real sweep is in test_train.py)."""

import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("ablation_report", REPO / "tools" / "ablation_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

ROI = {
    "roi_pool": {"name": "roi_pool", "op": "roi_pool"},
    "roi_align": {"name": "roi_align", "op": "roi_align", "aligned": True, "mode": "avg"},
    "roi_align_max": {"name": "roi_align_max", "op": "roi_align", "aligned": True, "mode": "max"},
}


def make_run(root, num, roi, dataset, metrics):
    run = root / f"{num}_{roi}"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"roi_layer": ROI[roi], "dataset": {"name": dataset}}), run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), run / ".hydra" / "hydra.yaml")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def coco_metrics(box, mask):
    m = {"iteration": 100, "time/iter": 0.25}
    for prefix, ap in (("bbox", box), ("segm", mask)):
        m.update({f"{prefix}/AP": ap, f"{prefix}/AP50": ap + 0.2, f"{prefix}/AP75": ap - 0.05,
                  f"{prefix}/APs": ap / 2, f"{prefix}/APm": ap, f"{prefix}/APl": -1.0})
    return m


def test_coco_table_rows_in_job_order_with_percent_values(tmp_path, capsys):
    # job 10 sorts after job 2 (numeric, not lexicographic)
    make_run(tmp_path, 10, "roi_align_max", "synthetic", coco_metrics(0.302, 0.299))
    make_run(tmp_path, 2, "roi_align", "synthetic", coco_metrics(0.3456, 0.3031))
    make_run(tmp_path, 1, "roi_pool", "synthetic", None)
    assert report.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("RoI-layer ablation on synthetic (3 runs)")
    header = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert header == ["RoI layer", "bilinear", "agg.", "aligned", "box AP", "mask AP", "AP50", "AP75", "APs",
                      "APm", "APl", "time/iter (s)", "run"]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[4:]]
    assert [r[0] for r in rows] == ["`roi_pool`", "`roi_align`", "`roi_align_max`"]
    assert rows[0][1:4] == ["", "max", ""] and "no metrics.json" in rows[0][-2]
    # roi_align: box 34.6 (rounded), mask 30.3, then the mask AP50/75/s/m/l, APl -1 -> dash
    assert rows[1][1:] == ["✓", "avg", "✓", "34.6", "30.3", "50.3", "25.3", "15.2", "30.3", "–", "0.250", "2_roi_align"]
    assert rows[2][3] == "✓" and rows[2][2] == "max" and rows[2][5] == "29.9"


def test_voc_table_and_errors(tmp_path):
    make_run(tmp_path, 0, "roi_pool", "voc", {"voc/mAP50_07": 0.701, "voc/mAP50": 0.7234, "time/iter": 0.5})
    out = tmp_path / "t.md"
    report.main([str(tmp_path), "--out", str(out)])
    text = out.read_text()
    assert "mAP50 (VOC07 11-pt) | mAP50 (area)" in text and "| 70.1 | 72.3 | 0.500 |" in text
    assert "box AP" not in text
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "empty")])
