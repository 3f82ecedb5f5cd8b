"""`edgesparse sweep`: latency against sparsity. At each level the model is magnitude-pruned (prune.prune_onnx),
compiled dense and (when the compiler has a sparse option) sparse, benchmarked on the device, and ONNX Runtime
(Python for local, onnxruntime-web for node and chromium) runs the same pruned model beside it. Writes
sweep.csv, sweep.png (one line per engine, min..p90 as error bars) and sweep.json (with machine, versions and
the command) into the output directory, and returns the rows for the printed table."""

from __future__ import annotations

import csv
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgesparseError
from ..progress import Progress

DEFAULT_LEVELS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
CSV_COLUMNS = ["sparsity", "engine", "median_ms", "min_ms", "p90_ms", "max_ms", "mean_ms", "stdev_ms", "cv", "runs",
               "warmup", "max_abs_diff_vs_ort", "speedup_vs_ort", "weight_sparsity"]


@dataclass
class SweepResult:
    rows: list[dict]
    csv_path: Path
    png_path: Path
    json_path: Path
    notes: list[str] = field(default_factory=list)


def parse_levels(text: str) -> list[float]:
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EdgesparseError(f"--sparsity '{text}' is not a comma-separated list of numbers") from None
    if not levels or any(not 0.0 <= s < 1.0 for s in levels):
        raise EdgesparseError(f"--sparsity levels must be in [0, 1): '{text}'")
    return sorted(set(levels))


def sparse_compile_option() -> bool:
    """True when compiler.compile takes a `sparse` mode (the sparsify pass wired into the compile)."""
    from ..compiler import compile as compile_model

    return "sparse" in inspect.signature(compile_model).parameters


def resolve_model(model: str, out_dir: Path) -> Path:
    """An ONNX path, or the name of a zoo model (exported into out_dir)."""
    path = Path(model)
    if path.is_file():
        return path
    from ..models import ZOO, export_onnx

    if model in ZOO:
        return Path(export_onnx(model, out_dir / f"{model}.onnx"))
    raise EdgesparseError(f"model '{model}' is neither an ONNX file nor a zoo model ({', '.join(ZOO)})")


def sweep(model: str, target: str, device: str | None, levels, out_dir, runs: int = 20, warmup: int = 5,
          threads: int = 1, progress: Progress | None = None) -> SweepResult:
    from ..compiler import compile as compile_model, load_manifest
    from ..devices import get_device
    from ..prune import prune_onnx
    from .bench import bench
    from .compare import ORT_DEVICES, compare_ort
    from .machine import report_context
    from .run import run_artifact

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    source = resolve_model(model, out_dir)
    levels = list(levels)
    has_sparse = sparse_compile_option()
    notes = []
    if not has_sparse:
        notes.append("the compiler has no sparse option yet: each pruned model is compiled dense "
                     "(edgesparse dense and ONNX Runtime only)")
    variants = [("edgesparse dense", {"sparse": "off"} if has_sparse else {})]
    if has_sparse:
        variants.append(("edgesparse sparse", {"sparse": "auto"}))
    progress = progress or Progress.for_terminal()
    quiet = Progress(False)  # one live bar at a time: the sweep's
    rows: list[dict] = []
    dev = None
    steps_per_level = 1 + 2 * len(variants) + 1
    with progress.task(f"sweep {source.stem} on {target}", total=len(levels) * steps_per_level) as step:
        for s in levels:
            tag = f"s{round(100 * s):02d}"
            step(f"{tag}: prune")
            pruned = out_dir / f"{source.stem}-{tag}.onnx"
            report = prune_onnx(source, pruned, s)
            level_rows = []
            ort = None
            for engine, kwargs in variants:
                step(f"{tag}: compile {engine}")
                art = out_dir / f"{source.stem}-{target}-{engine.split()[-1]}-{tag}"
                compile_model(pruned, target, art, threads=threads, progress=quiet, **kwargs)
                manifest = load_manifest(art)
                dev = dev or get_device(device, manifest)
                step(f"{tag}: bench {engine}")
                b = bench(art, dev, runs=runs, warmup=warmup, threads=threads)
                level_rows.append((engine, b, art, manifest))
            step(f"{tag}: onnxruntime")
            if dev.name in ORT_DEVICES:
                engine0, b0, art0, manifest0 = level_rows[0]
                ort = compare_ort(art0, manifest0, dev, str(pruned), warmup=warmup, runs=runs, threads=threads)
            for engine, b, art, manifest in level_rows:
                diff = None
                if ort is not None:
                    diff = ort.max_abs_diff if art == level_rows[0][2] else ort.diff(run_artifact(art, ort.inputs, dev))
                rows.append(_row(s, engine, b, diff, ort.ort.median_ms / b.median_ms if ort else None,
                                 report.overall_sparsity))
            if ort is not None:
                name = "onnxruntime-web" if dev.name in ("node", "chromium") else "onnxruntime"
                rows.append(_row(s, name, ort.ort, 0.0, 1.0, report.overall_sparsity))
    if dev is not None and dev.name not in ORT_DEVICES:
        notes.append(f"ONNX Runtime is not run on '{dev.describe()}' (only on {', '.join(ORT_DEVICES)})")
    if dev is not None and dev.emulated:
        notes.append(f"{dev.describe()} emulates the CPU: these latencies are not real")
    csv_path, png_path, json_path = out_dir / "sweep.csv", out_dir / "sweep.png", out_dir / "sweep.json"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in CSV_COLUMNS})
    title = f"{source.stem} on {target} ({dev.describe() if dev else device})"
    plot(rows, png_path, title)
    json_path.write_text(json.dumps({"model": str(source), "target": target, "rows": rows, "notes": notes,
                                     "context": report_context(dev)}, indent=2) + "\n")
    return SweepResult(rows, csv_path, png_path, json_path, notes)


def _row(sparsity, engine, b, diff, speedup, weight_sparsity) -> dict:
    return {"sparsity": sparsity, "engine": engine, "median_ms": round(b.median_ms, 4), "min_ms": round(b.min_ms, 4),
            "p90_ms": round(b.p90_ms, 4), "max_ms": round(b.max_ms, 4), "mean_ms": round(b.mean_ms, 4),
            "stdev_ms": round(b.stdev_ms, 4), "cv": round(b.cv, 4), "runs": b.runs, "warmup": b.warmup,
            "max_abs_diff_vs_ort": None if diff is None else float(f"{diff:.3g}"),
            "speedup_vs_ort": None if speedup is None else round(speedup, 3),
            "weight_sparsity": round(weight_sparsity, 4)}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Median latency against sparsity, one line per engine; error bars from the minimum to the 90th percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for engine in dict.fromkeys(r["engine"] for r in rows):
        rs = [r for r in rows if r["engine"] == engine]
        xs = [100 * r["sparsity"] for r in rs]
        med = [r["median_ms"] for r in rs]
        err = [[m - r["min_ms"] for m, r in zip(med, rs)], [r["p90_ms"] - m for m, r in zip(med, rs)]]
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=4, label=engine)
    ax.set_xlabel("weight sparsity of the pruned layers (%)")
    ax.set_ylabel("latency (ms): median, bars min..p90")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(rows: list[dict]) -> list[str]:
    lines = [f"{'sparsity':>8s}  {'engine':18s} {'median ms':>10s} {'min':>9s} {'p90':>9s} {'cv':>6s} "
             f"{'ORT/this':>8s} {'max |diff|':>10s}"]
    for r in rows:
        sp = f"{r['speedup_vs_ort']:.2f}x" if r["speedup_vs_ort"] is not None else "-"
        diff = f"{r['max_abs_diff_vs_ort']:.2g}" if r["max_abs_diff_vs_ort"] is not None else "-"
        lines.append(f"{100 * r['sparsity']:7.0f}%  {r['engine']:18s} {r['median_ms']:10.3f} {r['min_ms']:9.3f} "
                     f"{r['p90_ms']:9.3f} {100 * r['cv']:5.1f}% {sp:>8s} {diff:>10s}")
    return lines
