"""Whole models, side by side in one run: edgesparse (dense and, on pruned models, sparse) against ONNX Runtime
on x86-64 and against onnxruntime-web in Node.

    python benchmarks/models.py                                   # zoo CNNs, dense (issue 5)
    python benchmarks/models.py --models mobilenet_v1 --sparsity 0.9 --sparsity 0.7   # pruned (issue 6)
    python benchmarks/models.py --models mobilenet_v1 --sparsity 0.9 --block 4        # 4-channel blocks

Per row: median ms over --runs after --warmup, the spread ((p90-p10)/2 as % of the median), and the ratio
peer/edgesparse (above 1: edgesparse is faster); on pruned models also dense/sparse. The sparse build is
`--sparse auto` (what a user gets: the cost model decides per layer), the dense one `--sparse off`. Every
engine gets the same seeded input; outputs are checked against the peer's. Writes --json. Timings on a shared
machine move: trust the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edgesparse.compiler import compile as compile_model, load_manifest
from edgesparse.devices import get_device
from edgesparse.harness.bench import bench
from edgesparse.harness.compare import compare_ort
from edgesparse.models import export_onnx
from edgesparse.prune import prune_onnx

# (target, device, threads): the x86 rows use the descriptor matching this host's ISA as ORT does at run time
SETUPS = [
    ("x86_64-avx512", "local", 1),
    ("x86_64-avx512", "local", 2),
    ("x86_64", "local", 1),
    ("wasm32", "node", 1),
]


def spread(r) -> float:
    t = np.asarray(r.times_ms)
    return float((np.percentile(t, 90) - np.percentile(t, 10)) / 2 / np.median(t) * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v1,mobilenet_v2,resnet18")
    ap.add_argument("--sparsity", type=float, action="append", default=None,
                    help="prune to this sparsity and compare sparse, dense and the peer (repeatable)")
    ap.add_argument("--block", type=int, default=1, choices=(1, 2, 4),
                    help="prune blocks of this many output channels (edgesparse prune --block)")
    ap.add_argument("--setups", default=",".join(f"{t}:{d}:{n}" for t, d, n in SETUPS),
                    help="comma-separated TARGET:DEVICE:THREADS")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", default="benchmarks/models.json")
    args = ap.parse_args()

    setups = [(t, d, int(n)) for t, d, n in (s.split(":") for s in args.setups.split(","))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgesparse-bench-") as tmp:
        tmp = Path(tmp)
        for model in args.models.split(","):
            base = export_onnx(model, tmp / f"{model}.onnx")
            variants = [(f"{model}", base, [("dense", "off")])]
            for s in args.sparsity or []:
                pruned = tmp / f"{model}-{s:g}-b{args.block}.onnx"
                prune_onnx(base, pruned, s, block=args.block)
                label = f"{model} @{s:.0%}" + (f" b{args.block}" if args.block > 1 else "")
                variants.append((label, pruned, [("sparse", "auto"), ("dense", "off")]))
            for label, onnx_path, builds in variants:
                for target, device, threads in setups:
                    results = {}
                    for kind, mode in builds:
                        out = tmp / f"{label}-{target}-{kind}".replace(" @", "-").replace("%", "pct").replace(" ", "-")
                        compile_model(onnx_path, target, out, sparse=mode, threads=max(threads, 1))
                        results[kind] = (out, bench(out, device, runs=args.runs, warmup=args.warmup, threads=threads))
                    out, _ = results[builds[0][0]]
                    manifest = load_manifest(out)
                    peer = compare_ort(out, manifest, get_device(device, manifest), str(onnx_path),
                                       args.warmup, args.runs, threads=threads)
                    row = {"model": label, "target": target, "device": device, "threads": threads,
                           "peer": peer.engine, "peer_ms": peer.ort.median_ms, "peer_spread_pct": spread(peer.ort),
                           "max_abs_diff": peer.max_abs_diff}
                    for kind, (_, r) in results.items():
                        row[f"{kind}_ms"] = r.median_ms
                        row[f"{kind}_spread_pct"] = spread(r)
                        row[f"peer_over_{kind}"] = peer.ort.median_ms / r.median_ms
                    if "sparse" in results:
                        row["dense_over_sparse"] = row["dense_ms"] / row["sparse_ms"]
                    rows.append(row)
                    print_row(row)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {args.json}")


def print_row(r: dict) -> None:
    parts = [f"{r['model']:25s} {r['target']:14s} {r['device']:6s} t={r['threads']}"]
    for kind in ("sparse", "dense"):
        if f"{kind}_ms" in r:
            parts.append(f"{kind} {r[f'{kind}_ms']:7.2f} ms ±{r[f'{kind}_spread_pct']:4.1f}% (x{r[f'peer_over_{kind}']:.2f})")
    if "dense_over_sparse" in r:
        parts.append(f"dense/sparse x{r['dense_over_sparse']:.2f}")
    parts.append(f"peer {r['peer_ms']:7.2f} ms ±{r['peer_spread_pct']:4.1f}%  |diff| {r['max_abs_diff']:.1e}")
    print("  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
