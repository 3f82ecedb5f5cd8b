"""The ONNX backend node test cases that edgesparse claims to compile, and how to check one.

`onnx.backend.test.case.node.collect_testcases` builds every case in memory (model, inputs, expected
outputs); the installed onnx wheel ships no on-disk data for them. A case is ours when every node of its
graph is an op in SUPPORTED_OPS. `check_case` compiles one for x86_64, runs the native runner and compares
each output with the expected one; a clear compile-time refusal (EdgesparseError) becomes a `Refused`.

Shape parameters. The node cases feed an op's shape parameters (Reshape's shape, Pad's pads, Slice's
starts, Resize's sizes, a reduction's axes, ...) as graph inputs. Exported vision models carry them as
initializers, and edgesparse compiles static-shape models only: a shape that arrives at run time is one it
cannot pin. So a graph input that feeds nothing but such parameter slots is bound to its case value as an
initializer before compiling (`bind_shape_parameters`); the expected outputs are unchanged, since the
value is the same. Every other input stays a run-time input.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx

import edgesparse.compiler as compiler
from edgesparse.errors import EdgesparseError
from edgesparse.frontend.ops import SUPPORTED_OPS
from edgesparse.harness.run import run_artifact

TARGET = "x86_64"

# Float outputs match when max |actual - expected| <= RTOL_OF_MAX * max(1, max |expected|) over the finite
# elements; non-finite elements (NaN, +-inf) must sit at the same places with the same value.
RTOL_OF_MAX = 1e-4

# No op needs a looser bound: every supported case passes with this one.

# float16 outputs: the expected values are themselves rounded to float16, whose spacing near 1 is 2**-10
# (9.8e-4); a kernel that rounds intermediate results differently is one unit off. One unit, no more.
FLOAT16_RTOL_OF_MAX = 2.0**-10


class Refused(Exception):
    """edgesparse refused the case at compile time with a clear EdgesparseError (the test skips)."""


# op type -> the input positions that are shape parameters (constants in an exported model)
SHAPE_PARAMETER_SLOTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,),
    "Pad": (1, 2, 3), "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3), "Upsample": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,),
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "Dropout": (1, 2),
}


def _as_array(value):
    """A tensor value as a numpy array; sequences (lists) and optionals (None) stay as they are, for
    edgesparse to refuse."""
    if isinstance(value, onnx.TensorProto):  # the Cast cases store exotic dtypes as TensorProto
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, (list, dict)) or value is None:
        return value
    return np.asarray(value)


@dataclass(frozen=True)
class NodeCase:
    name: str
    model: onnx.ModelProto
    inputs: list
    outputs: list

    @property
    def ops(self) -> frozenset[str]:
        return frozenset(n.op_type for n in self.model.graph.node)


def _in_supported_ops(model: onnx.ModelProto) -> bool:
    return all(n.domain in ("", "ai.onnx") and n.op_type in SUPPORTED_OPS for n in model.graph.node)


@lru_cache(maxsize=1)
def all_node_cases() -> dict[str, NodeCase]:
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some case generators divide by zero on purpose (ReduceMax of empty)
        cases = node.collect_testcases(None)
    out = {}
    for c in cases:
        if c.kind != "node" or not c.data_sets:
            continue
        inputs, outputs = c.data_sets[0]
        out[c.name] = NodeCase(c.name, c.model, [_as_array(x) for x in inputs], [_as_array(x) for x in outputs])
    return out


def bind_shape_parameters(case: NodeCase) -> NodeCase:
    """`case` with every graph input that only feeds shape-parameter slots turned into an initializer."""
    graph = case.model.graph
    initializers = {t.name for t in graph.initializer}
    runtime = [i for i in graph.input if i.name not in initializers]
    feeds: dict[str, list[bool]] = {i.name: [] for i in runtime}
    for node in graph.node:
        slots = SHAPE_PARAMETER_SLOTS.get(node.op_type, ())
        for pos, name in enumerate(node.input):
            if name in feeds:
                feeds[name].append(pos in slots)
    bound = {i.name for i in runtime if feeds[i.name] and all(feeds[i.name])}
    if not bound:
        return case
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    kept_inputs = []
    for vi, value in zip(runtime, case.inputs):
        if vi.name in bound:
            model.graph.initializer.append(onnx.numpy_helper.from_array(value, vi.name))
        else:
            kept_inputs.append(value)
    keep = [vi for vi in model.graph.input if vi.name not in bound]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return NodeCase(case.name, model, kept_inputs, case.outputs)


def supported_case_names() -> list[str]:
    return sorted(name for name, c in all_node_cases().items() if _in_supported_ops(c.model))


def _refusal_reason(exc: EdgesparseError, model_path: Path) -> str:
    """The error message without the temporary model path, so that reasons read the same for every run."""
    msg = str(exc).replace(str(model_path), "model.onnx")
    return re.sub(r"^model\.onnx: ", "", msg)


def compile_case(case: NodeCase, work: Path) -> Path:
    """Compile `case` into work/artifact; raise Refused for a clear compile-time EdgesparseError."""
    model_path = work / "model.onnx"
    onnx.save(case.model, str(model_path))
    artifact = work / "artifact"
    try:
        compiler.compile(model_path, TARGET, artifact, name="case")
    except EdgesparseError as exc:
        reason = _refusal_reason(exc, model_path)
        # "internal:" marks an edgesparse invariant broken (aot/plan.py), not a refusal of the user's model
        if reason.startswith("internal:"):
            raise
        raise Refused(reason) from exc
    return artifact


def compare(name: str, expected: np.ndarray, actual: np.ndarray, rtol_of_max: float) -> str | None:
    """None when `actual` matches `expected`; otherwise one line saying how it does not."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return f"{name}: shape {list(actual.shape)}, expected {list(expected.shape)}"
    if expected.dtype != actual.dtype:
        return f"{name}: dtype {actual.dtype}, expected {expected.dtype}"
    if expected.dtype.kind != "f":  # integers and bools: exact
        wrong = expected != actual
        if wrong.any():
            at = tuple(int(i) for i in np.argwhere(wrong)[0])
            return (
                f"{name}: {int(wrong.sum())} of {expected.size} elements differ; "
                f"first at {at}: {actual[at]!r}, expected {expected[at]!r}"
            )
        return None
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    finite = np.isfinite(e)
    nonfinite_wrong = ~finite & ~((np.isnan(e) & np.isnan(a)) | (e == a))
    if nonfinite_wrong.any():
        at = tuple(int(i) for i in np.argwhere(nonfinite_wrong)[0])
        return f"{name}: non-finite element at {at} is {a[at]!r}, expected {e[at]!r}"
    if not finite.any():
        return None
    with np.errstate(invalid="ignore"):  # inf - inf at the non-finite places, masked out just below
        err = np.where(finite, np.abs(a - e), 0.0)
    err = np.where(np.isnan(err), np.inf, err)  # actual NaN where a finite value is expected
    bound = rtol_of_max * max(1.0, float(np.abs(e[finite]).max()))
    worst = float(err.max())
    if worst > bound:
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), err.shape))
        return f"{name}: max abs error {worst:.3g} > {bound:.3g} at {at}: {a[at]!r}, expected {e[at]!r}"
    return None


def check_case(case: NodeCase, work: Path) -> list[str]:
    """Compile, run and compare `case`; the mismatches, one line each (empty when it passes)."""
    case = bind_shape_parameters(case)
    artifact = compile_case(case, work)
    actual = run_artifact(artifact, case.inputs)
    names = [o.name for o in case.model.graph.output]
    if len(actual) != len(case.outputs):
        return [f"{len(actual)} outputs, expected {len(case.outputs)}"]
    problems = [
        compare(nm, e, a, FLOAT16_RTOL_OF_MAX if e.dtype == np.float16 else RTOL_OF_MAX)
        for nm, e, a in zip(names, case.outputs, actual)
    ]
    return [p for p in problems if p]
