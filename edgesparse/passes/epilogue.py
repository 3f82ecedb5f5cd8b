"""Reading a Relax function for the passes that replace an operator by a kernel call, and the epilogue they fold
into that call: a per-output-channel bias, a residual, then any chain of clamps.

Shared by the sparsify pass (1x1 convolutions and linear layers -> kernels/spmm) and the dense templates pass
(-> kernels/stride1, stride2, gemv.py), so that both fold exactly the same patterns:

* an ``R.add`` of a constant bias of the operator's output channels (``[1, C, 1, 1]`` or ``[C, 1, 1]`` after a
  conv2d, ``[C]`` or ``[1, C]`` after a matmul);
* then, where the caller's kernel takes one (``residual=True``), an ``R.add`` of a float32 tensor of the output's
  shape that is not a constant: a skip connection (MobileNetV2's and ResNet's blocks);
* then any chain of ``R.nn.relu``, ``R.clip``, ``R.maximum``/``R.minimum`` by a scalar constant (and the
  ``maximum``/``minimum`` ``call_tir`` that ``FoldConstant`` leaves for ONNX ``Clip``), folded into one
  ``(lo, hi)`` clamp;

each only when the value before it has no other use (the kernel call then replaces the chain's last binding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

# --- reading the graph ------------------------------------------------------------------------------------------


def op_name(value) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def static_shape(expr) -> tuple[int, ...] | None:
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(v) for v in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def dtype_of(expr) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def const_array(expr) -> np.ndarray | None:
    if isinstance(expr, GenericConst):
        try:
            return expr.value.numpy()
        except AttributeError:
            return None
    return None


def scalar(expr) -> float | None:
    """The value of a one-element constant tensor, or of an ``IntImm``/``FloatImm`` (``R.clip``'s bounds)."""
    arr = const_array(expr)
    if arr is not None:
        return float(arr.reshape(())) if arr.size == 1 else None
    value = getattr(expr, "value", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def call_args(value):
    """Arguments of an op call, or of the PrimFunc in a ``call_tir``."""
    if op_name(value) == "relax.call_tir":
        return list(value.args[1].fields)
    return list(value.args)


class Uses:
    """Who uses each variable of a function: the epilogue of an operator is folded only through values with a
    single use."""

    def __init__(self, func):
        self.bindings = [b for block in func.body.blocks for b in block.bindings]
        self.counts: dict = {}
        self.users: dict = {}
        for b in self.bindings:
            for v in relax.analysis.free_vars(b.value):
                self.counts[v] = self.counts.get(v, 0) + 1
                self.users.setdefault(v, []).append(b)
        for v in relax.analysis.free_vars(func.body.body):
            self.counts[v] = self.counts.get(v, 0) + 1

    def single_user(self, var):
        """The one binding that uses ``var``, or None when it has no use or more than one (the output counts)."""
        if self.counts.get(var, 0) != 1 or len(self.users.get(var, [])) != 1:
            return None
        return self.users[var][0]


# --- the epilogue ---------------------------------------------------------------------------------------------


def clamp_of(value, x) -> tuple[float, float] | None:
    """The (lo, hi) clamp ``value`` applies to ``x``, or None if it is not a clamp of x."""
    name = op_name(value)
    if name == "relax.nn.relu" and value.args[0].same_as(x):
        return (0.0, math.inf)
    if name == "relax.clip" and value.args[0].same_as(x):
        lo, hi = scalar(value.args[1]), scalar(value.args[2])
        if lo is not None and hi is not None:
            return (lo, hi)
        return None
    kind = None
    if name in ("relax.maximum", "relax.minimum"):
        kind = name.split(".")[-1]
    elif name == "relax.call_tir":  # FoldConstant legalizes ONNX Clip's max/min with constant bounds
        callee = value.args[0]
        hint = getattr(callee, "name_hint", "")
        if hint.rstrip("0123456789_") in ("maximum", "minimum"):
            kind = hint.rstrip("0123456789_")
    if kind is None:
        return None
    args = call_args(value)
    if len(args) != 2:
        return None
    other = args[1] if args[0].same_as(x) else args[0] if args[1].same_as(x) else None
    s = scalar(other) if other is not None else None
    if s is None:
        return None
    return (s, math.inf) if kind == "maximum" else (-math.inf, s)


BIAS_SHAPES = {"conv2d": lambda c: [(1, c, 1, 1), (c, 1, 1)], "matmul": lambda c: [(c,), (1, c)]}


def bias_of(value, x, cout: int, op: str) -> np.ndarray | None:
    """The ``[cout]`` bias ``value`` adds to ``x`` (the output of a ``op``: "conv2d" or "matmul"), or None."""
    if op_name(value) != "relax.add":
        return None
    a, b = value.args
    other = b if a.same_as(x) else a if b.same_as(x) else None
    arr = const_array(other) if other is not None else None
    if arr is None or arr.dtype != np.float32 or arr.size != cout:
        return None
    if arr.shape not in BIAS_SHAPES[op](cout) and cout != 1:
        return None
    return arr.reshape(cout)


@dataclass
class Epilogue:
    """What follows an operator's output ``var`` and folds into its kernel call."""

    end: relax.Var  # the chain's last value: the kernel call's binding replaces this one's
    inner: list = field(default_factory=list)  # the values before ``end`` (dropped with the rewrite)
    bias: np.ndarray | None = None  # [cout] float32
    residual: relax.Expr | None = None  # the tensor added after the bias
    clamp: tuple[float, float] | None = None

    @property
    def fused(self) -> list[str]:
        """What was folded, as the manifest lists it: "bias", "residual", "clamp(lo,hi)"."""
        out = ["bias"] if self.bias is not None else []
        if self.residual is not None:
            out.append("residual")
        if self.clamp is not None:
            out.append(f"clamp({self.clamp[0]:g},{self.clamp[1]:g})")
        return out


def residual_of(value, x):
    """The tensor ``value`` adds to ``x`` when it is a skip connection: same static shape, float32, not a
    constant, not ``x`` itself; else None."""
    if op_name(value) != "relax.add":
        return None
    a, b = value.args
    other = b if a.same_as(x) else a if b.same_as(x) else None
    if other is None or other.same_as(x) or const_array(other) is not None:
        return None
    shape = static_shape(x)
    if shape is None or static_shape(other) != shape or dtype_of(other) != "float32":
        return None
    return other


def follow_epilogue(var, uses: Uses, cout: int, op: str, residual: bool = False) -> Epilogue:
    """The bias, the residual (with ``residual``) and the clamps after ``var`` (module doc), each through a
    single-use value."""
    ep = Epilogue(var)
    user = uses.single_user(var)
    if user is not None and (b := bias_of(user.value, var, cout, op)) is not None:
        ep.inner.append(ep.end)
        ep.end, ep.bias = user.var, b
    user = uses.single_user(ep.end)
    if residual and user is not None and (r := residual_of(user.value, ep.end)) is not None:
        ep.inner.append(ep.end)
        ep.end, ep.residual = user.var, r
    while (user := uses.single_user(ep.end)) is not None and (c := clamp_of(user.value, ep.end)) is not None:
        lo, hi = ep.clamp if ep.clamp is not None else (-math.inf, math.inf)
        ep.clamp = (max(lo, c[0]), min(hi, c[1]))
        ep.inner.append(ep.end)
        ep.end = user.var
    return ep
