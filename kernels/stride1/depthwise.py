"""f32 depthwise k x k convolution, stride 1, "same" padding, in NCHW, with fused bias and clamp: a TIR template.

Two walks of a channel's plane, chosen by the row width (``DepthwiseS1Spec.walk``):

``rows`` (rows of at least one vector): each input row is read once, and its k shifted copies (taps rx) update
the k output rows it touches (``y = h + pad - ry``); those output rows are the accumulators (``tirx.noalias``),
initialised with the bias at their first input row and clamped at their last. Per output vector that is k*k
FMAs and k accumulator round trips through L1, against k*k FMAs in one serial chain when each output sums its
own taps (a hand-written AVX-512 C loop of each kind on a 112x112 plane: 0.36 vs 0.55 cycles per pixel; the
TVM schedule of kernels/window.py, which also re-reads the weights from memory per tap: 0.59-0.67). The top and
bottom ``pad`` input rows get their own loops, so the interior loop has no branches. Input rows pass through a
ring of zero-bordered rows (the padding), copied ``AHEAD`` rows before use (kernels/row_ring.py).

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

from dataclasses import dataclass

from tvm.script import tirx as T

from ..row_ring import AHEAD, RING, vbcast, vindex, vload
from ..spmm.template import clamp_value, epilogue_name, tile_pieces

UNROLL_ROWS = 16  # the flat walk unrolls its row and vector loops on planes this high or less
GROUPS = 5  # piece groups of a row: whole vectors, then one piece each of L/2, L/4, ... lanes (16 lanes: 5)


def _groups(width: int, lanes: int) -> list[tuple[int, int, int]]:
    """A row as ``GROUPS`` slots (start, vectors, lanes) of tile_pieces; unused slots have 0 vectors."""
    g = tile_pieces(width, lanes)
    assert len(g) <= GROUPS, g
    return g + [(0, 0, 1)] * (GROUPS - len(g))


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


def _make_rows(spec: DepthwiseS1Spec):
    C, H, W, k, p, lanes = spec.channels, spec.height, spec.width, spec.kernel, spec.pad, spec.lanes
    clamp, parallel = spec.clamp, spec.threads > 1
    G = _groups(W, lanes)
    lead = lanes  # zeros before a ring row's data (>= pad), so the data starts vector-aligned
    row = lead + W + lanes  # ring row: [lead zeros][W data][zeros >= pad]
    ring = RING * row
    top, middle, bottom = min(p, H), max(0, H - 2 * p), max(p, H - p)
    tasks = min(spec.threads, C)
    per_task = -(-C // tasks)

    def taps(Wl, R, c, h, ry, x, vw):
        s = None
        for rx in range(k):
            t = vbcast(Wl[ry * k + rx], vw) * vload(R, (c * H + h) % RING * row + lead + x + rx - p, vw)
            s = t if s is None else s + t
        return s

    @T.macro
    def update(Yf, Wl, B, R, c, h, ry, x, vw):
        # input row h into output row y = h + p - ry: the bias starts y's accumulator at y's first input row
        # (ry == 0, or the top row), the clamp ends it at its last (ry == k - 1, or the bottom row)
        if 0 <= h + p - ry and h + p - ry < H:
            if ry == 0 or h == 0:
                if ry == k - 1 or h == H - 1:
                    Yf[vindex((c * H + h + p - ry) * W + x, vw)] = clamp_value(
                        vbcast(B[c], vw) + taps(Wl, R, c, h, ry, x, vw), clamp)
                else:
                    Yf[vindex((c * H + h + p - ry) * W + x, vw)] = vbcast(B[c], vw) + taps(Wl, R, c, h, ry, x, vw)
            else:
                if ry == k - 1 or h == H - 1:
                    Yf[vindex((c * H + h + p - ry) * W + x, vw)] = clamp_value(
                        vload(Yf, (c * H + h + p - ry) * W + x, vw) + taps(Wl, R, c, h, ry, x, vw), clamp)
                else:
                    Yf[vindex((c * H + h + p - ry) * W + x, vw)] = vload(Yf, (c * H + h + p - ry) * W + x, vw) + taps(
                        Wl, R, c, h, ry, x, vw)

    @T.macro
    def group(Yf, Wl, B, R, c, h, x0, n, vw):
        for q in T.unroll(n):
            for ry in T.unroll(k):
                update(Yf, Wl, B, R, c, h, ry, x0 + q * vw, vw)

    @T.macro
    def copy_group(Xf, R, g, x0, n, vw):
        for q in T.unroll(n):
            R[vindex(g % RING * row + lead + x0 + q * vw, vw)] = vload(Xf, g * W + x0 + q * vw, vw)

    @T.macro
    def copy_row(Xf, R, g):
        # input row g of the whole tensor (row g % H of channel g // H) into ring slot g % RING; the slots'
        # zero borders are never written
        copy_group(Xf, R, g, G[0][0], G[0][1], G[0][2])
        if G[1][1] > 0:
            copy_group(Xf, R, g, G[1][0], G[1][1], G[1][2])
        if G[2][1] > 0:
            copy_group(Xf, R, g, G[2][0], G[2][1], G[2][2])
        if G[3][1] > 0:
            copy_group(Xf, R, g, G[3][0], G[3][1], G[3][2])
        if G[4][1] > 0:
            copy_group(Xf, R, g, G[4][0], G[4][1], G[4][2])

    @T.macro
    def input_row(Xf, Wl, B, Yf, R, c, h, c1):
        # rows are copied AHEAD of use across channel boundaries too, so a channel's first rows are ready
        if (c * H + h) + AHEAD < c1 * H:
            copy_row(Xf, R, c * H + h + AHEAD)
        group(Yf, Wl, B, R, c, h, G[0][0], G[0][1], G[0][2])
        if G[1][1] > 0:
            group(Yf, Wl, B, R, c, h, G[1][0], G[1][1], G[1][2])
        if G[2][1] > 0:
            group(Yf, Wl, B, R, c, h, G[2][0], G[2][1], G[2][2])
        if G[3][1] > 0:
            group(Yf, Wl, B, R, c, h, G[3][0], G[3][1], G[3][2])
        if G[4][1] > 0:
            group(Yf, Wl, B, R, c, h, G[4][0], G[4][1], G[4][2])

    @T.macro
    def channels(Xf, Wf, B, Yf, R, Wl, c0, c1):
        for z in range(ring):
            R[z] = T.float32(0)
        for j in range(AHEAD):
            if c0 * H + j < c1 * H:
                copy_row(Xf, R, c0 * H + j)
        for c in range(c0, c1):
            for i in T.unroll(k * k):
                Wl[i] = Wf[c * k * k + i]
            # top rows, interior rows, bottom rows: in the interior every tap row is inside the plane and the
            # first/last tests depend on ry alone, so they fold away once ry is unrolled
            for h in range(top):
                input_row(Xf, Wl, B, Yf, R, c, h, c1)
            for h in range(p, p + middle):
                input_row(Xf, Wl, B, Yf, R, c, h, c1)
            for h in range(bottom, H):
                input_row(Xf, Wl, B, Yf, R, c, h, c1)

    @T.prim_func
    def dwconv(x_h: T.handle, w_h: T.handle, b_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, (1, C, H, W), "float32")
        Wt = T.match_buffer(w_h, (C, 1, k, k), "float32")
        B = T.match_buffer(b_h, (C,), "float32")
        Y = T.match_buffer(y_h, (1, C, H, W), "float32")
        Xf = T.decl_buffer((C * H * W,), "float32", data=X.data)
        Wf = T.decl_buffer((C * k * k,), "float32", data=Wt.data)
        Yf = T.decl_buffer((C * H * W,), "float32", data=Y.data)
        if parallel:
            for t in T.parallel(tasks):
                Rp = T.decl_buffer((ring,), "float32")
                Wlp = T.decl_buffer((k * k,), "float32", scope="local")
                channels(Xf, Wf, B, Yf, Rp, Wlp, t * per_task, T.min(C, t * per_task + per_task))
        else:
            R = T.decl_buffer((ring,), "float32")
            Wl = T.decl_buffer((k * k,), "float32", scope="local")
            channels(Xf, Wf, B, Yf, R, Wl, 0, C)

    return dwconv


def _flat_row(height: int, width: int, pad: int, lanes: int) -> int:
    """Floats per padded row of the flat walk: ``width + pad`` (row y's right padding is row y + 1's left), or
    that rounded up to a power of two when it costs no more vectors: vector-aligned rows, whose centre taps and
    row copies are aligned (14x14 on AVX-512: rows of 16 take 0.58 cycles per pixel, rows of 15 0.81)."""
    tight, aligned = width + pad, 1 << (width + pad - 1).bit_length()
    vectors = lambda w: -(-(height * w) // lanes)  # noqa: E731
    return aligned if vectors(aligned) <= vectors(tight) else tight


def _make_flat(spec: DepthwiseS1Spec):
    C, H, W, k, p, lanes = spec.channels, spec.height, spec.width, spec.kernel, spec.pad, spec.lanes
    clamp, parallel = spec.clamp, spec.threads > 1
    G = _groups(W, lanes)
    Wp = _flat_row(H, W, p, lanes)
    n_vec = -(-(H * Wp) // lanes)
    lead = p * Wp + p  # zeros before row 0's data: p pad rows and row 0's left pad (rounded up to a vector)
    lead += -lead % lanes
    # the last vector's farthest tap: q < n_vec * lanes, offset (k - 1) * Wp + k - 1 - p
    plane = lead + n_vec * lanes + (k - 1) * Wp + k
    base = lead - p * Wp - p  # S index of padded position (row -p, column -p) + ... for output q = 0, tap (0, 0)

    tasks = min(spec.threads, C)
    per_task = -(-C // tasks)
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
    def move(dst, dst_at, src, src_at, n, vw):
        for q in T.unroll(n):
            dst[vindex(dst_at + q * vw, vw)] = vload(src, src_at + q * vw, vw)

    @T.macro
    def row_pieces(dst, dst_at, src, src_at):
        move(dst, dst_at + G[0][0], src, src_at + G[0][0], G[0][1], G[0][2])
        if G[1][1] > 0:
            move(dst, dst_at + G[1][0], src, src_at + G[1][0], G[1][1], G[1][2])
        if G[2][1] > 0:
            move(dst, dst_at + G[2][0], src, src_at + G[2][0], G[2][1], G[2][2])
        if G[3][1] > 0:
            move(dst, dst_at + G[3][0], src, src_at + G[3][0], G[3][1], G[3][2])
        if G[4][1] > 0:
            move(dst, dst_at + G[4][0], src, src_at + G[4][0], G[4][1], G[4][2])

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

    @T.prim_func
    def dwconv(x_h: T.handle, w_h: T.handle, b_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, (1, C, H, W), "float32")
        Wt = T.match_buffer(w_h, (C, 1, k, k), "float32")
        B = T.match_buffer(b_h, (C,), "float32")
        Y = T.match_buffer(y_h, (1, C, H, W), "float32")
        Xf = T.decl_buffer((C * H * W,), "float32", data=X.data)
        Wf = T.decl_buffer((C * k * k,), "float32", data=Wt.data)
        Yf = T.decl_buffer((C * H * W,), "float32", data=Y.data)
        if parallel:
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

    return dwconv
