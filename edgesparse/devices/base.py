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
        proc = self.host_command(cmd, timeout, "runner")
        if proc.returncode != 0:
            raise EdgesparseError(f"device '{self.name}': {failure_detail(proc.returncode, proc.stderr)}")
        return proc.stdout

    def host_command(self, cmd: list[str], timeout: float, what: str, stdin: str | None = None):
        """Runs one host command of this device with a timeout; a missing tool or a timeout is an EdgesparseError."""
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin,
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise EdgesparseError(f"device '{self.name}': '{cmd[0]}' not found; {self.install_hint()}") from None
        except subprocess.TimeoutExpired:
            raise EdgesparseError(f"device '{self.name}': {what} timed out after {timeout:.0f} s") from None

    def machine(self) -> dict:
        """What is known about the machine the runner executes on (recorded in benchmark JSON)."""
        return {}

    def install_hint(self) -> str:
        return "install it first"

    def describe(self) -> str:
        return self.name


def failure_detail(returncode: int, stderr: str) -> str:
    """One line for a failed runner: its last stderr line, and the signal when it crashed."""
    lines = [l for l in (stderr or "").strip().splitlines() if l.strip()]
    detail = lines[-1].strip() if lines else f"exit code {returncode}"
    signal = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else 0
    if signal:
        detail = f"runner crashed (signal {signal}); {detail}"
    return detail.removeprefix("error: ")
