"""f32 depthwise k x k convolution, stride 2, in NCHW, with fused bias and clamp: a TIR template.

Input rows are de-interleaved into even and odd columns (rows.py: why and how), so every tap is a contiguous
vector load. Two walks, chosen by the output width (``DepthwiseS2Spec.walk``):

``rows`` (output rows of at least one vector): the row walk of kernels/row_ring.py, which the stride-1 template
shares: each input row h is de-interleaved once into a ring slot and updates the output rows
y = (h + pad - ry) / 2 it touches, which are the accumulators: bias at their first input row, clamp at their
last. The ring stays in L1; a whole de-interleaved plane of a 112-wide channel (70 KB) did not.

``plane`` (narrower outputs): every input row of a channel is de-interleaved into a scratch plane, then each
output row accumulates the k input rows 2y + ry - pad that
exist (a uniform branch per row and tap); its pieces' accumulators are the output row itself
(``tirx.noalias``: LLVM keeps them in registers).

Columns: outputs are cut into whole vectors and power-of-two pieces (56 = 3x16 + 8). Measured on AVX-512 (ms,
one thread, plane -> rows): 64x112x112 0.093 -> 0.052, 96x112x112 0.143 -> 0.080, 144x56x56 0.043 -> 0.036;
on 28-wide inputs the plane walk stays ahead (256x28x28 0.024 vs 0.027). The first plane kernel, against the
scheduled one that de-interleaves with per-lane gathers: 0.101 vs 0.155 ms on the 64x112x112 layer (ONNX
Runtime 0.126). Threads split channels; each task has its own scratch from the kernel workspace.

Variant name: ``f32_dwconv{k}x{k}s2_<walk><L>_<epilogue>``. Arguments: ``x`` [1, C, H, W], ``w`` [C, 1, k, k],
``bias`` [C], ``y`` [1, C, Ho, Wo].
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import ClassVar

from tvm.script import tirx as T

from ..row_ring import RING, RowWalk, depthwise_prim_func, make_row_walk
from ..pieces import each_piece, tile_pieces
from ..spmm.template import clamp_value, epilogue_name
from .rows import StrideTwoShape, deinterleave_macro, vector_lanes


@dataclass(frozen=True)
class DepthwiseS2Spec(StrideTwoShape):
    channels: int
    height: int  # input rows
    width: int  # input columns (even)
    kernel: int  # k: 3 or 5
    pad: int  # on every side
    lanes: int  # f32 lanes of the target's vectors
    clamp: tuple[float, float] | None = None
    threads: int = 1
    deinterleave_lanes: int = 0  # lanes of the row de-interleave's vectors (rows.py; 0: lanes)
    row_align: int = 0  # de-interleaved rows' values start on multiples of this many floats (rows.py RowGeometry)
    stride: ClassVar[int] = 2

    @property
    def walk(self) -> str:
        """``rows`` when an output row fills a vector, else ``plane`` (module doc)."""
        return "rows" if self.out_width >= self.lanes else "plane"

    @property
    def variant(self) -> str:
        k, lanes = self.kernel, vector_lanes(self.out_width, self.lanes)
        return f"f32_dwconv{k}x{k}s2_{self.walk}{lanes}{self.deinterleave_suffix}_{epilogue_name(self.clamp)}"

    def supported(self) -> str | None:
        """Why the template cannot compute this layer, or None."""
        if self.kernel not in (3, 5) or self.pad != self.kernel // 2:
            return f"kernel {self.kernel} with padding {self.pad} (3x3 pad 1 and 5x5 pad 2 only)"
        why = self.rows_unsupported()
        if why:
            return why
        return None


def make_depthwise_s2_kernel(spec: DepthwiseS2Spec, name: str | None = None):
    why = spec.supported()
    assert why is None, why
    make = _make_rows if spec.walk == "rows" else _make_plane
    return make(spec).with_attr("global_symbol", name or spec.variant)


def row_walk_of(spec: DepthwiseS2Spec):
    """(RowWalk, place, tap_at) of the rows walk (kernels/row_ring.py): ``place(Src, src_at, R, g)``
    de-interleaves the row at ``Src[src_at:]`` into ring slot g % RING (even columns, then odd ones)."""
    H, pad, Ho = spec.height, spec.pad, spec.out_height
    g = spec.rows
    n2 = g.row  # floats per de-interleaved row (one parity); a ring slot holds both parities
    deinterleave = deinterleave_macro(g)
    slot = 2 * n2

    @T.macro
    def place(Src, src_at, R, r):
        deinterleave(Src, R, src_at, r % RING * slot)

    # input rows [top, interior_end) touch only output rows inside the plane and are neither an output row's
    # first-by-clipping (h == 0) nor last-by-clipping (h == H - 1) row: their tests fold to the parity test
    top = min(max(pad, 1), H)
    interior_end = max(top, min(2 * Ho - pad, H - 1))
    walk = RowWalk(spec.channels, H, spec.width, Ho, spec.out_width, spec.kernel, pad, 2, spec.lanes, spec.clamp,
                   spec.threads, slot, (top, interior_end), zero_ring=False)
    return walk, place, lambda rx, x: g.parity(rx) * n2 + g.column(x, rx)


def _make_rows(spec: DepthwiseS2Spec):
    return make_row_walk(*row_walk_of(spec))


def _make_plane(spec: DepthwiseS2Spec):
    C, H, W, k, pad = spec.channels, spec.height, spec.width, spec.kernel, spec.pad
    Ho, Wo = spec.out_height, spec.out_width
    g = spec.rows
    n2 = g.row  # floats per de-interleaved row (one parity)
    deinterleave = deinterleave_macro(g)
    clamped = epilogue_name(spec.clamp) != "linear"
    parallel = spec.threads > 1
    # output row pieces (start, vectors, lanes), non-overlapping: the accumulators live in the output row, so
    # pieces must not share outputs
    pieces = tile_pieces(Wo, spec.lanes)
    plane = H * 2 * n2

    @T.macro
    def row(Wf, B, Yf, S, c, y, x0, nq, vw):
        # outputs x0 .. x0 + nq*vw of row y: nq accumulator vectors of vw lanes, kept in registers
        for q in T.unroll(nq):
            for i in T.vectorized(vw):
                Yf[(c * Ho + y) * Wo + x0 + q * vw + i] = B[c]
        for ry in T.unroll(k):
            if 0 <= 2 * y + ry - pad and 2 * y + ry - pad < H:
                for rx in T.unroll(k):
                    for q in T.unroll(nq):
                        for i in T.vectorized(vw):
                            Yf[(c * Ho + y) * Wo + x0 + q * vw + i] = Yf[(c * Ho + y) * Wo + x0 + q * vw + i] + Wf[
                                (c * k + ry) * k + rx
                            ] * S[
                                (2 * (2 * y + ry - pad) + g.parity(rx)) * n2 + g.column(x0 + q * vw, rx) + i
                            ]
        if clamped:
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    Yf[(c * Ho + y) * Wo + x0 + q * vw + i] = clamp_value(Yf[(c * Ho + y) * Wo + x0 + q * vw + i],
                                                                          spec.clamp)

    @T.macro
    def row_piece(r, x0, nq, vw):
        row(r.Wf, r.B, r.Yf, r.S, r.c, r.y, x0, nq, vw)

    @T.macro
    def channel(Xf, Wf, B, Yf, S, c):
        # de-interleave every input row of channel c into the scratch plane: row h, parity p at (2*h + p)*n2
        for h in range(H):
            deinterleave(Xf, S, (c * H + h) * W, 2 * h * n2)
        for y in range(Ho):
            each_piece(row_piece, pieces, OutRow(Wf, B, Yf, S, c, y))

    @T.macro
    def body(Xf, Wf, B, Yf):
        if parallel:
            for c in T.parallel(C):
                Sp = T.decl_buffer((plane,), "float32")
                channel(Xf, Wf, B, Yf, Sp, c)
        else:
            S = T.decl_buffer((plane,), "float32")
            for c in range(C):
                channel(Xf, Wf, B, Yf, S, c)

    return depthwise_prim_func(C, H, W, Ho, Wo, k, body)


OutRow = namedtuple("OutRow", "Wf B Yf S c y")  # output row y of channel c
