"""f32 depthwise k x k convolution, stride 1, "same" padding, in NCHW, with fused bias and clamp: a TIR template.

Two walks of a channel's plane, chosen by the row width (``DepthwiseS1Spec.walk``):

``rows`` (rows of at least one vector): the row walk of kernels/row_ring.py, which the stride-2 template shares:
each input row is read once, and its k shifted copies (taps rx) update the k output rows it touches
(``y = h + pad - ry``), which are the accumulators. Against k*k FMAs in one serial chain when each output sums
its own taps: a hand-written AVX-512 C loop of each kind on a 112x112 plane, 0.36 vs 0.55 cycles per pixel (the
TVM schedule of kernels/window.py, which also re-reads the weights from memory per tap: 0.59-0.67). The top and
bottom ``pad`` input rows get their own loops, so the interior loop has no branches. Input rows are copied into
a ring of zero-bordered rows (the padding).

``flat`` (rows narrower than a vector: 7 and 14 on 16 lanes): a row in pieces wastes most of each vector and
a row walk pays its loop overhead per few pixels, so the plane is padded to rows of ``Wp >= W + pad`` floats
(row y's right padding is row y + 1's left padding; see ``_flat_row``) and the outputs are computed over the
flat padded index ``q = y * Wp + x`` in whole vectors: tap (ry, rx) is the contiguous load at
``q + ry * Wp + rx - pad``. Each output vector sums its k rows of taps as k independent partial sums; the pad
columns' outputs are computed and dropped when the rows are copied out. Planes of at most ``UNROLL_ROWS`` rows
have their loops unrolled (14x14: 1.06 -> 0.83 cycles per pixel). Channel c + 1's plane is copied in before
channel c is computed.

Measured per layer against the schedule (AVX-512, ms, one thread): 32x112x112 0.064 -> 0.042, 144x56x56
0.089 -> 0.060, 192x28x28 0.037 -> 0.028, 576x14x14 0.027 -> 0.015, 960x7x7 0.023 -> 0.011; 5x5 kernels
1.2-1.8x. Threads split channels; each task has its own scratch from the kernel workspace.

Variant name: ``f32_dwconv{k}x{k}s1_<walk><L>_<epilogue>`` (L: the target's f32 lanes). Arguments: ``x``
[1, C, H, W], ``w`` [C, 1, k, k], ``bias`` [C], ``y`` [1, C, H, W].
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import ClassVar

from tvm.script import tirx as T

from ..pieces import each_piece, tile_pieces
from ..row_ring import RING, RowWalk, depthwise_prim_func, make_row_walk, split_channels, vbcast, vindex, vload
from ..spmm.template import clamp_value, epilogue_name

UNROLL_ROWS = 16  # the flat walk unrolls its row and vector loops on planes this high or less


@dataclass(frozen=True)
class DepthwiseS1Spec:
    channels: int
    height: int
    width: int
    kernel: int  # k: 3 or 5
    pad: int  # on every side: k // 2
    lanes: int  # f32 lanes of the target's vectors
    clamp: tuple[float, float] | None = None
    threads: int = 1
    stride: ClassVar[int] = 1

    @property
    def out_height(self) -> int:
        return self.height

    @property
    def out_width(self) -> int:
        return self.width

    @property
    def walk(self) -> str:
        """``rows`` when a row fills a vector, else ``flat`` (module doc)."""
        w, lanes = self.width, self.lanes
        return "rows" if w >= lanes else "flat"

    @property
    def variant(self) -> str:
        k = self.kernel
        return f"f32_dwconv{k}x{k}s1_{self.walk}{self.lanes}_{epilogue_name(self.clamp)}"

    def supported(self) -> str | None:
        """Why the template cannot compute this layer, or None."""
        if self.kernel not in (3, 5) or self.pad != self.kernel // 2:
            return f"kernel {self.kernel} with padding {self.pad} (3x3 pad 1 and 5x5 pad 2 only)"
        if self.height < 1 or self.width < 1:
            return f"empty plane {self.height}x{self.width}"
        return None


def make_depthwise_s1_kernel(spec: DepthwiseS1Spec, name: str | None = None):
    why = spec.supported()
    assert why is None, why
    make = _make_rows if spec.walk == "rows" else _make_flat
    return make(spec).with_attr("global_symbol", name or spec.variant)


def row_walk_of(spec: DepthwiseS1Spec):
    """(RowWalk, place, tap_at) of the rows walk (kernels/row_ring.py): ``place(Src, src_at, R, g)`` copies the
    row at ``Src[src_at:]`` into ring slot g % RING, between the slot's zero borders (never written)."""
    H, W, p, lanes = spec.height, spec.width, spec.pad, spec.lanes
    lead = lanes  # zeros before a slot's data (>= pad), so the data starts vector-aligned
    slot = lead + W + lanes  # [lead zeros][W data][zeros >= pad]
    pieces = tile_pieces(W, lanes)

    @T.macro
    def copy_group(cp, x0, n, vw):
        for q in T.unroll(n):
            cp.R[vindex(cp.g % RING * slot + lead + x0 + q * vw, vw)] = vload(cp.Src, cp.src_at + x0 + q * vw, vw)

    @T.macro
    def place(Src, src_at, R, g):
        each_piece(copy_group, pieces, Copy(Src, src_at, R, g))

    top = min(p, H)
    walk = RowWalk(spec.channels, H, W, H, W, spec.kernel, p, 1, lanes, spec.clamp, spec.threads, slot,
                   (top, max(top, H - p)), zero_ring=True, row_at=lead)
    return walk, place, lambda rx, x: lead + x + rx - p


def _make_rows(spec: DepthwiseS1Spec):
    return make_row_walk(*row_walk_of(spec))


Copy = namedtuple("Copy", "Src src_at R g")  # the row at Src[src_at:] into ring slot g % RING of R
Move = namedtuple("Move", "dst dst_at src src_at")  # a row from src at src_at to dst at dst_at


def _flat_row(height: int, width: int, pad: int, lanes: int) -> int:
    """Floats per padded row of the flat walk: ``width + pad`` (row y's right padding is row y + 1's left), or
    that rounded up to a power of two when it costs no more vectors: vector-aligned rows, whose centre taps and
    row copies are aligned (14x14 on AVX-512: rows of 16 take 0.58 cycles per pixel, rows of 15 0.81)."""
    tight, aligned = width + pad, 1 << (width + pad - 1).bit_length()
    vectors = lambda w: -(-(height * w) // lanes)  # noqa: E731
    return aligned if vectors(aligned) <= vectors(tight) else tight


def _make_flat(spec: DepthwiseS1Spec):
    C, H, W, k, p, lanes = spec.channels, spec.height, spec.width, spec.kernel, spec.pad, spec.lanes
    clamp = spec.clamp
    pieces = tile_pieces(W, lanes)
    Wp = _flat_row(H, W, p, lanes)
    n_vec = -(-(H * Wp) // lanes)
    lead = p * Wp + p  # zeros before row 0's data: p pad rows and row 0's left pad (rounded up to a vector)
    lead += -lead % lanes
    # the last vector's farthest tap: q < n_vec * lanes, offset (k - 1) * Wp + k - 1 - p
    plane = lead + n_vec * lanes + (k - 1) * Wp + k
    base = lead - p * Wp - p  # S index of padded position (row -p, column -p) + ... for output q = 0, tap (0, 0)

    tasks, per_task = split_channels(spec.threads, C)
    loop = T.unroll if spec.height <= UNROLL_ROWS else T.serial
    RV = 1 << (W - 1).bit_length()  # lanes of one row's vector: W rounded up to a power of two (<= lanes)
    keep = [i if i < W else RV + i for i in range(RV)]  # a row's W values, then zeros

    def value(S, Wl, B, c, v):
        # output vector v: bias + k row partial sums of k taps each (independent chains)
        acc = vbcast(B[c], lanes)
        for ry in range(k):
            s = None
            for rx in range(k):
                t = vbcast(Wl[ry * k + rx], lanes) * vload(S, c % 2 * plane + base + v * lanes + ry * Wp + rx, lanes)
                s = t if s is None else s + t
            acc = acc + s
        return clamp_value(acc, clamp)

    @T.macro
    def move(m, x0, n, vw):
        for q in T.unroll(n):
            m.dst[vindex(m.dst_at + x0 + q * vw, vw)] = vload(m.src, m.src_at + x0 + q * vw, vw)

    @T.macro
    def row_pieces(dst, dst_at, src, src_at):
        each_piece(move, pieces, Move(dst, dst_at, src, src_at))

    @T.macro
    def plane_in(Xf, S, c):
        # channel c's rows into plane c % 2 of S. A row but the last moves as one RV-lane vector (it reads
        # RV - W values of the next row and writes them as zeros: into this row's padding, then into the next
        # row's data, which the next row's store overwrites); the last row moves in pieces, as it would read
        # past the channel
        for h in loop(H - 1):
            S[vindex(c % 2 * plane + lead + h * Wp, RV)] = T.Shuffle(
                [vload(Xf, (c * H + h) * W, RV), T.broadcast(T.float32(0), RV)], keep) if RV > W else vload(
                    Xf, (c * H + h) * W, RV)
        row_pieces(S, c % 2 * plane + lead + (H - 1) * Wp, Xf, (c * H + H - 1) * W)

    @T.macro
    def rows_out(O, Yf, c):
        # an output row but the last as one RV-lane vector: its RV - W extra values land on the next row's first
        # values, which the next row's store overwrites; the last row in pieces (it would write past the channel)
        for y in loop(H - 1):
            Yf[vindex((c * H + y) * W, RV)] = vload(O, y * Wp, RV)
        row_pieces(Yf, (c * H + H - 1) * W, O, (H - 1) * Wp)

    @T.macro
    def channels(Xf, Wf, B, Yf, S, O, Wl, c0, c1):
        # channels c0 .. c1 - 1; channel c + 1's plane is copied in before channel c is computed, so the tap
        # loads never wait on the stores that just wrote their plane (rows.py-style store forwarding stalls)
        for z in range(2 * plane):
            S[z] = T.float32(0)
        plane_in(Xf, S, c0)
        for c in range(c0, c1):
            if c + 1 < c1:
                plane_in(Xf, S, c + 1)
            for i in T.unroll(k * k):
                Wl[i] = Wf[c * k * k + i]
            for v in loop(n_vec):
                O[T.ramp(v * lanes, 1, lanes)] = value(S, Wl, B, c, v)
            rows_out(O, Yf, c)

    @T.macro
    def body(Xf, Wf, B, Yf):
        if tasks > 1:
            for t in T.parallel(tasks):
                Sp = T.decl_buffer((2 * plane,), "float32")
                Op = T.decl_buffer((n_vec * lanes,), "float32")
                Wlp = T.decl_buffer((k * k,), "float32", scope="local")
                channels(Xf, Wf, B, Yf, Sp, Op, Wlp, t * per_task, T.min(C, t * per_task + per_task))
        else:
            S = T.decl_buffer((2 * plane,), "float32")
            O = T.decl_buffer((n_vec * lanes,), "float32")
            Wl = T.decl_buffer((k * k,), "float32", scope="local")
            channels(Xf, Wf, B, Yf, S, O, Wl, 0, C)

    return depthwise_prim_func(C, H, W, H, W, k, body)
