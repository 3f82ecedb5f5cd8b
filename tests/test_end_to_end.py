"""The user's path: compile a model for each target, run it on the target's device, compare with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import requires_node, requires_qemu
from edgesparse.harness.run import random_inputs, run_artifact
from edgesparse.harness.verify import onnxruntime_outputs, verify

TARGETS = [
    pytest.param("x86_64", id="x86_64"),
    pytest.param("arm64", id="arm64", marks=requires_qemu),
    pytest.param("wasm32", id="wasm32", marks=requires_node),
]


@pytest.mark.parametrize("target", TARGETS)
def test_mlp_matches_onnxruntime(compiled, zoo_onnx, target):
    out = compiled("mlp", target)
    rep = verify(zoo_onnx("mlp"), out)
    assert rep.ok, rep.outputs
    assert rep.worst < 1e-5


@pytest.mark.parametrize("model", ["mobilenet_v1", "mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("target", TARGETS)
def test_zoo_model_matches_onnxruntime(compiled, zoo_onnx, model, target):
    """Every zoo CNN on every target: max |error| within 1e-4 of the output's scale."""
    rep = verify(zoo_onnx(model), compiled(model, target))
    assert rep.ok, [(o.name, o.max_abs_error, o.scale) for o in rep.outputs]


def test_manifest_describes_the_artifact(compiled):
    from edgesparse.compiler import load_manifest

    out = compiled("mobilenet_v1", "x86_64")
    m = load_manifest(out)
    assert m["target"] == "x86_64" and m["triple"] == "x86_64-linux-gnu"
    assert m["inputs"] == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert m["outputs"] == [{"name": "output", "shape": [1, 1000], "dtype": "float32"}]
    # 4.23M float32 parameters, BatchNorm folded away: the weight blob holds about 16.9 MB
    assert 16.5e6 < m["weight_bytes"] < 17.5e6
    kinds = [layer["kind"] for layer in m["layers"]]
    # 1 + 13 depthwise + 13 pointwise + the classifier; the first layer and the 4 stride-2 depthwise convs run the stride-2
    # templates (kernels/stride2), the 9 stride-1 depthwise convs the stride-1 one (kernels/stride1)
    assert kinds[0].startswith("f32_conv3x3s2_"), kinds
    assert sum(k.startswith("f32_dwconv3x3s2_") for k in kinds) == 4, kinds
    assert sum(k.startswith("f32_dwconv3x3s1_") for k in kinds) == 9, kinds
    assert sum("conv" in k for k in kinds) == 27, kinds
    assert kinds[-1].startswith("f32_gemv_"), kinds  # the classifier: the fully-connected template (kernels/gemv.py)
    for f in m["files"].values():
        assert (out / f).is_file(), f


def test_different_inputs_give_different_outputs(compiled, zoo_onnx):
    """Guards against a driver that ignores its input (a constant output would still 'verify' per seed)."""
    out = compiled("mobilenet_v1", "x86_64")
    from edgesparse.compiler import load_manifest

    m = load_manifest(out)
    a, b = random_inputs(m, 1), random_inputs(m, 2)
    ya, yb = run_artifact(out, a)[0], run_artifact(out, b)[0]
    ra, rb = (onnxruntime_outputs(zoo_onnx("mobilenet_v1"), m, x)[0] for x in (a, b))
    assert np.abs(ya - yb).max() > 1e-3
    np.testing.assert_allclose(ya, ra, atol=1e-4 * np.abs(ra).max())
    np.testing.assert_allclose(yb, rb, atol=1e-4 * np.abs(rb).max())


def test_torch_module_compiles_through_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    import edgesparse

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()
    x = torch.randn(1, 3, 16, 16)
    res = edgesparse.compile(model, target="x86_64", example_inputs=(x,), out_dir=tmp_path / "m")
    y = edgesparse.run_artifact(res.out_dir, [x.numpy()])[0]
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", [pytest.param("x86_64"), pytest.param("arm64", marks=requires_qemu)])
def test_threaded_build_matches_onnxruntime(zoo_onnx, tmp_path, target):
    """Parallel kernels through the runtime's thread pool, with per-thread kernel scratch, give the same output."""
    from edgesparse.compiler import compile as compile_model

    out = compile_model(zoo_onnx("mobilenet_v2"), target, tmp_path / "mbv2", threads=2).out_dir
    for threads in (1, 2):
        rep = verify(zoo_onnx("mobilenet_v2"), out, threads=threads)
        assert rep.ok, (threads, rep.outputs)
