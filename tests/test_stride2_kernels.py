"""The stride-2 templates (kernels/stride2: depthwise, and k x k over a few input channels) against a numpy
reference, over edge shapes: row widths below, at and between vector widths (pieces 16 + 8 + 4 + 2 + 1),
one-row and odd-height planes, 3x3, 5x5 and 7x7, every epilogue, threads, channel counts that the output
block does or does not divide; and the graph pass that routes stride-2 convolutions to them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm

from edgesparse.kernels.stride2 import ConvS2Spec, DepthwiseS2Spec, make_conv_s2_kernel, make_depthwise_s2_kernel
from edgesparse.targets import get_target

from conftest import clip_bounds, compile_checked, conv_clip_nodes, requires_avx512, save_graph

HOST = get_target("x86_64")
CLAMPS = {"linear": None, "relu": (0.0, math.inf), "relu6": (0.0, 6.0), "minmax": (-0.5, 0.75)}


def reference(x, w, b, k, pad, clamp, depthwise=True):
    """Direct loops in float64: y[f, i, j] = b[f] + sum x[c, 2i + ry - pad, 2j + rx - pad] w[f, c, ry, rx] over
    c = f (depthwise) or every input channel."""
    _, c, h, wd = x.shape
    xp = np.zeros((c, h + 2 * pad, wd + 2 * pad))
    xp[:, pad:pad + h, pad:pad + wd] = x[0]
    ho, wo = (h + 2 * pad - k) // 2 + 1, (wd + 2 * pad - k) // 2 + 1
    y = np.zeros((w.shape[0], ho, wo)) + b[:, None, None]
    for ry in range(k):
        for rx in range(k):
            taps = xp[:, ry:ry + 2 * ho:2, rx:rx + 2 * wo:2]  # [c, ho, wo]
            if depthwise:
                y += w[:, 0, ry, rx][:, None, None] * taps
            else:
                y += np.einsum("fc,chw->fhw", w[:, :, ry, rx], taps)
    if clamp is not None:
        y = np.clip(y, *clamp)
    return y[None].astype(np.float32)


def run(c, h, w, k, clamp=None, threads=1, target=HOST, deinterleave_lanes=0):
    spec = DepthwiseS2Spec(c, h, w, k, k // 2, target.vector_lanes_f32, clamp, threads, deinterleave_lanes)
    ex = tvm.compile(tvm.IRModule({"k": make_depthwise_s2_kernel(spec, "k")}), target=target.tvm_target())
    rng = np.random.default_rng(c * 1000 + h * 10 + w)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    want = reference(x, wt, b, k, k // 2, clamp)
    y = np.full(want.shape, np.nan, np.float32)
    args = [tvm.runtime.tensor(a) for a in (x, wt, b, y)]
    ex.mod["k"](*args)
    np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-5, atol=1e-5)
    return spec


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("w", [4, 6, 8, 14, 16, 28, 32, 34, 62, 112])
def test_row_widths(w, k):
    run(3, 6, w, k)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("h", [1, 2, 3, 4, 7, 13])
@pytest.mark.parametrize("w", [8, 20])
def test_plane_heights(h, w, k):
    """Both walks (8 -> 4 outputs: plane; 20 -> 10: rows, on 8 lanes), planes whose top and bottom rows overlap."""
    spec = run(2, h, w, k, clamp=(0.0, 6.0))
    assert spec.walk == ("rows" if spec.out_width >= HOST.vector_lanes_f32 else "plane")


@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("w", [4, 6, 14, 16, 28, 34, 112])
def test_rows_de_interleaved_in_narrower_vectors(w, split):
    """The descriptor's deinterleave_lanes (x86_64: 4 of 8): both walks and the first-layer conv, rows whose
    halves are under, at and past the narrower vector (the last vector moved back), named by it."""
    spec = run(3, 5, w, 3, clamp=(0.0, 6.0), deinterleave_lanes=split)
    assert spec.rows.lanes == split and spec.variant.endswith(f"d{split}_relu6")
    run_conv(3, 8, 5, w, 3, clamp=(0.0, 6.0), deinterleave_lanes=split)


@pytest.mark.parametrize("epilogue", list(CLAMPS))
def test_epilogues(epilogue):
    spec = run(4, 10, 24, 3, clamp=CLAMPS[epilogue])
    assert spec.variant == f"f32_dwconv3x3s2_{spec.walk}{HOST.vector_lanes_f32}_{epilogue}"


@pytest.mark.parametrize("w", [8, 28])
def test_threads_split_channels(w):
    run(7, 12, w, 3, clamp=(0.0, 6.0), threads=2)
    run(2, 6, w, 3, threads=4)  # more threads than channels


@requires_avx512
def test_mobilenet_v1_first_stride2_layer_on_avx512_descriptor():
    run(64, 112, 112, 3, clamp=(0.0, 6.0), target=get_target("x86_64-avx512"))


def test_unsupported_shapes_are_refused():
    assert DepthwiseS2Spec(4, 8, 7, 3, 1, 8).supported() == "odd input width 7"
    assert "3x3 pad 1" in DepthwiseS2Spec(4, 8, 8, 3, 0, 8).supported()
    assert "3x3 pad 1" in DepthwiseS2Spec(4, 8, 8, 7, 3, 8).supported()
    assert "below 4" in DepthwiseS2Spec(4, 8, 2, 3, 1, 8).supported()
    assert "at most 4" in ConvS2Spec(5, 8, 8, 8, 3, 1, 8, 12).supported()
    assert "odd k" in ConvS2Spec(3, 8, 8, 8, 4, 2, 8, 12).supported()
    assert DepthwiseS2Spec(4, 8, 8, 5, 2, 8).supported() is None


def run_conv(cin, cout, h, w, k, clamp=None, threads=1, acc=12, target=HOST, deinterleave_lanes=0):
    spec = ConvS2Spec(cin, cout, h, w, k, k // 2, target.vector_lanes_f32, acc, clamp, threads, deinterleave_lanes)
    ex = tvm.compile(tvm.IRModule({"k": make_conv_s2_kernel(spec, "k")}), target=target.tvm_target())
    rng = np.random.default_rng(cin * 1000 + cout * 100 + w)
    x = rng.standard_normal((1, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    want = reference(x, wt, b, k, k // 2, clamp, depthwise=False)
    y = np.full(want.shape, np.nan, np.float32)
    args = [tvm.runtime.tensor(a) for a in (x, wt, b, y)]
    ex.mod["k"](*args)
    np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-4, atol=1e-4)
    return spec


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("w", [4, 10, 16, 30, 64, 112])
def test_conv_row_widths_and_kernels(w, k):
    run_conv(3, 8, 5, w, k, clamp=(0.0, 6.0))


@pytest.mark.parametrize("cin", [1, 2, 3, 4])
@pytest.mark.parametrize("cout", [1, 5, 7, 12, 32])
def test_conv_channels(cin, cout):
    spec = run_conv(cin, cout, 6, 20, 3)
    mr, nv = spec.tile
    assert cout % mr == 0 and mr * nv <= 12


@pytest.mark.parametrize("epilogue", list(CLAMPS))
def test_conv_epilogues_threads_and_budgets(epilogue):
    run_conv(3, 16, 9, 24, 3, clamp=CLAMPS[epilogue], threads=2, acc=24)
    run_conv(3, 16, 1, 24, 3, clamp=CLAMPS[epilogue], acc=4)


@requires_avx512
def test_conv_mobilenet_first_layer_on_avx512_descriptor():
    spec = run_conv(3, 32, 224, 224, 3, clamp=(0.0, 6.0), acc=24, target=get_target("x86_64-avx512"))
    assert spec.variant == "f32_conv3x3s2_4x64_relu6"


def test_compile_routes_stride2_depthwise_to_the_template(tmp_path):
    """Through compile: a depthwise 3x3 s2 conv + bias + Clip runs the template (fused into one call), and so does
    a 3-channel 3x3 s2 conv, both with the x86_64 descriptor's 4-lane de-interleave; the depthwise conv on an
    odd-width input, and the one whose output rows are under half a vector (3 on 8 lanes), stay with the window
    schedule; all equal ONNX Runtime."""
    rng = np.random.default_rng(0)
    for width, routed, group in ((24, "f32_dwconv3x3s2_rows8d4_relu6", True), (21, None, True), (6, None, True),
                                 (24, "f32_conv3x3s2_8x8d4_relu6", False)):
        c = 8 if group else 3
        weights = {"w": rng.standard_normal((8, 1 if group else c, 3, 3)).astype(np.float32),
                   "b": rng.standard_normal(8).astype(np.float32), **clip_bounds()}
        path = save_graph(tmp_path / f"s2_{width}_{group}.onnx",
                          conv_clip_nodes(group=c if group else 1, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                          strides=[2, 2]),
                          {"x": (1, c, 10, width)}, {"y": (1, 8, 5, (width + 1) // 2)}, weights)
        kinds = compile_checked(path)
        assert kinds == [routed] if routed else not kinds[0].startswith("f32_"), kinds
