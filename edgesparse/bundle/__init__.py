"""Deployable bundles: what an app developer drops into a web page or an Android app, written beside the
artifact when the target's descriptor has a [bundle] table (kind = "web" | "android")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgesparseError
from ..targets import Target


@dataclass
class BundleModel:
    """What a bundle writer needs from the compile: the linked artifact in `work_dir` and the model's API."""

    name: str  # the model's name, as the user gave it
    c_name: str  # its C identifier: files and symbols are named after it
    work_dir: Path  # the artifact being written: header, libNAME.a, sources, kernels.o
    inputs: list[dict]  # [{"name", "shape", "dtype", "bytes"}]
    outputs: list[dict]
    arena_bytes: int
    max_threads: int = 1
    options: dict = field(default_factory=dict)  # e.g. {"android_api": 24}

    @property
    def header(self) -> Path:
        return self.work_dir / f"{self.c_name}.h"

    @property
    def library(self) -> Path:
        return self.work_dir / f"lib{self.c_name}.a"


def write_bundle(target: Target, model: BundleModel) -> dict | None:
    """Writes the target's bundle into model.work_dir / bundle.dir; returns its manifest entry (None: no bundle)."""
    if not target.bundle:
        return None
    from . import android, web

    writers = {"web": web.write, "android": android.write}
    kind = target.bundle.get("kind")
    if kind not in writers:
        raise EdgesparseError(f"target {target.name}: unknown bundle kind '{kind}' (known: {', '.join(writers)})")
    out = model.work_dir / target.bundle.get("dir", kind)
    out.mkdir()
    entry = {"kind": kind, "dir": out.name, **writers[kind](target, model, out)}
    entry["bytes"] = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    entry["total_bytes"] = sum(entry["bytes"].values())
    return entry


def fill_template(text: str, values: dict[str, str]) -> str:
    """Replaces each @KEY@ in a runtime template; every placeholder must be given."""
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    leftover = [w for w in text.split("@") if w.isupper() and w.replace("_", "").isalnum()]
    assert not leftover, f"unfilled template placeholders: {leftover}"
    return text
