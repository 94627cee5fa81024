/* peftsum: T5 attention probabilities with dropout in one pass each way (CPU).
 *
 * Forward, per row of scores S (query position of one head and batch element):
 *     P = softmax(S + M [+ KM])     S bf16 or fp32, M the fp32 additive mask (position bias + padding/causal,
 *                                   or the bias alone with KM the batch's additive key-padding mask)
 *     D = P where kept, else 0      kept: the element's 16 random bits >= threshold; the bits given, or
 *                                   drawn here: element i's are bits 16(i%4).. of SplitMix64 word i/4
 * Backward, given dD (the gradient of D):
 *     g  = dD where D != 0 (kept; where P is 0 its gradient is 0 either way)
 *     dS = P * (g - sum(P * g))     (softmax backward)
 *     dM = dS, summed over the batch when M is broadcast over it.
 * The survivors' 1 / (1 - p) scale is applied by the caller to the attention output.
 *
 * This is what PyTorch computes with softmax(S.float() + M).to(S.dtype) * keep and autograd, in
 * one read and one write of each tensor instead of seven elementwise kernels (casts, add, softmax,
 * comparison, multiply, and their backward). Compiled at first use by peftsum.modeling.cpu_kernel;
 * rows [row0, row1) of the heads x query positions are this call's share (the caller splits them
 * among threads; each call loops over the batch itself, so a broadcast mask's gradient has one writer).
 * Loops are written for auto-vectorization (partial sums over LANES elements). GCC 12.2 at -O3 miscompiled
 * an earlier form of the backward's first loop (a conditional load, `d != 0 ? dD : 0`, feeding the partial
 * sums): the keep test is a multiplication now, and the build's self-check runs forward and backward. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define LANES 16

static inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }

/* round to nearest even, NaN to 0x7FC0: PyTorch's c10::detail::round_to_nearest_even */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if (f != f) return 0x7FC0;
    return (uint16_t)((u + (((u >> 16) & 1) + 0x7FFFu)) >> 16);
}

static inline float f32_id(float f) { return f; }

/* exp(x) for x <= 0 (a score minus its row's maximum); 0 below -87.3 (exp there is < 1.2e-38).
 * Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, and Cephes' expf polynomial for e^r
 * (relative error < 1e-7, measured against float64 exp: 8e-8; PyTorch's vectorized exp: 6e-8). */
static inline float exp_nonpositive(float x) {
    float underflow = x < -87.3f ? 0.0f : 1.0f;
    x = x < -87.3f ? -87.3f : x;
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (no rounding instruction; |x / ln2| < 2^22), and 2^n from
     * the same sum's low bits */
    float shifted = x * 1.44269504088896341f + 12582912.0f;
    float n = shifted - 12582912.0f;
    float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t nb; memcpy(&nb, &shifted, 4);
    uint32_t bits = (uint32_t)(nb - 0x4B400000 + 127) << 23;
    float scale; memcpy(&scale, &bits, 4);
    return p * scale * underflow;
}

/* Word i of the SplitMix64 stream seeded by `seed` (Steele, Lea & Flood, "Fast splittable pseudorandom
 * number generators", OOPSLA 2014; constants of Vigna's splitmix64.c): it depends on (seed, i) only,
 * so any split among threads gives the same words. */
static inline uint64_t splitmix64(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define DEFINE_KERNELS(SUFFIX, T, LOAD, STORE, NAN_BITS)                                                     \
int peftsum_attn_probs_fwd_##SUFFIX(const T *S, const float *M, const float *KM, const int16_t *bits,     \
                                     uint64_t seed, int32_t threshold, T *P, T *D, int64_t batch,             \
                                     int64_t rows, int64_t K, int64_t mask_batch_stride, int64_t row0,        \
                                     int64_t row1) {                                                          \
    float *x = (float *)malloc(sizeof(float) * (size_t)K);                                                    \
    /* without bits: the row's words of the SplitMix64 stream, viewed as int16 (little-endian) */            \
    uint64_t *words = bits ? NULL : (uint64_t *)malloc(sizeof(uint64_t) * (size_t)(K / 4 + 2));              \
    if (!x || (!bits && !words)) { free(x); free(words); return 1; }                                          \
    for (int64_t r = row0; r < row1; ++r) {                                                         \
        for (int64_t b = 0; b < batch; ++b) {                                                                 \
            int64_t off = (b * rows + r) * K, k = 0;                                                          \
            const T *s = S + off;                                                                             \
            const float *m = M + b * mask_batch_stride + r * K;                                               \
            const float *km = KM ? KM + b * K : NULL;                                                         \
            float maxv[LANES], badv[LANES], sumv[LANES];                                                      \
            for (int l = 0; l < LANES; ++l) { maxv[l] = -3.402823466e38f; badv[l] = 0.0f; sumv[l] = 0.0f; }   \
            for (; k + LANES <= K; k += LANES)                                                                \
                for (int l = 0; l < LANES; ++l) {                                                             \
                    float v = LOAD(s[k + l]) + m[k + l] + (km ? km[k + l] : 0.0f);                            \
                    x[k + l] = v;                                                                             \
                    maxv[l] = v > maxv[l] ? v : maxv[l];                                                      \
                    badv[l] += (v != v || v > 3.402823466e38f) ? 1.0f : 0.0f; /* NaN or +inf */               \
                }                                                                                             \
            float mx = -3.402823466e38f, bad = 0.0f, sum = 0.0f;                                              \
            for (; k < K; ++k) {                                                                              \
                float v = LOAD(s[k]) + m[k] + (km ? km[k] : 0.0f);                                            \
                x[k] = v;                                                                                     \
                mx = v > mx ? v : mx;                                                                         \
                bad += (v != v || v > 3.402823466e38f) ? 1.0f : 0.0f;                                         \
            }                                                                                                 \
            for (int l = 0; l < LANES; ++l) { mx = maxv[l] > mx ? maxv[l] : mx; bad += badv[l]; }            \
            T *p = P + off, *d = D + off;                                                                     \
            const int16_t *kb;                                                                                \
            if (bits) kb = bits + off;                                                                        \
            else {                                                                                            \
                int64_t w0 = off / 4, nw = (off + K + 3) / 4 - w0;                                            \
                for (int64_t w = 0; w < nw; ++w) words[w] = splitmix64(seed, (uint64_t)(w0 + w));             \
                kb = (const int16_t *)(const void *)words + (off - 4 * w0);                                   \
            }                                                                                                 \
            if (bad != 0.0f) { /* as PyTorch's softmax: a NaN or +inf input makes the row NaN (-inf gives 0; \
                                  a row of only -inf gives 0 / 0 = NaN below, as in PyTorch) */             \
                for (k = 0; k < K; ++k) { p[k] = NAN_BITS; d[k] = NAN_BITS; }                                 \
                continue;                                                                                     \
            }                                                                                                 \
            for (k = 0; k + LANES <= K; k += LANES)                                                           \
                for (int l = 0; l < LANES; ++l) {                                                             \
                    float e = exp_nonpositive(x[k + l] - mx);                                                 \
                    x[k + l] = e;                                                                             \
                    sumv[l] += e;                                                                             \
                }                                                                                             \
            for (; k < K; ++k) { float e = exp_nonpositive(x[k] - mx); x[k] = e; sum += e; }                  \
            for (int l = 0; l < LANES; ++l) sum += sumv[l];                                                   \
            float inv = 1.0f / sum;                                                                           \
            for (k = 0; k < K; ++k) {                                                                         \
                T q = STORE(x[k] * inv);                                                                      \
                p[k] = q;                                                                                     \
                d[k] = kb[k] >= threshold ? q : (T)0;                                                         \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
    free(x);                                                                                                  \
    free(words);                                                                                              \
    return 0;                                                                                                 \
}                                                                                                             \
                                                                                                              \
int peftsum_attn_probs_bwd_##SUFFIX(const T *dD, const T *P, const T *D, T *dS, float *dM,                 \
                                     int64_t batch, int64_t rows, int64_t K, int32_t mask_batched,            \
                                     int64_t row0, int64_t row1) {                                            \
    float *g = (float *)malloc(sizeof(float) * (size_t)K);                                                    \
    if (!g) return 1;                                                                                         \
    for (int64_t r = row0; r < row1; ++r) {                                                         \
        float *acc = (dM && !mask_batched) ? dM + r * K : NULL;                                               \
        if (acc) for (int64_t k = 0; k < K; ++k) acc[k] = 0.0f;                                               \
        for (int64_t b = 0; b < batch; ++b) {                                                                 \
            int64_t off = (b * rows + r) * K, k = 0;                                                          \
            const T *gd = dD + off, *p = P + off, *d = D + off;                                               \
            float dotv[LANES];                                                                                \
            for (int l = 0; l < LANES; ++l) dotv[l] = 0.0f;                                                   \
            for (; k + LANES <= K; k += LANES)                                                                \
                for (int l = 0; l < LANES; ++l) {                                                             \
                    float v = LOAD(gd[k + l]) * (d[k + l] != (T)0 ? 1.0f : 0.0f);                             \
                    g[k + l] = v;                                                                             \
                    dotv[l] += LOAD(p[k + l]) * v;                                                            \
                }                                                                                             \
            float dot = 0.0f;                                                                                 \
            for (; k < K; ++k) { float v = LOAD(gd[k]) * (d[k] != (T)0 ? 1.0f : 0.0f); g[k] = v; dot += LOAD(p[k]) * v; } \
            for (int l = 0; l < LANES; ++l) dot += dotv[l];                                                   \
            T *ds = dS + off;                                                                                 \
            for (k = 0; k < K; ++k) { g[k] = LOAD(p[k]) * (g[k] - dot); ds[k] = STORE(g[k]); }               \
            if (dM && mask_batched) memcpy(dM + off, g, sizeof(float) * (size_t)K);                           \
            if (acc) for (k = 0; k < K; ++k) acc[k] += g[k];                                                  \
        }                                                                                                     \
    }                                                                                                         \
    free(g);                                                                                                  \
    return 0;                                                                                                 \
}

DEFINE_KERNELS(bf16, uint16_t, bf16_to_f32, f32_to_bf16, 0x7FC0)
DEFINE_KERNELS(f32, float, f32_id, f32_id, __builtin_nanf(""))

/* for the build's self-check: exp_nonpositive on n values */
void peftsum_exp_nonpositive(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = exp_nonpositive(x[i]);
}

/* Words [start, end) of the stream: dropout masks (peftsum.modeling.fast_paths.keep_bits), ~7x
 * faster than torch.randint's Mersenne Twister on CPU. */
void peftsum_random_words(uint64_t seed, uint64_t *out, int64_t start, int64_t end) {
    for (int64_t i = start; i < end; ++i) out[i] = splitmix64(seed, (uint64_t)i);
}

/* Dropout in one pass: y = x * scale where kept, else 0; element i is kept when bits 16*(i%4) ..
 * 16*(i%4)+15 of word i/4, read as int16, are >= threshold: the mask keep_bits draws from the same
 * seed (words viewed as little-endian int16). Elements [4*w0, min(4*w1, n)). The backward is the same
 * call on the output's gradient (the mask is drawn again from the seed, never stored). */
#define DROPOUT_CHUNK 1024
/* the keep factors (scale or 0) of elements [i0, i1), i0 a multiple of 4: the words' 16-bit slices as int16
 * (little-endian: element j of a word is its bits 16j..16j+15), in a loop the compiler vectorizes */
static inline void keep_factors(uint64_t seed, int32_t threshold, float scale, int64_t i0, int64_t i1,
                                float *restrict keep) {
    union { uint64_t w[DROPOUT_CHUNK / 4]; int16_t h[DROPOUT_CHUNK]; } words;
    int64_t nw = (i1 - i0 + 3) / 4;
    for (int64_t w = 0; w < nw; ++w) words.w[w] = splitmix64(seed, (uint64_t)(i0 / 4 + w));
    for (int64_t k = 0; k < i1 - i0; ++k) keep[k] = words.h[k] >= threshold ? scale : 0.0f;
}

/* BODY for each element i of [4*w0, min(4*w1, n)), with its keep factor in keep[i - c], chunk by chunk (the
 * caller's seed, threshold, scale, n, w0 and w1) */
#define KEEP_LOOP(BODY)                                                                                    \
    float keep[DROPOUT_CHUNK];                                                                             \
    int64_t end = 4 * w1 < n ? 4 * w1 : n;                                                                 \
    for (int64_t c = 4 * w0; c < end; c += DROPOUT_CHUNK) {                                                \
        int64_t c1 = c + DROPOUT_CHUNK < end ? c + DROPOUT_CHUNK : end;                                    \
        keep_factors(seed, threshold, scale, c, c1, keep);                                                 \
        for (int64_t i = c; i < c1; ++i) { BODY; }                                                         \
    }

#define DEFINE_DROPOUT(SUFFIX, TI, TO, LOAD, STORE)                                                         \
void peftsum_dropout_##SUFFIX(const TI *restrict x, TO *restrict y, uint64_t seed, int32_t threshold,         \
                              float scale, int64_t n, int64_t w0, int64_t w1) {                            \
    KEEP_LOOP(y[i] = STORE(LOAD(x[i]) * keep[i - c]))                                                      \
}

DEFINE_DROPOUT(bf16, uint16_t, uint16_t, bf16_to_f32, f32_to_bf16)
/* with a cast: fp32 in, bf16 out (the input of an autocast matmul), and back (its backward) */
DEFINE_DROPOUT(f32_bf16, float, uint16_t, f32_id, f32_to_bf16)
DEFINE_DROPOUT(bf16_f32, uint16_t, float, bf16_to_f32, f32_id)
DEFINE_DROPOUT(f32, float, float, f32_id, f32_id)

/* Cross-entropy of a vocabulary-by-tokens block of logits L (V rows, n columns: column j holds token j's
 * logits; the layout of W @ H^T, whose matmuls run ~2x faster on CPU than H @ W^T's, benchmarks/README.md).
 *
 * Statistics, rows [v0, v1): per column j the maximum m_j, sum_j = sum over the rows of exp(L - m_j) and
 * the plain sum of L (for label smoothing), by blocks of XENT_BLOCK rows (the block's maximum first, the
 * running sum rescaled once per block: one exponential per element, one read from memory; a block's sums
 * in fp32, the running sums in fp64). The caller
 * merges the ranges of its threads (log-sum-exp of the parts).
 * Gradient, rows [v0, v1), in place: L = exp(L - lse_j) * inv_n - off, the softmax over the column divided
 * by the n tokens, minus label smoothing's eps / (V n); the caller fixes the n target elements (minus
 * (1 - eps) / n) from the logits it gathered before. */
#define XENT_BLOCK 32
#define DEFINE_XENT(SUFFIX, T, LOAD, STORE)                                                                 \
int peftsum_xent_cols_stats_##SUFFIX(const T *L, int64_t n, int64_t v0, int64_t v1, float *mx, double *sm,  \
                                      double *tot) {                                                       \
    float *bm = (float *)malloc(sizeof(float) * 3 * (size_t)n);                                            \
    if (!bm) return 1;                                                                                     \
    float *bs = bm + n, *bt = bm + 2 * n;                                                                  \
    for (int64_t j = 0; j < n; ++j) { mx[j] = -3.402823466e38f; sm[j] = 0.0; tot[j] = 0.0; }               \
    for (int64_t b0 = v0; b0 < v1; b0 += XENT_BLOCK) {                                                     \
        int64_t b1 = b0 + XENT_BLOCK < v1 ? b0 + XENT_BLOCK : v1;                                          \
        for (int64_t j = 0; j < n; ++j) { bm[j] = mx[j]; bs[j] = 0.0f; bt[j] = 0.0f; }                     \
        for (int64_t v = b0; v < b1; ++v) {                                                                \
            const T *row = L + v * n;                                                                      \
            for (int64_t j = 0; j < n; ++j) { float x = LOAD(row[j]); bm[j] = x > bm[j] ? x : bm[j]; bt[j] += x; } \
        }                                                                                                  \
        for (int64_t j = 0; j < n; ++j) { sm[j] *= exp_nonpositive(mx[j] - bm[j]); mx[j] = bm[j]; tot[j] += bt[j]; } \
        for (int64_t v = b0; v < b1; ++v) {                                                                \
            const T *row = L + v * n;                                                                      \
            for (int64_t j = 0; j < n; ++j) bs[j] += exp_nonpositive(LOAD(row[j]) - mx[j]);                \
        }                                                                                                  \
        for (int64_t j = 0; j < n; ++j) sm[j] += bs[j];                                                    \
    }                                                                                                      \
    free(bm);                                                                                              \
    return 0;                                                                                              \
}                                                                                                          \
                                                                                                           \
void peftsum_xent_cols_grad_##SUFFIX(T *L, int64_t n, int64_t v0, int64_t v1, const float *lse, float inv_n, \
                                     float off) {                                                          \
    for (int64_t v = v0; v < v1; ++v) {                                                                    \
        T *row = L + v * n;                                                                                \
        for (int64_t j = 0; j < n; ++j) row[j] = STORE(exp_nonpositive(LOAD(row[j]) - lse[j]) * inv_n - off); \
    }                                                                                                      \
}

DEFINE_XENT(bf16, uint16_t, bf16_to_f32, f32_to_bf16)
DEFINE_XENT(f32, float, f32_id, f32_id)

/* The gated feed-forward of T5 v1.1 / mT5 between its projections, in one pass each way:
 *     y = dropout(gelu_tanh(a) * l)                 a = wi_0(x), l = wi_1(x), the dropout of peftsum_dropout
 * with the rounding of PyTorch's three kernels kept (bf16: gelu's output, the product and the dropped value
 * each rounded to bf16, as gelu, mul and dropout each write one). Backward, given dy:
 *     dh = dropout(dy);  dl = dh * gelu(a);  da = dh * l * gelu'(a)
 * (PyTorch's GeluBackward with approximate="tanh": the same formula; each rounded as its kernel would be).
 * tanh(u) = sign(u) (1 - e) / (1 + e) with e = exp(-2|u|). Elements [4*w0, min(4*w1, n)). */
#define GELU_BETA 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_KAPPA 0.044715f
static inline float tanh_f(float u) {
    float e = exp_nonpositive(-2.0f * (u < 0.0f ? -u : u));
    float t = (1.0f - e) / (1.0f + e);
    return u < 0.0f ? -t : t;
}

#define DEFINE_GATED(SUFFIX, T, LOAD, STORE)                                                                \
static inline void gated_fwd_##SUFFIX(const T *a, const T *l, T *y, int64_t i, float keep) {                  \
    float x = LOAD(a[i]);                                                                                   \
    float g = LOAD(STORE(0.5f * x * (1.0f + tanh_f(GELU_BETA * (x + GELU_KAPPA * x * x * x)))));            \
    float h = LOAD(STORE(g * LOAD(l[i])));                                                                  \
    y[i] = STORE(h * keep);                                                                                 \
}                                                                                                           \
static inline void gated_bwd_##SUFFIX(const T *a, const T *l, const T *dy, T *da, T *dl, int64_t i,           \
                                      float keep) {                                                         \
    float dh = LOAD(STORE(LOAD(dy[i]) * keep));                                                             \
    float x = LOAD(a[i]), x2 = x * x;                                                                       \
    float th = tanh_f(GELU_BETA * (x + GELU_KAPPA * x2 * x));                                               \
    float g = LOAD(STORE(0.5f * x * (1.0f + th)));                                                          \
    dl[i] = STORE(dh * g);                                                                                  \
    float dg = LOAD(STORE(dh * LOAD(l[i])));                                                                \
    float deriv = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x2); \
    da[i] = STORE(dg * deriv);                                                                              \
}                                                                                                           \
void peftsum_gated_gelu_fwd_##SUFFIX(const T *restrict a, const T *restrict l, T *restrict y, uint64_t seed,  \
                                     int32_t threshold, float scale, int64_t n, int64_t w0, int64_t w1) {    \
    KEEP_LOOP(gated_fwd_##SUFFIX(a, l, y, i, keep[i - c]))                                                   \
}                                                                                                           \
                                                                                                            \
void peftsum_gated_gelu_bwd_##SUFFIX(const T *restrict a, const T *restrict l, const T *restrict dy,          \
                                     T *restrict da, T *restrict dl, uint64_t seed, int32_t threshold,       \
                                     float scale, int64_t n, int64_t w0, int64_t w1) {                       \
    KEEP_LOOP(gated_bwd_##SUFFIX(a, l, dy, da, dl, i, keep[i - c]))                                          \
}

DEFINE_GATED(bf16, uint16_t, bf16_to_f32, f32_to_bf16)
DEFINE_GATED(f32, float, f32_id, f32_id)

/* T5's layer norm (RMS norm without mean or bias, Zhang & Sennrich 2019), rows [r0, r1) of width d:
 *     y = w * (x * rstd),  rstd = 1 / sqrt(mean(x^2) + eps)          (fp32 math, y rounded to its type once)
 * as transformers' T5LayerNorm computes it in fp32 (each product rounded to fp32, as its two multiplications
 * are), then the cast autocast's matmuls would apply to it. Backward, with t = x * rstd:
 *     dx = rstd * (w dy) - x * rstd^3 * sum(w dy x) / d,   dw += dy * t (this call's rows, into dw_part). */
#define DEFINE_RMS(SUFFIX, TO, STORE, LOADO)                                                                \
void peftsum_rms_norm_fwd_##SUFFIX(const float *restrict x, const float *restrict w, TO *restrict y,          \
                                   float *restrict rstd, int64_t d, float eps, int64_t r0, int64_t r1) {      \
    for (int64_t r = r0; r < r1; ++r) {                                                                     \
        const float *xr = x + r * d;                                                                        \
        float part[LANES], ss = 0.0f;                                                                       \
        for (int l = 0; l < LANES; ++l) part[l] = 0.0f;                                                     \
        int64_t k = 0;                                                                                      \
        for (; k + LANES <= d; k += LANES)                                                                  \
            for (int l = 0; l < LANES; ++l) part[l] += xr[k + l] * xr[k + l];                               \
        for (; k < d; ++k) ss += xr[k] * xr[k];                                                             \
        for (int l = 0; l < LANES; ++l) ss += part[l];                                                      \
        float rs = 1.0f / sqrtf(ss / (float)d + eps);                                                       \
        rstd[r] = rs;                                                                                       \
        TO *yr = y + r * d;                                                                                 \
        for (k = 0; k < d; ++k) { float t = xr[k] * rs; yr[k] = STORE(w[k] * t); }                          \
    }                                                                                                       \
}                                                                                                           \
                                                                                                            \
void peftsum_rms_norm_bwd_##SUFFIX(const TO *restrict dy, const float *restrict x, const float *restrict w,   \
                                   const float *restrict rstd, float *restrict dx, float *restrict dw_part,   \
                                   int64_t d, int64_t r0, int64_t r1) {                                     \
    for (int64_t k = 0; k < d; ++k) dw_part[k] = 0.0f;                                                      \
    for (int64_t r = r0; r < r1; ++r) {                                                                     \
        const float *xr = x + r * d;                                                                        \
        const TO *gr = dy + r * d;                                                                          \
        float rs = rstd[r], part[LANES], dot = 0.0f;                                                        \
        for (int l = 0; l < LANES; ++l) part[l] = 0.0f;                                                     \
        int64_t k = 0;                                                                                      \
        for (; k + LANES <= d; k += LANES)                                                                  \
            for (int l = 0; l < LANES; ++l) part[l] += LOADO(gr[k + l]) * w[k + l] * xr[k + l];             \
        for (; k < d; ++k) dot += LOADO(gr[k]) * w[k] * xr[k];                                              \
        for (int l = 0; l < LANES; ++l) dot += part[l];                                                     \
        float c = rs * rs * rs * dot / (float)d;                                                            \
        float *dxr = dx + r * d;                                                                            \
        for (k = 0; k < d; ++k) {                                                                           \
            float g = LOADO(gr[k]);                                                                         \
            dxr[k] = rs * (g * w[k]) - xr[k] * c;                                                           \
            dw_part[k] += g * (xr[k] * rs);                                                                 \
        }                                                                                                   \
    }                                                                                                       \
}

DEFINE_RMS(bf16, uint16_t, f32_to_bf16, bf16_to_f32)
DEFINE_RMS(f32, float, f32_id, f32_id)
