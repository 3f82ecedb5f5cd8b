"""The device interface: run the artifact's runner with arguments, get its stdout back."""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from pathlib import Path

from ..errors import EdgesparseError

DEFAULT_TIMEOUT_S = 600


class Device(ABC):
    name: str = "?"
    #: True when timings on this device are emulated, not latencies (qemu)
    emulated: bool = False
    #: the targets whose runner this device can execute
    targets: tuple[str, ...] = ()

    def __init__(self, arg: str | None = None):
        self.arg = arg

    def check_compatible(self, manifest: dict) -> None:
        if manifest["target"] not in self.targets:
            raise EdgesparseError(
                f"device '{self.name}' cannot run a {manifest['target']} artifact (it runs {', '.join(self.targets)})"
            )

    @abstractmethod
    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        """The host command that runs the artifact's runner with `args` (paths in args are host paths)."""

    def run(self, artifact: Path, manifest: dict, args: list[str], timeout: float = DEFAULT_TIMEOUT_S) -> str:
        cmd = self.command(artifact, manifest, args)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise EdgesparseError(f"device '{self.name}': '{cmd[0]}' not found; {self.install_hint()}") from None
        except subprocess.TimeoutExpired:
            raise EdgesparseError(f"device '{self.name}': runner timed out after {timeout:.0f} s") from None
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            detail = lines[-1] if lines else f"exit code {proc.returncode}"
            if proc.returncode < 0:
                detail = f"runner crashed (signal {-proc.returncode}); {detail}"
            raise EdgesparseError(f"device '{self.name}': {detail.removeprefix('error: ')}")
        return proc.stdout

    def install_hint(self) -> str:
        return "install it first"

    def describe(self) -> str:
        return self.name
