"""Per-target choice of f32-spmm parameters: data from the target descriptor, never a test on the target's name.

Descriptor keys read (``[tiles]`` of ``targets/<name>.toml``):

* ``spmm_mr``: pixels per tile for blocks of one output channel (default 32).
* ``spmm_mr_wide``: a wider tile a layer takes when its activations stay L1 hits at that width (absent: never;
  see ``spmm_tiling_for``).
* ``spmm_acc_registers``: vector registers the accumulator tile may use (default 8: x86-64 and wasm engines on
  x86 hosts have 16 vector registers; the tile, one activation vector and the broadcast weight must fit).
  A block of ``b`` output channels keeps ``b * MR / lanes`` accumulators, so wide blocks get a narrower tile.
  Measured on the x86 host (256x256x784, 90%): 32x4 spills (0.49 ms), 16x4 does not (0.30 ms).
* ``spmm_join_registers``: accumulators the last tile may use when the ``H*W % MR`` remainder joins it (default:
  ``spmm_acc_registers``; see ``spmm_join_registers_for``).
* ``spmm_l1_bytes``: the L1 data cache the activation tile should fit (absent: never cut into chunks). A layer
  whose ``Cin x tile row`` activation tile is larger is walked in input-channel chunks that fit (see
  ``spmm_chunk_for``) when its nonzeros are dense enough to pay for the chunks.
* ``spmm_chunk_min_reuse`` (default 16): the least ``nonzeros per row and chunk x (1 - L1 / tile)`` that pays.
* ``spmm_prefetch_min_bytes``: prefetch the next pixel tile's activation and output rows in a layer whose input
  or output has at least this many bytes (absent: never; see ``spmm_prefetch_for``).
* ``spmm_pack_tile``: copy each pixel tile's activations into an aligned, contiguous scratch tile before the
  nonzero loops (default false). Rows of 14x14 or 7x7 floats start off 64-byte boundaries, so without the copy
  most activation vector loads split a cache line: on the x86 host (AVX-512, MR 64, 90%) the copy takes
  512x512x196 from 0.143 to 0.110 ms and 1024x1024x49 from 0.197 to 0.147 ms; aligned layers (56x56, 28x28) are
  unchanged. The scratch comes from the kernel workspace; wasm32 turns every scratch buffer into a workspace
  call, and the arm64 gain is unmeasured (no arm64 hardware here), so only the x86 descriptors turn it on.
  Tried and not kept: reading vector-aligned rows in place when few stored columns use each (x86_64 on the Zen 1
  host, alone: 144->24 @56x56 at 90% 0.380 -> 0.293 ms, 192->32 @28x28 0.142 -> 0.123); whole MobileNetV2-p85,
  6 rounds x 30 runs, copy / in place: 0.993 [0.970..1.006], MobileNetV1-p70 0.977.
"""

from __future__ import annotations

import math
from typing import NamedTuple

DEFAULT_MR = 32
DEFAULT_ACC_REGISTERS = 8


def spmm_acc_registers_for(target) -> int:
    return int(target.tiles.get("spmm_acc_registers", DEFAULT_ACC_REGISTERS))


def spmm_join_registers_for(target) -> int:
    """Accumulators the last pixel tile may use with the remainder joined (template.py ``plan_tiles``): a
    remainder pass costs its index and weight loads per nonzero however few its pixels, and a one-row tile at the
    budget has registers to spare for one more (16 on AVX2: 8 accumulators, the broadcast weight and the pair
    sum's temporary leave 5). Measured on the Zen 1 host with x86_64's 9 (MR 64 + the 4-pixel remainder of 14x14
    in one pass of 68, against 64 + 4): MobileNetV1-p70's 512->512 @14 layers in the model (4 alternating
    profiles of 30 runs) 1.442 -> 1.369 ms each, the whole model's kernels 18.29 -> 17.91 ms; alone
    (benchmarks/spmm_layers.py) 512x512x196 at 70% 1.47 -> 1.42 ms, at 90% 0.58 -> 0.57. Ten would also join
    28x28's 16-pixel remainder (64 + 80), whose 80-float rows no longer fit L1 at MR 64 in 128->256 @28: that
    layer fell back to MR 32 and lost 4-15%."""
    return int(target.tiles.get("spmm_join_registers", spmm_acc_registers_for(target)))


def spmm_mr_for(target, block: int = 1, key: str = "spmm_mr") -> int:
    """Pixels per tile (MR) for blocks of ``block`` output channels on ``target`` (an ``edgesparse.targets.Target``);
    ``key``: the descriptor's tile to take (``spmm_mr``, or ``spmm_mr_wide`` when it has one)."""
    lanes = target.vector_lanes_f32
    mr = int(target.tiles.get(key, target.tiles.get("spmm_mr", DEFAULT_MR)))
    budget = spmm_acc_registers_for(target)
    cap = max(lanes, (budget * lanes) // block)
    return max(1, min(mr, cap))


def spmm_pack_tile_for(target, pixels: int, reuse: float = math.inf) -> bool:
    """Whether the kernel of a layer with ``pixels`` output pixels, ``reuse`` nonzeros per input channel (the
    output rows that read each row of the tile), copies its activation tiles (descriptor ``tiles.spmm_pack_tile``);
    never for fewer pixels than one vector (a fully-connected layer: nothing to align).

    A layer whose channel rows start on cache lines (``pixels`` a multiple of 16) and whose tile rows are read by
    fewer than ``tiles.spmm_pack_min_reuse`` output rows reads them in place: the copy costs a store per
    activation (one 128-bit store a cycle on the Zen 1 host) that so few reads do not repay. Measured there in
    MobileNetV2-p85 (6 alternating per-kernel profiles, ms, copied -> in place, with the next tile's rows
    prefetched where the kernel prefetches), every layer in place: 32->16 @112 (reuse 2.4) 0.191 -> 0.166, 96->24
    @56 (3.6) 0.165 -> 0.151, 144->32 @28 (4.8) 0.073 -> 0.068, 144->24 @56 (3.6, a residual) 0.254 -> 0.259,
    192->32 @28 (4.8) 0.097 -> 0.098 and 0.102 -> 0.100; layers of higher reuse lost 1-4% and 14x14 / 7x7 ones (rows
    off cache lines) 3-15%. With this rule at 5, 6 more profiles: 0.190 -> 0.177, 0.170 -> 0.160, 0.074 -> 0.070,
    and the 144->24 @56 0.258 -> 0.267 (kept: a rule fitted to its one loss would be fitted to noise)."""
    if not target.tiles.get("spmm_pack_tile", False) or pixels < target.vector_lanes_f32:
        return False
    return bool(pixels % 16 != 0 or reuse >= float(target.tiles.get("spmm_pack_min_reuse", 0)))


def spmm_prefetch_for(target, cin: int, cout: int, pixels: int, threads: int = 1) -> bool:
    """Whether the kernel of a ``cin -> cout`` layer over ``pixels`` prefetches its next tile's rows (descriptor
    ``tiles.spmm_prefetch_min_bytes``). A tile reads a few cache lines from each of ``cin`` rows and writes a few to
    each of ``cout``: hundreds of streams, which the hardware prefetchers do not follow, so when the tensors are
    past L2 every tile starts with misses to L3. The prefetches cost a load slot per line, a loss where the
    tensors are L2 hits. Measured on the Zen 1 host (MobileNetV1-p70, 3 alternating profiles of 30 runs, ms,
    without -> with on every layer): 32->64 @112 (1.6 MB in, 3.2 MB out) 1.400 -> 0.973, 64->128 @56 0.846 ->
    0.767, 128->128 @56 1.661 -> 1.587, but 128->256 @28 0.704 -> 0.739, 256->256 @28 1.472 -> 1.531 and
    512->512 @14 3-6% slower. Serial kernels only: a parallel task's next tile is another thread's."""
    least = target.tiles.get("spmm_prefetch_min_bytes")
    return least is not None and threads == 1 and 4 * max(cin, cout) * pixels >= int(least)


def spmm_plan_for(target, pixels: int, block: int, mr: int, threads: int = 1):
    """The kernel's tile plan (template.py ``plan_tiles``) of a ``pixels``-pixel layer with blocks of ``block`` and
    tiles of ``mr`` under ``target``'s accumulator and join budgets: what the packed tile's row stride and the cost
    model's tile walk read, as the kernel does from its spec."""
    from .template import plan_tiles

    return plan_tiles(pixels, mr, target.vector_lanes_f32, block, spmm_acc_registers_for(target), threads,
                      spmm_join_registers_for(target))


def spmm_tile_row_floats(target, pixels: int, block: int, mr: int, threads: int = 1,
                         reuse: float = math.inf) -> int:
    """Floats per input-channel row of the activation tile the kernel of a ``pixels``-pixel layer with blocks of
    ``block`` and tiles of ``mr`` gathers from: the packed scratch tile's row stride (what the packed weights'
    offsets count in), or the widest tile when it reads ``X`` directly."""
    plan = spmm_plan_for(target, pixels, block, mr, threads)
    if spmm_pack_tile_for(target, pixels, reuse):
        return plan.row_stride(target.vector_lanes_f32)
    return plan.widest


def spmm_chunk_for(target, row_floats: int, cin: int, stored_per_row: float) -> int:
    """Input channels per chunk of a layer whose kernel gathers activations from a tile of ``row_floats`` floats
    per input channel (a packed tile's row stride, or the tile width), with ``stored_per_row`` stored block
    columns per output block on average (nonzeros per row for blocks of one). ``cin`` means one chunk (no cut).

    Why and when: a tile larger than L1 makes most activation loads L2 hits (the kernel is bound by them: the
    512x512x196 layer at 90% runs 0.111 ms over 512 channels, 0.082 ms with the same nonzeros confined to 128).
    Chunks of ``tiles.spmm_l1_bytes`` make them L1 hits, but every (block, chunk) pair then costs a short loop
    and its accumulators' load and store through ``Y``, so a layer is cut only when the nonzeros per pair times
    the share of the tile L1 cannot hold reaches ``tiles.spmm_chunk_min_reuse``. Measured on the x86 host
    (AVX-512, MR 64, 48 KiB L1D; ms, whole -> cut; reuse in brackets): 512x512x196 (80-float rows: 160 KiB) at
    70% 0.333 -> 0.250 (30), at 80% 0.216 -> 0.179 (20), at 90% 0.110 -> 0.106 (10.1); 1024x1024x49 (64-float
    rows: 256 KiB) at 70% 0.481 -> 0.333 (47), at 90% 0.143 -> 0.121 (15.6); 512x1024x49 at 90% 0.058 -> 0.056
    (12); 256x256x784 at 80% 0.173 -> 0.161 (11.5), at 90% 0.098 -> 0.103 (5.8: left whole); 256x512x196 at 90%
    0.048 -> 0.051 (5.8). Those are layers alone in a loop, their weights warm; in a model they arrive cold,
    which is why the packed format stores segments chunk-major (pack.py: with block-major segments, cutting
    MobileNetV1-p90's 512-channel layers made the whole model 1.6% slower although each layer alone was 3-4%
    faster; chunk-major, it is 0.2% faster than leaving them whole, within the noise). x86_64-avx512 sets the
    threshold to 8, x86_64 (AVX2, MR 32: 12.2 lost, 16.3 won) to 14."""
    budget = target.tiles.get("spmm_l1_bytes")
    tile_bytes = 4 * max(1, row_floats) * cin
    if budget is None or tile_bytes <= int(budget):
        return cin
    chunk = max(16, (int(budget) // (4 * max(1, row_floats))) // 16 * 16)
    if chunk >= cin:
        return cin
    per_pair = stored_per_row * chunk / cin
    reuse = per_pair * (1.0 - int(budget) / tile_bytes)
    return chunk if reuse >= float(target.tiles.get("spmm_chunk_min_reuse", 16)) else cin


def spmm_eo_rows_for(target, width: int, plan, n_chunks: int, lanes: int) -> bool:
    """Whether the kernel of a layer with output rows of ``width`` pixels, tiled as ``plan`` (``plan_tiles``) in
    ``n_chunks`` input-channel chunks, stores its rows even columns first, then odd, for the stride-2 depthwise
    conv fused after the 1x1 it feeds (descriptor ``tiles.spmm_eo_rows``; template.py ``eo_width``,
    kernels/spmm_dwconv.py ``eo_input``). The kernel splits whole vectors of one row as it stores them, so every
    tile and the rows must be whole vectors, and its accumulators are a local tile, so one chunk."""
    if not target.tiles.get("spmm_eo_rows", False) or n_chunks != 1 or lanes < 2 or width % 2:
        return False
    widths = [plan.mr] + [w for _, w in plan.extra]
    return width % lanes == 0 and all(w % lanes == 0 for w in widths)


class SpmmTiling(NamedTuple):
    """How the kernel of one layer tiles it: MR, the activation tile's floats per input channel, the chunk."""

    mr: int
    row_floats: int
    chunk: int  # input channels per chunk (cin: one chunk)


def spmm_tiling_for(target, pixels: int, block: int, cin: int, stored_per_row: float,
                    threads: int = 1, reuse: float = math.inf) -> SpmmTiling:
    """MR, tile row and chunk of a layer (``stored_per_row`` as in ``spmm_chunk_for``, ``reuse`` as in
    ``spmm_pack_tile_for``).

    A wider tile halves the index and weight loads each nonzero costs per pixel (one pair per pass), so the
    descriptor's ``spmm_mr_wide`` is taken when the wide tile's activations stay L1 hits: when the whole tile
    fits ``tiles.spmm_l1_bytes`` or ``spmm_chunk_for`` cuts it into chunks that do. Otherwise most of its loads
    would be L2 hits, and ``spmm_mr`` is kept. Measured on the x86 host (AVX-512, ms, MR 64 -> 128, kernel
    alone, ``benchmarks/spmm_layers.py --mr``): at 70%, 32x64x12544 (16 KiB tile) 0.142 -> 0.121, 512x512x196
    (one pass of 196 in 11 chunks, against three in 4) 0.232 -> 0.216, 256x256x784 (4 chunks) 0.215 -> 0.212;
    left at 64 by the rule, 128x256x784 (64 KiB, whole) would go 0.102 -> 0.118. At 90%, where only tiles that
    fit whole take it, 32x64x12544 0.070 -> 0.065 and 64x128x3136 0.049 -> 0.051; 512x512x196 would go 0.097 ->
    0.107 (whole, 400 KiB)."""
    base = spmm_mr_for(target, block)
    wide = spmm_mr_for(target, block, "spmm_mr_wide")
    budget = target.tiles.get("spmm_l1_bytes")
    if wide > base and budget is not None:
        row = spmm_tile_row_floats(target, pixels, block, wide, threads, reuse)
        chunk = spmm_chunk_for(target, row, cin, stored_per_row)
        if chunk < cin or 4 * row * cin <= int(budget):
            return SpmmTiling(wide, row, chunk)
    row = spmm_tile_row_floats(target, pixels, block, base, threads, reuse)
    return SpmmTiling(base, row, spmm_chunk_for(target, row, cin, stored_per_row))
