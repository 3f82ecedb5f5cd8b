"""Whole models, side by side in one run: edgesparse (dense and, on pruned models, sparse) against ONNX Runtime
on x86-64 and against onnxruntime-web in Node.

    python benchmarks/models.py                                   # zoo CNNs, dense (issue 5)
    python benchmarks/models.py --models mobilenet_v1 --sparsity 0.9 --sparsity 0.7   # pruned (issue 6)
    python benchmarks/models.py --models mobilenet_v1 --sparsity 0.9 --block 4        # 4-channel blocks

Per row: median ms over all timed runs, the spread ((p90-p10)/2 as % of the median), and the ratio
peer/edgesparse (above 1: edgesparse is faster); on pruned models also dense/sparse. The sparse build is
`--sparse auto` (what a user gets: the cost model decides per layer), the dense one `--sparse off`. Every
engine gets the same seeded input; outputs are checked against the peer's. Writes --json.

Timings on a shared machine move: a neighbour's burst can slow one engine's runs and not the other's. So the
engines take turns: --rounds rounds, each timing every engine for --runs runs after --warmup, and each ratio
is the median of the per-round ratios (its lowest and highest round printed after it), so a slow phase weighs
on both sides of a ratio. The medians are over all rounds' runs.
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


def spread(times_ms) -> float:
    t = np.asarray(times_ms)
    return float((np.percentile(t, 90) - np.percentile(t, 10)) / 2 / np.median(t) * 100)


def paired(rounds: list[dict], num: str, den: str) -> list[float]:
    """[median, lowest, highest] over rounds of median(num) / median(den) within the round."""
    r = [turn[num].median_ms / turn[den].median_ms for turn in rounds]
    return [float(np.median(r)), float(min(r)), float(max(r))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v1,mobilenet_v2,resnet18")
    ap.add_argument("--sparsity", type=float, action="append", default=None,
                    help="prune to this sparsity and compare sparse, dense and the peer (repeatable)")
    ap.add_argument("--block", type=int, default=1, choices=(1, 2, 4),
                    help="prune blocks of this many output channels (edgesparse prune --block)")
    ap.add_argument("--setups", default=",".join(f"{t}:{d}:{n}" for t, d, n in SETUPS),
                    help="comma-separated TARGET:DEVICE:THREADS")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per engine and round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="turns the engines take (ratios: median over rounds)")
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
                    outs = {}
                    for kind, mode in builds:
                        out = tmp / f"{label}-{target}-{kind}".replace(" @", "-").replace("%", "pct").replace(" ", "-")
                        compile_model(onnx_path, target, out, sparse=mode, threads=max(threads, 1))
                        outs[kind] = out
                    manifest = load_manifest(outs[builds[0][0]])
                    dev = get_device(device, manifest)
                    rounds = []  # per round: {engine: BenchResult}; the peer under "peer"
                    for _ in range(max(1, args.rounds)):
                        turn = {kind: bench(out, device, runs=args.runs, warmup=args.warmup, threads=threads)
                                for kind, out in outs.items()}
                        peer = compare_ort(outs[builds[0][0]], manifest, dev, str(onnx_path), args.warmup,
                                           args.runs, threads=threads)
                        turn["peer"] = peer.ort
                        rounds.append(turn)
                    row = {"model": label, "target": target, "device": device, "threads": threads,
                           "peer": peer.engine, "rounds": len(rounds), "runs_per_round": args.runs,
                           "max_abs_diff": peer.max_abs_diff}
                    for engine in ["peer", *outs]:
                        times = [t for turn in rounds for t in turn[engine].times_ms]
                        row[f"{engine}_ms"] = float(np.median(times))
                        row[f"{engine}_spread_pct"] = spread(times)
                    for kind in outs:
                        row[f"peer_over_{kind}"] = paired(rounds, "peer", kind)
                    if "sparse" in outs:
                        row["dense_over_sparse"] = paired(rounds, "dense", "sparse")
                    rows.append(row)
                    print_row(row)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {args.json}")


def print_row(r: dict) -> None:
    parts = [f"{r['model']:25s} {r['target']:14s} {r['device']:6s} t={r['threads']}"]
    ratio = lambda v: f"x{v[0]:.2f} [{v[1]:.2f}..{v[2]:.2f}]"
    for kind in ("sparse", "dense"):
        if f"{kind}_ms" in r:
            parts.append(f"{kind} {r[f'{kind}_ms']:7.2f} ms ±{r[f'{kind}_spread_pct']:4.1f}% ({ratio(r[f'peer_over_{kind}'])})")
    if "dense_over_sparse" in r:
        parts.append(f"dense/sparse {ratio(r['dense_over_sparse'])}")
    parts.append(f"peer {r['peer_ms']:7.2f} ms ±{r['peer_spread_pct']:4.1f}%  |diff| {r['max_abs_diff']:.1e}")
    print("  ".join(parts), flush=True)


if __name__ == "__main__":
    main()
