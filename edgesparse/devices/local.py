"""Devices on this machine: the native runner, qemu-user for arm64, Node's WASI for wasm32."""

from __future__ import annotations

from pathlib import Path

from .base import Device


class LocalDevice(Device):
    name = "local"
    targets = ("x86_64",)

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        return [str(artifact / manifest["files"]["runner"]), *args]


class QemuDevice(Device):
    """AArch64 user-mode emulation: correct results, emulated (meaningless) timings."""

    name = "qemu"
    emulated = True
    targets = ("arm64",)

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        return ["qemu-aarch64", str(artifact / manifest["files"]["runner"]), *args]

    def install_hint(self) -> str:
        return "apt-get install -y qemu-user"


class NodeDevice(Device):
    name = "node"
    targets = ("wasm32",)

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        return [
            "node", "--no-warnings", str(artifact / "wasi_runner.mjs"),
            str(artifact / manifest["files"]["runner"]), *args,
        ]

    def install_hint(self) -> str:
        return "install Node.js 20 or newer"
