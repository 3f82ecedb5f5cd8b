/* edgesparse runner: runs one compiled model from the command line, on any target (native, qemu, WASI).
 *
 *   runner info                               model inputs/outputs as JSON
 *   runner run [-t THREADS] IN_1.bin .. IN_n.bin OUT_1.bin .. OUT_m.bin
 *                                             raw little-endian tensors in, raw tensors out
 *   runner bench WARMUP RUNS THREADS [IN_1.bin .. IN_n.bin]
 *                                             per-run latency as JSON {"times_ms": [...]} (zeros if no inputs)
 *
 * Compiled with -DES_MODEL=<name>_model -DES_MODEL_HEADER="<name>.h". Errors: one line on stderr,
 * exit 2 for bad usage or input, 3 when the model fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef ES_HUGE_PAGES
#include <sys/mman.h>
#endif

#include ES_MODEL_HEADER

#ifdef ES_PROFILE /* a profiling build: bench also prints per-kernel-call times, "profile_ms" */
#include "edgesparse_rt.h"
#endif

static void die(int code, const char* what, const char* detail) {
  fprintf(stderr, "error: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(code);
}

static void* alloc_aligned(size_t bytes) {
  void* p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) die(3, "out of memory", NULL);
  memset(p, 0, bytes);
  return p;
}

/* Memory the model keeps for as long as it runs (arena, weights). With -DES_HUGE_PAGES (a target descriptor's
 * cflags: Linux) on transparent huge pages: kernels over CHW activations read a row of many channel planes at
 * once (a sparse 1x1's tile: one row per input channel, the rows 3-50 KB apart) and megabytes of weights per
 * run, and on 4 KiB pages those rows sit on pages of their own, past the TLB's reach. */
static void* alloc_lasting(size_t bytes) {
#ifdef ES_HUGE_PAGES
  const size_t huge = (size_t)2 << 20;
  if (bytes >= huge / 2) {
    size_t n = (bytes + huge - 1) / huge * huge;
    void* p = NULL;
    if (posix_memalign(&p, huge, n) != 0) die(3, "out of memory", NULL);
    (void)madvise(p, n, MADV_HUGEPAGE); /* advice: where THP is off the pages stay small, nothing else changes */
    memset(p, 0, bytes);
    return p;
  }
#endif
  return alloc_aligned(bytes);
}

static void read_tensor(const char* path, const es_tensor_info* info, void* dst) {
  FILE* f = fopen(path, "rb");
  if (!f) die(2, "cannot open input file", path);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (size < 0 || (size_t)size != info->bytes) {
    fprintf(stderr, "error: input '%s' from %s has %ld bytes, expected %zu (%s, %d dims)\n", info->name, path,
            size, info->bytes, info->dtype, (int)info->ndim);
    exit(2);
  }
  if (fread(dst, 1, info->bytes, f) != info->bytes) die(2, "short read", path);
  fclose(f);
}

static void write_tensor(const char* path, const es_tensor_info* info, const void* src) {
  FILE* f = fopen(path, "wb");
  if (!f) die(2, "cannot open output file", path);
  if (fwrite(src, 1, info->bytes, f) != info->bytes) die(2, "short write", path);
  fclose(f);
}

static void print_infos(const es_tensor_info* t, int n) {
  for (int i = 0; i < n; ++i) {
    printf("%s{\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", i ? ", " : "", t[i].name, t[i].dtype);
    for (int d = 0; d < t[i].ndim; ++d) printf("%s%lld", d ? ", " : "", (long long)t[i].shape[d]);
    printf("]}");
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

int main(int argc, char** argv) {
  const es_model* m = &ES_MODEL;
  if (argc < 2) die(2, "usage", "runner info | run INPUTS.. OUTPUTS.. | bench WARMUP RUNS THREADS [INPUTS..]");
  void* inputs[64];
  void* outputs[64];
  if (m->num_inputs > 64 || m->num_outputs > 64) die(2, "the runner handles at most 64 inputs and 64 outputs", NULL);
  void* arena = alloc_lasting(m->arena_bytes);
  for (int i = 0; i < m->num_inputs; ++i) inputs[i] = alloc_aligned(m->inputs[i].bytes);
  for (int i = 0; i < m->num_outputs; ++i) outputs[i] = alloc_aligned(m->outputs[i].bytes);

  if (strcmp(argv[1], "info") == 0) {
    printf("{\"name\": \"%s\", \"arena_bytes\": %zu, \"inputs\": [", m->name, m->arena_bytes);
    print_infos(m->inputs, m->num_inputs);
    printf("], \"outputs\": [");
    print_infos(m->outputs, m->num_outputs);
    printf("]}\n");
    return 0;
  }
#ifdef ES_HUGE_PAGES
  if (m->move_weights(alloc_lasting(m->weight_bytes)) != 0) die(3, "cannot move the weights", m->last_error());
#endif
  if (strcmp(argv[1], "run") == 0) {
    int first = 2;
    if (argc > 3 && strcmp(argv[2], "-t") == 0) {
      m->set_num_threads(atoi(argv[3]));
      first = 4;
    }
    argv += first - 2;
    argc -= first - 2;
    if (argc != 2 + m->num_inputs + m->num_outputs) die(2, "usage", "runner run [-t THREADS] INPUTS.. OUTPUTS..");
    for (int i = 0; i < m->num_inputs; ++i) read_tensor(argv[2 + i], &m->inputs[i], inputs[i]);
    if (m->run(arena, (const void* const*)inputs, outputs) != 0) die(3, "inference failed", m->last_error());
    for (int i = 0; i < m->num_outputs; ++i)
      write_tensor(argv[2 + m->num_inputs + i], &m->outputs[i], outputs[i]);
    return 0;
  }
  if (strcmp(argv[1], "bench") == 0) {
    if (argc != 5 && argc != 5 + m->num_inputs) die(2, "usage", "runner bench WARMUP RUNS THREADS [INPUTS..]");
    int warmup = atoi(argv[2]), runs = atoi(argv[3]), threads = atoi(argv[4]);
    if (warmup < 0 || runs < 1 || threads < 1) die(2, "bench needs WARMUP >= 0, RUNS >= 1, THREADS >= 1", NULL);
    if (argc > 5)
      for (int i = 0; i < m->num_inputs; ++i) read_tensor(argv[5 + i], &m->inputs[i], inputs[i]);
    m->set_num_threads(threads);
    for (int i = 0; i < warmup; ++i)
      if (m->run(arena, (const void* const*)inputs, outputs) != 0) die(3, "inference failed", m->last_error());
#ifdef ES_PROFILE
    es_rt_profile_reset();
#endif
    printf("{\"times_ms\": [");
    for (int i = 0; i < runs; ++i) {
      double t0 = now_ms();
      if (m->run(arena, (const void* const*)inputs, outputs) != 0) die(3, "inference failed", m->last_error());
      printf("%s%.6f", i ? ", " : "", now_ms() - t0);
    }
    printf("]");
#ifdef ES_PROFILE
    printf(", \"profile_ms\": [");  /* mean time per run of each kernel call, in call order */
    for (int c = 0; c < es_rt_profile_calls(); ++c) printf("%s%.6f", c ? ", " : "", es_rt_profile_ms(c) / runs);
    printf("]");
#endif
    printf("}\n");
    return 0;
  }
  die(2, "unknown command", argv[1]);
  return 2;
}
