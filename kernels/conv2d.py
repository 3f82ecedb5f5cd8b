"""Dense NCHW convolution (groups=1: 1x1, kxk, any stride, the 3-channel first layer) as a register-tiled GEMM.

View: out[f, p] = sum_k W[f, k] * col[k, p], with p = y*W_out + x the output pixel and k = (c, ry, rx).
Schedule, per tile of NR = nv * lanes contiguous output pixels (outer loop):
  1. pack the im2col tile col[k, p0:p0+NR] into a small buffer, reused by every output-channel block
     (kxk: from a padded copy of the input made once per call, de-interleaved along x for stride 2;
     pointwise stride 1 with whole tiles reads the activation in place, no pack);
  2. for each block of MR output channels: MR x NR accumulators in registers, k innermost-but-two,
     one broadcast weight and nv vector loads per k, MR * nv FMAs;
  3. the fused epilogue (bias, activation, residual...) on the MR x NR tile, vectorized, stored to the output.
The pixel count is padded to a multiple of NR (pad_einsum): the tail tile computes zeros that are never stored,
so no loop carries a predicate (a predicated loop would not vectorize).
"""

from __future__ import annotations

from tvm import s_tir

from .blocks import (
    inline_epilogue,
    iter_extents,
    iter_kinds,
    iter_vars,
    linear_coeffs,
    loop_extent,
    read_index,
    reads,
    require,
    split_around_reduction,
    vectorize_inner,
    write_shape,
)


def match_conv2d(sch: s_tir.Schedule, main):
    """(data access, weight access) of an NCHW groups=1 convolution block, or Decline."""
    require(iter_kinds(sch, main) == "SSSSRRR", "not a 2-d convolution block")
    n, f, y, x, rc, ry, rx = iter_vars(sch, main)
    acc = reads(sch, main)
    require(len(acc) == 2, "convolution reads data and weight")
    weight = [a for a in acc if a.is_plain([f, rc, ry, rx])]
    require(len(weight) == 1, "weight not indexed (f, c, ry, rx)")
    data = [a for a in acc if a is not weight[0]][0]
    require(len(data.indices) == 4, "data is not 4-d")
    require(linear_coeffs(data.indices[1], [rc, f]) == [1, 0, 0], "grouped convolution")
    sy = linear_coeffs(data.indices[2], [y, ry])
    sx = linear_coeffs(data.indices[3], [x, rx])
    require(sy is not None and sx is not None, "data index not affine")
    return data, weight[0]


def choose_tile(target, n_out: int, pixels: int, row: int | None = None, in_place: bool = False) -> tuple[int, int]:
    """(mr output channels, nv vectors of pixels) for the register tile.

    The descriptor's [tiles] give the preferred tile (conv_mr x conv_nv vectors) and the accumulator budget
    (conv_acc_regs). Other shapes within the budget compete on a small cost model per reduction step:
    mr*nv FMAs against mr broadcasts + nv loads and the FMA latency (at least 4 cycles per chain), counting
    only useful work: the pixel axis is padded to whole tiles. row: output width of a kxk convolution (None
    for pointwise). in_place: a pointwise stride-1 layer, read without a pack when tiles are whole.
    mr divides the channel count, except for the preferred mr on the in-place path, where a channel tail
    (an unrolled, predicated block) measured faster than a smaller tile (6x2 vs 4x2: -12% on AVX2).
    conv_exact (set by `edgesparse tune` with a measured conv_mr x conv_nv) skips the cost model.
    """
    lanes = target.vector_lanes_f32
    budget = int(target.tiles.get("conv_acc_regs", 12))
    mr0 = int(target.tiles.get("conv_mr", 6))
    nv0 = int(target.tiles.get("conv_nv", 2))

    def channels(limit: int) -> int:
        # mr divides n_out: a channel tail would put conditional accumulator updates in the k loop, and
        # LLVM then keeps the tile in memory (measured 2x slower on 1024x1024 @7x7)
        return max(d for d in range(1, max(1, limit) + 1) if n_out % d == 0)

    # mr <= 12: beyond, the broadcasts of one tile row outnumber what the load ports hide
    candidates = [(channels(mr0), nv0)] + [(channels(min(12, budget // nv)), nv) for nv in (1, 2, 3, 4)]
    if in_place and pixels % (nv0 * lanes) == 0 and n_out > mr0:
        candidates.insert(0, (mr0, nv0))
    if target.tiles.get("conv_exact"):  # a measured tile (edgesparse tune) overrules the cost model
        return candidates[0]
    best, best_score = candidates[0], -1.0
    for mr, nv in candidates:
        nr = nv * lanes
        useful = pixels / (-(-pixels // nr) * nr) * n_out / (-(-n_out // mr) * mr)
        cycles = max(mr * nv / 2.0, (mr + nv) / 2.0, 5.0)
        score = useful * mr * nv / cycles
        if nv == nv0 and mr in (mr0, channels(mr0)):
            score *= 1.05  # measured best on full tiles
        if pixels % nr and row is None:
            score *= 0.75  # a padded tail also forces the im2col pack, which pointwise layers avoid otherwise
        if row is not None and row % nr and nr % row:
            score *= 0.9  # pixel tiles that straddle output rows make the im2col pack gather
        if score > best_score + 1e-9:
            best, best_score = (mr, nv), score
    return best


class Conv2dGemm:
    """Rule for NCHW convolutions with groups=1 (1x1, 3x3 stride 1/2, 7x7, 3-channel first layer)."""

    name = "conv2d"

    def __init__(self, threads: int = 1, pack_at_tile: bool = True, pad_at_root: bool = True):
        self.threads = threads
        self.pack_at_tile = pack_at_tile
        self.pad_at_root = pad_at_root

    def apply(self, func, target):
        parts = split_around_reduction(func)
        sch, main = parts.sch, parts.main
        data, _ = match_conv2d(sch, main)
        lanes = target.vector_lanes_f32
        _, n_out, h_out, w_out = write_shape(sch, main)
        red = iter_extents(sch, main)
        require(red[0] == 1, "batch 1 only")
        pixels = h_out * w_out
        in_shape = [int(v) for v in data.buffer.shape]
        ivs = iter_vars(sch, main)
        step_y = linear_coeffs(data.indices[2], [ivs[2], ivs[5]])
        step_x = linear_coeffs(data.indices[3], [ivs[3], ivs[6]])
        pointwise_s1 = red[5] == red[6] == 1 and in_shape[2:] == [h_out, w_out] and step_y[0] == step_x[0] == 1
        mr, nv = choose_tile(target, n_out, pixels, w_out if red[5] * red[6] > 1 else None, pointwise_s1)
        nr = nv * lanes
        direct = pointwise_s1 and pixels % nr == 0
        epi = inline_epilogue(parts)
        require(iter_extents(sch, epi) == [1, n_out, h_out, w_out], "epilogue shape differs from the output")

        # Output pixels as one axis p (the tile buffer and both blocks; the output keeps its 4-d shape).
        sch.transform_layout(main, ("write", 0), lambda n, c, y, x: (n, c, y * w_out + x))
        sch.transform_block_layout(main, lambda n, c, y, x, rc, ry, rx: (n, c, y * w_out + x, rc, ry, rx))
        sch.transform_block_layout(epi, lambda n, c, y, x: (n, c, y * w_out + x))

        if direct:
            # Pointwise, stride 1, whole tiles: read the activation in place (pixel axis already contiguous).
            for b in parts.pre:
                sch.compute_inline(b)
            return self._tile(sch, main, epi, None, mr, nv, lanes, pixels % nr == 0)

        # im2col: the data read becomes a buffer indexed by block iterators only (an einsum), laid out
        # (c, ry, rx, p) so that the pixel axis is contiguous; the padding block is folded into it.
        col = sch.reindex(main, ("read", read_index(sch, main, data.buffer)))
        col_buf = sch.get(col).writes[0].source
        if len(col_buf.shape) == 5:
            col_layout = lambda n, p, c, ry, rx: (n, c, ry, rx, p)  # noqa: E731
        else:  # 1x1: reindex keeps only the iterators the access uses
            require(len(col_buf.shape) == 3, "unexpected im2col shape")
            col_layout = lambda n, p, c: (n, c, p)  # noqa: E731
        sch.transform_layout(main, ("read", read_index(sch, main, col_buf)), col_layout)
        sch.transform_block_layout(col, col_layout)  # pack in storage order: pixels innermost, vector stores
        padded_input = None
        for b in parts.pre:
            if self.pad_at_root and red[5] * red[6] > 1 and sch.get(b).writes[0].source.same_as(data.buffer):
                # Built once per call; the pack then reads it without conditions. With stride s along x it is
                # stored de-interleaved, (h, w % s, w // s), so the pack reads contiguous runs of pixels.
                padded_input = b
                wp = int(data.buffer.shape[3])
                if step_x[0] > 1 and wp % step_x[0] == 0:
                    s_ = step_x[0]
                    sch.transform_layout(b, ("write", 0), lambda n, c, h, w: (n, c, h, w % s_, w // s_))
                    sch.transform_block_layout(b, lambda n, c, h, w: (n, c, h, w % s_, w // s_))
            else:
                sch.compute_inline(b)
        if pixels % nr:
            # Pad the pixel axis to whole tiles: a zero-filled im2col tail, an un-pad copy folded into the epilogue.
            sch.pad_einsum(main, [1, 1, nr, 1, 1, 1])
            sch.compute_inline(col)
            col = sch.get_producers(main)
            col = [b for b in col if len(iter_extents(sch, b)) == len(col_buf.shape)][0]
            for b in sch.get_consumers(main):
                if not b.same_as(epi):
                    sch.compute_inline(b)

        out = self._tile(sch, main, epi, col, mr, nv, lanes, pixels % nr == 0)
        if padded_input is not None:
            pl = sch.get_loops(padded_input)
            vectorize_inner(sch, pl[-1], loop_extent(sch, pl[-1]), lanes)
            out = sch.mod["main"]
        return out

    def _tile(self, sch, main, epi, col, mr, nv, lanes, whole_tiles):
        loops = sch.get_loops(main)
        require(len(loops) == 6, "unexpected loop nest")
        n, f, p, rc, ry, rx = loops
        fo, fi = sch.split(f, [None, mr])
        po, pv, pl = sch.split(p, [None, nv, lanes])
        sch.reorder(po, fo, rc, ry, rx, fi, pv, pl)
        if self.threads > 1:
            sch.parallel(po)
        if col is not None:
            if self.pack_at_tile:
                sch.compute_at(col, po, preserve_unit_loops=True)
            col_loops = sch.get_loops(col)
            vectorize_inner(sch, col_loops[-1], loop_extent(sch, col_loops[-1]), lanes)

        sch.unroll(fi)
        sch.unroll(pv)
        sch.vectorize(pl)
        if not whole_tiles:
            # The epilogue reads a padded tile under a pixel predicate (scalar loads). Accumulate in a separate
            # local tile, only ever touched by whole vectors, so that LLVM keeps it in registers, and copy it out.
            acc = sch.cache_write(main, 0, "local")
            sch.reverse_compute_at(acc, fo, preserve_unit_loops=True)
            a_loops = sch.get_loops(acc)
            vectorize_inner(sch, a_loops[-1], loop_extent(sch, a_loops[-1]), lanes)
        sch.decompose_reduction(main, rc)
        sch.reverse_compute_at(epi, fo, preserve_unit_loops=True)
        e_loops = sch.get_loops(epi)
        e_inner = e_loops[-1]
        ext = loop_extent(sch, e_inner)
        if whole_tiles:
            vectorize_inner(sch, e_inner, ext, lanes)
        return sch.mod["main"]


__all__ = ["Conv2dGemm", "choose_tile", "match_conv2d"]
