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
