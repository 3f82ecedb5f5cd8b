"""Devices: where an artifact's runner executes. One class per transport, chosen by `--device NAME[:ARG]`."""

from __future__ import annotations

from ..errors import EdgesparseError
from .base import Device
from .chromium import ChromiumDevice
from .local import LocalDevice, NodeDevice, QemuDevice
from .remote import AdbDevice, SshDevice

_DEVICES = {
    "local": LocalDevice, "qemu": QemuDevice, "node": NodeDevice,
    "chromium": ChromiumDevice, "ssh": SshDevice, "adb": AdbDevice,
}


def known_devices() -> list[str]:
    return list(_DEVICES)


def get_device(spec: str | None, manifest: dict) -> Device:
    """`spec` is NAME or NAME:ARG; None picks the artifact target's default device."""
    spec = spec or manifest["default_device"]
    name, _, arg = spec.partition(":")
    if name not in _DEVICES:
        raise EdgesparseError(f"unknown device '{name}' (known: {', '.join(_DEVICES)})")
    device = _DEVICES[name](arg or None)
    device.check_compatible(manifest)
    return device


__all__ = ["Device", "get_device", "known_devices"]
