"""Magnitude pruning of an ONNX model's weights: per layer, unstructured, the smallest |w| set to zero.

Pruned: float initializers used as the weight of Conv (input 1), Gemm (input 1) and MatMul (either input that is
an initializer, rank >= 2). Left dense by default: the first Conv of the graph (3-channel stem, little weight)
and the last Gemm/MatMul (the classifier), as Fast Sparse ConvNets does. Depthwise convolutions are pruned like
any other Conv unless ``skip_depthwise``; they have few weights and no sparse kernel, so pruning them only costs
accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgesparse.errors import EdgesparseError


@dataclass
class PrunedTensor:
    initializer: str
    node: str
    op: str
    shape: tuple
    sparsity_before: float
    sparsity_after: float
    pruned: bool
    reason: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class PruneReport:
    target_sparsity: float
    layers: list  # [PrunedTensor]

    @property
    def weights_total(self) -> int:
        return int(sum(np.prod(t.shape) for t in self.layers))

    @property
    def overall_sparsity(self) -> float:
        total = self.weights_total
        zeros = sum(np.prod(t.shape) * t.sparsity_after for t in self.layers)
        return float(zeros / total) if total else 0.0

    def as_dict(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "overall_sparsity": round(self.overall_sparsity, 6),
            "layers": [t.as_dict() for t in self.layers],
        }


def magnitude_prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * w.size)`` smallest-magnitude entries of ``w`` (ties broken by position)."""
    k = int(round(sparsity * w.size))
    out = w.copy()
    if k <= 0:
        return out
    flat = out.reshape(-1)
    order = np.argsort(np.abs(flat), kind="stable")
    flat[order[:k]] = 0
    return out


def _weight_uses(graph) -> list[tuple]:
    """(node, op, initializer name) for every prunable weight, in graph order."""
    inits = {t.name for t in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            found.append((node, node.op_type, node.input[1]))
        elif node.op_type == "MatMul":
            for name in node.input:
                if name in inits:
                    found.append((node, "MatMul", name))
    return found


def prune_onnx(
    in_path,
    out_path,
    sparsity: float,
    *,
    skip_first_conv: bool = True,
    skip_last_fc: bool = True,
    skip_depthwise: bool = True,
) -> PruneReport:
    """Prune ``in_path`` to ``sparsity`` per layer and save it to ``out_path``; return what was done per weight."""
    if not 0.0 <= sparsity < 1.0:
        raise EdgesparseError(f"sparsity {sparsity} is not in [0, 1)")
    in_path, out_path = Path(in_path), Path(out_path)
    if not in_path.exists():
        raise EdgesparseError(f"model file '{in_path}' does not exist")
    model = onnx.load(str(in_path))
    graph = model.graph
    by_name = {t.name: t for t in graph.initializer}
    uses = _weight_uses(graph)
    convs = [u for u in uses if u[1] == "Conv"]
    fcs = [u for u in uses if u[1] in ("Gemm", "MatMul")]
    first_conv = convs[0][2] if convs else None
    last_fc = fcs[-1][2] if fcs else None
    use_count: dict = {}
    for node in graph.node:
        for name in node.input:
            use_count[name] = use_count.get(name, 0) + 1

    layers, done = [], set()
    for node, op, name in uses:
        if name in done:
            continue
        done.add(name)
        tensor = by_name[name]
        w = numpy_helper.to_array(tensor)
        before = 1.0 - np.count_nonzero(w) / max(w.size, 1)
        reason = None
        if w.dtype not in (np.float32, np.float16, np.float64):
            reason = f"dtype {w.dtype}"
        elif w.ndim < 2:
            reason = "rank < 2"
        elif skip_first_conv and name == first_conv:
            reason = "first conv"
        elif skip_last_fc and name == last_fc:
            reason = "last fully-connected layer"
        elif op == "Conv" and skip_depthwise and w.shape[1] == 1 and any(
            a.name == "group" and a.i > 1 for a in node.attribute
        ):
            reason = "depthwise conv"
        elif use_count.get(name, 0) > 1:
            reason = "weight shared by several nodes"
        if reason is None:
            pruned = magnitude_prune(w, sparsity)
            tensor.CopyFrom(numpy_helper.from_array(pruned.astype(w.dtype), name))
            after = 1.0 - np.count_nonzero(pruned) / w.size
            layers.append(PrunedTensor(name, node.name, op, tuple(w.shape), round(float(before), 6),
                                       round(float(after), 6), True, f"magnitude to {sparsity:g}"))
        else:
            layers.append(PrunedTensor(name, node.name, op, tuple(w.shape), round(float(before), 6),
                                       round(float(before), 6), False, f"kept dense: {reason}"))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return PruneReport(target_sparsity=sparsity, layers=layers)
