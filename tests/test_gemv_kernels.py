"""The dense fully-connected template (kernels/gemv.py) against numpy over edge shapes: outputs under one
vector, at and between tile widths, remainders of every piece kind, one input, the vector widths of every
target (16, 8 and 4 lanes), every epilogue, threads; specs it refuses; and the graph pass that routes batch-1
Gemm/MatMul layers with constant weights to it, through compile, against ONNX Runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm

from edgesparse.kernels.gemv import GemvSpec, make_gemv_kernel, pack_gemv_weights
from edgesparse.targets import get_target

from conftest import compile_checked, save_graph

HOST = get_target("x86_64")
CLAMPS = {"linear": None, "relu": (0.0, math.inf), "relu6": (0.0, 6.0), "minmax": (-0.5, 0.75)}


def run(k, n, lanes=8, nv=4, clamp=None, threads=1):
    spec = GemvSpec.for_target(k, n, lanes, nv, clamp=clamp, threads=threads)
    assert spec.supported() is None, spec.supported()
    ex = tvm.compile(tvm.IRModule({"k": make_gemv_kernel(spec, "k")}), target=HOST.tvm_target())
    rng = np.random.default_rng(k * 7919 + n)
    x = rng.standard_normal((1, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    want = x.astype(np.float64) @ w + b
    if clamp is not None:
        want = np.clip(want, *clamp)
    y = np.full((1, n), np.nan, np.float32)  # every output must be written
    args = [tvm.runtime.tensor(a) for a in (x, pack_gemv_weights(w, spec.nr), b, y)]
    ex.mod["k"](*args)
    np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-5, atol=1e-4)
    return spec


@pytest.mark.parametrize("n", [1, 3, 7, 8, 15, 16, 31, 32, 33, 40, 63, 64, 65, 100, 1000])
@pytest.mark.parametrize("k", [1, 5, 96])
def test_output_widths(k, n):
    spec = run(k, n)
    assert spec.nr % 8 == 0 and spec.nr <= 32


@pytest.mark.parametrize("lanes,n", [(16, 1000), (16, 1001), (16, 1007), (16, 33), (16, 15), (4, 1000), (4, 10),
                                     (4, 3)])
def test_other_vector_widths(lanes, n):
    run(64, n, lanes=lanes)


@pytest.mark.parametrize("nv", [1, 2, 6])
def test_tile_widths(nv):
    assert run(40, 200, nv=nv).nr == 8 * nv


@pytest.mark.parametrize("epilogue", sorted(CLAMPS))
def test_epilogues(epilogue):
    run(33, 45, clamp=CLAMPS[epilogue])


@pytest.mark.parametrize("n", [64, 100])
def test_threads_split_tiles(n):
    run(50, n, threads=2)


def test_packed_layout_is_one_block_per_tile():
    w = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    p = pack_gemv_weights(w, 4)
    assert p.size == w.size
    np.testing.assert_array_equal(p[:24].reshape(6, 4), w[:, :4])
    np.testing.assert_array_equal(p[24:48].reshape(6, 4), w[:, 4:8])
    np.testing.assert_array_equal(p[48:].reshape(6, 2), w[:, 8:])


def test_tiles_that_are_not_whole_vectors_are_refused():
    assert GemvSpec(8, 100, 20, 16).supported() is not None
    assert GemvSpec.for_target(8, 1000, 16, 4).supported() is None


def test_compile_routes_batch1_dense_layers_to_the_template(tmp_path):
    """Through compile: Gemm (transB, bias) + Relu and a bias-free MatMul run the template, each one call; a
    batch-2 Gemm stays with the matmul schedule; all equal ONNX Runtime."""
    from onnx import helper

    rng = np.random.default_rng(0)
    k, n = 72, 100
    gemm = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["y"])]
    w_nk = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    cases = [
        ("gemm", gemm, 1, {"w": w_nk, "b": b}, ["f32_gemv_32_relu"]),
        ("matmul", [helper.make_node("MatMul", ["x", "w"], ["y"])], 1,
         {"w": np.ascontiguousarray(w_nk.T)}, ["f32_gemv_32_linear"]),
        ("gemm_batch2", gemm, 2, {"w": w_nk, "b": b}, None),
    ]
    for name, nodes, batch, weights, routed in cases:
        path = save_graph(tmp_path / f"{name}.onnx", nodes, {"x": (batch, k)}, {"y": (batch, n)}, weights)
        kinds = compile_checked(path, tol=1e-4)
        if routed:
            assert kinds == routed, kinds
        else:
            assert not any(kind.startswith("f32_gemv") for kind in kinds), kinds
