"""Checks of an ONNX model's tensors and op variants that TVM's importer would get wrong or crash on.

Each refusal names the node and the reason, before TVM sees the model.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..errors import EdgesparseError


def check_dtypes_and_variants(model: onnx.ModelProto, source: str) -> None:
    elem_types = _elem_types(model)
    _check_dtypes(elem_types, source)
    _check_op_variants(model, elem_types, source)


def _inferred_value_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - inference is a best effort; the declared types still count
        inferred = model.graph
    return [vi for vi in [*inferred.input, *inferred.value_info, *inferred.output] if vi.type.HasField("tensor_type")]


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every tensor whose type is declared or inferable (name -> TensorProto.DataType)."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in _inferred_value_infos(model)}
    for t in model.graph.initializer:
        types[t.name] = t.data_type
    return types


def _static_shape(model: onnx.ModelProto, name: str) -> tuple[int, ...] | None:
    for vi in _inferred_value_infos(model):
        if vi.name == name and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                return tuple(d.dim_value for d in dims)
    return None


def _onnx_dtype_name(elem: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem).lower()


def _check_dtypes(elem_types: dict[str, int], source: str) -> None:
    """Every tensor must have a dtype the generated C driver can pass to its kernels."""
    from ..aot.emit_c import C_DTYPES

    for name, elem in elem_types.items():
        if elem == onnx.TensorProto.UNDEFINED:
            continue
        dtype = _onnx_dtype_name(elem)
        if dtype not in C_DTYPES:
            raise EdgesparseError(
                f"{source}: tensor '{name}' has dtype {dtype}, which the C driver does not support "
                f"(it supports {', '.join(sorted(C_DTYPES))})"
            )


def _constant_value(model: onnx.ModelProto, name: str):
    """The value of `name` when it is an initializer or a Constant node's tensor output; else None."""
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
    return None


_INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
}


def _check_op_variants(model: onnx.ModelProto, elem_types: dict[str, int], source: str) -> None:
    """Refuse the variants of supported ops that TVM's importer would compile to wrong results or crash on."""
    for i, node in enumerate(model.graph.node):
        where = f"{node.op_type} (node '{node.name or f'#{i}'}')"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "BatchNormalization" and attrs.get("training_mode", 0):
            raise EdgesparseError(f"{source}: {where} is in training mode (training_mode=1); only inference is supported")
        if node.op_type == "Dropout":
            if len(node.input) > 2 and node.input[2]:
                training = _constant_value(model, node.input[2])
                if training is None or bool(training):
                    raise EdgesparseError(
                        f"{source}: {where} may run in training mode (input training_mode is not a constant false)"
                    )
            if len(node.output) > 1 and node.output[1]:
                raise EdgesparseError(f"{source}: {where} has a mask output; only Dropout's data output is supported")
        mode = attrs.get("mode", b"DCR")
        if node.op_type == "SpaceToDepth" and mode != b"DCR":
            raise EdgesparseError(f"{source}: {where} has mode={mode.decode()}; TVM's importer implements DCR only")
        if node.op_type in ("ReduceMax", "ReduceMin") and elem_types.get(node.input[0]) == onnx.TensorProto.BOOL:
            raise EdgesparseError(f"{source}: {where} reduces a bool tensor; TVM has no {node.op_type} for bool")
        if node.op_type == "Resize":
            _check_resize(model, node, attrs, f"{source}: {where}")
        if node.op_type == "Pow" and elem_types.get(node.input[0]) in _INTEGER_TYPES:
            raise EdgesparseError(f"{source}: {where} raises an integer tensor to a power; TVM lowers Pow for floats only")


def _check_resize(model: onnx.ModelProto, node: onnx.NodeProto, attrs: dict, where: str) -> None:
    """TVM's Resize ignores antialias, lacks half_pixel_symmetric, and maps coordinates with the output/input
    size ratio rather than a given scale: a scale that is not exactly that ratio gives wrong values."""
    if attrs.get("antialias", 0):
        raise EdgesparseError(f"{where} has antialias=1; TVM's importer ignores it (wrong results)")
    mode = attrs.get("coordinate_transformation_mode", b"half_pixel")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "half_pixel_symmetric":
        raise EdgesparseError(f"{where} has coordinate_transformation_mode={mode}; TVM does not implement it")
    scales = _constant_value(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    has_sizes = len(node.input) > 3 and node.input[3]
    if scales is None or scales.size == 0 or has_sizes:
        return
    shape = _static_shape(model, node.input[0])
    if shape is None or len(shape) != scales.size:
        return
    for dim, scale in zip(shape, scales.tolist()):
        if int(np.floor(dim * scale)) != dim * scale:
            raise EdgesparseError(
                f"{where} scales a dimension of {dim} by {scale:g}, not to a whole size; TVM's Resize would use "
                f"the ratio of the sizes instead of the scale (wrong results)"
            )
