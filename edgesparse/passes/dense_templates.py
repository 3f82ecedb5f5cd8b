"""Dense layers the TIR templates cover -> calls of them: depthwise k x k stride 1 (kernels/stride1), depthwise
k x k stride 2 and k x k stride 2 over at most 4 input channels, a network's first layer (kernels/stride2),
batch-1 fully-connected layers over packed weights (kernels/gemv.py) and global average pooling
(kernels/global_pool.py).

Matched: ``R.nn.conv2d`` with a constant float32 weight, stride 1 or 2, padding k // 2 on every side, dilation 1,
NCHW/OIHW, a static ``[1, C, H, W]`` input the template supports, and either ``groups == C`` with a
``[C, 1, k, k]`` weight (depthwise, stride 1 or 2; at stride 2 with output rows at least half a vector wide,
below which the window schedule is as fast) or, at stride 2, ``groups == 1`` with a ``[Cout, Cin <= 4, k, k]``
weight; ``R.matmul`` of a static ``[1, K]`` input by a constant float32 ``[K, N]`` weight (what sparsify left
dense); ``R.mean`` over the two spatial axes of a static ``[1, C, H, W]`` input. Then, for the convolutions
and fully-connected layers, each only when the previous value has no other use, an ``R.add`` of a constant
per-channel bias and any chain of clamps (ReLU, ReLU6, Clip), folded into the call as sparsify folds them
(passes/epilogue.py).
Anything else stays for the schedules (kernels/window.py, kernels/conv2d.py, kernels/matmul.py).

Why: TVM vectorises a stride-2 tap into per-lane loads; the stride-2 templates de-interleave input rows with
vector shuffles instead (kernels/stride2/rows.py). Measured on the x86 host (AVX-512): MobileNetV1's 64-channel
112x112 depthwise layer 0.155 -> 0.101 ms, its 3->32 first layer ~0.17 -> 0.104 ms (ONNX Runtime 0.126 and
0.130 ms). At stride 1 the schedule sums each output's taps in one serial chain and re-reads the weights from
memory; the template walks input rows into row accumulators (kernels/stride1/depthwise.py): 1.3-1.5x on
MobileNet's 112/56/28-wide layers, 2.2x on its 7x7 ones. A fully-connected layer streams its weights once;
packed per output tile they are one forward stream instead of K short ones (kernels/gemv.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from edgesparse.kernels.gemv import GemvSpec, make_gemv_kernel, pack_gemv_weights
from edgesparse.kernels.global_pool import GlobalPoolSpec, make_global_pool_kernel
from edgesparse.kernels.stride1 import DepthwiseS1Spec, make_depthwise_s1_kernel
from edgesparse.kernels.stride2 import ConvS2Spec, DepthwiseS2Spec, make_conv_s2_kernel, make_depthwise_s2_kernel

from .epilogue import Epilogue, Uses, const_array, dtype_of, follow_epilogue, op_name, static_shape
from .kernel_calls import ChainRewriter



def conv_spec(value, target, threads) -> DepthwiseS1Spec | DepthwiseS2Spec | ConvS2Spec | None:
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
    split = int(target.tiles.get("deinterleave_lanes", 0))  # the stride-2 templates' row de-interleave
    if strides == [1, 1]:
        if int(a.groups) != c or w.shape[:2] != (c, 1):
            return None
        spec = DepthwiseS1Spec(c, x_shape[2], x_shape[3], k, pad, lanes, threads=threads)
    elif int(a.groups) == c and w.shape[:2] == (c, 1):
        spec = DepthwiseS2Spec(c, x_shape[2], x_shape[3], k, pad, lanes, threads=threads, deinterleave_lanes=split)
        if spec.out_width < lanes // 2:
            # outputs under half a vector wide: the window schedule is as fast or faster (14 -> 7 on AVX-512:
            # 0.0169 vs 0.0194 ms; on AVX2, 7 >= 4, par; benchmarks/depthwise_layers.py)
            return None
    elif int(a.groups) == 1 and w.shape[1] == c:
        spec = ConvS2Spec(c, int(w.shape[0]), x_shape[2], x_shape[3], k, pad, lanes,
                          int(target.tiles.get("conv_acc_regs", 12)), threads=threads, deinterleave_lanes=split)
    else:
        return None
    return spec if spec.supported() is None else None


def _gemv_spec(value, target, threads) -> GemvSpec | None:
    x_shape, w = static_shape(value.args[0]), const_array(value.args[1])
    if x_shape is None or w is None or w.dtype != np.float32 or w.ndim != 2 or dtype_of(value.args[0]) != "float32":
        return None
    if len(x_shape) != 2 or x_shape != (1, w.shape[0]):
        return None
    spec = GemvSpec.for_target(int(w.shape[0]), int(w.shape[1]), target.vector_lanes_f32,
                               int(target.tiles.get("matmul_nv", 4)), threads=threads)
    return spec if spec.supported() is None else None


def _pool_spec(value, target, threads) -> GlobalPoolSpec | None:
    x_shape = static_shape(value.args[0])
    if x_shape is None or len(x_shape) != 4 or x_shape[0] != 1 or dtype_of(value.args[0]) != "float32":
        return None
    if value.attrs.axis is None or sorted(int(a) % 4 for a in value.attrs.axis) != [2, 3]:
        return None
    return GlobalPoolSpec(x_shape[1], x_shape[2] * x_shape[3], target.vector_lanes_f32, threads, in_shape=x_shape)


SPEC_OF = {"relax.nn.conv2d": conv_spec, "relax.matmul": _gemv_spec, "relax.mean": _pool_spec}


@dataclasses.dataclass(frozen=True)
class Template:
    """What the pass needs of one template kind, keyed by its spec type in ``TEMPLATES``."""

    make: Callable  # spec -> PrimFunc
    epilogue: str | None  # the layer kind whose bias and clamps passes/epilogue.py folds in; None: nothing folded
    out_channels: Callable[[object], int]
    weight: Callable = lambda spec, w: w  # the weight constant as the template reads it
    takes_out_shape: bool = False  # the spec carries the call's output shape (a reshape after it folds in)


TEMPLATES = {
    DepthwiseS1Spec: Template(make_depthwise_s1_kernel, "conv2d", lambda s: s.channels),
    DepthwiseS2Spec: Template(make_depthwise_s2_kernel, "conv2d", lambda s: s.channels),
    ConvS2Spec: Template(make_conv_s2_kernel, "conv2d", lambda s: s.cout),
    # packed per output tile: one forward stream instead of K short ones
    GemvSpec: Template(make_gemv_kernel, "matmul", lambda s: s.n, weight=lambda s, w: pack_gemv_weights(w, s.nr),
                       takes_out_shape=True),
    GlobalPoolSpec: Template(make_global_pool_kernel, None, lambda s: s.channels, takes_out_shape=True),
}


@mutator
class _DenseTemplateRewriter(ChainRewriter):
    def __init__(self, mod, target, threads):
        super().__init__(mod)
        self.target, self.threads = target, threads

    def matches(self, gv, func):
        uses = Uses(func)
        found = []
        for b in uses.bindings:
            spec_of = SPEC_OF.get(op_name(b.value))
            spec = spec_of(b.value, self.target, self.threads) if spec_of else None
            if spec is None:
                continue
            tpl = TEMPLATES[type(spec)]
            ep = follow_epilogue(b.var, uses, tpl.out_channels(spec), tpl.epilogue) if tpl.epilogue else Epilogue(b.var)
            out_shape = static_shape(ep.end)
            if out_shape is None or math.prod(out_shape) != math.prod(static_shape(b.var) or (-1,)):
                continue
            if tpl.epilogue:
                spec = dataclasses.replace(spec, clamp=ep.clamp)
            if tpl.takes_out_shape:
                spec = dataclasses.replace(spec, out_shape=out_shape)
            found.append((ep.end, ep.inner, (b, spec, ep.bias)))
        return found

    def replacement(self, binding, match):
        op, spec, bias = match
        tpl = TEMPLATES[type(spec)]
        gvar = self.add_kernel(tpl.make(spec), spec.variant)
        args = [self.visit_expr(op.value.args[0])]
        if tpl.epilogue:  # a layer with weights: weight and bias constants follow the input
            cout = tpl.out_channels(spec)
            bias = np.zeros(cout, np.float32) if bias is None else bias.astype(np.float32)
            args += [relax.const(tpl.weight(spec, const_array(op.value.args[1]))), relax.const(bias)]
        return relax.call_tir(gvar, relax.Tuple(args),
                              out_ty=relax.TensorType(list(static_shape(binding.var)), "float32"))


def dense_templates(mod: tvm.IRModule, target, *, threads: int = 1) -> tvm.IRModule:
    """Rewrite the dense layers the templates cover in every Relax function of ``mod`` (module doc)."""
    return _DenseTemplateRewriter(mod, target, threads).rewrite()
