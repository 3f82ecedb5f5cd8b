"""Per-channel window reductions in NCHW: depthwise convolution (3x3/5x5, stride 1/2), max and average pooling.

Each output channel reads only its own input plane, so the padded plane is built per channel (it stays in
L1) and the output row is vectorized along x: acc[x0:x0+NR] accumulates k*k shifted (or strided) input
rows times a broadcast weight (depthwise) or takes their max (max pooling). Rows that are not a multiple of
the vector width are vectorized whole (7, 14, 28 lanes; LLVM splits them into native vectors). Global
pooling (a 1x1 output) reduces a whole plane per channel instead.
"""

from __future__ import annotations

from .blocks import (
    inline_epilogue,
    iter_extents,
    iter_kinds,
    iter_vars,
    linear_coeffs,
    loop_extent,
    reads,
    require,
    split_around_reduction,
    vectorize_inner,
    write_shape,
)


def match_window(sch, main):
    """(kind, data access) for a per-channel window reduction block, kind 'depthwise' or 'pool'; else Decline."""
    kinds = iter_kinds(sch, main)
    acc = reads(sch, main)
    ivs = iter_vars(sch, main)
    ext = iter_extents(sch, main)
    if kinds == "SSSSRRR":
        n, f, y, x, rc, ry, rx = ivs
        require(ext[4] == 1, "more than one input channel per group")
        weight = [a for a in acc if a.is_plain([f, rc, ry, rx])]
        require(len(weight) == 1 and len(acc) == 2, "not a depthwise convolution")
        data = [a for a in acc if a is not weight[0]][0]
        require(linear_coeffs(data.indices[1], [f, rc]) == [1, 1, 0], "channel multiplier != 1")
        return "depthwise", data
    require(kinds == "SSSSRR" and len(acc) == 1, "not a pooling block")
    n, c, y, x, ry, rx = ivs
    data = acc[0]
    require(len(data.indices) == 4, "pooling input is not 4-d")
    require(linear_coeffs(data.indices[1], [c]) == [1, 0], "pooling mixes channels")
    return "pool", data


class WindowReduction:
    name = "window"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def apply(self, func, target):
        parts = split_around_reduction(func)
        sch, main = parts.sch, parts.main
        _, data = match_window(sch, main)
        ivs = iter_vars(sch, main)
        step_x = linear_coeffs(data.indices[3], [ivs[3], ivs[-1]])
        require(step_x is not None, "data index not affine in x")
        lanes = target.vector_lanes_f32
        n_, c_out, h_out, w_out = write_shape(sch, main)
        require(n_ == 1, "batch 1 only")
        epi = inline_epilogue(parts)
        require(iter_extents(sch, epi) == [1, c_out, h_out, w_out], "epilogue shape differs from the output")
        loops = sch.get_loops(main)
        n, c, y, x = loops[:4]
        red = loops[4:]
        if self.threads > 1:
            sch.parallel(c)

        if h_out * w_out == 1:  # global pooling: one plane per channel, summed in place (a few % of a model)
            for b in parts.pre:
                sch.compute_inline(b)
            sch.reverse_compute_at(epi, c, preserve_unit_loops=True)
            return sch.mod["main"]

        # Padded input plane of one channel, rebuilt per channel (L1-resident). With stride s along x, the
        # plane is stored de-interleaved, (h, w % s, w // s), so that each tap reads a contiguous row.
        stride = step_x[0]
        for b in parts.pre:
            buf = sch.get(b).writes[0].source
            if stride > 1 and buf.same_as(data.buffer) and int(buf.shape[3]) % stride == 0:
                sch.transform_layout(b, ("write", 0), lambda n, c_, h, w: (n, c_, h, w % stride, w // stride))
                # iterate the plane in its stored order: contiguous (vector) stores, strided loads
                sch.transform_block_layout(b, lambda n, c_, h, w: (n, c_, h, w % stride, w // stride))
            sch.compute_at(b, c, preserve_unit_loops=True)
            pl = sch.get_loops(b)
            vectorize_inner(sch, pl[-1], loop_extent(sch, pl[-1]), lanes)

        nv = int(target.tiles.get("window_nv", 2))
        rows = int(target.tiles.get("window_rows", 2))
        vec = lanes
        while vec > lanes // 2 and w_out % vec:  # 56 wide on 16 lanes: 8-lane vectors
            vec //= 2
        if w_out % vec == 0:
            v = max(d for d in range(1, nv + 1) if (w_out // vec) % d == 0)
            xo, xv, xl = sch.split(x, [None, v, vec])
        else:  # 7, 14, 28: the whole row is one (non-native) vector, which LLVM splits into native ones
            xo, xv, xl = sch.split(x, [1, 1, w_out])
        r = max(d for d in range(1, rows + 1) if h_out % d == 0)
        yo, yi = sch.split(y, [None, r])
        sch.reorder(yo, xo, *red, yi, xv, xl)
        for lp in red:
            sch.unroll(lp)
        sch.unroll(yi)
        sch.unroll(xv)
        sch.vectorize(xl)
        sch.decompose_reduction(main, red[0])
        sch.reverse_compute_at(epi, xo, preserve_unit_loops=True)
        el = sch.get_loops(epi)
        ext = loop_extent(sch, el[-1])
        if ext % lanes == 0:
            vectorize_inner(sch, el[-1], ext, lanes)
        else:
            sch.vectorize(el[-1])
        return sch.mod["main"]
