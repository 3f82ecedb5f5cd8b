"""What a benchmark report records about where and how it ran: the host machine (CPU model, cores, frequency
governor where readable), the versions of everything measured, and the exact command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_machine() -> dict:
    cpu = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu_model": cpu or platform.processor() or None,
        "cores": os.cpu_count(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "machine": platform.machine(),
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("edgesparse", "apache-tvm", "onnx", "onnxruntime", "numpy", "ziglang"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def command_line() -> str:
    """The command as the user typed it (`edgesparse ...` when run through the console script or -m)."""
    argv = list(sys.argv)
    if argv and (argv[0].endswith(("edgesparse", "__main__.py")) or argv[0] == "-m"):
        argv[0] = "edgesparse"
    return shlex.join(argv)


def report_context(device=None) -> dict:
    ctx = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(),
        "host": host_machine(),
        "versions": versions(),
    }
    if device is not None:
        ctx["device"] = {"name": device.describe(), "emulated": device.emulated, **device.machine()}
    return ctx
