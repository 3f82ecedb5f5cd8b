"""Every device that can exist on this machine, driven for real: local, qemu, node, chromium (Debian's package,
through playwright-core), ssh (a real OpenSSH server started on 127.0.0.1 by the test). adb has no hardware
here: its exact commands are checked, and its whole flow runs against a stand-in `adb` that maps the device's
/data/local/tmp to a local folder and runs the arm64 runner under qemu (so adb itself stays unverified).
Bad input: unknown device, unreachable host, a runner that crashes, hangs or prints garbage: one clear error,
no hang, and no temporary directory left on the device."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import have, requires_node, requires_qemu
from edgesparse.compiler import load_manifest
from edgesparse.devices import get_device
from edgesparse.devices.chromium import CHROMIUM, JS_DIR
from edgesparse.devices.remote import AdbDevice
from edgesparse.errors import EdgesparseError
from edgesparse.harness.bench import bench
from edgesparse.harness.run import random_inputs, run_artifact

requires_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and have("node") and (JS_DIR / "node_modules" / "playwright-core").is_dir()),
    reason="chromium, node or playwright-core missing (run .ci/setup)")
requires_sshd = pytest.mark.skipif(not (Path("/usr/sbin/sshd").is_file() and have("ssh") and os.geteuid() == 0),
                                   reason="needs root and openssh-server (apt-get install -y openssh-server)")
REMOTE_DIR = re.compile(r"edgesparse-[0-9a-f]{12}$")


def edgesparse(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgesparse", *map(str, args)], capture_output=True, text=True,
                          env=env)


def remote_dirs(root="/tmp") -> set[str]:
    return {p.name for p in Path(root).iterdir() if REMOTE_DIR.match(p.name)} if Path(root).is_dir() else set()


def fake_artifact(tmp_path, real: Path, runner_script: str | bytes, name="fake") -> Path:
    """A copy of `real`'s manifest with a runner that misbehaves as told."""
    art = tmp_path / name
    art.mkdir()
    manifest = load_manifest(real)
    shutil.copy(real / "manifest.json", art / "manifest.json")
    runner = art / manifest["files"]["runner"]
    if isinstance(runner_script, bytes):
        runner.write_bytes(runner_script)
    else:
        runner.write_text(runner_script)
    runner.chmod(0o755)
    if (real / "wasi_runner.mjs").is_file():
        shutil.copy(real / "wasi_runner.mjs", art / "wasi_runner.mjs")
    return art


CRASH = "#!/bin/sh\nkill -SEGV $$\n"
HANG = "#!/bin/sh\nexec sleep 60\n"
GARBAGE = "#!/bin/sh\necho 'hello, not json'\n"
# (module (memory (export "memory") 1) (func (export "_start") (loop (br 0)))): a WASI program that never ends
WASM_LOOP = bytes.fromhex(
    "0061736d01000000"  # magic, version
    "010401600000"  # types: () -> ()
    "03020100"  # one function of type 0
    "0503010001"  # one memory of 1 page
    "0713" "02" "066d656d6f7279" "0200" "065f7374617274" "0000"  # exports: memory, _start
    "0a0901070003400c000b0b"  # code: loop { br 0 }
)


# ---------------------------------------------------------------- device choice


def test_unknown_device_is_a_clear_error(compiled):
    art = compiled("mlp", "x86_64")
    proc = edgesparse("bench", art, "--device", "toaster", "--runs", "1")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown device 'toaster'"), proc.stderr
    assert "chromium" in proc.stderr and "ssh" in proc.stderr and "adb" in proc.stderr
    with pytest.raises(EdgesparseError, match="needs a destination"):
        get_device("ssh", load_manifest(art))
    with pytest.raises(EdgesparseError, match="cannot run a x86_64 artifact"):
        get_device("chromium", load_manifest(art))


def test_local_device_refuses_code_for_cpu_flags_the_host_lacks(compiled, monkeypatch):
    """An AVX-512 artifact on a host without AVX-512 is a one-line error naming the flags, not a SIGILL."""
    import edgesparse.devices.local as local

    manifest = dict(load_manifest(compiled("mlp", "x86_64")), target="x86_64-avx512")
    monkeypatch.setattr(local, "host_cpu_flags", lambda: {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"})
    with pytest.raises(EdgesparseError, match=r"cannot run this x86_64-avx512 artifact: the host CPU lacks avx512f "
                                              r"avx512bw avx512cd avx512dq avx512vl$"):
        get_device("local", manifest)
    monkeypatch.setattr(local, "host_cpu_flags", lambda: {"avx", "avx2", "fma"})
    with pytest.raises(EdgesparseError, match="lacks bmi1 bmi2 f16c movbe abm$"):
        get_device("local", load_manifest(compiled("mlp", "x86_64")))


# ---------------------------------------------------------------- local, qemu, node


def test_local_runner_crash_hang_and_garbage(compiled, tmp_path):
    real = compiled("mlp", "x86_64")
    with pytest.raises(EdgesparseError, match=r"runner crashed \(signal 11\)"):
        bench(fake_artifact(tmp_path, real, CRASH, "crash"), "local", runs=2, warmup=0)
    t0 = time.monotonic()
    with pytest.raises(EdgesparseError, match="timed out after 2 s"):
        bench(fake_artifact(tmp_path, real, HANG, "hang"), "local", runs=2, warmup=0, timeout=2)
    assert time.monotonic() - t0 < 10
    with pytest.raises(EdgesparseError, match="malformed benchmark output: 'hello, not json"):
        bench(fake_artifact(tmp_path, real, GARBAGE, "garbage"), "local", runs=2, warmup=0)
    wrong_count = '#!/bin/sh\necho \'{"times_ms": [1.0]}\'\n'
    with pytest.raises(EdgesparseError, match="returned 1 timings, expected 3"):
        bench(fake_artifact(tmp_path, real, wrong_count, "count"), "local", runs=3, warmup=0)


@requires_qemu
def test_qemu_bench_is_labelled_emulated(compiled):
    proc = edgesparse("bench", compiled("mlp", "arm64"), "--device", "qemu", "--runs", "3", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    assert "arm64 on qemu" in proc.stdout and "not a latency" in proc.stdout


@requires_node
def test_node_runs_and_rejects_a_broken_wasm(compiled, tmp_path):
    art = compiled("mlp", "wasm32")
    x = random_inputs(load_manifest(art))
    y = run_artifact(art, x, "node")[0]
    assert y.shape == (1, 10) and np.isfinite(y).all()
    with pytest.raises(EdgesparseError, match="device 'node': cannot load"):
        bench(fake_artifact(tmp_path, art, b"not wasm at all", "broken"), "node", runs=1, warmup=0)


# ---------------------------------------------------------------- chromium


@requires_chromium
def test_chromium_runs_the_wasm_runner_like_node(compiled):
    art = compiled("mlp", "wasm32")
    x = random_inputs(load_manifest(art))
    in_node = run_artifact(art, x, "node")[0]
    in_chromium = run_artifact(art, x, "chromium")[0]
    np.testing.assert_array_equal(in_node, in_chromium)  # same wasm, same input: the same bits


@requires_chromium
def test_chromium_bench_records_the_browser(compiled, tmp_path):
    out = tmp_path / "b.json"
    proc = edgesparse("bench", compiled("mlp", "wasm32"), "--device", "chromium", "--runs", "5", "--warmup", "2",
                      "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "wasm32 on chromium: warmup 2, runs 5" in proc.stdout
    rep = json.loads(out.read_text())
    assert len(rep["times_ms"]) == 5 and all(t > 0 for t in rep["times_ms"])
    dev = rep["context"]["device"]
    assert dev["browser"].startswith("Chromium ") and "HeadlessChrome" in dev["user_agent"]
    assert dev["cross_origin_isolated"] is True  # COOP/COEP headers were served


@requires_chromium
def test_chromium_broken_wasm_and_hang_are_clear_errors(compiled, tmp_path):
    art = compiled("mlp", "wasm32")
    with pytest.raises(EdgesparseError, match="device 'chromium': .*(WebAssembly|wasm)"):
        bench(fake_artifact(tmp_path, art, b"not wasm at all", "broken"), "chromium", runs=1, warmup=0)
    t0 = time.monotonic()
    with pytest.raises(EdgesparseError, match="device 'chromium'"):
        bench(fake_artifact(tmp_path, art, WASM_LOOP, "loop"), "chromium", runs=1, warmup=0, timeout=5)
    assert time.monotonic() - t0 < 60


# ---------------------------------------------------------------- ssh, against a real sshd on loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """OpenSSH's sshd on 127.0.0.1:<free port>, a generated host key, one authorized client key; torn down after."""
    if not (Path("/usr/sbin/sshd").is_file() and have("ssh") and os.geteuid() == 0):
        pytest.skip("needs root and openssh-server")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    port = _free_port()
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {proc.stderr.read()}")
            time.sleep(0.1)
    old = os.environ.get("EDGESPARSE_SSH_OPTIONS")
    os.environ["EDGESPARSE_SSH_OPTIONS"] = (f"-i {d}/client_key -o IdentitiesOnly=yes "
                                            f"-o UserKnownHostsFile={d}/known_hosts")
    try:
        yield f"ssh:root@127.0.0.1:{port}"
    finally:
        if old is None:
            os.environ.pop("EDGESPARSE_SSH_OPTIONS", None)
        else:
            os.environ["EDGESPARSE_SSH_OPTIONS"] = old
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@requires_sshd
def test_ssh_run_matches_local_and_cleans_up(compiled, sshd):
    art = compiled("mlp", "x86_64")
    before = remote_dirs()
    x = random_inputs(load_manifest(art))
    np.testing.assert_array_equal(run_artifact(art, x, sshd)[0], run_artifact(art, x, "local")[0])
    r = bench(art, sshd, runs=5, warmup=1)
    assert r.device == sshd and len(r.times_ms) == 5
    assert r.context["device"]["arch"] == "x86_64"
    assert remote_dirs() == before


@requires_sshd
def test_ssh_cli_bench_with_profile(compiled, sshd, tmp_path):
    proc = edgesparse("bench", compiled("mlp", "x86_64"), "--device", sshd, "--runs", "3", "--profile",
                      "--json", tmp_path / "b.json", env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert "per-layer profile (3 kernel calls" in proc.stdout
    assert len(json.loads((tmp_path / "b.json").read_text())["profile"]) == 3


@requires_sshd
def test_ssh_failures_are_clear_and_leave_nothing_behind(compiled, sshd, tmp_path):
    real = compiled("mlp", "x86_64")
    before = remote_dirs()
    with pytest.raises(EdgesparseError, match=r"runner crashed \(signal 11\)"):
        bench(fake_artifact(tmp_path, real, CRASH, "crash"), sshd, runs=1, warmup=0)
    t0 = time.monotonic()
    with pytest.raises(EdgesparseError, match="runner timed out on the device"):
        bench(fake_artifact(tmp_path, real, HANG, "hang"), sshd, runs=1, warmup=0, timeout=2)
    assert time.monotonic() - t0 < 30
    with pytest.raises(EdgesparseError, match="malformed benchmark output"):
        bench(fake_artifact(tmp_path, real, GARBAGE, "garbage"), sshd, runs=1, warmup=0)
    assert remote_dirs() == before


@requires_qemu
@requires_sshd
def test_ssh_refuses_an_artifact_for_another_cpu(compiled, sshd):
    with pytest.raises(EdgesparseError, match="is x86_64; this arm64 artifact needs aarch64"):
        bench(compiled("mlp", "arm64"), sshd, runs=1, warmup=0)


@requires_sshd
def test_ssh_unreachable_host_fails_fast(compiled, sshd):
    art = compiled("mlp", "x86_64")
    t0 = time.monotonic()
    proc = edgesparse("bench", art, "--device", f"ssh:root@127.0.0.1:{_free_port()}", "--runs", "1",
                      env=os.environ.copy())
    assert proc.returncode == 2 and "cannot reach root@127.0.0.1" in proc.stderr and "Connection refused" in proc.stderr
    proc = edgesparse("bench", art, "--device", "ssh:root@no-such-host.invalid", "--runs", "1", env=os.environ.copy())
    assert proc.returncode == 2 and "cannot reach root@no-such-host.invalid port 22" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 60


# ---------------------------------------------------------------- adb (no hardware: commands checked, flow faked)


def test_adb_plan_is_push_run_pull_clean(compiled, tmp_path):
    art = compiled("mlp", "x86_64")  # plan() only names files; the target check happens on the device
    manifest = load_manifest(art)
    inp, out = tmp_path / "in0.bin", tmp_path / "out0.bin"
    inp.write_bytes(b"\0" * 16)
    plan = AdbDevice("SER123").plan(art, manifest, ["run", "-t", "1", str(inp), str(out)], timeout=60)
    d = plan.remote_dir
    assert d.startswith("/data/local/tmp/edgesparse-")
    cmds = [s.cmd for s in plan.steps] + [s.cmd for s in plan.cleanup]
    assert cmds[0] == ["adb", "-s", "SER123", "shell", "uname -m"]
    assert cmds[1] == ["adb", "-s", "SER123", "shell", f"mkdir {d}"]
    assert cmds[2] == ["adb", "-s", "SER123", "push", str(art / "runner"), f"{d}/runner"]
    assert cmds[3] == ["adb", "-s", "SER123", "push", str(inp), f"{d}/3_in0.bin"]
    assert cmds[4][:4] == ["adb", "-s", "SER123", "shell"]
    assert f"cd {d} && chmod 755 runner" in cmds[4][4] and f"./runner run -t 1 {d}/3_in0.bin {d}/4_out0.bin" in cmds[4][4]
    assert "timeout -k 5 60" in cmds[4][4] and cmds[4][4].endswith("echo __edgesparse_exit=$?")
    assert cmds[5] == ["adb", "-s", "SER123", "pull", f"{d}/4_out0.bin", str(out)]
    assert cmds[6] == ["adb", "-s", "SER123", "shell", f"rm -rf {d}"]


FAKE_ADB = r'''#!/usr/bin/env python3
# Stands in for adb: the "device" is FAKE_ADB_ROOT (its /data/local/tmp), arm64 binaries run under qemu-aarch64.
import json, os, shutil, subprocess, sys
root, args = os.environ["FAKE_ADB_ROOT"], sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["devices"]:
    print("List of devices attached")
    if not os.environ.get("FAKE_ADB_EMPTY"):
        print("FAKE0001\tdevice")
    sys.exit(0)
dev = lambda p: root + p
if args[0] == "push":
    shutil.copy(args[1], dev(args[2]))
elif args[0] == "pull":
    shutil.copy(dev(args[1]), args[2])
elif args[0] == "shell":
    if args[1] == "uname -m":
        print("aarch64")
        sys.exit(0)
    line = args[1].replace("/data/local/tmp", root + "/data/local/tmp").replace("./runner", "qemu-aarch64 ./runner")
    sys.exit(subprocess.run(["sh", "-c", line]).returncode)
'''


@requires_qemu
def test_adb_flow_against_a_stand_in_adb(compiled, tmp_path, monkeypatch):
    art = compiled("mlp", "arm64")
    bindir, root = tmp_path / "bin", tmp_path / "phone"
    bindir.mkdir()
    (root / "data/local/tmp").mkdir(parents=True)
    (bindir / "adb").write_text(FAKE_ADB)
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    x = random_inputs(load_manifest(art))
    y = run_artifact(art, x, "adb:FAKE0001")[0]
    np.testing.assert_allclose(y, run_artifact(art, x, "qemu")[0], rtol=0, atol=0)
    assert list((root / "data/local/tmp").iterdir()) == []  # cleaned up on the "device"
    calls = [json.loads(l) for l in (tmp_path / "adb.log").read_text().splitlines()]
    assert [c[2] if c[0] == "-s" else c[0] for c in calls] == ["devices", "shell", "shell", "push", "push", "shell",
                                                                "pull", "shell"]
    with pytest.raises(EdgesparseError, match="no device with serial 'OTHER'"):
        run_artifact(art, x, "adb:OTHER")
    monkeypatch.setenv("FAKE_ADB_EMPTY", "1")
    with pytest.raises(EdgesparseError, match="no Android device attached"):
        run_artifact(art, x, "adb")


@requires_qemu
def test_adb_missing_is_a_clear_error(compiled, tmp_path, monkeypatch):
    art = compiled("mlp", "arm64")
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere
    with pytest.raises(EdgesparseError, match="'adb' not found; apt-get install -y adb"):
        bench(art, "adb", runs=1, warmup=0)
