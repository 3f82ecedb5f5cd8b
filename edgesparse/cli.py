"""The `edgesparse` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import EdgesparseError


class _Cli(click.Group):
    """Turns EdgesparseError into `error: ...` and exit code 2; tracebacks only with --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgesparseError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Cli)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="edgesparse")
@click.pass_context
def main(ctx, debug):
    """Compile pruned neural networks into fast, self-contained artifacts for ARM, WebAssembly and x86-64."""
    ctx.ensure_object(dict)["debug"] = debug


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", default="x86_64", show_default=True, help="See `edgesparse targets`.")
@click.option("--output", "-o", "out_dir", default=None, help="Artifact directory [default: out/<model>-<target>].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,..",
              help="Pin an input's shape (needed for dynamic dimensions).")
@click.option("--name", default=None, help="C symbol prefix [default: the model file's stem].")
@click.option("--threads", default=1, show_default=True, help="Most threads the artifact will run with.")
@click.option("--profile", is_flag=True, help="Compile per-kernel timers into the runtime (see bench --profile).")
@click.option("--android-api", type=click.IntRange(21, 99), default=None, metavar="N",
              help="Android API level for the NDK build of android-arm64's .so (ANDROID_NDK_HOME) [default: 24].")
@click.option("--sparse", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="auto: layers at or above --min-sparsity that the target's cost model predicts faster sparse; "
                   "on: every eligible layer; off: none.")
@click.option("--min-sparsity", type=click.FloatRange(0, 1), default=None,
              help="Sparsity from which a layer runs sparse in auto mode [default: the target's].")
@click.option("--quiet", "-q", is_flag=True, help="Do not list the per-layer sparse/dense decisions.")
@click.option("--no-tune-cache", is_flag=True,
              help="Ignore what `edgesparse tune` and `edgesparse calibrate` stored: descriptor tiles and cost model.")
def compile_cmd(model, target, out_dir, input_shapes, name, threads, profile, android_api, sparse, min_sparsity,
                quiet, no_tune_cache):
    """Compile an ONNX MODEL (a file, or a model of `edgesparse zoo list`) into an artifact directory."""
    from .compiler import compile as compile_model

    out_dir = out_dir or f"out/{Path(model).stem}-{target}"
    path = _model_file(model)
    name = name or (Path(model).stem if path != model else None)
    res = compile_model(path, target, out_dir, input_shapes=list(input_shapes), name=name, threads=threads,
                        **({"profile": True} if profile else {}),
                        **({"android_api": android_api} if android_api else {}),
                        sparse=sparse, min_sparsity=min_sparsity, tuned=not no_tune_cache)
    m = res.manifest
    if not quiet:
        _print_sparse_decisions(m)
    tuned = sum(1 for l in m["layers"] if l.get("tiles"))
    if tuned and not quiet:
        click.echo(f"tuned tiles ({tuned} kernel calls) from the tune cache of {m['target']}")
    click.echo(
        f"{m['name']} -> {res.out_dir} ({m['target']}, {len(m['layers'])} kernels, "
        f"arena {m['arena_bytes'] / 1e6:.2f} MB, weights {m['weight_bytes'] / 1e6:.2f} MB, "
        f"{m['compile_seconds']:.1f} s)"
    )


def _print_sparse_decisions(manifest: dict) -> None:
    """Which 1x1 conv / FC layers run sparse, the cost model's predicted gain, and why the others stay dense:
    the sparse path never stays silently off."""
    layers = manifest["sparsify"]
    if not layers:
        return
    sparse = [l for l in layers if l["sparse"]]
    click.echo(f"sparse layers: {len(sparse)} of {len(layers)} conv/linear layers with constant weights "
               f"(--sparse {manifest.get('sparse_mode', 'auto')})")
    click.echo(f"  {'layer':40s} {'weight shape':22s} {'sparsity':>8s}  {'path':6s} {'gain':>6s}  kernel or why dense")
    for l in layers:
        gain = f"{l['predicted_gain']:5.2f}x" if l.get("predicted_gain") is not None else "     -"
        why = l["variant"] if l["sparse"] else l["reason"].removeprefix("dense: ")
        click.echo(f"  {l['name'][:40]:40s} {str(list(l['shape'])):22s} {l['sparsity']:8.1%}  "
                   f"{'sparse' if l['sparse'] else 'dense':6s} {gain}  {why}")
    predicted = [l for l in layers if l.get("predicted_dense_ms") is not None]
    if predicted:
        dense_ms = sum(l["predicted_dense_ms"] for l in predicted)
        compiled_ms = sum(l["predicted_sparse_ms"] if l["sparse"] else l["predicted_dense_ms"] for l in predicted)
        click.echo(f"predicted time of the {len(predicted)} 1x1/FC layers: {dense_ms:.3f} ms dense, "
                   f"{compiled_ms:.3f} ms as compiled ({dense_ms / compiled_ms:.2f}x)")
    region = (manifest.get("layout") or {}).get("sparse_region")
    if region:
        click.echo(f"layout: NCHW in every kernel; sparse region calls {region['first_call']}..{region['last_call']} "
                   f"({region['sparse_calls']} sparse, {region['dense_calls_inside']} dense between them, all CHW): "
                   f"{len(manifest['layout']['conversions'])} layout conversions")
        even_odd = manifest["layout"].get("rows_even_odd") or []
        if even_odd:
            click.echo(f"  {len(even_odd)} sparse layers store their rows even columns first for the stride-2 "
                       f"kernel after them: " + ", ".join(f"{e['from']} -> {e['to']}" for e in even_odd))
    cost_model = manifest.get("cost_model")
    click.echo(f"cost model: {cost_model['description'] if cost_model else 'none (the target has no [sparse_cost])'}")
    dense_bytes = sum(l["dense_bytes"] or 0 for l in sparse)
    packed = sum(l["packed_bytes"] or 0 for l in sparse)
    if sparse and dense_bytes:
        click.echo(f"packed weights of the sparse layers: {packed / 1e6:.2f} MB ({packed / dense_bytes:.0%} of dense fp32)")


def _model_file(model: str) -> str:
    """MODEL as an ONNX file: the path itself when it exists, else a zoo model's (cached) export; anything
    else is returned as it is, for the compiler to say what is wrong with it."""
    if Path(model).exists():
        return model
    from .models import ZOO, export_onnx

    return str(export_onnx(model)) if model in ZOO else model


def _load_inputs(paths: tuple[str, ...]):
    import numpy as np

    arrays = []
    for p in paths:
        try:
            arrays.append(np.load(p, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise EdgesparseError(f"{p}: cannot read as .npy ({exc})") from None
    return arrays


@main.command("run")
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--input", "-i", "inputs", multiple=True, required=True, help="An .npy file per model input, in order.")
@click.option("--output", "-o", "outputs", multiple=True, help="Where to write each output (.npy).")
@click.option("--device", "-d", default=None,
              help="local, qemu, node, chromium, ssh:user@host[:port], adb[:SERIAL] [default: the target's].")
def run_cmd(artifact, inputs, outputs, device):
    """Run one inference of ARTIFACT on a device."""
    import numpy as np

    from .harness.run import run_artifact

    results = run_artifact(artifact, _load_inputs(inputs), device)
    if outputs and len(outputs) != len(results):
        raise EdgesparseError(f"the model has {len(results)} output(s); -o given {len(outputs)} time(s)")
    for i, arr in enumerate(results):
        if outputs:
            np.save(outputs[i], arr)
            click.echo(f"output {i}: {list(arr.shape)} {arr.dtype} -> {outputs[i]}")
        else:
            click.echo(f"output {i}: {list(arr.shape)} {arr.dtype} {np.array2string(arr.ravel()[:8], precision=4)}...")


@main.command("verify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--device", "-d", default=None)
@click.option("--seed", default=0, show_default=True)
@click.option("--tolerance", default=1e-4, show_default=True, help="Max |error| relative to the output's scale.")
def verify_cmd(model, artifact, device, seed, tolerance):
    """Run the same random input through ONNX Runtime and ARTIFACT and compare (MODEL: a file or a zoo name)."""
    from .harness.verify import verify

    rep = verify(_model_file(model), artifact, device, seed=seed, tolerance=tolerance)
    for o in rep.outputs:
        click.echo(f"{o.name}: max |error| {o.max_abs_error:.3g}, output scale {o.scale:.3g}, relative {o.relative_error:.3g}")
    verdict = "PASS" if rep.ok else "FAIL"
    click.echo(f"{verdict}: {rep.target} on {rep.device}, tolerance {tolerance:g}")
    if not rep.ok:
        sys.exit(1)


@main.command("bench")
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option("--device", "-d", default=None, help="local, qemu, node, chromium, ssh:user@host[:port], adb[:SERIAL].")
@click.option("--runs", default=50, show_default=True)
@click.option("--warmup", default=10, show_default=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--profile", is_flag=True, help="Per-layer times measured inside the C runtime.")
@click.option("--top", default=10, show_default=True, help="Layers shown by --profile.")
@click.option("--compare", type=click.Choice(["ort"]), default=None,
              help="Also run the model through ONNX Runtime (local) or onnxruntime-web (node, chromium).")
@click.option("--model", default=None, help="The ONNX model for --compare [default: the artifact's source].")
@click.option("--json", "json_path", default=None, help="Write the result as JSON.")
def bench_cmd(artifact, device, runs, warmup, threads, profile, top, compare, model, json_path):
    """Measure ARTIFACT's latency on a device."""
    from .compiler import load_manifest
    from .devices import get_device
    from .harness.bench import bench

    manifest = load_manifest(artifact)
    dev = get_device(device, manifest)
    r = bench(artifact, dev, runs=runs, warmup=warmup, threads=threads, profile=profile)
    click.echo(f"{r.target} on {r.device}: warmup {r.warmup}, runs {r.runs}, threads {r.threads}")
    click.echo(
        f"latency ms: min {r.min_ms:.3f}  median {r.median_ms:.3f}  p90 {r.p90_ms:.3f}  max {r.max_ms:.3f}  "
        f"(spread: stdev {r.stdev_ms:.3f}, cv {100 * r.cv:.1f}%)"
    )
    if r.emulated:
        click.echo(f"note: {r.device} emulates the CPU; these figures are not a latency.")
    if r.cv > 0.10:
        click.echo("warning: large spread (cv > 10%); the machine is busy or throttling.")
    out = r.to_json()
    if profile:
        from .harness.profile import format_top

        for line in format_top(r.profile, top, r.mean_ms):
            click.echo(line)
    if compare:
        from .harness.compare import compare_ort

        c = compare_ort(Path(artifact).resolve(), manifest, dev, model, warmup=warmup, runs=runs, threads=threads)
        click.echo(f"{c.engine}: min {c.ort.min_ms:.3f}  median {c.ort.median_ms:.3f}  p90 {c.ort.p90_ms:.3f}  "
                   f"max {c.ort.max_ms:.3f}  (cv {100 * c.ort.cv:.1f}%)")
        ratio = c.ratio(r)
        click.echo(f"ratio ONNX Runtime / edgesparse (medians {c.ort.median_ms:.3f} / {r.median_ms:.3f} ms): "
                   f"{ratio:.2f} (edgesparse {'faster' if ratio >= 1 else 'slower'}); "
                   f"max |output difference| {c.max_abs_diff:.3g}")
        if c.ort.cv > 0.10:
            click.echo("warning: large spread in the ONNX Runtime runs (cv > 10%).")
        out["compare"] = c.to_json(r)
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


@main.command("sweep")
@click.argument("model")
@click.option("--target", "-t", default="x86_64", show_default=True)
@click.option("--device", "-d", default=None, help="[default: the target's]")
@click.option("--sparsity", "levels", default="0,0.5,0.7,0.8,0.9,0.95", show_default=True,
              help="Comma-separated pruning levels.")
@click.option("--runs", default=20, show_default=True)
@click.option("--warmup", default=5, show_default=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--out", "out_dir", default=None, help="[default: out/sweep-<model>-<target>-<device>]")
def sweep_cmd(model, target, device, levels, runs, warmup, threads, out_dir):
    """Latency against sparsity: prune MODEL (ONNX file or zoo name) to each level, compile, benchmark
    edgesparse and ONNX Runtime; write sweep.csv, sweep.png and sweep.json."""
    from .harness.sweep import format_table, parse_levels, sweep

    lv = parse_levels(levels)
    out_dir = out_dir or f"out/sweep-{Path(model).stem}-{target}-{(device or 'default').replace(':', '_')}"
    res = sweep(model, target, device, lv, out_dir, runs=runs, warmup=warmup, threads=threads)
    for note in res.notes:
        click.echo(f"note: {note}")
    for line in format_table(res.rows):
        click.echo(line)
    if any(r["cv"] > 0.10 for r in res.rows):
        click.echo("warning: large spread (cv > 10%) in some rows; the machine is busy or throttling.")
    click.echo(f"wrote {res.csv_path}, {res.png_path}, {res.json_path}")


@main.command("tune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", default="x86_64", show_default=True)
@click.option("--device", "-d", default=None, help="A real device (qemu is refused) [default: the target's].")
@click.option("--runs", default=15, show_default=True, help="Timed runs per candidate and round (median taken).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D1,D2,..")
def tune_cmd(model, target, device, runs, input_shapes):
    """Measure a few tile settings per dense layer shape of MODEL on a device; store the fastest in the
    tune cache ($EDGESPARSE_CACHE/tune/<target>.json) that `compile` applies."""
    from .tune import format_tiles, tune

    rep = tune(_model_file(model), target, device, runs=runs, input_shapes=list(input_shapes), log=lambda m: click.echo(m, err=True))
    click.echo(f"{rep.target} on {rep.device}: {len(rep.layers)} layer shapes tuned in {rep.seconds:.0f} s")
    click.echo(f"{'layer shape':64s} {'calls':>5s} {'default ms':>10s} {'best ms':>9s} {'gain':>6s}  best tiles")
    for l in rep.layers:
        key = l.key if len(l.key) <= 64 else l.key[:61] + "..."
        click.echo(f"{key:64s} {l.count:5d} {l.default_ms:10.4f} {l.best_ms:9.4f} {100 * l.gain:5.1f}%  "
                   f"{format_tiles(l.best_tiles)}")
    if rep.default_ms:
        click.echo(f"predicted: tuned layers {rep.default_ms:.3f} -> {rep.best_ms:.3f} ms "
                   f"({100 * (1 - rep.best_ms / rep.default_ms):.1f}% faster)")
    if rep.cache:
        click.echo(f"wrote {rep.cache}")


@main.command("calibrate")
@click.option("--target", "-t", default="x86_64", show_default=True)
@click.option("--device", "-d", default=None, help="A real device (qemu is refused) [default: the target's].")
@click.option("--runs", default=20, show_default=True, help="Timed runs per build and round.")
def calibrate_cmd(target, device, runs):
    """Fit the sparse/dense cost model that `--sparse auto` decides with to kernel times measured on a device;
    store it in $EDGESPARSE_CACHE/cost/<target>.json, which `compile` reads."""
    from .calibrate import calibrate

    rep = calibrate(target, device, runs=runs, log=lambda m: click.echo(m, err=True))
    m = rep.model
    click.echo(f"{m.target.name} on {m.device} ({m.machine or 'machine unknown'}): {len(rep.samples)} layers "
               f"measured in {rep.seconds:.0f} s")
    click.echo(f"{'layer':16s} {'Cout x Cin':>11s} {'pixels':>6s} {'sparsity':>8s} {'sparse ms':>9s} {'pred':>7s} "
               f"{'dense ms':>9s} {'pred':>7s}")
    for s in rep.samples:
        p = m.predict(s.layer)
        sparsity = 1 - s.layer.nonzeros / (s.layer.cout * s.layer.cin)
        click.echo(f"{s.name[:16]:16s} {f'{s.layer.cout}x{s.layer.cin}':>11s} {s.layer.pixels:6d} {sparsity:8.1%} "
                   f"{s.sparse_ms:9.4f} {p.sparse_ms:7.4f} {s.dense_ms:9.4f} {p.dense_ms:7.4f}")
    for family, coef in (("sparse", m.sparse), ("dense", m.dense)):
        terms = "  ".join(f"{k} {v:.4g}" for k, v in coef.items())
        click.echo(f"{family} ms = {terms}  (rms relative error of the fit {m.fit_error[family]:.1%})")
    if rep.cache:
        click.echo(f"wrote {rep.cache}")


@main.command("prune")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--sparsity", "-s", type=click.FloatRange(0, 1, max_open=True), required=True)
@click.option("--output", "-o", "out", required=True, help="Where to write the pruned .onnx.")
@click.option("--prune-first-conv", is_flag=True, help="Also prune the first convolution (left dense by default).")
@click.option("--prune-last-fc", is_flag=True, help="Also prune the last fully-connected layer.")
@click.option("--block", type=click.Choice(["1", "2", "4"]), default="1", show_default=True,
              help="Prune blocks of this many output channels together (1: unstructured); blocks of 4 run about "
                   "twice as fast in the sparse kernels.")
def prune_cmd(model, sparsity, out, prune_first_conv, prune_last_fc, block):
    """Magnitude-prune MODEL's conv and linear weights to SPARSITY (per layer; unstructured unless --block)."""
    from .prune import prune_onnx

    rep = prune_onnx(model, out, sparsity, skip_first_conv=not prune_first_conv, skip_last_fc=not prune_last_fc,
                     block=int(block))
    click.echo(f"{model} -> {out}: {len(rep.layers)} weight tensors, overall sparsity {rep.overall_sparsity:.1%}")


@main.command("targets")
def targets_cmd():
    """List the targets edgesparse can compile for."""
    from .targets import all_targets

    for t in all_targets().values():
        click.echo(f"{t.name:10s} {t.tvm.get('mtriple', ''):30s} device {t.default_device:6s} {t.description}")


@main.group("zoo")
def zoo_cmd():
    """The bundled benchmark models (PyTorch definitions, exported to ONNX on demand)."""


@zoo_cmd.command("list")
def zoo_list():
    from .models import ZOO

    for e in ZOO.values():
        click.echo(f"{e.name:16s} input {e.input_name} {list(e.input_shape)}  {e.description}")


@zoo_cmd.command("export")
@click.argument("name")
@click.option("--output", "-o", "out", required=True, help="Where to write the .onnx file.")
def zoo_export(name, out):
    from .models import export_onnx

    path = export_onnx(name, out)
    click.echo(f"{name} -> {path}")


@main.command("demo")
@click.option("--model", default="mobilenet_v1-p90", show_default=True,
              help="A zoo model (see `edgesparse zoo list`); the default is MobileNetV1 with 90%-pruned 1x1 layers.")
@click.option("--targets", default="x86_64,arm64,wasm32", show_default=True)
@click.option("--out", "out_root", default="out/demo", show_default=True)
@click.option("--runs", default=10, show_default=True, help="Timed runs per target (after 3 warm-up runs).")
def demo_cmd(model, targets, out_root, runs):
    """Compile a zoo model for every target (`--sparse auto`), verify each against ONNX Runtime, print a table:
    how many of the 1x1/linear layers run sparse, the error, the median latency."""
    from .compiler import compile as compile_model
    from .harness.bench import bench
    from .harness.verify import verify
    from .models import export_onnx

    onnx_path = export_onnx(model, Path(out_root) / f"{model}.onnx")
    rows = []
    failed = False
    for target in targets.split(","):
        res = compile_model(onnx_path, target, Path(out_root) / f"{model}-{target}")
        rep = verify(onnx_path, res.out_dir)
        b = bench(res.out_dir, runs=runs, warmup=3)
        failed |= not rep.ok
        lib = res.manifest["artifact_bytes"][res.manifest["files"]["library"]]
        eligible = [d for d in res.manifest["sparsify"] if d["block"] is not None]
        sparse = f"{sum(d['sparse'] for d in eligible)}/{len(eligible)}"
        rows.append((target, b.device, res.manifest["compile_seconds"], lib / 1e6, sparse, rep.worst, rep.ok,
                     b.median_ms, b.emulated))
    click.echo(f"\n{model}: edgesparse vs ONNX Runtime (same seeded input)")
    click.echo(f"{'target':13s} {'device':6s} {'compile s':>9s} {'lib MB':>7s} {'sparse':>6s} {'rel. error':>10s} "
               "verify  median ms")
    for target, dev, cs, mb, sparse, err, ok, med, emu in rows:
        click.echo(f"{target:13s} {dev:6s} {cs:9.1f} {mb:7.2f} {sparse:>6s} {err:10.2e} {'PASS' if ok else 'FAIL':6s}  "
                   f"{med:9.2f}{'  (emulated, not a latency)' if emu else ''}")
    click.echo("sparse: 1x1 conv / linear layers on the sparse kernels, of those the compiler could run sparse")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
