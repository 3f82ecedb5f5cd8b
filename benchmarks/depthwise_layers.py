"""Benchmark: the depthwise templates (kernels/stride1, kernels/stride2) on MobileNetV1 and V2 layer shapes,
side by side with the window schedule they replaced (kernels/window.py, what the compile spine runs for a
depthwise conv no template takes) and ONNX Runtime's depthwise conv (CPU EP, 1 intra-op thread).

    python -m benchmarks.depthwise_layers [--target x86_64-avx512] [--runs 30]

Each layer computes relu6(depthwise3x3(x) + b) on a 1 x C x H x W input, stride 1 or 2, padding 1. The three
are timed in rotation inside one loop (the machine is shared: ratios of side-by-side samples are what count);
each sample is the mean of enough back-to-back calls to last >= 2 ms. Reported per layer: median per call and
spread (p10..p90), the template's walk, and schedule/template and ORT/template as ratios of medians; sums over
the layers at the end. Every output is checked against ONNX Runtime's first. The schedule runs through a
Relax VM and ORT through ``InferenceSession.run``: their per-call overheads (a few and about ten microseconds)
are in their figures, which matters on the 7x7 and 14x14 layers only.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tvm

from edgesparse.kernels.stride1 import DepthwiseS1Spec, make_depthwise_s1_kernel
from edgesparse.kernels.stride2 import DepthwiseS2Spec, make_depthwise_s2_kernel
from edgesparse.targets import get_target

from .dense_layers import GraphBuilder, build_vm, ort_session
from .spmm_layers import RELU6, measure, stats

# (channels, input side, stride) of the depthwise 3x3 layers of MobileNetV1 1.0/224 and MobileNetV2 1.0/224,
# each shape once
LAYERS = [
    (32, 112, 1), (64, 112, 2), (128, 56, 1), (128, 56, 2), (256, 28, 1), (256, 28, 2), (512, 14, 1),
    (512, 14, 2), (1024, 7, 1),  # MobileNetV1
    (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2), (384, 14, 1), (576, 14, 1),
    (576, 14, 2), (960, 7, 1),  # MobileNetV2 (its 32x112x112 s1 layer is V1's)
]


def template(c, side, stride, target):
    lanes = target.vector_lanes_f32
    if stride == 1:
        spec = DepthwiseS1Spec(c, side, side, 3, 1, lanes, RELU6)
        return spec, make_depthwise_s1_kernel(spec, "k")
    spec = DepthwiseS2Spec(c, side, side, 3, 1, lanes, RELU6)
    return spec, make_depthwise_s2_kernel(spec, "k")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="x86_64-avx512", help="descriptor name (host-runnable targets only)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    desc = get_target(args.target)
    target = tvm.target.Target(dict(desc.tvm))
    print(f"target {desc.name} ({desc.vector_lanes_f32} f32 lanes), 1 thread, median of {args.runs} rotations, ms "
          "[p10..p90]")
    print(f"{'C':>5} {'side':>4} {'s':>2} {'walk':>6} {'template':>24} {'schedule':>24} {'ORT':>24} "
          f"{'sched/t':>7} {'ORT/t':>6}")
    totals = {"t": 0.0, "s": 0.0, "o": 0.0}
    rng = np.random.default_rng(0)
    for c, side, stride in LAYERS:
        g = GraphBuilder([1, c, side, side])
        model = g.model(g.conv("x", c, c, 3, s=stride, groups=c, act="relu6"))
        w = next(np.frombuffer(i.raw_data, np.float32).reshape(c, 1, 3, 3) for i in model.graph.initializer
                 if i.dims == [c, 1, 3, 3])
        b = next(np.frombuffer(i.raw_data, np.float32) for i in model.graph.initializer if list(i.dims) == [c])
        x = rng.standard_normal((1, c, side, side)).astype(np.float32)
        sess = ort_session(model)
        want = sess.run(None, {"x": x})[0]

        spec, func = template(c, side, stride, desc)
        kern = tvm.compile(tvm.IRModule({"k": func}), target=target).mod["k"]
        targs = [tvm.runtime.tensor(a) for a in (x, np.ascontiguousarray(w), np.ascontiguousarray(b),
                                                  np.zeros_like(want))]
        kern(*targs)
        np.testing.assert_allclose(targs[-1].numpy(), want, rtol=1e-4, atol=1e-4)
        vm, _ = build_vm(model, desc)
        xt = tvm.runtime.tensor(x)
        np.testing.assert_allclose(vm["main"](xt).numpy(), want, rtol=1e-4, atol=1e-4)

        times = measure({"t": lambda: kern(*targs), "s": lambda: vm["main"](xt),
                         "o": lambda: sess.run(None, {"x": x})}, args.runs, args.warmup)
        st = {k: stats(v) for k, v in times.items()}
        for k in totals:
            totals[k] += st[k][0]
        fmt = lambda m: f"{m[0]:8.4f} [{m[1]:.4f}..{m[2]:.4f}]"  # noqa: E731
        print(f"{c:>5} {side:>4} {stride:>2} {spec.walk:>6} {fmt(st['t']):>24} {fmt(st['s']):>24} "
              f"{fmt(st['o']):>24} {st['s'][0] / st['t'][0]:>7.2f} {st['o'][0] / st['t'][0]:>6.2f}", flush=True)
    print(f"sum: template {totals['t']:.3f} ms, schedule {totals['s']:.3f} ms ({totals['s'] / totals['t']:.2f}x), "
          f"ONNX Runtime {totals['o']:.3f} ms ({totals['o'] / totals['t']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
