"""Walk a memory-planned Relax `main` into a static execution plan.

Input: `main` after StaticPlanBlockMemory, a flat list of storage allocations, tensor views at fixed
offsets into them, and kernel calls. Output: a Plan with arena offsets (one arena, every storage at a
64-byte aligned offset), constants for the weight blob, and the kernel calls in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

from ..errors import EdgesparseError

ALIGN = 64


def align_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class TensorRef:
    """A tensor the generated code can point at: in `kind`'s memory at byte `offset`."""

    kind: str  # "input" | "output" | "arena" | "const"
    index: int  # input/output position, or constant id; 0 for arena
    offset: int  # byte offset inside that memory
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class KernelCall:
    func: str  # PrimFunc name; the object exports __tvm_ffi_<func>
    args: list[TensorRef]


@dataclass
class OutputCopy:
    """An output whose value lives elsewhere (an input, a constant, an arena tensor): copied at the end."""

    output: int
    source: TensorRef


@dataclass
class Plan:
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    calls: list[KernelCall]
    copies: list[OutputCopy]
    constants: list[np.ndarray]
    const_offsets: list[int]
    weight_bytes: int
    activation_bytes: int  # planned storages
    workspace_bytes: int = 0  # kernel scratch, set after kernels are analysed
    staging_bytes: int = 0  # copies of unaligned inputs/outputs
    max_threads: int = 1
    staging_offsets: dict = field(default_factory=dict)

    @property
    def workspace_offset(self) -> int:
        return self.activation_bytes

    @property
    def staging_offset(self) -> int:
        return align_up(self.activation_bytes + self.workspace_bytes)

    @property
    def arena_bytes(self) -> int:
        return align_up(self.staging_offset + self.staging_bytes)


def _ints(shape_expr) -> tuple[int, ...]:
    return tuple(int(v) for v in shape_expr.values)


def _tensor_type(expr):
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise EdgesparseError(f"internal: expected a tensor of static shape, got {ty}")
    return _ints(ty.shape), str(ty.dtype)


def build_plan(main: relax.Function) -> Plan:
    env: dict = {}  # relax Var -> TensorRef | tuple
    storages: dict = {}  # storage Var -> (arena offset, bytes)
    arena_top = 0
    constants: list[np.ndarray] = []
    const_ids: list = []  # (tvm Tensor, constant id): constants shared by several calls stored once
    const_offsets: list[int] = []
    weight_top = 0
    own_buffers: dict = {}  # builtin.alloc_tensor Var -> TensorRef placeholder (resolved below)
    calls: list[KernelCall] = []

    inputs = []
    for i, p in enumerate(main.params):
        shape, dtype = _tensor_type(p)
        env[p] = TensorRef("input", i, 0, shape, dtype)
        inputs.append(env[p])

    def add_constant(arr: np.ndarray) -> int:
        nonlocal weight_top
        constants.append(arr)
        weight_top = align_up(weight_top)
        const_offsets.append(weight_top)
        weight_top += arr.nbytes
        return len(constants) - 1

    def constant_ref(idx: int) -> TensorRef:
        arr = constants[idx]
        return TensorRef("const", idx, const_offsets[idx], tuple(arr.shape), arr.dtype.name)

    def const_ref(c: GenericConst) -> TensorRef:
        for known, idx in const_ids:
            if known.same_as(c.value):
                return constant_ref(idx)
        # A constant's data may carry a different but equal-sized shape than its type (a scalar stored
        # as shape (1,)); the kernel checks against the type.
        arr = np.ascontiguousarray(c.value.numpy()).reshape(_tensor_type(c)[0])
        idx = add_constant(arr)
        const_ids.append((c.value, idx))
        return constant_ref(idx)

    def shape_ref(shape: relax.ShapeExpr) -> TensorRef:
        # A model output computed by ONNX Shape stays a Relax shape value (static here): an int64 constant.
        return constant_ref(add_constant(np.array(_ints(shape), dtype=np.int64)))

    def resolve(expr):
        if isinstance(expr, GenericConst):
            return const_ref(expr)
        if isinstance(expr, relax.Tuple):
            return tuple(resolve(f) for f in expr.fields)
        if isinstance(expr, relax.TupleGetItem):
            return resolve(expr.tuple_value)[expr.index]
        if isinstance(expr, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in expr.values):
            return shape_ref(expr)
        if expr in env:
            return env[expr]
        raise EdgesparseError(f"internal: unplanned value {str(expr)[:80]}")

    for block in main.body.blocks:
        for b in block.bindings:
            if not isinstance(b, relax.VarBinding):
                raise EdgesparseError(f"internal: unexpected binding {type(b).__name__} in planned main")
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op):
                op = v.op.name
                if op == "relax.memory.alloc_storage":
                    nbytes = _ints(v.args[0])[0]
                    arena_top = align_up(arena_top)
                    storages[b.var] = (arena_top, nbytes)
                    arena_top += nbytes
                elif op == "relax.memory.alloc_tensor":
                    base, _ = storages[v.args[0]]
                    offset = int(v.args[1])
                    shape = _ints(v.args[2])
                    env[b.var] = TensorRef("arena", 0, base + offset, shape, str(v.args[3].value))
                elif op == "relax.builtin.alloc_tensor":
                    shape = _ints(v.args[0])
                    ref = TensorRef("own", len(own_buffers), 0, shape, str(v.args[1].value))
                    own_buffers[ref] = None
                    env[b.var] = ref
                elif op in ("relax.memory.kill_storage", "relax.memory.kill_tensor"):
                    pass
                else:
                    raise EdgesparseError(f"unsupported operator after lowering: {op} (no kernel for it)")
            elif isinstance(v, relax.Call) and isinstance(v.op, relax.ExternFunc):
                # e.g. vm.builtin.tensor_to_shape: a shape read from a tensor at run time (Expand, Reshape
                # with a shape input); the static plan needs every shape known at compile time.
                raise EdgesparseError(
                    f"unsupported operator after lowering: {v.op.global_symbol} "
                    "(a shape computed at run time; make the shape input a constant)"
                )
            elif isinstance(v, relax.Call) and isinstance(v.op, relax.GlobalVar):
                args = [resolve(a) for a in v.args]
                if any(not isinstance(a, TensorRef) for a in args):
                    raise EdgesparseError(f"internal: kernel {v.op.name_hint} takes a non-tensor argument")
                calls.append(KernelCall(v.op.name_hint, args))
            else:
                env[b.var] = resolve(v)

    result = resolve(main.body.body)
    results = list(result) if isinstance(result, tuple) else [result]

    # Buffers allocated by builtin.alloc_tensor: the first time one is a returned value it becomes that
    # output's buffer; otherwise it gets arena space of its own.
    placement: dict[TensorRef, TensorRef] = {}
    outputs: list[TensorRef] = []
    copies: list[OutputCopy] = []
    for i, r in enumerate(results):
        out = TensorRef("output", i, 0, r.shape, r.dtype)
        outputs.append(out)
        if r.kind == "own" and r not in placement:
            placement[r] = out
        else:
            copies.append(OutputCopy(i, r))
    for r in own_buffers:
        if r not in placement:
            arena_top = align_up(arena_top)
            placement[r] = TensorRef("arena", 0, arena_top, r.shape, r.dtype)
            arena_top += r.nbytes

    def place(ref: TensorRef) -> TensorRef:
        return placement.get(ref, ref)

    for c in calls:
        c.args = [place(a) for a in c.args]
    copies = [OutputCopy(c.output, place(c.source)) for c in copies]

    return Plan(
        inputs=inputs,
        outputs=outputs,
        calls=calls,
        copies=copies,
        constants=constants,
        const_offsets=const_offsets,
        weight_bytes=align_up(weight_top),
        activation_bytes=align_up(arena_top),
    )
