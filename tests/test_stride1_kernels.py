"""The stride-1 depthwise template (kernels/stride1) against a numpy reference, over edge shapes: both walks
(``rows`` from one vector wide, ``flat`` below), widths at and between vector widths (pieces 16 + 8 + 4 + 2 + 1),
planes of 1 to 3 rows (where the top and bottom rows overlap), 3x3 and 5x5, every epilogue, the vector widths of
every target (16, 8 and 4 lanes), threads that split channels evenly or not; and the graph pass that routes
stride-1 depthwise convolutions to it, through compile, against ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm

from edgesparse.kernels.stride1 import DepthwiseS1Spec, make_depthwise_s1_kernel
from edgesparse.targets import get_target

from conftest import clip_bounds, compile_checked, conv_clip_nodes, save_graph

HOST = get_target("x86_64")
CLAMPS = {"linear": None, "relu": (0.0, math.inf), "relu6": (0.0, 6.0), "minmax": (-0.5, 0.75)}


def reference(x, w, b, k, clamp):
    """Direct loops in float64: y[c, i, j] = b[c] + sum x[c, i + ry - k//2, j + rx - k//2] w[c, 0, ry, rx]."""
    _, c, h, wd = x.shape
    p = k // 2
    xp = np.zeros((c, h + 2 * p, wd + 2 * p))
    xp[:, p:p + h, p:p + wd] = x[0]
    y = np.zeros((c, h, wd)) + b[:, None, None]
    for ry in range(k):
        for rx in range(k):
            y += w[:, 0, ry, rx][:, None, None] * xp[:, ry:ry + h, rx:rx + wd]
    if clamp is not None:
        y = np.clip(y, *clamp)
    return y[None].astype(np.float32)


def run(c, h, w, k=3, clamp=None, threads=1, lanes=None):
    spec = DepthwiseS1Spec(c, h, w, k, k // 2, lanes or HOST.vector_lanes_f32, clamp, threads)
    ex = tvm.compile(tvm.IRModule({"k": make_depthwise_s1_kernel(spec, "k")}), target=HOST.tvm_target())
    rng = np.random.default_rng(c * 1000 + h * 10 + w)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    want = reference(x, wt, b, k, clamp)
    y = np.full(want.shape, np.nan, np.float32)  # every output must be written
    args = [tvm.runtime.tensor(a) for a in (x, wt, b, y)]
    ex.mod["k"](*args)
    np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-5, atol=1e-5)
    return spec


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("w", [1, 2, 3, 5, 7, 8, 9, 14, 15, 16, 17, 28, 31, 47, 56, 112])
def test_row_widths(w, k):
    spec = run(3, 9, w, k)
    assert spec.walk == ("rows" if w >= HOST.vector_lanes_f32 else "flat")


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("h", [1, 2, 3, 4, 6, 17])
@pytest.mark.parametrize("w", [7, 20])
def test_plane_heights(h, w, k):
    run(2, h, w, k, clamp=(0.0, 6.0))


@pytest.mark.parametrize("lanes", [16, 4])
@pytest.mark.parametrize("w", [3, 7, 14, 28])
def test_other_vector_widths(lanes, w):
    """16 lanes (AVX-512) and 4 (NEON, SIMD128) on the AVX2 host: LLVM splits or pads the vectors, the walk
    and its padding follow ``lanes``."""
    spec = run(3, 7, w, 3, clamp=(0.0, 6.0), lanes=lanes)
    assert spec.walk == ("rows" if w >= lanes else "flat")


@pytest.mark.parametrize("epilogue", list(CLAMPS))
def test_epilogues(epilogue):
    for w in (6, 24):
        spec = run(4, 10, w, 3, clamp=CLAMPS[epilogue])
        assert spec.variant == f"f32_dwconv3x3s1_{spec.walk}{HOST.vector_lanes_f32}_{epilogue}"


@pytest.mark.parametrize("w", [7, 28])
def test_threads_split_channels(w):
    run(7, 12, w, 3, clamp=(0.0, 6.0), threads=2)  # 4 + 3 channels
    run(2, 5, w, 3, threads=4)  # more threads than channels


def test_unsupported_kernels_are_refused():
    assert "kernel 7" in DepthwiseS1Spec(4, 8, 8, 7, 3, 8).supported()
    assert "padding 0" in DepthwiseS1Spec(4, 8, 8, 3, 0, 8).supported()


def test_compile_routes_stride1_depthwise_to_the_template(tmp_path):
    """Through compile: a depthwise 3x3 s1 conv + bias + Clip runs the template (fused into one call) for a wide
    and a narrow plane; a depthwise conv without padding stays with the window schedule; all equal ONNX
    Runtime."""
    rng = np.random.default_rng(0)
    lanes = HOST.vector_lanes_f32
    for width, pad, routed in ((24, 1, f"f32_dwconv3x3s1_rows{lanes}_relu6"), (5, 1, f"f32_dwconv3x3s1_flat{lanes}_relu6"),
                               (12, 0, None)):
        c = 8
        weights = {"w": rng.standard_normal((c, 1, 3, 3)).astype(np.float32),
                   "b": rng.standard_normal(c).astype(np.float32), **clip_bounds()}
        ho, wo = 10 + 2 * pad - 2, width + 2 * pad - 2
        path = save_graph(tmp_path / f"s1_{width}_{pad}.onnx",
                          conv_clip_nodes(group=c, kernel_shape=[3, 3], pads=[pad] * 4),
                          {"x": (1, c, 10, width)}, {"y": (1, c, ho, wo)}, weights)
        kinds = compile_checked(path)
        assert kinds == [routed] if routed else not kinds[0].startswith("f32_"), kinds
