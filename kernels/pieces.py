"""Rows and tiles cut into pieces LLVM codes well, and the macro that visits them.

A width of pixels (or output columns) is cut into whole vectors of the target's lanes, then power-of-two pieces
below a vector, widest first; each piece is one statement kind over ``vectors`` vectors of ``lanes`` lanes.
Templates write their per-piece work as a macro ``body(ctx, start, vectors, lanes)`` and visit the pieces with
``each_piece``: TVMScript has no loop over a Python list, so the visit unrolls itself at parse time.
"""

from __future__ import annotations

from tvm.script import tirx as T


def tile_pieces(width: int, lanes: int) -> list[tuple[int, int, int]]:
    """A tile of ``width`` pixels as pieces ``(start, vectors, vector width)``: whole vectors of ``lanes``, then
    power-of-two pieces below a vector, widest first (68 at 16 lanes: (0, 4, 16), (64, 1, 4)). LLVM legalises a
    vector of any other width badly (1024x1024x49 on AVX-512: a 48-lane vector + 1 took 0.52 ms, 32 + 16 + 1
    lanes 0.20 ms)."""
    pieces, at = [], 0
    if width >= lanes:
        pieces.append((0, width // lanes, lanes))
        at = width // lanes * lanes
    for k in reversed(range(lanes.bit_length())):
        if (width - at) & (1 << k) and (1 << k) < lanes:
            pieces.append((at, 1, 1 << k))
            at += 1 << k
    assert at == width, (width, lanes, pieces)
    return pieces


@T.macro
def _visit(body, pieces, ctx, again):
    # a macro cannot name itself (its closure is taken when it is defined), so it is passed itself as `again`
    body(ctx, pieces[0][0], pieces[0][1], pieces[0][2])
    if len(pieces) > 1:
        again(body, pieces[1:], ctx, again)


@T.macro
def each_piece(body, pieces, ctx):
    """``body(ctx, start, vectors, lanes)`` for every piece of ``pieces`` (``tile_pieces``), in order. ``ctx``: what
    the body needs besides the piece, e.g. a namedtuple of buffers and indices."""
    _visit(body, pieces, ctx, _visit)
