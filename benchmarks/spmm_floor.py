"""Benchmark: edgesparse's generated f32-spmm kernel against the same algorithm written by hand with AVX-512
intrinsics (benchmarks/spmm_floor.c), side by side on MobileNetV1's 1x1-layer shapes.

    python -m benchmarks.spmm_floor [--sparsity 0.9 0.7] [--runs 30]

What it answers: how much of the gap between the sparse kernel and the machine is code generation (TVM, the
template) and how much is the algorithm (one activation vector load per nonzero and vector: the kernel is bound
by loads, not FMAs). Both kernels read the same packed weights (kernels/spmm/pack.py, blocks of one, chunks as
the compiler chooses them for x86_64-avx512), copy each 64-pixel tile into an aligned scratch tile and apply
bias + ReLU6. Pixels are rounded down to a multiple of 64 (the C kernel has no remainder tiles; 7x7 layers run
64 pixels). Timed in rotation, median of --runs samples; outputs checked against numpy first. Needs an AVX-512
host; the C file is compiled with the hermetic zig (`python -m ziglang cc`).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tvm

from edgesparse.cost import stored_weights
from edgesparse.kernels.spmm import (
    SpmmKernelSpec,
    pack_spmm_weights,
    spmm_acc_registers_for,
    spmm_chunk_for,
)
from edgesparse.prune import magnitude_prune
from edgesparse.targets import get_target

from .spmm_layers import MOBILENET_V1_1X1, RELU6, checked_kernel, measure, stats

MR = 64


def build_reference(tmp: Path) -> ctypes.CDLL:
    src = Path(__file__).with_name("spmm_floor.c")
    lib = tmp / "spmm_floor.so"
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-gnu", "-O3", "-march=x86_64_v4",
           "-shared", "-fPIC", str(src), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))
    f = so.floor_spmm_64x1
    P = ctypes.c_void_p
    f.argtypes = [P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, P, P, P, P, ctypes.c_float,
                  ctypes.c_float, P]
    f.restype = None
    return so


def aligned(n: int) -> np.ndarray:
    """n float32 zeros starting on a 64-byte boundary."""
    raw = np.zeros(n + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip : skip + n]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.7])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    if "avx512f" not in Path("/proc/cpuinfo").read_text():
        print("needs an AVX-512 host (the reference is written with AVX-512 intrinsics)")
        return 1
    desc = get_target("x86_64-avx512")
    assert desc.tiles.get("spmm_mr") == MR and desc.tiles.get("spmm_pack_tile"), "descriptor changed: update"
    target = tvm.target.Target(dict(desc.tvm))
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    print(f"{'layer':>5} {'Cin':>5} {'Cout':>5} {'pixels':>6} {'sp':>4} {'ch':>3} {'edgesparse ms':>22} "
          f"{'hand AVX-512 ms':>22} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="edgesparse-floor-") as tmp:
        ref = build_reference(Path(tmp))
        for sp in args.sparsity:
            total = {"tvm": 0.0, "c": 0.0}
            for li, (cin, cout, side) in enumerate(MOBILENET_V1_1X1):
                npix = max(MR, side * side // MR * MR)
                w = magnitude_prune((rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32), sp)
                b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
                x = rng.standard_normal((cin, npix)).astype(np.float32)
                want = np.clip(w @ x + b[:, None], *RELU6).astype(np.float32)
                chunk = spmm_chunk_for(desc, MR, cin, stored_weights(w, 1) / cout)
                packed = pack_spmm_weights(w, b, block=1, stride=MR, chunk=chunk, chunk_local=True,
                                           index_dtype="int16")
                spec = SpmmKernelSpec.for_packed(packed, npix, MR, clamp=RELU6, lanes=desc.vector_lanes_f32,
                                                 acc_registers=spmm_acc_registers_for(desc), pack_tile=True)
                kern, targs = checked_kernel(spec, packed, x, want, target, dev)

                xc, yc, scratch = aligned(x.size), aligned(want.size), aligned(packed.chunk * MR)
                xc[:] = x.reshape(-1)
                vals, seg, idx = packed.values, packed.segment_ptr, packed.channel_index
                cargs = (xc.ctypes.data, cin, cout, npix, packed.chunk, vals.ctypes.data, seg.ctypes.data,
                         idx.ctypes.data, yc.ctypes.data, RELU6[0], RELU6[1], scratch.ctypes.data)
                ref.floor_spmm_64x1(*cargs)
                np.testing.assert_allclose(yc.reshape(want.shape), want, rtol=1e-4, atol=1e-4)

                times = measure({"tvm": lambda: kern(*targs), "c": lambda: ref.floor_spmm_64x1(*cargs)},
                                args.runs, args.warmup)
                t, c = stats(times["tvm"]), stats(times["c"])
                total["tvm"] += t[0]
                total["c"] += c[0]
                fmt = lambda m: f"{m[0]:8.4f} [{m[1]:.4f}..{m[2]:.4f}]"
                print(f"{li:>5} {cin:>5} {cout:>5} {npix:>6} {sp:>4.2f} {packed.n_chunks:>3} {fmt(t):>22} "
                      f"{fmt(c):>22} {t[0] / c[0]:>6.2f}", flush=True)
            print(f"sum at {sp:.2f}: edgesparse {total['tvm']:.3f} ms, hand-written {total['c']:.3f} ms, "
                  f"ratio {total['tvm'] / total['c']:.2f}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
