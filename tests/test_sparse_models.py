"""A pruned network end to end on every target: MobileNetV1 at 90% (the zoo's `mobilenet_v1-p90`) compiled
with `--sparse auto`, its 1x1 layers running the sparse kernels, run on the target's device (x86 locally,
arm64 under qemu, wasm32 in Node) and compared with ONNX Runtime on the same pruned model.

Compiled with tuned=False: the descriptor's cost model decides, not a calibration a developer may have cached
(this test is about the shipped defaults and the sparse kernels' results)."""

from __future__ import annotations

import pytest

from conftest import requires_avx512, requires_node, requires_qemu
from edgesparse.compiler import compile as compile_model
from edgesparse.harness.verify import verify
from edgesparse.targets import get_target

MODEL = "mobilenet_v1-p90"
TARGETS = [
    pytest.param("x86_64", id="x86_64-local"),
    pytest.param("x86_64-avx512", id="x86_64-avx512-local", marks=requires_avx512),
    pytest.param("arm64", id="arm64-qemu", marks=requires_qemu),
    pytest.param("wasm32", id="wasm32-node", marks=requires_node),
]


@pytest.mark.parametrize("target", TARGETS)
def test_pruned_mobilenet_runs_sparse_and_matches_onnxruntime(zoo_onnx, tmp_path, target):
    model = zoo_onnx(MODEL)
    res = compile_model(model, target, tmp_path / target, sparse="auto", tuned=False)
    decisions = res.manifest["sparsify"]
    pointwise = [d for d in decisions if d["op"] == "conv2d" and d["shape"][2:] == [1, 1]]
    assert len(pointwise) == 13
    for d in pointwise:
        assert d["sparse"] and abs(d["sparsity"] - 0.9) < 1e-3, d
        assert d["predicted_gain"] > 1 and d["reason"].startswith("sparse: predicted"), d
    (fc,) = [d for d in decisions if d["op"] == "matmul"]  # the classifier, left dense by the pruning
    assert not fc["sparse"] and fc["reason"].startswith("dense: sparsity 0.000")
    spmm = [l for l in res.manifest["layers"] if l["kernel"].startswith("f32_spmm_")]
    assert len(spmm) == 13  # the artifact really calls the sparse kernels
    assert res.manifest["cost_model"]["source"] == "default"
    # descriptors with an L1 budget cut some tiles into input-channel chunks (1024x1024 at 7x7 on x86): the
    # comparison with ORT below then covers chunked kernels inside a model; the others never cut
    chunked = [d["name"] for d in pointwise if d["chunks"] > 1]
    assert bool(chunked) == ("spmm_l1_bytes" in get_target(target).tiles), chunked
    # CHW through the sparse region: the 12 depthwise convs between the first and last sparse call run in the
    # same layout (those a descriptor's rule fuses into their 1x1's kernel are no calls of their own), and no
    # layout conversion is inserted anywhere
    layout = res.manifest["layout"]
    assert layout["activations"] == "NCHW" and layout["conversions"] == []
    region = layout["sparse_region"]
    fused = [l for l in spmm if "dwconv" in l["kernel"]]
    assert region["sparse_calls"] == 13 and region["dense_calls_inside"] == 12 - len(fused), region
    calls = [l["kernel"] for l in res.manifest["layers"]]
    assert calls[region["first_call"]].startswith("f32_spmm_") and calls[region["last_call"]].startswith("f32_spmm_")

    rep = verify(model, res.out_dir)  # the target's default device
    assert rep.ok, [(o.name, o.max_abs_error, o.scale) for o in rep.outputs]
    assert rep.worst <= 1e-4
