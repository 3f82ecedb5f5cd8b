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
needed. ``H*W % MR`` remainder pixels form narrower tiles of the same code, powers of two, widest first.

Inside a block, nonzeros are taken ``unroll`` at a time and summed as a tree before the accumulator update
(``acc + (w0*x0 + w1*x1)``), so the loop-carried chain is one add per group. With ``n_chunks > 1`` (packed with
input-channel chunks, see pack.py) the tile walks chunk by chunk, all blocks per chunk: bias at the first
chunk, clamp at the last, accumulators back in ``Y`` between chunks. ``threads > 1`` makes the loop over full
pixel tiles ``T.parallel`` (the object then calls ``__TVMBackendParallelLaunch``); remainder tiles stay serial.

Signature of every variant (arguments in this order, see ``pack.py`` for the format):
``x`` (input, any shape holding Cin*P floats, CHW), ``values`` f32, ``segment_ptr`` i32, ``channel_index`` i16/i32,
``y`` (output, any shape holding Cout*P floats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm.script import tirx as T

from .pack import PackedSpmm

EPILOGUES = {"linear": None, "relu": (0.0, math.inf), "relu6": (0.0, 6.0)}


def epilogue_name(clamp: tuple[float, float] | None) -> str:
    if clamp is None or (clamp[0] == -math.inf and clamp[1] == math.inf):
        return "linear"
    for name, c in EPILOGUES.items():
        if c is not None and tuple(float(v) for v in clamp) == c:
            return name
    return "minmax"


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
    unroll: int = 2  # nonzeros summed per accumulator update (1, 2 or 4)
    lanes: int = 4  # f32 lanes of the target's vectors: tiles narrower than MR are multiples of it
    pack_tile: bool = False  # copy each pixel tile's activations into a contiguous, aligned scratch tile
    in_shape: tuple[int, ...] | None = None  # default (Cin, P)
    out_shape: tuple[int, ...] | None = None  # default (Cout, P)

    @classmethod
    def for_packed(cls, packed: PackedSpmm, pixels: int, mr: int, **kw) -> "SpmmKernelSpec":
        lanes = kw.get("lanes", cls.lanes)
        return cls(
            cin=packed.cin,
            cout=packed.cout,
            pixels=pixels,
            block=packed.block,
            mr=fit_tile(mr, pixels, lanes),
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
        return f"f32_spmm_{self.mr}x{self.block}_{epilogue_name(self.clamp)}"


def fit_tile(mr: int, pixels: int, lanes: int = 1) -> int:
    """MR, or for fewer pixels than MR the largest power of two <= pixels: LLVM legalises a vector of a
    non-power-of-two width badly, whole registers or not (1024x1024x49 on AVX-512: one 48-lane tile + 1 took
    0.52 ms, 32 + 16 + 1 lanes 0.20 ms)."""
    del lanes
    if mr <= pixels:
        return mr
    return 1 << (pixels.bit_length() - 1)


def tile_pieces(width: int, lanes: int = 1) -> list[int]:
    """Split a remainder of ``width`` pixels into power-of-two pieces, widest first (49 = 32 + 16 + 1)."""
    del lanes
    return [1 << k for k in reversed(range(width.bit_length())) if width & (1 << k)]


def make_spmm_kernel(spec: SpmmKernelSpec, name: str | None = None):
    """Build the TIR PrimFunc of ``spec`` (global symbol ``name`` or ``spec.variant``)."""
    cin, cout, npix, block = spec.cin, spec.cout, spec.pixels, spec.block
    assert block in (1, 2, 4) and spec.mr >= 1 and npix >= 1
    lanes = spec.lanes
    mr = fit_tile(spec.mr, npix, lanes)
    n_full = cout // block
    n_rem = cout - n_full * block
    n_tiles = npix // mr
    # Remainder pixels as power-of-two tiles, widest first (49 = 32 + 16 + 1): an odd-width vector (17 lanes)
    # legalises badly in LLVM (measured 2-4x slower per pixel than 16 + 1 lanes).
    # One full tile overlapping the previous one instead was measured slower (1024x1024x49: 0.237 vs 0.219 ms).
    tail_tiles, p0 = [], n_tiles * mr
    for width in tile_pieces(npix - p0, lanes) if npix > p0 else []:
        tail_tiles.append((p0, width))
        p0 += width
    assert p0 == npix
    n_tail = len(tail_tiles)
    assert n_tail <= 8, n_tail
    tail_p = [t[0] for t in tail_tiles] + [0] * (8 - n_tail)
    tail_w = [t[1] for t in tail_tiles] + [1] * (8 - n_tail)
    in_shape = tuple(spec.in_shape or (cin, npix))
    out_shape = tuple(spec.out_shape or (cout, npix))
    assert math.prod(in_shape) == cin * npix and math.prod(out_shape) == cout * npix
    lo, hi = spec.clamp if spec.clamp is not None else (-math.inf, math.inf)
    clamp_lo = lo != -math.inf
    clamp_hi = hi != math.inf
    idx_dtype = spec.index_dtype
    parallel = spec.threads > 1
    n_chunks = spec.n_chunks
    chunk = spec.chunk or cin
    assert n_chunks == -(-cin // chunk), (n_chunks, cin, chunk)
    unroll = spec.unroll
    assert unroll in (1, 2, 4), unroll
    pack = spec.pack_tile
    # Where nonzero k's activations start: ``scale * Idx[k] + shift`` in the source buffer (shift per chunk).
    # Direct: Xf (stride H*W), offsets absolute. Packed tile: Xt (stride MR), chunk c's rows only.
    row_stride = mr if pack else npix
    assert row_stride % spec.index_stride == 0, (row_stride, spec.index_stride)
    scale = row_stride // spec.index_stride
    assert pack or not spec.chunk_local, "chunk-local offsets need a packed tile"
    chunk_shift = 0 if spec.chunk_local else -chunk * row_stride  # times c; packed tile only
    tile_elems = chunk * mr

    @T.macro
    def block_rows(Src, shift, Wv, Idx, Yf, row0, rows, bias_at, weight_at, kb, ke, p0, width, first, last):
        # bias -> accumulator rows at the first chunk (the output tile itself; kept in registers by LLVM)
        if first:
            for j in T.unroll(rows):
                for i in T.vectorized(width):
                    Yf[(row0 + j) * npix + p0 + i] = Wv[bias_at + j]
        # nonzeros in groups of `unroll`, summed as a tree before they reach the accumulator: the accumulator's
        # dependency chain is one add per group instead of one FMA per nonzero (FMA latency bound otherwise)
        if unroll == 2:
            for kk in range((ke - kb) // 2):
                for j in T.unroll(rows):
                    for i in T.vectorized(width):
                        Yf[(row0 + j) * npix + p0 + i] = Yf[(row0 + j) * npix + p0 + i] + (
                            Wv[weight_at + (kb + 2 * kk) * rows + j]
                            * Src[scale * T.Cast("int32", Idx[kb + 2 * kk]) + shift + i]
                            + Wv[weight_at + (kb + 2 * kk + 1) * rows + j]
                            * Src[scale * T.Cast("int32", Idx[kb + 2 * kk + 1]) + shift + i]
                        )
        if unroll == 4:
            for kk in range((ke - kb) // 4):
                for j in T.unroll(rows):
                    for i in T.vectorized(width):
                        Yf[(row0 + j) * npix + p0 + i] = Yf[(row0 + j) * npix + p0 + i] + (
                            (
                                Wv[weight_at + (kb + 4 * kk) * rows + j]
                                * Src[scale * T.Cast("int32", Idx[kb + 4 * kk]) + shift + i]
                                + Wv[weight_at + (kb + 4 * kk + 1) * rows + j]
                                * Src[scale * T.Cast("int32", Idx[kb + 4 * kk + 1]) + shift + i]
                            )
                            + (
                                Wv[weight_at + (kb + 4 * kk + 2) * rows + j]
                                * Src[scale * T.Cast("int32", Idx[kb + 4 * kk + 2]) + shift + i]
                                + Wv[weight_at + (kb + 4 * kk + 3) * rows + j]
                                * Src[scale * T.Cast("int32", Idx[kb + 4 * kk + 3]) + shift + i]
                            )
                        )
        for k in range(kb + (ke - kb) // unroll * unroll if unroll > 1 else kb, ke):
            for j in T.unroll(rows):
                for i in T.vectorized(width):
                    Yf[(row0 + j) * npix + p0 + i] = Yf[(row0 + j) * npix + p0 + i] + Wv[
                        weight_at + k * rows + j
                    ] * Src[scale * T.Cast("int32", Idx[k]) + shift + i]
        if clamp_lo and clamp_hi and last:
            for j in T.unroll(rows):
                for i in T.vectorized(width):
                    Yf[(row0 + j) * npix + p0 + i] = T.min(
                        T.max(Yf[(row0 + j) * npix + p0 + i], T.float32(lo)), T.float32(hi)
                    )
        if clamp_lo and not clamp_hi and last:
            for j in T.unroll(rows):
                for i in T.vectorized(width):
                    Yf[(row0 + j) * npix + p0 + i] = T.max(Yf[(row0 + j) * npix + p0 + i], T.float32(lo))
        if clamp_hi and not clamp_lo and last:
            for j in T.unroll(rows):
                for i in T.vectorized(width):
                    Yf[(row0 + j) * npix + p0 + i] = T.min(Yf[(row0 + j) * npix + p0 + i], T.float32(hi))

    @T.macro
    def all_blocks(Src, shift, Wv, Ptr, Idx, Yf, c, p0, width):
        for b in range(n_full):
            # block b: bias at block*(b + start_b); weight of nonzero k, row j at block*(b + 1 + k) + j
            block_rows(
                Src, shift, Wv, Idx, Yf, b * block, block,
                block * (b + Ptr[b * n_chunks]), block * (b + 1),
                Ptr[b * n_chunks + c], Ptr[b * n_chunks + c + 1], p0, width, c == 0, c == n_chunks - 1,
            )
        for r in range(n_rem):
            # remainder row r: values start after the full blocks' block*(n_full + nnz_full) entries
            block_rows(
                Src, shift, Wv, Idx, Yf, n_full * block + r, 1,
                block * (n_full + Ptr[n_full * n_chunks]) - Ptr[n_full * n_chunks] + r
                + Ptr[(n_full + r) * n_chunks],
                block * (n_full + Ptr[n_full * n_chunks]) - Ptr[n_full * n_chunks] + r + 1,
                Ptr[(n_full + r) * n_chunks + c], Ptr[(n_full + r) * n_chunks + c + 1], p0, width,
                c == 0, c == n_chunks - 1,
            )

    @T.macro
    def pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, p0, width):
        # chunk c of the input channels for every output block, then chunk c + 1: the chunk's activation tile
        # is read by all blocks while it is in L1; accumulators go back to Y between chunks
        if pack:
            # the tile's activations, chunk by chunk, copied to rows of MR floats in Xt: aligned (no load
            # splits a cache line; CHW rows of 14x14 or 7x7 floats are not 64-byte multiples) and contiguous
            for c in range(n_chunks):
                for ch in range(T.min(chunk, cin - c * chunk)):
                    for i in T.vectorized(width):
                        Xt[ch * mr + i] = Xf[(c * chunk + ch) * npix + p0 + i]
                all_blocks(Xt, c * chunk_shift, Wv, Ptr, Idx, Yf, c, p0, width)
        else:
            for c in range(n_chunks):
                all_blocks(Xf, p0, Wv, Ptr, Idx, Yf, c, p0, width)

    @T.macro
    def all_tiles(Xf, Xt, Wv, Ptr, Idx, Yf):
        # Xt: the scratch tile of the serial tiles (unused without pack); a parallel task allocates its own
        if parallel:
            for t in T.parallel(n_tiles):
                if pack:
                    Xp = T.decl_buffer((tile_elems,), "float32")
                    pixel_tile(Xf, Xp, Wv, Ptr, Idx, Yf, t * mr, mr)
                else:
                    pixel_tile(Xf, Xf, Wv, Ptr, Idx, Yf, t * mr, mr)
        else:
            for t in range(n_tiles):
                pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, t * mr, mr)
        # (TVMScript has no Python-level loop over a list: at most 8 remainder tiles)
        if n_tail > 0:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[0], tail_w[0])
        if n_tail > 1:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[1], tail_w[1])
        if n_tail > 2:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[2], tail_w[2])
        if n_tail > 3:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[3], tail_w[3])
        if n_tail > 4:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[4], tail_w[4])
        if n_tail > 5:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[5], tail_w[5])
        if n_tail > 6:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[6], tail_w[6])
        if n_tail > 7:
            pixel_tile(Xf, Xt, Wv, Ptr, Idx, Yf, tail_p[7], tail_w[7])

    @T.prim_func
    def spmm_direct(x_h: T.handle, w_h: T.handle, ptr_h: T.handle, idx_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, in_shape, "float32")
        Wv = T.match_buffer(w_h, (spec.n_values,), "float32")
        Ptr = T.match_buffer(ptr_h, ((n_full + n_rem) * n_chunks + 1,), "int32")
        Idx = T.match_buffer(idx_h, (spec.n_index,), idx_dtype)
        Y = T.match_buffer(y_h, out_shape, "float32")
        Xf = T.decl_buffer((cin * npix,), "float32", data=X.data)
        Yf = T.decl_buffer((cout * npix,), "float32", data=Y.data)
        all_tiles(Xf, Xf, Wv, Ptr, Idx, Yf)

    @T.prim_func
    def spmm_packed(x_h: T.handle, w_h: T.handle, ptr_h: T.handle, idx_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, in_shape, "float32")
        Wv = T.match_buffer(w_h, (spec.n_values,), "float32")
        Ptr = T.match_buffer(ptr_h, ((n_full + n_rem) * n_chunks + 1,), "int32")
        Idx = T.match_buffer(idx_h, (spec.n_index,), idx_dtype)
        Y = T.match_buffer(y_h, out_shape, "float32")
        Xf = T.decl_buffer((cin * npix,), "float32", data=X.data)
        Yf = T.decl_buffer((cout * npix,), "float32", data=Y.data)
        Xt = T.decl_buffer((tile_elems,), "float32")
        all_tiles(Xf, Xt, Wv, Ptr, Idx, Yf)

    return (spmm_packed if pack else spmm_direct).with_attr("global_symbol", name or spec.variant)
