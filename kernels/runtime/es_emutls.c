/* Emulated thread-local storage for the Android shared library built without the NDK.
 *
 * Android's dynamic linker loads ELF TLS only from API 29, so the runtime's thread-locals (error message,
 * kernel workspace) are compiled with -femulated-tls, as the NDK itself does below API 29: every access
 * calls __emutls_get_address(control). The NDK links compiler-rt's copy; zig's compiler-rt offers one only
 * when it links bionic, which it cannot, so this file provides it over bionic's pthread keys.
 *
 * Allocation happens on a thread's first access to each variable (its first model run), never after. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The layout clang emits for each thread-local variable `v` as `__emutls_v.v`. */
typedef struct {
  size_t size;    /* bytes of the variable */
  size_t align;   /* its alignment */
  uintptr_t index; /* 0 until first use, then 1 + this variable's slot in every thread's table */
  void* init;     /* initial value (NULL: zero-initialised) */
} es_emutls_control;

typedef struct {
  size_t count;
  void* slots[];
} es_emutls_table;

static pthread_key_t es_emutls_key;
static pthread_once_t es_emutls_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t es_emutls_lock = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t es_emutls_next;

static void es_emutls_destroy(void* p) {
  es_emutls_table* t = (es_emutls_table*)p;
  for (size_t i = 0; i < t->count; ++i) free(t->slots[i]);
  free(t);
}

static void es_emutls_init(void) { pthread_key_create(&es_emutls_key, es_emutls_destroy); }

__attribute__((visibility("hidden"))) void* __emutls_get_address(es_emutls_control* c) {
  uintptr_t index = __atomic_load_n(&c->index, __ATOMIC_ACQUIRE);
  if (index == 0) {
    pthread_once(&es_emutls_once, es_emutls_init);
    pthread_mutex_lock(&es_emutls_lock);
    index = c->index;
    if (index == 0) {
      index = ++es_emutls_next;
      __atomic_store_n(&c->index, index, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&es_emutls_lock);
  }
  es_emutls_table* t = (es_emutls_table*)pthread_getspecific(es_emutls_key);
  if (!t || t->count < index) {
    size_t count = index + 8;
    es_emutls_table* grown = (es_emutls_table*)calloc(1, sizeof(es_emutls_table) + count * sizeof(void*));
    if (!grown) abort();
    if (t) {
      memcpy(grown->slots, t->slots, t->count * sizeof(void*));
      free(t);
    }
    grown->count = count;
    t = grown;
    pthread_setspecific(es_emutls_key, t);
  }
  void** slot = &t->slots[index - 1];
  if (!*slot) {
    size_t align = c->align < sizeof(void*) ? sizeof(void*) : c->align;
    void* obj = NULL;
    if (posix_memalign(&obj, align, c->size ? c->size : 1) != 0) abort();
    if (c->init) memcpy(obj, c->init, c->size);
    else memset(obj, 0, c->size);
    *slot = obj;
  }
  return *slot;
}
