// The fused kernels of kvbench's batched decode step (see fused.rs for what each replaces).
// Compiled at run time by NVRTC, so without headers: bf16 and f16 are 16-bit structs, converted
// with bit operations and PTX cvt. Every kernel computes in f32 and rounds to the storage dtype
// where the ops it replaces store an intermediate (so a bf16 model rounds where candle's ops do).

typedef unsigned long long index_t;
#define NEG_INF __int_as_float(0xff800000)

struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ float load(bf16 x) { return __uint_as_float(((unsigned int)x.bits) << 16); }
__device__ __forceinline__ float load(f16 x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
}

template <typename T> __device__ __forceinline__ T store(float f);
template <> __device__ __forceinline__ float store<float>(float f) { return f; }
template <> __device__ __forceinline__ bf16 store<bf16>(float f) {
  unsigned int u = __float_as_uint(f);
  bf16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = (unsigned short)((u >> 16) | 0x40u);  // NaN stays a quiet NaN
  } else {
    r.bits = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // round to nearest even
  }
  return r;
}
template <> __device__ __forceinline__ f16 store<f16>(float f) {
  f16 r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
  return r;
}

// Rounds to T and back: the value an op that stores T would hand on.
template <typename T> __device__ __forceinline__ float round_to(float f) { return load(store<T>(f)); }

// Sum (or max) over the block; every thread of the block must call it, blockDim.x a multiple of 32.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  return v;
}

__device__ float block_max(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < (int)(blockDim.x / 32) ? partial[lane] : NEG_INF;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  return v;
}

// One block per (head, row) of the stacked projection [rows, (nh + 2 nkv) hd]; thread i holds the
// pair (i, i + hd/2). `extras`: the projection's bias [(nh + 2 nkv) hd] when biased, then the q and
// k norms' weights [2 hd] when normed. Output regions: q [rows, nh, hd], then k [rows, nkv, hd],
// then v.
template <typename T>
__device__ void qkv_rope(const T* qkv, const T* table, const T* extras, T* out, int nh, int nkv, int hd,
                         int biased, int normed, float eps) {
  const int head = blockIdx.x, row = blockIdx.y, rows = gridDim.y, half = hd / 2, i = threadIdx.x;
  const bool active = i < half;
  const T* src = qkv + ((index_t)row * (nh + 2 * nkv) + head) * hd;
  const T* bias = extras + (index_t)head * hd;
  const T* norms = extras + (biased ? (index_t)(nh + 2 * nkv) * hd : 0);
  T* dst;
  if (head < nh) {
    dst = out + ((index_t)row * nh + head) * hd;
  } else if (head < nh + nkv) {
    dst = out + (index_t)rows * nh * hd + ((index_t)row * nkv + head - nh) * hd;
  } else {
    dst = out + (index_t)rows * (nh + nkv) * hd + ((index_t)row * nkv + head - nh - nkv) * hd;
  }
  float a = active ? load(src[i]) : 0.f, b = active ? load(src[i + half]) : 0.f;
  if (biased && active) {  // the sum the projection with its bias would have stored
    a = round_to<T>(a + load(bias[i]));
    b = round_to<T>(b + load(bias[i + half]));
  }
  if (head >= nh + nkv) {  // v: copied
    if (active) { dst[i] = store<T>(a); dst[i + half] = store<T>(b); }
    return;
  }
  if (normed) {  // the whole block takes this branch (it depends on the head only)
    const float ms = block_sum(a * a + b * b) / (float)hd;
    const float rms = round_to<T>(sqrtf(ms + eps));
    const T* w = norms + (head < nh ? 0 : hd);
    if (active) {
      a = round_to<T>(round_to<T>(a / rms) * load(w[i]));
      b = round_to<T>(round_to<T>(b / rms) * load(w[i + half]));
    }
  }
  if (active) {
    const float c = load(table[(index_t)row * hd + i]), s = load(table[(index_t)row * hd + half + i]);
    dst[i] = store<T>(a * c - b * s);
    dst[i + half] = store<T>(a * s + b * c);
  }
}

// One block per line of `padded` scores; a line belongs to row line / per_row, which attends to its
// first lengths[row] keys.
template <typename T>
__device__ void masked_softmax(const T* scores, const unsigned int* lengths, T* out, int per_row, int padded) {
  const index_t line = blockIdx.x;
  const T* src = scores + line * padded;
  T* dst = out + line * padded;
  const int n = min(max((int)lengths[line / per_row], 1), padded);
  float m = NEG_INF;
  for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, load(src[j]));
  m = block_max(m);
  float sum = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) sum += expf(load(src[j]) - m);
  sum = block_sum(sum);
  for (int j = threadIdx.x; j < padded; j += blockDim.x) dst[j] = store<T>(j < n ? expf(load(src[j]) - m) / sum : 0.f);
}

// out[r, i] = silu(gate[r, i]) * up[r, i] from [rows, 2f]; n = rows * f.
template <typename T>
__device__ void silu_mul(const T* gate_up, T* out, int n, int f) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int r = idx / f, i = idx % f;
  const float g = load(gate_up[(index_t)r * 2 * f + i]);
  const float silu = round_to<T>(g / (1.f + expf(-g)));
  out[idx] = store<T>(silu * load(gate_up[(index_t)r * 2 * f + f + i]));
}

// One block per row: out[0] = x + y, out[1] = RMSNorm(x + y) * w, each [rows, n].
template <typename T>
__device__ void add_rms_norm(const T* x, const T* y, const T* w, T* out, int rows, int n, float eps) {
  const index_t row = blockIdx.x;
  T* sum = out + row * n;
  T* normed = out + (index_t)rows * n + row * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float s = round_to<T>(load(x[row * n + i]) + load(y[row * n + i]));
    sum[i] = store<T>(s);
    ss += s * s;
  }
  const float rms = round_to<T>(sqrtf(block_sum(ss) / (float)n + eps));
  for (int i = threadIdx.x; i < n; i += blockDim.x) normed[i] = store<T>(round_to<T>(load(sum[i]) / rms) * load(w[i]));
}

#define KVBENCH_FUSED(T, SUFFIX)                                                                         \
  extern "C" __global__ void qkv_rope_##SUFFIX(const T* qkv, const T* table, const T* extras, T* out,    \
                                               int nh, int nkv, int hd, int biased, int normed,          \
                                               float eps) {                                              \
    qkv_rope<T>(qkv, table, extras, out, nh, nkv, hd, biased, normed, eps);                             \
  }                                                                                                      \
  extern "C" __global__ void masked_softmax_##SUFFIX(const T* scores, const unsigned int* lengths, T* out, \
                                                     int per_row, int padded) {                          \
    masked_softmax<T>(scores, lengths, out, per_row, padded);                                            \
  }                                                                                                      \
  extern "C" __global__ void silu_mul_##SUFFIX(const T* gate_up, T* out, int n, int f) {                  \
    silu_mul<T>(gate_up, out, n, f);                                                                     \
  }                                                                                                      \
  extern "C" __global__ void add_rms_norm_##SUFFIX(const T* x, const T* y, const T* w, T* out, int rows,  \
                                                   int n, float eps) {                                   \
    add_rms_norm<T>(x, y, w, out, rows, n, eps);                                                         \
  }

KVBENCH_FUSED(float, f32)
KVBENCH_FUSED(bf16, bf16)
KVBENCH_FUSED(f16, f16)
