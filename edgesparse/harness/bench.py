"""bench: latency of an artifact on its device, with the conventions of TFLite's benchmark tool
(warm-up, runs, threads; min / median / p90 / max and the spread)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..compiler import load_manifest
from ..devices import get_device
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


def bench(artifact_dir, device=None, runs: int = 50, warmup: int = 10, threads: int = 1, timeout: float = 1800) -> BenchResult:
    if runs < 1 or warmup < 0 or threads < 1:
        raise EdgesparseError("bench needs --runs >= 1, --warmup >= 0, --threads >= 1")
    artifact = Path(artifact_dir).resolve()
    manifest = load_manifest(artifact)
    dev = get_device(device, manifest)
    out = dev.run(artifact, manifest, ["bench", str(warmup), str(runs), str(threads)], timeout=timeout)
    try:
        times = json.loads(out)["times_ms"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise EdgesparseError(f"device '{dev.name}' returned malformed benchmark output: {out[:120]!r}") from None
    if len(times) != runs:
        raise EdgesparseError(f"device '{dev.name}' returned {len(times)} timings, expected {runs}")
    return summarize(
        times, target=manifest["target"], device=dev.describe(), emulated=dev.emulated,
        runs=runs, warmup=warmup, threads=threads,
    )
