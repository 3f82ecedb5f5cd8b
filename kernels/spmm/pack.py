"""Pack a dense 1x1-conv / fully-connected weight W[Cout, Cin] (+ bias) into the Fast-Sparse-ConvNets layout.

Layout (one layer, `block` output channels per block, chosen by `choose_block`):

* ``values`` (float32): the ``Cout`` biases, then the weights segment by segment: for each nonzero input
  channel (column) of a segment, ``block`` values (the block's weights of that column, zeros included when the
  column is partly filled; a remainder row's one weight padded with ``block - 1`` zeros). Every column then
  takes ``block`` values, so nonzero column ``k`` (counted in segment order) starts at ``Cout + block * k``:
  the kernel finds any segment's weights from ``segment_ptr`` alone, without a running sum (a loop-carried
  scalar would be a TIR local buffer, which wasm turns into a workspace call).
* Segments: the nonzero columns of one (input-channel chunk, block) pair, in chunk-major order: chunk 0 of
  every block, then chunk 1 of every block, ... Input channels are cut into chunks of ``chunk`` channels (one
  chunk = all of them by default) so that a chunk's ``chunk x MR`` activation tile fits L1; the kernel walks a
  tile chunk by chunk, every block per chunk, so chunk-major order makes each pass read its weights as one
  contiguous stream. (Block-major, each pass hopped over the weights row by row: MobileNetV1-p90 with its
  512-channel layers cut ran 1.6% slower than with them whole; chunk-major 3.8% faster than block-major,
  10 alternating rounds of the whole model on the x86 host.) ``segment_ptr`` (int32, ``n_chunks * n_blocks + 1``)
  holds the prefix sums of the segments' column counts: segment (chunk c, block g) is columns
  ``segment_ptr[c * n_blocks + g]`` to ``segment_ptr[c * n_blocks + g + 1]``. With one chunk this is the
  plain block-major CSR of XNNPACK's format.
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
after the full blocks of each chunk, in the same arrays.
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
    values: np.ndarray  # float32 [cout + block * stored columns]
    segment_ptr: np.ndarray  # int32 [n_chunks * n_blocks + 1], chunk-major
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
    def columns_per_block(self) -> np.ndarray:
        """Stored nonzero columns of each block, over all chunks."""
        return np.diff(self.segment_ptr).reshape(self.n_chunks, self.n_blocks).sum(axis=0)

    @property
    def block_ptr(self) -> np.ndarray:
        """Prefix sums of ``columns_per_block`` (the CSR row pointer of the one-chunk layout), int32."""
        return np.concatenate([[0], np.cumsum(self.columns_per_block)]).astype(np.int32)

    @property
    def nonzeros_per_block(self) -> np.ndarray:
        return self.columns_per_block

    @property
    def columns(self) -> int:
        """Stored nonzero columns (channel indices), summed over blocks."""
        return int(self.segment_ptr[-1])

    @property
    def stored_weights(self) -> int:
        """Weights stored (zeros of partly filled block columns and remainder-row padding included), biases
        excluded."""
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
    nfull = cout // block
    groups = [(r * block, block) for r in range(nfull)] + [(r, 1) for r in range(nfull * block, cout)]
    weights, ptr, index = [], [0], []
    for c in range(n_chunks):
        lo, hi = c * chunk, min(cin, (c + 1) * chunk)
        for row0, size in groups:
            rows = w[row0 : row0 + size, lo:hi]  # [size, channels of chunk c]
            cols = np.flatnonzero((rows != 0).any(axis=0))  # ascending, relative to lo
            block_w = np.zeros((cols.size, block), np.float32)
            block_w[:, :size] = rows[:, cols].T  # one column's `size` weights, padded to `block` values
            weights.append(block_w.reshape(-1))
            index.append(cols if chunk_local else cols + lo)
            ptr.append(ptr[-1] + cols.size)
    assert len(ptr) == n_chunks * len(groups) + 1
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
        values=np.concatenate([bias] + weights).astype(np.float32),
        segment_ptr=np.asarray(ptr, np.int32),
        channel_index=channel_index,
        nonzeros=int(np.count_nonzero(w)),
    )


def unpack_spmm_weights(p: PackedSpmm) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_spmm_weights` (for tests): dense ``w[Cout, Cin]`` and ``bias[Cout]``."""
    w = np.zeros((p.cout, p.cin), np.float32)
    bias = p.values[: p.cout].copy()
    groups = [(r * p.block, p.block) for r in range(p.n_full_blocks)] + [
        (r, 1) for r in range(p.n_full_blocks * p.block, p.cout)
    ]
    for c in range(p.n_chunks):
        for g, (row0, size) in enumerate(groups):
            s = c * p.n_blocks + g
            for k in range(p.segment_ptr[s], p.segment_ptr[s + 1]):
                base = c * p.chunk if p.chunk_local else 0
                col = base + int(p.channel_index[k]) // p.stride
                at = p.cout + p.block * k
                w[row0 : row0 + size, col] = p.values[at : at + size]
    assert p.values.size == p.cout + p.block * p.columns
    return w, bias
