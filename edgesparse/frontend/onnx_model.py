"""ONNX frontend: load and check a model, pin its input shapes, import it into Relax.

Every problem a user can cause is reported here, before TVM sees the model, as one EdgesparseError that
names the file, node or input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ..errors import EdgesparseError
from .onnx_checks import check_dtypes_and_variants
from .ops import SUPPORTED_OPS

# Ops that only compute shapes at run time; with the input shapes pinned, onnxslim folds them away
# (TVM's importer cannot take a Reshape whose shape is computed).
SHAPE_COMPUTING_OPS = {"Shape", "ConstantOfShape", "Size", "Range", "NonZero"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise EdgesparseError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise EdgesparseError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})".strip()) from None
    if not model.graph.node or not model.opset_import:
        raise EdgesparseError(f"{path}: not a valid ONNX model (no graph nodes or no opset; truncated?)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EdgesparseError(f"{path}: invalid ONNX model: {first}") from None
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _elem_dtype(vi: onnx.ValueInfoProto) -> str:
    elem = vi.type.tensor_type.elem_type
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name


def pin_input_shapes(model: onnx.ModelProto, pinned: dict[str, tuple[int, ...]], source: str) -> list[TensorSpec]:
    """Return the model's inputs with every dimension known; `pinned` overrides (NAME -> shape)."""
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    for name in pinned:
        if name not in names:
            raise EdgesparseError(f"{source}: --input-shape names '{name}', but the model's inputs are {names}")
    specs = []
    for vi in inputs:
        if not vi.type.HasField("tensor_type"):
            raise EdgesparseError(f"{source}: input '{vi.name}' is not a tensor")
        dtype = _elem_dtype(vi)
        if vi.name in pinned:
            shape = tuple(int(d) for d in pinned[vi.name])
            declared = vi.type.tensor_type.shape.dim
            if len(declared) != len(shape) and vi.type.tensor_type.HasField("shape"):
                raise EdgesparseError(
                    f"{source}: input '{vi.name}' has rank {len(declared)}, --input-shape gives {len(shape)} dims"
                )
            for d, want in zip(declared, shape):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != want:
                    raise EdgesparseError(
                        f"{source}: input '{vi.name}' is fixed at {_fmt_dims(declared)}, "
                        f"--input-shape gives {list(shape)}"
                    )
        else:
            dims = vi.type.tensor_type.shape.dim
            if any(d.HasField("dim_value") and d.dim_value == 0 for d in dims):
                raise EdgesparseError(
                    f"{source}: input '{vi.name}' has shape {_fmt_dims(dims)} with no elements; "
                    "empty tensors are not supported"
                )
            if not vi.type.tensor_type.HasField("shape") or any(
                not d.HasField("dim_value") or d.dim_value <= 0 for d in dims
            ):
                raise EdgesparseError(
                    f"{source}: input '{vi.name}' has dynamic shape {_fmt_dims(dims)}; "
                    f"pin it with --input-shape {vi.name}:1,3,224,224 (for example)"
                )
            shape = tuple(d.dim_value for d in dims)
        if any(s <= 0 for s in shape):
            raise EdgesparseError(f"{source}: input '{vi.name}' shape {list(shape)} has a non-positive dimension")
        specs.append(TensorSpec(vi.name, shape, dtype))
    return specs


def _fmt_dims(dims) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + "]"


def check_supported_ops(model: onnx.ModelProto, source: str) -> None:
    bad = []
    for i, node in enumerate(model.graph.node):
        domain_ok = node.domain in ("", "ai.onnx")
        if not domain_ok or node.op_type not in SUPPORTED_OPS:
            op = node.op_type if domain_ok else f"{node.domain}.{node.op_type}"
            bad.append(f"{op} (node '{node.name or f'#{i}'}')")
    if bad:
        raise EdgesparseError(f"{source}: unsupported ops: {', '.join(bad)}")
    check_dtypes_and_variants(model, source)


def fold_shape_computations(model: onnx.ModelProto, specs: list[TensorSpec]) -> onnx.ModelProto:
    """With the inputs pinned, fold run-time shape arithmetic (Shape -> Gather -> Concat -> Reshape)."""
    if not any(n.op_type in SHAPE_COMPUTING_OPS for n in model.graph.node):
        return model
    import onnxslim

    # a scalar input has nothing to pin (and onnxslim cannot parse "name:" with no dims)
    shapes = [f"{s.name}:{','.join(map(str, s.shape))}" for s in specs if s.shape]
    return onnxslim.slim(model, input_shapes=shapes)


def import_to_relax(model: onnx.ModelProto, specs: list[TensorSpec], source: str):
    from tvm.relax.frontend.onnx import from_onnx

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    try:
        mod = from_onnx(
            model,
            shape_dict={s.name: list(s.shape) for s in specs},
            dtype_dict={s.name: s.dtype for s in specs},
            opset=opset,
            keep_params_in_input=False,
        )
    except Exception as exc:  # TVM raises many kinds; the user needs to know which model failed and why
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise EdgesparseError(f"{source}: TVM's ONNX importer failed: {first}") from exc
    _check_static_shapes(mod, source)
    return mod


def _check_static_shapes(mod, source: str) -> None:
    """Every tensor of the imported graph must have a shape known at compile time (the plan is static);
    a shape that depends on run-time data (Slice with run-time starts, Range over inputs) is refused here,
    before TVM's lowering fails on it."""
    from tvm import relax, tirx

    for block in mod["main"].body.blocks:
        for b in block.bindings:
            ty = b.var.ty
            if not isinstance(ty, relax.TensorType):
                continue
            shape = ty.shape
            static = isinstance(shape, relax.ShapeExpr) and all(isinstance(v, tirx.IntImm) for v in shape.values)
            if not static:
                op = b.value.op.name if isinstance(b.value, relax.Call) and hasattr(b.value.op, "name") else "?"
                raise EdgesparseError(
                    f"{source}: the result of {op} has a shape known only at run time ({ty}); "
                    "edgesparse needs static shapes (is a shape input, such as Slice's starts, not a constant?)"
                )
