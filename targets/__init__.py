"""Target descriptors: one TOML file per target beside this module, the only place a target's differences live."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from edgesparse.errors import EdgesparseError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    default_device: str
    tvm: dict
    vector_bits: int
    fma: bool
    # [isa] cpu_flags: the /proc/cpuinfo flags the generated code assumes; a local device without them refuses
    # to run the artifact instead of dying of SIGILL
    cpu_flags: tuple[str, ...]
    threads: bool
    zig_target: str
    cflags: tuple[str, ...]
    runner_ldflags: tuple[str, ...]
    runner_name: str
    tiles: dict = field(default_factory=dict)
    # [bundle]: what is packaged beside the artifact for app developers (kind = "web" | "android"); empty: none
    bundle: dict = field(default_factory=dict)
    # [sparse_cost]: default coefficients of the sparse/dense cost model (edgesparse/cost.py) for `--sparse auto`
    # when the target has no calibration in the cache (`edgesparse calibrate`)
    sparse_cost: dict = field(default_factory=dict)

    @property
    def vector_lanes_f32(self) -> int:
        return self.vector_bits // 32

    @property
    def is_wasm(self) -> bool:
        return self.zig_target.startswith("wasm")

    def tvm_target(self):
        import tvm

        return tvm.target.Target(dict(self.tvm))


def _parse(text: str) -> Target:
    d = tomllib.loads(text)
    tc = d["toolchain"]
    return Target(
        name=d["name"],
        description=d["description"],
        default_device=d["default_device"],
        tvm=d["tvm"],
        vector_bits=d["isa"]["vector_bits"],
        fma=d["isa"]["fma"],
        cpu_flags=tuple(d["isa"].get("cpu_flags", ())),
        threads=d["runtime"]["threads"],
        zig_target=tc["zig_target"],
        cflags=tuple(tc["cflags"]),
        runner_ldflags=tuple(tc["runner_ldflags"]),
        runner_name=tc["runner_name"],
        tiles=d.get("tiles", {}),
        bundle=d.get("bundle", {}),
        sparse_cost=d.get("sparse_cost", {}),
    )


@cache
def all_targets() -> dict[str, Target]:
    root = resources.files("edgesparse.targets")
    found = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            t = _parse(entry.read_text())
            found[t.name] = t
    return found


def get_target(name: str) -> Target:
    targets = all_targets()
    if name not in targets:
        raise EdgesparseError(f"unknown target '{name}' (known: {', '.join(targets)})")
    return targets[name]
