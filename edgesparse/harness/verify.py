"""verify: the same seeded random input through ONNX Runtime and through the artifact; compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compiler import load_manifest
from ..devices import get_device
from .run import random_inputs, run_artifact

DEFAULT_TOLERANCE = 1e-4


@dataclass
class OutputCheck:
    name: str
    max_abs_error: float
    scale: float  # max |reference|, at least 1e-6

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.scale


@dataclass
class VerifyReport:
    target: str
    device: str
    outputs: list[OutputCheck]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(o.relative_error <= self.tolerance for o in self.outputs)

    @property
    def worst(self) -> float:
        return max(o.relative_error for o in self.outputs)


def onnxruntime_outputs(onnx_path, manifest: dict, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed = {spec["name"]: arr for spec, arr in zip(manifest["inputs"], inputs)}
    names = [o["name"] for o in manifest["outputs"]]
    return sess.run(names, feed)


def compare(reference: list[np.ndarray], actual: list[np.ndarray], names: list[str]) -> list[OutputCheck]:
    checks = []
    for name, ref, out in zip(names, reference, actual):
        ref = np.asarray(ref)
        if ref.dtype.kind == "b" or ref.dtype.kind in "iu":
            err = float(np.max(np.abs(ref.astype(np.int64) - out.astype(np.int64)), initial=0))
            scale = 1.0
        else:
            ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
            err = float(np.max(np.abs(ref64 - out64), initial=0.0))
            if np.isnan(ref64).any() or np.isnan(out64).any():
                same_nan = np.array_equal(np.isnan(ref64), np.isnan(out64))
                finite = ~np.isnan(ref64)
                err = float(np.max(np.abs(ref64[finite] - out64[finite]), initial=0.0)) if same_nan else float("inf")
            scale = max(float(np.max(np.abs(ref64[np.isfinite(ref64)]), initial=0.0)), 1e-6)
        checks.append(OutputCheck(name, err, scale))
    return checks


def verify(
    onnx_path, artifact_dir, device=None, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE, threads: int = 1
) -> VerifyReport:
    manifest = load_manifest(artifact_dir)
    dev = get_device(device, manifest)
    inputs = random_inputs(manifest, seed)
    reference = onnxruntime_outputs(Path(onnx_path), manifest, inputs)
    actual = run_artifact(artifact_dir, inputs, dev, threads=threads)
    checks = compare(reference, actual, [o["name"] for o in manifest["outputs"]])
    return VerifyReport(manifest["target"], dev.describe(), checks, tolerance)
