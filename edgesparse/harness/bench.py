"""bench: latency of an artifact on its device, with the conventions of TFLite's benchmark tool
(warm-up, runs, threads; min / median / p90 / max and the spread)."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..compiler import load_manifest
from ..devices import Device, get_device
from ..errors import EdgesparseError


@dataclass
class BenchResult:
    target: str
    device: str
    emulated: bool
    runs: int
    warmup: int
    threads: int
    min_ms: float
    median_ms: float
    p90_ms: float
    max_ms: float
    mean_ms: float
    stdev_ms: float
    times_ms: list[float]
    #: per-layer rows (harness.profile.layer_times) when run with profile=True
    profile: list | None = None
    #: machine, versions, command (harness.machine.report_context)
    context: dict = field(default_factory=dict)

    @property
    def cv(self) -> float:
        """Coefficient of variation: the spread relative to the mean."""
        return self.stdev_ms / self.mean_ms if self.mean_ms else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["cv"] = round(self.cv, 4)
        return d


def summarize(times_ms: list[float], **meta) -> BenchResult:
    t = np.asarray(times_ms, dtype=np.float64)
    return BenchResult(
        times_ms=[float(x) for x in t],
        min_ms=float(t.min()),
        median_ms=float(np.median(t)),
        p90_ms=float(np.percentile(t, 90)),
        max_ms=float(t.max()),
        mean_ms=float(t.mean()),
        stdev_ms=float(t.std(ddof=1)) if len(t) > 1 else 0.0,
        **meta,
    )


def bench(artifact_dir, device=None, runs: int = 50, warmup: int = 10, threads: int = 1, timeout: float = 1800,
          profile: bool = False, seed: int = 0) -> BenchResult:
    """Times `runs` inferences after `warmup` on the device, on the same seeded random input `verify` uses.
    `profile` also measures every kernel call inside the C runtime (a -DES_PROFILE build of the runner)."""
    from .machine import report_context
    from .run import random_inputs

    if runs < 1 or warmup < 0 or threads < 1:
        raise EdgesparseError("bench needs --runs >= 1, --warmup >= 0, --threads >= 1")
    artifact = Path(artifact_dir).resolve()
    manifest = load_manifest(artifact)
    dev = device if isinstance(device, Device) else get_device(device, manifest)
    run_manifest = manifest
    if profile:
        from .profile import profiling_manifest

        run_manifest = profiling_manifest(artifact, manifest)
    with tempfile.TemporaryDirectory(prefix="edgesparse-bench-") as tmp:
        paths = []
        for i, arr in enumerate(random_inputs(manifest, seed)):
            paths.append(str(Path(tmp) / f"in{i}.bin"))
            arr.astype(arr.dtype.newbyteorder("<"), copy=False).tofile(paths[-1])
        args = ["bench", str(warmup), str(runs), str(threads), *paths]
        out = dev.run(artifact, run_manifest, args, timeout=timeout)
    data, times = parse_bench_output(out, dev.describe(), runs)
    rows = None
    if profile:
        from .profile import layer_times

        rows = layer_times(manifest, data.get("profile_ms"))
    return summarize(
        times, target=manifest["target"], device=dev.describe(), emulated=dev.emulated,
        runs=runs, warmup=warmup, threads=threads, profile=rows, context=report_context(dev),
    )


def parse_bench_output(out: str, device: str, runs: int) -> tuple[dict, list[float]]:
    """The runner's `{"times_ms": [...]}` line, checked: a device that returns anything else is an error."""
    try:
        data = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        times = data["times_ms"]
        if not isinstance(times, list) or not all(isinstance(t, (int, float)) and math.isfinite(t) and t >= 0
                                                  for t in times):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError, IndexError):
        raise EdgesparseError(f"device '{device}' returned malformed benchmark output: {out[:120]!r}") from None
    if len(times) != runs:
        raise EdgesparseError(f"device '{device}' returned {len(times)} timings, expected {runs}")
    return data, [float(t) for t in times]
