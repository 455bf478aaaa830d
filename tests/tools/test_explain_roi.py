"""tools/explain_roi.py (maskrcnn.ops.explain): the worked example's numbers, gradient weights of the real ops, the figure
and argument errors. The expected numbers are worked by hand in the comments (the tool takes its
arithmetic from maskrcnn.ops.reference; these tests check it against the hand-worked case)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from maskrcnn.ops import explain as E

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "explain_roi.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("explain_roi", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL_CLI = _load_tool()  # the command line only: parse_args and main
WORKED = E.Setup(image_h=800, image_w=800, box=(0.0, 0.0, 665.0, 665.0), stride=32, output=(7, 7), sampling_ratio=2)


def test_worked_example_geometry():
    x, y = E.explain(WORKED)
    assert x == y.__class__(**{**y.__dict__, "name": "x"})  # square box: both axes alike
    assert WORKED.feature_size == (25, 25)
    assert x.exact == (0.0, 665 / 32) and x.exact[1] == pytest.approx(20.78125)
    # RoI Pool: round(0) = 0, round(20.78) = 21 (end index), size 21 - 0 + 1 = 22 cells, bin 22 / 7.
    assert x.pool_round == (0, 21)
    assert x.pool_size == 22
    assert x.pool_bin == pytest.approx(22 / 7)
    # [floor(b * 22/7), ceil((b + 1) * 22/7)): 4 cells each, neighbours share one cell.
    assert x.pool_bins == [(0, 4), (3, 7), (6, 10), (9, 13), (12, 16), (15, 19), (18, 22)]
    # RoI Align: 20.78125 / 7 = 2.96875 cells per bin; aligned starts at -0.5 in sample coordinates.
    assert x.align_bin == pytest.approx(2.96875) and x.unaligned_bin == pytest.approx(2.96875)
    assert x.align_start == -0.5 and x.unaligned_start == 0.0
    # 2 samples per bin at start + bin * (i + 0.5) / 2: -0.5 + 2.96875 / 4 = 0.2421875, ...
    assert x.align_samples[0] == pytest.approx([0.2421875, 1.7265625])
    assert x.align_samples[6][1] == pytest.approx(-0.5 + 6 * 2.96875 + 1.5 * 2.96875 / 2)
    assert x.unaligned_samples[0] == pytest.approx([0.7421875, 2.2265625])
    assert [e for _, e in x.bin_edges("aligned")] == pytest.approx([2.96875 * (b + 1) for b in range(7)])
    # RoI Warp: RoI Pool's corners 0 and 21, size 21 - 0 = 21 cells (no + 1), bins of 3 cells, samples
    # at 0 + 3b + 3 (i + 0.5) / 2 (no offset), shown half a cell further on the grid.
    assert x.warp_bin == 3.0
    assert x.warp_samples[0] == [0.75, 2.25] and x.warp_samples[6] == [18.75, 20.25]
    assert x.bin_edges("warp") == [(0.5 + 3 * b, 3.5 + 3 * b) for b in range(7)]


def test_worked_example_errors():
    x, _ = E.explain(WORKED)
    # Bin b's RoI Pool end is ceil((b + 1) * 22/7) against (b + 1) * 2.96875: the last one 22 - 20.78125.
    errors = x.errors("pool")
    assert errors[0] == 0.0 and errors[1] == pytest.approx(4 - 2.96875)
    assert errors[-1] == pytest.approx(22 - 20.78125)
    summary = E.error_summary(E.explain(WORKED))
    assert summary["pool"][0] == pytest.approx(1.21875) and summary["pool"][0] * 32 == pytest.approx(39.0)
    starts = [b * 3 - b * 2.96875 for b in range(7)]  # floor(b * 22/7) = 3b for b < 7
    ends = [math.ceil((b + 1) * 22 / 7) - (b + 1) * 2.96875 for b in range(7)]
    assert summary["pool"][1] == pytest.approx((sum(starts) + sum(ends)) / 14)
    assert summary["unaligned"] == pytest.approx((0.5, 0.5))  # half a cell = 16 px, everywhere
    # RoI Warp: edges 0.5 + 3b against 2.96875 b, errors 0.5 + 0.03125 b; the last end 21.5 - 20.78125.
    assert summary["warp"][0] == pytest.approx(0.71875) and summary["warp"][0] * 32 == pytest.approx(23.0)
    assert summary["warp"][1] == pytest.approx(sum(0.5 + 0.03125 * b for b in [*range(7), *range(1, 8)]) / 14)
    assert summary["aligned"][0] < 1e-5


def test_worked_example_cli_output_and_figure(tmp_path, capsys):
    # main() with the command line of the issue, in this process (a subprocess would spend its time
    # importing torch again).
    figure = tmp_path / "roi.png"
    code = TOOL_CLI.main(
        [
            "--image-size",
            "800",
            "800",
            "--box",
            "0",
            "0",
            "665",
            "665",
            "--stride",
            "32",
            "--output-size",
            "7",
            "--sampling-ratio",
            "2",
            "--figure",
            str(figure),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for text in (
        "20.781 cells",
        "round(20.781) = 21",
        "size = end - start + 1 = 22 cells",  # the op
        "floor = 20",
        "20/7 = 2.86 -> 2 cells",
        "20.78/7 = 2.97",
        "= 25 px",  # the popular account
        "[0,4) [3,7) [6,10) [9,13) [12,16) [15,19) [18,22)",
        "largest |error| 1.219 cells =  39.0 px",
        "size = end - start = 21 cells",  # RoI Warp
        "bin = 21 / 7 = 3.000 cells",
        "RoI Warp                 largest |error| 0.719 cells =  23.0 px",
    ):
        assert text in out, f"{text!r} missing from the output:\n{out}"
    _assert_non_blank_png(figure)


def _assert_non_blank_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 900
    assert pixels[..., :3].std() > 0.05  # drawn, not a blank canvas
    assert (pixels[..., :3].mean(-1) < 0.5).mean() > 0.005  # some dark ink (text, lines)


def _bilinear_oracle(ys, xs, count):
    """Hand-written bilinear weights of sample points strictly inside the map: {(row, col): weight}."""
    weights = {}
    for py in ys:
        for px in xs:
            r, c = math.floor(py), math.floor(px)
            fy, fx = py - r, px - c
            for cell, w in (
                ((r, c), (1 - fy) * (1 - fx)),
                ((r, c + 1), (1 - fy) * fx),
                ((r + 1, c), fy * (1 - fx)),
                ((r + 1, c + 1), fy * fx),
            ):
                weights[cell] = weights.get(cell, 0.0) + w / count
    return weights


@pytest.fixture(scope="module")
def worked_weights():
    feature = E.smooth_field(25, 25, seed=0)
    return feature, E.gradient_weights(WORKED, feature, (3, 4))


def test_average_bin_weights_are_bilinear_and_sum_to_one(worked_weights):
    _, weights = worked_weights
    x, y = E.explain(WORKED)
    cells = weights["roi_align_avg"]
    assert sum(w for _, _, w in cells) == pytest.approx(1.0, abs=1e-12)
    expected = _bilinear_oracle(y.align_samples[3], x.align_samples[4], count=4)
    expected = {k: v for k, v in expected.items() if v > 0}
    assert {(r, c): w for r, c, w in cells} == pytest.approx(expected, abs=1e-12)


def test_max_bin_sends_gradient_to_the_four_neighbours_of_one_sample(worked_weights):
    _, weights = worked_weights
    x, y = E.explain(WORKED)
    got = {(r, c): w for r, c, w in weights["roi_align_max"]}
    assert len(got) == 4 and sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    candidates = [_bilinear_oracle([py], [px], count=1) for py in y.align_samples[3] for px in x.align_samples[4]]
    assert any(got == pytest.approx(c, abs=1e-12) for c in candidates)


def test_warp_max_bin_sends_gradient_to_the_neighbours_of_one_rounded_box_sample(worked_weights):
    _, weights = worked_weights
    x, y = E.explain(WORKED)
    got = {(r, c): w for r, c, w in weights["roi_warp_max"]}
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    # Bin (3, 4) of the box rounded to (0, 0, 21, 21): samples 9.75, 11.25 (rows), 12.75, 14.25 (cols).
    assert y.warp_samples[3] == [9.75, 11.25] and x.warp_samples[4] == [12.75, 14.25]
    candidates = [_bilinear_oracle([py], [px], count=1) for py in (9.75, 11.25) for px in (12.75, 14.25)]
    assert any(got == pytest.approx(c, abs=1e-12) for c in candidates)


def test_max_at_the_border_has_fewer_cells():
    # 2 x 2 map; box (40, 40, 64, 64) / 32 - 0.5 = 0.75 .. 1.5: the samples at 1.3125 lie past the
    # last cell centre and clamp to it; the feature is largest at (1, 1), so that sample wins alone.
    setup = E.Setup(image_h=64, image_w=64, box=(40.0, 40.0, 64.0, 64.0), stride=32, output=(1, 1), sampling_ratio=2)
    feature = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]], dtype=torch.float64)
    weights = E.gradient_weights(setup, feature, (0, 0))
    assert weights["roi_align_max"] == [(1, 1, 1.0)]
    assert weights["roi_pool"] == [(1, 1, 1.0)]


def test_roi_pool_sends_all_gradient_to_one_cell_of_the_explained_bin(worked_weights):
    feature, weights = worked_weights
    x, y = E.explain(WORKED)
    [(r, c, w)] = weights["roi_pool"]
    assert w == 1.0
    (r0, r1), (c0, c1) = y.pool_bins[3], x.pool_bins[4]
    assert r0 <= r < r1 and c0 <= c < c1
    assert feature[0, 0, r, c] == feature[0, 0, r0:r1, c0:c1].max()  # the argmax of the bin


def test_real_ops_and_reference_give_the_same_gradients(worked_weights):
    _, real = worked_weights
    feature = E.smooth_field(25, 25, seed=0)
    reference = E.gradient_weights(WORKED, feature, (3, 4), ops=E.reference_ops())
    assert real.keys() == reference.keys()
    for name in real:
        assert [(r, c) for r, c, _ in real[name]] == [(r, c) for r, c, _ in reference[name]], name
        assert [w for *_, w in real[name]] == pytest.approx([w for *_, w in reference[name]], abs=1e-12), name


def test_backward_report_and_figure(tmp_path, worked_weights):
    feature, weights = worked_weights
    text = E.backward_report(weights, (3, 4), seed=0)
    assert "roi_pool       1 cells, sum 1.000000" in text
    assert "roi_align_max  4 cells, sum 1.000000" in text
    assert "roi_warp_max   4 cells, sum 1.000000" in text
    assert "seed 0" in text
    path = tmp_path / "roi_backward.png"
    E.draw_figure(WORKED, E.explain(WORKED), str(path), feature, weights, (3, 4))
    _assert_non_blank_png(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stride", "0"], "--stride must be a positive"),
        (["--box", "100", "0", "50", "10"], "x1 <= x2"),
        (["--output-size", "0"], "--output-size must be one or two positive"),
        (["--box", "0", "0", "900", "100"], "not inside the 800 x 800 image"),
        (["--box", "-5", "0", "100", "100"], "not inside"),
        (["--image-size", "0", "800"], "--image-size must be positive"),
        (["--backward", "7,0"], "is not an output bin"),
        (["--backward", "3"], "expected ROW,COL"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TOOL_CLI.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
