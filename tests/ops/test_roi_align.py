"""RoI Align (CPU): parity with the reference and torchvision, max mode, hand-worked cases,
dtypes, layouts, degenerate inputs."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_helpers import assorted_rois, feature_map, random_rois

from maskrcnn.ops import RoIAlign, roi_align, roi_align_reference

SCALE = 0.5


def grads(fn, x, rois, g, **kwargs):
    x = x.detach().clone().requires_grad_()
    y = fn(x, rois, **kwargs)
    if not y.requires_grad:  # the reference builds all-empty outputs without a graph
        return y.detach(), torch.zeros_like(x)
    (gx,) = torch.autograd.grad(y, x, g)
    return y.detach(), gx


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
def test_avg_matches_reference_and_torchvision(aligned, sampling_ratio):
    x = feature_map()
    rois = assorted_rois(3, 13, 17, SCALE)
    kwargs = dict(output_size=(5, 4), spatial_scale=SCALE, sampling_ratio=sampling_ratio, aligned=aligned)
    g = torch.randn(rois.shape[0], 4, 5, 4, dtype=torch.float64)
    y, gx = grads(roi_align, x, rois, g, **kwargs)
    y_ref, gx_ref = grads(roi_align_reference, x, rois, g, **kwargs)
    y_tv, gx_tv = grads(torchvision.ops.roi_align, x, rois, g, **kwargs)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, y_tv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_tv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
def test_max_matches_reference(aligned, sampling_ratio):
    # Random values: exact ties between distinct samples do not occur, but clamped samples at
    # the border give equal values, decided identically by the first-sample rule.
    x = feature_map(seed=1)
    rois = assorted_rois(3, 13, 17, SCALE, seed=1)
    kwargs = dict(output_size=(4, 3), spatial_scale=SCALE, sampling_ratio=sampling_ratio, aligned=aligned, mode="max")
    g = torch.randn(rois.shape[0], 4, 4, 3, dtype=torch.float64)
    y, gx = grads(roi_align, x, rois, g, **kwargs)
    y_ref, gx_ref = grads(roi_align_reference, x, rois, g, **kwargs)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)


def test_max_ties_go_to_first_sample():
    # Unaligned box [0, 4] x [0, 4] on a 6 x 6 map, one bin, sampling 2: bin size 4, samples
    # at 0 + (i + 0.5) * 4 / 2 = 1 and 3 along each axis. Integer coordinates put all weight on
    # one cell, so the samples read exactly f(1,1), f(1,3), f(3,1), f(3,3) (row-major order).
    # All four are 5: the first, (1, 1), wins and alone receives the gradient.
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    x[0, 0, 1, 1] = x[0, 0, 1, 3] = x[0, 0, 3, 1] = x[0, 0, 3, 3] = 5.0
    rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        xi = x.clone(memory_format=layout).requires_grad_()
        y = roi_align(xi, rois, 1, 1.0, 2, aligned=False, mode="max")
        y.sum().backward()
        assert y.item() == 5.0
        expected = torch.zeros_like(x)
        expected[0, 0, 1, 1] = 1.0
        torch.testing.assert_close(xi.grad, expected, rtol=0, atol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_max_off_map_sample_competes_as_zero(layout):
    # A map of zeros (and one of -1): samples off the map are 0 and take part in the maximum.
    # Box [-4, 0] on x, sampling 2, unaligned, one bin: x samples at -3 (off the map) and -1
    # (on it, clamped to cell 0); y samples at 1 and 3 (on it). Row-major order of the samples:
    # (y1, x-3) off, (y1, x-1) on, (y3, x-3) off, (y3, x-1) on.
    rois_left = torch.tensor([[0, -4, 0, 0, 4]], dtype=torch.float64)
    # Zeros: the first sample is off-map and ties with every on-map 0: it wins, no gradient.
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    roi_align(x, rois_left, 1, 1.0, 2, aligned=False, mode="max").sum().backward()
    assert torch.count_nonzero(x.grad) == 0
    # All -1: the off-map 0 beats every on-map sample; the output is 0, again no gradient.
    x = torch.full((1, 1, 6, 6), -1.0, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    y = roi_align(x, rois_left, 1, 1.0, 2, aligned=False, mode="max")
    y.sum().backward()
    assert y.item() == 0.0 and torch.count_nonzero(x.grad) == 0
    # Box [4, 8] on x of the 6-wide map: x samples at 5 (on: the last column, all weight there)
    # and 7 (off). The first sample (y1, x5) is on the map with value 0 and ties with the later
    # off-map 0: the first wins, so its cell (1, 5) gets the gradient.
    rois_right = torch.tensor([[0, 4, 0, 8, 4]], dtype=torch.float64)
    x = torch.zeros(1, 1, 6, 6, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    roi_align(x, rois_right, 1, 1.0, 2, aligned=False, mode="max").sum().backward()
    expected = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    expected[0, 0, 1, 5] = 1.0
    torch.testing.assert_close(x.grad, expected.contiguous(memory_format=layout), rtol=0, atol=0)
    xr = torch.zeros(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    roi_align_reference(xr, rois_right, 1, 1.0, 2, aligned=False, mode="max").sum().backward()
    torch.testing.assert_close(xr.grad, expected, rtol=0, atol=0)


# f(y, x) = 4y + x on a 4 x 4 map (values 0..15); box [0, 0, 4, 4] in image 0.
HAND_MAP = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
HAND_BOX = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float64)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        # Unaligned, sampling 1: bins of 2 cells, one sample per bin at its centre, at 1 and 3
        # per axis: f(1,1)=5, f(1,3)=7, f(3,1)=13, f(3,3)=15 (y=3 is the last row: all weight on it).
        (dict(aligned=False, sampling_ratio=1), [[5.0, 7.0], [13.0, 15.0]]),
        # Aligned: the box shifts by -0.5 to [-0.5, 3.5]; samples at 0.5 and 2.5. f is linear,
        # so bilinear interpolation is exact: f(0.5,0.5)=2.5, f(0.5,2.5)=4.5, f(2.5,0.5)=10.5, f(2.5,2.5)=12.5.
        (dict(aligned=True, sampling_ratio=1), [[2.5, 4.5], [10.5, 12.5]]),
        # Aligned, adaptive: ceil(4 / 2) = 2 samples per axis at -0.5 + 2b + (i + 0.5), i.e. on
        # the cells 0,1 | 2,3: bin (0,0) = mean(0, 1, 4, 5) = 2.5, (0,1) = mean(2, 3, 6, 7) = 4.5,
        # (1,0) = mean(8, 9, 12, 13) = 10.5, (1,1) = mean(10, 11, 14, 15) = 12.5.
        (dict(aligned=True, sampling_ratio=-1), [[2.5, 4.5], [10.5, 12.5]]),
        # Same samples, max: bin (0,0) = max(0, 1, 4, 5) = 5, then 7, 13, 15.
        (dict(aligned=True, sampling_ratio=-1, mode="max"), [[5.0, 7.0], [13.0, 15.0]]),
    ],
)
def test_hand_worked_cases(kwargs, expected):
    y = roi_align(HAND_MAP, HAND_BOX, 2, 1.0, **kwargs)
    torch.testing.assert_close(y, torch.tensor(expected, dtype=torch.float64).view(1, 1, 2, 2), rtol=0, atol=1e-12)


def test_hand_worked_gradient_and_off_map_box():
    # Max mode with the adaptive grid above: the winners are the cells 5, 7, 13, 15 (exact cell
    # centres, weight 1), so a gradient of ones lands there.
    x = HAND_MAP.clone().requires_grad_()
    roi_align(x, HAND_BOX, 2, 1.0, -1, aligned=True, mode="max").sum().backward()
    expected = torch.zeros(16, dtype=torch.float64)
    expected[[5, 7, 13, 15]] = 1.0
    torch.testing.assert_close(x.grad.flatten(), expected, rtol=0, atol=0)
    # Unaligned box [-4, 0] x [-4, 0], one bin, sampling 2: samples at -3 (off: < -1) and -1
    # (on: clamped to cell 0) per axis. Of the 4 samples only (-1, -1) is on the map, reading
    # f(0,0) + 1 = 1 on the map f + 1; the average divides by all 4 samples: 1 / 4.
    y = roi_align(HAND_MAP + 1, torch.tensor([[0, -4, -4, 0, 0]], dtype=torch.float64), 1, 1.0, 2, aligned=False)
    assert y.item() == 0.25


@settings(max_examples=25, deadline=None, derandomize=True)  # reproducible in CI
@given(
    seed=st.integers(0, 2**16),
    aligned=st.booleans(),
    sampling_ratio=st.integers(-1, 3),
    scale=st.sampled_from([1.0, 0.5, 0.25]),
    size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    mode=st.sampled_from(["avg", "max"]),
)
def test_random_boxes_match_reference(seed, aligned, sampling_ratio, scale, size, mode):
    x = feature_map(n=2, c=3, h=9, w=11, seed=seed)
    rois = random_rois(2, 9, 11, scale, k=6, seed=seed)
    kwargs = dict(output_size=size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned, mode=mode)
    g = torch.randn(6, 3, *size, dtype=torch.float64)
    y, gx = grads(roi_align, x, rois, g, **kwargs)
    y_ref, gx_ref = grads(roi_align_reference, x, rois, g, **kwargs)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_dtypes_against_float_reference(dtype, tol, mode):
    # Half types compute in float32: compare with the float32 reference on the same (rounded)
    # values; the only differences are summation order and the final rounding.
    x = feature_map(dtype=dtype)
    rois = assorted_rois(3, 13, 17, SCALE, dtype=torch.float32)
    g = torch.randn(rois.shape[0], 4, 3, 3).to(dtype)
    kwargs = dict(output_size=3, spatial_scale=SCALE, sampling_ratio=2, aligned=True, mode=mode)
    y, gx = grads(roi_align, x, rois, g, **kwargs)
    y_ref, gx_ref = grads(roi_align_reference, x.float(), rois, g.float(), **kwargs)
    assert y.dtype == dtype and gx.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.float(), gx_ref, rtol=tol, atol=tol)
    if dtype != torch.float32:  # rois may also come in the input's own dtype (rounded boxes)
        rois_h = rois.to(dtype)
        torch.testing.assert_close(
            roi_align(x, rois_h, **kwargs).float(),
            roi_align_reference(x.float(), rois_h.float(), **kwargs),
            rtol=tol,
            atol=tol,
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_channels_last_equals_contiguous(dtype, mode):
    x = feature_map(c=20, dtype=dtype)  # 20 channels: a vector body and a remainder
    rois = assorted_rois(3, 13, 17, SCALE, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    g = torch.randn(rois.shape[0], 20, 3, 2).to(dtype)
    kwargs = dict(output_size=(3, 2), spatial_scale=SCALE, sampling_ratio=-1, aligned=True, mode=mode)
    y, gx = grads(roi_align, x, rois, g, **kwargs)
    y_cl, gx_cl = grads(roi_align, x.contiguous(memory_format=torch.channels_last), rois, g, **kwargs)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    assert gx_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_cl)
    assert torch.equal(gx, gx_cl)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_channels_last_backward_with_a_one_channel_block(mode):
    # 17 channels of one image are split into blocks of 16 and 1; in channels_last the 1-channel
    # block's gradient slice is strided (it once zeroed a contiguous range instead).
    x = feature_map(n=1, c=17)
    rois = assorted_rois(1, 13, 17, SCALE)
    g = torch.randn(rois.shape[0], 17, 3, 3, dtype=torch.float64)
    kwargs = dict(output_size=3, spatial_scale=SCALE, sampling_ratio=2, aligned=True, mode=mode)
    _, gx_cl = grads(roi_align, x.contiguous(memory_format=torch.channels_last), rois, g, **kwargs)
    _, gx_ref = grads(roi_align_reference, x, rois, g, **kwargs)
    torch.testing.assert_close(gx_cl, gx_ref, rtol=1e-12, atol=1e-12)


def test_backward_is_deterministic_across_thread_counts():
    x = feature_map(c=8, dtype=torch.float32)
    rois = random_rois(3, 13, 17, SCALE, k=40, dtype=torch.float32)
    g = torch.randn(40, 8, 7, 7)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(
                grads(roi_align, x, rois, g, output_size=7, spatial_scale=SCALE, sampling_ratio=2, aligned=True)[1]
            )
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_rois_as_list_of_boxes():
    x = feature_map()
    rois = assorted_rois(3, 13, 17, SCALE)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(3)]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(3)])
    torch.testing.assert_close(
        roi_align(x, per_image, 3, SCALE, aligned=True), roi_align(x, ordered, 3, SCALE, aligned=True), rtol=0, atol=0
    )
    torch.testing.assert_close(
        roi_align(x, per_image, 3, SCALE, aligned=True),
        torchvision.ops.roi_align(x, per_image, 3, SCALE, aligned=True),
        rtol=1e-12,
        atol=1e-12,
    )


def test_no_rois_and_empty_batch():
    x = feature_map().requires_grad_()
    y = roi_align(x, torch.zeros(0, 5, dtype=torch.float64), (3, 2), SCALE, aligned=True)
    assert y.shape == (0, 4, 3, 2)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = torch.zeros(0, 4, 13, 17, dtype=torch.float64, requires_grad=True)
    y = roi_align(empty, torch.zeros(0, 5, dtype=torch.float64), 2, SCALE, mode="max")
    assert y.shape == (0, 4, 2, 2)
    y.sum().backward()
    assert empty.grad.shape == empty.shape
    assert roi_align(empty, [], 2, SCALE).shape == (0, 4, 2, 2)


def test_module_matches_functional():
    with pytest.raises(TypeError):
        RoIAlign(3, SCALE, 2, False, "max")  # mode is keyword-only
    m = RoIAlign(output_size=3, spatial_scale=SCALE, sampling_ratio=2, aligned=False, mode="max")
    assert repr(m) == "RoIAlign(output_size=3, spatial_scale=0.5, sampling_ratio=2, aligned=False, mode='max')"
    x = feature_map()
    rois = assorted_rois(3, 13, 17, SCALE)
    assert torch.equal(m(x, rois), roi_align(x, rois, 3, SCALE, 2, False, "max"))
    with pytest.raises(ValueError, match="mode"):
        RoIAlign(output_size=3, spatial_scale=1.0, mode="mean")
