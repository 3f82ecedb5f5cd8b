"""f32 SpMM kernel template in TIR: Y[Cout, P] = clamp(W_sparse[Cout, Cin] x X[Cin, P] + bias).

One template generates every variant; a variant is named by what it is, ``f32_spmm_<MR>x<block>_<epilogue>``
(e.g. ``f32_spmm_32x4_relu``): MR contiguous pixels per tile (vectorised, MR from the target descriptor), an
output-channel block of 1, 2 or 4, and the fused bias + clamp epilogue (``linear``, ``relu``, ``relu6`` or
``minmax`` for any other clip). The vector width is not chosen here: LLVM splits an MR-lane vector into the
target's registers (8 lanes AVX2, 4 lanes NEON / SIMD128).

Loop order (ground-truth.md, "naive CSR kernel"): pixel tiles outside, output blocks inside, so one
``Cin x MR`` activation tile is reused from L1 by every output block before the next tile is touched. Per
block the accumulator tile lives in the output rows ``Y[block rows, tile]``: the function is marked
``tirx.noalias`` so LLVM keeps those ``block x MR`` values in registers across the nonzero loop (checked on the
objects: no stores inside the loop) and no local buffer - hence no ``__TVMBackendAllocWorkspace`` on wasm - is
needed.

A tile is walked in one pass over the nonzeros whatever its width: its pixels are cut into pieces LLVM codes
well (whole vectors of the target's lanes, then power-of-two pieces below a vector: 49 = 3x16 + 1 on AVX-512),
each piece its own accumulators, all updated per nonzero. ``H*W % MR`` remainder pixels join the last full tile
when the accumulators still fit the descriptor's budget for it (``spmm_join_registers``, by default the
accumulator budget; 196 = 64 + 64 + 68: three passes, not four;
49 = one pass of 49, not 32 + 16 + 1), else they form one narrower tile. Every pass costs its index and weight
loads per nonzero whatever its width, so fewer passes is the gain (measured below).

Inside a block, nonzeros are taken ``unroll`` at a time and summed as a tree before the accumulator update
(``acc + (w0*x0 + w1*x1)``), so the loop-carried chain is one add per group. With ``n_chunks > 1`` (packed with
input-channel chunks, see pack.py) the tile walks chunk by chunk, all blocks per chunk: bias at the first
chunk, clamp at the last, accumulators back in ``Y`` between chunks. The first and last chunks are peeled off
the chunk loop so bias and clamp stay in registers. Default ``unroll``: 2 for a whole-channel kernel, 1 for a
chunked one, whose ~13-40 nonzeros per (block, chunk) pay a pair loop's odd remainder more often (AVX-512,
MR 64, ms, unroll 2 -> 1: 1024x1024x49 at 90% in chunks of 128 0.139 -> 0.129, 512x512x196 0.107 -> 0.101;
whole kernels 1-3% slower with 1). At 70% the loop shape does not matter: unroll 1, 2 or 4 are within 2% of
each other on MobileNetV1's layers, and a second accumulator tile for every other nonzero (two FMA chains per
vector, kept in registers: checked on the object) measured the same (512x512x196 0.222 vs 0.224 ms, 1024x1024x49
0.276 vs 0.278). The kernel is bound by its vector loads + FMAs, about one per cycle on this host (AVX2 vectors
take 1.75x as long), not by the chains' latency; blocks of 2 at 70% (fill 0.59: fewer loads, 1.7x the FMAs) are
10% slower. ``threads > 1`` makes the loop over full
pixel tiles ``T.parallel`` (the object then calls ``__TVMBackendParallelLaunch``); remainder tiles stay serial.

Signature of every variant (arguments in this order, see ``pack.py`` for the format):
``x`` (input, any shape holding Cin*P floats, CHW), ``values`` f32, ``segment_ptr`` i32, ``channel_index`` i16/i32,
``y`` (output, any shape holding Cout*P floats).
With ``prefetch`` (variant suffix ``_prfm``) each serial tile prefetches the next tile's rows: its activations as
the copy into the scratch tile reads the current ones (read in place: all of them as the tile starts), and each
block's output rows before the block's nonzeros
(kernels/spmm/config.py ``spmm_prefetch_for`` says when and why).
With ``eo_width`` (variant suffix ``_eo``) the output's rows of that many pixels are stored even columns first, then
odd: the input a stride-2 depthwise conv fused after the next 1x1 wants (kernels/spmm_dwconv.py ``eo_input``),
split here for this layer's channels rather than there for the next one's, several times as many. The
accumulators are then a local tile (their places in ``y`` are not the tile's, so they cannot live there) that
LLVM keeps in registers, and each vector is split into its even and odd halves as it is stored (two shuffles on
AVX2, where a plain store takes none): MobileNetV2-p85's 32->16 @112 alone 0.156 -> 0.133 ms, 144->24 @56 with its
residual 0.285 -> 0.302. Whole vectors of one row only (``spmm_eo_rows_for``).
With ``residual`` (variant ``f32_spmm_<MR>x<block>_add_<epilogue>``) a tensor of the output's shape comes before
``y`` and is added at the last chunk, before the clamp: a skip connection's Add (MobileNetV2's 10, measured in
the model at 0.022 ms as separate kernels) costs a load per output instead of a pass of its own.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass

from tvm.script import tirx as T

from ..pieces import each_piece, tile_pieces
from .pack import PackedSpmm

EPILOGUES = {"linear": None, "relu": (0.0, math.inf), "relu6": (0.0, 6.0)}


def epilogue_name(clamp: tuple[float, float] | None) -> str:
    if clamp is None or (clamp[0] == -math.inf and clamp[1] == math.inf):
        return "linear"
    for name, c in EPILOGUES.items():
        if c is not None and tuple(float(v) for v in clamp) == c:
            return name
    return "minmax"


def clamp_value(value, clamp: tuple[float, float] | None):
    """``value`` (a TIR expression) clamped to ``clamp`` = (lo, hi): max with lo, then min with hi, each only when
    finite. The fused epilogue every template applies to its accumulators (``epilogue_name`` names it)."""
    lo, hi = clamp if clamp is not None else (-math.inf, math.inf)
    if lo != -math.inf:
        value = T.max(value, T.float32(lo))
    if hi != math.inf:
        value = T.min(value, T.float32(hi))
    return value


def prefetch_line(buf, index, last, write: bool):
    """Prefetch (into L1) the cache line holding ``buf[min(index, last)]``: a TIR expression for ``T.evaluate``.
    The clamp keeps the address inside the buffer where "the next tile" runs past its end."""
    return T.call_intrin("void", "tirx.prefetch", T.address_of(buf[T.min(index, last)]), int(write), 3, 1)


@dataclass(frozen=True)
class SpmmKernelSpec:
    """Everything a variant is specialised on (shapes are static: one PrimFunc per layer)."""

    cin: int
    cout: int
    pixels: int  # H*W (1 for a fully-connected layer)
    block: int
    mr: int
    n_values: int
    n_index: int
    index_dtype: str
    index_stride: int = 1  # elements per input channel folded into the packed offsets (packed.stride)
    chunk_local: bool = False  # offsets count from their input-channel chunk's first channel
    n_chunks: int = 1  # input-channel chunks of the packed format (segment_ptr has n_blocks*n_chunks+1 entries)
    chunk: int = 0  # input channels per chunk (0: cin)
    clamp: tuple[float, float] | None = None  # (lo, hi); None = no clamp
    threads: int = 1
    unroll: int = 0  # nonzeros summed per accumulator update (1, 2 or 4; 0: 2 whole, 1 with chunks)
    lanes: int = 4  # f32 lanes of the target's vectors: how tiles are cut into pieces
    acc_registers: int = 8  # vector registers the accumulators may use (descriptor spmm_acc_registers)
    join_registers: int = 0  # ... a tile with the remainder joined may use (spmm_join_registers; 0: acc_registers)
    pack_tile: bool = False  # copy each pixel tile's activations into a contiguous, aligned scratch tile
    residual: bool = False  # add a residual tensor of the output's shape (an argument before y) before the clamp
    prefetch: bool = False  # prefetch the next pixel tile's activations and output rows (variant suffix _prfm)
    eo_width: int = 0  # output rows of this many pixels stored even columns first, then odd (variant _eo; 0: as is)
    in_shape: tuple[int, ...] | None = None  # default (Cin, P)
    out_shape: tuple[int, ...] | None = None  # default (Cout, P)

    @classmethod
    def for_packed(cls, packed: PackedSpmm, pixels: int, mr: int, **kw) -> "SpmmKernelSpec":
        return cls(
            cin=packed.cin,
            cout=packed.cout,
            pixels=pixels,
            block=packed.block,
            mr=fit_tile(mr, pixels),
            n_values=int(packed.values.size),
            n_index=int(packed.channel_index.size),
            index_dtype=packed.index_dtype,
            index_stride=packed.stride,
            chunk_local=packed.chunk_local,
            n_chunks=packed.n_chunks,
            chunk=packed.chunk,
            **kw,
        )

    @property
    def variant(self) -> str:
        add = "_add" if self.residual else ""
        prfm = "_prfm" if self.prefetch else ""
        eo = "_eo" if self.eo_width else ""
        return f"f32_spmm_{self.mr}x{self.block}{add}_{epilogue_name(self.clamp)}{eo}{prfm}"


def fit_tile(mr: int, pixels: int) -> int:
    """MR, or for fewer pixels than MR the largest power of two <= pixels."""
    if mr <= pixels:
        return mr
    return 1 << (pixels.bit_length() - 1)


def accumulators(width: int, lanes: int) -> int:
    """Vector registers (or parts of one) a ``width``-pixel tile row accumulates in."""
    return sum(n for _, n, _ in tile_pieces(width, lanes))


@dataclass(frozen=True)
class TilePlan:
    """How a kernel walks the pixels: ``n_uniform`` tiles of ``mr`` (the parallel loop), then ``extra`` tiles
    ``(start, width)`` (serial): the remainder, joined to the last full tile when its accumulators fit."""

    mr: int
    n_uniform: int
    extra: tuple[tuple[int, int], ...]

    @property
    def widest(self) -> int:
        return max([self.mr] + [w for _, w in self.extra])

    def row_stride(self, lanes: int) -> int:
        """Floats per channel row of a packed scratch tile: the widest tile, whole vectors (aligned rows)."""
        return -(-self.widest // lanes) * lanes


def plan_tiles(pixels: int, mr: int, lanes: int, rows: int, acc_registers: int, threads: int,
               join_registers: int = 0) -> TilePlan:
    """The tiles of a kernel over ``pixels`` with blocks of ``rows`` output channels (see the module doc): the
    remainder joins the last full tile when the joined tile's accumulators fit ``join_registers`` (0: the
    ``acc_registers`` budget). With threads the remainder stays a tile of its own: joining it would lengthen one
    task of the parallel loop."""
    mr = fit_tile(mr, pixels)
    n = pixels // mr
    tail = pixels - n * mr
    if tail == 0:
        return TilePlan(mr, n, ())
    budget = join_registers or acc_registers
    if threads == 1 and accumulators(mr + tail, lanes) * rows <= max(budget, accumulators(mr, lanes) * rows):
        return TilePlan(mr, n - 1, (((n - 1) * mr, mr + tail),))
    return TilePlan(mr, n, ((n * mr, tail),))


def make_spmm_kernel(spec: SpmmKernelSpec, name: str | None = None):
    """Build the TIR PrimFunc of ``spec`` (global symbol ``name`` or ``spec.variant``)."""
    cin, cout, npix, block, lanes = spec.cin, spec.cout, spec.pixels, spec.block, spec.lanes
    assert block in (1, 2, 4) and spec.mr >= 1 and npix >= 1
    plan = plan_tiles(npix, spec.mr, lanes, block, spec.acc_registers, spec.threads, spec.join_registers)
    mr, n_tiles = plan.mr, plan.n_uniform
    assert len(plan.extra) <= 1
    tail_p0, tail_w = plan.extra[0] if plan.extra else (0, 0)
    n_full = cout // block
    n_rem = cout - n_full * block
    n_blocks = n_full + n_rem
    in_shape = tuple(spec.in_shape or (cin, npix))
    out_shape = tuple(spec.out_shape or (cout, npix))
    assert math.prod(in_shape) == cin * npix and math.prod(out_shape) == cout * npix
    clamped = epilogue_name(spec.clamp) != "linear"
    residual = spec.residual
    idx_dtype = spec.index_dtype
    parallel = spec.threads > 1
    n_chunks = spec.n_chunks
    chunk = spec.chunk or cin
    assert n_chunks == -(-cin // chunk), (n_chunks, cin, chunk)
    unroll = spec.unroll or (2 if n_chunks == 1 else 1)
    assert unroll in (1, 2, 4), unroll
    pack = spec.pack_tile
    # Where nonzero k's activations start: ``scale * Idx[k] + shift`` in the source buffer (shift per chunk).
    # Direct: Xf (stride H*W), offsets absolute. Packed tile: Xt (stride row_stride), chunk c's rows only.
    row_stride = plan.row_stride(lanes) if pack else npix
    assert row_stride % spec.index_stride == 0, (row_stride, spec.index_stride)
    scale = row_stride // spec.index_stride
    assert pack or not spec.chunk_local, "chunk-local offsets need a packed tile"
    chunk_shift = 0 if spec.chunk_local else -chunk * row_stride  # times c; packed tile only
    tile_elems = chunk * row_stride

    full_pieces = tile_pieces(mr, lanes)
    # eo: the output rows (eo pixels each) are stored de-interleaved, even columns then odd, for a stride-2
    # consumer (kernels/spmm_dwconv.py eo_input). The accumulators then live in a local tile Acc, not in Y (their
    # places in Y are not the tile's), and each vector of lanes pixels - whole vectors of one row - is split into
    # its even and odd halves as it is stored.
    eo = spec.eo_width
    split = eo > 0  # a Python bool: TVMScript takes `if <int>` for a TIR condition
    acc_stride = plan.widest
    if eo:
        assert n_chunks == 1 and lanes >= 2 and eo % lanes == 0 and npix % eo == 0, (n_chunks, lanes, eo, npix)
        assert mr % lanes == 0 and tail_w % lanes == 0, (mr, tail_w, lanes)
    evens = [2 * i for i in range(lanes // 2)]
    odds = [2 * i + 1 for i in range(lanes // 2)]

    def eo_at(row, p):
        # where the even half of the vector at pixel p of output row ``row`` goes (the odd half: eo // 2 further)
        return row * npix + p - T.floormod(p, eo) + T.floordiv(T.floormod(p, eo), 2)

    def block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at, weight_at, p0, k):
        # the accumulators of output rows row0 .. row0 + rows at tile p0: in Y, or (eo) in Acc
        if eo:
            return Block(Src, shift, Wv, Idx, Acc, Rf, row0, rows, bias_at, weight_at, p0, k, 0, acc_stride, Yf)
        return Block(Src, shift, Wv, Idx, Yf, Rf, row0, rows, bias_at, weight_at, p0, k, row0 * npix + p0, npix, Yf)
    # prefetch: one instruction per cache line (16 floats) of the next tile's rows (the last tile's "next" rows
    # are clamped to the buffer's last line: harmless)
    prefetch = spec.prefetch and not parallel
    pf_lines = -(-mr // 16)
    pf_lines_eo = -(-mr // 32)  # eo: half the tile's outputs in each half row
    tail_pieces = tile_pieces(tail_w, lanes) if tail_w else []

    # --- one statement kind over one piece (q0: the piece's first pixel in the tile, nq vectors of vw lanes);
    # b: the Block being computed, k: its nonzero ---

    @T.macro
    def init_piece(b, q0, nq, vw):
        for j in T.unroll(b.rows):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i] = b.Wv[b.bias_at + j]

    @T.macro
    def update1_piece(b, q0, nq, vw):
        for j in T.unroll(b.rows):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i] = b.Yf[
                        b.ybase + j * b.ystride + q0 + q * vw + i] + (
                        b.Wv[b.weight_at + b.k * block + j]
                        * b.Src[scale * T.Cast("int32", b.Idx[b.k]) + b.shift + q0 + q * vw + i]
                    )

    @T.macro
    def update2_piece(b, q0, nq, vw):
        # two nonzeros summed before they reach the accumulator: its dependency chain is one add per pair
        for j in T.unroll(b.rows):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i] = b.Yf[
                        b.ybase + j * b.ystride + q0 + q * vw + i] + (
                        b.Wv[b.weight_at + b.k * block + j]
                        * b.Src[scale * T.Cast("int32", b.Idx[b.k]) + b.shift + q0 + q * vw + i]
                        + b.Wv[b.weight_at + (b.k + 1) * block + j]
                        * b.Src[scale * T.Cast("int32", b.Idx[b.k + 1]) + b.shift + q0 + q * vw + i]
                    )

    @T.macro
    def update4_piece(b, q0, nq, vw):
        for j in T.unroll(b.rows):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i] = b.Yf[
                        b.ybase + j * b.ystride + q0 + q * vw + i] + (
                        (
                            b.Wv[b.weight_at + b.k * block + j]
                            * b.Src[scale * T.Cast("int32", b.Idx[b.k]) + b.shift + q0 + q * vw + i]
                            + b.Wv[b.weight_at + (b.k + 1) * block + j]
                            * b.Src[scale * T.Cast("int32", b.Idx[b.k + 1]) + b.shift + q0 + q * vw + i]
                        )
                        + (
                            b.Wv[b.weight_at + (b.k + 2) * block + j]
                            * b.Src[scale * T.Cast("int32", b.Idx[b.k + 2]) + b.shift + q0 + q * vw + i]
                            + b.Wv[b.weight_at + (b.k + 3) * block + j]
                            * b.Src[scale * T.Cast("int32", b.Idx[b.k + 3]) + b.shift + q0 + q * vw + i]
                        )
                    )

    @T.macro
    def finish_piece(b, q0, nq, vw):
        # the last chunk's epilogue: + the residual (a skip connection's tensor), then the clamp
        for j in T.unroll(b.rows):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    if residual:
                        b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i] = clamp_value(
                            b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i]
                            + b.Rf[(b.row0 + j) * npix + b.p0 + q0 + q * vw + i], spec.clamp)
                    else:
                        b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i] = clamp_value(
                            b.Yf[b.ybase + j * b.ystride + q0 + q * vw + i], spec.clamp)

    @T.macro
    def store_eo_piece(b, q0, nq, vw):
        # eo: the finished accumulators to Y, each vector's even lanes at its row's even half, odd lanes at the odd
        for j in T.unroll(b.rows):
            for q in T.unroll(nq):
                b.Out[T.ramp(eo_at(b.row0 + j, b.p0 + q0 + q * vw), 1, vw // 2)] = T.Shuffle(
                    [b.Yf[T.ramp(b.ybase + j * b.ystride + q0 + q * vw, 1, vw)]], evens)
                b.Out[T.ramp(eo_at(b.row0 + j, b.p0 + q0 + q * vw) + eo // 2, 1, vw // 2)] = T.Shuffle(
                    [b.Yf[T.ramp(b.ybase + j * b.ystride + q0 + q * vw, 1, vw)]], odds)

    @T.macro
    def copy_piece(cp, q0, nq, vw):
        for ch in range(cp.rows_in_chunk):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    cp.Xt[ch * row_stride + q0 + q * vw + i] = cp.Xf[
                        (cp.c * chunk + ch) * npix + cp.p0 + q0 + q * vw + i]
            if prefetch and q0 == 0:
                # the same row of the next tile, wanted one tile from now
                for ln in T.unroll(pf_lines):
                    T.evaluate(prefetch_line(cp.Xf, (cp.c * chunk + ch) * npix + cp.p0 + mr + ln * 16,
                                             cin * npix - 1, write=False))

    # --- one output block over one tile: every piece updated per nonzero (one pass) ---

    @T.macro
    def block_rows(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at, weight_at, kb, ke, p0, first, last,
                   pieces):
        if prefetch and first:
            # this block's output rows in the next tile: spread over the tile's blocks, stored one tile from now
            for j in T.unroll(rows):
                if split:
                    for ln in T.unroll(pf_lines_eo):
                        T.evaluate(prefetch_line(Yf, eo_at(row0 + j, p0 + mr) + ln * 16, cout * npix - 1,
                                                 write=True))
                        T.evaluate(prefetch_line(Yf, eo_at(row0 + j, p0 + mr) + eo // 2 + ln * 16,
                                                 cout * npix - 1, write=True))
                else:
                    for ln in T.unroll(pf_lines):
                        T.evaluate(prefetch_line(Yf, (row0 + j) * npix + p0 + mr + ln * 16, cout * npix - 1,
                                                 write=True))
        if first:
            each_piece(init_piece, pieces,
                       block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at, weight_at, p0, 0))
        if unroll == 2:
            for kk in range((ke - kb) // 2):
                each_piece(update2_piece, pieces, block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at,
                                                           weight_at, p0, kb + 2 * kk))
        if unroll == 4:
            for kk in range((ke - kb) // 4):
                each_piece(update4_piece, pieces, block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at,
                                                           weight_at, p0, kb + 4 * kk))
        for k in range(kb + (ke - kb) // unroll * unroll if unroll > 1 else kb, ke):
            each_piece(update1_piece, pieces,
                       block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at, weight_at, p0, k))
        if (clamped or residual) and last:
            each_piece(finish_piece, pieces,
                       block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at, weight_at, p0, 0))
        if split and last:
            each_piece(store_eo_piece, pieces,
                       block_of(Src, shift, Wv, Idx, Yf, Rf, Acc, row0, rows, bias_at, weight_at, p0, 0))

    @T.macro
    def all_blocks(Src, shift, Wv, Ptr, Idx, Yf, Rf, Acc, c, first, last, p0, pieces):
        # chunk c's segments (pack.py): block g's columns are Ptr[c * n_blocks + g] .. Ptr[c * n_blocks + g + 1];
        # biases first in Wv (output channel o at o), then column k's block values at cout + block * k
        for b in range(n_full):
            block_rows(
                Src, shift, Wv, Idx, Yf, Rf, Acc, b * block, block, b * block, cout,
                Ptr[c * n_blocks + b], Ptr[c * n_blocks + b + 1], p0, first, last, pieces,
            )
        for r in range(n_rem):
            block_rows(
                Src, shift, Wv, Idx, Yf, Rf, Acc, n_full * block + r, 1, n_full * block + r, cout,
                Ptr[c * n_blocks + n_full + r], Ptr[c * n_blocks + n_full + r + 1], p0, first, last, pieces,
            )

    @T.macro
    def chunk_step(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, c, first, last, p0, pieces):
        if pack:
            # the tile's chunk c copied to rows of row_stride floats in Xt: aligned (no load splits a cache
            # line; CHW rows of 14x14 or 7x7 floats are not 64-byte multiples), contiguous
            each_piece(copy_piece, pieces, Copy(Xf, Xt, c, T.min(chunk, cin - c * chunk), p0))
            all_blocks(Xt, c * chunk_shift, Wv, Ptr, Idx, Yf, Rf, Acc, c, first, last, p0, pieces)
        else:
            all_blocks(Xf, p0, Wv, Ptr, Idx, Yf, Rf, Acc, c, first, last, p0, pieces)

    @T.macro
    def pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, p0, pieces):
        # chunk c of the input channels for every output block, then chunk c + 1: the chunk's activation tile
        # is read by all blocks while it is in L1; accumulators go back to Y between chunks. The first and the
        # last chunk are peeled off the loop so that "first" (bias) and "last" (clamp) are constants: inside a
        # loop they were tests on c, and the bias and the clamp went through Y in passes of their own.
        if prefetch and not pack:
            # in place: the next tile's activation rows, one tile ahead
            for ch in range(cin):
                for ln in T.unroll(pf_lines):
                    T.evaluate(prefetch_line(Xf, ch * npix + p0 + mr + ln * 16, cin * npix - 1, write=False))
        chunk_step(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, 0, True, n_chunks == 1, p0, pieces)
        if n_chunks > 2:
            # from 0: written as range(1, n_chunks - 1) this loop gave wrong sums after TVM 0.27 lowered it
            # (tests/test_spmm_kernels.py caught it with three chunks)
            for m in range(n_chunks - 2):
                chunk_step(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, m + 1, False, False, p0, pieces)
        if n_chunks > 1:
            chunk_step(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, n_chunks - 1, False, True, p0, pieces)

    @T.macro
    def task_tile(Xf, Xs, Wv, Ptr, Idx, Yf, Rf, p0):
        # a parallel task's tile, with (eo) an accumulator tile of its own
        if split:
            Ap = T.decl_buffer((block * acc_stride,), "float32", scope="local")
            pixel_tile(Xf, Xs, Wv, Ptr, Idx, Yf, Rf, Ap, p0, full_pieces)
        else:
            pixel_tile(Xf, Xs, Wv, Ptr, Idx, Yf, Rf, Yf, p0, full_pieces)

    @T.macro
    def tiles_with(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc):
        if parallel:
            for t in T.parallel(n_tiles):
                if pack:
                    Xp = T.decl_buffer((tile_elems,), "float32")
                    task_tile(Xf, Xp, Wv, Ptr, Idx, Yf, Rf, t * mr)
                else:
                    task_tile(Xf, Xf, Wv, Ptr, Idx, Yf, Rf, t * mr)
        else:
            for t in range(n_tiles):
                pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, t * mr, full_pieces)
        if tail_w > 0:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc, tail_p0, tail_pieces)

    @T.macro
    def all_tiles(Xf, Xt, Wv, Ptr, Idx, Yf, Rf):
        # Xt: the scratch tile of the serial tiles (unused without pack); a parallel task allocates its own, and
        # (eo) its own accumulator tile
        if split:
            Acc = T.decl_buffer((block * acc_stride,), "float32", scope="local")
            tiles_with(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Acc)
        else:
            tiles_with(Xf, Xt, Wv, Ptr, Idx, Yf, Rf, Yf)

    @T.macro
    def body(X, Wv, Ptr, Idx, Rf, Y):
        Xf = T.decl_buffer((cin * npix,), "float32", data=X.data)
        Yf = T.decl_buffer((cout * npix,), "float32", data=Y.data)
        if pack:
            Xt = T.decl_buffer((tile_elems,), "float32")
            all_tiles(Xf, Xt, Wv, Ptr, Idx, Yf, Rf)
        else:
            all_tiles(Xf, Xf, Wv, Ptr, Idx, Yf, Rf)

    # one signature or the other (TVMScript parses a prim_func where it is defined)
    if residual:

        @T.prim_func
        def kernel(x_h: T.handle, w_h: T.handle, ptr_h: T.handle, idx_h: T.handle, r_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True})
            X = T.match_buffer(x_h, in_shape, "float32")
            Wv = T.match_buffer(w_h, (spec.n_values,), "float32")
            Ptr = T.match_buffer(ptr_h, (n_blocks * n_chunks + 1,), "int32")
            Idx = T.match_buffer(idx_h, (spec.n_index,), idx_dtype)
            Res = T.match_buffer(r_h, out_shape, "float32")
            Y = T.match_buffer(y_h, out_shape, "float32")
            Rf = T.decl_buffer((cout * npix,), "float32", data=Res.data)
            body(X, Wv, Ptr, Idx, Rf, Y)

    else:

        @T.prim_func
        def kernel(x_h: T.handle, w_h: T.handle, ptr_h: T.handle, idx_h: T.handle, y_h: T.handle):
            T.func_attr({"tirx.noalias": True})
            X = T.match_buffer(x_h, in_shape, "float32")
            Wv = T.match_buffer(w_h, (spec.n_values,), "float32")
            Ptr = T.match_buffer(ptr_h, (n_blocks * n_chunks + 1,), "int32")
            Idx = T.match_buffer(idx_h, (spec.n_index,), idx_dtype)
            Y = T.match_buffer(y_h, out_shape, "float32")
            body(X, Wv, Ptr, Idx, Y, Y)  # no residual: its buffer is never read

    return kernel.with_attr("global_symbol", name or spec.variant)


# what a piece macro of the template reads: output rows row0 .. row0 + rows of the tile at pixel p0, nonzero k
Block = namedtuple("Block", "Src shift Wv Idx Yf Rf row0 rows bias_at weight_at p0 k ybase ystride Out")
# Rf: residual; the accumulator of row row0 + j, pixel p0 + x is Yf[ybase + j * ystride + x] (Y itself, or the
# local tile of an eo kernel); Out: the output Y
# chunk c of the tile at pixel p0 (rows_in_chunk input channels) copied from Xf to the scratch tile Xt
Copy = namedtuple("Copy", "Xf Xt c rows_in_chunk p0")
