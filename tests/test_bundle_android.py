"""The Android bundle as an app developer uses it: `edgesparse compile model.onnx --target android-arm64` writes
android/ laid out like an Android project. The .so is checked as Android's loader would see it (ELF aarch64,
NEEDED only libc/libm/libdl, no TLS segment, exports only the API), then loaded under qemu-aarch64 by a small
glibc program, through the C API and through the JNI bridge (with a stand-in JVM built on a JDK's jni.h),
and compared with ONNX Runtime."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesparse.compiler import load_manifest
from edgesparse.harness.verify import onnxruntime_outputs

from conftest import have, requires_qemu

MODEL = "mobilenet_v1"
ABI = "arm64-v8a"
GLIBC_AARCH64 = Path("/usr/aarch64-linux-gnu")
JDK_INCLUDES = sorted(Path("/usr/lib/jvm").glob("*/include/jni.h"))

requires_cross_gcc = pytest.mark.skipif(
    not have("aarch64-linux-gnu-gcc") or not (GLIBC_AARCH64 / "lib" / "libc.so.6").exists(),
    reason="no aarch64 glibc toolchain (apt-get install -y gcc-aarch64-linux-gnu libc6-arm64-cross; .ci/setup does)")


@pytest.fixture(scope="module")
def android(compiled) -> Path:
    return compiled(MODEL, "android-arm64") / "android"


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


def test_project_layout(android):
    m = load_manifest(android.parent)
    for rel in (f"jniLibs/{ABI}/lib{MODEL}.so", f"include/{MODEL}.h", f"bin/{ABI}/runner", "jni/es_jni.c",
                "java/ai/edgesparse/MobilenetV1.java", "README.md"):
        assert (android / rel).is_file(), rel
    b = m["bundle"]
    assert b["kind"] == "android" and b["abi"] == ABI and b["java_class"] == "ai.edgesparse.MobilenetV1"
    assert b["toolchain"] == ("ndk" if os.environ.get("ANDROID_NDK_HOME") else "zig") and b["android_api"] == 24
    # the runner for `adb shell` is static: it needs no loader on the device
    assert "INTERP" not in _readelf("-l", str(android / f"bin/{ABI}/runner"))
    so = android / f"jniLibs/{ABI}/lib{MODEL}.so"
    print(f"\nandroid .so: {so.stat().st_size / 1e6:.2f} MB (weights {m['weight_bytes'] / 1e6:.2f} MB); "
          f"bundle {b['total_bytes'] / 1e6:.2f} MB")


def test_so_is_what_androids_loader_accepts(android):
    so = android / f"jniLibs/{ABI}/lib{MODEL}.so"
    head = so.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1  # 64-bit, little-endian
    e_type, e_machine = struct.unpack_from("<HH", head, 16)
    assert (e_type, e_machine) == (3, 183)  # ET_DYN, EM_AARCH64
    dynamic = _readelf("-d", str(so))
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert set(needed) <= {"libc.so", "libm.so", "libdl.so"}, needed
    assert f"[lib{MODEL}.so]" in dynamic and "TEXTREL" not in dynamic
    # bionic loads ELF TLS only from API 29: the library must have no TLS segment at API 24
    segments = _readelf("-l", str(so))
    assert " TLS " not in segments
    # Android 15 devices may use 16 KB pages: every loadable segment must be aligned to at least that
    aligns = [int(line.split()[-1], 16) for line in segments.splitlines() if line.strip().startswith("LOAD")]
    assert aligns and min(aligns) >= 0x4000, aligns
    exported, imported = set(), set()
    for line in _readelf("--dyn-syms", str(so)).splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[4] in ("GLOBAL", "WEAK"):
            (imported if cols[6] == "UND" else exported).add(cols[7].split("@")[0])
    assert exported == {f"{MODEL}_run", f"{MODEL}_last_error", f"{MODEL}_set_num_threads", f"{MODEL}_move_weights",
                        f"{MODEL}_inputs",
                        f"{MODEL}_outputs", f"{MODEL}_model", "JNI_OnLoad"}
    # everything it imports is in bionic's libc.so (API 21+)
    bionic_libc = {"abort", "calloc", "free", "malloc", "memcpy", "memmove", "memset", "posix_memalign", "snprintf",
                   "strcmp", "strlen", "strncat", "pthread_cond_broadcast", "pthread_cond_signal",
                   "pthread_cond_wait", "pthread_create", "pthread_detach", "pthread_getspecific",
                   "pthread_key_create", "pthread_mutex_lock", "pthread_mutex_unlock", "pthread_once",
                   "pthread_setspecific"}
    assert imported <= bionic_libc, imported - bionic_libc


HOST = r"""
/* A stand-in app: dlopens the model's .so under qemu-aarch64 (glibc) and runs it through the C API (two
 * threads, separate arenas) or through the JNI bridge, driven by a fake JVM laid out by a JDK's jni.h. */
#include <dlfcn.h>
#include <jni.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mobilenet_v1.h"

static float *in_data, *out_data[2];
static const es_model* M;

static void* capi_worker(void* arg) {
  int t = (int)(size_t)arg;
  void* arena = NULL;
  if (posix_memalign(&arena, 64, M->arena_bytes)) return (void*)1;
  out_data[t] = malloc(M->outputs[0].bytes);
  const void* ins[1] = {in_data};
  void* outs[1] = {out_data[t]};
  for (int r = 0; r < 2; ++r)
    if (M->run(arena, ins, outs)) { fprintf(stderr, "run: %s\n", M->last_error()); return (void*)1; }
  free(arena);
  return NULL;
}

/* ---- a fake JVM: Java arrays are these structs, exceptions a pending (class, message) */
typedef struct { int len; float* f; void** objs; } fake_array;
static char thrown[512];
static void* natives[3];

static jclass find_class(JNIEnv* env, const char* name) { (void)env; return (jclass)strdup(name); }
static jint throw_new(JNIEnv* env, jclass c, const char* msg) {
  (void)env; snprintf(thrown, sizeof(thrown), "%s: %s", (const char*)c, msg); return 0;
}
static void delete_local_ref(JNIEnv* env, jobject o) { (void)env; (void)o; }
static jsize array_length(JNIEnv* env, jarray a) { (void)env; return ((fake_array*)a)->len; }
static jobject object_element(JNIEnv* env, jobjectArray a, jsize i) { (void)env; return ((fake_array*)a)->objs[i]; }
static void get_floats(JNIEnv* env, jfloatArray a, jsize at, jsize n, jfloat* dst) {
  (void)env; memcpy(dst, ((fake_array*)a)->f + at, n * sizeof(float));
}
static void set_floats(JNIEnv* env, jfloatArray a, jsize at, jsize n, const jfloat* src) {
  (void)env; memcpy(((fake_array*)a)->f + at, src, n * sizeof(float));
}
static jboolean exception_check(JNIEnv* env) { (void)env; return thrown[0] != 0; }
static jint register_natives(JNIEnv* env, jclass c, const JNINativeMethod* m, jint n) {
  (void)env;
  if (strcmp((const char*)c, "ai/edgesparse/MobilenetV1") != 0 || n != 3) return -1;
  const char* want[3][2] = {{"nativeOpen", "()J"}, {"nativeRun", "(J[[F[[F)V"}, {"nativeClose", "(J)V"}};
  for (int i = 0; i < 3; ++i) {
    if (strcmp(m[i].name, want[i][0]) || strcmp(m[i].signature, want[i][1])) return -1;
    natives[i] = m[i].fnPtr;
  }
  return 0;
}
static struct JNINativeInterface_ env_table;
static JNIEnv env_obj = &env_table;
static jint get_env(JavaVM* vm, void** penv, jint version) { (void)vm; (void)version; *penv = &env_obj; return JNI_OK; }
static struct JNIInvokeInterface_ vm_table;
static JavaVM vm_obj = &vm_table;

static int jni_run(void* lib, int in_len) {
  env_table.FindClass = find_class; env_table.ThrowNew = throw_new; env_table.DeleteLocalRef = delete_local_ref;
  env_table.GetArrayLength = array_length; env_table.GetObjectArrayElement = object_element;
  env_table.GetFloatArrayRegion = get_floats; env_table.SetFloatArrayRegion = set_floats;
  env_table.ExceptionCheck = exception_check; env_table.RegisterNatives = register_natives;
  vm_table.GetEnv = get_env;
  jint (*on_load)(JavaVM*, void*) = (jint (*)(JavaVM*, void*))dlsym(lib, "JNI_OnLoad");
  if (!on_load || on_load(&vm_obj, NULL) != JNI_VERSION_1_6) { fprintf(stderr, "JNI_OnLoad failed\n"); return 4; }
  jlong (*open_)(JNIEnv*, jclass) = natives[0];
  void (*run_)(JNIEnv*, jclass, jlong, jobjectArray, jobjectArray) = natives[1];
  void (*close_)(JNIEnv*, jclass, jlong) = natives[2];
  jlong h = open_(&env_obj, NULL);
  if (!h) { fprintf(stderr, "nativeOpen: %s\n", thrown); return 5; }
  fake_array x = {in_len, in_data, NULL}, y = {1000, out_data[0], NULL};
  void* xs[1] = {&x};
  void* ys[1] = {&y};
  fake_array ins = {1, NULL, xs}, outs = {1, NULL, ys};
  run_(&env_obj, NULL, h, (jobjectArray)&ins, (jobjectArray)&outs);
  close_(&env_obj, NULL, h);
  printf("%s\n", thrown[0] ? thrown : "ok");
  return 0;
}

int main(int argc, char** argv) {  /* host MODE LIB.so IN.bin OUT.bin [INPUT_LEN] */
  void* lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
  M = (const es_model*)dlsym(lib, "mobilenet_v1_model");
  if (!M) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 2; }
  size_t in_bytes = M->inputs[0].bytes;
  in_data = calloc(1, in_bytes);
  FILE* f = fopen(argv[3], "rb");
  if (!f || fread(in_data, 1, in_bytes, f) != in_bytes) return 3;
  fclose(f);
  int rc = 0;
  if (strcmp(argv[1], "capi") == 0) {
    pthread_t th[2];
    for (int t = 0; t < 2; ++t) pthread_create(&th[t], NULL, capi_worker, (void*)(size_t)t);
    for (int t = 0; t < 2; ++t) { void* r; pthread_join(th[t], &r); if (r) return 6; }
    if (memcmp(out_data[0], out_data[1], M->outputs[0].bytes)) { fprintf(stderr, "threads disagree\n"); return 7; }
    printf("ok\n");
  } else {
    out_data[0] = calloc(1, M->outputs[0].bytes);
    rc = jni_run(lib, argc > 5 ? atoi(argv[5]) : (int)(in_bytes / 4));
  }
  f = fopen(argv[4], "wb");
  fwrite(out_data[0], 1, M->outputs[0].bytes, f);
  fclose(f);
  return rc;
}
"""


@pytest.fixture(scope="module")
def host_app(android, tmp_path_factory):
    """The stand-in app, built against Debian's aarch64 glibc and a JDK's jni.h."""
    if not JDK_INCLUDES:
        pytest.skip("no JDK jni.h under /usr/lib/jvm (apt-get install -y openjdk-17-jdk-headless)")
    d = tmp_path_factory.mktemp("android-host")
    (d / "host.c").write_text(HOST)
    inc = JDK_INCLUDES[0].parent
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-pthread", "-I", inc, "-I", inc / "linux",
                    "-I", android / "include", "host.c", "-o", "host", "-ldl"], cwd=d, check=True)
    # Android's libc is named libc.so; glibc's is libc.so.6 (its libc.so is a linker script): alias it.
    (d / "libs").mkdir()
    (d / "libs" / "libc.so").symlink_to(GLIBC_AARCH64 / "lib" / "libc.so.6")
    return d


def _run_host(host_app, android, mode, x_path, out_path, *extra) -> str:
    cmd = ["qemu-aarch64", "-L", str(GLIBC_AARCH64), "-E", f"LD_LIBRARY_PATH={host_app / 'libs'}",
           str(host_app / "host"), mode, str(android / f"jniLibs/{ABI}/lib{MODEL}.so"), str(x_path), str(out_path),
           *map(str, extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def reference(android, zoo_onnx, tmp_path_factory):
    x = np.random.default_rng(3).random((1, 3, 224, 224), dtype=np.float32)
    path = tmp_path_factory.mktemp("android-input") / "x.bin"
    x.tofile(path)
    (y,) = onnxruntime_outputs(zoo_onnx(MODEL), load_manifest(android.parent), [x])
    return path, y


@requires_qemu
@requires_cross_gcc
def test_so_runs_under_qemu_through_the_c_api(android, host_app, reference, tmp_path):
    x_path, y_ref = reference
    assert _run_host(host_app, android, "capi", x_path, tmp_path / "y.bin") == "ok"
    y = np.fromfile(tmp_path / "y.bin", dtype=np.float32)
    np.testing.assert_allclose(y, y_ref.ravel(), atol=1e-4, rtol=0)


@requires_qemu
@requires_cross_gcc
def test_so_runs_under_qemu_through_the_jni_bridge(android, host_app, reference, tmp_path):
    x_path, y_ref = reference
    assert _run_host(host_app, android, "jni", x_path, tmp_path / "y.bin") == "ok"
    np.testing.assert_allclose(np.fromfile(tmp_path / "y.bin", dtype=np.float32), y_ref.ravel(), atol=1e-4, rtol=0)
    # a float[] of the wrong length is refused with Java's exception, not a crash
    msg = _run_host(host_app, android, "jni", x_path, tmp_path / "y2.bin", 100)
    assert msg == ("java/lang/IllegalArgumentException: mobilenet_v1: input 'input' needs a float[150528], "
                   "got float[100]")


@pytest.mark.skipif(not have("javac"), reason="no javac (apt-get install -y openjdk-17-jdk-headless)")
def test_java_class_compiles(android, tmp_path):
    src = android / "java/ai/edgesparse/MobilenetV1.java"
    subprocess.run(["javac", "-d", str(tmp_path), str(src)], check=True, capture_output=True)
    assert (tmp_path / "ai/edgesparse/MobilenetV1.class").is_file()
    text = src.read_text()
    assert "public static MobilenetV1 load()" in text and "public float[] run(float[]... inputs)" in text
    assert "public synchronized void close()" in text and 'System.loadLibrary("mobilenet_v1")' in text


def test_android_api_option_from_the_cli(zoo_onnx, tmp_path):
    out = tmp_path / "mlp-android"
    proc = subprocess.run(["edgesparse", "compile", str(zoo_onnx("mlp")), "--target", "android-arm64",
                           "--android-api", "28", "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    b = json.loads((out / "manifest.json").read_text())["bundle"]
    assert b["android_api"] == 28 and (out / "android/jniLibs/arm64-v8a/libmlp.so").is_file()
    bad = subprocess.run(["edgesparse", "compile", str(zoo_onnx("mlp")), "--target", "android-arm64",
                          "--android-api", "19", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--android-api" in bad.stderr


@pytest.mark.skipif(not os.environ.get("ANDROID_NDK_HOME"),
                    reason="ANDROID_NDK_HOME not set: the NDK build of the .so is tested only where an NDK is installed")
def test_ndk_build(zoo_onnx, tmp_path):
    from edgesparse.compiler import compile as compile_model

    res = compile_model(zoo_onnx("mlp"), "android-arm64", tmp_path / "mlp-ndk", android_api=26)
    b = res.manifest["bundle"]
    assert b["toolchain"] == "ndk" and b["android_api"] == 26
    so = tmp_path / "mlp-ndk/android/jniLibs/arm64-v8a/libmlp.so"
    needed = [l for l in _readelf("-d", str(so)).splitlines() if "(NEEDED)" in l]
    assert all(any(ok in l for ok in ("[libc.so]", "[libm.so]", "[libdl.so]")) for l in needed), needed
    assert shutil.which("readelf")


def test_ndk_is_chosen_from_android_ndk_home(zoo_onnx, tmp_path, monkeypatch):
    """Plumbing of the NDK path where no NDK is installed: a stand-in `aarch64-linux-android28-clang` (zig's
    clang, logging its arguments) in an NDK-shaped folder is what builds the .so."""
    from edgesparse.compiler import compile as compile_model
    from edgesparse.errors import EdgesparseError

    bin_dir = tmp_path / "ndk/toolchains/llvm/prebuilt/linux-x86_64/bin"
    bin_dir.mkdir(parents=True)
    clang = bin_dir / "aarch64-linux-android28-clang"
    log = tmp_path / "clang.log"
    clang.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {sys.executable} -m ziglang cc -target aarch64-linux-musl "$@"\n')
    clang.chmod(0o755)
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path / "ndk"))
    res = compile_model(zoo_onnx("mlp"), "android-arm64", tmp_path / "mlp-ndk", android_api=28)
    assert res.manifest["bundle"]["toolchain"] == "ndk" and res.manifest["bundle"]["android_api"] == 28
    assert (tmp_path / "mlp-ndk/android/jniLibs/arm64-v8a/libmlp.so").is_file()
    calls = log.read_text().splitlines()
    assert len(calls) == 4 and "-shared" in calls[-1] and "--version-script" in calls[-1]
    assert not any("es_emutls.c" in c for c in calls)  # the NDK brings its own emulated TLS below API 29
    with pytest.raises(EdgesparseError, match="aarch64-linux-android23-clang"):
        compile_model(zoo_onnx("mlp"), "android-arm64", tmp_path / "mlp-23", android_api=23)
