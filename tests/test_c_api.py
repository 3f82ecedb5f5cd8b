"""The generated C API as an application uses it: separate arenas on separate threads, unaligned buffers,
errors reported through the return code and <name>_last_error()."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import numpy as np

from edgesparse.compiler import load_manifest
from edgesparse.harness.verify import onnxruntime_outputs
from edgesparse.targets import get_target

APP = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mlp.h"

#define RUNS 25
typedef struct { int id; float* in; float* out; int rc; } job;

static void* worker(void* p) {
  job* j = (job*)p;
  void* arena = NULL;
  if (posix_memalign(&arena, mlp_ARENA_ALIGN, mlp_ARENA_BYTES)) { j->rc = -1; return NULL; }
  for (int r = 0; r < RUNS; ++r) {
    const void* ins[1] = {j->in};
    void* outs[1] = {j->out};
    if (mlp_run(arena, ins, outs)) { j->rc = 1; break; }
  }
  free(arena);
  return NULL;
}

int main(int argc, char** argv) {
  size_t in_n = mlp_inputs[0].bytes / 4, out_n = mlp_outputs[0].bytes / 4;
  job jobs[2];
  pthread_t th[2];
  for (int t = 0; t < 2; ++t) {
    /* thread 1 gets deliberately misaligned input and output buffers */
    char* in_raw = malloc(mlp_inputs[0].bytes + 64);
    char* out_raw = malloc(mlp_outputs[0].bytes + 64);
    jobs[t].in = (float*)(in_raw + 4 * t);
    jobs[t].out = (float*)(out_raw + 4 * t);
    FILE* f = fopen(argv[1 + t], "rb");
    if (fread(jobs[t].in, 4, in_n, f) != in_n) return 10;
    fclose(f);
    jobs[t].id = t;
    jobs[t].rc = 0;
    pthread_create(&th[t], NULL, worker, &jobs[t]);
  }
  for (int t = 0; t < 2; ++t) {
    pthread_join(th[t], NULL);
    if (jobs[t].rc) { fprintf(stderr, "thread %d failed: %s\n", t, mlp_last_error()); return 11; }
    FILE* f = fopen(argv[3 + t], "wb");
    fwrite(jobs[t].out, 4, out_n, f);
    fclose(f);
  }
  /* a misaligned arena is refused with a message, not a crash */
  char* bad = malloc(mlp_ARENA_BYTES + 64);
  void* arena = (void*)(((size_t)bad + 63) / 64 * 64 + 8);
  const void* ins[1] = {jobs[0].in};
  void* outs[1] = {jobs[0].out};
  int rc = mlp_run(arena, ins, outs);
  printf("%d %s\n", rc, mlp_last_error());
  return 0;
}
"""


def _build_app(source: str, art, m, tmp_path) -> None:
    """tmp_path/app: `source` statically linked with the artifact's library, as an application would."""
    (tmp_path / "app.c").write_text(source)
    t = get_target("x86_64")
    subprocess.run(
        [sys.executable, "-m", "ziglang", "cc", "-target", t.zig_target, "-O2", "-static", "-I", str(art),
         str(tmp_path / "app.c"), str(art / m["files"]["library"]), "-o", str(tmp_path / "app"), "-lpthread"],
        check=True, capture_output=True,
    )


def test_two_threads_separate_arenas_unaligned_buffers(compiled, zoo_onnx, tmp_path):
    art = compiled("mlp", "x86_64")
    m = load_manifest(art)
    _build_app(APP, art, m, tmp_path)
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 784)).astype(np.float32) for _ in range(2)]
    for i, x in enumerate(xs):
        x.tofile(tmp_path / f"x{i}.bin")
    proc = subprocess.run([str(tmp_path / "app"), *(str(tmp_path / f) for f in ("x0.bin", "x1.bin", "y0.bin", "y1.bin"))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for i, x in enumerate(xs):
        ref = onnxruntime_outputs(zoo_onnx("mlp"), m, [x])[0]
        y = np.fromfile(tmp_path / f"y{i}.bin", np.float32).reshape(ref.shape)
        np.testing.assert_allclose(y, ref, atol=1e-5 * np.abs(ref).max())
    rc, msg = proc.stdout.strip().split(" ", 1)
    assert rc != "0" and "aligned to 64" in msg


def test_library_needs_no_allocator(compiled):
    """No malloc in the run path: the library's only undefined symbols are a few libc memory primitives."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("binutils' nm not installed")
    art = compiled("mlp", "x86_64")
    lib = art / load_manifest(art)["files"]["library"]
    out = subprocess.run([nm, str(lib)], capture_output=True, text=True, check=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.endswith(":"):
            (used if parts[-2] == "U" else defined).add(parts[-1])
    # libc memory primitives, and pthreads for the kernel thread pool (never an allocator)
    undefined = {u for u in used - defined if not u.startswith("pthread_")}
    assert undefined <= {"memcpy", "memset", "memmove", "strlen"}, undefined
    assert not undefined & {"malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc"}


MOVE_APP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mlp.h"

static void run_to(void* arena, const float* in, const char* path) {
  size_t out_n = mlp_outputs[0].bytes / 4;
  float* out = malloc(mlp_outputs[0].bytes);
  const void* ins[1] = {in};
  void* outs[1] = {out};
  if (mlp_run(arena, ins, outs)) { fprintf(stderr, "%s\n", mlp_last_error()); exit(11); }
  FILE* f = fopen(path, "wb");
  fwrite(out, 4, out_n, f);
  fclose(f);
  free(out);
}

int main(int argc, char** argv) {
  size_t in_n = mlp_inputs[0].bytes / 4;
  float* in = malloc(mlp_inputs[0].bytes);
  FILE* f = fopen(argv[1], "rb");
  if (fread(in, 4, in_n, f) != in_n) return 10;
  fclose(f);
  void *arena = NULL, *moved = NULL;
  if (posix_memalign(&arena, mlp_ARENA_ALIGN, mlp_ARENA_BYTES)) return 12;
  if (posix_memalign(&moved, 64, mlp_WEIGHT_BYTES + 64)) return 12;
  /* a misaligned place is refused with a message and changes nothing */
  int rc = mlp_move_weights((char*)moved + 4);
  printf("%d %s\n", rc, mlp_last_error());
  run_to(arena, in, argv[2]);                          /* from the embedded weights */
  if (mlp_move_weights(moved)) return 13;
  run_to(arena, in, argv[3]);                          /* from the copy */
  memset(moved, 0, mlp_WEIGHT_BYTES);
  run_to(arena, in, argv[4]);                          /* the copy is what runs read: all weights zero now */
  return 0;
}
"""


def test_move_weights_runs_from_the_new_place(compiled, zoo_onnx, tmp_path):
    art = compiled("mlp", "x86_64")
    m = load_manifest(art)
    _build_app(MOVE_APP, art, m, tmp_path)
    x = np.random.default_rng(3).standard_normal((1, 784)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    outs = [tmp_path / f"y{i}.bin" for i in range(3)]
    proc = subprocess.run([str(tmp_path / "app"), str(tmp_path / "x.bin"), *map(str, outs)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rc, msg = proc.stdout.strip().split(" ", 1)
    assert rc != "0" and "aligned to 64" in msg
    ref = onnxruntime_outputs(zoo_onnx("mlp"), m, [x])[0]
    before, after, zeroed = (np.fromfile(p, np.float32).reshape(ref.shape) for p in outs)
    np.testing.assert_allclose(before, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(after, before)
    # every weight and bias zero: each layer's output is zero (ReLU/Gemm of zeros; the output layer's too)
    assert np.abs(ref).max() > 0 and np.array_equal(zeroed, np.zeros_like(zeroed))
