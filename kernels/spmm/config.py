"""Per-target choice of f32-spmm parameters: data from the target descriptor, never a test on the target's name.

Descriptor keys read (``[tiles]`` of ``targets/<name>.toml``):

* ``spmm_mr``: pixels per tile for blocks of one output channel (default 32).
* ``spmm_acc_registers``: vector registers the accumulator tile may use (default 8: x86-64 and wasm engines on
  x86 hosts have 16 vector registers; the tile, one activation vector and the broadcast weight must fit).
  A block of ``b`` output channels keeps ``b * MR / lanes`` accumulators, so wide blocks get a narrower tile.
  Measured on the x86 host (256x256x784, 90%): 32x4 spills (0.49 ms), 16x4 does not (0.30 ms).
* ``spmm_l1_bytes``: bytes of L1 the activation tile of one input-channel chunk may take (absent: no chunks).
* ``spmm_pack_tile``: copy each pixel tile's activations into an aligned, contiguous scratch tile before the
  nonzero loops (default false). Rows of 14x14 or 7x7 floats start off 64-byte boundaries, so without the copy
  most activation vector loads split a cache line: on the x86 host (AVX-512, MR 64, 90%) the copy takes
  512x512x196 from 0.143 to 0.110 ms and 1024x1024x49 from 0.197 to 0.147 ms; aligned layers (56x56, 28x28) are
  unchanged. The scratch comes from the kernel workspace; wasm32 turns every scratch buffer into a workspace
  call, and the arm64 gain is unmeasured (no arm64 hardware here), so only the x86 descriptors turn it on.
"""

from __future__ import annotations

DEFAULT_MR = 32
DEFAULT_ACC_REGISTERS = 8


def spmm_acc_registers_for(target) -> int:
    return int(target.tiles.get("spmm_acc_registers", DEFAULT_ACC_REGISTERS))


def spmm_mr_for(target, block: int = 1) -> int:
    """Pixels per tile (MR) for blocks of ``block`` output channels on ``target`` (an ``edgesparse.targets.Target``)."""
    lanes = target.vector_lanes_f32
    mr = int(target.tiles.get("spmm_mr", DEFAULT_MR))
    budget = spmm_acc_registers_for(target)
    cap = max(lanes, (budget * lanes) // block)
    return max(1, min(mr, cap))


def spmm_pack_tile_for(target, pixels: int) -> bool:
    """Whether the kernel of a layer with ``pixels`` output pixels copies its activation tiles (descriptor
    ``tiles.spmm_pack_tile``); never for fewer pixels than one vector (a fully-connected layer: nothing to align)."""
    return bool(target.tiles.get("spmm_pack_tile", False)) and pixels >= target.vector_lanes_f32


def spmm_chunk_for(target, mr: int, cin: int) -> int:
    """Input channels per chunk so that a chunk's ``chunk x MR`` f32 activation tile fits the descriptor's
    ``tiles.spmm_l1_bytes``; ``cin`` (one chunk, no cut) when the key is absent or all channels fit. Chunks are
    multiples of 16 channels. Off by default: on the x86 host (Zen 5, 48 KiB L1D) cutting 512/1024-channel layers
    into 64..256-channel chunks was never faster at MR 32/64 (0.27 -> 0.28 ms at 1024x1024x49, 0.171 -> 0.165 ms
    at 512x512x196, 90%), smaller chunks slower: those layers are not L1-bound."""
    budget = target.tiles.get("spmm_l1_bytes")
    if budget is None:
        return cin
    chunk = max(16, (int(budget) // (4 * max(1, mr))) // 16 * 16)
    return cin if chunk >= cin else chunk
