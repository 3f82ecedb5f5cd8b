"""Benchmark: the f32-spmm kernels on MobileNetV1 (1.0, 224) 1x1-conv layer shapes against ONNX Runtime's dense
1x1 conv (CPU EP, 1 intra-op thread) and edgesparse's own dense conv kernel (kernels/conv2d.py), side by side.

    python benchmarks/spmm_layers.py [--sparsity 0.7 0.8 0.9] [--runs 31] [--mr 64] [--mcpu znver5] [--json out.json]

Each layer computes relu6(W x X + b) on a 1 x Cin x H x W input. Weights: Gaussian, magnitude-pruned per layer to
the given sparsity (unstructured), block size and input-channel chunks (``ch``) chosen as the compiler does. The
kernels are timed in rotation inside one loop (the machine is shared: ratios of side-by-side samples are what
count); each sample is the mean of enough back-to-back calls to last >= 2 ms. Reported per layer: median per call and spread (p10..p90 over samples),
GFLOP/s counted on nonzero weights (2 * nnz * H*W / t) for the sparse kernel and on all weights for the dense
ones, ORT/sparse as a ratio of medians and as the median of per-round (paired) ratios, and ``eff``: the sparse
kernel's nonzero GFLOP/s as a fraction of the dense kernel's GFLOP/s on the same layer; per sparsity, the sums
over the 13 layers (of medians, of p10s, and from the paired ratios). The dense kernel does the same work
whatever the weights, so it is measured once per layer shape. Every output is checked against numpy first.

Kernels are compiled for the target descriptor (default x86_64: x86-64-v3, AVX2+FMA); ``--mcpu`` swaps in another
LLVM CPU, e.g. the host's (``tvm.target.codegen.llvm_get_system_cpu()``), to compare on the ISA that ONNX Runtime
picks at run time: on an AVX-512 host (Zen 4/5) ORT's MLAS runs its AVX-512 kernels (~240 GFLOP/s on one core).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tvm
from onnx import TensorProto, helper, numpy_helper

from edgesparse.kernels.spmm import (
    SpmmKernelSpec,
    choose_block,
    fit_tile,
    make_spmm_kernel,
    pack_spmm_weights,
    spmm_acc_registers_for,
    spmm_join_registers_for,
    spmm_pack_tile_for,
    spmm_prefetch_for,
    spmm_tiling_for,
)
from edgesparse.cost import stored_weights
from edgesparse.prune import magnitude_prune
from edgesparse.targets import get_target

# (Cin, Cout, H*W side) of MobileNetV1 1.0/224's pointwise convolutions, in network order
MOBILENET_V1_1X1 = [
    (32, 64, 112), (64, 128, 56), (128, 128, 56), (128, 256, 28), (256, 256, 28), (256, 512, 14),
    (512, 512, 14), (512, 512, 14), (512, 512, 14), (512, 512, 14), (512, 512, 14),
    (512, 1024, 7), (1024, 1024, 7),
]
RELU6 = (0.0, 6.0)


def ort_conv1x1(w4, b, side):
    cout, cin = w4.shape[:2]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1]),
         helper.make_node("Clip", ["c", "lo", "hi"], ["y"])],
        "pw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, side, side])],
        [numpy_helper.from_array(w4, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
         numpy_helper.from_array(np.array(6.0, np.float32), "hi")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, m


def dense_conv(model, desc):
    """edgesparse's dense kernel for the layer (the compile spine's lowering and schedule), in TVM's VM."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dense_layers import build_vm

    vm, _ = build_vm(model, desc)
    return vm


def sample(fn, min_seconds=2e-3):
    """Mean seconds per call over enough back-to-back calls to last min_seconds (at least 1)."""
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_seconds or n >= 4096:
            return t / n, n
        n *= 2 if t == 0 else max(2, math.ceil(min_seconds / t))


def measure(fns: dict, runs: int, warmup: int) -> dict:
    """Time every callable of fns in rotation; return name -> list of per-call seconds (one per run)."""
    inner = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _, inner[name] = sample(fn)
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            n = inner[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
    return times


def checked_kernel(spec, packed, x, want, target, dev):
    """The compiled kernel of ``spec`` and its bound arguments (x, packed arrays, output), run once and its
    output checked against ``want``."""
    ex = tvm.compile(tvm.IRModule({spec.variant: make_spmm_kernel(spec)}), target=target)
    kern = ex.mod[spec.variant]
    targs = [tvm.runtime.tensor(a, dev) for a in
             (x, packed.values, packed.segment_ptr, packed.channel_index, np.zeros_like(want))]
    kern(*targs)
    np.testing.assert_allclose(targs[-1].numpy(), want, rtol=1e-4, atol=1e-4)
    return kern, targs


def stats(ts):
    a = np.asarray(ts) * 1e3
    return float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    ap.add_argument("--runs", type=int, default=31)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--target", default="x86_64", help="descriptor name (host-runnable targets only)")
    ap.add_argument("--mr", type=int, default=None,
                    help="override the descriptor's tiles.spmm_mr, for every layer (no spmm_mr_wide)")
    ap.add_argument("--mcpu", default=None,
                    help="compile for this LLVM CPU instead of the descriptor's (e.g. the host's: "
                         "tvm.target.codegen.llvm_get_system_cpu()), to compare on the ISA ONNX Runtime uses")
    ap.add_argument("--layers", type=str, default=None, help="comma-separated layer indices (default: all)")
    ap.add_argument("--no-dense", action="store_true", help="skip edgesparse's dense kernel")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)

    desc = get_target(args.target)
    if args.mr:  # as a descriptor override, so the per-block register cap still applies; every layer takes it
        desc = replace(desc, tiles={**{k: v for k, v in desc.tiles.items() if k != "spmm_mr_wide"},
                                    "spmm_mr": args.mr})
    tvm_desc = dict(desc.tvm)
    if args.mcpu:
        tvm_desc["mcpu"] = args.mcpu
        desc = replace(desc, tvm=tvm_desc)
    target = tvm.target.Target(tvm_desc)
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    layer_ids = [int(i) for i in args.layers.split(",")] if args.layers else range(len(MOBILENET_V1_1X1))
    rows = []
    dense_cache = {}
    wide = desc.tiles.get("spmm_mr_wide")
    print(f"target {desc.name} ({target}), MR {desc.tiles.get('spmm_mr')}"
          f"{f' ({wide} where that tile stays in L1)' if wide else ''}, "
          f"runs {args.runs} after {args.warmup} warm-up, ms per call: "
          "median [p10..p90]", flush=True)
    hdr = (f"{'layer':>3} {'Cin':>5} {'Cout':>5} {'HxW':>7} {'sp':>4} {'blk':>3} {'mr':>3} {'ch':>2} {'sparse ms':>22} "
           f"{'GF/s':>6} "
           f"{'ORT ms':>22} {'GF/s':>6} {'dense ms':>22} {'GF/s':>6} {'ORT/sp':>6} {'paired [p10..p90]':>18} "
           f"{'dense/sp':>8} {'eff':>5}")
    for sp in args.sparsity:
        print(hdr)
        for li in layer_ids:
            cin, cout, side = MOBILENET_V1_1X1[li]
            npix = side * side
            w = magnitude_prune((rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32), sp)
            b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
            x = rng.standard_normal((1, cin, side, side)).astype(np.float32)
            want = np.clip(w @ x.reshape(cin, npix) + b[:, None], *RELU6).reshape(1, cout, side, side)
            want = want.astype(np.float32)

            block = choose_block(w)
            reuse = np.count_nonzero(w) / cin
            tiling = spmm_tiling_for(desc, npix, block, cin, stored_weights(w, block) / cout, reuse=reuse)
            mr = tiling.mr
            pack_tile = spmm_pack_tile_for(desc, npix, reuse)
            # packed as the sparsify pass packs it (kernels/spmm/config.py): offsets into the tile the kernel reads
            lanes, acc = desc.vector_lanes_f32, spmm_acc_registers_for(desc)
            stride = tiling.row_floats if pack_tile else npix
            packed = pack_spmm_weights(w, b, block=block, stride=stride,
                                       chunk=tiling.chunk, chunk_local=pack_tile)
            spec = SpmmKernelSpec.for_packed(packed, npix, mr, clamp=RELU6, in_shape=x.shape, out_shape=want.shape,
                                             lanes=lanes, acc_registers=acc, pack_tile=pack_tile,
                                             join_registers=spmm_join_registers_for(desc),
                                             prefetch=spmm_prefetch_for(desc, cin, cout, npix))
            kern, targs = checked_kernel(spec, packed, x, want, target, dev)

            sess, model = ort_conv1x1(w.reshape(cout, cin, 1, 1), b, side)
            binding = sess.io_binding()
            binding.bind_cpu_input("x", x)
            binding.bind_output("y", "cpu")
            sess.run_with_iobinding(binding)
            np.testing.assert_allclose(binding.copy_outputs_to_cpu()[0], want, rtol=1e-4, atol=1e-4)

            fns = {"sparse": lambda: kern(*targs), "ort": lambda: sess.run_with_iobinding(binding)}
            if not args.no_dense and li not in dense_cache:
                vm = dense_conv(model, desc)
                tx = tvm.runtime.tensor(x, dev)
                got = vm["main"](tx).numpy()
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
                fns["dense"] = lambda: vm["main"](tx)
            times = measure(fns, args.runs, args.warmup)
            if "dense" in times:  # weight values do not change dense work: measured once per layer shape
                dense_cache[li] = times["dense"]
            if li in dense_cache:
                times["dense"] = dense_cache[li]
            # paired ratio: ORT / sparse within each rotation round, robust to load that comes and goes
            paired = np.asarray(times["ort"]) / np.asarray(times["sparse"])
            s, o = stats(times["sparse"]), stats(times["ort"])
            d = stats(times["dense"]) if "dense" in times else None
            gf_s = 2 * packed.nonzeros * npix / (s[0] * 1e-3) / 1e9
            gf_o = 2 * cin * cout * npix / (o[0] * 1e-3) / 1e9
            gf_d = 2 * cin * cout * npix / (d[0] * 1e-3) / 1e9 if d else float("nan")
            row = dict(layer=li, cin=cin, cout=cout, hw=npix, sparsity=sp, block=packed.block, chunks=packed.n_chunks,
                       variant=spec.variant,
                       nonzeros=packed.nonzeros, sparse_ms=s, ort_ms=o, dense_ms=d, sparse_gflops=gf_s,
                       ort_gflops=gf_o, dense_gflops=gf_d, efficiency=gf_s / gf_d, ort_over_sparse=o[0] / s[0],
                       ort_over_sparse_paired=(float(np.median(paired)), float(np.percentile(paired, 10)),
                                               float(np.percentile(paired, 90))),
                       dense_over_sparse=(d[0] / s[0]) if d else None)
            rows.append(row)
            fmt = lambda m: f"{m[0]:8.3f} [{m[1]:.3f}..{m[2]:.3f}]"
            print(f"{li:>3} {cin:>5} {cout:>5} {side:>3}x{side:<3} {sp:>4.2f} {packed.block:>3} {fit_tile(mr, npix):>3} {packed.n_chunks:>2} "
                  f"{fmt(s):>22} "
                  f"{gf_s:>6.1f} {fmt(o):>22} {gf_o:>6.1f} {fmt(d) if d else '-':>22} {gf_d:>6.1f} "
                  f"{o[0] / s[0]:>6.2f} {np.median(paired):>5.2f} [{np.percentile(paired, 10):.2f}.."
                  f"{np.percentile(paired, 90):.2f}] {(d[0] / s[0]) if d else float('nan'):>8.2f} "
                  f"{gf_s / gf_d:>5.2f}", flush=True)
        sub = [r for r in rows if r["sparsity"] == sp]
        tot_s = sum(r["sparse_ms"][0] for r in sub)
        tot_o = sum(r["ort_ms"][0] for r in sub)
        tot_d = None
        if all(r["dense_ms"] for r in sub):
            tot_d = sum(r["dense_ms"][0] for r in sub)
        # whole-network estimate robust to load bursts: sum over layers of ORT median time, divided by the sum of
        # (ORT median / paired ratio median), i.e. each layer's sparse time as ORT-time-over-paired-ratio
        tot_paired = sum(r["ort_ms"][0] for r in sub) / sum(
            r["ort_ms"][0] / r["ort_over_sparse_paired"][0] for r in sub)
        tot_min_s = sum(r["sparse_ms"][1] for r in sub)
        tot_min_o = sum(r["ort_ms"][1] for r in sub)
        print(f"sum of 1x1 layers at {sp:.2f}: p10 sums sparse {tot_min_s:.3f} ms, ORT {tot_min_o:.3f} ms -> "
              f"{tot_min_o / tot_min_s:.2f}x; from paired ratios {tot_paired:.2f}x")
        print(f"sum of 1x1 layers at {sp:.2f}: sparse {tot_s:.3f} ms, ORT {tot_o:.3f} ms -> "
              f"ORT/sparse {tot_o / tot_s:.2f}x"
              + (f", edgesparse dense {tot_d:.3f} ms -> dense/sparse {tot_d / tot_s:.2f}x" if tot_d else "")
              + "\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
