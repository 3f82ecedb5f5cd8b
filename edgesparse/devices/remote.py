"""Devices reached over a transport: `ssh:user@host[:port]` (ARM boards, or any Linux host) and `adb[:SERIAL]`
(Android phones). Both follow one plan: check the device, make a fresh directory on it, copy the runner and the
input files there, run, copy the output files back, and remove the directory, whatever happened before. Every
step is one host command with its own timeout, so a dead link cannot hang a benchmark.

Host paths in the runner's arguments are rewritten: an existing file is an input (copied to the device), a path
whose directory exists but the file does not is an output (copied back after the run).
"""

from __future__ import annotations

import os
import re
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import EdgesparseError
from .base import DEFAULT_TIMEOUT_S, Device, failure_detail

#: seconds for one copy or bookkeeping step (the run itself gets the caller's timeout)
STEP_TIMEOUT_S = 120
#: `uname -m` of the machines each target's runner runs on
_ARCH = {"x86_64": ("x86_64", "amd64"), "arm64": ("aarch64", "arm64", "armv8l")}
_EXIT_MARK = "__edgesparse_exit="


@dataclass
class Step:
    what: str  # "connect", "copy to device", "run", "copy from device", "clean up"
    cmd: list[str]
    timeout: float
    check: Callable[[str], None] | None = field(default=None, repr=False)  # validates the step's stdout


@dataclass
class Plan:
    steps: list[Step]
    cleanup: list[Step]
    remote_dir: str
    remote_args: list[str]
    pulls: list[tuple[str, str]]  # (remote path, host path)


def split_file_args(args: list[str], remote_dir: str) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(remote args, [(host input, remote path)], [(remote output, host path)])."""
    remote_args, pushes, pulls = [], [], []
    for i, a in enumerate(args):
        p = Path(a)
        if p.is_absolute() and p.is_file():
            r = f"{remote_dir}/{i}_{p.name}"
            pushes.append((a, r))
        elif p.is_absolute() and p.parent.is_dir() and not p.exists():
            r = f"{remote_dir}/{i}_{p.name}"
            pulls.append((r, a))
        else:
            r = a
        remote_args.append(r)
    return remote_args, pushes, pulls


def remote_run_line(remote_dir: str, runner: str, args: list[str], timeout: float) -> str:
    """The shell line run on the device: the runner under `timeout` when the device has it, exit code echoed."""
    q = shlex.quote
    run = " ".join([f"./{q(runner)}", *map(q, args)])
    limit = int(max(1, timeout))
    return (
        f"cd {q(remote_dir)} && chmod 755 {q(runner)} && "
        f"if command -v timeout >/dev/null 2>&1; then timeout -k 5 {limit} {run}; else {run}; fi; "
        f"echo {_EXIT_MARK}$?"
    )


class RemoteDevice(Device):
    """A device whose runner executes elsewhere. One plan for every transport: connect and check the CPU, make a
    fresh folder under `remote_root`, push the runner and inputs, run, pull the outputs, remove the folder;
    subclasses say how to run a shell line there and how to move a file each way."""

    remote_root = "/tmp"
    mkdir = "mkdir"

    def shell(self, line: str) -> list[str]:
        raise NotImplementedError

    def push(self, host: str, remote: str) -> list[str]:
        raise NotImplementedError

    def pull(self, remote: str, host: str) -> list[str]:
        raise NotImplementedError

    def plan(self, artifact: Path, manifest: dict, args: list[str], timeout: float) -> Plan:
        rdir = f"{self.remote_root}/edgesparse-{uuid.uuid4().hex[:12]}"
        runner = artifact / manifest["files"]["runner"]
        remote_args, pushes, pulls = split_file_args(args, rdir)
        q = shlex.quote
        steps = [
            Step("connect", self.shell("uname -m"), 30, self.check_arch(manifest)),
            Step("make the device directory", self.shell(f"{self.mkdir} {q(rdir)}"), 30),
            Step("copy to device", self.push(str(runner), f"{rdir}/runner"), STEP_TIMEOUT_S),
        ]
        for host, remote in pushes:
            steps.append(Step("copy to device", self.push(host, remote), STEP_TIMEOUT_S))
        steps.append(Step("run", self.shell(remote_run_line(rdir, "runner", remote_args, timeout)), timeout))
        for remote, host in pulls:
            steps.append(Step("copy from device", self.pull(remote, host), STEP_TIMEOUT_S))
        cleanup = [Step("clean up", self.shell(f"rm -rf {q(rdir)}"), 30)]
        return Plan(steps, cleanup, rdir, remote_args, pulls)

    def command(self, artifact: Path, manifest: dict, args: list[str]) -> list[str]:
        return next(s.cmd for s in self.plan(artifact, manifest, args, DEFAULT_TIMEOUT_S).steps if s.what == "run")

    def preflight(self) -> None:
        """Checks that need the transport tool but not the plan (e.g. adb: is a device attached?)."""

    def run(self, artifact: Path, manifest: dict, args: list[str], timeout: float = DEFAULT_TIMEOUT_S) -> str:
        self.preflight()
        plan = self.plan(artifact, manifest, args, timeout)
        out = ""
        started = False
        try:
            for step in plan.steps:
                if step.what == "make the device directory":
                    started = True
                out_step = self._step(step)
                if step.what == "run":
                    out = self._runner_stdout(out_step)
            return out
        finally:
            if started:
                for step in plan.cleanup:
                    try:
                        self._step(step)
                    except EdgesparseError:
                        pass  # the first error is the one to report; cleanup is best effort after it

    def _step(self, step: Step) -> str:
        # the run step gets 30 s more than the device-side `timeout`, which kills the runner first
        proc = self.host_command(step.cmd, step.timeout + (30 if step.what == "run" else 0), step.what)
        if step.what == "run":
            return proc.stdout + "\0" + proc.stderr + "\0" + str(proc.returncode)
        if proc.returncode != 0:
            raise EdgesparseError(f"device '{self.describe()}': {step.what} failed: {self.transport_error(proc)}")
        if step.check:
            step.check(proc.stdout)
        return proc.stdout

    def _runner_stdout(self, raw: str) -> str:
        stdout, stderr, rc = raw.split("\0")
        m = re.search(rf"{_EXIT_MARK}(\d+)\s*$", stdout)
        if m is None:
            # the shell line never finished: the transport failed (or the device dropped the connection)
            detail = failure_detail(int(rc), stderr) if int(rc) else "no exit status from the device"
            raise EdgesparseError(f"device '{self.describe()}': run failed: {detail}")
        code = int(m.group(1))
        stdout = stdout[: m.start()]
        if code == 124:
            raise EdgesparseError(f"device '{self.describe()}': runner timed out on the device")
        if code != 0:
            raise EdgesparseError(f"device '{self.describe()}': {failure_detail(code, stderr)}")
        return stdout

    def transport_error(self, proc) -> str:
        lines = [l.strip() for l in (proc.stderr or proc.stdout or "").splitlines() if l.strip()]
        return lines[-1] if lines else f"exit code {proc.returncode}"

    def check_arch(self, manifest: dict) -> Callable[[str], None]:
        want = _ARCH.get(manifest["target"], ())

        def check(stdout: str) -> None:
            arch = stdout.strip().splitlines()[-1].strip() if stdout.strip() else "?"
            if arch not in want:
                raise EdgesparseError(
                    f"device '{self.describe()}' is {arch}; this {manifest['target']} artifact needs {want[0]}"
                )
            self._arch = arch

        return check

    def machine(self) -> dict:
        return {"arch": getattr(self, "_arch", None), "transport": self.name}


class SshDevice(RemoteDevice):
    """`ssh:user@host[:port]`: an ARM board (or any Linux machine) with OpenSSH. Keys, not passwords (BatchMode).
    Extra ssh/scp options (an identity file, a known_hosts file) come from $EDGESPARSE_SSH_OPTIONS."""

    name = "ssh"
    targets = ("arm64", "x86_64")
    mkdir = "mkdir -m 700"

    def __init__(self, arg: str | None = None):
        super().__init__(arg)
        if not arg:
            raise EdgesparseError("device 'ssh' needs a destination: --device ssh:user@host[:port]")
        dest, port = arg, "22"
        m = re.fullmatch(r"(.+?)(?::(\d+))?", arg)
        if m and m.group(2):
            dest, port = m.group(1), m.group(2)
        if not dest or dest.startswith("-") or re.search(r"\s", dest):
            raise EdgesparseError(f"device 'ssh': '{arg}' is not user@host[:port]")
        self.dest, self.port = dest, port

    def describe(self) -> str:
        return f"ssh:{self.dest}:{self.port}"

    def _options(self) -> list[str]:
        # ssh keeps the first value given for an option: the user's come first, so they override these defaults
        user = shlex.split(os.environ.get("EDGESPARSE_SSH_OPTIONS", ""))
        return user + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                       "-o", "ServerAliveCountMax=3", "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"]

    def shell(self, line: str) -> list[str]:
        return ["ssh", "-p", self.port, *self._options(), self.dest, line]

    def _scp(self) -> list[str]:
        return ["scp", "-q", "-p", "-P", self.port, *self._options()]

    def push(self, host: str, remote: str) -> list[str]:
        return [*self._scp(), host, f"{self.dest}:{remote}"]

    def pull(self, remote: str, host: str) -> list[str]:
        return [*self._scp(), f"{self.dest}:{remote}", host]

    def transport_error(self, proc) -> str:
        detail = super().transport_error(proc)
        if proc.returncode == 255:
            return f"cannot reach {self.dest} port {self.port}: {detail}"
        return detail

    def install_hint(self) -> str:
        return "apt-get install -y openssh-client"


class AdbDevice(RemoteDevice):
    """`adb[:SERIAL]`: an Android device over adb. The runner must be a static arm64 binary (the arm64 target's
    is static musl); files live in /data/local/tmp, the one place `adb shell` may execute from."""

    name = "adb"
    targets = ("arm64",)
    remote_root = "/data/local/tmp"

    def describe(self) -> str:
        return f"adb:{self.arg}" if self.arg else "adb"

    def _adb(self, *args: str) -> list[str]:
        return ["adb", *(["-s", self.arg] if self.arg else []), *args]

    def preflight(self) -> None:
        proc = self.host_command(["adb", "devices"], 30, "adb devices")
        if proc.returncode != 0:
            raise EdgesparseError(f"device 'adb': 'adb devices' failed: {self.transport_error(proc)}")
        attached = [l.split()[0] for l in proc.stdout.splitlines()[1:] if l.strip() and l.split()[-1] == "device"]
        if not attached:
            raise EdgesparseError("device 'adb': no Android device attached (adb devices lists none ready)")
        if self.arg and self.arg not in attached:
            raise EdgesparseError(f"device 'adb': no device with serial '{self.arg}' (attached: {', '.join(attached)})")
        if not self.arg and len(attached) > 1:
            raise EdgesparseError(f"device 'adb': {len(attached)} devices attached; pick one: --device adb:SERIAL")

    def shell(self, line: str) -> list[str]:
        return self._adb("shell", line)

    def push(self, host: str, remote: str) -> list[str]:
        return self._adb("push", host, remote)

    def pull(self, remote: str, host: str) -> list[str]:
        return self._adb("pull", remote, host)

    def install_hint(self) -> str:
        return "apt-get install -y adb (Android platform tools)"
