/* edgesparse JNI bridge: the compiled model as native methods of one Java class, for Android apps.
 *
 * Compiled into libNAME.so with -DES_MODEL=<name>_model -DES_MODEL_HEADER="<name>.h"
 * -DES_JNI_CLASS="ai/edgesparse/<Name>" and registered from JNI_OnLoad with RegisterNatives, so the .so
 * exports JNI_OnLoad and the model's C API and nothing else (several models can live in one app).
 *
 *   static native long nativeOpen();                                   arena + buffers, 0 if out of memory
 *   static native void nativeRun(long h, float[][] inputs, float[][] outputs)   throws IllegalArgumentException
 *                                                                       or IllegalStateException
 *   static native void nativeClose(long h);
 *
 * The bridge handles float32 tensors (what vision and audio models take); other dtypes are refused at
 * nativeOpen. No NDK is needed: the few JNI declarations used are below, at the slots the JNI
 * specification gives them in the function tables (tests check them against a JDK's jni.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include ES_MODEL_HEADER

/* ---- the JNI subset: types and function-table slots (JNI specification, "Interface Function Table") */
typedef int32_t jint;
typedef int64_t jlong;
typedef float jfloat;
typedef int32_t jsize;
typedef void* jobject;
typedef jobject jclass;
typedef jobject jarray;
typedef jobject jobjectArray;
typedef jobject jfloatArray;
typedef const void* const* JNIEnv;   /* a pointer to the function table */
typedef const void* const* JavaVM;
typedef struct { const char* name; const char* signature; void* fnPtr; } JNINativeMethod;

enum {
  ES_JNI_FindClass = 6, ES_JNI_ThrowNew = 14, ES_JNI_DeleteLocalRef = 23, ES_JNI_GetArrayLength = 171,
  ES_JNI_GetObjectArrayElement = 173, ES_JNI_GetFloatArrayRegion = 205, ES_JNI_SetFloatArrayRegion = 213,
  ES_JNI_RegisterNatives = 215, ES_JNI_ExceptionCheck = 228,
  ES_JVM_GetEnv = 6,
};
#define ES_JNI_VERSION_1_6 0x00010006
#define ES_JNI_OK 0
#define ES_JNI_ERR (-1)
#define ES_FN(env, slot, type) ((type)(*(env))[slot])

static jclass es_find_class(JNIEnv* env, const char* name) {
  return ES_FN(env, ES_JNI_FindClass, jclass (*)(JNIEnv*, const char*))(env, name);
}
static void es_throw(JNIEnv* env, const char* cls, const char* msg) {
  jclass c = es_find_class(env, cls);
  if (c) ES_FN(env, ES_JNI_ThrowNew, jint (*)(JNIEnv*, jclass, const char*))(env, c, msg);
}
static jsize es_length(JNIEnv* env, jarray a) {
  return ES_FN(env, ES_JNI_GetArrayLength, jsize (*)(JNIEnv*, jarray))(env, a);
}
static jobject es_element(JNIEnv* env, jobjectArray a, jsize i) {
  return ES_FN(env, ES_JNI_GetObjectArrayElement, jobject (*)(JNIEnv*, jobjectArray, jsize))(env, a, i);
}
static void es_drop(JNIEnv* env, jobject o) {
  if (o) ES_FN(env, ES_JNI_DeleteLocalRef, void (*)(JNIEnv*, jobject))(env, o);
}
static int es_pending(JNIEnv* env) {
  return ES_FN(env, ES_JNI_ExceptionCheck, uint8_t (*)(JNIEnv*))(env) != 0;
}

/* ---- the session behind a Java handle */
#define ES_MAX_TENSORS 64
typedef struct {
  void* arena;
  float* inputs[ES_MAX_TENSORS];
  float* outputs[ES_MAX_TENSORS];
} es_jni_session;

static void* es_aligned(size_t bytes) {
  void* p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
  memset(p, 0, bytes ? bytes : 64);
  return p;
}

static void es_session_free(es_jni_session* s) {
  if (!s) return;
  for (int i = 0; i < ES_MODEL.num_inputs; ++i) free(s->inputs[i]);
  for (int i = 0; i < ES_MODEL.num_outputs; ++i) free(s->outputs[i]);
  free(s->arena);
  free(s);
}

static jlong es_native_open(JNIEnv* env, jclass cls) {
  (void)cls;
  const es_model* m = &ES_MODEL;
  for (int i = 0; i < m->num_inputs + m->num_outputs; ++i) {
    const es_tensor_info* t = i < m->num_inputs ? &m->inputs[i] : &m->outputs[i - m->num_inputs];
    if (strcmp(t->dtype, "float32") != 0) {
      char msg[256];
      snprintf(msg, sizeof(msg), "%s: tensor '%s' is %s; the JNI bridge handles float32 only (use the C API)",
               m->name, t->name, t->dtype);
      es_throw(env, "java/lang/UnsupportedOperationException", msg);
      return 0;
    }
  }
  es_jni_session* s = (es_jni_session*)calloc(1, sizeof(es_jni_session));
  int ok = s && m->num_inputs <= ES_MAX_TENSORS && m->num_outputs <= ES_MAX_TENSORS;
  ok = ok && (s->arena = es_aligned(m->arena_bytes)) != NULL;
  for (int i = 0; ok && i < m->num_inputs; ++i) ok = (s->inputs[i] = (float*)es_aligned(m->inputs[i].bytes)) != NULL;
  for (int i = 0; ok && i < m->num_outputs; ++i) ok = (s->outputs[i] = (float*)es_aligned(m->outputs[i].bytes)) != NULL;
  if (!ok) {
    es_session_free(s);
    es_throw(env, "java/lang/OutOfMemoryError", "edgesparse: cannot allocate the model's arena");
    return 0;
  }
  return (jlong)(intptr_t)s;
}

/* Checks that `arrays` holds `n` float[] of the sizes in `info`; throws and returns 0 otherwise. */
static int es_check_arrays(JNIEnv* env, jobjectArray arrays, int n, const es_tensor_info* info, const char* what) {
  char msg[256];
  if (!arrays || es_length(env, arrays) != n) {
    snprintf(msg, sizeof(msg), "%s: expected %d %s array(s), got %d", ES_MODEL.name, n, what,
             arrays ? (int)es_length(env, arrays) : 0);
    es_throw(env, "java/lang/IllegalArgumentException", msg);
    return 0;
  }
  for (int i = 0; i < n; ++i) {
    jobject a = es_element(env, arrays, i);
    jsize want = (jsize)(info[i].bytes / sizeof(float));
    jsize got = a ? es_length(env, a) : -1;
    es_drop(env, a);
    if (got != want) {
      snprintf(msg, sizeof(msg), "%s: %s '%s' needs a float[%d], got %s%d", ES_MODEL.name, what, info[i].name,
               (int)want, got < 0 ? "null" : "float[", got < 0 ? 0 : (int)got);
      if (got >= 0) strncat(msg, "]", sizeof(msg) - strlen(msg) - 1);
      es_throw(env, "java/lang/IllegalArgumentException", msg);
      return 0;
    }
  }
  return 1;
}

static void es_native_run(JNIEnv* env, jclass cls, jlong handle, jobjectArray inputs, jobjectArray outputs) {
  (void)cls;
  es_jni_session* s = (es_jni_session*)(intptr_t)handle;
  const es_model* m = &ES_MODEL;
  if (!s) {
    es_throw(env, "java/lang/IllegalStateException", "edgesparse: the model is closed");
    return;
  }
  if (!es_check_arrays(env, inputs, m->num_inputs, m->inputs, "input") ||
      !es_check_arrays(env, outputs, m->num_outputs, m->outputs, "output"))
    return;
  for (int i = 0; i < m->num_inputs; ++i) {
    jobject a = es_element(env, inputs, i);
    ES_FN(env, ES_JNI_GetFloatArrayRegion, void (*)(JNIEnv*, jfloatArray, jsize, jsize, jfloat*))(
        env, a, 0, (jsize)(m->inputs[i].bytes / sizeof(float)), s->inputs[i]);
    es_drop(env, a);
    if (es_pending(env)) return;
  }
  if (m->run(s->arena, (const void* const*)s->inputs, (void* const*)s->outputs) != 0) {
    es_throw(env, "java/lang/IllegalStateException", m->last_error());
    return;
  }
  for (int i = 0; i < m->num_outputs; ++i) {
    jobject a = es_element(env, outputs, i);
    ES_FN(env, ES_JNI_SetFloatArrayRegion, void (*)(JNIEnv*, jfloatArray, jsize, jsize, const jfloat*))(
        env, a, 0, (jsize)(m->outputs[i].bytes / sizeof(float)), s->outputs[i]);
    es_drop(env, a);
    if (es_pending(env)) return;
  }
}

static void es_native_close(JNIEnv* env, jclass cls, jlong handle) {
  (void)env; (void)cls;
  es_session_free((es_jni_session*)(intptr_t)handle);
}

__attribute__((visibility("default"))) jint JNI_OnLoad(JavaVM* vm, void* reserved) {
  (void)reserved;
  JNIEnv* env = NULL;
  if (ES_FN(vm, ES_JVM_GetEnv, jint (*)(JavaVM*, void**, jint))(vm, (void**)&env, ES_JNI_VERSION_1_6) != ES_JNI_OK)
    return ES_JNI_ERR;
  jclass cls = es_find_class(env, ES_JNI_CLASS);
  if (!cls) return ES_JNI_ERR;
  const JNINativeMethod methods[] = {
      {"nativeOpen", "()J", (void*)es_native_open},
      {"nativeRun", "(J[[F[[F)V", (void*)es_native_run},
      {"nativeClose", "(J)V", (void*)es_native_close},
  };
  if (ES_FN(env, ES_JNI_RegisterNatives, jint (*)(JNIEnv*, jclass, const JNINativeMethod*, jint))(
          env, cls, methods, 3) != ES_JNI_OK)
    return ES_JNI_ERR;
  return ES_JNI_VERSION_1_6;
}
