"""Fallback for kernels without a reduction (reshape, add, activation, concat...): one vectorized loop.

All blocks but the last are inlined into their consumers; the last one's loops are fused into a single
axis and split into whole vectors when the lane count divides it (else left scalar: still correct).
"""

from __future__ import annotations

from .blocks import iter_kinds, loop_extent, require, root_children


class Injective:
    name = "elementwise"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def apply(self, func, target):
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        blocks = root_children(sch)
        require(len(blocks) >= 1, "no blocks")
        require(all("R" not in iter_kinds(sch, b) and "O" not in iter_kinds(sch, b) for b in blocks), "has a reduction")
        for b in blocks[:-1]:
            try:
                sch.compute_inline(b)
            except Exception:  # noqa: BLE001 - e.g. a block writing a function output: keep it
                pass
        lanes = target.vector_lanes_f32
        for b in root_children(sch):
            loops = sch.get_loops(b)
            if not loops:
                continue
            fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            ext = loop_extent(sch, fused)
            chunk = lanes * 4
            if ext % chunk == 0 and ext > chunk:
                outer, inner = sch.split(fused, [None, chunk])
                io, il = sch.split(inner, [None, lanes])
                sch.unroll(io)
                sch.vectorize(il)
                if self.threads > 1:
                    sch.parallel(outer)
            elif ext % lanes == 0 and ext >= lanes:
                outer, inner = sch.split(fused, [None, lanes])
                sch.vectorize(inner)
        return sch.mod["main"]
