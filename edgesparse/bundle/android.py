"""The Android bundle, laid out as in an Android project:

    android/jniLibs/<abi>/libNAME.so    the model + runtime + JNI bridge; needs only bionic's libc.so
    android/include/NAME.h              the C API, for apps that call it from their own native code
    android/bin/<abi>/runner            the static runner, for `adb push` + `adb shell`
    android/jni/                        the JNI bridge's C source (rebuilt into the .so already)
    android/java/ai/edgesparse/Name.java  the Java class an app copies in: load(), run(), close()

The .so is built by zig by default (no NDK: it links against no bionic, only names bionic's libc.so, and
brings its own emulated TLS); with ANDROID_NDK_HOME set, by the NDK's clang for --android-api (default from
the descriptor)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import EdgesparseError
from ..toolchain import zig


def java_class_name(c_name: str) -> str:
    """mobilenet_v1 -> MobilenetV1: the Java class (and JNI registration) for the model."""
    parts = [p for p in c_name.split("_") if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return name if name[0].isalpha() else "Model" + name


def _exports_map(c_name: str) -> str:
    # The public C API and JNI_OnLoad; every other symbol (kernels, runtime, libc pieces) stays local.
    return f"{{\n  global:\n    {c_name}_*;\n    JNI_OnLoad;\n  local:\n    *;\n}};\n"


def ndk_clang(api: int, triple: str) -> Path | None:
    """The NDK's clang driver for `triple` at `api`, when ANDROID_NDK_HOME names an NDK; else None."""
    home = os.environ.get("ANDROID_NDK_HOME")
    if not home:
        return None
    bins = sorted(Path(home).glob("toolchains/llvm/prebuilt/*/bin"))
    if not bins:
        raise EdgesparseError(f"ANDROID_NDK_HOME={home}: no toolchains/llvm/prebuilt/*/bin (not an NDK r19+?)")
    clang = bins[0] / f"{triple}{api}-clang"
    if not clang.exists():
        raise EdgesparseError(f"ANDROID_NDK_HOME={home}: no {clang.name} (API level {api} not in this NDK)")
    return clang


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise EdgesparseError(f"{Path(str(cmd[0])).name} failed: {detail[-1] if detail else proc.returncode}")


def _java_source(model, cls: str) -> str:
    from . import fill_template

    def sizes(ts):
        out = []
        for t in ts:
            n = 1
            for d in t["shape"]:
                n *= d
            out.append(str(n))
        return ", ".join(out)

    def names(ts):
        return ", ".join('"' + t["name"].replace("\\", "\\\\").replace('"', '\\"') + '"' for t in ts)

    def shapes(ts):
        return ", ".join("{" + ", ".join(f"{d}L" for d in t["shape"]) + "}" for t in ts)

    first = model.inputs[0]
    values = {
        "NAME": model.name, "CLASS": cls, "LIB": model.c_name, "ARENA_BYTES": str(model.arena_bytes),
        "IN0_SIZE": sizes([first]), "IN0_SHAPE": str(first["shape"]),
        "INPUT_NAMES": names(model.inputs), "INPUT_SHAPES": shapes(model.inputs), "INPUT_SIZES": sizes(model.inputs),
        "OUTPUT_NAMES": names(model.outputs), "OUTPUT_SHAPES": shapes(model.outputs),
        "OUTPUT_SIZES": sizes(model.outputs),
    }
    return fill_template((zig.runtime_dir() / "EdgesparseModel.java.in").read_text(), values)


def _readme(model, cls: str, abi: str, toolchain: str, api: int) -> str:
    n = model.c_name
    return f"""# {model.name} for Android ({abi})

Built by {toolchain}{f" for API level {api}" if toolchain == "the NDK" else " (no NDK; it calls only libc.so functions bionic has had since API 21)"}.

In an app: copy `jniLibs/{abi}/lib{n}.so` to `app/src/main/jniLibs/{abi}/` and
`java/ai/edgesparse/{cls}.java` to `app/src/main/java/ai/edgesparse/`, then

```java
try ({cls} model = {cls}.load()) {{
  float[] y = model.run(x);   // x: float[{cls}.INPUT_SIZES[0]]
}}
```

From native code: link `lib{n}.so` and include `include/{n}.h` (`{n}_run(arena, inputs, outputs)`).

From a shell: `adb push bin/{abi}/runner /data/local/tmp/ && adb shell /data/local/tmp/runner info`.
"""


def write(target, model, out: Path) -> dict:
    b = target.bundle
    abi = b["abi"]
    api = int(model.options.get("android_api") or b["api"])
    cls = java_class_name(model.c_name)
    n = model.c_name
    for sub in (f"jniLibs/{abi}", "include", f"bin/{abi}", "jni", "java/ai/edgesparse"):
        (out / sub).mkdir(parents=True)
    rt = zig.runtime_dir()
    shutil.copy(model.header, out / "include" / model.header.name)
    shutil.copy(model.work_dir / target.runner_name, out / "bin" / abi / target.runner_name)
    shutil.copy(rt / "es_jni.c", out / "jni" / "es_jni.c")
    (out / "java/ai/edgesparse" / f"{cls}.java").write_text(_java_source(model, cls))

    build = model.work_dir / ".android-build"
    build.mkdir()
    try:
        (build / "exports.map").write_text(_exports_map(n))
        defines = [f"-DES_MODEL={n}_model", f'-DES_MODEL_HEADER="{model.header.name}"',
                   f'-DES_JNI_CLASS="ai/edgesparse/{cls}"']
        sources = {"model.o": model.work_dir / f"{n}.c", "rt.o": model.work_dir / "edgesparse_rt.c",
                   "jni.o": rt / "es_jni.c"}
        so = out / "jniLibs" / abi / f"lib{n}.so"
        ldflags = [f"-Wl,--version-script={build / 'exports.map'}", f"-Wl,-soname,lib{n}.so", "-Wl,-z,noexecstack",
                   "-Wl,--strip-all"]
        clang = ndk_clang(api, b["ndk_triple"])
        if clang is None:
            toolchain = "zig"
            # zig's libc for this triple is musl: compile against its headers, link dynamically against a
            # libc.so by name only. Only symbols bionic's libc.so also has are used (tests check the list), and
            # the pthread types the runtime declares statically (mutex, cond, once, key) have the same sizes
            # and all-zero static initialisers in musl and in bionic's LP64 ABI.
            sources["emutls.o"] = rt / "es_emutls.c"
            for obj, src in sources.items():
                zig.compile_c(target, src, build / obj, [*b["so_cflags"], "-I", str(model.work_dir), *defines])
            zig.link_shared(target, [model.work_dir / "kernels.o", *(build / o for o in sources)], so, ldflags)
        else:
            toolchain = "the NDK"
            flags = ["-O2", "-fPIC", "-DES_THREADS", "-Wno-c23-extensions", "-I", rt, "-I", model.work_dir, *defines]
            for obj, src in sources.items():
                _run([clang, *flags, "-c", src, "-o", build / obj], cwd=model.work_dir)
            _run([clang, "-shared", "-Wl,--as-needed", *ldflags, model.work_dir / "kernels.o",
                  *(build / o for o in sources), "-o", so], cwd=model.work_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    (out / "README.md").write_text(_readme(model, cls, abi, toolchain, api))
    return {
        "abi": abi, "library": f"jniLibs/{abi}/lib{n}.so", "java_class": f"ai.edgesparse.{cls}",
        "toolchain": "ndk" if toolchain == "the NDK" else "zig", "android_api": api,
    }
