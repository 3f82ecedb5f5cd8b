"""`edgesparse tune` as a user meets it: tune a small conv net on this machine, find its layer shapes in the
tune cache, compile with the cached tiles (the manifest says which) and still match ONNX Runtime; an override
changes the generated schedule; an emulated device is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

TARGET = "x86_64"


def edgesparse(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgesparse", *map(str, args)], capture_output=True, text=True,
                          env=env)


def conv_net(path):
    """3x3 conv 3->16 + ReLU, 3x3 max pool stride 1, 1x1 conv 16->24: one layer per tunable rule family that a
    small net has, at 16x16 (depthwise convs with "same" padding run the untunable templates of kernels/stride1
    and kernels/stride2; pooling stays with the window rule)."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [init("w1", 16, 3, 3, 3), init("b1", 16), init("w3", 24, 16, 1, 1), init("b3", 24)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["r2"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def layer_keys(model):
    """{layer key: rule} of the model's tunable kernels, as compile's schedule hook sees them."""
    import tvm

    from edgesparse.compiler import lower_model
    from edgesparse.kernels.schedule import layer_key, schedule_func
    from edgesparse.targets import get_target
    from edgesparse.tune import TUNABLE

    tgt = get_target(TARGET)
    keys = {}
    for func in lower_model(model, tgt).functions.values():
        if isinstance(func, tvm.tirx.PrimFunc):
            rule = schedule_func(func, tgt)[1]
            if rule in TUNABLE:
                keys[layer_key(rule, func)] = rule
    return keys


@pytest.fixture
def tune_env(tmp_path, monkeypatch):
    """A private EDGESPARSE_CACHE for this test (and the CLI it runs)."""
    import os

    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path / "cache"))
    return dict(os.environ)


def test_tune_cache_then_compile_uses_it(tmp_path, tune_env):
    from edgesparse.compiler import compile as compile_model
    from edgesparse.harness.verify import verify
    from edgesparse.tune import cache_path

    model = conv_net(tmp_path / "convnet.onnx")
    proc = edgesparse("tune", model, "--target", TARGET, "--device", "local", "--runs", 15, env=tune_env)
    assert proc.returncode == 0, proc.stderr
    assert "predicted:" in proc.stdout and "default ms" in proc.stdout

    cache = json.loads(cache_path(TARGET).read_text())
    assert cache["target"] == TARGET
    keys = layer_keys(model)
    assert {"conv2d", "window"} <= set(keys.values()), keys
    for key in keys:
        entry = cache["layers"][key]  # every tunable layer shape was measured
        assert entry["default_ms"] > 0 and len(entry["candidates"]) >= 2
        assert entry["best_ms"] <= entry["default_ms"]
        if entry["tiles"]:  # kept only when clearly faster than the default
            assert entry["best_ms"] < 0.97 * entry["default_ms"]

    # What tune kept, compile applies: make every layer take a measured non-default candidate, as a win would.
    for key in keys:
        cache["layers"][key]["tiles"] = cache["layers"][key]["candidates"][1]["tiles"]
    cache_path(TARGET).write_text(json.dumps(cache))
    out = tmp_path / "tuned"
    m = compile_model(model, TARGET, out).manifest
    tuned = {l["kernel"]: l["tiles"] for l in m["layers"] if "tiles" in l}
    assert len(tuned) == len(keys), m["layers"]
    assert verify(model, out).ok

    # --no-tune-cache / tuned=False: the descriptor's defaults, no per-layer tiles.
    proc = edgesparse("compile", model, "--target", TARGET, "-o", tmp_path / "plain", "--no-tune-cache", env=tune_env)
    assert proc.returncode == 0, proc.stderr
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert not any("tiles" in l for l in plain["layers"])


def test_override_changes_the_schedule(tmp_path, tune_env):
    import tvm

    from edgesparse.compiler import lower_model
    from edgesparse.kernels.schedule import layer_key, schedule_func, schedule_module
    from edgesparse.targets import get_target

    tgt = get_target(TARGET)
    mod = lower_model(conv_net(tmp_path / "convnet.onnx"), tgt)
    override = {"conv_mr": 4, "conv_nv": 1, "conv_exact": True}
    keys = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and schedule_func(func, tgt)[1] == "conv2d":
            keys[gv.name_hint] = layer_key("conv2d", func)
    name, key = sorted(keys.items())[0]
    used: dict = {}
    default = schedule_module(mod, tgt)
    tuned = schedule_module(mod, tgt, tiles_for=lambda k: override if k == key else None, tiles_used=used)
    assert used == {name: override}
    assert not tvm_ffi_equal(default[name], tuned[name])
    for other in keys:  # the other kernels keep their default schedule
        if other != name:
            assert tvm_ffi_equal(default[other], tuned[other])


def tvm_ffi_equal(a, b) -> bool:
    import tvm_ffi

    return tvm_ffi.structural_equal(a, b)


@pytest.mark.parametrize("target", ["arm64", TARGET])
def test_tune_refuses_an_emulated_device(tmp_path, tune_env, target):
    model = conv_net(tmp_path / "convnet.onnx")
    proc = edgesparse("tune", model, "--target", target, "--device", "qemu", env=tune_env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "emulated" in lines[0], proc.stderr
    assert not (tmp_path / "cache" / "tune").exists()
