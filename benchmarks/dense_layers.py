"""Dense kernels against ONNX Runtime, layer by layer and whole models (issue 5).

    python benchmarks/dense_layers.py                 # per-layer table + whole models, x86_64 (AVX2+FMA)
    python benchmarks/dense_layers.py --only models   # whole models only
    python benchmarks/dense_layers.py --avx512-host   # x86_64 and x86_64-avx512 (this host has AVX-512)

Each layer (Conv/depthwise/Gemm with random weights at MobileNetV1/V2 and ResNet-18 shapes, bias and
activation fused as after BatchNorm folding) is built as a one-node ONNX model, lowered through the compile
spine's pass list with `schedule_module` as the hook, built with `tvm.compile` for the target and timed in the
Relax VM; ONNX Runtime (CPU EP, 1 intra-op thread, all graph optimisations) runs the same model in the same
process, alternating run by run. Printed: median ms of >= 30 runs after warm-up, the spread ((p90-p10)/2 in %
of the median), the ratio of the medians TVM/ORT (< 1 means faster than ORT) and, under "pairs", the median of
the per-run ratios (more robust on a shared, noisy host: a slow phase hits both runs of a pair).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT


# ---------------------------------------------------------------- ONNX builders


class GraphBuilder:
    """Tiny ONNX graph builder: NCHW float32, random He-scaled weights, BatchNorm already folded into bias."""

    def __init__(self, in_shape, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.in_shape = list(in_shape)
        self.count = 0

    def _name(self, base):
        self.count += 1
        return f"{base}{self.count}"

    def const(self, arr, base="w"):
        n = self._name(base)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
        return n

    def conv(self, x, cin, cout, k, s=1, groups=1, act="relu"):
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))
        b = self.rng.standard_normal(cout) * 0.1
        y = self._name("conv")
        self.nodes.append(helper.make_node("Conv", [x, self.const(w), self.const(b, "b")], [y],
                                           kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=groups))
        return self.act(y, act)

    def act(self, x, act):
        if act is None:
            return x
        y = self._name(act)
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [x], [y]))
        elif act == "relu6":
            lo, hi = self.const(np.array(0.0), "lo"), self.const(np.array(6.0), "hi")
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        elif act == "hardswish":
            self.nodes.append(helper.make_node("HardSwish", [x], [y]))
        else:
            raise ValueError(act)
        return y

    def add(self, a, b, act=None):
        y = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return self.act(y, act)

    def maxpool(self, x, k=3, s=2):
        y = self._name("pool")
        self.nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4))
        return y

    def gap_fc(self, x, cin, n_out):
        g, f, y = self._name("gap"), self._name("flat"), self._name("fc")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [g]))
        self.nodes.append(helper.make_node("Flatten", [g], [f]))
        w = self.rng.standard_normal((n_out, cin)) / np.sqrt(cin)
        self.nodes.append(helper.make_node("Gemm", [f, self.const(w), self.const(self.rng.standard_normal(n_out) * 0.1, "b")], [y], transB=1))
        return y

    def model(self, out):
        self.nodes.append(helper.make_node("Identity", [out], ["y"]))
        g = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", F32, self.in_shape)],
                              [helper.make_tensor_value_info("y", F32, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        return m


def conv_layer(cin, cout, hw, k, s=1, groups=1, act="relu"):
    b = GraphBuilder([1, cin, hw, hw])
    return b.model(b.conv("x", cin, cout, k, s, groups, act))


def gemm_layer(cin, n_out):
    b = GraphBuilder([1, cin, 7, 7])
    return b.model(b.gap_fc("x", cin, n_out))


def mobilenet_v1():
    b = GraphBuilder([1, 3, 224, 224])
    x = b.conv("x", 3, 32, 3, 2)
    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
          [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    for cin, cout, s in cfg:
        x = b.conv(x, cin, cin, 3, s, groups=cin)
        x = b.conv(x, cin, cout, 1)
    return b.model(b.gap_fc(x, 1024, 1000))


def mobilenet_v2():
    b = GraphBuilder([1, 3, 224, 224])
    x = b.conv("x", 3, 32, 3, 2, act="relu6")
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            y = b.conv(x, cin, hid, 1, act="relu6") if t != 1 else x
            y = b.conv(y, hid, hid, 3, stride, groups=hid, act="relu6")
            y = b.conv(y, hid, c, 1, act=None)
            x = b.add(x, y) if stride == 1 and cin == c else y
            cin = c
    x = b.conv(x, 320, 1280, 1, act="relu6")
    return b.model(b.gap_fc(x, 1280, 1000))


def resnet18():
    b = GraphBuilder([1, 3, 224, 224])
    x = b.maxpool(b.conv("x", 3, 64, 7, 2))
    cin = 64
    for c, s in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            stride = s if i == 0 else 1
            y = b.conv(x, cin, c, 3, stride)
            y = b.conv(y, c, c, 3, 1, act=None)
            sc = b.conv(x, cin, c, 1, stride, act=None) if stride != 1 or cin != c else x
            x = b.add(y, sc, act="relu")
            cin = c
    return b.model(b.gap_fc(x, 512, 1000))


# (name, builder) at MobileNetV1/V2 and ResNet-18 shapes
LAYERS = [
    ("v1 conv3x3 s2 3->32 @224", lambda: conv_layer(3, 32, 224, 3, 2)),
    ("v1 dw3x3 s1 32 @112", lambda: conv_layer(32, 32, 112, 3, 1, 32)),
    ("v1 pw 32->64 @112", lambda: conv_layer(32, 64, 112, 1)),
    ("v1 dw3x3 s2 64 @112", lambda: conv_layer(64, 64, 112, 3, 2, 64)),
    ("v1 pw 64->128 @56", lambda: conv_layer(64, 128, 56, 1)),
    ("v1 pw 128->128 @56", lambda: conv_layer(128, 128, 56, 1)),
    ("v1 pw 256->256 @28", lambda: conv_layer(256, 256, 28, 1)),
    ("v1 dw3x3 s1 512 @14", lambda: conv_layer(512, 512, 14, 3, 1, 512)),
    ("v1 pw 512->512 @14", lambda: conv_layer(512, 512, 14, 1)),
    ("v1 pw 1024->1024 @7", lambda: conv_layer(1024, 1024, 7, 1)),
    ("v1 fc 1024->1000", lambda: gemm_layer(1024, 1000)),
    ("v2 pw 24->144 @56", lambda: conv_layer(24, 144, 56, 1, act="relu6")),
    ("v2 pw 144->24 @56", lambda: conv_layer(144, 24, 56, 1, act=None)),
    ("v2 dw3x3 s2 144 @56", lambda: conv_layer(144, 144, 56, 3, 2, 144, act="relu6")),
    ("v2 pw 960->160 @7", lambda: conv_layer(960, 160, 7, 1, act=None)),
    ("r18 conv7x7 s2 3->64 @224", lambda: conv_layer(3, 64, 224, 7, 2)),
    ("r18 conv3x3 64->64 @56", lambda: conv_layer(64, 64, 56, 3)),
    ("r18 conv3x3 s2 64->128 @56", lambda: conv_layer(64, 128, 56, 3, 2)),
    ("r18 conv3x3 256->256 @14", lambda: conv_layer(256, 256, 14, 3)),
    ("r18 conv3x3 512->512 @7", lambda: conv_layer(512, 512, 7, 3)),
    ("r18 pw s2 256->512 @14", lambda: conv_layer(256, 512, 14, 1, 2, act=None)),
]

MODELS = [("MobileNetV1", mobilenet_v1), ("MobileNetV2", mobilenet_v2), ("ResNet-18", resnet18)]


# ---------------------------------------------------------------- pipeline


def lower(model, target, hook=None):
    """The compile spine's lowering (issue 5 brief), with the kernel hook between FuseTIR/DCE and memory planning."""
    import tvm
    import tvm.relax.frontend.onnx  # noqa: F401
    from tvm import relax

    mod = relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)
    with target.tvm_target():
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = tvm.ir.transform.Sequential([
            relax.transform.FoldConstant(), relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ])(mod)
        if hook is not None:
            mod = hook(mod, target)
        mod = relax.transform.CallTIRRewrite()(mod)
        mod = relax.transform.StaticPlanBlockMemory()(mod)
    return mod


def build_vm(model, target, schedule=True, threads=1, report=None):
    import tvm
    from tvm import relax

    from edgesparse.kernels.schedule import schedule_module

    hook = (lambda m, t: schedule_module(m, t, threads=threads, report=report)) if schedule else None
    t0 = time.perf_counter()
    mod = lower(model, target, hook)
    ex = tvm.compile(mod, target=target.tvm_target())
    compile_s = time.perf_counter() - t0
    return relax.VirtualMachine(ex, tvm.cpu()), compile_s


def ort_session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def input_of(model):
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(1).standard_normal(dims).astype(np.float32)


def time_pair(model, target, runs=30, warmup=5):
    """Interleaved timing of ORT and the TVM build of one model: (ort_ms list, tvm_ms list, max abs err, compile s, report)."""
    import tvm

    x = input_of(model)
    sess = ort_session(model)
    report = {}
    vm, compile_s = build_vm(model, target, report=report)
    xt = tvm.runtime.tensor(x)
    f = vm["main"]
    y_ort = sess.run(None, {"x": x})[0]
    y_tvm = f(xt).numpy()
    err = float(np.abs(y_ort - y_tvm).max() / max(1e-6, float(np.abs(y_ort).max())))
    for _ in range(warmup):
        sess.run(None, {"x": x})
        f(xt)
    t_ort, t_tvm = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        t1 = time.perf_counter()
        f(xt)
        t2 = time.perf_counter()
        t_ort.append((t1 - t0) * 1e3)
        t_tvm.append((t2 - t1) * 1e3)
    return t_ort, t_tvm, err, compile_s, report


def ratio_of_pairs(t_ort, t_tvm):
    """Median of per-run TVM/ORT ratios: runs are interleaved, so a slow phase of the shared host hits both."""
    return float(np.median(np.asarray(t_tvm) / np.asarray(t_ort)))


def fmt(ts):
    med = float(np.median(ts))
    lo, hi = np.percentile(ts, [10, 90])
    return med, f"{med:8.3f} (±{100 * (hi - lo) / 2 / med:3.0f}%)"


def run(rows, target, runs, title):
    print(f"\n{title}  target={target.name} ({target.vector_bits}-bit vectors), ORT 1 thread, median of {runs}, spread = (p90-p10)/2")
    print(f"{'layer':32s} {'ORT ms':>16s} {'TVM ms':>16s} {'TVM/ORT':>8s} {'pairs':>6s} {'rel.err':>8s} {'compile s':>9s}  rules")
    out = []
    for name, build in rows:
        model = build()
        t_ort, t_tvm, err, cs, rep = time_pair(model, target, runs)
        mo, so = fmt(t_ort)
        mt, st = fmt(t_tvm)
        rules = ",".join(sorted({r or "-" for r in rep.values()}))
        rp = ratio_of_pairs(t_ort, t_tvm)
        print(f"{name:32s} {so:>16s} {st:>16s} {mt / mo:8.2f} {rp:6.2f} {err:8.1e} {cs:9.1f}  {rules}")
        sys.stdout.flush()
        out.append((name, mo, mt, rp, cs))
    return out


def main(argv=None):
    from edgesparse.targets import get_target

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", choices=["layers", "models"], default=None)
    ap.add_argument("--target", action="append", default=None,
                    help="target descriptor(s) runnable on this host (default x86_64; e.g. also x86_64-avx512)")
    ap.add_argument("--avx512-host", action="store_true", help="shorthand for --target x86_64 --target x86_64-avx512")
    args = ap.parse_args(argv)
    names = args.target or ["x86_64"]
    if args.avx512_host:
        names = ["x86_64", "x86_64-avx512"]
    targets = [get_target(n) for n in names]
    for t in targets:
        if args.only != "models":
            run(LAYERS, t, args.runs, "Layers")
        if args.only != "layers":
            run(MODELS, t, args.runs, "Whole models")


if __name__ == "__main__":
    main()
