"""f32 k x k convolution, stride 2, over a few input channels (the first layer of a vision network: 3x3 or
7x7 over RGB), in NCHW, with fused bias and clamp: a TIR template.

Every input row of every channel is de-interleaved once (rows.py: why and how), into a ring of rows just ahead
of the output rows that read them (serial), or into a scratch plane up front (threads). Then
per output row, per block of MR output channels and per part of the row (at most NV vectors): MR x NV
accumulators (the output rows themselves, kept in registers: ``tirx.noalias``), and for each of the
Cin x k x k taps NV contiguous vector loads shared by the MR channels, MR broadcast weights and MR x NV FMAs.
MR divides Cout and MR x NV fits the descriptor's accumulator budget (conv_acc_regs). Threads split output
rows. The scheduled kernel (kernels/conv2d.py) builds its de-interleaved plane with per-lane loads: in
MobileNetV1 on AVX-512 (bench --profile) its 3->32 first layer took 0.38-0.43 ms, this template 0.16 ms.

Variant name: ``f32_conv{k}x{k}s2_<MR>x<NV*L>_<epilogue>``. Arguments: ``x`` [1, Cin, H, W],
``w`` [Cout, Cin, k, k], ``bias`` [Cout], ``y`` [1, Cout, Ho, Wo].
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

from tvm.script import tirx as T

from ..pieces import each_piece, tile_pieces
from ..spmm.template import clamp_value, epilogue_name
from .rows import StrideTwoShape, deinterleave_macro

MAX_CIN = 4  # the whole de-interleaved input is scratch: first layers only


@dataclass(frozen=True)
class ConvS2Spec(StrideTwoShape):
    cin: int
    cout: int
    height: int  # input rows
    width: int  # input columns (even)
    kernel: int  # k, odd
    pad: int  # on every side: k // 2
    lanes: int
    acc_registers: int  # vector accumulators the tile may use
    clamp: tuple[float, float] | None = None
    threads: int = 1
    deinterleave_lanes: int = 0  # lanes of the row de-interleave's vectors (rows.py; 0: lanes)

    @property
    def tile(self) -> tuple[int, int]:
        """(MR output channels, NV vectors): NV = min(4, budget / 4) (fewer for a row of fewer vectors), MR the
        largest divisor of Cout with MR x NV within the budget. Measured on 3->32 at 224x224 (relu6): AVX-512
        (budget 24) 4x4 0.104 ms, 8x3 0.121, 8x2 0.111, 16x1 0.125; AVX2 (budget 12) 4x3 0.183, 4x2 0.203,
        2x4 0.212."""
        nv = max(1, min(4, self.acc_registers // 4, self.out_width // self.lanes))
        limit = max(1, self.acc_registers // nv)
        return max(d for d in range(1, min(limit, self.cout) + 1) if self.cout % d == 0), nv

    @property
    def variant(self) -> str:
        k = self.kernel
        mr, nv = self.tile
        return f"f32_conv{k}x{k}s2_{mr}x{nv * self.lanes}{self.deinterleave_suffix}_{epilogue_name(self.clamp)}"

    def row_parts(self) -> list[tuple[int, int, int]]:
        """The output row as parts (start, vectors, lanes) of at most NV vectors each."""
        _, nv = self.tile
        parts = []
        for x0, nq, vw in tile_pieces(self.out_width, self.lanes):
            for q in range(0, nq, nv):
                parts.append((x0 + q * vw, min(nv, nq - q), vw))
        return parts

    def supported(self) -> str | None:
        """Why the template cannot compute this layer, or None."""
        if self.cin > MAX_CIN:
            return f"{self.cin} input channels (the template is for first layers: at most {MAX_CIN})"
        if self.kernel % 2 == 0 or self.pad != self.kernel // 2:
            return f"kernel {self.kernel} with padding {self.pad} (odd k, padding k // 2 only)"
        why = self.rows_unsupported()
        if why:
            return why
        return None


def make_conv_s2_kernel(spec: ConvS2Spec, name: str | None = None):
    why = spec.supported()
    assert why is None, why
    cin, cout, H, W, k, pad = spec.cin, spec.cout, spec.height, spec.width, spec.kernel, spec.pad
    Ho, Wo = spec.out_height, spec.out_width
    g = spec.rows
    n2 = g.row
    deinterleave = deinterleave_macro(g)
    mr, _ = spec.tile
    clamped = epilogue_name(spec.clamp) != "linear"
    parallel = spec.threads > 1
    parts = spec.row_parts()
    # Serial: a ring of the ``ring`` latest de-interleaved rows per channel, filled one output row ahead (the
    # rows of y + 1 are written while y is computed, so no tap load waits for a row's stores). Threads: every
    # row of the plane up front, as a task's rows are anywhere.
    ring = 1 << (k + 1).bit_length()  # >= k + 2 rows: output row y's k rows and the two of y + 1
    held = H if parallel else ring  # rows held per channel
    plane = cin * held * 2 * n2

    def row_at(c, h):
        """Where input row h of channel c starts in the scratch (its even columns; the odd ones n2 further)."""
        return (c * held + (h if parallel else T.bitwise_and(h, ring - 1))) * 2 * n2

    @T.macro
    def part(Wf, B, Yf, S, y, f0, x0, nq, vw):
        # outputs x0 .. x0 + nq*vw of row y for channels f0 .. f0 + mr: mr x nq accumulator vectors
        for j in T.unroll(mr):
            for q in T.unroll(nq):
                for i in T.vectorized(vw):
                    Yf[((f0 + j) * Ho + y) * Wo + x0 + q * vw + i] = B[f0 + j]
        for c in range(cin):
            for ry in T.unroll(k):
                if 0 <= 2 * y + ry - pad and 2 * y + ry - pad < H:
                    for rx in T.unroll(k):
                        for j in T.unroll(mr):
                            for q in T.unroll(nq):
                                for i in T.vectorized(vw):
                                    Yf[((f0 + j) * Ho + y) * Wo + x0 + q * vw + i] = Yf[
                                        ((f0 + j) * Ho + y) * Wo + x0 + q * vw + i
                                    ] + Wf[(((f0 + j) * cin + c) * k + ry) * k + rx] * S[
                                        row_at(c, 2 * y + ry - pad) + g.parity(rx) * n2 + g.column(x0 + q * vw, rx) + i
                                    ]
        if clamped:
            for j in T.unroll(mr):
                for q in T.unroll(nq):
                    for i in T.vectorized(vw):
                        Yf[((f0 + j) * Ho + y) * Wo + x0 + q * vw + i] = clamp_value(
                            Yf[((f0 + j) * Ho + y) * Wo + x0 + q * vw + i], spec.clamp)

    @T.macro
    def tile_part(t, x0, nq, vw):
        part(t.Wf, t.B, t.Yf, t.S, t.y, t.f0, x0, nq, vw)

    @T.macro
    def out_row(Wf, B, Yf, S, y):
        for fb in range(cout // mr):
            each_piece(tile_part, parts, Tile(Wf, B, Yf, S, y, fb * mr))

    @T.prim_func
    def conv(x_h: T.handle, w_h: T.handle, b_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, (1, cin, H, W), "float32")
        Wt = T.match_buffer(w_h, (cout, cin, k, k), "float32")
        B = T.match_buffer(b_h, (cout,), "float32")
        Y = T.match_buffer(y_h, (1, cout, Ho, Wo), "float32")
        Xf = T.decl_buffer((cin * H * W,), "float32", data=X.data)
        Wf = T.decl_buffer((cout * cin * k * k,), "float32", data=Wt.data)
        Yf = T.decl_buffer((cout * Ho * Wo,), "float32", data=Y.data)
        S = T.decl_buffer((plane,), "float32")
        if parallel:
            for c in range(cin):  # every input row of every channel, de-interleaved once
                for h in range(H):
                    deinterleave(Xf, S, (c * H + h) * W, row_at(c, h))
            for y in T.parallel(Ho):
                out_row(Wf, B, Yf, S, y)
        else:
            # output row 0's input rows (up to k - 1 - pad), then before each y the two rows y + 1 adds
            for h in range(min(H, k - pad)):
                for c in range(cin):
                    deinterleave(Xf, S, (c * H + h) * W, row_at(c, h))
            for y in range(Ho):
                for e in range(2):
                    if 2 * y + k - pad + e < H:
                        for c in range(cin):
                            deinterleave(Xf, S, (c * H + 2 * y + k - pad + e) * W, row_at(c, 2 * y + k - pad + e))
                out_row(Wf, B, Yf, S, y)

    return conv.with_attr("global_symbol", name or spec.variant)


Tile = namedtuple("Tile", "Wf B Yf S y f0")  # an output row's tile of mr channels from f0
