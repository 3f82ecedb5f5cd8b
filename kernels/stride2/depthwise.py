"""f32 depthwise k x k convolution, stride 2, in NCHW, with fused bias and clamp: a TIR template.

Each input row of a channel is de-interleaved into a per-channel scratch plane (rows.py: why and how), then
every tap is a contiguous vector load (MobileNetV1's 64-channel 112x112 layer on AVX-512: 0.101 ms; the
scheduled kernel that de-interleaves with per-lane gathers took 0.155 ms, ONNX Runtime 0.126 ms).

Rows: an output row accumulates the k input rows 2y + ry - pad that exist (a uniform branch per row and tap).
Columns: outputs are cut into whole vectors and power-of-two pieces (56 = 3x16 + 8), each its own
accumulators, which are the output row itself (``tirx.noalias``: LLVM keeps them in registers, and no local
buffer is needed). Threads split channels; each task has its own scratch plane from the kernel workspace.

Variant name: ``f32_dwconv{k}x{k}s2_<L>_<epilogue>``. Arguments: ``x`` [1, C, H, W], ``w`` [C, 1, k, k],
``bias`` [C], ``y`` [1, C, Ho, Wo].
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from ..spmm.template import clamp_value, epilogue_name, tile_pieces
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

    @property
    def variant(self) -> str:
        k = self.kernel
        return f"f32_dwconv{k}x{k}s2_{vector_lanes(self.out_width, self.lanes)}_{epilogue_name(self.clamp)}"

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
    C, H, W, k, pad = spec.channels, spec.height, spec.width, spec.kernel, spec.pad
    Ho, Wo = spec.out_height, spec.out_width
    g = spec.rows
    n2 = g.row  # floats per de-interleaved row (one parity)
    deinterleave = deinterleave_macro(g)
    clamped = epilogue_name(spec.clamp) != "linear"
    parallel = spec.threads > 1
    # output row pieces (start, vectors, lanes), non-overlapping: the accumulators live in the output row, so
    # pieces must not share outputs. Up to 5 (16 + 8 + 4 + 2 + 1); absent ones as (0, 0, 1).
    pieces = tile_pieces(Wo, spec.lanes)
    assert len(pieces) <= 5, pieces
    P = [v for pc in pieces + [(0, 0, 1)] * (5 - len(pieces)) for v in pc]
    plane = H * 2 * n2

    @T.macro
    def row(Xf, Wf, B, Yf, S, c, y, x0, nq, vw):
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
    def channel(Xf, Wf, B, Yf, S, c):
        # de-interleave every input row of channel c into the scratch plane: row h, parity p at (2*h + p)*n2
        for h in range(H):
            deinterleave(Xf, S, (c * H + h) * W, 2 * h * n2)
        for y in range(Ho):
            row(Xf, Wf, B, Yf, S, c, y, P[0], P[1], P[2])
            if P[4] > 0:
                row(Xf, Wf, B, Yf, S, c, y, P[3], P[4], P[5])
            if P[7] > 0:
                row(Xf, Wf, B, Yf, S, c, y, P[6], P[7], P[8])
            if P[10] > 0:
                row(Xf, Wf, B, Yf, S, c, y, P[9], P[10], P[11])
            if P[13] > 0:
                row(Xf, Wf, B, Yf, S, c, y, P[12], P[13], P[14])

    @T.prim_func
    def dwconv(x_h: T.handle, w_h: T.handle, b_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, (1, C, H, W), "float32")
        Wt = T.match_buffer(w_h, (C, 1, k, k), "float32")
        B = T.match_buffer(b_h, (C,), "float32")
        Y = T.match_buffer(y_h, (1, C, Ho, Wo), "float32")
        Xf = T.decl_buffer((C * H * W,), "float32", data=X.data)
        Wf = T.decl_buffer((C * k * k,), "float32", data=Wt.data)
        Yf = T.decl_buffer((C * Ho * Wo,), "float32", data=Y.data)
        if parallel:
            for c in T.parallel(C):
                Sp = T.decl_buffer((plane,), "float32")
                channel(Xf, Wf, B, Yf, Sp, c)
        else:
            S = T.decl_buffer((plane,), "float32")
            for c in range(C):
                channel(Xf, Wf, B, Yf, S, c)

    return dwconv.with_attr("global_symbol", name or spec.variant)
