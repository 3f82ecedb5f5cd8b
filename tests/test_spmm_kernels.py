"""f32-spmm family tester: every block size and tile remainder against numpy, compiled for the host with
``tvm.compile`` and run through TVM's runtime; plus the arm64 object's by-element FMAs and a wasm32 build."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import tvm

from conftest import requires_avx512
from edgesparse.kernels.spmm import (
    SpmmKernelSpec,
    choose_block,
    spmm_acc_registers_for,
    make_spmm_kernel,
    pack_spmm_weights,
    plan_tiles,
    spmm_mr_for,
    unpack_spmm_weights,
)
from edgesparse.targets import get_target

HOST = get_target("x86_64")
MR = spmm_mr_for(HOST)
CLAMPS = {"linear": None, "relu": (0.0, math.inf), "relu6": (0.0, 6.0), "minmax": (-0.5, 0.75)}


def random_sparse(rng, cout, cin, sparsity):
    w = rng.standard_normal((cout, cin)).astype(np.float32)
    w[rng.random(w.shape) < sparsity] = 0.0
    return w


def reference(w, bias, x, clamp, residual=None):
    y = w.astype(np.float64) @ x.astype(np.float64) + bias[:, None]
    if residual is not None:
        y = y + residual
    if clamp is not None:
        y = np.clip(y, clamp[0], clamp[1])
    return y.astype(np.float32)


# How a kernel finds a nonzero's activations: plain channel numbers (x H*W in the loop), element offsets into the
# CHW input, or chunk-local offsets into the aligned scratch tile the kernel copies (descriptor spmm_pack_tile).
LAYOUTS = ["channels", "offsets", "packed"]


def build_and_run(w, bias, x, *, block, mr, clamp=None, index_dtype=None, threads=1, chunk=None, unroll=0,
                  layout="channels", residual=None, prefetch=False, join=0, target=HOST, eo_width=0):
    cin, npix = x.shape
    lanes, acc = target.vector_lanes_f32, spmm_acc_registers_for(target)
    tile = plan_tiles(npix, mr, lanes, block, acc, threads, join).row_stride(lanes)  # the scratch tile's row stride
    stride = {"channels": 1, "offsets": npix, "packed": tile}[layout]
    packed = pack_spmm_weights(w, bias, block=block, index_dtype=index_dtype, chunk=chunk, stride=stride,
                               chunk_local=layout == "packed")
    spec = SpmmKernelSpec.for_packed(packed, npix, mr, clamp=clamp, threads=threads, unroll=unroll,
                                     lanes=lanes, acc_registers=acc, pack_tile=layout == "packed",
                                     residual=residual is not None, prefetch=prefetch, join_registers=join,
                                     eo_width=eo_width)
    func = make_spmm_kernel(spec)
    ex = tvm.compile(tvm.IRModule({spec.variant: func}), target=target.tvm_target())
    dev = tvm.cpu()
    y = np.full((w.shape[0], npix), np.nan, np.float32)
    inputs = (x, packed.values, packed.segment_ptr, packed.channel_index) + (() if residual is None else (residual,))
    args = [tvm.runtime.tensor(a, dev) for a in inputs + (y,)]
    ex.mod[spec.variant](*args)
    return args[-1].numpy(), packed, spec


def even_odd_rows(y, width):
    """[C, P] with each row of ``width`` pixels stored even columns first, then odd (an eo kernel's output)."""
    r = y.reshape(y.shape[0], -1, width)
    return np.concatenate([r[..., 0::2], r[..., 1::2]], axis=-1).reshape(y.shape)


def check(w, bias, x, **kw):
    got, packed, spec = build_and_run(w, bias, x, **kw)
    want = reference(w, bias, x, kw.get("clamp"), kw.get("residual"))
    if kw.get("eo_width"):
        want = even_odd_rows(want, kw["eo_width"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return packed, spec


# --- packing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offsets", [(1, None, False), (49, None, False), (64, 16, True), (3, 10, False)])
@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("cout", [1, 3, 8, 13])
def test_pack_roundtrip(block, cout, offsets):
    stride, chunk, chunk_local = offsets
    rng = np.random.default_rng(cout * 10 + block)
    w = random_sparse(rng, cout, 37, 0.8)
    bias = rng.standard_normal(cout).astype(np.float32)
    p = pack_spmm_weights(w, bias, block=block, stride=stride, chunk=chunk, chunk_local=chunk_local)
    w2, b2 = unpack_spmm_weights(p)
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(b2, bias)
    assert p.n_full_blocks == cout // block and p.n_remainder == cout % block
    assert p.block_ptr.dtype == np.int32 and p.block_ptr.size == p.n_blocks + 1
    assert p.nonzeros == np.count_nonzero(w)


def test_pack_index_dtype():
    rng = np.random.default_rng(1)
    assert pack_spmm_weights(random_sparse(rng, 4, 100, 0.5)).index_dtype == "int16"
    assert pack_spmm_weights(random_sparse(rng, 4, 100, 0.5), index_dtype="int32").index_dtype == "int32"
    wide = np.zeros((2, 40000), np.float32)
    wide[0, 39999] = 1.0
    assert pack_spmm_weights(wide).index_dtype == "int32"
    # offsets: the largest is (Cin - 1) * stride, or (chunk - 1) * stride when chunk-local
    w = random_sparse(rng, 4, 512, 0.5)
    assert pack_spmm_weights(w, stride=64).index_dtype == "int16"  # 511 * 64 = 32704
    assert pack_spmm_weights(w, stride=65).index_dtype == "int32"
    w = random_sparse(rng, 4, 1024, 0.5)
    assert pack_spmm_weights(w, stride=196).index_dtype == "int32"
    assert pack_spmm_weights(w, stride=64, chunk=256, chunk_local=True).index_dtype == "int16"
    assert pack_spmm_weights(w, stride=64, chunk=1024, chunk_local=True).index_dtype == "int32"


def test_choose_block_by_fill_ratio():
    rng = np.random.default_rng(2)
    unstructured = random_sparse(rng, 64, 64, 0.9)
    assert choose_block(unstructured) == 1
    mask4 = np.repeat(rng.random((16, 64)) < 0.2, 4, axis=0)  # 4 output channels share one mask per input channel
    assert choose_block(rng.standard_normal((64, 64)).astype(np.float32) * mask4) == 4
    mask2 = np.repeat(rng.random((32, 64)) < 0.2, 2, axis=0)
    assert choose_block(rng.standard_normal((64, 64)).astype(np.float32) * mask2) == 2


# --- kernels on the host ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("npix", [1, MR - 1, MR, MR + 1, 3 * MR + 5])
@pytest.mark.parametrize("cout", [4, 7])
def test_block_and_remainder_shapes(block, npix, cout, layout):
    rng = np.random.default_rng(block * 1000 + npix * 10 + cout)
    cin = 19
    w = random_sparse(rng, cout, cin, 0.7)
    bias = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((cin, npix)).astype(np.float32)
    check(w, bias, x, block=block, mr=spmm_mr_for(HOST, block), clamp=(0.0, math.inf), layout=layout)


@pytest.mark.parametrize("epilogue", list(CLAMPS))
@pytest.mark.parametrize("block", [1, 4])
def test_epilogues(epilogue, block):
    rng = np.random.default_rng(7)
    w = random_sparse(rng, 12, 24, 0.6)
    bias = rng.standard_normal(12).astype(np.float32)
    x = (3 * rng.standard_normal((24, 50))).astype(np.float32)
    _, spec = check(w, bias, x, block=block, mr=16, clamp=CLAMPS[epilogue])
    assert spec.variant == f"f32_spmm_16x{block}_{epilogue}"


@pytest.mark.parametrize("block,chunk,clamp,layout", [
    (1, None, "linear", "channels"), (4, None, "relu6", "offsets"), (1, 8, "relu6", "packed"),
    (4, 8, "linear", "packed"), (1, 8, "relu6", "offsets"), (4, None, "linear", "channels"),
])
def test_residual_added_before_the_clamp(block, chunk, clamp, layout):
    """A skip connection's tensor added at the last chunk, before the clamp: whole and chunked inputs, blocks and
    a remainder row, a tile remainder (MR + 3 pixels), every activation layout (each value of each in some case:
    the residual is added in the epilogue, apart from how the tile was read)."""
    rng = np.random.default_rng(block * 10 + (chunk or 0))
    w = random_sparse(rng, 9, 21, 0.7)
    bias = rng.standard_normal(9).astype(np.float32)
    x = rng.standard_normal((21, MR + 3)).astype(np.float32)
    residual = (3 * rng.standard_normal((9, MR + 3))).astype(np.float32)
    _, spec = check(w, bias, x, block=block, mr=MR, clamp=CLAMPS[clamp], chunk=chunk, layout=layout,
                    residual=residual)
    assert spec.variant == f"f32_spmm_{MR}x{block}_add_{clamp}"


@pytest.mark.parametrize("block", [1, 2, 4])
def test_one_nonzero(block):
    rng = np.random.default_rng(3)
    w = np.zeros((9, 16), np.float32)
    w[5, 11] = 2.5
    bias = rng.standard_normal(9).astype(np.float32)
    x = rng.standard_normal((16, 40)).astype(np.float32)
    packed, _ = check(w, bias, x, block=block, mr=8)
    assert packed.columns == 1


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", [1, 2, 4])
def test_all_zero_rows_and_blocks(block, layout):
    rng = np.random.default_rng(4)
    w = random_sparse(rng, 14, 20, 0.5)
    w[0:4] = 0.0  # a whole 4-block (and 2-blocks, rows) empty
    w[9] = 0.0
    w[13] = 0.0  # a remainder row empty
    bias = rng.standard_normal(14).astype(np.float32)
    x = rng.standard_normal((20, 37)).astype(np.float32)
    packed, _ = check(w, bias, x, block=block, mr=8, clamp=(0.0, 6.0), layout=layout)
    assert (packed.nonzeros_per_block == 0).any()


def test_all_zero_matrix():
    rng = np.random.default_rng(5)
    w = np.zeros((6, 10), np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    x = rng.standard_normal((10, 33)).astype(np.float32)
    check(w, bias, x, block=1, mr=MR)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("index_dtype", ["int16", "int32"])
@pytest.mark.parametrize("block", [1, 4])
def test_index_dtypes(index_dtype, block, layout):
    rng = np.random.default_rng(6)
    w = random_sparse(rng, 16, 300, 0.9)
    bias = rng.standard_normal(16).astype(np.float32)
    x = rng.standard_normal((300, 70)).astype(np.float32)
    packed, _ = check(w, bias, x, block=block, mr=MR, index_dtype=index_dtype, layout=layout)
    assert packed.index_dtype == index_dtype


def test_int32_indices_for_wide_input():
    rng = np.random.default_rng(8)
    cin = 33000
    w = np.zeros((3, cin), np.float32)
    w[0, [5, 32800]] = [1.0, -2.0]
    w[2, 32999] = 0.5
    x = rng.standard_normal((cin, 2)).astype(np.float32)
    packed, _ = check(w, np.zeros(3, np.float32), x, block=1, mr=MR)
    assert packed.index_dtype == "int32"


def test_fully_connected_single_pixel():
    rng = np.random.default_rng(9)
    w = random_sparse(rng, 10, 64, 0.8)
    bias = rng.standard_normal(10).astype(np.float32)
    x = rng.standard_normal((64, 1)).astype(np.float32)
    check(w, bias, x, block=choose_block(w), mr=MR)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_threads_parallel_tiles(layout):
    rng = np.random.default_rng(10)
    w = random_sparse(rng, 24, 32, 0.8)
    bias = rng.standard_normal(24).astype(np.float32)
    x = rng.standard_normal((32, 5 * MR + 3)).astype(np.float32)
    check(w, bias, x, block=2, mr=MR, threads=2, clamp=(0.0, math.inf), layout=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_shape_256x256x784(layout):
    rng = np.random.default_rng(11)
    w = random_sparse(rng, 256, 256, 0.9)
    bias = rng.standard_normal(256).astype(np.float32)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    check(w, bias, x, block=1, mr=MR, clamp=(0.0, 6.0), layout=layout)


@pytest.mark.parametrize("side", [7, 14])
def test_packed_tile_misaligned_rows(side):
    """MobileNet's 7x7 and 14x14 layers: CHW rows off 64-byte boundaries, copied into the aligned tile."""
    rng = np.random.default_rng(side)
    w = random_sparse(rng, 40, 96, 0.9)
    bias = rng.standard_normal(40).astype(np.float32)
    x = rng.standard_normal((96, side * side)).astype(np.float32)
    for chunk in (None, 32):
        check(w, bias, x, block=1, mr=64, clamp=(0.0, 6.0), layout="packed", chunk=chunk)


# --- cross targets ------------------------------------------------------------------------------------------


def compile_object(target_name, block, tmp_path, prefetch=False):
    rng = np.random.default_rng(12)
    target = get_target(target_name)
    w = random_sparse(rng, 32, 64, 0.8)
    packed = pack_spmm_weights(w, None, block=block)
    spec = SpmmKernelSpec.for_packed(packed, 200, spmm_mr_for(target, block), clamp=(0.0, 6.0), prefetch=prefetch)
    ex = tvm.compile(tvm.IRModule({spec.variant: make_spmm_kernel(spec)}), target=target.tvm_target())
    path = tmp_path / f"{spec.variant}_{target_name}.o"
    ex.mod.write_to_file(str(path))
    return path


needs_objdump = pytest.mark.skipif(shutil.which("llvm-objdump-14") is None, reason="llvm-objdump-14 not installed")


@needs_objdump
@pytest.mark.parametrize("block", [1, 4])
def test_arm64_by_element_fma(block, tmp_path):
    obj = compile_object("arm64", block, tmp_path)
    asm = subprocess.run(["llvm-objdump-14", "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    by_element = [ln for ln in asm.splitlines() if "fmla" in ln and ".4s" in ln and ".s[" in ln]
    assert len(by_element) >= 8, "expected fmla vN.4s, vM.4s, vK.s[i] by-element FMAs"


@needs_objdump
@pytest.mark.parametrize("block", [1, 2, 4])
def test_wasm32_builds_without_workspace(block, tmp_path):
    obj = compile_object("wasm32", block, tmp_path)
    assert obj.read_bytes()[:4] == b"\0asm"
    syms = subprocess.run(["llvm-nm-14", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "__TVMBackendAllocWorkspace" not in syms  # accumulators stay in registers, no local buffer


@needs_objdump
def test_x86_inner_loop_has_no_stores(tmp_path):
    """The accumulator tile stays in registers: the nonzero loop of the 32x1 kernel is FMAs from memory only."""
    obj = compile_object("x86_64", 1, tmp_path)
    asm = subprocess.run(["llvm-objdump-14", "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    lines = asm.splitlines()
    fma_at = [i for i, ln in enumerate(lines) if "vfmadd231ps" in ln and "(%" in ln]
    assert fma_at
    first, last = fma_at[0], fma_at[-1]
    window = lines[first : min(last, first + 40)]
    assert not any("vmovaps\t%ymm" in ln and "(%" in ln.split(",")[-1] for ln in window)


@needs_objdump
@pytest.mark.parametrize("prefetch", [False, True])
def test_x86_prefetches_only_in_the_prfm_variant(prefetch, tmp_path):
    """The _prfm kernel's object has prefetch instructions; the plain one has none."""
    obj = compile_object("x86_64", 1, tmp_path, prefetch=prefetch)
    asm = subprocess.run(["llvm-objdump-14", "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    assert ("\tprefetch" in asm) == prefetch  # the mnemonic (the path of the object names the test)


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chunk", [16, 48, 100])
def test_input_channel_chunks(block, chunk, layout):
    """Chunked packing (segment_ptr per block and input-channel chunk) gives the same result."""
    rng = np.random.default_rng(13 + chunk)
    w = random_sparse(rng, 11, 100, 0.8)
    w[:, 16:48] = 0.0  # a chunk with no nonzeros in any row
    bias = rng.standard_normal(11).astype(np.float32)
    x = rng.standard_normal((100, MR + 3)).astype(np.float32)
    packed, spec = check(w, bias, x, block=block, mr=MR, clamp=(0.0, 6.0), chunk=chunk, layout=layout)
    assert packed.n_chunks == -(-100 // chunk) and spec.n_chunks == packed.n_chunks
    assert packed.segment_ptr.size == packed.n_blocks * packed.n_chunks + 1
    w2, b2 = unpack_spmm_weights(packed)
    np.testing.assert_array_equal(w2, w)


@pytest.mark.parametrize("block,chunk,layout,residual", [
    (1, None, "packed", False), (1, 16, "packed", True), (4, 16, "packed", False), (2, None, "offsets", True),
    (4, None, "channels", False),
])
@pytest.mark.parametrize("npix", [MR + 3, 3 * MR, 3 * MR + 17])
def test_prefetching_variant(block, chunk, layout, residual, npix):
    """The _prfm variant (next tile's rows prefetched, the addresses clamped to the buffers) computes the same:
    blocks with a remainder row, chunks, a residual, the last tile's prefetches at the buffers' ends."""
    rng = np.random.default_rng(npix + block)
    w = random_sparse(rng, 11, 40, 0.7)
    bias = rng.standard_normal(11).astype(np.float32)
    x = rng.standard_normal((40, npix)).astype(np.float32)
    res = (3 * rng.standard_normal((11, npix))).astype(np.float32) if residual else None
    _, spec = check(w, bias, x, block=block, mr=MR, clamp=(0.0, 6.0), chunk=chunk, layout=layout, residual=res,
                    prefetch=True)
    assert spec.variant.endswith("_relu6_prfm")


@pytest.mark.parametrize("block,layout,residual,prefetch,threads", [
    (1, "offsets", False, True, 1), (1, "offsets", True, True, 1), (2, "channels", False, False, 1),
    (4, "packed", True, False, 1), (1, "packed", False, True, 1), (1, "offsets", True, False, 2),
])
@pytest.mark.parametrize("height,width", [(4, 112), (3, 56), (5, 24), (2, 8)])
def test_even_odd_rows(block, layout, residual, prefetch, threads, height, width):
    """The eo variant stores each output row even columns first, then odd: tiles that span rows, the remainder
    tile joined or apart, blocks with a remainder row, a residual added at the natural pixels, prefetches of the
    next tile's half rows, parallel tiles."""
    rng = np.random.default_rng(height * width + block)
    w = random_sparse(rng, 11, 30, 0.8)
    bias = rng.standard_normal(11).astype(np.float32)
    npix = height * width
    x = rng.standard_normal((30, npix)).astype(np.float32)
    res = (3 * rng.standard_normal((11, npix))).astype(np.float32) if residual else None
    mr = min(MR, npix)
    _, spec = check(w, bias, x, block=block, mr=mr, clamp=(0.0, 6.0), layout=layout, residual=res,
                    prefetch=prefetch, threads=threads, eo_width=width, join=9)
    assert "_relu6_eo" in spec.variant


def test_even_odd_rows_rule():
    """x86_64's spmm_eo_rows: rows and tiles of whole vectors, one chunk; never without the descriptor key."""
    from dataclasses import replace

    from edgesparse.kernels.spmm import spmm_eo_rows_for

    lanes = HOST.vector_lanes_f32
    assert HOST.tiles["spmm_eo_rows"]
    assert spmm_eo_rows_for(HOST, 112, plan_tiles(112 * 112, 64, lanes, 1, 8, 1, 9), 1, lanes)
    assert spmm_eo_rows_for(HOST, 56, plan_tiles(56 * 56, 32, lanes, 1, 8, 1, 9), 1, lanes)
    assert not spmm_eo_rows_for(HOST, 56, plan_tiles(56 * 56, 32, lanes, 1, 8, 1, 9), 2, lanes)  # chunks
    assert not spmm_eo_rows_for(HOST, 28, plan_tiles(28 * 28, 64, lanes, 1, 8, 1, 9), 1, lanes)  # 28: 3.5 vectors
    assert not spmm_eo_rows_for(HOST, 14, plan_tiles(14 * 14, 64, lanes, 1, 8, 1, 9), 1, lanes)
    plain = replace(HOST, tiles={k: v for k, v in HOST.tiles.items() if k != "spmm_eo_rows"})
    assert not spmm_eo_rows_for(plain, 112, plan_tiles(112 * 112, 64, lanes, 1, 8, 1, 9), 1, lanes)


def test_prefetch_rule_from_descriptor():
    from dataclasses import replace

    from edgesparse.kernels.spmm import spmm_prefetch_for

    t = replace(HOST, tiles={**HOST.tiles, "spmm_prefetch_min_bytes": 1 << 20})
    assert spmm_prefetch_for(t, 32, 64, 112 * 112)  # 3.2 MB out
    assert spmm_prefetch_for(t, 144, 24, 56 * 56)  # 1.8 MB in
    assert not spmm_prefetch_for(t, 256, 256, 28 * 28)  # 0.8 MB each: L2 hits
    assert not spmm_prefetch_for(t, 32, 64, 112 * 112, threads=2)  # a parallel task's next tile is not its own
    plain = replace(HOST, tiles={k: v for k, v in HOST.tiles.items() if k != "spmm_prefetch_min_bytes"})
    assert not spmm_prefetch_for(plain, 32, 64, 112 * 112)


def test_pack_rule_reads_aligned_rows_with_few_readers_in_place():
    """x86_64's spmm_pack_min_reuse: a layer whose channel rows start on cache lines and are read by fewer than 5
    output rows each reads its tiles in place; other layers copy them."""
    from edgesparse.kernels.spmm import spmm_pack_tile_for

    assert HOST.tiles["spmm_pack_min_reuse"] == 5
    assert not spmm_pack_tile_for(HOST, 112 * 112, 2.4)  # MobileNetV2-p85's 32->16
    assert spmm_pack_tile_for(HOST, 112 * 112, 6.4)
    assert spmm_pack_tile_for(HOST, 14 * 14, 2.4)  # rows off cache lines: copied however few read them
    assert spmm_pack_tile_for(HOST, 56 * 56)  # no reuse given: copied


def test_in_place_layer_in_a_model_matches_onnxruntime(tmp_path):
    """Through compile: a 32 -> 8 sparse 1x1 at 112x112 (1.2 readers per input row, 1.6 MB in: read in place, the
    next tile prefetched) and the 8 -> 32 one after it (copied), against ONNX Runtime."""
    from onnx import helper

    from edgesparse.compiler import compile as compile_model
    from edgesparse.harness.verify import verify

    from conftest import save_graph

    rng = np.random.default_rng(5)
    w1, w2 = random_sparse(rng, 8, 32, 0.85), random_sparse(rng, 32, 8, 0.3)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"]), helper.make_node("Conv", ["h", "w2", "b2"], ["y"])]
    weights = {"w1": w1[:, :, None, None], "b1": rng.standard_normal(8).astype(np.float32),
               "w2": w2[:, :, None, None], "b2": rng.standard_normal(32).astype(np.float32)}
    path = save_graph(tmp_path / "proj.onnx", nodes, {"x": [1, 32, 112, 112]}, {"y": [1, 32, 112, 112]}, weights)
    res = compile_model(path, "x86_64", tmp_path / "proj", sparse="on", tuned=False)
    assert [layer["kind"] for layer in res.manifest["layers"]] == ["f32_spmm_64x1_linear_prfm"] * 2
    rep = verify(path, res.out_dir)
    assert rep.ok and rep.worst < 1e-5, rep.outputs


@pytest.mark.parametrize("unroll", [1, 2, 4])
@pytest.mark.parametrize("block", [1, 4])
def test_nonzero_unroll(unroll, block):
    rng = np.random.default_rng(14)
    w = random_sparse(rng, 9, 40, 0.7)  # rows with 0..n nonzeros: every remainder of the unrolled loop
    w[3, :] = 0.0
    w[4, :] = 0.0
    w[4, 7] = 1.0
    bias = rng.standard_normal(9).astype(np.float32)
    x = rng.standard_normal((40, 2 * MR + 1)).astype(np.float32)
    check(w, bias, x, block=block, mr=MR, clamp=(0.0, math.inf), unroll=unroll)


def test_chunk_and_mr_from_descriptor():
    from dataclasses import replace

    from edgesparse.kernels.spmm import spmm_chunk_for

    assert [spmm_mr_for(HOST, b) for b in (1, 2, 4)] == [MR, MR, min(MR, 8 * HOST.vector_lanes_f32 // 4)]
    plain = replace(HOST, tiles={k: v for k, v in HOST.tiles.items() if k != "spmm_l1_bytes"})
    assert spmm_chunk_for(plain, 32, 1024, 512.0) == 1024  # no spmm_l1_bytes: no chunks
    l1 = replace(HOST, tiles={**HOST.tiles, "spmm_l1_bytes": 32768, "spmm_chunk_min_reuse": 16})
    # 1024 channels x 32 floats = 128 KiB: 256-channel chunks fit 32 KiB; at 30% density 77 nonzeros per row
    # and chunk x (1 - 32/128) = 58 >= 16: cut; at 5%: 12.8 x 0.75 = 9.6 < 16: whole
    assert spmm_chunk_for(l1, 32, 1024, 0.3 * 1024) == 256
    assert spmm_chunk_for(l1, 32, 1024, 0.05 * 1024) == 1024
    assert spmm_chunk_for(l1, 32, 64, 64.0) == 64  # the whole tile fits: one chunk


AVX512 = get_target("x86_64-avx512")


def test_wide_tile_only_where_it_stays_in_l1():
    from dataclasses import replace

    from edgesparse.kernels.spmm import spmm_tiling_for

    t = replace(AVX512, tiles={**AVX512.tiles, "spmm_mr": 64, "spmm_mr_wide": 128, "spmm_l1_bytes": 49152,
                                "spmm_chunk_min_reuse": 8, "spmm_pack_tile": True})
    # 32 channels x 128 floats = 16 KiB: the wide tile fits whole
    assert spmm_tiling_for(t, 112 * 112, 1, 32, 9.6) == (128, 128, 32)
    # 512 channels at 70% (154 nonzeros per row): one pass of 196 (rows of 208 floats) in chunks of 48 channels
    assert spmm_tiling_for(t, 196, 1, 512, 153.6) == (128, 208, 48)
    # at 90% (51 per row) chunks of the wide tile do not pay and whole it is 416 KiB: MR 64 (rows of 80)
    assert spmm_tiling_for(t, 196, 1, 512, 51.2) == (64, 80, 144)
    # blocks of 4: 4 x 128 / 16 accumulators are past the register budget, so the wide tile is the narrow one
    assert spmm_tiling_for(t, 196, 4, 512, 153.6).mr == 64
    # a descriptor without spmm_mr_wide keeps spmm_mr
    plain = replace(t, tiles={k: v for k, v in t.tiles.items() if k != "spmm_mr_wide"})
    assert spmm_tiling_for(plain, 112 * 112, 1, 32, 9.6).mr == 64


@requires_avx512
@pytest.mark.parametrize("npix,cin,sparsity", [(196, 512, 0.7), (784, 256, 0.7), (112 * 112, 32, 0.9)])
def test_wide_tile_kernel(npix, cin, sparsity):
    """The kernel the wide-tile rule picks (one pass of 196, chunks, the joined remainder) against numpy."""
    from edgesparse.kernels.spmm import spmm_tiling_for
    from edgesparse.cost import stored_weights

    rng = np.random.default_rng(npix + cin)
    w = random_sparse(rng, 24, cin, sparsity)
    bias = rng.standard_normal(24).astype(np.float32)
    x = rng.standard_normal((cin, npix)).astype(np.float32)
    tiling = spmm_tiling_for(AVX512, npix, 1, cin, stored_weights(w, 1) / 24)
    assert tiling.mr == AVX512.tiles["spmm_mr_wide"]
    chunk = tiling.chunk if tiling.chunk < cin else None
    check(w, bias, x, block=1, mr=tiling.mr, clamp=(0.0, 6.0), chunk=chunk, layout="packed", target=AVX512)


# --- cross targets, run: a plain C driver calls the kernel object (no TVM runtime), like the artifact does -------

DRIVER = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tvm/ffi/c_api.h"

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  fprintf(stderr, "kernel error %%s:", kind);
  for (int32_t i = 0; i < n; ++i) if (parts[i]) fprintf(stderr, " %%s", parts[i]);
  fprintf(stderr, "\n");
}
int __tvm_ffi_%(name)s(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

%(arrays)s

int main(void) {
  DLTensor t[5] = {
%(tensors)s
  };
  TVMFFIAny args[5];
  memset(args, 0, sizeof args);
  for (int i = 0; i < 5; ++i) { args[i].type_index = kTVMFFIDLTensorPtr; args[i].v_ptr = &t[i]; }
  TVMFFIAny result;
  memset(&result, 0, sizeof result);
  result.type_index = kTVMFFINone;
  int rc = __tvm_ffi_%(name)s(NULL, args, 5, &result);
  double err = 0.0;
  for (int i = 0; i < %(n_out)d; ++i) {
    double d = fabs((double)y[i] - (double)y_ref[i]);
    if (!(d <= err)) err = d;
  }
  printf("rc=%%d max_abs_err=%%g\n", rc, err);
  return (rc == 0 && err < 1e-4) ? 0 : 1;
}
"""

C_TYPES = {"float32": ("float", "kDLFloat", 32), "int32": ("int32_t", "kDLInt", 32), "int16": ("int16_t", "kDLInt", 16)}


def c_array(name, a):
    ctype = C_TYPES[str(a.dtype)][0]
    body = ", ".join(repr(float(v)) + "f" if a.dtype == np.float32 else str(int(v)) for v in a.reshape(-1))
    return f"static {ctype} {name}[{max(a.size, 1)}] __attribute__((aligned(64))) = {{{body}}};"


def c_tensor(name, a):
    _, code, bits = C_TYPES[str(a.dtype)]
    shape = ", ".join(f"{int(s)}" for s in a.shape)
    return (f"    {{{name}, {{kDLCPU, 0}}, {a.ndim}, {{{code}, {bits}, 1}}, (int64_t[]){{{shape}}}, NULL, 0}},")


def build_runner(target_name, tmp_path, block):
    """Kernel object for target_name + generated C driver with inputs and numpy's expected output, linked by zig."""
    pytest.importorskip("ziglang")
    import os
    import sys

    import tvm_ffi

    rng = np.random.default_rng(31 + block)
    target = get_target(target_name)
    cin, cout, npix = 24, 10, 2 * spmm_mr_for(target, block) + 7  # remainder output rows and pixel tiles
    w = random_sparse(rng, cout, cin, 0.7)
    bias = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((cin, npix)).astype(np.float32)
    packed = pack_spmm_weights(w, bias, block=block)
    spec = SpmmKernelSpec.for_packed(packed, npix, spmm_mr_for(target, block), clamp=(0.0, 6.0))
    ex = tvm.compile(tvm.IRModule({spec.variant: make_spmm_kernel(spec)}), target=target.tvm_target())
    obj = tmp_path / f"{spec.variant}.o"
    ex.mod.write_to_file(str(obj))
    y_ref = reference(w, bias, x, (0.0, 6.0))
    y = np.zeros_like(y_ref)
    inputs = [("x", x), ("values", packed.values), ("segment_ptr", packed.segment_ptr),
              ("channel_index", packed.channel_index), ("y", y)]
    src = DRIVER % {
        "name": spec.variant,
        "arrays": "\n".join([c_array(n, a) for n, a in inputs] + [c_array("y_ref", y_ref)]),
        "tensors": "\n".join(c_tensor(n, a) for n, a in inputs),
        "n_out": y_ref.size,
    }
    (tmp_path / "driver.c").write_text(src)
    root = os.path.dirname(tvm_ffi.__file__)
    exe = tmp_path / target.runner_name
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", target.zig_target, *target.cflags,
           *target.runner_ldflags, "-I", os.path.join(root, "include"),
           "-I", os.path.join(root, "3rdparty", "dlpack", "include"), str(tmp_path / "driver.c"), str(obj),
           "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-aarch64 not installed")
@pytest.mark.parametrize("block", [1, 4])
def test_arm64_kernel_runs_under_qemu(block, tmp_path):
    exe = build_runner("arm64", tmp_path, block)
    out = subprocess.run(["qemu-aarch64", str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


NODE_WASI = """
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
const wasi = new WASI({ version: 'preview1', args: ['k'], env: {}, returnOnExit: true });
const mod = await WebAssembly.compile(await readFile(process.argv[2]));
const inst = await WebAssembly.instantiate(mod, wasi.getImportObject());
process.exit(wasi.start(inst));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
@pytest.mark.parametrize("block", [1, 2])
def test_wasm32_kernel_runs_in_node(block, tmp_path):
    exe = build_runner("wasm32", tmp_path, block)
    (tmp_path / "run.mjs").write_text(NODE_WASI)
    out = subprocess.run(["node", str(tmp_path / "run.mjs"), str(exe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tile_plan_joins_remainder_when_accumulators_fit():
    from edgesparse.kernels.pieces import tile_pieces

    assert tile_pieces(68, 16) == [(0, 4, 16), (64, 1, 4)]
    assert tile_pieces(49, 16) == [(0, 3, 16), (48, 1, 1)]
    assert tile_pieces(7, 16) == [(0, 1, 4), (4, 1, 2), (6, 1, 1)]
    assert tile_pieces(32, 8) == [(0, 4, 8)]
    # AVX-512, MR 64, 16 accumulator registers: 14x14 -> 64 + 64 + 68 (three passes), 7x7 -> one pass of 49
    p = plan_tiles(196, 64, 16, 1, 16, threads=1)
    assert (p.mr, p.n_uniform, p.extra, p.row_stride(16)) == (64, 2, ((128, 68),), 80)
    assert plan_tiles(49, 64, 16, 1, 16, threads=1).extra == ((0, 49),)
    # blocks of 4 rows: 4 x 5 accumulators exceed 16 -> the remainder is a tile of its own
    assert plan_tiles(196, 64, 16, 4, 16, threads=1).extra == ((192, 4),)
    # threads: the remainder never lengthens a task of the parallel loop
    assert plan_tiles(196, 64, 16, 1, 16, threads=2).extra == ((192, 4),)
    assert plan_tiles(3136, 64, 16, 1, 16, threads=1).extra == ()


def test_join_budget_takes_a_partial_vector_remainder_into_the_last_tile():
    """``join_registers`` (descriptor spmm_join_registers): AVX2, MR 64, 8 accumulators: 14x14's 4-pixel remainder
    joins with 9 (64 + 64 + 68, row stride 72), 28x28's 16 would need 10 and stays a tile of its own, blocks of 2
    stay apart, and 0 keeps the accumulator budget."""
    p = plan_tiles(196, 64, 8, 1, 8, threads=1, join_registers=9)
    assert (p.n_uniform, p.extra, p.row_stride(8)) == (2, ((128, 68),), 72)
    assert plan_tiles(196, 64, 8, 1, 8, threads=1).extra == ((192, 4),)
    assert plan_tiles(784, 64, 8, 1, 8, threads=1, join_registers=9).extra == ((768, 16),)
    assert plan_tiles(196, 32, 8, 2, 8, threads=1, join_registers=9).extra == ((192, 4),)
    assert plan_tiles(196, 64, 8, 1, 8, threads=2, join_registers=9).extra == ((192, 4),)


def test_join_budget_from_descriptor():
    from dataclasses import replace

    from edgesparse.cost import tile_walk
    from edgesparse.kernels.spmm import spmm_join_registers_for, spmm_tile_row_floats

    assert spmm_join_registers_for(HOST) == HOST.tiles["spmm_join_registers"]
    plain = replace(HOST, tiles={k: v for k, v in HOST.tiles.items() if k != "spmm_join_registers"})
    assert spmm_join_registers_for(plain) == spmm_acc_registers_for(plain)
    nine = replace(HOST, tiles={**HOST.tiles, "spmm_join_registers": 9})
    # the packed tile's row stride and the cost model's passes follow the kernel's plan
    assert spmm_tile_row_floats(nine, 196, 1, 64) == 72 and spmm_tile_row_floats(plain, 196, 1, 64) == 64
    assert tile_walk(nine, 196, 1, 64).passes == 3 and tile_walk(plain, 196, 1, 64).passes == 4


@pytest.mark.parametrize("block,chunk,layout", [
    (1, None, "packed"), (1, 16, "packed"), (1, None, "offsets"), (1, None, "channels"), (2, 16, "packed"),
])
@pytest.mark.parametrize("npix", [196, 3 * 64 + 1, 2 * 64 + 2])
def test_joined_partial_vector_remainder(block, chunk, layout, npix):
    """A kernel whose last tile takes the remainder under the join budget (68, 65 or 66 pixels wide at MR 64)
    computes what numpy does, chunked or whole, from every activation layout."""
    rng = np.random.default_rng(npix * 10 + block)
    w = random_sparse(rng, 13, 48, 0.7)
    bias = rng.standard_normal(13).astype(np.float32)
    x = rng.standard_normal((48, npix)).astype(np.float32)
    _, spec = check(w, bias, x, block=block, mr=64, clamp=(0.0, 6.0), chunk=chunk, layout=layout, join=9)
    plan = plan_tiles(npix, 64, HOST.vector_lanes_f32, block, spmm_acc_registers_for(HOST), 1, 9)
    assert plan.extra[0][1] == (64 + npix % 64 if block == 1 else npix % 64)
