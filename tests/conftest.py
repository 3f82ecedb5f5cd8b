"""Shared fixtures: zoo models exported once per session, artifacts compiled once per (model, target)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """A private EDGESPARSE_CACHE for the whole run (zoo exports), unless the caller set one."""
    if os.environ.get("EDGESPARSE_CACHE"):
        return Path(os.environ["EDGESPARSE_CACHE"])
    path = tmp_path_factory.mktemp("edgesparse-cache")
    os.environ["EDGESPARSE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def zoo_onnx(session_cache, tmp_path_factory):
    """zoo_onnx(name) -> path of the exported ONNX model."""
    from edgesparse.models import export_onnx

    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(name: str) -> Path:
        if name not in made:
            made[name] = export_onnx(name, root / f"{name}.onnx")
        return made[name]

    return get


@pytest.fixture(scope="session")
def compiled(zoo_onnx, tmp_path_factory):
    """compiled(name, target) -> artifact directory of a zoo model, compiled once per session."""
    from edgesparse.compiler import compile as compile_model

    made: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("artifacts")

    def get(name: str, target: str) -> Path:
        key = (name, target)
        if key not in made:
            out = root / f"{name}-{target}"
            compile_model(zoo_onnx(name), target, out)
            made[key] = out
        return made[key]

    return get


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


requires_qemu = pytest.mark.skipif(not have("qemu-aarch64"), reason="qemu-aarch64 not installed (apt-get install qemu-user)")
requires_node = pytest.mark.skipif(not have("node"), reason="node not installed")


def missing_avx512() -> list[str]:
    """The CPU flags the x86_64-avx512 descriptor's code needs that this host lacks."""
    from edgesparse.devices.local import missing_cpu_flags
    from edgesparse.targets import get_target

    return missing_cpu_flags(get_target("x86_64-avx512"))


_MISSING_AVX512 = missing_avx512()
requires_avx512 = pytest.mark.skipif(bool(_MISSING_AVX512),
                                     reason=f"host CPU lacks AVX-512 (x86-64-v4): no {' '.join(_MISSING_AVX512)}")


def save_graph(path: Path, nodes, inputs: dict, outputs: dict, weights: dict) -> Path:
    """A one-graph ONNX model (opset 17) at ``path``: ``inputs``/``outputs`` map float32 names to shapes,
    ``weights`` map initializer names to arrays."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs.items()],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def compile_checked(path: Path, target: str = "x86_64", tol: float = 1e-5) -> list[str]:
    """Compile ``path`` next to itself, check its outputs against ONNX Runtime within ``tol`` and return the
    kernel kinds of its calls, in order (manifest.json)."""
    from edgesparse.compiler import compile as compile_model
    from edgesparse.compiler import load_manifest
    from edgesparse.harness.verify import verify

    out = compile_model(path, target=target, out_dir=path.with_suffix("")).out_dir
    rep = verify(path, out)
    assert rep.ok and rep.worst < tol, rep.outputs
    return [layer["kind"] for layer in load_manifest(out)["layers"]]


def conv_clip_nodes(**conv_attrs) -> list:
    """Conv(x, w, b) then Clip(0, 6) -> y: a layer and the epilogue the templates fold (needs ``clip_bounds``)."""
    from onnx import helper

    return [helper.make_node("Conv", ["x", "w", "b"], ["c"], **conv_attrs),
            helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]


def clip_bounds() -> dict:
    import numpy as np

    return {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
