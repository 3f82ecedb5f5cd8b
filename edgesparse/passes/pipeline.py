"""The graph-level pass list, from an imported Relax module to one ready for kernel lowering."""

from __future__ import annotations

import tvm
from tvm import relax

from .fold_batchnorm import FoldBatchNormIntoConv


def optimize_graph(mod: tvm.IRModule) -> tvm.IRModule:
    """BatchNorm folded into convs, constants folded. Operators stay high-level (relax.nn.conv2d ...)."""
    seq = tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            FoldBatchNormIntoConv,
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    return seq(mod)
