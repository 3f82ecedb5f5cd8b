"""`edgesparse sweep`: prune to each level, compile, benchmark beside ONNX Runtime, write CSV + PNG + JSON and
print the table. Small here (the MLP, two levels); the MobileNetV1 sweeps are run by hand for the report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from edgesparse.harness.sweep import parse_levels, sparse_compile_option
from edgesparse.errors import EdgesparseError
from test_devices import requires_chromium


def edgesparse(*args):
    return subprocess.run([sys.executable, "-m", "edgesparse", *map(str, args)], capture_output=True, text=True)


def _check_outputs(out, proc, ort_engine, levels=(0.0, 0.9)):
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    engines = ["edgesparse dense", *(["edgesparse sparse"] if sparse_compile_option() else []), ort_engine]
    assert [(float(r["sparsity"]), r["engine"]) for r in rows] == [(s, e) for s in levels for e in engines]
    for r in rows:
        assert float(r["min_ms"]) <= float(r["median_ms"]) <= float(r["p90_ms"]) <= float(r["max_ms"])
        assert float(r["max_abs_diff_vs_ort"]) < 1e-4
    pruned = [float(r["weight_sparsity"]) for r in rows if r["engine"] == ort_engine]
    assert pruned[0] == 0 and pruned[1] > 0.5  # the classifier stays dense, the rest is at 90%
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    rep = json.loads((out / "sweep.json").read_text())
    assert rep["context"]["command"].startswith("edgesparse sweep") and rep["context"]["host"]["cores"]
    assert "median ms" in proc.stdout and ort_engine in proc.stdout and "wrote" in proc.stdout
    if not sparse_compile_option():
        assert "note: the compiler has no sparse option yet" in proc.stdout


def test_sweep_mlp_local(tmp_path):
    out = tmp_path / "sweep"
    proc = edgesparse("sweep", "mlp", "--target", "x86_64", "--device", "local", "--sparsity", "0,0.9",
                      "--runs", "5", "--warmup", "2", "--out", out)
    _check_outputs(out, proc, "onnxruntime")


@requires_chromium
def test_sweep_mlp_wasm_in_chromium(tmp_path):
    out = tmp_path / "sweep"
    proc = edgesparse("sweep", "mlp", "--target", "wasm32", "--device", "chromium", "--sparsity", "0,0.9",
                      "--runs", "5", "--warmup", "2", "--out", out)
    _check_outputs(out, proc, "onnxruntime-web")


def test_sweep_bad_levels_and_model(tmp_path):
    assert parse_levels("0.9,0,0.5") == [0.0, 0.5, 0.9]
    for bad in ("", "a,b", "1.0", "-0.1"):
        with pytest.raises(EdgesparseError):
            parse_levels(bad)
    proc = edgesparse("sweep", "alexnet", "--sparsity", "0.5", "--out", tmp_path / "s")
    assert proc.returncode == 2 and "neither an ONNX file nor a zoo model" in proc.stderr
