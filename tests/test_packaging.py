"""An installed wheel works, not only a checkout: targets/, kernels/ and models/ travel inside it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    roots = {pkg: ROOT / folder for pkg, folder in cfg["package-dir"].items()}
    found = set()
    for pkg, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((pkg, *rel)))
    assert found == listed, f"missing from pyproject: {found - listed}; listed but absent: {listed - found}"


def test_wheel_installs_and_compiles_outside_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("edgesparse-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("edgesparse/targets/arm64.toml", "edgesparse/kernels/runtime/edgesparse_rt.c",
                     "edgesparse/kernels/runtime/runner.c", "edgesparse/kernels/runtime/wasi_runner.mjs",
                     "edgesparse/models/mobilenet_v1.py"):
        assert required in names, required

    # a venv that sees the heavy dependencies already installed, with edgesparse from the wheel only
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = subprocess.run([str(py), "-c", "import edgesparse, sys; print(edgesparse.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout
    assert str(venv) in probe, probe

    cli = venv / "bin" / "edgesparse"
    run = lambda *a: subprocess.run([str(cli), *map(str, a)], cwd=work, capture_output=True, text=True)
    assert run("zoo", "export", "mlp", "-o", "mlp.onnx").returncode == 0
    proc = run("compile", "mlp.onnx", "--target", "x86_64", "-o", "art")
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    np.save(work / "x.npy", x)
    proc = run("verify", "mlp.onnx", "art")
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
