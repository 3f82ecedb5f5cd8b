"""Input rows of a stride-2 convolution, de-interleaved into even and odd columns with vector shuffles.

Why: a stride-2 tap reads every other input pixel, which TVM vectorises into per-lane scalar loads. Loading a
row as whole vectors of 2L floats and splitting each into its even and odd halves with two ``T.Shuffle``s
(vpermt2ps on AVX-512, uzp1/uzp2 on NEON, i8x16.shuffle on SIMD128) makes every tap a contiguous vector load.
The last vector of a row is moved back to end at the row's end (it rewrites a few values and never reads
outside the row). L is the target's vector width, or the narrower ``deinterleave_lanes`` of its descriptor
(``tiles.deinterleave_lanes``, carried by the specs): on the Zen 1 host a 256-bit even/odd split crosses the
128-bit halves (vshufps + vpermpd, the latter several uops there), two 128-bit splits do not. Measured alone
there (x86_64, ms, 8 -> 4 lanes): depthwise 64x112x112 0.350 -> 0.331, 128x56x56 0.156 -> 0.137, 192x28x28
0.066 -> 0.066; fused with the sparse 1x1 before it (kernels/spmm_dwconv.py) MobileNetV2-p85's 16->96 @112
0.819 -> 0.782, 24->144 @56 0.339 -> 0.318; the 3->32 first layer 0.728 -> 0.727.

A de-interleaved row holds ``left`` zero columns, the n = W/2 even (or odd) inputs, ``right`` zero columns:
the padding. Output x, tap rx (padding ``pad`` each side) reads input column 2x + rx - pad, i.e. parity
``(rx + pad) % 2`` and column ``left + x + ((rx + pad) - parity) / 2 - pad`` of that parity's row.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T


def out_size(size: int, kernel: int, pad: int) -> int:
    """Output rows (or columns) of a stride-2 convolution over ``size`` inputs."""
    return (size + 2 * pad - kernel) // 2 + 1


def vector_lanes(n: int, lanes: int) -> int:
    """Lanes per vector for a row of ``n`` values: ``lanes``, or the largest power of two <= n."""
    return lanes if n >= lanes else 1 << (n.bit_length() - 1)


@dataclass(frozen=True)
class RowGeometry:
    width: int  # input columns (even, >= 4)
    pad: int  # input padding on each side
    lanes: int
    align: int = 0  # start each parity's values and its row on a multiple of this many floats (0: packed)

    @property
    def n(self) -> int:
        return self.width // 2

    @property
    def left(self) -> int:
        least = (self.pad + 1) // 2
        return -(-least // self.align) * self.align if self.align else least

    @property
    def right(self) -> int:
        return max(1, self.pad // 2)

    @property
    def row(self) -> int:
        """Floats per de-interleaved row (one parity)."""
        row = self.left + self.n + self.right
        return -(-row // self.align) * self.align if self.align else row

    def parity(self, rx):
        return (rx + self.pad) % 2

    def column(self, x, rx):
        """Column of tap ``rx`` for output ``x`` in its parity's row (``x`` and ``rx`` may be TIR expressions)."""
        return self.left + x + (rx + self.pad - (rx + self.pad) % 2) // 2 - self.pad

    def supported(self) -> str | None:
        if self.width % 2:
            return f"odd input width {self.width}"
        if self.width < 4:
            return f"input width {self.width} below 4 (a shuffle needs two lanes)"
        return None


class StrideTwoShape:
    """What the stride-2 specs (depthwise.py, conv.py) share, read from their ``height``, ``width``, ``kernel``,
    ``pad``, ``lanes`` and ``deinterleave_lanes`` fields: the output size, the row geometry, and whether its rows
    can be de-interleaved."""

    @property
    def out_height(self) -> int:
        return out_size(self.height, self.kernel, self.pad)

    @property
    def out_width(self) -> int:
        return out_size(self.width, self.kernel, self.pad)

    @property
    def rows(self) -> RowGeometry:
        return RowGeometry(self.width, self.pad, self.deinterleave_lanes or self.lanes, getattr(self, "row_align", 0))

    @property
    def deinterleave_suffix(self) -> str:
        """What a variant's name adds when its rows are de-interleaved narrower than the target's vectors
        (``d4``), else nothing."""
        return f"d{self.deinterleave_lanes}" if self.deinterleave_lanes not in (0, self.lanes) else ""

    def rows_unsupported(self) -> str | None:
        """Why the input rows cannot be de-interleaved into half-width output rows, or None."""
        why = self.rows.supported()
        if why:
            return why
        if self.out_width != self.width // 2:
            return "output width is not half the input width"
        return None


def deinterleave_macro(g: RowGeometry):
    """A macro ``deinterleave(Xf, S, src, dst)``: the input row at ``Xf[src : src + W]`` into the even row
    ``S[dst : dst + g.row]`` and the odd row ``S[dst + g.row : dst + 2 * g.row]``, zero columns included."""
    n, left, row = g.n, g.left, g.row
    lv = vector_lanes(n, g.lanes)
    n_in = -(-n // lv)
    evens = [2 * i for i in range(lv)]
    odds = [2 * i + 1 for i in range(lv)]
    zeros = [c for c in range(row) if c < left or c >= left + n]

    @T.macro
    def deinterleave(Xf, S, src, dst):
        for z in T.unroll(len(zeros)):
            S[dst + T.if_then_else(z < left, z, n + z)] = T.float32(0)
            S[dst + row + T.if_then_else(z < left, z, n + z)] = T.float32(0)
        for q in T.unroll(n_in):
            S[T.ramp(dst + left + T.min(q * lv, n - lv), 1, lv)] = T.Shuffle(
                [Xf[T.ramp(src + 2 * T.min(q * lv, n - lv), 1, 2 * lv)]], evens
            )
            S[T.ramp(dst + row + left + T.min(q * lv, n - lv), 1, lv)] = T.Shuffle(
                [Xf[T.ramp(src + 2 * T.min(q * lv, n - lv), 1, 2 * lv)]], odds
            )

    return deinterleave
