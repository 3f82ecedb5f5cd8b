"""The row walk the depthwise templates share (kernels/stride1/depthwise.py ``rows``, kernels/stride2/depthwise.py
``rows``), and the helpers of the row-walking window templates.

A row walk reads each input row once, from a small ring of zero-bordered (or de-interleaved) rows that stays in
L1, and updates the output rows the input row touches, which are the accumulators (``tirx.noalias``): input row
h, tap row ry feeds output row y = (h + pad - ry) / stride when that is whole and inside the plane; the bias
starts y's accumulator at y's first input row (ry == 0, or the top row), the clamp ends it at its last
(ry == k - 1, or the bottom row). Per output vector that is k*k FMAs and k accumulator round trips through L1,
against k*k FMAs in one serial chain when each output sums its own taps. The input rows are cut in three
ranges (``RowWalk.cuts``): in the interior one every tap row lands inside the plane and the first/last tests
depend on ry alone, so they fold away once ry is unrolled.

The ring is filled ``AHEAD`` rows before use, counting rows over the whole tensor (across channels): a row read
right after it was stored would make its unaligned tap loads wait for the stores to reach L1 (store forwarding
fails when a load spans two stores). A hand-written AVX-512 C loop over 48-pixel rows: 0.55 cycles per pixel
with a distance of 1, 0.39 with 3.

What the strides differ in is given to ``make_row_walk``: how an input row enters its ring slot (``place``: a
copy between zero borders, or a de-interleave), where tap rx of output column x is in a slot (``tap_at``), the
slot size, and the cuts. Output rows are cut into pieces (kernels/pieces.py).

The value helpers make one TIR expression of a ``lanes``-wide access, a scalar one when ``lanes`` is 1.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

from tvm.script import tirx as T

from .pieces import each_piece, tile_pieces
from .spmm.template import clamp_value

AHEAD = 3  # rows between the copy of a row into the ring and its use
RING = 4  # ring slots: AHEAD + the row in use
# Planes of at most this many input rows have their row loops unrolled, so that LLVM sees which output rows an
# input row updates and keeps more of them in registers between rows. Measured alone on the Zen 1 host (x86_64,
# 3x3, ms): 576x14x14 0.125 -> 0.120, 384x14x14 0.084 -> 0.080, 512x14x14 0.111 -> 0.106; 28-row planes lose
# (192x28x28 0.118 -> 0.156 unrolled).
UNROLL_ROWS = 16


def vload(buf, start, lanes):
    """``buf[start : start + lanes]``."""
    return buf[T.ramp(start, 1, lanes)] if lanes > 1 else buf[start]


def vindex(start, lanes):
    """The index of a ``lanes``-wide store at ``start``."""
    return T.ramp(start, 1, lanes) if lanes > 1 else start


def vbcast(value, lanes):
    """A scalar ``value`` in every lane."""
    return T.broadcast(value, lanes) if lanes > 1 else value


def split_channels(threads: int, channels: int) -> tuple[int, int]:
    """(tasks, channels per task) when ``threads`` split ``channels`` (the last task may have fewer)."""
    tasks = min(threads, channels)
    return tasks, -(-channels // tasks)


@dataclass(frozen=True)
class RowWalk:
    """One layer's row walk: shapes, and what its stride's template decides (module doc)."""

    channels: int
    in_height: int
    in_width: int
    out_height: int
    out_width: int
    kernel: int
    pad: int
    stride: int  # 1 or 2
    lanes: int
    clamp: tuple[float, float] | None
    threads: int
    slot: int  # floats per ring slot
    cuts: tuple[int, int]  # input rows [0, a) top, [a, b) interior, [b, H) bottom
    zero_ring: bool  # zero the ring once (its slots' borders are the padding and are never written)
    row_at: int | None = None  # where a slot's copy of its row starts, when a row is placed as it is (stride 1)


Row = namedtuple("Row", "Yf Wl B R c h")  # what an input row's groups update


def row_walk_channels(walk: RowWalk, fill, tap_at):
    """The macro ``channels(S, Wf, B, Yf, R, Wl, c0, c1)`` that walks channels c0 .. c1 - 1 of ``walk``: ``S`` is
    what ``fill`` reads, ``Wf``/``B`` the depthwise weights (flat) and biases, ``Yf`` the output (flat), ``R`` the
    ring (``RING * walk.slot`` floats) and ``Wl`` a local buffer of k*k weights.

    ``fill``: a macro ``(S, R, g)`` that puts input row g of the tensor (row g % H of channel g // H) into ring
    slot g % RING (at ``g % RING * walk.slot``). ``tap_at(rx, x)``: the offset in a slot of the vector tap rx
    multiplies into outputs x, x + 1, ..."""
    C, H, Ho, Wo = walk.channels, walk.in_height, walk.out_height, walk.out_width
    k, p, s, clamp = walk.kernel, walk.pad, walk.stride, walk.clamp
    assert s in (1, 2), s
    pieces = tile_pieces(Wo, walk.lanes)
    slot, ring = walk.slot, RING * walk.slot
    top, interior_end = walk.cuts
    loop = T.unroll if H <= UNROLL_ROWS else T.serial

    def taps(Wl, R, c, h, ry, x, vw):
        t = None
        for rx in range(k):
            v = vbcast(Wl[ry * k + rx], vw) * vload(R, (c * H + h) % RING * slot + tap_at(rx, x), vw)
            t = v if t is None else t + v
        return t

    @T.macro
    def accumulate(Yf, Wl, B, R, c, h, ry, y, x, vw):
        # input row h, tap row ry into output row y
        if ry == 0 or h == 0:
            if ry == k - 1 or h == H - 1:
                Yf[vindex((c * Ho + y) * Wo + x, vw)] = clamp_value(vbcast(B[c], vw) + taps(Wl, R, c, h, ry, x, vw),
                                                                    clamp)
            else:
                Yf[vindex((c * Ho + y) * Wo + x, vw)] = vbcast(B[c], vw) + taps(Wl, R, c, h, ry, x, vw)
        else:
            if ry == k - 1 or h == H - 1:
                Yf[vindex((c * Ho + y) * Wo + x, vw)] = clamp_value(
                    vload(Yf, (c * Ho + y) * Wo + x, vw) + taps(Wl, R, c, h, ry, x, vw), clamp)
            else:
                Yf[vindex((c * Ho + y) * Wo + x, vw)] = vload(Yf, (c * Ho + y) * Wo + x, vw) + taps(
                    Wl, R, c, h, ry, x, vw)

    @T.macro
    def update(Yf, Wl, B, R, c, h, ry, x, vw):
        if s == 1:
            if 0 <= h + p - ry and h + p - ry < Ho:
                accumulate(Yf, Wl, B, R, c, h, ry, h + p - ry, x, vw)
        else:
            if T.floormod(h + p - ry, 2) == 0 and 0 <= h + p - ry and T.floordiv(h + p - ry, 2) < Ho:
                accumulate(Yf, Wl, B, R, c, h, ry, T.floordiv(h + p - ry, 2), x, vw)

    @T.macro
    def group(row, x0, n, vw):
        for q in T.unroll(n):
            for ry in T.unroll(k):
                update(row.Yf, row.Wl, row.B, row.R, row.c, row.h, ry, x0 + q * vw, vw)

    @T.macro
    def input_row(S, Wl, B, Yf, R, c, h, c1):
        # rows are filled AHEAD of use across channel boundaries too, so a channel's first rows are ready
        if (c * H + h) + AHEAD < c1 * H:
            fill(S, R, c * H + h + AHEAD)
        each_piece(group, pieces, Row(Yf, Wl, B, R, c, h))

    @T.macro
    def channels(S, Wf, B, Yf, R, Wl, c0, c1):
        if walk.zero_ring:
            for z in range(ring):
                R[z] = T.float32(0)
        for j in range(AHEAD):
            if c0 * H + j < c1 * H:
                fill(S, R, c0 * H + j)
        for c in range(c0, c1):
            for i in T.unroll(k * k):
                Wl[i] = Wf[c * k * k + i]
            for h in loop(top):
                input_row(S, Wl, B, Yf, R, c, h, c1)
            for hh in loop(interior_end - top):
                input_row(S, Wl, B, Yf, R, c, top + hh, c1)
            for hh in loop(H - interior_end):
                input_row(S, Wl, B, Yf, R, c, interior_end + hh, c1)

    return channels


def make_row_walk(walk: RowWalk, place, tap_at):
    """The depthwise PrimFunc of ``walk``: arguments x [1, C, H, W], w [C, 1, k, k], bias [C], y [1, C, Ho, Wo].
    ``place(Src, src_at, R, g)`` puts the row at ``Src[src_at:]`` into ring slot g % RING as the stride needs it;
    here input row g is read from x, flat (``row_walk_channels``)."""
    C, H, W, Ho, Wo, k = walk.channels, walk.in_height, walk.in_width, walk.out_height, walk.out_width, walk.kernel
    ring = RING * walk.slot
    tasks, per_task = split_channels(walk.threads, C)

    @T.macro
    def fill(Xf, R, g):
        place(Xf, g * W, R, g)

    channels = row_walk_channels(walk, fill, tap_at)

    @T.macro
    def body(Xf, Wf, B, Yf):
        if tasks > 1:
            for t in T.parallel(tasks):
                Rp = T.decl_buffer((ring,), "float32")
                Wlp = T.decl_buffer((k * k,), "float32", scope="local")
                channels(Xf, Wf, B, Yf, Rp, Wlp, t * per_task, T.min(C, t * per_task + per_task))
        else:
            R = T.decl_buffer((ring,), "float32")
            Wl = T.decl_buffer((k * k,), "float32", scope="local")
            channels(Xf, Wf, B, Yf, R, Wl, 0, C)

    return depthwise_prim_func(C, H, W, Ho, Wo, k, body)


def depthwise_prim_func(C: int, H: int, W: int, Ho: int, Wo: int, k: int, body):
    """The PrimFunc of a depthwise template: arguments x [1, C, H, W], w [C, 1, k, k], bias [C], y [1, C, Ho, Wo],
    which the macro ``body(Xf, Wf, B, Yf)`` reads and writes flat (``tirx.noalias``: outputs are accumulators)."""

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
        body(Xf, Wf, B, Yf)

    return dwconv
