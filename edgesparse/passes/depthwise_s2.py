"""Depthwise convolutions with stride 2 -> calls of the stride-2 depthwise template (kernels/depthwise).

Matched: ``R.nn.conv2d`` with a constant ``[C, 1, k, k]`` weight, ``groups == C``, stride 2, padding k // 2 on
every side, dilation 1, NCHW/OIHW, a static ``[1, C, H, W]`` input the template supports (even W); then, each
only when the previous value has no other use, an ``R.add`` of a constant per-channel bias and any chain of
clamps (ReLU, ReLU6, Clip), folded into the call as sparsify folds them. Anything else stays ``conv2d`` for
the window schedule (kernels/window.py). Why: see kernels/depthwise/stride2.py (TVM vectorises stride-2 taps
into per-lane loads; the template de-interleaves rows with vector shuffles instead).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from edgesparse.kernels.depthwise import DepthwiseS2Spec, make_depthwise_s2_kernel

from .sparsify import _bias_of, _clamp_of, _const_array, _op_name, _static_shape, _use_counts


def _spec_of(value, target, threads) -> DepthwiseS2Spec | None:
    if _op_name(value) != "relax.nn.conv2d":
        return None
    a = value.attrs
    x_shape, w = _static_shape(value.args[0]), _const_array(value.args[1])
    if x_shape is None or len(x_shape) != 4 or x_shape[0] != 1 or w is None or w.dtype != np.float32:
        return None
    c = x_shape[1]
    if w.shape[:2] != (c, 1) or w.shape[2] != w.shape[3] or int(a.groups) != c:
        return None
    if [int(s) for s in a.strides] != [2, 2] or any(int(d) != 1 for d in a.dilation):
        return None
    pads = {int(p) for p in a.padding}
    if len(pads) != 1 or str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
        return None
    if str(a.out_layout) != "NCHW" or str(a.out_dtype or "float32") not in ("float32", ""):
        return None
    spec = DepthwiseS2Spec(c, x_shape[2], x_shape[3], int(w.shape[2]), pads.pop(), target.vector_lanes_f32,
                           threads=threads)
    return spec if spec.supported() is None else None


@mutator
class _DepthwiseS2Mutator(PyExprMutator):
    def __init__(self, mod, target, threads):
        super().__init__(mod)
        self.mod_ = mod
        self.target, self.threads = target, threads
        self.ends: dict = {}  # last var of a matched chain -> (conv binding, spec, bias, clamp)
        self.dropped: set = set()
        self.rewritten = 0

    def plan(self, func):
        counts = _use_counts(func)
        bindings = [b for block in func.body.blocks for b in block.bindings]
        users: dict = {}
        for b in bindings:
            for v in relax.analysis.free_vars(b.value):
                users.setdefault(v, []).append(b)

        def single_user(var):
            if counts.get(var, 0) != 1 or len(users.get(var, [])) != 1:
                return None
            return users[var][0]

        for b in bindings:
            spec = _spec_of(b.value, self.target, self.threads)
            if spec is None:
                continue
            end, inner, bias, clamp = b.var, [], None, None
            user = single_user(end)
            if user is not None:
                bias = _bias_of(user.value, end, spec.channels, "conv2d")
                if bias is not None:
                    inner.append(end)
                    end = user.var
            while (user := single_user(end)) is not None and (c := _clamp_of(user.value, end)) is not None:
                lo, hi = clamp if clamp is not None else (-math.inf, math.inf)
                clamp = (max(lo, c[0]), min(hi, c[1]))
                inner.append(end)
                end = user.var
            self.ends[end] = (b, DepthwiseS2Spec(**{**spec.__dict__, "clamp": clamp}), bias)
            self.dropped.update(inner)

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
        w = _const_array(conv.value.args[1])
        bias = np.zeros(spec.channels, np.float32) if bias is None else bias.astype(np.float32)
        # "<variant>__<n>": a unique symbol whose kind (manifest, profile) is the part before "__"
        gvar = self.builder_.add_func(make_depthwise_s2_kernel(spec).without_attr("global_symbol"),
                                      f"{spec.variant}__{self.rewritten}")
        out_shape = [1, spec.channels, spec.out_height, spec.out_width]
        call = relax.call_tir(
            gvar,
            relax.Tuple([self.visit_expr(conv.value.args[0]), relax.const(w), relax.const(bias)]),
            out_ty=relax.TensorType(out_shape, "float32"),
        )
        self.rewritten += 1
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(call)))


def depthwise_s2_kernels(mod: tvm.IRModule, target, *, threads: int = 1) -> tvm.IRModule:
    """Rewrite the stride-2 depthwise convolutions of every Relax function in ``mod`` (see the module doc)."""
    return _DepthwiseS2Mutator(mod, target, threads).rewrite()
