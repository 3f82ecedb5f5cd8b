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

#ifdef ES_THREADS
static int es_num_threads = 1;

/* A persistent pool of es_num_threads - 1 workers; the caller's thread runs task 0. One launch at a time
 * (concurrent model runs on separate arenas take turns here); workers sleep between launches. */
#include <pthread.h>

#define ES_MAX_THREADS 64

static struct {
  pthread_mutex_t launch;  /* serialises launches */
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  int started;             /* workers running */
  unsigned generation;     /* bumped per launch */
  int pending;             /* workers yet to finish the current launch */
  FTVMParallelLambda fn;
  void* cdata;
  int num_task;
  int failed;
  unsigned char* ws_base;  /* the caller's free workspace, split into num_task slices */
  size_t ws_slice;
  /* barrier */
  pthread_mutex_t bar_lock;
  pthread_cond_t bar_cond;
  int bar_count;
  unsigned bar_generation;
} es_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
             PTHREAD_COND_INITIALIZER, 0, 0, 0, NULL, NULL, 0, 0, NULL, 0, PTHREAD_MUTEX_INITIALIZER,
             PTHREAD_COND_INITIALIZER, 0, 0};

/* Launches come back to back, one per layer, each a few tens of microseconds of work: a thread that went to
 * sleep on a condition variable takes about as long to wake. Workers and the launcher therefore spin a
 * little (ES_SPIN polls) before they sleep. */
#define ES_SPIN 20000

static inline void es_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static void* es_worker(void* arg) {
  int task_id = (int)(intptr_t)arg;
  unsigned seen = 0;
  for (;;) {
    for (int i = 0; i < ES_SPIN && __atomic_load_n(&es_pool.generation, __ATOMIC_ACQUIRE) == seen; ++i)
      es_cpu_relax();
    pthread_mutex_lock(&es_pool.lock);
    while (es_pool.generation == seen) pthread_cond_wait(&es_pool.wake, &es_pool.lock);
    seen = es_pool.generation;
    int num_task = es_pool.num_task;
    FTVMParallelLambda fn = es_pool.fn;
    void* cdata = es_pool.cdata;
    unsigned char* ws = es_pool.ws_base + (size_t)task_id * es_pool.ws_slice;
    size_t ws_slice = es_pool.ws_slice;
    pthread_mutex_unlock(&es_pool.lock);
    if (task_id >= num_task) continue;
    TVMParallelGroupEnv env = {NULL, num_task};
    es_rt_set_workspace(ws, ws_slice);
    if (fn(task_id, &env, cdata) != 0) __atomic_store_n(&es_pool.failed, 1, __ATOMIC_RELEASE);
    if (__atomic_sub_fetch(&es_pool.pending, 1, __ATOMIC_ACQ_REL) == 0) {
      pthread_mutex_lock(&es_pool.lock);
      pthread_cond_signal(&es_pool.done);
      pthread_mutex_unlock(&es_pool.lock);
    }
  }
  return NULL;
}

static int es_parallel_launch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  int n = es_num_threads;
  if (num_task > 0 && num_task < n) n = num_task;
  if (n <= 1) {
    TVMParallelGroupEnv env = {NULL, 1};
    return flambda(0, &env, cdata);
  }
  pthread_mutex_lock(&es_pool.launch);
  pthread_mutex_lock(&es_pool.lock);
  while (es_pool.started < n - 1) {
    pthread_t th;
    if (pthread_create(&th, NULL, es_worker, (void*)(intptr_t)(es_pool.started + 1)) != 0) break;
    pthread_detach(th);
    es_pool.started++;
  }
  if (n > es_pool.started + 1) n = es_pool.started + 1;
  /* Scratch that kernels allocate inside the parallel body is per task: the caller's free workspace is
   * split into n slices, task 0 (this thread) keeps the first. The planner sizes the workspace for it. */
  size_t start = (es_ws.top + ES_WS_ALIGN - 1) & ~(size_t)(ES_WS_ALIGN - 1);
  size_t free_bytes = es_ws.size > start ? es_ws.size - start : 0;
  size_t slice = free_bytes / (size_t)n & ~(size_t)(ES_WS_ALIGN - 1);
  size_t saved_size = es_ws.size;
  es_pool.ws_base = es_ws.base + start;
  es_pool.ws_slice = slice;
  es_ws.size = start + slice;
  es_pool.fn = flambda;
  es_pool.cdata = cdata;
  es_pool.num_task = n;
  es_pool.failed = 0;
  __atomic_store_n(&es_pool.pending, n - 1, __ATOMIC_RELAXED);
  __atomic_store_n(&es_pool.generation, es_pool.generation + 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&es_pool.wake);
  pthread_mutex_unlock(&es_pool.lock);

  TVMParallelGroupEnv env = {NULL, n};
  int rc = flambda(0, &env, cdata);

  for (int i = 0; i < ES_SPIN && __atomic_load_n(&es_pool.pending, __ATOMIC_ACQUIRE) > 0; ++i) es_cpu_relax();
  pthread_mutex_lock(&es_pool.lock);
  while (__atomic_load_n(&es_pool.pending, __ATOMIC_ACQUIRE) > 0) pthread_cond_wait(&es_pool.done, &es_pool.lock);
  rc |= __atomic_load_n(&es_pool.failed, __ATOMIC_ACQUIRE);
  pthread_mutex_unlock(&es_pool.lock);
  pthread_mutex_unlock(&es_pool.launch);
  es_ws.size = saved_size;
  return rc;
}

static int es_parallel_barrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  pthread_mutex_lock(&es_pool.bar_lock);
  unsigned gen = es_pool.bar_generation;
  if (++es_pool.bar_count == penv->num_task) {
    es_pool.bar_count = 0;
    es_pool.bar_generation++;
    pthread_cond_broadcast(&es_pool.bar_cond);
  } else {
    while (gen == es_pool.bar_generation) pthread_cond_wait(&es_pool.bar_cond, &es_pool.bar_lock);
  }
  pthread_mutex_unlock(&es_pool.bar_lock);
  return 0;
}

void es_rt_set_num_threads(int n) { es_num_threads = n < 1 ? 1 : n > ES_MAX_THREADS ? ES_MAX_THREADS : n; }

#else /* single-threaded build (wasm32 without threads): every parallel loop runs as one task */

static int es_parallel_launch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;
  TVMParallelGroupEnv env = {NULL, 1};
  return flambda(0, &env, cdata);
}

static int es_parallel_barrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id; (void)penv;
  return 0;
}

void es_rt_set_num_threads(int n) { (void)n; }
#endif

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

/* ---------------------------------------------------------------- profiling (-DES_PROFILE only) */

#ifdef ES_PROFILE
#include <time.h>

/* One slot per kernel call of the generated driver; the compiler passes the model's call count. Static:
 * no allocation. Timed on the caller's thread; profile one run at a time. */
#ifndef ES_PROFILE_MAX_CALLS
#define ES_PROFILE_MAX_CALLS 4096
#endif

static double es_prof_total_ms[ES_PROFILE_MAX_CALLS];
static double es_prof_started_ms;
static int es_prof_calls;

static double es_prof_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

void es_rt_profile_begin(int call) {
  (void)call;
  es_prof_started_ms = es_prof_now_ms();
}

void es_rt_profile_end(int call) {
  double elapsed = es_prof_now_ms() - es_prof_started_ms;
  if (call < 0 || call >= ES_PROFILE_MAX_CALLS) return;
  es_prof_total_ms[call] += elapsed;
  if (call >= es_prof_calls) es_prof_calls = call + 1;
}

void es_rt_profile_reset(void) {
  memset(es_prof_total_ms, 0, sizeof(es_prof_total_ms));
  es_prof_calls = 0;
}

int es_rt_profile_calls(void) { return es_prof_calls; }

double es_rt_profile_ms(int call) { return call >= 0 && call < es_prof_calls ? es_prof_total_ms[call] : 0.0; }
#endif
