"""compile(): a model in, a self-contained artifact directory out.

frontend (ONNX / torch) -> graph passes -> kernels (TIR, scheduled) -> static plan -> C driver -> zig link.
The artifact is written to a temporary directory beside `out_dir` and moved into place at the end, so a
failed compile never leaves a half-written output.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .aot.emit_c import c_identifier, emit_header, emit_source, plan_staging, write_weights
from .aot.plan import build_plan
from .cost import load_cost_model
from .errors import EdgesparseError
from .frontend import onnx_model
from .lower.build_kernels import compile_kernels, kernel_module, workspace_bound
from .lower.relax_to_tir import lower_to_kernels
from .passes.dense_templates import dense_templates
from .passes.pipeline import optimize_graph
from .passes.sparsify import onnx_weight_names, sparsify
from .progress import Progress
from .targets import Target, get_target
from .toolchain import zig

MANIFEST = "manifest.json"


@dataclass
class CompileResult:
    out_dir: Path
    manifest: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]


def _parse_shape_args(input_shapes) -> dict[str, tuple[int, ...]]:
    if not input_shapes:
        return {}
    if isinstance(input_shapes, dict):
        return {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}
    out = {}
    for item in input_shapes:  # "NAME:1,3,224,224"
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise EdgesparseError(f"--input-shape '{item}' is not NAME:D1,D2,...") from None
    return out


def _torch_to_onnx(module, example_inputs, tmp: Path) -> Path:
    from .frontend.torch_model import export_module

    return export_module(module, example_inputs, tmp / "model.onnx")


def _schedule_hook(tgt: Target, threads: int, report: dict, tiles_for=None, tiles_used: dict | None = None):
    from edgesparse.kernels.schedule import schedule_module

    return lambda mod: schedule_module(mod, tgt, threads=threads, report=report, tiles_for=tiles_for,
                                       tiles_used=tiles_used)


@dataclass
class _Front:
    """A model imported and through the graph passes: what kernel lowering starts from."""

    source: str
    name: str
    specs: list
    output_names: list[str]
    mod: object  # tvm.IRModule
    sparse_layers: list


def _front(model, tgt: Target, tmp_dir: Path, step, *, name=None, input_shapes=None, example_inputs=None,
           sparse="auto", min_sparsity=None, threads=1, cost_model="target") -> _Front:
    """compile's first two steps: import (ONNX path, torch.nn.Module) and graph passes. A Relax IRModule
    whose main calls kernels directly (a one-kernel module from `edgesparse tune`) passes through as it is."""
    import tvm

    if isinstance(model, tvm.IRModule):
        step("import")
        step("graph passes")
        names = [p.name for p in model["main"].params]
        specs = [onnx_model.TensorSpec(n, tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype))
                 for n, p in zip(names, model["main"].params)]
        return _Front(name or "kernel", name or "kernel", specs, ["output"], model, [])
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        onnx_path = Path(model)
    else:
        if example_inputs is None:
            raise EdgesparseError("compiling a torch.nn.Module needs example_inputs")
        source = type(model).__name__
        onnx_path = _torch_to_onnx(model, example_inputs, tmp_dir)
    name = name or (Path(source).stem if isinstance(model, (str, os.PathLike)) else source)

    step("import")
    proto = onnx_model.load_onnx(onnx_path)
    onnx_model.check_supported_ops(proto, source)
    specs = onnx_model.pin_input_shapes(proto, _parse_shape_args(input_shapes), source)
    proto = onnx_model.fold_shape_computations(proto, specs)
    output_names = [o.name for o in proto.graph.output]
    mod = onnx_model.import_to_relax(proto, specs, source)

    step("graph passes")
    mod = optimize_graph(mod)
    sparse_layers: list = []
    mod = sparsify(mod, tgt, mode=sparse, min_sparsity=min_sparsity, threads=threads,
                   report=sparse_layers, names=onnx_weight_names(proto), cost_model=cost_model)
    mod = dense_templates(mod, tgt, threads=threads)
    return _Front(source, name, specs, output_names, mod, sparse_layers)


def lower_model(model, target: str | Target, *, input_shapes=None, sparse="auto", threads=1):
    """The model's kernels as the schedule hook receives them (after FuseTIR), unscheduled: what
    `edgesparse tune` measures. Same import, graph passes and lowering as compile."""
    tgt = target if isinstance(target, Target) else get_target(target)
    captured = []

    def capture(mod):
        captured.append(mod)
        return mod

    with tempfile.TemporaryDirectory(prefix="edgesparse-lower-") as tmp:
        front = _front(model, tgt, Path(tmp), lambda _: None, input_shapes=input_shapes, sparse=sparse,
                       threads=threads)
        lower_to_kernels(front.mod, tgt.tvm_target(), schedule=capture)
    return captured[0]


def _layout_plan(kernels: list[str], decisions: list) -> dict:
    """How activations are laid out through the network as compiled. Every kernel edgesparse emits reads and
    writes NCHW, which at batch 1 is the CHW layout the f32-spmm kernels need (Fast Sparse ConvNets), so the
    sparse region (first to last sparse call) runs its depthwise, pooling and elementwise kernels in CHW too and
    is entered and left without a single layout conversion. Recorded so that a change which inserts one shows."""
    sparse = {d.kernel for d in decisions if d.sparse}
    at = [i for i, k in enumerate(kernels) if k in sparse]
    region = None
    if at:
        inside = kernels[at[0]: at[-1] + 1]
        region = {"first_call": at[0], "last_call": at[-1], "sparse_calls": len(at),
                  "dense_calls_inside": len(inside) - len(at)}
    # sparse layers whose kernel stores its rows even columns first, then odd, for the stride-2 depthwise conv
    # fused into the next layer's kernel (passes/sparsify.py _even_odd_rows)
    even_odd = [{"from": d.name, "to": d.rows_even_odd_to} for d in decisions if d.rows_even_odd_to]
    return {"activations": "NCHW", "sparse_region": region, "conversions": [], "rows_even_odd": even_odd}


def _layer_kind(kernel: str) -> str:
    if "__" in kernel:  # a template variant, named by what it is; "__<n>" makes its symbol unique
        return kernel.split("__")[0]
    parts = kernel.removeprefix("fused_").split("_")
    parts = [p for p in parts if not p.isdigit()]
    words = "_".join(parts)
    # strip TVM's de-duplication suffixes (conv2d_add_relu1 -> conv2d_add_relu)
    return words.rstrip("0123456789") or kernel


def _replace_dir(tmp_dir: Path, out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise EdgesparseError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
            raise EdgesparseError(f"{out_dir}: exists, is not empty and holds no edgesparse artifact; not overwriting")
        old = out_dir.with_name(out_dir.name + f".old-{os.getpid()}")
        out_dir.rename(old)
        tmp_dir.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp_dir.rename(out_dir)


def _write_bundle(tgt: Target, work_dir: Path, name, cname, specs, output_names, plan, threads, android_api):
    """The target's deployable bundle (descriptor [bundle]: web page + npm package, Android project), or None."""
    if not tgt.bundle:
        return None
    from .bundle import BundleModel, write_bundle

    def tensors(names, refs):
        return [{"name": nm, "shape": list(r.shape), "dtype": r.dtype, "bytes": r.nbytes} for nm, r in zip(names, refs)]

    return write_bundle(tgt, BundleModel(
        name=name, c_name=cname, work_dir=work_dir, inputs=tensors([s.name for s in specs], plan.inputs),
        outputs=tensors(output_names, plan.outputs), arena_bytes=plan.arena_bytes, max_threads=threads,
        options={"android_api": android_api},
    ))


def compile(
    model,
    target: str | Target = "x86_64",
    out_dir: str | os.PathLike = "out",
    *,
    input_shapes=None,
    example_inputs=None,
    name: str | None = None,
    threads: int = 1,
    progress: Progress | None = None,
    android_api: int | None = None,
    profile: bool = False,
    sparse: str = "auto",
    min_sparsity: float | None = None,
    tuned: bool = True,
    tiles_for=None,
) -> CompileResult:
    """Compile `model` (an ONNX path or a torch.nn.Module; `edgesparse tune` also passes one-kernel Relax
    modules) for `target` into `out_dir`.

    `threads` is the most threads the artifact will run with: kernels get parallel loops and the arena gets
    per-thread kernel scratch for that many. `profile` compiles the runtime's per-kernel timers in
    (-DES_PROFILE): the runner's bench then also prints per-call times (`edgesparse bench --profile`).
    `tuned` applies the tile parameters `edgesparse tune` measured for this target ($EDGESPARSE_CACHE/tune/)
    and the sparse/dense cost model `edgesparse calibrate` fitted ($EDGESPARSE_CACHE/cost/; without it, or
    with tuned=False, the descriptor's [sparse_cost] decides `sparse="auto"`);
    `tiles_for(layer key) -> dict | None` replaces the tile lookup (the tuner's candidates).
    """
    t_start = time.perf_counter()
    tgt = target if isinstance(target, Target) else get_target(target)
    if threads < 1:
        raise EdgesparseError(f"--threads must be at least 1, got {threads}")
    if threads > 1 and not tgt.threads:
        raise EdgesparseError(f"target {tgt.name} builds are single-threaded; --threads {threads} is not available")
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress.for_terminal()
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp_dir.chmod(0o755)
    cost_model = load_cost_model(tgt, cached=tuned)
    try:
        with progress.task(f"compile for {tgt.name}", total=6) as step:
            front = _front(model, tgt, tmp_dir, step, name=name, input_shapes=input_shapes,
                           example_inputs=example_inputs, sparse=sparse, min_sparsity=min_sparsity, threads=threads,
                           cost_model=cost_model)
            source, name, specs, output_names = front.source, front.name, front.specs, front.output_names
            sparse_layers = front.sparse_layers
            cname = c_identifier(name)

            step("lower to kernels")
            scheduled: dict = {}
            tiles_used: dict = {}
            if tiles_for is None and tuned:
                from .tune import cached_tiles

                tiles_for = cached_tiles(tgt)
            mod = lower_to_kernels(front.mod, tgt.tvm_target(),
                                   schedule=_schedule_hook(tgt, threads, scheduled, tiles_for, tiles_used))
            plan = build_plan(mod["main"])
            kmod = kernel_module(mod)
            called = {c.func for c in plan.calls}
            # Kernel scratch: the largest any kernel may need, once per thread (see es_parallel_launch).
            plan.workspace_bytes = threads * max(
                [workspace_bound(f) for gv, f in kmod.functions.items() if gv.name_hint in called], default=0
            )
            plan.max_threads = threads
            plan_staging(plan)

            step("compile kernels")
            compile_kernels(kmod, tgt.tvm_target(), tmp_dir / "kernels.o")

            step("emit C")
            header = f"{cname}.h"
            weights = f"{cname}.weights.bin"
            write_weights(plan, tmp_dir / weights)
            input_names = [s.name for s in specs]
            (tmp_dir / header).write_text(emit_header(name, plan, input_names, output_names))
            (tmp_dir / f"{cname}.c").write_text(emit_source(name, plan, input_names, output_names, weights))
            for f in ("edgesparse_rt.h", "edgesparse_rt.c"):
                shutil.copy(zig.runtime_dir() / f, tmp_dir / f)

            step("link")
            ctgt = profiling_target(tgt, len(plan.calls)) if profile else tgt
            zig.compile_c(ctgt, tmp_dir / f"{cname}.c", tmp_dir / "model.o")
            zig.compile_c(ctgt, tmp_dir / "edgesparse_rt.c", tmp_dir / "rt.o")
            lib = tmp_dir / f"lib{cname}.a"
            zig.archive([tmp_dir / "kernels.o", tmp_dir / "model.o", tmp_dir / "rt.o"], lib)
            zig.link_runner(ctgt, cname, header, lib, tmp_dir / tgt.runner_name)
            if tgt.is_wasm:
                shutil.copy(zig.runtime_dir() / "wasi_runner.mjs", tmp_dir / "wasi_runner.mjs")
            bundle = _write_bundle(tgt, tmp_dir, name, cname, specs, output_names, plan, threads, android_api)
            for f in ("kernels.o", "model.o", "rt.o"):
                (tmp_dir / f).unlink()

        manifest = {
            "format": 1,
            "name": name,
            "c_name": cname,
            "source": source,
            "target": tgt.name,
            "triple": tgt.tvm.get("mtriple"),
            "zig_target": tgt.zig_target,
            "default_device": tgt.default_device,
            "inputs": [{"name": s.name, "shape": list(r.shape), "dtype": r.dtype} for s, r in zip(specs, plan.inputs)],
            "outputs": [
                {"name": nm, "shape": list(r.shape), "dtype": r.dtype} for nm, r in zip(output_names, plan.outputs)
            ],
            "max_threads": threads,
            "sparse_mode": sparse,
            "sparsify": [d.as_dict() for d in sparse_layers],
            "cost_model": cost_model.as_dict() if cost_model is not None else None,
            "profile": profile,
            "arena_bytes": plan.arena_bytes,
            "activation_bytes": plan.activation_bytes,
            "workspace_bytes": plan.workspace_bytes,
            "weight_bytes": plan.weight_bytes,
            "layers": [
                {"kernel": c.func, "kind": _layer_kind(c.func), "output_shape": list(c.args[-1].shape),
                 "schedule": scheduled.get(c.func),
                 **({"tiles": tiles_used[c.func]} if c.func in tiles_used else {})}
                for c in plan.calls
            ],
            "layout": _layout_plan([c.func for c in plan.calls], sparse_layers),
            "files": {
                "header": header,
                "source": f"{cname}.c",
                "weights": weights,
                "library": lib.name,
                "runner": tgt.runner_name,
            },
            "compile_seconds": round(time.perf_counter() - t_start, 2),
            "host": {"python": platform.python_version(), "machine": platform.machine()},
        }
        if bundle:
            manifest["bundle"] = bundle
        manifest["artifact_bytes"] = {p.name: p.stat().st_size for p in sorted(tmp_dir.iterdir())}
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return CompileResult(out_dir, manifest)


def profiling_target(tgt: Target, num_calls: int) -> Target:
    """`tgt` with the C runtime's per-kernel timers compiled in, sized for `num_calls` kernel calls."""
    import dataclasses

    flags = ("-DES_PROFILE", f"-DES_PROFILE_MAX_CALLS={max(1, num_calls)}")
    return dataclasses.replace(tgt, cflags=tuple(tgt.cflags) + flags)


def load_manifest(artifact_dir: str | os.PathLike) -> dict:
    path = Path(artifact_dir) / MANIFEST
    if not path.is_file():
        raise EdgesparseError(f"{artifact_dir}: not an edgesparse artifact (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EdgesparseError(f"{path}: corrupt manifest ({exc})") from None
