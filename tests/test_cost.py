"""The sparse/dense cost model behind `--sparse auto`: the fit, the calibration cache (used when readable,
ignored when broken), the shipped defaults, `edgesparse calibrate` on this machine and its refusal of qemu,
and what `compile` tells the user."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgesparse import cost
from edgesparse.calibrate import calibrate, calibration_model
from edgesparse.kernels.spmm import pack_spmm_weights
from edgesparse.prune import magnitude_prune
from edgesparse.targets import all_targets, get_target

HOST = get_target("x86_64")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets an empty EDGESPARSE_CACHE (also seen by the CLI it starts)."""
    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def edgesparse(*args):
    return subprocess.run([sys.executable, "-m", "edgesparse", *map(str, args)], capture_output=True, text=True)


def random_layer(rng, cout, cin, pixels, sparsity, block=1):
    w = magnitude_prune(rng.standard_normal((cout, cin)).astype(np.float32), sparsity)
    return cost.LayerShape.from_weight(w, pixels, block)


SHAPES = [(128, 64, 3136), (256, 128, 784), (512, 512, 196), (1024, 1024, 49), (1000, 1024, 1), (24, 144, 3136),
          (64, 384, 196), (160, 960, 49)]


def test_stored_weights_are_what_the_packer_stores():
    rng = np.random.default_rng(0)
    for cout, cin, block in [(16, 8, 1), (18, 12, 4), (7, 5, 2), (3, 9, 4), (64, 32, 4)]:
        w = magnitude_prune(rng.standard_normal((cout, cin)).astype(np.float32), 0.7)
        assert cost.stored_weights(w, block) == pack_spmm_weights(w, block=block).stored_weights


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    layers = [random_layer(rng, co, ci, p, s) for co, ci, p in SHAPES for s in (0.5, 0.7, 0.9)]
    for terms_of, names in ((cost.sparse_terms, cost.SPARSE_TERMS), (cost.dense_terms, cost.DENSE_TERMS)):
        terms = np.array([terms_of(l, HOST) for l in layers])
        known = rng.uniform(0.5, 2.0, len(names)) / np.abs(terms).max(axis=0) * 0.3
        known[1] = 0.0  # a term the device does not pay for is found to be 0, not fitted to noise
        measured = terms @ known
        coef, err = cost.fit_nonnegative(terms, measured)
        np.testing.assert_allclose(coef, known, rtol=1e-6, atol=1e-12 * known.max())
        assert err < 1e-6
        # 3% noise on every measurement: the fit stays close and says how far off it is
        noisy = measured * rng.normal(1.0, 0.03, measured.size)
        coef, err = cost.fit_nonnegative(terms, noisy)
        assert (coef >= 0).all() and 0.01 < err < 0.06
        np.testing.assert_allclose(terms @ coef, measured, rtol=0.15)


def test_fit_never_goes_negative():
    # y = 2*x0 - 0.5*x1 fits exactly with a negative coefficient; the non-negative fit must not use it
    terms = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 4.0], [4.0, 1.0]])
    measured = terms @ np.array([2.0, -0.5])
    coef, err = cost.fit_nonnegative(terms, measured)
    assert (coef >= 0).all() and coef[1] == 0.0
    unconstrained = np.linalg.lstsq(terms, measured, rcond=None)[0]
    assert unconstrained[1] < 0 and err > 0


def test_every_shipped_default_predicts_sparse_for_pruned_mobilenet_layers_only():
    """The descriptors' [sparse_cost]: a MobileNet-sized 1x1 layer at 90% is predicted clearly faster sparse;
    with dense weights it is not (on wasm32 the dense conv, without FMA, is about as slow as spmm at 0%)."""
    rng = np.random.default_rng(2)
    for tgt in all_targets().values():
        model = cost.load_cost_model(tgt, cached=False)
        assert model.source == "default" and "edgesparse calibrate --target " + tgt.name in model.describe()
        for cout, cin, pixels in [(512, 512, 196), (256, 256, 784)]:
            gains = [model.predict(random_layer(rng, cout, cin, pixels, s)).gain for s in (0.0, 0.9)]
            assert gains[1] > 1.5 and gains[0] < 1.1, (tgt.name, cout, cin, pixels, gains)


def write_calibration(target_name, device="local", date="2026-01-02", scale=1.0):
    tgt = get_target(target_name)
    model = cost.CostModel(tgt, {t: scale * (i + 1) * 1e-7 for i, t in enumerate(cost.SPARSE_TERMS)},
                           {t: (i + 1) * 1e-8 for i, t in enumerate(cost.DENSE_TERMS)}, "calibrated",
                           device=device, date=date, machine="test CPU", fit_error={"sparse": 0.1, "dense": 0.1})
    return cost.save_calibration(model), model


def test_cached_calibration_is_used_unless_told_not_to(private_cache):
    path, written = write_calibration("x86_64")
    assert path == private_cache / "cost" / "x86_64.json"
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    data = json.loads(path.read_text())
    assert data["format"] == cost.FORMAT and data["device"] == "local" and data["machine"] == "test CPU"
    loaded = cost.load_cost_model(HOST)
    assert loaded.source == "calibrated" and loaded.sparse == written.sparse and loaded.dense == written.dense
    assert loaded.describe() == "calibrated on local 2026-01-02"
    assert cost.load_cost_model(HOST, cached=False).sparse == cost.default_model(HOST).sparse
    assert cost.load_cost_model(get_target("wasm32")).source == "default"  # per target


@pytest.mark.parametrize("content, why", [
    ("{not json", "unreadable"),
    (b"\xff\xfe\x00garbage", "unreadable"),
    (json.dumps({"format": 99}), "ignored"),
    (json.dumps({"format": cost.FORMAT, "target": "wasm32"}), "ignored"),
    ("missing term", "ignored"),
    ("negative", "ignored"),
    ("[]", "ignored"),
])
def test_corrupt_cache_falls_back_to_the_default(private_cache, content, why):
    path, _ = write_calibration("x86_64")
    data = json.loads(path.read_text())
    if content == "missing term":
        del data["sparse"]["call"]
        content = json.dumps(data)
    elif content == "negative":
        data["dense"]["macs"] = -1.0
        content = json.dumps(data)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    model = cost.load_cost_model(HOST)
    assert model.source == "default" and model.sparse == cost.default_model(HOST).sparse
    assert why in model.note and str(path) in model.describe()


def small_net(path, levels=(0.9,)):
    """One 1x1 conv (32 -> 48 at 8x8) and one fully-connected layer (64 -> 32) per level."""
    return calibration_model(path, conv_chains=(((8, 8), (32, 48)),), fc_chain=(64, 32), levels=levels)


def test_compile_prints_decisions_gain_and_calibration_source(tmp_path, private_cache):
    small_net(tmp_path / "m.onnx")
    # a calibration in which the sparse kernels cost 1000x the default's: every layer predicted slower sparse
    write_calibration("x86_64", date="2026-01-02", scale=1e4)
    proc = edgesparse("compile", tmp_path / "m.onnx", "-t", "x86_64", "-o", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    assert "cost model: calibrated on local 2026-01-02" in proc.stdout
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["cost_model"]["source"] == "calibrated"
    layers = manifest["sparsify"]
    assert len(layers) == 2 and not any(l["sparse"] for l in layers)
    for l in layers:
        assert l["predicted_gain"] < 1 and l["reason"].startswith(f"dense: predicted {l['predicted_gain']:.2f}x")
        assert l["name"] in proc.stdout
    assert "predicted time of the 2 1x1/FC layers" in proc.stdout

    # --no-tune-cache: the descriptor's default, which predicts 90% sparse layers of this size faster
    proc = edgesparse("compile", tmp_path / "m.onnx", "-t", "x86_64", "-o", tmp_path / "b", "--no-tune-cache")
    assert proc.returncode == 0, proc.stderr
    assert "cost model: descriptor default: run `edgesparse calibrate --target x86_64 --device local`" in proc.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["cost_model"]["source"] == "default"
    for l in manifest["sparsify"]:
        assert (l["predicted_gain"] > 1) == l["sparse"], l

    # a corrupt cache costs the calibration, not the compile
    (private_cache / "cost" / "x86_64.json").write_text("{")
    proc = edgesparse("compile", tmp_path / "m.onnx", "-t", "x86_64", "-o", tmp_path / "c", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["cost_model"]["source"] == "default"


@pytest.mark.parametrize("target", ["arm64", "x86_64"])
def test_calibrate_refuses_qemu(target, private_cache):
    proc = edgesparse("calibrate", "--target", target, "--device", "qemu")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "emulated" in lines[0], proc.stderr
    assert "calibrate" in lines[0] and "real device" in lines[0]
    assert not (private_cache / "cost").exists()


def test_calibrate_on_this_machine_writes_the_cache(private_cache):
    """A real calibration, kept small: one conv and one fully-connected layer, few runs."""
    logged = []
    rep = calibrate("x86_64", "local", runs=5, conv_chains=(((8, 8), (32, 48)),), fc_chain=(64, 32),
                    levels=(0.8,), log=logged.append)
    assert rep.cache == private_cache / "cost" / "x86_64.json" and any("bench" in m for m in logged)
    assert [s.name for s in rep.samples] == ["pw8x8_s80_0", "fc_s80_0"]
    for s in rep.samples:
        assert s.sparse_ms > 0 and s.dense_ms > 0 and s.layer.nonzeros == round(0.2 * s.layer.cout * s.layer.cin)
    data = json.loads(rep.cache.read_text())
    assert data["format"] == cost.FORMAT and data["target"] == "x86_64" and data["device"] == "local"
    assert data["date"] == rep.model.date and data["machine"] == rep.model.machine != ""
    assert set(data["sparse"]) == set(cost.SPARSE_TERMS) and set(data["dense"]) == set(cost.DENSE_TERMS)
    assert all(v >= 0 for v in [*data["sparse"].values(), *data["dense"].values()])
    assert set(data["fit_error"]) == {"sparse", "dense"} and len(data["measured"]) == 2
    loaded = cost.load_cost_model(HOST)
    assert loaded.source == "calibrated" and loaded.sparse == data["sparse"]
    # the fit reproduces what it was fitted to about as well as it says
    for s in rep.samples:
        p = loaded.predict(s.layer)
        assert abs(p.sparse_ms - s.sparse_ms) / s.sparse_ms <= 2 * data["fit_error"]["sparse"] + 1e-6
