"""Compile the PrimFuncs of a lowered module into one relocatable object for the target's triple."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir
from tvm import tirx

WORKSPACE_ALIGN = 64


def kernel_module(mod: tvm.IRModule) -> tvm.IRModule:
    """The PrimFuncs of `mod`, on their own (the Relax driver function is replaced by generated C)."""
    # FuseTIR makes private PrimFuncs; a global symbol makes TVM export each as __tvm_ffi_<name>.
    funcs = {
        gv: f.with_attr("global_symbol", gv.name_hint)
        for gv, f in mod.functions.items()
        if isinstance(f, tirx.PrimFunc)
    }
    return tvm.IRModule(funcs)


def _buffer_bytes(buf) -> int:
    n = 1
    for s in buf.shape:
        n *= int(s)
    return n * np.dtype(str(buf.dtype)).itemsize if str(buf.dtype) != "bool" else n


def _compact(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with its buffers shrunk to what a schedule's tiles touch (as TVM's own lowering will), so the
    bound below counts a conv's tile buffer, not the whole tensor it was declared as."""
    mod = tvm.IRModule({"f": func})
    mod = tvm.transform.Sequential(
        [
            s_tir.transform.LowerInitBlock(),
            s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
            s_tir.transform.ConvertBlocksToOpaque(),
            s_tir.transform.CompactBufferAllocation(),
        ]
    )(mod)
    return mod["f"]


def workspace_bound(func: tirx.PrimFunc) -> int:
    """An upper bound of the scratch bytes one call of `func` may take through TVMBackendAllocWorkspace:
    every buffer it allocates after compaction, each aligned, as if all were live at once."""
    sizes = []

    def visit(node):
        if isinstance(node, s_tir.SBlock):
            sizes.extend(_buffer_bytes(b) for b in node.alloc_buffers)
        elif isinstance(node, tirx.AllocBuffer):
            sizes.append(_buffer_bytes(node.buffer))
        return True

    tvm_ffi.structural_walk(_compact(func), visit)
    return sum((s + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN + WORKSPACE_ALIGN for s in sizes)


def compile_kernels(kmod: tvm.IRModule, tvm_target, out_object: Path) -> None:
    executable = tvm.compile(kmod, target=tvm_target)
    executable.mod.write_to_file(str(out_object))


