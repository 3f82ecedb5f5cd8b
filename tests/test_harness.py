"""`edgesparse bench` as a user runs it: per-layer profiles measured inside the C runtime, side-by-side ONNX
Runtime (Python locally, onnxruntime-web in Node and Chromium), the spread warning, and a JSON report that
records the machine, the versions and the exact command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import requires_node, requires_qemu
from edgesparse.compiler import compile as compile_model, load_manifest
from edgesparse.errors import EdgesparseError
from edgesparse.harness.bench import bench, parse_bench_output
from edgesparse.harness.profile import layer_times
from test_devices import fake_artifact, requires_chromium


def edgesparse(*args):
    return subprocess.run([sys.executable, "-m", "edgesparse", *map(str, args)], capture_output=True, text=True)


def test_bench_profile_prints_top_layers_and_writes_json(compiled, tmp_path):
    art = compiled("mlp", "x86_64")
    out = tmp_path / "bench.json"
    proc = edgesparse("bench", art, "--runs", "5", "--warmup", "2", "--profile", "--top", "2", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "per-layer profile (3 kernel calls" in proc.stdout and "top 2" in proc.stdout
    table = proc.stdout[proc.stdout.index("per-layer"):].splitlines()
    assert table[1].split()[:4] == ["#", "op", "kind", "path"] and table[4].startswith("wrote ")
    assert "f32_gemv_" in table[2] and " dense " in table[2] and "%" in table[2]
    rep = json.loads(out.read_text())
    rows = rep["profile"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert [r["kernel"] for r in rows] == [l["kernel"] for l in load_manifest(art)["layers"]]
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-6 and all(r["ms"] >= 0 for r in rows)
    # the layers' times add up to (at most) a run: they are measured inside it
    assert sum(r["ms"] for r in rows) <= rep["mean_ms"] * 1.05
    ctx = rep["context"]
    assert ctx["command"].startswith("edgesparse bench ") and "--profile" in ctx["command"]
    assert ctx["host"]["cores"] >= 1 and ctx["host"]["cpu_model"]
    assert ctx["versions"]["onnxruntime"] and ctx["versions"]["apache-tvm"]
    # profiling rebuilt the driver beside the artifact; the artifact's own runner stays timer-free
    assert (art / "profile" / "runner").is_file()
    assert b"es_rt_profile_end" in (art / "profile" / "runner").read_bytes()
    assert b"es_rt_profile_end" not in (art / "runner").read_bytes()


def test_compile_with_profile_flag(zoo_onnx, tmp_path):
    res = compile_model(zoo_onnx("mlp"), "x86_64", tmp_path / "p", profile=True)
    assert res.manifest["profile"] is True
    r = bench(res.out_dir, runs=3, warmup=1, profile=True)
    assert len(r.profile) == len(res.manifest["layers"])
    assert not (res.out_dir / "profile").exists()  # its own runner already profiles


@requires_qemu
def test_profile_on_arm64_through_qemu(compiled):
    r = bench(compiled("mlp", "arm64"), "qemu", runs=2, warmup=0, profile=True)
    assert r.emulated and len(r.profile) == 3


def test_compare_ort_locally(compiled, zoo_onnx, tmp_path):
    out = tmp_path / "b.json"
    proc = edgesparse("bench", compiled("mlp", "x86_64"), "--runs", "5", "--warmup", "2", "--compare", "ort",
                      "--model", zoo_onnx("mlp"), "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime 1." in proc.stdout and "ratio ONNX Runtime / edgesparse" in proc.stdout
    c = json.loads(out.read_text())["compare"]
    assert c["max_abs_diff"] < 1e-4 and c["ratio_ort_over_edgesparse"] > 0 and len(c["ort"]["times_ms"]) == 5


@requires_node
def test_compare_ort_web_in_node(compiled, zoo_onnx):
    proc = edgesparse("bench", compiled("mlp", "wasm32"), "--runs", "5", "--warmup", "2", "--compare", "ort",
                      "--model", zoo_onnx("mlp"), "--profile")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime-web 1.30 (WASM SIMD, 1 thread) in node" in proc.stdout
    assert "per-layer profile" in proc.stdout
    diff = float(proc.stdout.split("max |output difference| ")[1].split()[0])
    assert diff < 1e-4


@requires_chromium
def test_compare_ort_web_in_chromium(compiled, zoo_onnx):
    proc = edgesparse("bench", compiled("mlp", "wasm32"), "--device", "chromium", "--runs", "5", "--warmup", "2",
                      "--compare", "ort", "--model", zoo_onnx("mlp"), "--profile")
    assert proc.returncode == 0, proc.stderr
    assert "in chromium" in proc.stdout and "per-layer profile (3 kernel calls" in proc.stdout
    assert float(proc.stdout.split("max |output difference| ")[1].split()[0]) < 1e-4


def test_compare_needs_the_model_and_a_suitable_device(compiled, tmp_path):
    art = compiled("mlp", "x86_64")
    copy = tmp_path / "art"
    copy.mkdir()
    for f in art.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    m = json.loads((copy / "manifest.json").read_text())
    m["source"] = str(tmp_path / "gone.onnx")
    (copy / "manifest.json").write_text(json.dumps(m))
    (copy / "runner").chmod(0o755)
    proc = edgesparse("bench", copy, "--runs", "1", "--compare", "ort")
    assert proc.returncode == 2 and "pass --model MODEL.onnx" in proc.stderr


def test_large_spread_warns(compiled, tmp_path):
    spread = '#!/bin/sh\necho \'{"times_ms": [1.0, 1.0, 1.0, 2.5]}\'\n'
    proc = edgesparse("bench", fake_artifact(tmp_path, compiled("mlp", "x86_64"), spread), "--runs", "4")
    assert proc.returncode == 0, proc.stderr
    assert "warning: large spread (cv > 10%)" in proc.stdout


def test_malformed_runner_output_is_rejected():
    for out in ["", "nope", "[1, 2]", '{"times": [1]}', '{"times_ms": [1, "x"]}', '{"times_ms": [NaN]}',
                '{"times_ms": [-1]}']:
        with pytest.raises(EdgesparseError, match="malformed benchmark output"):
            parse_bench_output(out, "dev", 1)
    data, times = parse_bench_output('{"times_ms": [0.5, 0.25], "profile_ms": [0.1]}\n', "dev", 2)
    assert times == [0.5, 0.25] and data["profile_ms"] == [0.1]
    with pytest.raises(EdgesparseError, match="per-layer times for 2 kernel calls"):
        layer_times({"layers": [{"kernel": "a", "kind": "a"}, {"kernel": "b", "kind": "b"}]}, [1.0])


def test_profile_reads_sparse_decisions_from_the_manifest():
    manifest = {"layers": [{"kernel": "fused_spmm_1", "kind": "spmm", "output_shape": [1, 8]},
                           {"kernel": "fused_conv2d", "kind": "conv2d", "output_shape": [1, 8, 4, 4]}],
                "sparsify": [{"kernel": "fused_spmm_1", "sparse": True, "sparsity": 0.9}]}
    rows = layer_times(manifest, [3.0, 1.0])
    assert (rows[0]["sparse"], rows[0]["sparsity"], rows[0]["share"]) == (True, 0.9, 0.75)
    assert (rows[1]["sparse"], rows[1]["sparsity"]) == (False, None)
