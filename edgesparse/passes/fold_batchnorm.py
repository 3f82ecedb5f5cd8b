"""Fold per-channel affine ops that follow a convolution into its weights and bias.

After DecomposeOpsForInference a BatchNormalization is `add(sub(x, mean) / sqrt(var + eps) * gamma, beta)`
with constant operands. This pass pulls every constant, per-output-channel multiply or divide into the conv
weights and merges the adds and subtracts into one bias, so a conv + BN + ReLU becomes conv + bias + ReLU,
which FuseOps then turns into one kernel.
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard


def _const_value(expr) -> np.ndarray:
    return expr.value.numpy()


def _per_channel(value: np.ndarray, out_channels: int) -> np.ndarray | None:
    """`value` as a vector over the conv's output channels, or None if it varies along any other axis."""
    if value.size == 1:
        return np.full(out_channels, value.reshape(()), dtype=value.dtype)
    if value.ndim > 4 or value.size != out_channels:
        return None
    # Broadcast against NCHW: the channel axis is the third from the end of a rank-3 or rank-4 constant.
    shape = (1,) * (4 - value.ndim) + tuple(value.shape)
    if shape[1] != out_channels:
        return None
    return value.reshape(out_channels)


def _conv_out_channels(conv) -> int:
    return int(conv.args[1].ty.shape.values[0])


def _rebuild_conv(conv, weight: np.ndarray):
    return relax.Call(conv.op, [conv.args[0], relax.const(weight)], conv.attrs)


def _make_rules():
    data, weight = wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(data, weight)
    bias = is_const()
    conv_bias = is_op("relax.add")(conv, bias)
    factor = is_const()
    scaled = is_op("relax.multiply")(conv, factor) | is_op("relax.divide")(conv, factor)
    scaled_bias = is_op("relax.multiply")(conv_bias, factor) | is_op("relax.divide")(conv_bias, factor)
    shift = is_const()
    shifted = is_op("relax.add")(conv_bias, shift) | is_op("relax.subtract")(conv_bias, shift)
    shifted_plain = is_op("relax.subtract")(conv, shift)

    def fold_scale(expr, m, with_bias: bool):
        c = m[conv]
        n = _conv_out_channels(c)
        f = _per_channel(_const_value(m[factor]), n)
        if f is None or c.ty.dtype != "float32":
            return expr
        if expr.op.name == "relax.divide":
            f = 1.0 / f
        w = _const_value(m[weight]) * f.reshape(n, 1, 1, 1)
        new_conv = _rebuild_conv(c, w.astype(np.float32))
        if not with_bias:
            return new_conv
        b = _const_value(m[bias])
        bv = _per_channel(b, n)
        if bv is None:
            return expr
        return relax.op.add(new_conv, relax.const((bv * f).astype(np.float32).reshape(1, n, 1, 1)))

    def fold_shift(expr, m):
        c = m[conv]
        n = _conv_out_channels(c)
        s = _per_channel(_const_value(m[shift]), n)
        b = _per_channel(_const_value(m[bias]), n) if bias in m else np.zeros(n, np.float32)
        if s is None or b is None:
            return expr
        total = b + s if expr.op.name == "relax.add" else b - s
        return relax.op.add(c, relax.const(total.astype(np.float32).reshape(1, n, 1, 1)))

    return [
        (scaled_bias, lambda e, m: fold_scale(e, m, True)),
        (scaled, lambda e, m: fold_scale(e, m, False)),
        (shifted, fold_shift),
        (shifted_plain, fold_shift),
    ]


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNormIntoConv")
def FoldBatchNormIntoConv(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    rules = _make_rules()
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, relax.Function):
            continue
        for _ in range(16):  # each round folds one more op of every chain; BN needs four
            before = func
            for pattern, rewriter in rules:
                func = rewrite_call(pattern, rewriter, func)
            if tvm_ffi.structural_equal(before, func):
                break
        mod[gv] = func
    return mod
