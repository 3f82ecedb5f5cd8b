"""Batch-1 dense layers (ONNX Gemm / MatMul, torch Linear): y[n] = sum_k x[k] * W[k, n] (+ epilogue).

Relax folds the transpose of a constant weight, so W arrives as [K, N] with N contiguous. Per tile of
NR = nv * lanes outputs: nv vector accumulators, one broadcast x[k] and nv contiguous weight loads per k.
The layer streams its weights once: it is memory-bound, the tile only has to keep the loads contiguous.
"""

from __future__ import annotations

from .blocks import (
    inline_epilogue,
    iter_extents,
    iter_kinds,
    iter_vars,
    loop_extent,
    reads,
    require,
    split_around_reduction,
    vectorize_inner,
    write_shape,
)


class MatmulRows:
    name = "matmul"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def apply(self, func, target):
        parts = split_around_reduction(func)
        sch, main = parts.sch, parts.main
        require(iter_kinds(sch, main) == "SSR", "not a 2-d matmul block")
        i, j, k = iter_vars(sch, main)
        acc = reads(sch, main)
        require(len(acc) == 2, "matmul reads two operands")
        weight = [a for a in acc if a.is_plain([k, j])]
        require(len(weight) == 1, "weight not laid out [K, N]")
        lanes = target.vector_lanes_f32
        m, n_out = write_shape(sch, main)
        require(m == 1, "batch 1 only")
        while lanes > 1 and n_out % lanes:  # 1000 outputs on 16 lanes: 8-lane vectors; 10 outputs: 2
            lanes //= 2
        epi = inline_epilogue(parts)
        require(iter_extents(sch, epi) == [1, n_out], "epilogue shape differs from the output")
        nv_max = int(target.tiles.get("matmul_nv", 4))
        nv = max(d for d in range(1, nv_max + 2) if (n_out // lanes) % d == 0)
        li, lj, lk = sch.get_loops(main)
        jo, jv, jl = sch.split(lj, [None, nv, lanes])
        sch.reorder(li, jo, lk, jv, jl)
        if self.threads > 1:
            sch.parallel(jo)
        sch.unroll(jv)
        if lanes > 1:
            sch.vectorize(jl)
        sch.decompose_reduction(main, lk)
        sch.reverse_compute_at(epi, jo, preserve_unit_loops=True)
        el = sch.get_loops(epi)
        if lanes > 1:
            vectorize_inner(sch, el[-1], loop_extent(sch, el[-1]), lanes)
        return sch.mod["main"]
