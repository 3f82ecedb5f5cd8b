"""edgesparse calibrate: fit the sparse/dense cost model (edgesparse/cost.py) of a target to kernel times
measured on a device, and cache it for `--sparse auto`.

A synthetic ONNX model holds chains of 1x1 convolutions (+ bias + ReLU) at the resolutions and widths of
MobileNetV1/V2's pointwise layers (56x56 .. 7x7, 24 .. 1024 channels) and a chain of fully-connected layers,
one chain per resolution and pruning level, each on its own input. It is compiled twice through `compile` -
every layer sparse (`sparse="on"`), every layer dense (`"off"`) - with the runtime's per-kernel timers, and both
are benchmarked on the device in alternating rounds; a layer's time is the lowest of its per-round means (a
shared machine only ever adds time). The fit goes to `$EDGESPARSE_CACHE/cost/<target>.json`. The dense build
uses the tune cache as `compile` does. Emulated devices (qemu) are refused, as by `edgesparse tune`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import cost
from .errors import EdgesparseError
from .targets import Target, get_target

LEVELS = (0.5, 0.7, 0.9)
#: ((H, W), channels along the chain): pointwise widths of MobileNetV1 (64..1024) and V2 (24..960)
CONV_CHAINS = (
    ((56, 56), (64, 128, 144, 24)),
    ((28, 28), (128, 256, 192, 32)),
    ((14, 14), (256, 512, 384, 64)),
    ((7, 7), (512, 1024, 960, 160)),
)
#: widths of the fully-connected chain (MobileNetV1's classifier, then an MLP-sized layer)
FC_CHAIN = (1024, 1000, 512)


@dataclass
class SyntheticLayer:
    name: str  # the ONNX node name (what the compile report calls the layer)
    w: np.ndarray  # [Cout, Cin], pruned
    pixels: int


@dataclass
class Sample:
    name: str
    layer: cost.LayerShape
    sparse_ms: float
    dense_ms: float

    def as_row(self) -> dict:
        """What the cache keeps of a measurement (to refit, or to see what the fit saw)."""
        return {"name": self.name, **asdict(self.layer), "sparse_ms": round(self.sparse_ms, 6),
                "dense_ms": round(self.dense_ms, 6)}


@dataclass
class CalibrationReport:
    model: cost.CostModel
    samples: list[Sample]
    cache: Path | None
    seconds: float


def calibration_model(path: Path, *, conv_chains=CONV_CHAINS, fc_chain=FC_CHAIN, levels=LEVELS,
                      seed: int = 0) -> list[SyntheticLayer]:
    """Writes the synthetic model to ``path``; returns its layers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .prune import magnitude_prune

    rng = np.random.default_rng(seed)
    nodes, inits, inputs, outputs, layers = [], [], [], [], []

    def chain(tag: str, x: str, x_shape: list[int], widths, level: float, conv: bool):
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            name = f"{tag}_{i}"
            w = magnitude_prune((rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32), level)
            b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
            wshape = (cout, cin, 1, 1) if conv else (cout, cin)
            inits.extend([numpy_helper.from_array(w.reshape(wshape), f"{name}_w"),
                          numpy_helper.from_array(b, f"{name}_b")])
            if conv:
                nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name,
                                              kernel_shape=[1, 1]))
            else:
                nodes.append(helper.make_node("Gemm", [x, f"{name}_w", f"{name}_b"], [name], name=name, transB=1))
            nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
            x = f"{name}_relu"
            layers.append(SyntheticLayer(name, w, int(np.prod(x_shape[2:])) if conv else 1))
        out_shape = [1, widths[-1], *x_shape[2:]]
        outputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, out_shape))

    for level in levels:
        pct = round(100 * level)
        for (h, w), widths in conv_chains:
            x = f"x{h}x{w}_s{pct}"
            inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, widths[0], h, w]))
            chain(f"pw{h}x{w}_s{pct}", x, [1, widths[0], h, w], widths, level, conv=True)
        if fc_chain:
            x = f"fc_s{pct}"
            inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, fc_chain[0]]))
            chain(f"fc_s{pct}", x, [1, fc_chain[0]], fc_chain, level, conv=False)
    widths_of: dict = {}
    for l in layers:  # a dense kernel call is known by its output shape only (see _layer_calls)
        if widths_of.setdefault((l.w.shape[0], l.pixels), l.w.shape[1]) != l.w.shape[1]:
            raise EdgesparseError(f"calibration model: two layers of {l.w.shape[0]} x {l.pixels} outputs with "
                                  f"different input widths")
    graph = helper.make_graph(nodes, "calibration", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return layers


def _layer_calls(manifest: dict, sparse: bool) -> list[int]:
    """The kernel call index of every sparsify decision of the manifest (the call order is not the graph's:
    a chain's last layer, a graph output, comes late). A sparse build's calls carry the decision's kernel name;
    a dense build's conv2d/matmul/gemv calls are told apart by their output shape only, so a shape must have one
    input width (calibration_model checks it) and same-shaped layers may swap: they run the same dense kernel."""
    decisions, calls = manifest["sparsify"], manifest["layers"]
    by_key: dict = {}
    for i, c in enumerate(calls):
        if sparse and c["kernel"].startswith("f32_spmm_"):
            by_key.setdefault(c["kernel"], []).append(i)
        elif not sparse and any(k in c["kind"] for k in ("conv2d", "matmul", "f32_gemv_")):
            by_key.setdefault((c["output_shape"][1], int(np.prod(c["output_shape"][2:]))), []).append(i)
    picked = []
    for d in decisions:
        cout = d["shape"][0] if d["op"] == "conv2d" else d["shape"][1]  # OIHW or [K, N]
        found = by_key.get(d["kernel"] if sparse else (cout, d["pixels"]))
        if not found:
            raise EdgesparseError(f"calibration: no {'sparse' if sparse else 'dense'} kernel call for layer {d['name']}")
        picked.append(found.pop(0))
    return picked


def measure(onnx_path: Path, layers: list[SyntheticLayer], tgt: Target, dev, work: Path, *, runs: int,
            rounds: int = 2, warmup: int = 5, say=lambda _: None) -> list[Sample]:
    """Per-layer sparse and dense kernel times of the synthetic model on ``dev``."""
    from .compiler import compile as compile_model
    from .harness.bench import bench
    from .progress import Progress

    artifacts, calls, blocks = {}, {}, {}
    for mode, label in (("on", "sparse"), ("off", "dense")):
        say(f"compile {label} ({len(layers)} layers)")
        res = compile_model(onnx_path, tgt, work / mode, sparse=mode, profile=True, progress=Progress(False))
        decisions = res.manifest["sparsify"]
        artifacts[mode] = res.out_dir
        calls[mode] = dict(zip((d["name"] for d in decisions), _layer_calls(res.manifest, mode == "on")))
        blocks.update({d["name"]: d["block"] for d in decisions})
    missing = [l.name for l in layers if l.name not in calls["on"] or l.name not in calls["off"]]
    if missing:
        raise EdgesparseError(f"calibration: layers {', '.join(missing[:3])} not found in the compiled model")
    best = {mode: dict.fromkeys(calls[mode], float("inf")) for mode in calls}
    for r in range(rounds):
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            say(f"round {r + 1}/{rounds}: bench {'sparse' if mode == 'on' else 'dense'} ({runs} runs)")
            rows = bench(artifacts[mode], dev, runs=runs, warmup=warmup, profile=True).profile
            for name, i in calls[mode].items():
                best[mode][name] = min(best[mode][name], rows[i]["ms"])
    samples = [Sample(l.name, cost.LayerShape.from_weight(l.w, l.pixels, blocks[l.name]), best["on"][l.name],
                      best["off"][l.name]) for l in layers]
    bad = [s.name for s in samples if not (s.sparse_ms > 0 and s.dense_ms > 0)]
    if bad:
        raise EdgesparseError(f"calibration: the device timed layers {', '.join(bad[:3])} at 0 ms (timer too coarse?)")
    return samples


def fit(samples: list[Sample], tgt: Target) -> cost.CostModel:
    """The cost model fitted to ``samples`` (device, date and machine left for the caller)."""
    s_terms = np.array([cost.sparse_terms(s.layer, tgt) for s in samples])
    d_terms = np.array([cost.dense_terms(s.layer, tgt) for s in samples])
    s_coef, s_err = cost.fit_nonnegative(s_terms, np.array([s.sparse_ms for s in samples]))
    d_coef, d_err = cost.fit_nonnegative(d_terms, np.array([s.dense_ms for s in samples]))
    return cost.CostModel(tgt, dict(zip(cost.SPARSE_TERMS, map(float, s_coef))),
                          dict(zip(cost.DENSE_TERMS, map(float, d_coef))), "calibrated",
                          fit_error={"sparse": round(s_err, 4), "dense": round(d_err, 4)})


def device_machine(dev) -> str:
    """The device's CPU as far as it is known: the host's for devices that run here."""
    if dev.name in ("local", "node", "chromium"):
        from .harness.machine import host_machine

        return host_machine().get("cpu_model") or ""
    info = dev.machine()
    return ", ".join(f"{k} {v}" for k, v in info.items() if v) if info else ""


def calibrate(target: str | Target, device: str | None = None, *, runs: int = 20, rounds: int = 2,
              save: bool = True, log: Callable[[str], None] | None = None, conv_chains=CONV_CHAINS,
              fc_chain=FC_CHAIN, levels=LEVELS) -> CalibrationReport:
    """Measure, fit and (``save``) cache the cost model of ``target`` on ``device`` (a real one)."""
    from .tune import tuning_device

    t0 = time.perf_counter()
    tgt = target if isinstance(target, Target) else get_target(target)
    dev = tuning_device(device, tgt, command="calibrate")
    if runs < 5:
        raise EdgesparseError(f"calibrate needs --runs >= 5, got {runs}")
    say = log or (lambda _: None)
    work = Path(tempfile.mkdtemp(prefix="edgesparse-calibrate-"))
    try:
        layers = calibration_model(work / "calibration.onnx", conv_chains=conv_chains, fc_chain=fc_chain,
                                   levels=levels)
        samples = measure(work / "calibration.onnx", layers, tgt, dev, work, runs=runs, rounds=rounds, say=say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model = fit(samples, tgt)
    model.device = dev.describe()
    model.date = time.strftime("%Y-%m-%d")
    model.machine = device_machine(dev)
    path = None
    if save:
        path = cost.save_calibration(model, {"runs": runs * rounds, "measured": [s.as_row() for s in samples]})
    return CalibrationReport(model, samples, path, time.perf_counter() - t0)
