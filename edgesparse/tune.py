"""edgesparse tune: tile parameters measured per layer shape on a device, cached for compile.

For every distinct dense kernel of a model (the conv2d, window and matmul rules of kernels/schedule.py), a
few tile settings near the target's defaults are scheduled; those that give a different schedule are each
built into a one-kernel artifact (the kernel's PrimFunc called by a one-call Relax main, through compile's C
path) and timed on the device with `bench`. A setting is kept only if it beats the default by more than
MIN_GAIN. Results go to `$EDGESPARSE_CACHE/tune/<target>.json` (default `~/.cache/edgesparse/tune/`), keyed
by `kernels.schedule.layer_key` (rule + buffer shapes), so an entry serves every model with that layer;
`compile` reads it unless called with tuned=False (`--no-tune-cache`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cache import cache_root, write_json_atomic
from .errors import EdgesparseError
from .targets import Target, get_target

CACHE_FORMAT = 1
#: a candidate must beat the default by more than this (relative) to be kept: below it is noise
MIN_GAIN = 0.03
#: the rules with tile parameters
TUNABLE = ("conv2d", "window", "matmul")
MAX_CANDIDATES = 6


# ---------------------------------------------------------------- the cache


def cache_path(target_name: str) -> Path:
    return cache_root() / "tune" / f"{target_name}.json"


def load_cache(target_name: str) -> dict:
    """{layer key: entry} for the target; {} when there is no cache or it cannot be read."""
    path = cache_path(target_name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError):
        return {}  # a broken cache only costs the tuned speed, never a compile
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("layers"), dict):
        return {}
    return data["layers"]


def save_cache(target_name: str, entries: dict) -> Path:
    """Merges entries into the target's cache; written to a temporary file and renamed into place."""
    path = cache_path(target_name)
    layers = {**load_cache(target_name), **entries}
    data = {"format": CACHE_FORMAT, "target": target_name, "layers": dict(sorted(layers.items()))}
    return write_json_atomic(path, data)


def cached_tiles(tgt: Target) -> Callable[[str], dict | None] | None:
    """The schedule hook's tiles_for for compile: the tuned override of a layer key, if any."""
    layers = load_cache(tgt.name)
    if not layers:
        return None
    return lambda key: (layers.get(key) or {}).get("tiles") or None


# ---------------------------------------------------------------- candidates


def candidate_tiles(rule: str, tgt: Target) -> list[dict]:
    """Overrides to try for a kernel of `rule`, nearest to the target's defaults first; {} is the default."""
    t = tgt.tiles
    if rule == "conv2d":
        mr0, nv0, budget = int(t.get("conv_mr", 6)), int(t.get("conv_nv", 2)), int(t.get("conv_acc_regs", 12))
        tiles = [(mr, nv) for mr in (4, 6, 8, mr0) for nv in (1, 2, 3, nv0) if mr * nv <= budget]
        tiles = sorted(set(tiles), key=lambda p: (abs(p[0] - mr0) / 2 + abs(p[1] - nv0), -p[0] * p[1]))
        return [{}] + [{"conv_mr": mr, "conv_nv": nv, "conv_exact": True} for mr, nv in tiles]
    if rule == "window":
        nv0, rows0 = int(t.get("window_nv", 2)), int(t.get("window_rows", 2))
        pairs = [(nv0 // 2, rows0), (nv0 * 2, rows0), (nv0, rows0 // 2), (nv0, rows0 * 2), (nv0 * 2, rows0 * 2),
                 (nv0, rows0 * 4)]  # most of these give the same schedule (rows must divide the height)
        return [{}] + [{"window_nv": nv, "window_rows": r} for nv, r in pairs if nv >= 1 and r >= 1]
    if rule == "matmul":
        nv0 = int(t.get("matmul_nv", 4))
        return [{}] + [{"matmul_nv": nv} for nv in (nv0 // 4, nv0 // 2, nv0 * 2) if nv >= 1]
    return [{}]


def distinct_schedules(func, rule: str, tgt: Target) -> list[dict]:
    """The candidates of `rule` for `func` that give pairwise different schedules (at most MAX_CANDIDATES);
    the default ({}) first. A candidate the rule declines is dropped."""
    import tvm_ffi

    from .kernels.schedule import Rule, default_rules, with_tiles

    impl: Rule = next(r for r in default_rules() if r.name == rule)
    seen, kept = set(), []
    for override in candidate_tiles(rule, tgt):
        scheduled = impl.apply(func, with_tiles(tgt, override))
        if scheduled is None:
            continue
        h = tvm_ffi.structural_hash(scheduled)
        if h in seen:
            continue
        seen.add(h)
        kept.append(override)
        if len(kept) == MAX_CANDIDATES:
            break
    return kept


def one_kernel_module(func):
    """A Relax module whose main calls `func` once: inputs are its parameters, the output its last one."""
    from tvm import relax

    bufs = list(func.params)  # TVM 0.27: a PrimFunc's parameters are its buffers
    sinfo = [relax.TensorType([int(d) for d in b.shape], str(b.dtype)) for b in bufs]
    bb = relax.BlockBuilder()
    gv = bb.add_func(func, "kernel")
    params = [relax.Var(f"in{i}", s) for i, s in enumerate(sinfo[:-1])]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gv, params, sinfo[-1]))
        bb.emit_func_output(out)
    return bb.get()


# ---------------------------------------------------------------- tuning


@dataclass
class LayerResult:
    key: str
    rule: str
    kernels: list[str]  # the model's kernels with this layer shape
    calls: int = 0  # how many times the model calls them
    candidates: list[dict] = field(default_factory=list)
    times_ms: list[float] = field(default_factory=list)  # median per candidate, same order
    default_ms: float = 0.0
    best_ms: float = 0.0
    best_tiles: dict = field(default_factory=dict)  # {} when the default stays

    @property
    def count(self) -> int:
        return self.calls

    @property
    def gain(self) -> float:
        return 1.0 - self.best_ms / self.default_ms if self.default_ms else 0.0


@dataclass
class TuneReport:
    target: str
    device: str
    layers: list[LayerResult]
    cache: Path | None
    seconds: float

    @property
    def default_ms(self) -> float:
        """The tuned layers' predicted total (each shape's time x its count), with default tiles."""
        return sum(l.default_ms * l.count for l in self.layers)

    @property
    def best_ms(self) -> float:
        return sum(l.best_ms * l.count for l in self.layers)


def tuning_device(spec: str | None, tgt: Target, command: str = "tune"):
    """The device to measure on; an emulated one (qemu) is refused: its timings are not latencies.
    ``command`` names what measures (tune, calibrate) in the refusal."""
    from . import devices

    spec = spec or tgt.default_device
    name = spec.partition(":")[0]
    cls = devices._DEVICES.get(name)  # noqa: SLF001 - checked before get_device's compatibility check
    if cls is not None and cls.emulated:
        raise EdgesparseError(f"device '{name}' is emulated: its timings are not latencies, and measuring on it "
                              f"would fit noise; {command} {tgt.name} on a real device (--device ssh:user@host, "
                              f"adb)")
    return devices.get_device(spec, {"target": tgt.name, "default_device": tgt.default_device})


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def tune(model, target: str | Target, device: str | None = None, *, runs: int = 15, warmup: int = 5,
         rounds: int = 3, input_shapes=None, save: bool = True,
         log: Callable[[str], None] | None = None) -> TuneReport:
    """Tune every distinct dense layer shape of `model` (an ONNX path) for `target` on `device`.

    Each candidate is timed `rounds` times, `runs` runs after `warmup` each, the candidates of a shape
    interleaved round by round (a slow phase of a shared host hits all of them); its time is the median of all
    its runs. The fastest is kept if it beats the default by more than MIN_GAIN. Single-threaded kernels.
    """
    import tvm

    from .compiler import compile as compile_model
    from .compiler import lower_model
    from .harness.bench import bench
    from .kernels.schedule import layer_key, schedule_func

    t0 = time.perf_counter()
    tgt = target if isinstance(target, Target) else get_target(target)
    dev = tuning_device(device, tgt)
    if runs < 15:
        raise EdgesparseError(f"tune needs --runs >= 15 (a median of fewer is noise), got {runs}")
    say = log or (lambda _: None)

    mod = lower_model(model, tgt, input_shapes=input_shapes, sparse="auto")
    layers: dict[str, LayerResult] = {}
    funcs = {}
    calls = _call_counts(mod)
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        _, rule = schedule_func(func, tgt)
        if rule not in TUNABLE:
            continue
        key = layer_key(rule, func)
        if key not in layers:
            layers[key] = LayerResult(key, rule, [])
            funcs[key] = func
        layers[key].kernels.append(gv.name_hint)
        layers[key].calls += calls.get(gv.name_hint, 0)
    say(f"{len(layers)} distinct layer shapes in {sum(l.count for l in layers.values())} dense kernels")

    results = []
    with tempfile.TemporaryDirectory(prefix="edgesparse-tune-") as tmp:
        for i, (key, layer) in enumerate(layers.items()):
            layer.candidates = distinct_schedules(funcs[key], layer.rule, tgt)
            if len(layer.candidates) < 2:
                say(f"[{i + 1}/{len(layers)}] {key}: one schedule only, nothing to tune")
                continue
            kmod = one_kernel_module(funcs[key])
            artifacts = []
            for j, override in enumerate(layer.candidates):
                out = Path(tmp) / f"l{i}c{j}"
                res = compile_model(kmod, tgt, out, name="kernel", tuned=False, sparse="off",
                                    tiles_for=(lambda _k, o=override: o or None),
                                    progress=_quiet_progress())
                applied = [l for l in res.manifest["layers"] if l.get("tiles")]
                assert not override or applied, f"override {override} not applied to {key}"
                artifacts.append(out)
            times: list[list[float]] = [[] for _ in artifacts]
            for r in range(rounds):
                order = range(len(artifacts)) if r % 2 == 0 else reversed(range(len(artifacts)))
                for j in order:
                    times[j] += bench(artifacts[j], dev, runs=runs, warmup=warmup).times_ms
            layer.times_ms = [_median(t) for t in times]
            layer.default_ms = layer.times_ms[0]
            j_best = min(range(len(artifacts)), key=lambda j: layer.times_ms[j])
            if layer.times_ms[j_best] < layer.default_ms * (1 - MIN_GAIN):
                layer.best_ms, layer.best_tiles = layer.times_ms[j_best], layer.candidates[j_best]
            else:
                layer.best_ms, layer.best_tiles = layer.default_ms, {}
            results.append(layer)
            say(f"[{i + 1}/{len(layers)}] {key}: default {layer.default_ms:.4f} ms, best {layer.best_ms:.4f} ms "
                f"{format_tiles(layer.best_tiles)}")
            for a in artifacts:
                shutil.rmtree(a, ignore_errors=True)

    path = None
    if save and results:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        path = save_cache(tgt.name, {
            l.key: {"tiles": l.best_tiles, "default_ms": round(l.default_ms, 5), "best_ms": round(l.best_ms, 5),
                    "candidates": [{"tiles": c, "ms": round(t, 5)} for c, t in zip(l.candidates, l.times_ms)],
                    "device": dev.describe(), "runs": runs * rounds, "date": stamp}
            for l in results
        })
    return TuneReport(tgt.name, dev.describe(), results, path, time.perf_counter() - t0)


def _call_counts(mod) -> dict[str, int]:
    """{kernel name: calls in main}: identical kernels are one PrimFunc called several times."""
    from tvm import relax

    counts: dict[str, int] = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            v = binding.value
            if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.call_tir":
                counts[v.args[0].name_hint] = counts.get(v.args[0].name_hint, 0) + 1
    return counts


def format_tiles(tiles: dict) -> str:
    if not tiles:
        return "(default)"
    return " ".join(f"{k}={v}" for k, v in tiles.items() if k != "conv_exact")


def _quiet_progress():
    from .progress import Progress

    return Progress(False)
