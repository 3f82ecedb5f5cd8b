"""Devices on this machine: the native runner, qemu-user for arm64, Node's WASI for wasm32."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import EdgesparseError
from ..targets import all_targets, get_target
from .base import Device, failure_detail


def host_cpu_flags() -> set[str]:
    """This machine's CPU flags as /proc/cpuinfo names them (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def missing_cpu_flags(target) -> list[str]:
    """The CPU flags ``target``'s code needs (its descriptor's ``[isa] cpu_flags``) that this machine lacks."""
    have = host_cpu_flags()
    return [f for f in target.cpu_flags if f not in have]


class LocalDevice(Device):
    name = "local"
    # the descriptors that name this machine their device (x86_64, x86_64-avx512)
    targets = tuple(name for name, t in all_targets().items() if t.default_device == "local")

    def check_compatible(self, manifest: dict) -> None:
        super().check_compatible(manifest)
        missing = missing_cpu_flags(get_target(manifest["target"]))
        if missing:
            raise EdgesparseError(f"device 'local' cannot run this {manifest['target']} artifact: "
                                  f"the host CPU lacks {' '.join(missing)}")

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        return [str(artifact / manifest["files"]["runner"]), *args]


class QemuDevice(Device):
    """AArch64 user-mode emulation: correct results, emulated (meaningless) timings."""

    name = "qemu"
    emulated = True
    targets = ("arm64", "android-arm64")

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        return ["qemu-aarch64", str(artifact / manifest["files"]["runner"]), *args]

    def install_hint(self) -> str:
        return "apt-get install -y qemu-user"


class NodeDevice(Device):
    name = "node"
    targets = ("wasm32",)

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        # --single-threaded: Node 20.20 (V8 11.3) segfaulted in a JS inline cache in about half the runs of a
        # block-pruned MobileNetV2 runner (a V8 heap fault, not a wasm trap: explicit bounds checks change
        # nothing); never in 17 runs without V8's background threads (fewer crashes without concurrent marking
        # alone), and the same .wasm passes in Chromium 156. Latency unchanged (MobileNetV1: 29.6 vs 30.2 ms).
        return [
            "node", "--no-warnings", "--single-threaded", str(artifact / "wasi_runner.mjs"),
            str(artifact / manifest["files"]["runner"]), *args,
        ]

    def install_hint(self) -> str:
        return "install Node.js 20 or newer"

    def ort_web(self, model: Path, inputs: list[dict], warmup: int, runs: int, timeout: float) -> dict:
        """onnxruntime-web (WASM, 1 thread, SIMD) in Node: {"times_ms", "outputs": [{name, dtype, shape, bytes}]}."""
        from .chromium import JS_DIR, check_node_modules

        check_node_modules("onnxruntime-web")
        with tempfile.TemporaryDirectory(prefix="edgesparse-ort-") as tmp:
            job = {"model": str(model), "inputs": inputs, "warmup": warmup, "runs": runs, "out_dir": tmp}
            (Path(tmp) / "job.json").write_text(json.dumps(job))
            cmd = ["node", "--no-warnings", str(JS_DIR / "ort_node.mjs"), str(Path(tmp) / "job.json")]
            proc = self.host_command(cmd, timeout, "onnxruntime-web")
            if proc.returncode != 0:
                raise EdgesparseError(f"device 'node': {failure_detail(proc.returncode, proc.stderr)}")
            try:
                res = json.loads(proc.stdout)
                outputs = [{**o, "bytes": Path(o["file"]).read_bytes()} for o in res["outputs"]]
                return {"times_ms": [float(t) for t in res["times_ms"]], "outputs": outputs}
            except (json.JSONDecodeError, KeyError, TypeError, OSError):
                raise EdgesparseError("device 'node': onnxruntime-web printed a malformed result") from None

    def machine(self) -> dict:
        proc = self.host_command(["node", "--version"], 30, "node --version")
        return {"node": proc.stdout.strip()}
