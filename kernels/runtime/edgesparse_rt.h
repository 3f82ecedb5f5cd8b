/* edgesparse C runtime: the few symbols TVM-generated kernels need, and what generated model code uses to
 * call them. No libtvm_runtime, no malloc: kernel workspace comes from a region of the caller's arena.
 *
 * The structs below mirror the stable C ABI of DLPack (DLTensor) and TVM FFI (TVMFFIAny); the static
 * asserts in edgesparse_rt.c pin their layout. */
#ifndef EDGESPARSE_RT_H_
#define EDGESPARSE_RT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- DLPack ---- */
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
} DLTensor;
enum { kDLCPU = 1 };
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2 };

/* ---- TVM FFI calling convention ---- */
typedef struct {
  int32_t type_index;
  uint32_t zero_padding;
  union { int64_t v_int64; double v_float64; void* v_ptr; };
} TVMFFIAny;
enum { kTVMFFINone = 0, kTVMFFIDLTensorPtr = 7 };

/* Every PrimFunc f is exported by TVM as __tvm_ffi_f with this signature; 0 means success. */
typedef int (*es_kernel_fn)(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

/* Calls kernel `fn` on `num_args` tensors; returns 0 on success, else nonzero with the kernel's message
 * available from es_rt_last_error(). */
int es_rt_call(es_kernel_fn fn, DLTensor* const* tensors, int num_args);

/* Workspace for kernels (TVM's __TVMBackendAllocWorkspace): a LIFO bump allocator over `bytes` bytes at
 * `base`, per thread. Generated code points it into the arena before the first kernel call. */
void es_rt_set_workspace(void* base, size_t bytes);

/* Threads for T.parallel loops (TVM's __TVMBackendParallelLaunch). 1 = run tasks inline (the default). */
void es_rt_set_num_threads(int n);

/* The message of the last failure on this thread ("" if none). */
const char* es_rt_last_error(void);
void es_rt_set_error(const char* message);
/* Prefixes the current error message with "<a><b>: ". */
void es_rt_prefix_error(const char* a, const char* b);

/* Per-kernel timing, compiled in only with -DES_PROFILE (zero cost otherwise). */
#ifdef ES_PROFILE
void es_rt_profile_begin(int call);
void es_rt_profile_end(int call);
/* Forget the times collected so far (e.g. after warm-up runs). */
void es_rt_profile_reset(void);
/* 1 + the highest call index timed since the last reset. */
int es_rt_profile_calls(void);
/* Milliseconds spent in kernel call `call` since the last reset, summed over runs. */
double es_rt_profile_ms(int call);
#define ES_PROFILE_BEGIN(c) es_rt_profile_begin(c)
#define ES_PROFILE_END(c) es_rt_profile_end(c)
#else
#define ES_PROFILE_BEGIN(c) ((void)0)
#define ES_PROFILE_END(c) ((void)0)
#endif

#ifdef __cplusplus
}
#endif
#endif /* EDGESPARSE_RT_H_ */
