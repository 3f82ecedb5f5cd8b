/* edgesparse C runtime: see edgesparse_rt.h. Small on purpose: errors, workspace, parallel launch. */
#include "edgesparse_rt.h"

#include <string.h>

_Static_assert(sizeof(TVMFFIAny) == 16, "TVMFFIAny is 16 bytes in the TVM FFI ABI");
_Static_assert(sizeof(DLDataType) == 4, "DLDataType is 4 bytes in DLPack");

/* ---------------------------------------------------------------- errors */

static _Thread_local char es_error[512];

const char* es_rt_last_error(void) { return es_error; }

void es_rt_set_error(const char* message) {
  size_t n = strlen(message);
  if (n >= sizeof(es_error)) n = sizeof(es_error) - 1;
  memcpy(es_error, message, n);
  es_error[n] = 0;
}

void es_rt_prefix_error(const char* a, const char* b) {
  char old[sizeof(es_error)];
  memcpy(old, es_error, sizeof(old));
  size_t used = 0;
  const char* pieces[4] = {a, b, ": ", old};
  for (int i = 0; i < 4; ++i) {
    size_t n = strlen(pieces[i]);
    if (used + n >= sizeof(es_error)) n = sizeof(es_error) - 1 - used;
    memcpy(es_error + used, pieces[i], n);
    used += n;
  }
  es_error[used] = 0;
}

/* TVM kernels report failed argument checks through these. */
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  size_t used = 0;
  const char* pieces[2] = {kind, ": "};
  for (int i = 0; i < 2 + num_parts; ++i) {
    const char* s = i < 2 ? pieces[i] : parts[i - 2];
    size_t n = s ? strlen(s) : 0;
    if (used + n >= sizeof(es_error)) n = sizeof(es_error) - 1 - used;
    memcpy(es_error + used, s, n);
    used += n;
  }
  es_error[used] = 0;
}

void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) {
  const char* parts[1] = {message};
  TVMFFIErrorSetRaisedFromCStrParts(kind, parts, 1);
}

/* ---------------------------------------------------------------- workspace */

#define ES_WS_ALIGN 64
#define ES_WS_DEPTH 64

typedef struct {
  unsigned char* base;
  size_t size;
  size_t top;
  size_t marks[ES_WS_DEPTH]; /* `top` before each live allocation, innermost last */
  int depth;
} es_workspace;

static _Thread_local es_workspace es_ws;

void es_rt_set_workspace(void* base, size_t bytes) {
  es_ws.base = (unsigned char*)base;
  es_ws.size = bytes;
  es_ws.top = 0;
  es_ws.depth = 0;
}

static void* es_workspace_alloc(int device_type, int device_id, uint64_t nbytes, int dtype_code,
                                int dtype_bits) {
  (void)device_type; (void)device_id; (void)dtype_code; (void)dtype_bits;
  size_t start = (es_ws.top + ES_WS_ALIGN - 1) & ~(size_t)(ES_WS_ALIGN - 1);
  if (es_ws.depth == ES_WS_DEPTH || start + nbytes > es_ws.size) {
    es_rt_set_error("edgesparse runtime: kernel workspace exhausted (planned size too small)");
    return NULL;
  }
  es_ws.marks[es_ws.depth++] = es_ws.top;
  es_ws.top = start + nbytes;
  return es_ws.base + start;
}

static int es_workspace_free(int device_type, int device_id, void* ptr) {
  (void)device_type; (void)device_id; (void)ptr;
  /* TVM frees in reverse order of allocation, so popping the innermost mark suffices. */
  if (es_ws.depth == 0) return -1;
  es_ws.top = es_ws.marks[--es_ws.depth];
  return 0;
}

/* ---------------------------------------------------------------- parallel launch */

typedef struct { void* sync_handle; int32_t num_task; } TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

static int es_num_threads = 1;

void es_rt_set_num_threads(int n) { es_num_threads = n < 1 ? 1 : n; }

static int es_parallel_launch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;
  /* Serial: one task covering the whole loop. */
  TVMParallelGroupEnv env = {NULL, 1};
  return flambda(0, &env, cdata);
}

static int es_parallel_barrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id; (void)penv;
  return 0;
}

/* Kernel objects carry weak, null pointers of these names that libtvm_runtime's loader would fill;
 * these strong definitions fill them at link time instead. */
void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = es_workspace_alloc;
int (*__TVMBackendFreeWorkspace)(int, int, void*) = es_workspace_free;
int (*__TVMBackendParallelLaunch)(FTVMParallelLambda, void*, int) = es_parallel_launch;
int (*__TVMBackendParallelBarrier)(int, TVMParallelGroupEnv*) = es_parallel_barrier;
void (*__TVMFFIErrorSetRaisedFromCStr)(const char*, const char*) = TVMFFIErrorSetRaisedFromCStr;
void (*__TVMFFIErrorSetRaisedFromCStrParts)(const char*, const char**, int32_t) =
    TVMFFIErrorSetRaisedFromCStrParts;

/* ---------------------------------------------------------------- kernel calls */

#define ES_MAX_ARGS 64

int es_rt_call(es_kernel_fn fn, DLTensor* const* tensors, int num_args) {
  TVMFFIAny args[ES_MAX_ARGS];
  TVMFFIAny result;
  if (num_args > ES_MAX_ARGS) {
    es_rt_set_error("edgesparse runtime: too many kernel arguments");
    return -1;
  }
  for (int i = 0; i < num_args; ++i) {
    memset(&args[i], 0, sizeof(args[i]));
    args[i].type_index = kTVMFFIDLTensorPtr;
    args[i].v_ptr = tensors[i];
  }
  memset(&result, 0, sizeof(result));
  result.type_index = kTVMFFINone;
  return fn(NULL, args, num_args, &result);
}
