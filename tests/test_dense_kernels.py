"""Dense schedule rules (kernels/schedule.py): every rule, over edge shapes, against ONNX Runtime.

Each case is a one-layer ONNX model lowered through the compile spine's pass list with `schedule_module` as
the hook, built for the host with the x86_64 descriptor and run in the Relax VM. A case states which rule
must have scheduled its main kernel: a rule that silently declined would leave a correct but unscheduled
kernel, and the test would still pass on numbers alone. The arm64 check compiles a convolution for the
arm64 descriptor and looks for NEON FMAs in the object.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dense_layers as D  # noqa: E402

from conftest import requires_avx512  # noqa: E402
from edgesparse.targets import get_target  # noqa: E402


def run_case(model, target_name="x86_64"):
    """(max relative error vs ORT, {kernel: rule})."""
    import tvm

    target = get_target(target_name)
    report: dict = {}
    vm, _ = D.build_vm(model, target, report=report)
    x = D.input_of(model)
    y_tvm = vm["main"](tvm.runtime.tensor(x)).numpy()
    y_ort = D.ort_session(model).run(None, {"x": x})[0]
    assert y_tvm.shape == y_ort.shape
    scale = max(1.0, float(np.abs(y_ort).max()))
    return float(np.abs(y_tvm - y_ort).max()) / scale, report


def assert_rule(report, rule, count=1):
    got = [r for r in report.values() if r == rule]
    assert len(got) >= count, f"rule {rule} did not apply: {report}"


# (cin, cout, hw, k, stride, act): odd sizes, tile remainders, one channel, stride 2 with odd input, 5x5, 7x7
CONV_CASES = [
    (3, 32, 17, 3, 2, "relu"),  # 3-channel first layer, odd input, stride 2
    (1, 8, 9, 3, 1, "relu"),  # one input channel
    (5, 7, 11, 1, 1, None),  # pointwise, odd channels, 121 pixels: padded tail tile
    (16, 24, 8, 1, 1, "relu6"),  # pointwise, whole tiles (direct path)
    (16, 16, 9, 1, 2, None),  # pointwise stride 2 (ResNet downsample), odd input
    (8, 12, 10, 3, 2, "relu"),
    (4, 6, 13, 5, 1, "hardswish"),
    (3, 16, 23, 7, 2, "relu"),  # ResNet stem shape class
    (24, 1, 7, 3, 1, None),  # one output channel
]


@pytest.mark.parametrize("cin,cout,hw,k,s,act", CONV_CASES)
def test_conv2d_rule(cin, cout, hw, k, s, act):
    err, report = run_case(D.conv_layer(cin, cout, hw, k, s, 1, act))
    assert err < 1e-5
    assert_rule(report, "conv2d")


# (channels, hw, k, stride)
DW_CASES = [(1, 9, 3, 1), (8, 15, 3, 2), (6, 13, 5, 2), (16, 14, 3, 1), (4, 7, 5, 1), (32, 16, 3, 2), (3, 8, 3, 1)]


@pytest.mark.parametrize("c,hw,k,s", DW_CASES)
def test_depthwise_rule(c, hw, k, s):
    err, report = run_case(D.conv_layer(c, c, hw, k, s, c, "relu6"))
    assert err < 1e-5
    # with one channel a depthwise convolution is an ordinary one, and the conv2d rule (tried first) takes it
    assert_rule(report, "window" if c > 1 else "conv2d")


@pytest.mark.parametrize("c,hw", [(3, 9), (8, 16), (5, 15)])
def test_maxpool_rule(c, hw):
    b = D.GraphBuilder([1, c, hw, hw])
    err, report = run_case(b.model(b.act(b.maxpool("x"), "relu")))
    assert err < 1e-6
    assert_rule(report, "window")


@pytest.mark.parametrize("cin,n_out", [(64, 10), (1024, 1000), (24, 7), (16, 32)])
def test_matmul_and_global_pool_rules(cin, n_out):
    err, report = run_case(D.gemm_layer(cin, n_out))
    assert err < 1e-5
    assert_rule(report, "matmul")
    assert_rule(report, "window")  # the global average pool


def test_residual_epilogue_and_elementwise():
    """conv + bias + residual add + HardSwish fuse into one kernel; the epilogue is inlined, not matched by name."""
    b = D.GraphBuilder([1, 16, 12, 12])
    y = b.conv("x", 16, 16, 3, 1, act=None)
    y = b.add(y, "x", act="hardswish")
    err, report = run_case(b.model(y))
    assert err < 1e-5
    assert_rule(report, "conv2d")


def test_elementwise_rule():
    b = D.GraphBuilder([1, 8, 6, 6])
    c = b.const(np.ones((1, 8, 6, 6)) * 0.5, "c")
    y = b.add("x", c, act="hardswish")
    err, report = run_case(b.model(y))
    assert err < 1e-6
    assert_rule(report, "elementwise")


@pytest.mark.parametrize("model,convs,windows", [("mobilenet_v1", 9, 9), ("mobilenet_v2", 20, 10), ("resnet18", 8, 1)])
def test_zoo_shapes_all_scheduled(model, convs, windows):
    """Every kernel of the benchmark models gets a rule (nothing silently left unscheduled)."""
    from edgesparse.kernels.schedule import schedule_module

    report: dict = {}
    D.lower(getattr(D, model)(), get_target("x86_64"), lambda m, t: schedule_module(m, t, report=report))
    unscheduled = [k for k, r in report.items() if r is None]
    assert not unscheduled, unscheduled
    assert sum(r == "conv2d" for r in report.values()) >= convs
    assert sum(r == "window" for r in report.values()) >= windows
    assert "matmul" in report.values()


def test_rules_decline_what_they_do_not_fit():
    """A grouped (non-depthwise) convolution is declined by every rule and left as legalized: still correct."""
    b = D.GraphBuilder([1, 8, 10, 10])
    model = b.model(b.conv("x", 8, 8, 3, 1, groups=2))
    err, report = run_case(model)
    assert err < 1e-5
    assert list(report.values()) == [None]


def _objdump():
    return shutil.which("llvm-objdump-14") or shutil.which("llvm-objdump")


@pytest.mark.skipif(_objdump() is None, reason="llvm-objdump-14 not installed")
@pytest.mark.parametrize("layer", [(64, 64, 14, 1, 1, 1), (32, 32, 28, 3, 1, 32)], ids=["pointwise", "depthwise"])
def test_arm64_kernels_use_neon_fma(tmp_path, layer):
    import tvm

    from edgesparse.kernels.schedule import schedule_module

    target = get_target("arm64")
    report: dict = {}
    mod = D.lower(D.conv_layer(*layer), target, lambda m, t: schedule_module(m, t, report=report))
    assert set(report.values()) & {"conv2d", "window"}
    funcs = {gv: f.with_attr("global_symbol", gv.name_hint) for gv, f in mod.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc)}
    obj = tmp_path / "k.o"
    tvm.compile(tvm.IRModule(funcs), target=target.tvm_target()).mod.write_to_file(str(obj))
    asm = subprocess.run([_objdump(), "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    fmla = re.findall(r"\bfmla\s+v\d+\.4s", asm)
    assert len(fmla) >= 8, "no NEON fmla v.4s in the arm64 kernel"


def test_wasm32_kernels_use_simd128():
    import tvm

    from edgesparse.kernels.schedule import schedule_module

    target = get_target("wasm32")
    report: dict = {}
    mod = D.lower(D.conv_layer(16, 16, 8, 1), target, lambda m, t: schedule_module(m, t, report=report))
    assert "conv2d" in report.values()
    funcs = {gv: f.with_attr("global_symbol", gv.name_hint) for gv, f in mod.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc)}
    lib = tvm.compile(tvm.IRModule(funcs), target=target.tvm_target())
    ll = lib.mod.inspect_source("ll")
    assert "<4 x float>" in ll and "fmul" in ll


@pytest.mark.parametrize("layer", [(16, 24, 14, 1, 1, 1), (8, 8, 15, 3, 2, 8), (3, 16, 17, 3, 2, 1)])
def test_threads_parameter_parallel_outer_loop(layer):
    """threads=2 puts a parallel loop on the outer tile axis; results are unchanged."""
    import tvm
    from tvm import relax

    from edgesparse.kernels.schedule import schedule_module

    model = D.conv_layer(*layer)
    target = get_target("x86_64")
    report: dict = {}
    mod = D.lower(model, target, lambda m, t: schedule_module(m, t, threads=2, report=report))
    assert set(report.values()) & {"conv2d", "window"}
    assert "T.parallel" in "".join(f.script() for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    vm = relax.VirtualMachine(tvm.compile(mod, target=target.tvm_target()), tvm.cpu())
    x = D.input_of(model)
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    y_ort = D.ort_session(model).run(None, {"x": x})[0]
    assert np.abs(y - y_ort).max() < 1e-4


@requires_avx512
@pytest.mark.parametrize("layer,rule", [((24, 40, 14, 1, 1, 1), "conv2d"), ((16, 32, 15, 3, 2, 1), "conv2d"),
                                        ((32, 32, 28, 3, 2, 32), "window"), ((1024, 1000), "matmul")])
def test_avx512_descriptor(layer, rule):
    """The same rules on the 512-bit descriptor: 16 lanes, other tiles, same results."""
    model = D.gemm_layer(*layer) if rule == "matmul" else D.conv_layer(*layer)
    err, report = run_case(model, "x86_64-avx512")
    assert err < 1e-5
    assert_rule(report, rule)
