"""Relax operators -> fused, scheduled PrimFuncs called over statically planned storage.

The result's `main` is a flat list of storage allocations, tensor views into them and kernel calls: what the
ahead-of-time emitter walks (aot/plan.py).
"""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax

ScheduleHook = Callable[[tvm.IRModule], tvm.IRModule]


def lower_to_kernels(mod: tvm.IRModule, tvm_target, schedule: ScheduleHook | None = None) -> tvm.IRModule:
    with tvm_target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
            ]
        )(mod)
        if schedule is not None:
            mod = schedule(mod)
        mod = tvm.transform.Sequential(
            [
                relax.transform.CallTIRRewrite(),
                relax.transform.StaticPlanBlockMemory(),
            ]
        )(mod)
    return mod
