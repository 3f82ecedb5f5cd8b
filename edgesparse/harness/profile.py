"""Per-layer profiling: times measured inside the C runtime (ES_PROFILE_BEGIN/END around every kernel call of
the generated driver), mapped back to the manifest's layers.

An artifact compiled with `compile(..., profile=True)` profiles as it is. Any other artifact is profiled by
rebuilding its driver and runtime with -DES_PROFILE into ARTIFACT/profile/ (kernels reused from the artifact's
library); the artifact's own runner and library stay timer-free, so profiling costs nothing when not asked for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import EdgesparseError

PROFILE_DIR = "profile"


def profiling_manifest(artifact: Path, manifest: dict) -> dict:
    """A manifest whose runner prints per-call times; builds ARTIFACT/profile/ when needed."""
    if manifest.get("profile"):
        return manifest
    from ..compiler import profiling_target
    from ..targets import get_target
    from ..toolchain import zig

    tgt = get_target(manifest["target"])
    files = manifest["files"]
    out = artifact / PROFILE_DIR
    runner = out / tgt.runner_name
    stamp = out / "built-from.json"
    sources = [artifact / files["source"], artifact / files["library"], artifact / files["weights"]]
    key = json.dumps({str(p.name): p.stat().st_mtime_ns for p in sources if p.exists()})
    if not (runner.is_file() and stamp.is_file() and stamp.read_text() == key):
        ptgt = profiling_target(tgt, len(manifest["layers"]))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        with tempfile.TemporaryDirectory(prefix="edgesparse-profile-") as tmp:
            tmp = Path(tmp)
            # the artifact's library: kernels + driver + runtime; keep the kernels, rebuild the other two
            proc = subprocess.run([sys.executable, "-m", "ziglang", "ar", "x", str(artifact / files["library"])],
                                  cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0 or not (tmp / "kernels.o").is_file():
                raise EdgesparseError(f"{artifact}: cannot unpack {files['library']} for profiling")
            kept = sorted(p for p in tmp.glob("*.o") if p.name not in ("model.o", "rt.o"))
            for f in (files["source"], files["header"], files["weights"], "edgesparse_rt.h", "edgesparse_rt.c"):
                shutil.copy(artifact / f, tmp / f)
            zig.compile_c(ptgt, tmp / files["source"], tmp / "model.o")
            zig.compile_c(ptgt, tmp / "edgesparse_rt.c", tmp / "rt.o")
            lib = out / files["library"]
            zig.archive([*kept, tmp / "model.o", tmp / "rt.o"], lib)
            shutil.copy(artifact / files["header"], out / files["header"])
            zig.link_runner(ptgt, manifest["c_name"], files["header"], lib, runner)
        stamp.write_text(key)
    m = dict(manifest)
    m["files"] = {**files, "runner": f"{PROFILE_DIR}/{tgt.runner_name}"}
    return m


def _sparse_info(layer: dict, decisions: dict) -> tuple[bool, float | None]:
    d = decisions.get(layer["kernel"])
    if d is not None:
        return bool(d.get("sparse")), d.get("sparsity")
    if "sparse" in layer:
        return bool(layer["sparse"]), layer.get("sparsity")
    return ("spmm" in layer["kernel"] or "sparse" in layer["kernel"]), layer.get("sparsity")


def layer_times(manifest: dict, profile_ms) -> list[dict]:
    """One row per kernel call: index, kernel, kind, sparse, sparsity, output shape, ms, share of the total."""
    layers = manifest["layers"]
    if not isinstance(profile_ms, list) or len(profile_ms) != len(layers) or not all(
            isinstance(t, (int, float)) for t in profile_ms):
        raise EdgesparseError(
            f"the profiling runner returned {len(profile_ms) if isinstance(profile_ms, list) else 'no'} per-layer "
            f"times for {len(layers)} kernel calls")
    # the sparsify pass's decisions, when the compiler recorded them
    decisions = {d["kernel"]: d for d in manifest.get("sparsify", []) if isinstance(d, dict) and d.get("kernel")}
    total = sum(profile_ms) or 1.0
    rows = []
    for i, (layer, ms) in enumerate(zip(layers, profile_ms)):
        sparse, sparsity = _sparse_info(layer, decisions)
        rows.append({"index": i, "kernel": layer["kernel"], "kind": layer["kind"], "sparse": sparse,
                     "sparsity": sparsity, "output_shape": layer.get("output_shape"), "ms": float(ms),
                     "share": float(ms) / total})
    return rows


def op_name(kind: str) -> str:
    """conv2d18_add9_maximum9_minimum9 -> conv2d_add_maximum_minimum (TVM's de-duplication numbers dropped)."""
    if "__" in kind or kind.startswith("f32_"):  # a template variant (f32_spmm_64x1_relu6): a name, not numbering
        return kind.split("__")[0]
    keep = re.compile(r"[a-z]\d+|\d+x\d+")  # dtypes (f32, i8) and tile shapes (1x1, 32x4) are not numbering
    return "_".join(p if keep.fullmatch(p) else (p.rstrip("0123456789") or p) for p in kind.split("_"))


def format_top(rows: list[dict], top: int, total_ms: float) -> list[str]:
    """The table `edgesparse bench --profile` prints: the `top` slowest layers."""
    kernel_ms = sum(r["ms"] for r in rows)
    lines = [f"per-layer profile ({len(rows)} kernel calls: {kernel_ms:.3f} ms in kernels of a {total_ms:.3f} ms "
             f"mean run), top {min(top, len(rows))}:",
             f"{'#':>4s}  {'op kind':28s} {'path':6s} {'sparsity':>8s} {'output shape':18s} {'ms':>9s} {'share':>6s}"]
    for r in sorted(rows, key=lambda r: -r["ms"])[:top]:
        sp = f"{100 * r['sparsity']:.1f}%" if r["sparsity"] is not None else "-"
        shape = "x".join(map(str, r["output_shape"] or []))
        lines.append(f"{r['index']:4d}  {op_name(r['kind'])[:28]:28s} {'sparse' if r['sparse'] else 'dense':6s} {sp:>8s} "
                     f"{shape[:18]:18s} {r['ms']:9.3f} {100 * r['share']:5.1f}%")
    return lines
