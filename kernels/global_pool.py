"""f32 global average pooling over CHW activations: y[c] = mean(x[c, :, :]). A TIR template.

A channel's H*W values are contiguous: they are summed as whole vectors, and the sum vector is then halved
(its upper half added to its lower half, a shuffle each) down to one lane, the power-of-two pieces that do not
fill a vector (49 = 3 x 16 + 1 at 16 lanes) joining at the width they have. Each channel is a short
independent chain, so the out-of-order core overlaps channels. The window schedule (kernels/window.py), which
sums each channel's values one by one, took 0.011-0.013 ms for MobileNet's 1024 and 1280 channels of 7x7
(bench --profile, AVX-512); this template 0.001 ms.

Variant ``f32_global_avgpool{P}_{L}`` (P = H*W, L lanes). Arguments: ``x`` [1, C, H, W], ``y`` [1, C, 1, 1] or
[1, C] (any shape of C floats). Threads split channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
from tvm.script import tirx as T

from .pieces import tile_pieces
from .row_ring import split_channels, vload


@dataclass(frozen=True)
class GlobalPoolSpec:
    channels: int
    pixels: int  # H*W
    lanes: int
    threads: int = 1
    in_shape: tuple[int, ...] | None = None  # default (1, C, P)
    out_shape: tuple[int, ...] | None = None  # default (1, C, 1, 1)

    @property
    def variant(self) -> str:
        return f"f32_global_avgpool{self.pixels}_{self.lanes}"

    def supported(self) -> str | None:
        return None if self.channels >= 1 and self.pixels >= 1 else f"empty input {self.channels}x{self.pixels}"


def _halve(acc, width: int):
    """The ``width``-lane vector ``acc`` as a ``width / 2``-lane one: upper half added to the lower (let-bound:
    ``acc`` is used twice)."""
    v = tvm.tirx.Var("s", f"float32x{width}")
    half = width // 2
    lo = T.Shuffle([v], list(range(half)))
    hi = T.Shuffle([v], list(range(half, width)))
    return tvm.tirx.Let(v, acc, lo + hi)


def channel_sum(Xf, at, pixels: int, lanes: int):
    """The sum of ``Xf[at : at + pixels]`` as one scalar TIR expression (module doc)."""
    pieces = tile_pieces(pixels, lanes)
    acc, width = None, None
    w = max(vw for _, _, vw in pieces)
    while w >= 1:
        if acc is not None and width > w:
            acc, width = _halve(acc, width), width // 2
        for start, nq, vw in pieces:
            if vw == w:
                for q in range(nq):
                    v = vload(Xf, at + start + q * vw, vw)
                    acc = v if acc is None else acc + v
                width = w
        w //= 2
    while width > 1:
        acc, width = _halve(acc, width), width // 2
    return acc


def make_global_pool_kernel(spec: GlobalPoolSpec, name: str | None = None):
    C, P, lanes = spec.channels, spec.pixels, spec.lanes
    in_shape = tuple(spec.in_shape or (1, C, P))
    out_shape = tuple(spec.out_shape or (1, C, 1, 1))
    assert math.prod(in_shape) == C * P and math.prod(out_shape) == C
    tasks, per_task = split_channels(spec.threads, C)
    scale = 1.0 / P

    @T.prim_func
    def global_avgpool(x_h: T.handle, y_h: T.handle):
        T.func_attr({"tirx.noalias": True})
        X = T.match_buffer(x_h, in_shape, "float32")
        Y = T.match_buffer(y_h, out_shape, "float32")
        Xf = T.decl_buffer((C * P,), "float32", data=X.data)
        Yf = T.decl_buffer((C,), "float32", data=Y.data)
        if tasks > 1:
            for t in T.parallel(tasks):
                for c in range(t * per_task, T.min(C, t * per_task + per_task)):
                    Yf[c] = channel_sum(Xf, c * P, P, lanes) * T.float32(scale)
        else:
            for c in range(C):
                Yf[c] = channel_sum(Xf, c * P, P, lanes) * T.float32(scale)

    return global_avgpool.with_attr("global_symbol", name or spec.variant)


__all__ = ["GlobalPoolSpec", "make_global_pool_kernel", "channel_sum"]
