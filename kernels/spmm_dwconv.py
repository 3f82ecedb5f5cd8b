"""f32 sparse 1x1 convolution feeding a depthwise convolution, as one kernel: the depthwise rows walk
(kernels/row_ring.py) whose ring rows are computed by the SpMM instead of read from the 1x1's output.

In MobileNets every expansion 1x1 conv feeds only a depthwise conv. Run apart, the 1x1 writes its output (96 x
112 x 112 floats in MobileNetV2's second block: 4.8 MB, past L2) and the depthwise conv reads it back. Here the
depthwise template's walk - channel by channel, input row by input row, ``AHEAD`` rows early - asks ``fill`` for
row h of channel c, and ``fill`` computes it: bias, the 1x1's nonzeros of output channel c (block-1 packed
weights, kernels/spmm/pack.py) times row h of each of their input channels, clamp. At stride 1 the row is
computed in its ring slot, between the zero borders the depthwise template copies a read row between; at stride
2 it is computed into a row buffer and de-interleaved into its slot. The 1x1's output never exists. (Computing
the stride-1 row in place of a buffer and a copy: MobileNetV2-p85's 24->144 @56, kernel alone, 1.011-1.038x in
three alternating runs of 31.)

At stride 2 the de-interleave's shuffles are 9-10% of the kernel (16->96 @112 0.786 -> 0.705 ms and 24->144 @56
0.347 -> 0.317 without them), one per output channel and row. With ``eo_input`` the 1x1's input rows arrive
stored even columns first, then odd (the SpMM kernel before splits its vectors as it stores them, for its fewer
channels: kernels/spmm/template.py ``eo_width``, passes/sparsify.py ``_even_odd_rows``). A pixel-wise 1x1 of such
rows gives rows split the same way, so each half is computed straight into the slot's even or odd row, which
then starts on a whole vector (``row_align``; the zero columns around it are never written: the ring is zeroed
once). Measured on the Zen 1 host in MobileNetV2-p85 (8 per-kernel profiles of 30 runs, both orders, ms,
de-interleaved here -> stored split before): 16->96 @112 0.797 -> 0.772 with its 32->16 producer 0.206 -> 0.198,
24->144 @56 0.340 -> 0.309 with its 144->24 (residual) producer 0.275 -> 0.288; the aligned slot then 0.723 ->
0.704 and 0.301 -> 0.315 (6 more profiles, within their noise). The SpMM's activations are read per output channel
instead of per pixel tile (a row of each nonzero's input channel, from L2 rather than L1); the gain is the
intermediate tensor's write and read.

When it pays (``fusion_pays``): the saving is per element of the intermediate tensor and only when that tensor
leaves L2; the loss is per nonzero (a row is a poorer unit than the SpMM's tile). So a pair is fused when the
1x1's output has at least the descriptor's ``tiles.spmm_dwconv_min_bytes`` and at most
``tiles.spmm_dwconv_max_nonzeros`` nonzeros per output channel; a descriptor without them never fuses.
Whole models on the x86 host (AVX-512; 8 alternating rounds x 30 runs, median of per-round ratios unfused /
fused [lowest..highest]): MobileNetV2-p85's 16->96 @112 (2.4 nonzeros per channel, 4.8 MB) 1.031 [0.992..1.040];
also fusing its 24->144 @56 pairs (3.6, 1.8 MB) 1.003, and its 32->192 @28 ones (4.8, 0.6 MB) 0.987;
MobileNetV1-p90's 32->64 @112 (3.2, 3.2 MB) 1.008 [0.959..1.017], with its 1.6 MB pairs 0.967; MobileNetV1-p70's
32->64 @112 (9.6, 3.2 MB) 0.972 [0.942..0.982].
wasm32 in Node on the same host: MobileNetV2-p85 1.047 [1.024..1.084], MobileNetV1-p90 (its 32->64 fused)
1.020 [0.976..1.062], MobileNetV1-p70 1.005 [0.977..1.016]; wasm32 takes the same rule.
Tried and not kept: the walk in the other order, input row by input row and channel by channel within a row,
with a ring per channel, so that row h of the 1x1's input channels is read once while in L1. MobileNetV1's
32->64 @112 with its stride-2 depthwise conv, per-kernel profile (ms): at 70% 0.197 against 0.294 channel by
channel and 0.195 unfused; at 90% 0.147 against 0.135 and 0.135. It removes the channel walk's loss on dense
rows but gains nothing over the two kernels apart.

Variant ``f32_spmm_<1x1 epilogue>_<depthwise variant without f32_>``, e.g.
``f32_spmm_relu6_dwconv3x3s2_rows16_relu6``. Arguments: ``x`` [1, Cin, H, W], ``values``, ``segment_ptr``,
``channel_index`` (the 1x1's packed weights, block 1, one chunk), ``w`` [C, 1, k, k], ``bias`` [C] (the depthwise
conv's), ``y`` [1, C, Ho, Wo].
"""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from dataclasses import dataclass

from tvm.script import tirx as T

from .pieces import each_piece, tile_pieces
from .row_ring import RING, row_walk_channels, split_channels
from .spmm.template import clamp_value, epilogue_name
from .stride1.depthwise import DepthwiseS1Spec
from .stride1.depthwise import row_walk_of as s1_row_walk
from .stride2.depthwise import DepthwiseS2Spec
from .stride2.depthwise import row_walk_of as s2_row_walk


def fusion_pays(target, out_bytes: int, nonzeros_per_channel: float) -> bool:
    """Whether ``target`` (an ``edgesparse.targets.Target``) runs a sparse 1x1 whose output takes ``out_bytes``,
    with ``nonzeros_per_channel`` on average, fused with the depthwise conv after it (module doc)."""
    min_bytes = target.tiles.get("spmm_dwconv_min_bytes")
    max_nonzeros = target.tiles.get("spmm_dwconv_max_nonzeros")
    if min_bytes is None or max_nonzeros is None:
        return False
    return out_bytes >= int(min_bytes) and nonzeros_per_channel <= float(max_nonzeros)


def row_registers_for(target) -> int:
    """The vectors a row of the fused 1x1 may take and still add its nonzeros one at a time in registers
    (descriptor ``tiles.spmm_dwconv_row_registers``; 0, pairs always, where it is not set): ``fill``."""
    return int(target.tiles.get("spmm_dwconv_row_registers", 0))


@dataclass(frozen=True)
class SpmmDwSpec:
    cin: int  # the 1x1's input channels
    n_values: int  # packed arrays' sizes (kernels/spmm/pack.py, block 1, one chunk)
    n_index: int
    index_dtype: str
    index_stride: int  # elements per input channel folded into channel_index
    clamp: tuple[float, float] | None  # the 1x1's epilogue
    dw: DepthwiseS1Spec | DepthwiseS2Spec  # channels, height and width: the 1x1's output
    row_registers: int = 0  # rows of at most this many vectors add one nonzero at a time (see ``fill``)
    eo_input: bool = False  # stride 2: x's rows are stored even columns first, then odd (module doc; variant _eo)

    @property
    def variant(self) -> str:
        if self.eo_input:  # rows arrive de-interleaved: no de-interleave width to name
            dw = dataclasses.replace(self.dw, deinterleave_lanes=0).variant.removeprefix('f32_')
            return f"f32_spmm_{epilogue_name(self.clamp)}_eo_{dw}"
        return f"f32_spmm_{epilogue_name(self.clamp)}_{self.dw.variant.removeprefix('f32_')}"

    def supported(self) -> str | None:
        """Why the pair cannot run as one kernel, or None."""
        why = self.dw.supported()
        if why:
            return why
        if self.dw.walk != "rows":
            return f"the depthwise conv walks {self.dw.walk}, not rows"
        if self.eo_input and self.dw.stride != 2:
            return "rows stored even columns first feed stride 2 only"
        return None


def make_spmm_dwconv_kernel(spec: SpmmDwSpec, name: str | None = None):
    why = spec.supported()
    assert why is None, why
    dw = spec.dw
    C, H, W, k = dw.channels, dw.height, dw.width, dw.kernel
    Ho, Wo = dw.out_height, dw.out_width
    cin, npix = spec.cin, dw.height * dw.width
    assert npix % spec.index_stride == 0
    scale = npix // spec.index_stride
    eo = spec.eo_input
    if eo:  # each half row computed straight into its slot: whole vectors, aligned
        dw = dataclasses.replace(dw, row_align=dw.lanes)
    walk, place, tap_at = (s1_row_walk if isinstance(dw, DepthwiseS1Spec) else s2_row_walk)(dw)
    if eo:
        # x's row h is [even columns | odd columns], so the 1x1's row comes out so too: its halves are computed
        # straight into the slot's even and odd rows (kernels/stride2/rows.py RowGeometry), between zero columns
        # that are never written (the ring is zeroed once)
        g = dw.rows
        half = W // 2
        pieces = [(x0, n, vw) for x0, n, vw in tile_pieces(half, dw.lanes)] + [
            (half + x0, n, vw) for x0, n, vw in tile_pieces(half, dw.lanes)]
        walk = dataclasses.replace(walk, zero_ring=True)

        def dst(x0):
            return g.left + x0 if x0 < half else g.row + g.left + x0 - half
    else:
        pieces = tile_pieces(W, dw.lanes)

        def dst(x0):
            return x0
    clamped = epilogue_name(spec.clamp) != "linear"
    ring = RING * walk.slot
    tasks, per_task = split_channels(dw.threads, C)

    # --- one statement kind over one piece of the row being computed (r: a PointwiseRow) ---

    @T.macro
    def init(r, x0, n, vw):
        for q in T.unroll(n):
            for i in T.vectorized(vw):
                r.Row[r.at + dst(x0) + q * vw + i] = r.S.Wv[r.c]

    @T.macro
    def update1(r, x0, n, vw):
        for q in T.unroll(n):
            for i in T.vectorized(vw):
                r.Row[r.at + dst(x0) + q * vw + i] = r.Row[r.at + dst(x0) + q * vw + i] + r.S.Wv[C + r.j] * r.S.Xf[
                    scale * T.Cast("int32", r.S.Idx[r.j]) + r.h * W + x0 + q * vw + i]

    @T.macro
    def update2(r, x0, n, vw):
        # two nonzeros summed before they reach the accumulator (as the SpMM template does)
        for q in T.unroll(n):
            for i in T.vectorized(vw):
                r.Row[r.at + dst(x0) + q * vw + i] = r.Row[r.at + dst(x0) + q * vw + i] + (
                    r.S.Wv[C + r.j] * r.S.Xf[scale * T.Cast("int32", r.S.Idx[r.j]) + r.h * W + x0 + q * vw + i]
                    + r.S.Wv[C + r.j + 1]
                    * r.S.Xf[scale * T.Cast("int32", r.S.Idx[r.j + 1]) + r.h * W + x0 + q * vw + i])

    @T.macro
    def clamp(r, x0, n, vw):
        for q in T.unroll(n):
            for i in T.vectorized(vw):
                r.Row[r.at + dst(x0) + q * vw + i] = clamp_value(r.Row[r.at + dst(x0) + q * vw + i], spec.clamp)

    # A row whose vectors fit the target's registers (descriptor tiles.spmm_dwconv_row_registers) stays in them
    # over its nonzeros: one FMA per vector and nonzero. Pairs of nonzeros take four more registers (two
    # broadcasts, two products) and a row that no longer fits spills: on AVX2 MobileNetV2-p85's 112-pixel rows (14
    # vectors) spilled two accumulators per pair; one at a time its 16->96 @112 with the stride-2 depthwise conv
    # took 0.830 -> 0.814 ms, 24->144 @56 (stride 2) 0.389 -> 0.372, @56 (stride 1) 0.582 -> 0.580 (4 alternating
    # per-kernel profiles). Rows past the registers anyway (SIMD128: 28 vectors) keep the pairs, which halve the
    # accumulators' round trips through memory.
    single = sum(n for _, n, _ in pieces) <= spec.row_registers

    # A stride-1 slot holds its row as computed (between zero borders): the row is computed there (module doc). A
    # stride-2 slot holds it de-interleaved: computed into S.Row, then placed; or, from rows stored even columns
    # first (eo), computed there too, each half at its ``dst``.
    direct = walk.row_at is not None or eo
    row_at = walk.row_at if walk.row_at is not None else 0

    @T.macro
    def compute_row(S, Row, at, c, h):
        # row h of the 1x1's output channel c into Row[at : at + W]
        each_piece(init, pieces, PointwiseRow(S, Row, at, c, h, 0))
        if single:
            # from 0: range(S.Ptr[c], S.Ptr[c + 1]) gave wrong sums once c was an expression (TVM 0.27 lowering,
            # as the SpMM template's chunk loop)
            for jj in range(S.Ptr[c + 1] - S.Ptr[c]):
                each_piece(update1, pieces, PointwiseRow(S, Row, at, c, h, S.Ptr[c] + jj))
        else:
            for jj in range((S.Ptr[c + 1] - S.Ptr[c]) // 2):
                each_piece(update2, pieces, PointwiseRow(S, Row, at, c, h, S.Ptr[c] + 2 * jj))
            if (S.Ptr[c + 1] - S.Ptr[c]) % 2 == 1:
                each_piece(update1, pieces, PointwiseRow(S, Row, at, c, h, S.Ptr[c + 1] - 1))
        if clamped:
            each_piece(clamp, pieces, PointwiseRow(S, Row, at, c, h, 0))

    @T.macro
    def fill(S, R, g):
        # row g of the whole tensor (row h of the 1x1's output channel c) into its ring slot
        if direct:
            compute_row(S, R, T.floormod(g, RING) * walk.slot + row_at, T.floordiv(g, H), T.floormod(g, H))
        else:
            compute_row(S, S.Row, 0, T.floordiv(g, H), T.floormod(g, H))
            place(S.Row, 0, R, g)

    channels = row_walk_channels(walk, fill, tap_at)

    @T.prim_func
    def spmm_dwconv(x_h: T.handle, v_h: T.handle, ptr_h: T.handle, idx_h: T.handle, w_h: T.handle, b_h: T.handle,
                    y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, (1, cin, H, W), "float32")
        Wv = T.match_buffer(v_h, (spec.n_values,), "float32")
        Ptr = T.match_buffer(ptr_h, (C + 1,), "int32")
        Idx = T.match_buffer(idx_h, (spec.n_index,), spec.index_dtype)
        Wt = T.match_buffer(w_h, (C, 1, k, k), "float32")
        B = T.match_buffer(b_h, (C,), "float32")
        Y = T.match_buffer(y_h, (1, C, Ho, Wo), "float32")
        Xf = T.decl_buffer((cin * npix,), "float32", data=X.data)
        Wf = T.decl_buffer((C * k * k,), "float32", data=Wt.data)
        Yf = T.decl_buffer((C * Ho * Wo,), "float32", data=Y.data)
        if tasks > 1:
            for t in T.parallel(tasks):
                Rp = T.decl_buffer((ring,), "float32")
                Wlp = T.decl_buffer((k * k,), "float32", scope="local")
                if direct:  # rows are computed in the ring: no row buffer
                    channels(Source(Xf, Wv, Ptr, Idx, Rp), Wf, B, Yf, Rp, Wlp, t * per_task,
                             T.min(C, t * per_task + per_task))
                else:
                    Rowp = T.decl_buffer((W,), "float32")
                    channels(Source(Xf, Wv, Ptr, Idx, Rowp), Wf, B, Yf, Rp, Wlp, t * per_task,
                             T.min(C, t * per_task + per_task))
        else:
            R = T.decl_buffer((ring,), "float32")
            Wl = T.decl_buffer((k * k,), "float32", scope="local")
            if direct:
                channels(Source(Xf, Wv, Ptr, Idx, R), Wf, B, Yf, R, Wl, 0, C)
            else:
                Row = T.decl_buffer((W,), "float32")
                channels(Source(Xf, Wv, Ptr, Idx, Row), Wf, B, Yf, R, Wl, 0, C)

    return spmm_dwconv.with_attr("global_symbol", name or spec.variant)


Source = namedtuple("Source", "Xf Wv Ptr Idx Row")  # the 1x1's input and packed weights, and its row buffer
# (stride 2; unused at stride 1)
PointwiseRow = namedtuple("PointwiseRow", "S Row at c h j")  # row h of the 1x1's output channel c, computed into
# Row[at:]; j: a nonzero


__all__ = ["SpmmDwSpec", "fusion_pays", "make_spmm_dwconv_kernel", "row_registers_for"]
