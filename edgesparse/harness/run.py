"""Run one inference of an artifact on a device, with numpy arrays in and out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..compiler import load_manifest
from ..devices import Device, get_device
from ..errors import EdgesparseError


def check_inputs(manifest: dict, inputs: list[np.ndarray]) -> list[np.ndarray]:
    specs = manifest["inputs"]
    if len(inputs) != len(specs):
        raise EdgesparseError(f"the model takes {len(specs)} input(s) {[s['name'] for s in specs]}, got {len(inputs)}")
    checked = []
    for spec, arr in zip(specs, inputs):
        arr = np.asarray(arr)
        if list(arr.shape) != spec["shape"]:
            raise EdgesparseError(f"input '{spec['name']}' must have shape {spec['shape']}, got {list(arr.shape)}")
        if arr.dtype.name != spec["dtype"]:
            raise EdgesparseError(f"input '{spec['name']}' must be {spec['dtype']}, got {arr.dtype.name}")
        checked.append(np.ascontiguousarray(arr))
    return checked


def random_inputs(manifest: dict, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for spec in manifest["inputs"]:
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            out.append(rng.standard_normal(spec["shape"]).astype(dtype))
        elif dtype.kind == "b":
            out.append(rng.integers(0, 2, spec["shape"]).astype(dtype))
        else:
            out.append(rng.integers(0, 4, spec["shape"]).astype(dtype))
    return out


def run_artifact(
    artifact_dir, inputs: list[np.ndarray], device: Device | str | None = None, timeout: float = 600, threads: int = 1
) -> list[np.ndarray]:
    artifact = Path(artifact_dir).resolve()
    manifest = load_manifest(artifact)
    dev = device if isinstance(device, Device) else get_device(device, manifest)
    inputs = check_inputs(manifest, inputs)
    with tempfile.TemporaryDirectory(prefix="edgesparse-run-") as tmp:
        tmp = Path(tmp)
        in_paths = [tmp / f"in{i}.bin" for i in range(len(inputs))]
        out_paths = [tmp / f"out{i}.bin" for i in range(len(manifest["outputs"]))]
        for arr, p in zip(inputs, in_paths):
            arr.astype(arr.dtype.newbyteorder("<"), copy=False).tofile(p)
        args = ["run", "-t", str(threads), *map(str, in_paths), *map(str, out_paths)]
        dev.run(artifact, manifest, args, timeout=timeout)
        outputs = []
        for spec, p in zip(manifest["outputs"], out_paths):
            data = np.fromfile(p, dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
            outputs.append(data.astype(spec["dtype"]).reshape(spec["shape"]))
    return outputs
