"""Pack a dense 1x1-conv / fully-connected weight W[Cout, Cin] (+ bias) into the Fast-Sparse-ConvNets layout.

Layout (one layer, `block` output channels per block, chosen by `choose_block`):

* ``values`` (float32): for each block in order, the block's ``block`` biases, then for each nonzero input
  channel of the block the ``block`` weights of that column (zeros included when the column is partly filled).
* ``segment_ptr`` (int32, ``n_blocks * n_chunks + 1``): prefix sums of the nonzero counts per (block, input-channel
  chunk), block-major. Input channels are cut into chunks of ``chunk`` channels (one chunk = all of them by
  default) so that a chunk's ``chunk x MR`` activation tile fits L1; a block's nonzeros are sorted by channel, so
  the chunks only add boundaries, not data. ``block_ptr = segment_ptr[::n_chunks]`` and
  ``nonzeros_per_block = diff(block_ptr)``. The kernel walks output blocks inside a pixel tile, so it needs where
  each block's nonzeros start without a running sum (a loop-carried scalar would be a TIR local buffer, which
  wasm turns into a workspace call).
* ``channel_index``: per nonzero column, the activation offset of its input channel, ``channel * stride``
  elements. ``stride`` is the layer's H*W when packed for a kernel (the inner loop then adds the offset to the
  tile's base address: no multiply, no index arithmetic) or 1 (plain channel numbers, for tools and tests).
  int16 when the largest offset fits, else int32: as compact as the range allows.

Why element offsets rather than XNNPACK's byte deltas: TIR has no pointer that a loop can bump; a delta would
have to be summed into a loop-carried variable (a local buffer, which wasm turns into a workspace call), while
an absolute offset is one sign-extending load folded into the activation load's address. (On the x86 host the
multiply that plain channel numbers need was not measurable: 512x512x196 at 90%, 0.145 vs 0.144 ms; the kernel
is bound by its activation loads. Chunk-local offsets into a packed tile keep int16 for every MobileNet layer.)

Remainder: when ``Cout % block != 0`` the last ``Cout % block`` output channels are packed as blocks of one,
after the full blocks, in the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_SIZES = (4, 2, 1)
FILL_THRESHOLD = 0.9  # fraction of filled slots in nonzero blocks needed to use a wider block (anchors.md)


@dataclass(frozen=True)
class PackedSpmm:
    """One layer's packed sparse weights; arrays are what the kernel reads, in this order."""

    cout: int
    cin: int
    block: int
    chunk: int  # input channels per chunk (cin: one chunk)
    stride: int  # elements per input channel folded into channel_index (1: plain channel numbers)
    chunk_local: bool  # offsets count from the first channel of their chunk (a kernel's packed chunk tile)
    values: np.ndarray  # float32 [n_blocks_full*block*(1+nz) + remainder (1+nz)]
    segment_ptr: np.ndarray  # int32 [n_blocks * n_chunks + 1]
    channel_index: np.ndarray  # int16 or int32 [max(nnz_columns, 1)]: channel * stride (one pad entry if empty)
    nonzeros: int  # nonzero weights of the original dense matrix

    @property
    def n_full_blocks(self) -> int:
        return self.cout // self.block

    @property
    def n_remainder(self) -> int:
        return self.cout - self.n_full_blocks * self.block

    @property
    def n_blocks(self) -> int:
        return self.n_full_blocks + self.n_remainder

    @property
    def n_chunks(self) -> int:
        return -(-self.cin // self.chunk)

    @property
    def block_ptr(self) -> np.ndarray:
        return self.segment_ptr[:: self.n_chunks]

    @property
    def nonzeros_per_block(self) -> np.ndarray:
        return np.diff(self.block_ptr)

    @property
    def columns(self) -> int:
        """Stored nonzero columns (channel indices), summed over blocks."""
        return int(self.block_ptr[-1])

    @property
    def stored_weights(self) -> int:
        """Weights stored (zeros of partly filled block columns included), biases excluded."""
        return self.values.size - self.cout

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / float(self.cout * self.cin)

    @property
    def index_dtype(self) -> str:
        return str(self.channel_index.dtype)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.segment_ptr.nbytes + self.channel_index.nbytes


def block_fill_ratio(w: np.ndarray, block: int) -> float:
    """Filled slots / all slots over the nonzero block columns of the full ``block``-row groups of ``w``.

    1.0 for ``block == 1``; 1.0 when there are no nonzero columns (nothing to waste)."""
    cout, cin = w.shape
    nfull = cout // block
    if block == 1 or nfull == 0:
        return 1.0
    nz = (w[: nfull * block] != 0).reshape(nfull, block, cin)
    cols = nz.any(axis=1).sum()
    if cols == 0:
        return 1.0
    return float(nz.sum()) / float(cols * block)


def choose_block(w: np.ndarray, threshold: float = FILL_THRESHOLD) -> int:
    """4 when at least ``threshold`` of the slots of nonzero 4-blocks are filled, else 2 by the same test, else 1."""
    for block in BLOCK_SIZES[:-1]:
        if w.shape[0] >= block and block_fill_ratio(w, block) >= threshold:
            return block
    return 1


def index_dtype_for(cin: int, stride: int = 1) -> str:
    """The narrowest of int16/int32 holding the largest offset ``(cin - 1) * stride``."""
    return "int16" if (cin - 1) * stride <= np.iinfo(np.int16).max else "int32"


def compact_stride(span: int, stride: int) -> int:
    """The stride to fold into a layer's offsets: ``stride`` when the largest offset ``(span - 1) * stride`` fits
    int16, else 1 (plain channel numbers, int16 for every real layer, multiplied by the stride in the kernel).
    Measured on the x86 host: the multiply costs nothing (512x512x196 at 90%: 0.145 vs 0.144 ms), int32 offsets
    cost index bytes (MobileNetV1's 90% packed weights: 19.1% of dense fp32 with int32 offsets, 15% with int16)."""
    return stride if index_dtype_for(span, stride) == "int16" else 1


def pack_spmm_weights(
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    block: int | None = None,
    index_dtype: str | None = None,
    chunk: int | None = None,
    stride: int = 1,
    chunk_local: bool = False,
) -> PackedSpmm:
    """Pack dense ``w[Cout, Cin]`` (and ``bias[Cout]``, zeros if None) into a :class:`PackedSpmm`.

    ``block`` defaults to :func:`choose_block`; ``index_dtype`` to the narrowest of int16/int32 that holds
    ``(Cin - 1) * stride``; ``chunk`` (input channels per chunk) to ``Cin``; ``stride`` (elements per input
    channel, H*W for a kernel) to 1. ``chunk_local``: offsets count from the chunk's first channel (for kernels
    that copy each chunk of a pixel tile into a scratch tile of ``stride``-float rows)."""
    w = np.asarray(w, dtype=np.float32)
    assert w.ndim == 2, w.shape
    cout, cin = w.shape
    bias = np.zeros(cout, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(cout)
    if block is None:
        block = choose_block(w)
    assert block in BLOCK_SIZES, block
    chunk = cin if chunk is None else max(1, min(int(chunk), cin))
    span = chunk if chunk_local else cin  # offsets range over one chunk's channels or all of them
    if index_dtype is None:
        index_dtype = index_dtype_for(span, stride)
    assert index_dtype in ("int16", "int32") and stride >= 1, (index_dtype, stride)
    assert (span - 1) * stride <= np.iinfo(index_dtype).max, (span, stride, index_dtype)

    n_chunks = -(-cin // chunk)
    bounds = np.arange(1, n_chunks + 1) * chunk  # channel where each chunk ends
    nfull = cout // block
    groups = [(r * block, block) for r in range(nfull)] + [(r, 1) for r in range(nfull * block, cout)]
    values, ptr, index = [], [0], []
    for row0, size in groups:
        rows = w[row0 : row0 + size]  # [size, cin]
        cols = np.flatnonzero((rows != 0).any(axis=0))  # ascending: chunk c is cols[ends[c-1]:ends[c]]
        block_w = rows[:, cols].T  # [ncols, size]
        values.append(bias[row0 : row0 + size])
        values.append(block_w.reshape(-1))  # column-major within the block: size weights per column
        index.append(cols - (cols // chunk) * chunk if chunk_local else cols)
        ends = np.searchsorted(cols, bounds, side="left")
        base = ptr[-1]
        ptr.extend(int(base + e) for e in ends)
    assert len(ptr) == len(groups) * n_chunks + 1
    channel_index = (np.concatenate(index).astype(np.int64) * stride).astype(index_dtype) if ptr[-1] \
        else np.zeros(0, index_dtype)
    if channel_index.size == 0:
        channel_index = np.zeros(1, index_dtype)  # TIR buffers need one element; never read
    return PackedSpmm(
        cout=cout,
        cin=cin,
        block=block,
        chunk=chunk,
        stride=int(stride),
        chunk_local=bool(chunk_local),
        values=np.concatenate(values).astype(np.float32),
        segment_ptr=np.asarray(ptr, np.int32),
        channel_index=channel_index,
        nonzeros=int(np.count_nonzero(w)),
    )


def unpack_spmm_weights(p: PackedSpmm) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_spmm_weights` (for tests): dense ``w[Cout, Cin]`` and ``bias[Cout]``."""
    w = np.zeros((p.cout, p.cin), np.float32)
    bias = np.zeros(p.cout, np.float32)
    groups = [(r * p.block, p.block) for r in range(p.n_full_blocks)] + [
        (r, 1) for r in range(p.n_full_blocks * p.block, p.cout)
    ]
    at = 0
    for g, (row0, size) in enumerate(groups):
        bias[row0 : row0 + size] = p.values[at : at + size]
        at += size
        lo, hi = p.block_ptr[g], p.block_ptr[g + 1]
        for k in range(lo, hi):
            c = int(np.searchsorted(p.segment_ptr[g * p.n_chunks : (g + 1) * p.n_chunks + 1], k, side="right")) - 1
            base = c * p.chunk if p.chunk_local else 0
            w[row0 : row0 + size, base + int(p.channel_index[k]) // p.stride] = p.values[at : at + size]
            at += size
    assert at == p.values.size
    return w, bias
