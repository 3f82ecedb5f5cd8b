"""Convolutions the TIR templates cover -> calls of them: depthwise k x k stride 1 (kernels/stride1), depthwise
k x k stride 2 and k x k stride 2 over at most 4 input channels, a network's first layer (kernels/stride2).

Matched: ``R.nn.conv2d`` with a constant float32 weight, stride 1 or 2, padding k // 2 on every side, dilation 1,
NCHW/OIHW, a static ``[1, C, H, W]`` input the template supports, and either ``groups == C`` with a
``[C, 1, k, k]`` weight (depthwise, stride 1 or 2; at stride 2 with output rows at least half a vector wide,
below which the window schedule is as fast) or, at stride 2, ``groups == 1`` with a ``[Cout, Cin <= 4, k, k]``
weight; then, each only when the previous value has no other use, an ``R.add`` of a constant per-channel bias and
any chain of clamps (ReLU, ReLU6, Clip), folded into the call as sparsify folds them (passes/epilogue.py).
Anything else stays ``conv2d`` for the schedules (kernels/window.py, kernels/conv2d.py).

Why: TVM vectorises a stride-2 tap into per-lane loads; the stride-2 templates de-interleave input rows with
vector shuffles instead (kernels/stride2/rows.py). Measured on the x86 host (AVX-512): MobileNetV1's 64-channel
112x112 depthwise layer 0.155 -> 0.101 ms, its 3->32 first layer ~0.17 -> 0.104 ms (ONNX Runtime 0.126 and
0.130 ms). At stride 1 the schedule sums each output's taps in one serial chain and re-reads the weights from
memory; the template walks input rows into row accumulators (kernels/stride1/depthwise.py): 1.3-1.5x on
MobileNet's 112/56/28-wide layers, 2.2x on its 7x7 ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgesparse.kernels.stride1 import DepthwiseS1Spec, make_depthwise_s1_kernel
from edgesparse.kernels.stride2 import ConvS2Spec, DepthwiseS2Spec, make_conv_s2_kernel, make_depthwise_s2_kernel

from .epilogue import Uses, const_array, follow_epilogue, op_name, static_shape


MAKERS = {DepthwiseS1Spec: make_depthwise_s1_kernel, DepthwiseS2Spec: make_depthwise_s2_kernel,
          ConvS2Spec: make_conv_s2_kernel}


def _spec_of(value, target, threads) -> DepthwiseS1Spec | DepthwiseS2Spec | ConvS2Spec | None:
    if op_name(value) != "relax.nn.conv2d":
        return None
    a = value.attrs
    x_shape, w = static_shape(value.args[0]), const_array(value.args[1])
    if x_shape is None or len(x_shape) != 4 or x_shape[0] != 1 or w is None or w.dtype != np.float32:
        return None
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        return None
    strides = [int(s) for s in a.strides]
    if strides not in ([1, 1], [2, 2]) or any(int(d) != 1 for d in a.dilation):
        return None
    pads = {int(p) for p in a.padding}
    if len(pads) != 1 or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
        return None
    if str(a.out_layout) != "NCHW" or str(a.out_dtype or "float32") not in ("float32", ""):
        return None
    c, k, pad = x_shape[1], int(w.shape[2]), pads.pop()
    lanes = target.vector_lanes_f32
    if strides == [1, 1]:
        if int(a.groups) != c or w.shape[:2] != (c, 1):
            return None
        spec = DepthwiseS1Spec(c, x_shape[2], x_shape[3], k, pad, lanes, threads=threads)
    elif int(a.groups) == c and w.shape[:2] == (c, 1):
        spec = DepthwiseS2Spec(c, x_shape[2], x_shape[3], k, pad, lanes, threads=threads)
        if spec.out_width < lanes // 2:
            # outputs under half a vector wide: the window schedule is as fast or faster (14 -> 7 on AVX-512:
            # 0.0169 vs 0.0194 ms; on AVX2, 7 >= 4, par; benchmarks/depthwise_layers.py)
            return None
    elif int(a.groups) == 1 and w.shape[1] == c:
        spec = ConvS2Spec(c, int(w.shape[0]), x_shape[2], x_shape[3], k, pad, lanes,
                          int(target.tiles.get("conv_acc_regs", 12)), threads=threads)
    else:
        return None
    return spec if spec.supported() is None else None


def _out_channels(spec) -> int:
    return spec.cout if isinstance(spec, ConvS2Spec) else spec.channels


@mutator
class _ConvTemplateMutator(PyExprMutator):
    def __init__(self, mod, target, threads):
        super().__init__(mod)
        self.mod_ = mod
        self.target, self.threads = target, threads
        self.ends: dict = {}  # last var of a matched chain -> (conv binding, spec, bias, clamp)
        self.dropped: set = set()
        self.rewritten = 0

    def plan(self, func):
        uses = Uses(func)
        for b in uses.bindings:
            spec = _spec_of(b.value, self.target, self.threads)
            if spec is None:
                continue
            ep = follow_epilogue(b.var, uses, _out_channels(spec), "conv2d")
            self.ends[ep.end] = (b, dataclasses.replace(spec, clamp=ep.clamp), ep.bias)
            self.dropped.update(ep.inner)

    def rewrite(self):
        for gv, func in self.mod_.functions_items():
            if not isinstance(func, relax.Function):
                continue
            self.ends, self.dropped = {}, set()
            self.plan(func)
            if self.ends:
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.finalize()

    def visit_var_binding_(self, binding):
        if binding.var in self.dropped:
            return  # folded into the kernel call that replaces the chain's last binding
        match = self.ends.get(binding.var)
        if match is None:
            return super().visit_var_binding_(binding)
        conv, spec, bias = match
        w = const_array(conv.value.args[1])
        cout = _out_channels(spec)
        bias = np.zeros(cout, np.float32) if bias is None else bias.astype(np.float32)
        make = MAKERS[type(spec)]
        # "<variant>__<n>": a unique symbol whose kind (manifest, profile) is the part before "__"
        gvar = self.builder_.add_func(make(spec).without_attr("global_symbol"), f"{spec.variant}__{self.rewritten}")
        out_shape = [1, cout, spec.out_height, spec.out_width]
        call = relax.call_tir(
            gvar,
            relax.Tuple([self.visit_expr(conv.value.args[0]), relax.const(w), relax.const(bias)]),
            out_ty=relax.TensorType(out_shape, "float32"),
        )
        self.rewritten += 1
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(call)))


def conv_templates(mod: tvm.IRModule, target, *, threads: int = 1) -> tvm.IRModule:
    """Rewrite the convolutions the templates cover in every Relax function of ``mod`` (module doc)."""
    return _ConvTemplateMutator(mod, target, threads).rewrite()
