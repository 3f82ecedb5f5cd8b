"""What the row-walking window templates share (kernels/stride1/depthwise.py, kernels/stride2/depthwise.py).

A row walk reads each input row once, from a small ring of zero-bordered (or de-interleaved) rows that stays in
L1, and updates the output rows the input row touches, which are the accumulators. The ring is filled
``AHEAD`` rows before use, counting rows over the whole tensor (across channels): a row read right after it was
stored would make its unaligned tap loads wait for the stores to reach L1 (store forwarding fails when a load
spans two stores). A hand-written AVX-512 C loop over 48-pixel rows: 0.55 cycles per pixel with a distance of
1, 0.39 with 3.

The value helpers make one TIR expression of a ``lanes``-wide access, a scalar one when ``lanes`` is 1.
"""

from __future__ import annotations

from tvm.script import tirx as T

AHEAD = 3  # rows between the copy of a row into the ring and its use
RING = 4  # ring slots: AHEAD + the row in use


def vload(buf, start, lanes):
    """``buf[start : start + lanes]``."""
    return buf[T.ramp(start, 1, lanes)] if lanes > 1 else buf[start]


def vindex(start, lanes):
    """The index of a ``lanes``-wide store at ``start``."""
    return T.ramp(start, 1, lanes) if lanes > 1 else start


def vbcast(value, lanes):
    """A scalar ``value`` in every lane."""
    return T.broadcast(value, lanes) if lanes > 1 else value
