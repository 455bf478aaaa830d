"""The study next to Table 2c / 2d of the Mask R-CNN paper: the paper's numbers, which cell each of
ours and theirs lands in, descriptors from the paper row or the variant's config, the spec's
``paper_table`` and its errors, and tools/run_study.py writing it into report.md / report.json."""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from maskrcnn.studies import load_study
from maskrcnn.studies.paper_table import PAPER, paper_rows, paper_table, paper_table_markdown
from maskrcnn.studies.spec import PaperTableSpec

REPO = Path(__file__).resolve().parents[2]
POOL = {"op": "RoIPool", "bilinear": "", "agg.": "max", "aligned": "", "samples": ""}
ALIGN = {"op": "RoIAlign", "bilinear": "✓", "agg.": "avg", "aligned": "✓", "samples": "adaptive"}


def stats(mean, std, n=3):
    return {"mean": mean, "std": std, "n": n, "values": []}


def variant(roi, mask, box=None, n=3):
    """A report entry with mask (and box) AP, AP50, AP75 as fractions, std 0.01, 0.02, 0.03."""
    metrics = {}
    for task, aps in (("segm", mask), ("bbox", box)):
        for key, ap, std in zip(("AP", "AP50", "AP75"), aps or (), (0.01, 0.02, 0.03)):
            metrics[f"{task}/{key}"] = stats(ap, std if n > 1 else None, n)
    return {"roi_layer": roi, "n": n, "metrics": metrics}


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The first Markdown table's lines as {column header: cell}."""
    lines = markdown.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("|")) :]
    lines = lines[: next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_the_papers_numbers():
    # Table 2c / 2d of He et al. 2017 (mask AP, AP50, AP75; 2d also box AP, AP50, AP75)
    expected = {
        ("2c", "RoIPool-max"): (False, False, "max", 26.9, 48.8, 26.4),
        ("2c", "RoIWarp-max"): (False, True, "max", 27.2, 49.2, 27.1),
        ("2c", "RoIWarp-ave"): (False, True, "ave", 27.1, 48.9, 27.1),
        ("2c", "RoIAlign-max"): (True, True, "max", 30.2, 51.0, 31.8),
        ("2c", "RoIAlign-ave"): (True, True, "ave", 30.3, 51.2, 31.5),
        ("2d", "RoIPool"): (False, False, "max", 23.6, 46.5, 21.6, 28.2, 52.7, 26.9),
        ("2d", "RoIAlign"): (True, True, None, 30.9, 51.8, 32.1, 34.0, 55.3, 36.4),
    }
    assert {(t, r) for t in PAPER for r in PAPER[t]} == set(expected)
    keys = ["segm/AP", "segm/AP50", "segm/AP75", "bbox/AP", "bbox/AP50", "bbox/AP75"]
    for (table, row), (align, bilinear, agg, *values) in expected.items():
        got = PAPER[table][row]
        assert (got["align"], got["bilinear"], got.get("agg")) == (align, bilinear, agg), row
        assert [got.get(k) for k in keys] == values + [None] * (6 - len(values)), row


def test_table_2c_puts_ours_and_the_papers_numbers_in_their_columns():
    report = {
        "tasks": ["segm"],
        "variants": {
            "roi_pool": variant(POOL, (0.036, 0.105, 0.011)),
            "roi_align_unaligned": variant({**ALIGN, "aligned": ""}, (0.059, 0.148, 0.035)),
            "roi_align": variant(ALIGN, (0.057, 0.142, 0.038), n=1),
        },
    }
    rows = paper_rows("2c", {"roi_pool": "RoIPool-max", "roi_align_unaligned": None, "roi_align": "RoIAlign-ave",
                             "roi_warp": "RoIWarp-max"})  # fmt: skip
    markdown = paper_table_markdown(report, rows, "2c")
    head = markdown.splitlines()[2]
    assert head == ("| RoI layer | align? | bilinear? | agg. | mask AP | mask AP50 | mask AP75 "
                    "| paper mask AP | paper mask AP50 | paper mask AP75 |")  # fmt: skip
    pool, unaligned, align, warp = table_rows(markdown)
    assert pool == {"RoI layer": "RoIPool (`roi_pool`)", "align?": "✗", "bilinear?": "✗", "agg.": "max",
                    "mask AP": "3.6 ± 1.0", "mask AP50": "10.5 ± 2.0", "mask AP75": "1.1 ± 3.0",
                    "paper mask AP": "26.9", "paper mask AP50": "48.8", "paper mask AP75": "26.4"}  # fmt: skip
    # no paper row: descriptors from its config (RoIAlign without the half-pixel offset), no paper numbers
    assert [unaligned[c] for c in ("RoI layer", "align?", "bilinear?", "agg.", "mask AP", "paper mask AP")] == [
        "RoIAlign (`roi_align_unaligned`)", "✗", "✓", "ave", "5.9 ± 1.0", "–"]  # fmt: skip
    assert [align[c] for c in ("align?", "agg.", "mask AP75", "paper mask AP", "paper mask AP75")] == [
        "✓",
        "ave",
        "3.8",
        "30.3",
        "31.5",
    ]  # fmt: skip  (n = 1: the mean alone)
    # a variant the report lacks: the paper's row, no numbers of ours
    assert (warp["RoI layer"], warp["mask AP"], warp["paper mask AP50"]) == ("RoIWarp (`roi_warp`)", "–", "49.2")
    assert "n: `roi_pool` 3, `roi_align_unaligned` 3, `roi_align` 1, `roi_warp` 0" in markdown
    assert "differ" not in markdown


def test_table_2d_has_box_columns_and_notes_a_row_that_does_not_match_the_config():
    report = {
        "tasks": ["bbox", "segm"],
        "variants": {
            "roi_pool": variant(POOL, (0.10, 0.20, 0.05), (0.12, 0.25, 0.06)),
            "roi_align_max": variant({**ALIGN, "agg.": "max"}, (0.15, 0.26, 0.11), (0.16, 0.30, 0.10)),
        },
    }
    data = paper_table(report, paper_rows("2d", {"roi_pool": "RoIPool", "roi_align_max": "RoIAlign"}), "2d")
    assert data["ours_keys"] == ["segm/AP", "segm/AP50", "segm/AP75", "bbox/AP", "bbox/AP50", "bbox/AP75"]
    assert data["paper_keys"] == data["ours_keys"]
    assert data["rows"][1]["ours"]["bbox/AP50"] == pytest.approx({"mean": 30.0, "std": 2.0, "n": 3})
    assert data["rows"][1]["paper"]["bbox/AP75"] == 36.4 and data["notes"] == []
    pool, align = table_rows(paper_table_markdown(report, paper_rows("2d", {"roi_pool": "RoIPool",
                                                                             "roi_align_max": "RoIAlign"}), "2d"))  # fmt: skip
    assert (pool["box AP"], pool["box AP75"], pool["paper box AP"], pool["paper box AP50"]) == (
        "12.0 ± 1.0", "6.0 ± 3.0", "28.2", "52.7")  # fmt: skip
    assert (align["mask AP"], align["paper mask AP"], align["paper box AP75"]) == ("15.0 ± 1.0", "30.9", "36.4")
    assert align["agg."] == "max"  # the paper does not say; the config does

    # roi_align_max said to reproduce the paper's average-pooled RoIAlign: the note says so
    markdown = paper_table_markdown(report, paper_rows("2c", {"roi_align_max": "RoIAlign-ave"}), "2c")
    assert "- `roi_align_max` vs RoIAlign-ave: agg max in its config, ave in the row" in markdown
    (row,) = table_rows(markdown)
    assert row["agg."] == "ave" and row["box AP"] == "16.0 ± 1.0" and "paper box AP" not in row


def write_spec(folder: Path, body: str) -> Path:
    path = folder / "paper_study.yaml"
    path.write_text(body)
    return path


SPEC = textwrap.dedent("""
    title: S
    seeds: [0, 1]
    baseline: roi_pool
    variants: {roi_pool: [roi_layer=roi_pool], roi_align: [roi_layer=roi_align], other: []}
""")


def test_spec_paper_table(tmp_path):
    spec = load_study(write_spec(tmp_path, SPEC + "paper_table:\n  table: 2c\n  rows: {roi_align: RoIAlign-ave, "
                                 "other: null, roi_pool: RoIPool-max}\n"))  # fmt: skip
    assert spec.paper_table == PaperTableSpec(table="2c", rows={"roi_align": "RoIAlign-ave", "other": None,
                                                                "roi_pool": "RoIPool-max"})  # fmt: skip
    assert list(spec.paper_table.rows) == ["roi_align", "other", "roi_pool"]  # the table's line order
    assert load_study(write_spec(tmp_path, SPEC)).paper_table is None


@pytest.mark.parametrize("entry, message", [
    ("{table: 2e, rows: {roi_pool: RoIPool}}", "paper_table.table '2e' is not one of ['2c', '2d']"),
    ("{table: 2c, rows: {roi_warp: RoIWarp-max}}", "paper_table.rows: 'roi_warp' is not one of the variants"),
    ("{table: 2c, rows: {roi_pool: RoIPool}}", "paper_table.rows.roi_pool: 'RoIPool' is not a row of Table 2c "
                                               "(RoIPool-max, RoIWarp-max, RoIWarp-ave, RoIAlign-max, RoIAlign-ave)"),
    ("{table: 2d, rows: {roi_align: RoIAlign-ave}}", "'RoIAlign-ave' is not a row of Table 2d (RoIPool, RoIAlign)"),
    ("{table: 2c, rows: {}}", "paper_table.rows must map variants to rows of Table 2c"),
    ("{table: 2c}", "paper_table must be {table: 2c|2d, rows: {<variant>: <paper row or null>, ...}}"),
    ("2c", "paper_table must be"),
])  # fmt: skip
def test_spec_paper_table_errors(tmp_path, entry, message):
    with pytest.raises(ValueError, match="^study paper_study .*: " + re.escape(message)) as error:
        load_study(write_spec(tmp_path, SPEC + f"paper_table: {entry}\n"))
    assert "\n" not in str(error.value)


def test_run_study_report_writes_the_paper_table_and_the_curves(tmp_path, capsys):
    tool_spec = importlib.util.spec_from_file_location("run_study", REPO / "tools" / "run_study.py")
    tool = importlib.util.module_from_spec(tool_spec)
    tool_spec.loader.exec_module(tool)
    spec = write_spec(
        tmp_path, SPEC + "paper_table: {table: 2c, rows: {roi_pool: RoIPool-max, roi_align: RoIAlign-ave}}\n"
    )
    root = tmp_path / "studies"
    for name, roi, masks in (
        ("roi_pool", {"name": "roi_pool", "op": "roi_pool"}, (0.2, 0.3)),
        ("roi_align", {"name": "roi_align", "op": "roi_align", "aligned": True}, (0.3, 0.4)),
    ):
        for seed, mask in enumerate(masks):  # fmt: skip
            run = root / "paper_study" / name / f"seed{seed}"
            (run / ".hydra").mkdir(parents=True)
            OmegaConf.save(OmegaConf.create({"seed": seed, "roi_layer": roi, "solver": {"max_iter": 10}}),
                           run / ".hydra" / "config.yaml")  # fmt: skip
            lines = [{"iteration": 5, "segm/AP": mask / 2, "segm/AP50": mask, "segm/AP75": mask / 4},
                     {"iteration": 10, "segm/AP": mask, "segm/AP50": 2 * mask, "segm/AP75": mask / 2}]  # fmt: skip
            (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            (run / "metrics.json").write_text(json.dumps(lines[-1]))
    assert tool.main([str(spec), "--root", str(root), "--report-only", "--report-dir", str(tmp_path / "out")]) == 0
    report_md = (tmp_path / "out" / "paper_study" / "report.md").read_text()
    assert report_md in capsys.readouterr().out
    pool, align = table_rows(report_md[report_md.index("**Next to Table 2c") :])
    assert (pool["RoI layer"], pool["mask AP"], pool["mask AP50"], pool["paper mask AP"]) == (
        "RoIPool (`roi_pool`)", "25.0 ± 7.1", "50.0 ± 14.1", "26.9")  # fmt: skip
    assert (align["mask AP"], align["paper mask AP75"]) == ("35.0 ± 7.1", "31.5")
    assert "| `roi_align` | 2 | 17.5 ± 3.5 | 35.0 ± 7.1 |" in report_md  # the curve: iterations 5 and 10
    saved = json.loads((tmp_path / "out" / "paper_study" / "report.json").read_text())
    assert saved["paper_table"]["table"] == "2c" and saved["paper_table"]["rows"][1]["paper"]["segm/AP"] == 30.3
    assert saved["paper_table"]["rows"][0]["ours"]["segm/AP"]["mean"] == pytest.approx(25.0)
    assert saved["variants"]["roi_pool"]["curve"]["iterations"] == [5, 10]
    assert (tmp_path / "out" / "paper_study" / "curves.png").is_file()
