/* The f32-spmm algorithm of kernels/spmm/template.py written by hand with AVX-512 intrinsics: the reference that
 * benchmarks/spmm_floor.py times the TVM-generated kernel against, to tell how far the generated code is from
 * what the algorithm allows on this machine (not a kernel the compiler ships).
 *
 * Same packed format (kernels/spmm/pack.py; blocks of one, chunk-local offsets into a packed tile of 64-float
 * rows), same loop order: 64-pixel tiles outside; per tile, input-channel chunk by chunk, the chunk's activation
 * rows are copied into an aligned scratch tile, then every output row walks its nonzeros of that chunk with four
 * zmm accumulators (bias at the first chunk, clamp at the last, accumulators through y between chunks).
 * Pixels must be a multiple of 64. */
#include <immintrin.h>
#include <stdint.h>

#define MR 64

void floor_spmm_64x1(const float *x, int cin, int cout, int pixels, int chunk, const float *values,
                     const int32_t *segment_ptr, const int16_t *channel_index, float *y, float lo, float hi,
                     float *scratch /* chunk * MR floats, 64-byte aligned */) {
  const int n_chunks = (cin + chunk - 1) / chunk;
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int p0 = 0; p0 < pixels; p0 += MR) {
    for (int c = 0; c < n_chunks; ++c) {
      const int rows = (c + 1) * chunk <= cin ? chunk : cin - c * chunk;
      for (int ch = 0; ch < rows; ++ch) {
        const float *src = x + (size_t)(c * chunk + ch) * pixels + p0;
        float *dst = scratch + ch * MR;
        for (int q = 0; q < MR; q += 16) _mm512_store_ps(dst + q, _mm512_loadu_ps(src + q));
      }
      for (int r = 0; r < cout; ++r) {
        const int k0 = segment_ptr[c * cout + r], k1 = segment_ptr[c * cout + r + 1];  /* chunk-major segments */
        float *out = y + (size_t)r * pixels + p0;
        __m512 a0, a1, a2, a3;
        if (c == 0) {
          a0 = a1 = a2 = a3 = _mm512_set1_ps(values[r]);  /* biases first */
        } else {
          a0 = _mm512_loadu_ps(out);
          a1 = _mm512_loadu_ps(out + 16);
          a2 = _mm512_loadu_ps(out + 32);
          a3 = _mm512_loadu_ps(out + 48);
        }
        const float *w = values + cout;  /* column k's weight at cout + k */
        for (int k = k0; k < k1; ++k) {
          const __m512 b = _mm512_set1_ps(w[k]);
          const float *t = scratch + channel_index[k];
          a0 = _mm512_fmadd_ps(b, _mm512_load_ps(t), a0);
          a1 = _mm512_fmadd_ps(b, _mm512_load_ps(t + 16), a1);
          a2 = _mm512_fmadd_ps(b, _mm512_load_ps(t + 32), a2);
          a3 = _mm512_fmadd_ps(b, _mm512_load_ps(t + 48), a3);
        }
        if (c == n_chunks - 1) {
          a0 = _mm512_min_ps(_mm512_max_ps(a0, vlo), vhi);
          a1 = _mm512_min_ps(_mm512_max_ps(a1, vlo), vhi);
          a2 = _mm512_min_ps(_mm512_max_ps(a2, vlo), vhi);
          a3 = _mm512_min_ps(_mm512_max_ps(a3, vlo), vhi);
        }
        _mm512_storeu_ps(out, a0);
        _mm512_storeu_ps(out + 16, a1);
        _mm512_storeu_ps(out + 32, a2);
        _mm512_storeu_ps(out + 48, a3);
      }
    }
  }
}
