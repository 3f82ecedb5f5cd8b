"""`bench --compare ort`: the same model and the same seeded input through ONNX Runtime, side by side with the
artifact on the same machine. Local (x86_64): ONNX Runtime's Python package, CPU EP. node and chromium
(wasm32): onnxruntime-web's WASM backend (1 thread, SIMD) in Node or in the page. Reports both latencies,
their ratio, and the largest output difference."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgesparseError
from .bench import BenchResult, summarize
from .run import random_inputs, run_artifact

ORT_DEVICES = ("local", "node", "chromium")


@dataclass
class CompareResult:
    engine: str
    ort: BenchResult
    max_abs_diff: float
    reference: list | None = None  # ONNX Runtime's outputs on `inputs`
    inputs: list | None = None

    def diff(self, outputs) -> float:
        """Largest |difference| between `outputs` (another artifact's, on `inputs`) and ONNX Runtime's."""
        return max_abs_diff(self.reference, outputs)

    def ratio(self, ours: BenchResult) -> float:
        """ONNX Runtime's median over ours: above 1, the artifact is faster."""
        return self.ort.median_ms / ours.median_ms if ours.median_ms else float("nan")

    def to_json(self, ours: BenchResult) -> dict:
        return {"engine": self.engine, "ort": self.ort.to_json(), "ratio_ort_over_edgesparse": round(self.ratio(ours), 4),
                "max_abs_diff": self.max_abs_diff}


def source_model(manifest: dict, model: str | None) -> Path:
    path = Path(model or manifest.get("source", ""))
    if not path.suffix == ".onnx" or not path.is_file():
        raise EdgesparseError(f"--compare ort needs the ONNX model: '{path}' not found; pass --model MODEL.onnx")
    return path


def _ort_web_model(path: Path, tmp: Path) -> Path:
    """onnxruntime-web 1.30 reads models up to IR version 10 (onnx 1.23 saves 14 by default)."""
    import onnx

    proto = onnx.load(str(path))
    if proto.ir_version <= 10:
        return path
    proto.ir_version = 10
    out = tmp / "model_ir10.onnx"
    onnx.save(proto, str(out))
    return out


def ort_python(path: Path, manifest: dict, inputs, warmup: int, runs: int, threads: int) -> tuple[list, list]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {spec["name"]: arr for spec, arr in zip(manifest["inputs"], inputs)}
    names = [o["name"] for o in manifest["outputs"]]
    for _ in range(warmup):
        sess.run(names, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        outs = sess.run(names, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    if runs == 0:
        outs = sess.run(names, feed)
    return times, outs


def compare_ort(artifact, manifest: dict, device, model: str | None, warmup: int, runs: int, threads: int = 1,
                timeout: float = 1800, seed: int = 0) -> CompareResult:
    if device.name not in ORT_DEVICES:
        raise EdgesparseError(f"--compare ort runs on {', '.join(ORT_DEVICES)}, not on '{device.describe()}'")
    path = source_model(manifest, model)
    inputs = random_inputs(manifest, seed)
    ours = run_artifact(artifact, inputs, device, timeout=timeout)
    if device.name == "local":
        import onnxruntime

        times, ref = ort_python(path, manifest, inputs, warmup, runs, threads)
        engine = f"onnxruntime {onnxruntime.__version__} (Python, CPU EP, {threads} thread)"
    else:
        with tempfile.TemporaryDirectory(prefix="edgesparse-ortweb-") as tmp:
            tmp = Path(tmp)
            specs = []
            for i, (spec, arr) in enumerate(zip(manifest["inputs"], inputs)):
                f = tmp / f"in{i}.bin"
                arr.astype(arr.dtype.newbyteorder("<"), copy=False).tofile(f)
                specs.append({"name": spec["name"], "dtype": spec["dtype"], "shape": spec["shape"], "file": str(f)})
            res = device.ort_web(_ort_web_model(path, tmp), specs, warmup, runs, timeout)
        times = res["times_ms"]
        by_name = {o["name"]: o for o in res["outputs"]}
        ref = []
        for spec in manifest["outputs"]:
            o = by_name.get(spec["name"])
            if o is None:
                raise EdgesparseError(f"onnxruntime-web returned no output '{spec['name']}'")
            ref.append(np.frombuffer(o["bytes"], dtype=np.dtype(spec["dtype"]).newbyteorder("<")).reshape(spec["shape"]))
        engine = f"onnxruntime-web 1.30 (WASM SIMD, 1 thread) in {device.describe()}"
    if len(times) != runs:
        raise EdgesparseError(f"ONNX Runtime returned {len(times)} timings, expected {runs}")
    diff = max_abs_diff(ref, ours)
    ort_bench = summarize(times, target=manifest["target"], device=device.describe(), emulated=False,
                          runs=runs, warmup=warmup, threads=threads)
    return CompareResult(engine, ort_bench, diff, ref, inputs)


def max_abs_diff(reference, outputs) -> float:
    return max(float(np.max(np.abs(np.asarray(r, np.float64) - np.asarray(o, np.float64)), initial=0.0))
               for r, o in zip(reference, outputs))
