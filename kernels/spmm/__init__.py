"""f32-spmm kernel family: sparse weights x dense CHW activations (1x1 convolutions, fully-connected layers).

``pack.py`` builds the packed weight format, ``template.py`` the TIR variants, ``config.py`` picks a variant's
parameters for a target from its descriptor.
"""

from .config import (
    spmm_acc_registers_for,
    spmm_chunk_for,
    spmm_eo_rows_for,
    spmm_join_registers_for,
    spmm_mr_for,
    spmm_pack_tile_for,
    spmm_plan_for,
    spmm_prefetch_for,
    spmm_tile_row_floats,
    spmm_tiling_for,
)
from .pack import PackedSpmm, choose_block, compact_stride, pack_spmm_weights, unpack_spmm_weights
from .template import SpmmKernelSpec, epilogue_name, fit_tile, make_spmm_kernel, plan_tiles

__all__ = [
    "PackedSpmm",
    "SpmmKernelSpec",
    "choose_block",
    "compact_stride",
    "epilogue_name",
    "fit_tile",
    "make_spmm_kernel",
    "pack_spmm_weights",
    "plan_tiles",
    "spmm_acc_registers_for",
    "spmm_chunk_for",
    "spmm_eo_rows_for",
    "spmm_join_registers_for",
    "spmm_mr_for",
    "spmm_pack_tile_for",
    "spmm_plan_for",
    "spmm_prefetch_for",
    "spmm_tile_row_floats",
    "spmm_tiling_for",
    "unpack_spmm_weights",
]
