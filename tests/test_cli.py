"""The command line as a user meets it: the happy path, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def edgesparse(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgesparse", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_clean_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def small_model(path, dynamic=False, op="Relu"):
    shape = ["batch", 4] if dynamic else [1, 4]
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 10, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node(op, ["h"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def test_targets_lists_all_three():
    proc = edgesparse("targets")
    assert proc.returncode == 0
    for t in ("x86_64", "arm64", "wasm32"):
        assert t in proc.stdout


def test_zoo_list_and_export(tmp_path):
    proc = edgesparse("zoo", "list")
    assert proc.returncode == 0 and "mobilenet_v1" in proc.stdout and "resnet18" in proc.stdout
    proc = edgesparse("zoo", "export", "mlp", "-o", tmp_path / "mlp.onnx")
    assert proc.returncode == 0, proc.stderr
    onnx.checker.check_model(onnx.load(tmp_path / "mlp.onnx"))
    assert_clean_error(edgesparse("zoo", "export", "alexnet", "-o", tmp_path / "a.onnx"), "unknown zoo model 'alexnet'")


def test_compile_and_verify_take_a_zoo_name(tmp_path):
    proc = edgesparse("compile", "mlp", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "out" / "mlp-x86_64" / "manifest.json").read_text())
    assert manifest["name"] == "mlp" and manifest["inputs"][0]["shape"] == [1, 784]
    proc = edgesparse("verify", "mlp", "out/mlp-x86_64", cwd=tmp_path)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
    assert_clean_error(edgesparse("compile", "mlp2", cwd=tmp_path), "mlp2", "no such file")


def test_demo_the_readme_runs(tmp_path):
    """The README's first command (one target here): the pruned MobileNetV1 compiles with its 13 pruned 1x1
    layers sparse (the dense classifier is the 14th eligible layer), verifies against ONNX Runtime, and benches."""
    proc = edgesparse("demo", "--targets", "x86_64", "--runs", 3, "--out", tmp_path / "demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("x86_64 ")]
    assert " 13/14 " in row and "PASS" in row, proc.stdout
    assert (tmp_path / "demo" / "mobilenet_v1-p90-x86_64" / "manifest.json").is_file()
    assert_clean_error(edgesparse("demo", "--model", "alexnet", "--out", tmp_path / "d2"), "alexnet")


def test_compile_run_verify_bench(tmp_path):
    model = small_model(tmp_path / "m.onnx")
    out = tmp_path / "art"
    proc = edgesparse("compile", model, "--target", "x86_64", "-o", out)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0] == {"name": "x", "shape": [1, 4], "dtype": "float32"}

    x = np.array([[1, -2, 3, -4]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = edgesparse("run", out, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    w = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.maximum(x @ w, 0), rtol=1e-6)

    proc = edgesparse("verify", model, out)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr

    proc = edgesparse("bench", out, "--runs", 7, "--warmup", 2, "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and "p90" in proc.stdout
    b = json.loads((tmp_path / "b.json").read_text())
    for key in ("target", "device", "runs", "warmup", "min_ms", "median_ms", "p90_ms", "max_ms"):
        assert key in b
    assert b["runs"] == 7 and len(b["times_ms"]) == 7
    assert 0 < b["min_ms"] <= b["median_ms"] <= b["p90_ms"] <= b["max_ms"]


def test_missing_truncated_and_foreign_files(tmp_path):
    assert_clean_error(edgesparse("compile", tmp_path / "nope.onnx"), "nope.onnx", "no such file")
    (tmp_path / "text.onnx").write_text("this is not a model")
    assert_clean_error(edgesparse("compile", tmp_path / "text.onnx"), "text.onnx", "not a valid ONNX model")
    good = small_model(tmp_path / "m.onnx").read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(good[: len(good) // 2])
    assert_clean_error(edgesparse("compile", tmp_path / "trunc.onnx"), "trunc.onnx")


def test_unsupported_ops_are_listed_with_node_names(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Det", ["a"], ["b"], name="first_bad"),
        helper.make_node("Hardmax", ["b"], ["y"], name="second_bad"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "u.onnx")
    proc = edgesparse("compile", tmp_path / "u.onnx", "-o", tmp_path / "out")
    assert_clean_error(proc, "Det (node 'first_bad')", "Hardmax (node 'second_bad')")
    assert not (tmp_path / "out").exists()


def test_dynamic_dimension_must_be_pinned(tmp_path):
    model = small_model(tmp_path / "d.onnx", dynamic=True)
    assert_clean_error(edgesparse("compile", model, "-o", tmp_path / "o"), "input 'x'", "--input-shape")
    assert not (tmp_path / "o").exists()
    proc = edgesparse("compile", model, "-o", tmp_path / "o", "--input-shape", "x:1,4")
    assert proc.returncode == 0, proc.stderr
    assert_clean_error(edgesparse("compile", model, "--input-shape", "z:1,4"), "'z'")


def test_run_rejects_wrong_shape_and_dtype(tmp_path):
    out = tmp_path / "art"
    assert edgesparse("compile", small_model(tmp_path / "m.onnx"), "-o", out).returncode == 0
    np.save(tmp_path / "bad_shape.npy", np.zeros((1, 5), np.float32))
    np.save(tmp_path / "bad_dtype.npy", np.zeros((1, 4), np.float64))
    assert_clean_error(edgesparse("run", out, "-i", tmp_path / "bad_shape.npy"), "input 'x'", "[1, 4]", "[1, 5]")
    assert_clean_error(edgesparse("run", out, "-i", tmp_path / "bad_dtype.npy"), "input 'x'", "float32", "float64")
    assert_clean_error(edgesparse("run", tmp_path, "-i", tmp_path / "bad_dtype.npy"), "not an edgesparse artifact")
    assert_clean_error(edgesparse("bench", out, "--device", "toaster"), "unknown device 'toaster'")
    assert_clean_error(edgesparse("bench", out, "--device", "node"), "cannot run a x86_64 artifact")


def test_failed_compile_keeps_the_previous_artifact(tmp_path):
    out = tmp_path / "art"
    assert edgesparse("compile", small_model(tmp_path / "m.onnx"), "-o", out).returncode == 0
    before = sorted(p.name for p in out.iterdir())
    (tmp_path / "bad.onnx").write_text("garbage")
    assert_clean_error(edgesparse("compile", tmp_path / "bad.onnx", "-o", out))
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_debug_shows_the_traceback(tmp_path):
    proc = edgesparse("--debug", "compile", tmp_path / "nope.onnx")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_output_directory_with_unusual_characters(tmp_path):
    """zig's linker cannot create outputs whose absolute path holds a '%': the toolchain names them relatively."""
    out = tmp_path / "runs 100% & more" / "art"
    proc = edgesparse("compile", small_model(tmp_path / "m.onnx"), "-o", out)
    assert proc.returncode == 0, proc.stderr
    proc = edgesparse("verify", tmp_path / "m.onnx", out)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
