"""The global average pooling template (kernels/global_pool.py) against numpy: planes of one pixel, of whole
vectors, of every remainder piece, at 16, 8 and 4 lanes, threads; and the routing of ``GlobalAveragePool`` /
``ReduceMean`` over H, W to it through compile, against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from edgesparse.kernels.global_pool import GlobalPoolSpec, make_global_pool_kernel
from edgesparse.targets import get_target

from conftest import compile_checked, save_graph

HOST = get_target("x86_64")


def run(c, pixels, lanes=8, threads=1):
    spec = GlobalPoolSpec(c, pixels, lanes, threads)
    ex = tvm.compile(tvm.IRModule({"k": make_global_pool_kernel(spec, "k")}), target=HOST.tvm_target())
    x = np.random.default_rng(c * 1000 + pixels).standard_normal((1, c, pixels)).astype(np.float32)
    y = np.full((1, c, 1, 1), np.nan, np.float32)
    args = [tvm.runtime.tensor(x), tvm.runtime.tensor(y)]
    ex.mod["k"](*args)
    np.testing.assert_allclose(args[1].numpy().ravel(), x[0].astype(np.float64).mean(axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pixels", [1, 2, 3, 7, 8, 15, 16, 17, 31, 49, 64, 196, 3136])
def test_plane_sizes(pixels):
    run(5, pixels)


@pytest.mark.parametrize("lanes,pixels", [(16, 49), (16, 31), (16, 1), (4, 49), (4, 7), (1, 9)])
def test_other_vector_widths(lanes, pixels):
    run(6, pixels, lanes=lanes)


@pytest.mark.parametrize("c", [1, 7, 64])
def test_threads_split_channels(c):
    run(c, 49, threads=2)


def test_compile_routes_spatial_means_to_the_template(tmp_path):
    """GlobalAveragePool and ReduceMean over (2, 3) with keepdims=0 run the template (one call each), a
    ReduceMean over the channels does not; all equal ONNX Runtime."""
    from onnx import helper

    x = {"x": (1, 24, 7, 9)}
    cases = [
        ("gap", [helper.make_node("GlobalAveragePool", ["x"], ["y"])], {"y": (1, 24, 1, 1)}, True),
        ("mean_hw", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], {"y": (1, 24)}, True),
        ("mean_c", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)], {"y": (1, 1, 7, 9)},
         False),
    ]
    for name, nodes, y, routed in cases:
        kinds = compile_checked(save_graph(tmp_path / f"{name}.onnx", nodes, x, y, {}), tol=1e-5)
        if routed:
            assert kinds == [f"f32_global_avgpool63_{HOST.vector_lanes_f32}"], kinds
        else:
            assert not any(k.startswith("f32_global_avgpool") for k in kinds), kinds
