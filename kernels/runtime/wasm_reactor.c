/* edgesparse WebAssembly reactor: the model as a library for JavaScript (no main, no WASI calls).
 *
 * The web bundle's NAME.mjs instantiates NAME.wasm and drives it through these exports:
 *   es_open()            -> session pointer (arena + one aligned buffer per input and output), 0 if out of memory
 *   es_input(s, i)       -> where JS writes input i (es_input_bytes(i) bytes)
 *   es_output(s, i)      -> where JS reads output i after es_run (es_output_bytes(i) bytes)
 *   es_run(s)            -> 0 on success; otherwise es_last_error() points at a NUL-terminated message
 *   es_close(s)          frees the session
 * plus es_arena_bytes / es_num_inputs / es_num_outputs, which NAME.mjs checks against the values it was
 * generated with, so a .wasm of another model is refused at load.
 *
 * Compiled with -DES_MODEL=<name>_model -DES_MODEL_HEADER="<name>.h", linked with -mexec-model=reactor. */
#include <stdlib.h>
#include <string.h>

#include ES_MODEL_HEADER

#define ES_EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#define ES_MAX_TENSORS 64

typedef struct {
  void* arena;
  void* inputs[ES_MAX_TENSORS];
  void* outputs[ES_MAX_TENSORS];
} es_session;

static void* es_alloc(size_t bytes, size_t align) {
  void* p = NULL;
  size_t rounded = (bytes + align - 1) / align * align;
  if (posix_memalign(&p, align, rounded ? rounded : align) != 0) return NULL;
  memset(p, 0, rounded ? rounded : align);
  return p;
}

ES_EXPORT(es_close) void es_close(es_session* s) {
  if (!s) return;
  const es_model* m = &ES_MODEL;
  for (int i = 0; i < m->num_inputs; ++i) free(s->inputs[i]);
  for (int i = 0; i < m->num_outputs; ++i) free(s->outputs[i]);
  free(s->arena);
  free(s);
}

ES_EXPORT(es_open) es_session* es_open(void) {
  const es_model* m = &ES_MODEL;
  if (m->num_inputs > ES_MAX_TENSORS || m->num_outputs > ES_MAX_TENSORS) return NULL;
  es_session* s = (es_session*)calloc(1, sizeof(es_session));
  if (!s) return NULL;
  int ok = (s->arena = es_alloc(m->arena_bytes, 64)) != NULL;
  for (int i = 0; ok && i < m->num_inputs; ++i) ok = (s->inputs[i] = es_alloc(m->inputs[i].bytes, 64)) != NULL;
  for (int i = 0; ok && i < m->num_outputs; ++i) ok = (s->outputs[i] = es_alloc(m->outputs[i].bytes, 64)) != NULL;
  if (!ok) {
    es_close(s);
    return NULL;
  }
  return s;
}

ES_EXPORT(es_input) void* es_input(es_session* s, int i) {
  return s && i >= 0 && i < ES_MODEL.num_inputs ? s->inputs[i] : NULL;
}

ES_EXPORT(es_output) void* es_output(es_session* s, int i) {
  return s && i >= 0 && i < ES_MODEL.num_outputs ? s->outputs[i] : NULL;
}

ES_EXPORT(es_run) int es_run(es_session* s) {
  if (!s) return -1;
  return ES_MODEL.run(s->arena, (const void* const*)s->inputs, s->outputs);
}

ES_EXPORT(es_last_error) const char* es_last_error(void) { return ES_MODEL.last_error(); }
ES_EXPORT(es_arena_bytes) double es_arena_bytes(void) { return (double)ES_MODEL.arena_bytes; }
ES_EXPORT(es_num_inputs) int es_num_inputs(void) { return ES_MODEL.num_inputs; }
ES_EXPORT(es_num_outputs) int es_num_outputs(void) { return ES_MODEL.num_outputs; }
ES_EXPORT(es_input_bytes) double es_input_bytes(int i) {
  return i >= 0 && i < ES_MODEL.num_inputs ? (double)ES_MODEL.inputs[i].bytes : -1;
}
ES_EXPORT(es_output_bytes) double es_output_bytes(int i) {
  return i >= 0 && i < ES_MODEL.num_outputs ? (double)ES_MODEL.outputs[i].bytes : -1;
}
