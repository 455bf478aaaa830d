"""Markdown per-category tables."""

from maskrcnn.evaluation import format_per_category_table, per_category_from_metrics


def test_table_from_flat_metrics_keeps_columns_and_marks_missing():
    metrics = {
        "bbox/AP": 0.5,
        "bbox/AP50": 0.7,
        "bbox/AP-person": 0.25,
        "bbox/AP-hot dog": 0.5,
        "segm/AP-person": 0.125,
        "voc/mAP50": 0.3,
        "voc/AP50-cell": 0.3,
        "voc/AP50_07-cell": 0.4,
    }
    columns = per_category_from_metrics(metrics)
    assert columns == {
        "bbox": {"person": 0.25, "hot dog": 0.5},
        "segm": {"person": 0.125},
        "AP50": {"cell": 0.3},
        "AP50_07": {"cell": 0.4},
    }
    table = format_per_category_table({"bbox": columns["bbox"], "segm": columns["segm"]})
    assert table.splitlines() == [
        "| category | bbox | segm |",
        "|---|---:|---:|",
        "| person | 0.250 | 0.125 |",
        "| hot dog | 0.500 | n/a |",
    ]
