"""The hermetic C toolchain: `ziglang` from PyPI (clang inside) compiles and links for every target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import EdgesparseError
from ..targets import Target



def runtime_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("edgesparse.kernels") / "runtime"))


def _zig(tool: str, args: list[str], cwd: Path) -> None:
    """Runs `python -m ziglang TOOL ARGS` in `cwd`. Outputs are named relative to `cwd`: zig's linker and
    archiver fail to create an output whose absolute path holds a '%'."""
    cmd = [sys.executable, "-m", "ziglang", tool, *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise EdgesparseError(f"zig {tool} failed: {' '.join(args[:6])} ...: {detail[-1] if detail else proc.returncode}")


def compile_c(target: Target, source: Path, obj: Path, extra: list[str] = ()) -> None:
    _zig(
        "cc",
        ["-target", target.zig_target, *target.cflags, "-Wno-c23-extensions", "-fno-sanitize=undefined",
         "-I", str(runtime_dir()), "-I", str(source.parent), *extra, "-c", str(source), "-o", obj.name],
        cwd=obj.parent,
    )


def archive(objects: list[Path], lib: Path) -> None:
    if lib.exists():
        lib.unlink()
    _zig("ar", ["rcs", lib.name, *map(str, objects)], cwd=lib.parent)


def link_runner(target: Target, name: str, header: str, library: Path, out: Path) -> None:
    _zig(
        "cc",
        ["-target", target.zig_target, *target.cflags, *target.runner_ldflags, "-fno-sanitize=undefined",
         "-I", str(runtime_dir()), "-I", str(library.parent),
         f"-DES_MODEL={name}_model", f'-DES_MODEL_HEADER="{header}"',
         str(runtime_dir() / "runner.c"), str(library), "-o", out.name],
        cwd=out.parent,
    )


def link_wasm_reactor(target: Target, name: str, header: str, library: Path, out: Path) -> None:
    """The model as a WebAssembly library for JavaScript: wasm_reactor.c's exports, no main, no WASI calls."""
    _zig(
        "cc",
        ["-target", target.zig_target, *target.cflags, "-mexec-model=reactor", "-fno-sanitize=undefined",
         "-I", str(runtime_dir()), "-I", str(library.parent),
         f"-DES_MODEL={name}_model", f'-DES_MODEL_HEADER="{header}"',
         str(runtime_dir() / "wasm_reactor.c"), str(library), "-Wl,--strip-all", "-o", out.name],
        cwd=out.parent,
    )


def link_shared(target: Target, inputs: list[Path], out: Path, ldflags: list[str] = ()) -> None:
    """A shared library of `inputs` (objects) for the target's triple, linked against its dynamic libc."""
    _zig(
        "cc",
        ["-target", target.zig_target, "-shared", "-fPIC", *ldflags, *map(str, inputs), "-o", out.name],
        cwd=out.parent,
    )
