// Fused CPU kernels for RMSNorm, SwiGLU and half-split RoPE: for training, each one custom
// autograd function whose forward and backward are single passes over their tensors; for
// inference (no autograd), one pass that also reads and writes bf16 where a bf16 forward
// wants it, so no cast surrounds each linear layer. Eager libtorch runs 3 to 8 separate
// elementwise kernels for each, and both the training step and the analysis are
// memory-bound there (benchmarks/<kind of CPU>.md, "Where the time goes"). Also causal
// self-attention for training (CausalAttnFn), where libtorch's CPU flash attention is
// dominated by sgemm call overhead at small head dims.
//
// Numerics and determinism:
// - Training: f32 in, f32 out. Inference: f32 or bf16 in and out, arithmetic in f32.
//   Contiguous inputs (the Rust side checks and falls back otherwise).
// - Every output element is computed by the same scalar expression whatever the thread
//   count, and every reduction (a row's sum of squares, the RMSNorm gain's gradient over
//   rows) runs in a fixed order over fixed blocks: results are bit-identical for any
//   number of threads.
// - Compiled with -ffp-contract=off, and each kernel cloned for AVX-512, AVX2 and baseline
//   x86-64 (GCC target_clones, chosen at load time): no clone fuses a multiply-add, so all
//   three give the same bits.
// - exp is a Cephes-style polynomial (max error ~2 ulp on the range used), written so the
//   compiler vectorises it; libm's expf would not vectorise.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::Function;
using torch::autograd::variable_list;

// One clone per x86 level. The AVX-512 clone is x86-64-v4 (F, BW, DQ, VL, CD: Intel since
// Skylake-SP, AMD since Zen 4), not bare avx512f: without BW the 16-bit bf16 loads, packs
// and selects have no 512-bit form, and GCC vectorised those loops 8 lanes wide with AVX2
// instructions (measured: SwiGLU 10.4% -> 7.7% of a bf16 analysis). Every clone gives the
// same bits (checked: the f32, bf16 and 1x512 reports and a smoke `run all`'s checkpoints
// and metrics from an avx2-only build and this one are byte-identical).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SINKREP_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define SINKREP_CLONES
#endif

namespace {

// Flush denormals to zero (FTZ and DAZ) while a kernel runs on this thread, then restore
// the caller's mode. The vectorised exp evaluates its clamped branches on every lane, and
// products with exp(-87) ~ 1e-38 are denormal: each cost a microcode assist, which made
// the SwiGLU kernels ~6x slower. Flushing changes only values below 1.2e-38, the same
// way in every clone and thread.
class FlushDenormals {
 public:
#if defined(__x86_64__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#endif
};

// Rows per block of the gain-gradient reduction: fixed, so the summation order does not
// depend on the thread count.
constexpr int64_t kRowBlock = 64;
// Elements per parallel chunk of the elementwise kernels.
constexpr int64_t kGrain = 1 << 14;

// exp(x - fn ln2) for fn = round(x / ln2): ln2 split in two for the reduction, then
// Cephes' degree-6 polynomial; T is float or 16 lanes (the same operations either way).
template <typename T>
__attribute__((always_inline)) inline T exp_reduced(const T& x, const T& fn) {
  T r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  T z = r * r;
  T y = T{} + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  return y * z + r + 1.0f;
}

inline float exp_approx(float x) {
  // Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n by
  // the exponent bits. Inputs clamped to the finite range.
  const float hi = 88.3762626647949f, lo = -87.3365478515625f;
  x = std::min(std::max(x, lo), hi);
  float fn = std::floor(x * 1.44269504088896341f + 0.5f);
  float y = exp_reduced(x, fn);
  int32_t e = (static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, sizeof scale);
  return y * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// Sixteen f32 lanes (GCC vector extensions): the row reductions keep 16 partial sums in a
// fixed order, which the compiler would otherwise only partly vectorise (16-byte pieces);
// lane-wise arithmetic is the same in every clone (the baseline one splits the vector).
// Helpers that take or return these are always inlined: called across clones, a 64-byte
// vector argument would be passed differently by the caller and the callee.
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
#define SINKREP_VEC __attribute__((always_inline)) inline

SINKREP_VEC f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

SINKREP_VEC void store16(float* p, const f32x16& v) { std::memcpy(p, &v, sizeof v); }

SINKREP_VEC f32x16 splat(float c) { return c - f32x16{}; }

// Lanes 0, 1, ..., 15.
SINKREP_VEC i32x16 lane_index() {
  return i32x16{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
}

SINKREP_VEC f32x16 abs16(const f32x16& v) { return (f32x16)((i32x16)v & 0x7fffffff); }

// std::max lane by lane: (a < b) ? b : a.
SINKREP_VEC f32x16 max16(const f32x16& a, const f32x16& b) { return a < b ? b : a; }

// max_nan lane by lane. Selects are written with compares and values of one kind (a
// float compare choosing floats, an integer compare choosing integers): GCC 12 turns a
// select mixing the two, or one on (v != v), into a branch per lane (measured: 4x slower
// causal_softmax_rows).
template <typename F, typename I>
SINKREP_VEC F max_nan_lanes(const F& acc, const F& v) {
  F m = v > acc ? v : acc;
  I vb = (I)v;
  // NaN by its bits: exponent all ones, mantissa not zero.
  return (F)((vb & 0x7fffffff) > 0x7f800000 ? vb : (I)m);
}

SINKREP_VEC f32x16 max_nan16(const f32x16& acc, const f32x16& v) {
  return max_nan_lanes<f32x16, i32x16>(acc, v);
}

// Fixed-order folds of 16 lanes: halves, quarters, then pairs, the order of
//   for (s = 8; s > 0; s >>= 1) for (j = 0; j < s; j++) acc[j] = op(acc[j], acc[j + s]);
// in vector registers.
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

SINKREP_VEC f32x8 half_lo(const f32x16& v) {
  return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
}
SINKREP_VEC f32x8 half_hi(const f32x16& v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}
SINKREP_VEC f32x4 quarter_lo(const f32x8& v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3); }
SINKREP_VEC f32x4 quarter_hi(const f32x8& v) { return __builtin_shufflevector(v, v, 4, 5, 6, 7); }

SINKREP_VEC float fold_sum16(const f32x16& v) {
  f32x8 a = half_lo(v) + half_hi(v);
  f32x4 b = quarter_lo(a) + quarter_hi(a);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// std::max over the lanes (a < b ? b : a at every step).
SINKREP_VEC float fold_max16(const f32x16& v) {
  f32x8 lo = half_lo(v), hi = half_hi(v);
  f32x8 a = lo < hi ? hi : lo;
  f32x4 qlo = quarter_lo(a), qhi = quarter_hi(a);
  f32x4 b = qlo < qhi ? qhi : qlo;
  return std::max(std::max(b[0], b[2]), std::max(b[1], b[3]));
}

inline float max_nan(float acc, float v) { return (v > acc || v != v) ? v : acc; }

// max_nan over the lanes.
SINKREP_VEC float fold_max_nan16(const f32x16& v) {
  f32x8 a = max_nan_lanes<f32x8, i32x8>(half_lo(v), half_hi(v));
  f32x4 b = max_nan_lanes<f32x4, i32x4>(quarter_lo(a), quarter_hi(a));
  return max_nan(max_nan(b[0], b[2]), max_nan(b[1], b[3]));
}

// exp_approx lane by lane, the same operations in the same order (floor as truncation
// corrected downwards, exact in the clamped range): the same bits as the scalar version.
SINKREP_VEC f32x16 exp16(const f32x16& in) {
  f32x16 x = in;
  f32x16 lo = splat(-87.3365478515625f), hi = splat(88.3762626647949f);
  x = x < lo ? lo : x;
  x = hi < x ? hi : x;
  f32x16 t = x * 1.44269504088896341f + 0.5f;
  f32x16 tr = __builtin_convertvector(__builtin_convertvector(t, i32x16), f32x16);
  f32x16 fn = tr + __builtin_convertvector(t < tr, f32x16);
  f32x16 y = exp_reduced(x, fn);
  i32x16 e = (__builtin_convertvector(fn, i32x16) + 127) << 23;
  return y * (f32x16)e;
}

// 1 / sqrt(mean(x^2) + eps) of one row of d: 16 partial sums in a fixed order, the tail,
// then a fixed pairwise fold (the same bits in every clone and thread).
SINKREP_VEC float row_rstd(const float* xr, int64_t d, float eps) {
  f32x16 av = {};
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    f32x16 v = load16(xr + i);
    av += v * v;
  }
  float tail = 0.0f;
  for (; i < d; i++) tail += xr[i] * xr[i];
  float ms = (fold_sum16(av) + tail) / static_cast<float>(d);
  return 1.0f / std::sqrt(ms + eps);
}

// ---- RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), over rows of d.
// Row r uses gain row (r % period) of w (period 1: one gain vector; period H: one per head).

SINKREP_CLONES
void rms_fwd(const float* x, const float* w, float* y, float* rstd, int64_t r0, int64_t r1,
             int64_t d, int64_t period, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    float rs = row_rstd(xr, d, eps);
    rstd[r] = rs;
    const float* wr = w + (r % period) * d;
    float* yr = y + r * d;
    for (int64_t k = 0; k < d; k++) yr[k] = (xr[k] * rs) * wr[k];
  }
}

// dx = rstd * (g w) - (rstd^3 / d) x sum(g w x); the gain's gradient g x rstd is summed
// per block of kRowBlock rows into dw_part (one row of period * d per block).
SINKREP_CLONES
void rms_bwd(const float* x, const float* w, const float* rstd, const float* g, float* dx,
             float* dw_part, int64_t b0, int64_t b1, int64_t rows, int64_t d, int64_t period) {
  for (int64_t b = b0; b < b1; b++) {
    float* part = dw_part ? dw_part + b * period * d : nullptr;
    if (part)
      for (int64_t k = 0; k < period * d; k++) part[k] = 0.0f;
    int64_t end = (b + 1) * kRowBlock < rows ? (b + 1) * kRowBlock : rows;
    for (int64_t r = b * kRowBlock; r < end; r++) {
      const float* xr = x + r * d;
      const float* gr = g + r * d;
      const float* wr = w + (r % period) * d;
      f32x16 av = {};
      int64_t i = 0;
      for (; i + 16 <= d; i += 16) av += (load16(gr + i) * load16(wr + i)) * load16(xr + i);
      float tail = 0.0f;
      for (; i < d; i++) tail += (gr[i] * wr[i]) * xr[i];
      float rs = rstd[r];
      float c = ((rs * rs) * rs) * (fold_sum16(av) + tail) / static_cast<float>(d);
      float* dxr = dx + r * d;
      for (int64_t k = 0; k < d; k++) dxr[k] = rs * (gr[k] * wr[k]) - c * xr[k];
      if (part) {
        float* pr = part + (r % period) * d;
        for (int64_t k = 0; k < d; k++) pr[k] += gr[k] * (xr[k] * rs);
      }
    }
  }
}

class RmsNormFn : public Function<RmsNormFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w, double eps) {
    int64_t d = x.size(-1);
    int64_t rows = x.numel() / d;
    int64_t period = w.numel() / d;
    auto y = at::empty_like(x);
    auto rstd = at::empty({rows}, x.options());
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* rp = rstd.data_ptr<float>();
    float e = static_cast<float>(eps);
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / d), [&](int64_t r0, int64_t r1) {
      FlushDenormals ftz;
      rms_fwd(xp, wp, yp, rp, r0, r1, d, period, e);
    });
    ctx->save_for_backward({x, w, rstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& w = saved[1];
    const Tensor& rstd = saved[2];
    Tensor g = grads[0].contiguous();
    int64_t d = x.size(-1);
    int64_t rows = x.numel() / d;
    int64_t period = w.numel() / d;
    int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
    bool want_w = ctx->needs_input_grad(1);
    auto dx = at::empty_like(x);
    Tensor part = want_w ? at::empty({blocks, period * d}, x.options()) : Tensor();
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* rp = rstd.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    float* pp = want_w ? part.data_ptr<float>() : nullptr;
    at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
      FlushDenormals ftz;
      rms_bwd(xp, wp, rp, gp, dxp, pp, b0, b1, rows, d, period);
    });
    Tensor dw;
    if (want_w) {
      // Blocks summed in block order, one output element at a time.
      dw = at::empty({period * d}, x.options());
      float* dwp = dw.data_ptr<float>();
      int64_t n = period * d;
      at::parallel_for(0, n, 256, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; k++) {
          float s = 0.0f;
          for (int64_t b = 0; b < blocks; b++) s += pp[b * n + k];
          dwp[k] = s;
        }
      });
      dw = dw.view(w.sizes());
    }
    return {dx, dw, Tensor()};
  }
};

// ---- SwiGLU: h = silu(a) * u.

SINKREP_CLONES
void swiglu_fwd(const float* a, const float* u, float* h, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i++) {
    float s = sigmoid(a[i]);
    h[i] = (a[i] * s) * u[i];
  }
}

// da = dh u silu'(a), silu'(a) = s (1 + a (1 - s)); du = dh silu(a).
SINKREP_CLONES
void swiglu_bwd(const float* a, const float* u, const float* dh, float* da, float* du,
                int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i++) {
    float s = sigmoid(a[i]);
    du[i] = dh[i] * (a[i] * s);
    da[i] = (dh[i] * u[i]) * (s * (1.0f + a[i] * (1.0f - s)));
  }
}

class SwigluFn : public Function<SwigluFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& u) {
    auto h = at::empty_like(a);
    const float* ap = a.data_ptr<float>();
    const float* up = u.data_ptr<float>();
    float* hp = h.data_ptr<float>();
    at::parallel_for(0, a.numel(), kGrain, [&](int64_t i0, int64_t i1) {
      FlushDenormals ftz;
      swiglu_fwd(ap, up, hp, i0, i1);
    });
    ctx->save_for_backward({a, u});
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor& a = saved[0];
    const Tensor& u = saved[1];
    Tensor dh = grads[0].contiguous();
    auto da = at::empty_like(a);
    auto du = at::empty_like(u);
    const float* ap = a.data_ptr<float>();
    const float* up = u.data_ptr<float>();
    const float* gp = dh.data_ptr<float>();
    float* dap = da.data_ptr<float>();
    float* dup = du.data_ptr<float>();
    at::parallel_for(0, a.numel(), kGrain, [&](int64_t i0, int64_t i1) {
      FlushDenormals ftz;
      swiglu_bwd(ap, up, gp, dap, dup, i0, i1);
    });
    return {da, du};
  }
};

// ---- RoPE, half-split pairs (i, i + dh/2), on (B, T, H, Dh) rows: row r is at position
// (r / H) % T. o0 = x0 c - x1 s, o1 = x0 s + x1 c; backward rotates the other way.

SINKREP_CLONES
void rope_rows(const float* x, const float* cs, const float* sn, float* o, int64_t r0,
               int64_t r1, int64_t t, int64_t h, int64_t dh, int64_t table_stride, bool inverse) {
  int64_t half = dh / 2;
  for (int64_t r = r0; r < r1; r++) {
    int64_t pos = (r / h) % t;
    const float* c = cs + pos * table_stride;
    const float* s = sn + pos * table_stride;
    const float* xr = x + r * dh;
    float* orow = o + r * dh;
    if (!inverse) {
      for (int64_t i = 0; i < half; i++) {
        orow[i] = xr[i] * c[i] - xr[i + half] * s[i];
        orow[i + half] = xr[i] * s[i] + xr[i + half] * c[i];
      }
    } else {
      for (int64_t i = 0; i < half; i++) {
        orow[i] = xr[i] * c[i] + xr[i + half] * s[i];
        orow[i + half] = xr[i + half] * c[i] - xr[i] * s[i];
      }
    }
  }
}

Tensor rope_apply(const Tensor& x, const Tensor& cs, const Tensor& sn, bool inverse) {
  int64_t t = x.size(1), h = x.size(2), dh = x.size(3);
  int64_t rows = x.numel() / dh;
  auto o = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* cp = cs.data_ptr<float>();
  const float* sp = sn.data_ptr<float>();
  float* op = o.data_ptr<float>();
  int64_t stride = cs.size(1);
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / dh), [&](int64_t r0, int64_t r1) {
    FlushDenormals ftz;
    rope_rows(xp, cp, sp, op, r0, r1, t, h, dh, stride, inverse);
  });
  return o;
}

class RopeFn : public Function<RopeFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& cs, const Tensor& sn) {
    ctx->save_for_backward({cs, sn});
    return rope_apply(x, cs, sn, false);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    return {rope_apply(grads[0].contiguous(), saved[0], saved[1], true), Tensor(), Tensor()};
  }
};

// ---- Inference (no autograd): the same three kernels for f32 or bf16 tensors, with the
// output in the kind the next operation takes, so a bf16 forward does not cast around
// every linear layer. Arithmetic is in f32 whatever the storage kind; bf16 values are
// widened exactly and results rounded to nearest-even, as libtorch's casts do.

inline float bf16_to_f32(uint16_t b) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(b) << 16);
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = __builtin_bit_cast(uint32_t, f);
  uint16_t r = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  return f != f ? static_cast<uint16_t>(0x7FC0) : r;
}

// bf16 of f32 bits, rounded to nearest even, NaN to the quiet NaN 0x7FC0: the same values as
// f32_to_bf16, written with integer operations only so split loops vectorise.
inline uint32_t bf16_bits(uint32_t u) {
  uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r;
}

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) { return bf16_to_f32(p[i]); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(uint16_t* p, int64_t i, float v) { p[i] = f32_to_bf16(v); }

// One row of d normalised: (x * rstd) * w into yf (f32) and/or yb (bf16); either may be
// null. Inlined into each caller's clone, so it vectorises at that clone's width.
SINKREP_VEC void norm_row(const float* xr, float rs, const float* wr, float* yf, uint16_t* yb,
                          int64_t d) {
  if (yf)
    for (int64_t k = 0; k < d; k++) yf[k] = (xr[k] * rs) * wr[k];
  if (yb)
    for (int64_t k = 0; k < d; k++) yb[k] = f32_to_bf16((xr[k] * rs) * wr[k]);
}

// Rows [r0, r1) of RMSNorm into yf (f32) and/or yb (bf16): the forward of rms_fwd, same
// summation order, no saved statistics.
SINKREP_CLONES
void rms_infer(const float* x, const float* w, float* yf, uint16_t* yb, int64_t r0, int64_t r1,
               int64_t d, int64_t period, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    norm_row(xr, row_rstd(xr, d, eps), w + (r % period) * d, yf ? yf + r * d : nullptr,
             yb ? yb + r * d : nullptr, d);
  }
}

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16_to_f32(v); }

// One row of a residual add: s = x + a, a f32 or bf16 (widened exactly).
template <typename A>
SINKREP_VEC void add_row(const float* xr, const A* ar, float* sr, int64_t d) {
  for (int64_t k = 0; k < d; k++) sr[k] = xr[k] + widen(ar[k]);
}

// One row of d normalised, (x * rstd) * w, as split-bf16 parts: yh = bf16(y) and
// yl = bf16(y - yh), 0 where yh is not finite.
SINKREP_VEC void split_row(const float* xr, float rs, const float* wr, uint16_t* oh,
                           uint16_t* ol, int64_t d) {
  for (int64_t k = 0; k < d; k++) {
    float v = (xr[k] * rs) * wr[k];
    uint32_t h = bf16_bits(__builtin_bit_cast(uint32_t, v));
    uint32_t l = bf16_bits(__builtin_bit_cast(uint32_t, v - __builtin_bit_cast(float, h << 16)));
    oh[k] = static_cast<uint16_t>(h);
    ol[k] = static_cast<uint16_t>((h & 0x7F80u) == 0x7F80u ? 0u : l);
  }
}

// Rows [r0, r1) of a residual add and the RMSNorm of its result: s = x + a (a f32, or bf16
// widened exactly), then y = RMSNorm(s) into yf and/or yb as rms_infer computes it from s.
// The same bits as the add followed by rms_infer, one pass over the stream instead of two.
template <typename A>
SINKREP_CLONES void add_rms_infer(const float* x, const A* a, const float* w, float* s, float* yf,
                                  uint16_t* yb, int64_t r0, int64_t r1, int64_t d, int64_t period,
                                  float eps) {
  for (int64_t r = r0; r < r1; r++) {
    float* sr = s + r * d;
    add_row(x + r * d, a + r * d, sr, d);
    norm_row(sr, row_rstd(sr, d, eps), w + (r % period) * d, yf ? yf + r * d : nullptr,
             yb ? yb + r * d : nullptr, d);
  }
}

// Rows [r0, r1) of RMSNorm as split-bf16 parts: yh = bf16(y) (the values rms_infer writes
// to yb) and yl = bf16(y - yh), 0 where yh is not finite; y computed as in rms_infer.
SINKREP_CLONES
void rms_infer_split(const float* x, const float* w, uint16_t* yh, uint16_t* yl, int64_t r0,
                     int64_t r1, int64_t d, int64_t period, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    split_row(xr, row_rstd(xr, d, eps), w + (r % period) * d, yh + r * d, yl + r * d, d);
  }
}

// rms_infer_split of s = x + a, as add_rms_infer: s into s, the parts into yh and yl.
template <typename A>
SINKREP_CLONES void add_rms_infer_split(const float* x, const A* a, const float* w, float* s,
                                        uint16_t* yh, uint16_t* yl, int64_t r0, int64_t r1,
                                        int64_t d, int64_t period, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    float* sr = s + r * d;
    add_row(x + r * d, a + r * d, sr, d);
    split_row(sr, row_rstd(sr, d, eps), w + (r % period) * d, yh + r * d, yl + r * d, d);
  }
}

// Elements per stack block of the inference SwiGLU: each block is computed into f32, then
// written out, so every loop is branch-free and vectorises.
constexpr int64_t kBlock = 512;

inline void emit(const float* v, int64_t n, float* hf, uint16_t* hb) {
  if (hf)
    for (int64_t i = 0; i < n; i++) hf[i] = v[i];
  if (hb)
    for (int64_t i = 0; i < n; i++) hb[i] = f32_to_bf16(v[i]);
}

SINKREP_CLONES
void swiglu_infer_f32(const float* a, const float* u, float* hf, uint16_t* hb, int64_t i0,
                      int64_t i1) {
  float v[kBlock];
  for (int64_t c = i0; c < i1; c += kBlock) {
    int64_t n = std::min(kBlock, i1 - c);
    for (int64_t i = 0; i < n; i++) {
      float av = a[c + i];
      v[i] = (av * sigmoid(av)) * u[c + i];
    }
    emit(v, n, hf ? hf + c : nullptr, hb ? hb + c : nullptr);
  }
}

SINKREP_CLONES
void swiglu_infer_bf16(const uint16_t* a, const uint16_t* u, float* hf, uint16_t* hb,
                       int64_t i0, int64_t i1) {
  float v[kBlock];
  for (int64_t c = i0; c < i1; c += kBlock) {
    int64_t n = std::min(kBlock, i1 - c);
    for (int64_t i = 0; i < n; i++) {
      float av = bf16_to_f32(a[c + i]);
      v[i] = (av * sigmoid(av)) * bf16_to_f32(u[c + i]);
    }
    emit(v, n, hf ? hf + c : nullptr, hb ? hb + c : nullptr);
  }
}

// A residual add of a bf16 branch output to the f32 stream: x + widen(a), the f32 add
// libtorch's type-promoting add does (widening is exact), in one pass.
SINKREP_CLONES
void add_widen(const float* x, const uint16_t* a, float* o, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; i++) o[i] = x[i] + bf16_to_f32(a[i]);
}

// RoPE from (B, T, H, Dh) rows to a (B, H, T, Dh) contiguous output, the layout attention
// takes (the training kernel keeps the input layout). Pairs: channels (i, i + Dh/2)
// (half-split, HF's layout) or (2i, 2i + 1) (adjacent, llama.cpp's layout for GGUF
// llama models), rotated by the same products and sums as the composite ops.
template <typename In, typename Out>
SINKREP_CLONES void rope_infer(const In* x, const float* cs, const float* sn, Out* o, int64_t r0,
                               int64_t r1, int64_t t, int64_t h, int64_t dh,
                               int64_t table_stride, bool adjacent) {
  int64_t half = dh / 2;
  for (int64_t r = r0; r < r1; r++) {
    int64_t head = r % h;
    int64_t pos = (r / h) % t;
    int64_t batch = r / (h * t);
    const float* c = cs + pos * table_stride;
    const float* s = sn + pos * table_stride;
    const In* xr = x + r * dh;
    Out* orow = o + ((batch * h + head) * t + pos) * dh;
    if (adjacent) {
      for (int64_t i = 0; i < half; i++) {
        float x0 = load(xr, 2 * i), x1 = load(xr, 2 * i + 1);
        store(orow, 2 * i, x0 * c[i] - x1 * s[i]);
        store(orow, 2 * i + 1, x0 * s[i] + x1 * c[i]);
      }
      continue;
    }
    for (int64_t i = 0; i < half; i++) {
      float x0 = load(xr, i), x1 = load(xr, i + half);
      store(orow, i, x0 * c[i] - x1 * s[i]);
      store(orow, i + half, x0 * s[i] + x1 * c[i]);
    }
  }
}

bool is_bf16(const Tensor& t) { return t.scalar_type() == at::kBFloat16; }

uint16_t* bf16_ptr(const Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
}

void check_infer(const Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), what, ": a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16, what,
              ": f32 or bf16");
}

// ---- Probe reductions (f32, no autograd): what an analysis keeps of each activation, in
// one or two passes over it instead of libtorch's chain of abs copies, subtractions and
// separate reductions. Each output element is reduced in a fixed order (batch index, or
// fixed partial sums along a row), so results are bit-identical for any thread count.

// Over the batch (B) of x (B, R): mean (f32, the sum over b divided by B), then the sums
// of d = x - mean and of d^2 (the corrected two-pass moments), for columns [c0, c1).
SINKREP_CLONES
void batch_moments(const float* x, float* mean, float* dsum, float* d2, int64_t nb, int64_t n,
                   int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; c++) mean[c] = 0.0f;
  for (int64_t b = 0; b < nb; b++) {
    const float* xb = x + b * n;
    for (int64_t c = c0; c < c1; c++) mean[c] += xb[c];
  }
  float count = static_cast<float>(nb);
  for (int64_t c = c0; c < c1; c++) {
    mean[c] = mean[c] / count;
    dsum[c] = 0.0f;
    d2[c] = 0.0f;
  }
  for (int64_t b = 0; b < nb; b++) {
    const float* xb = x + b * n;
    for (int64_t c = c0; c < c1; c++) {
      float d = xb[c] - mean[c];
      dsum[c] += d;
      d2[c] += d * d;
    }
  }
}

// Rows [r0, r1) of x (rows, D): the L2 norm (sum of squares in 16 fixed partial sums) and
// max |x| of each row; a NaN anywhere in a row makes both NaN (the sum of squares carries
// it, and the max follows the sum).
SINKREP_CLONES
void row_norm_maxabs(const float* x, float* norm, float* maxabs, int64_t r0, int64_t r1,
                     int64_t d) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    f32x16 av = {}, mv = {};
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
      f32x16 v = load16(xr + i);
      av += v * v;
      mv = max16(mv, abs16(v));
    }
    float tail = 0.0f, mt = 0.0f;
    for (; i < d; i++) {
      tail += xr[i] * xr[i];
      mt = std::max(mt, std::fabs(xr[i]));
    }
    float ss = fold_sum16(av) + tail;
    norm[r] = std::sqrt(ss);
    maxabs[r] = ss != ss ? ss : std::max(fold_max16(mv), mt);
  }
}

// Rows [r0, r1) of causal attention scores s (B, H, T, T) (query position r % T): o =
// softmax over keys j <= i of scale * s, zero beyond i. The max and the sum run over 16
// fixed partial lanes, folded in a fixed order (fold_*16), then the sum adds the tail (the
// last n % 16 keys) in order; exp is exp_approx. A NaN score makes its row NaN.
// The tail goes through one vector: read in place when 16 floats fit in the row (its
// lanes past the key count are masked to -inf, and written over by the zeros at the end),
// else through a padded copy.
SINKREP_CLONES
void causal_softmax_rows(const float* s, float* o, int64_t r0, int64_t r1, int64_t t,
                         float scale) {
  for (int64_t r = r0; r < r1; r++) {
    int64_t n = r % t + 1;
    const float* sr = s + r * t;
    float* orow = o + r * t;
    f32x16 mv = splat(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      f32x16 v = load16(sr + i) * scale;
      store16(orow + i, v);
      mv = max_nan16(mv, v);
    }
    int64_t nt = n - i;  // 0 to 15
    bool in_place = i + 16 <= t;
    float buf[16];
    if (nt > 0) {
      f32x16 raw;
      if (in_place) {
        raw = load16(sr + i);
      } else {
        for (int j = 0; j < 16; j++) buf[j] = j < nt ? sr[i + j] : 0.0f;
        raw = load16(buf);
      }
      i32x16 live = lane_index() < static_cast<int32_t>(nt);
      f32x16 v = (f32x16)(live ? (i32x16)(raw * scale) : (i32x16)splat(-INFINITY));
      if (in_place)
        store16(orow + i, v);
      else
        store16(buf, v);
      // The max is exact in any order (a NaN wins either way): -inf lanes change nothing.
      mv = max_nan16(mv, v);
    }
    float m = fold_max_nan16(mv);
    f32x16 av = {};
    for (i = 0; i + 16 <= n; i += 16) {
      f32x16 e = exp16(load16(orow + i) - m);
      store16(orow + i, e);
      av += e;
    }
    // The tail's exps in one vector (exp16 gives exp_approx's bits lane by lane), summed
    // in key order after the 16 lanes.
    float tail = 0.0f;
    if (nt > 0) {
      f32x16 e = exp16((in_place ? load16(orow + i) : load16(buf)) - m);
      store16(buf, e);
      if (in_place) store16(orow + i, e);
      for (int64_t j = 0; j < nt; j++) tail += buf[j];
      if (!in_place)
        for (int64_t j = 0; j < nt; j++) orow[i + j] = buf[j];
    }
    float inv = 1.0f / (fold_sum16(av) + tail);
    for (int64_t k = 0; k < n; k++) orow[k] = orow[k] * inv;
    for (int64_t k = n; k < t; k++) orow[k] = 0.0f;
  }
}

// Channels [c0, c1) of x (B, T, F): max |x| over every (b, t) with t != skip.
SINKREP_CLONES
void channel_maxabs(const float* x, float* out, int64_t nb, int64_t t, int64_t f, int64_t skip,
                    int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; c++) out[c] = 0.0f;
  for (int64_t b = 0; b < nb; b++)
    for (int64_t p = 0; p < t; p++) {
      if (p == skip) continue;
      const float* xr = x + (b * t + p) * f;
      for (int64_t c = c0; c < c1; c++) out[c] = max_nan(out[c], std::fabs(xr[c]));
    }
}

// ---- Causal self-attention for training: z = softmax(scale q k^T, keys j <= i) v per
// (batch, head), for the small head dims and short sequences of the subjects trained here.
// libtorch's CPU flash attention runs each (32-query x T-key) block through sgemm, whose
// call overhead dominates at head dims of 16 to 64 (measured alone on an AMD EPYC, one
// thread: 1.47 ms per layer for claim 4's cpu subject, fwd + bwd, against 0.94 here; in the
// step's profile attention was about 10% of the subject's step and 20% of the small
// model's). Here one head at a time is a few passes over rows of T keys or Dh channels,
// only over the causal triangle. The forward keeps the probabilities (B, H, T, T) for the
// backward, so nothing is recomputed.
//
// Determinism: a head is computed by one thread, every sum in a fixed order (over channels
// d for scores, over keys j for outputs and gradients): the bits do not depend on the
// thread count. The softmax is written out in attn_head_fwd with exp16 (exp_approx's
// bits), like causal_softmax_rows but over rows padded to 16 keys.
//
// Layouts: q, k, v are (B, H, T, Dh) with any batch, head and time strides and unit
// channel stride; z and the gradients are written (B, T, H, Dh) contiguous, the layout the
// output projection reads.
struct HeadPtr {
  const float* p;
  int64_t st;  // stride between positions
};

HeadPtr head_of(const Tensor& x, int64_t bh, int64_t h) {
  return {x.data_ptr<float>() + (bh / h) * x.stride(0) + (bh % h) * x.stride(1), x.stride(2)};
}

constexpr int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

// Lanes of key block jv (keys 16 jv ...) that are keys j < n.
SINKREP_VEC i32x16 keys_below(int64_t jv, int64_t n) {
  return lane_index() + static_cast<int32_t>(16 * jv) < static_cast<int32_t>(n);
}

// x^T of one head's rows: out (Dh, tp), zero past T.
SINKREP_VEC void transpose_rows(HeadPtr x, float* out, int64_t t, int64_t dh, int64_t tp) {
  for (int64_t d = 0; d < dh; d++) {
    float* row = out + d * tp;
    for (int64_t j = 0; j < t; j++) row[j] = x.p[j * x.st + d];
    for (int64_t j = t; j < tp; j++) row[j] = 0.0f;
  }
}

// One head's rows for 16-lane loads: x itself when Dh fills the vectors (dp), else a copy
// zero-padded to dp channels in scratch (T, dp).
SINKREP_VEC HeadPtr vector_rows(HeadPtr x, float* scratch, int64_t t, int64_t dh, int64_t dp) {
  if (dh == dp) return x;
  for (int64_t j = 0; j < t; j++) {
    float* row = scratch + j * dp;
    for (int64_t d = 0; d < dh; d++) row[d] = x.p[j * x.st + d];
    for (int64_t d = dh; d < dp; d++) row[d] = 0.0f;
  }
  return {scratch, dp};
}

// Query rows per block: the block's rows share every load of k, v (and of the gradients'
// operands), and their sums are independent chains, so the adds overlap.
constexpr int64_t kAttnRows = 4;

// Dot products of kAttnRows rows (Dh channels each) with the 16 columns jv of xt (Dh, tp):
// acc[r] lane l = sum over d in order of rows[r][d] xt[d][16 jv + l].
SINKREP_VEC void block_dots(const float* const* rows, const float* xt, int64_t tp, int64_t jv,
                            int64_t dh, f32x16* acc) {
  for (int64_t r = 0; r < kAttnRows; r++) acc[r] = f32x16{};
  for (int64_t d = 0; d < dh; d++) {
    const f32x16 x = load16(xt + d * tp + 16 * jv);
    for (int64_t r = 0; r < kAttnRows; r++) acc[r] += x * rows[r][d];
  }
}

// One head's forward, Dh <= 16 NV. p: (T, round16(T)) probabilities; in each block of
// kAttnRows query rows, a row holds keys 0..i then zeros up to the block's last key vector.
// o: rows of stride so. Scratch kt (Dh, round16(T)) = k^T and vp (T, 16 NV) = v, both
// zero-padded (vp only where Dh is not a multiple of 16). Scores sum over channels in
// order, 16 keys per vector; the softmax's max and sum run over a row's key vectors in
// order and fold in a fixed order (fold_*16); each output row sums its keys j = 0..i in
// order. exp is exp16 (exp_approx's bits).
template <int NV>
SINKREP_CLONES void attn_head_fwd(HeadPtr q, HeadPtr k, HeadPtr v, float* p, float* o, int64_t so,
                                  float* kt, float* vp, int64_t t, int64_t dh, float scale) {
  constexpr int64_t R = kAttnRows;
  const int64_t tp = round16(t), dp = 16 * NV;
  transpose_rows(k, kt, t, dh, tp);
  const HeadPtr vr = vector_rows(v, vp, t, dh, dp);
  const f32x16 zero = {}, neg_inf = splat(-INFINITY);
  for (int64_t i0 = 0; i0 < t; i0 += R) {
    const int64_t rb = std::min(R, t - i0), nj = (i0 + rb + 15) / 16;
    // Rows past the end of a short last block repeat its last row; their results are dropped.
    const float* qr[R];
    float* pr[R];
    for (int64_t r = 0; r < R; r++) {
      int64_t i = i0 + std::min(r, rb - 1);
      qr[r] = q.p + i * q.st;
      pr[r] = p + i * tp;
    }
    for (int64_t jv = 0; jv < nj; jv++) {
      f32x16 acc[R];
      block_dots(qr, kt, tp, jv, dh, acc);
      for (int64_t r = 0; r < rb; r++) {
        i32x16 live = keys_below(jv, i0 + r + 1);
        store16(pr[r] + 16 * jv, (f32x16)(live ? (i32x16)(acc[r] * scale) : (i32x16)neg_inf));
      }
    }
    for (int64_t r = 0; r < rb; r++) {
      float* pi = pr[r];
      const int64_t n = i0 + r + 1;
      f32x16 mv = neg_inf;
      for (int64_t jv = 0; jv < nj; jv++) mv = max_nan16(mv, load16(pi + 16 * jv));
      const float m = fold_max_nan16(mv);
      f32x16 sum = zero;
      for (int64_t jv = 0; jv < nj; jv++) {
        f32x16 e = exp16(load16(pi + 16 * jv) - m);
        e = (f32x16)(keys_below(jv, n) ? (i32x16)e : (i32x16)zero);
        store16(pi + 16 * jv, e);
        sum += e;
      }
      const float inv = 1.0f / fold_sum16(sum);
      for (int64_t jv = 0; jv < nj; jv++) store16(pi + 16 * jv, load16(pi + 16 * jv) * inv);
    }
    f32x16 acc[R][NV];
    for (int64_t r = 0; r < R; r++)
      for (int c = 0; c < NV; c++) acc[r][c] = zero;
    // Keys every row of the block sees, then the block's own keys, each row in key order.
    for (int64_t j = 0; j <= i0; j++)
      for (int c = 0; c < NV; c++) {
        const f32x16 vv = load16(vr.p + j * vr.st + 16 * c);
        for (int64_t r = 0; r < R; r++) acc[r][c] += vv * pr[r][j];
      }
    for (int64_t j = i0 + 1; j < i0 + rb; j++)
      for (int c = 0; c < NV; c++) {
        const f32x16 vv = load16(vr.p + j * vr.st + 16 * c);
        for (int64_t r = j - i0; r < rb; r++) acc[r][c] += vv * pr[r][j];
      }
    for (int64_t r = 0; r < rb; r++) {
      float buf[16 * NV];
      for (int c = 0; c < NV; c++) store16(buf + 16 * c, acc[r][c]);
      std::memcpy(o + (i0 + r) * so, buf, dh * sizeof(float));
    }
  }
}

// One head's gradients, Dh <= 16 NV: g the output's gradient, o the output (rows of stride
// so), p the forward's probabilities; dq, dk, dv rows of stride so.
// ds_ij = scale p_ij (g_i . v_j - g_i . o_i); dq_i = sum_j ds_ij k_j; dk_j = sum_i ds_ij q_i;
// dv_j = sum_i p_ij g_i, every sum in order (channels; keys j; queries i).
// Scratch: vt (Dh, round16(T)) = v^T, kp (T, 16 NV) = k zero-padded (where Dh is not a
// multiple of 16), dkp, dvp (T, 16 NV), ds (kAttnRows, round16(T)).
template <int NV>
SINKREP_CLONES void attn_head_bwd(HeadPtr q, HeadPtr k, HeadPtr v, HeadPtr g, const float* o,
                                  const float* p, float* dq, float* dk, float* dv, int64_t so,
                                  float* vt, float* kp, float* dkp, float* dvp, float* ds,
                                  int64_t t, int64_t dh, float scale) {
  constexpr int64_t R = kAttnRows;
  const int64_t tp = round16(t), dp = 16 * NV;
  transpose_rows(v, vt, t, dh, tp);
  const HeadPtr kr = vector_rows(k, kp, t, dh, dp);
  std::memset(dkp, 0, t * dp * sizeof(float));
  std::memset(dvp, 0, t * dp * sizeof(float));
  const f32x16 zero = {};
  for (int64_t i0 = 0; i0 < t; i0 += R) {
    const int64_t rb = std::min(R, t - i0), nj = (i0 + rb + 15) / 16;
    const float* gr[R];
    const float* pr[R];
    // Rows past a short last block: zero operands (they add +0 to dk and dv).
    float qb[R][16 * NV] = {}, gb[R][16 * NV] = {}, w[R] = {}, pw[R] = {};
    float di[R] = {};
    for (int64_t r = 0; r < R; r++) {
      int64_t i = i0 + std::min(r, rb - 1);
      gr[r] = g.p + i * g.st;
      pr[r] = p + i * tp;
    }
    for (int64_t r = 0; r < rb; r++) {
      const float* oi = o + (i0 + r) * so;
      for (int64_t d = 0; d < dh; d++) di[r] += gr[r][d] * oi[d];
      std::memcpy(qb[r], q.p + (i0 + r) * q.st, dh * sizeof(float));
      std::memcpy(gb[r], gr[r], dh * sizeof(float));
    }
    for (int64_t jv = 0; jv < nj; jv++) {
      f32x16 acc[R];
      block_dots(gr, vt, tp, jv, dh, acc);
      // Keys past a row's own have p = 0 there, so ds = 0.
      for (int64_t r = 0; r < rb; r++)
        store16(ds + r * tp + 16 * jv, (load16(pr[r] + 16 * jv) * (acc[r] - di[r])) * scale);
    }
    f32x16 qv[R][NV], gv[R][NV], a[R][NV];
    for (int64_t r = 0; r < R; r++)
      for (int c = 0; c < NV; c++) {
        qv[r][c] = load16(qb[r] + 16 * c);
        gv[r][c] = load16(gb[r] + 16 * c);
        a[r][c] = zero;
      }
    // Keys every row of the block sees: rows in order into dk_j and dv_j.
    for (int64_t j = 0; j <= i0; j++) {
      for (int64_t r = 0; r < rb; r++) {
        w[r] = ds[r * tp + j];
        pw[r] = pr[r][j];
      }
      float* dkj = dkp + j * dp;
      float* dvj = dvp + j * dp;
      for (int c = 0; c < NV; c++) {
        const f32x16 kk = load16(kr.p + j * kr.st + 16 * c);
        f32x16 dkv = load16(dkj + 16 * c), dvv = load16(dvj + 16 * c);
        for (int64_t r = 0; r < R; r++) {
          a[r][c] += kk * w[r];
          dkv += qv[r][c] * w[r];
          dvv += gv[r][c] * pw[r];
        }
        store16(dkj + 16 * c, dkv);
        store16(dvj + 16 * c, dvv);
      }
    }
    // The block's own keys: key j is seen by rows i0 + r >= j.
    for (int64_t j = i0 + 1; j < i0 + rb; j++) {
      float* dkj = dkp + j * dp;
      float* dvj = dvp + j * dp;
      for (int c = 0; c < NV; c++) {
        const f32x16 kk = load16(kr.p + j * kr.st + 16 * c);
        f32x16 dkv = load16(dkj + 16 * c), dvv = load16(dvj + 16 * c);
        for (int64_t r = j - i0; r < rb; r++) {
          const float wr = ds[r * tp + j], pwr = pr[r][j];
          a[r][c] += kk * wr;
          dkv += qv[r][c] * wr;
          dvv += gv[r][c] * pwr;
        }
        store16(dkj + 16 * c, dkv);
        store16(dvj + 16 * c, dvv);
      }
    }
    for (int64_t r = 0; r < rb; r++) {
      float buf[16 * NV];
      for (int c = 0; c < NV; c++) store16(buf + 16 * c, a[r][c]);
      std::memcpy(dq + (i0 + r) * so, buf, dh * sizeof(float));
    }
  }
  for (int64_t j = 0; j < t; j++) {
    std::memcpy(dk + j * so, dkp + j * dp, dh * sizeof(float));
    std::memcpy(dv + j * so, dvp + j * dp, dh * sizeof(float));
  }
}

// Calls body.template operator()<NV>() for NV = ceil(dh / 16) in 1..8.
template <typename Body>
void with_head_vectors(int64_t dh, Body&& body) {
  switch ((dh + 15) / 16) {
    case 1: return body(std::integral_constant<int, 1>{});
    case 2: return body(std::integral_constant<int, 2>{});
    case 3: return body(std::integral_constant<int, 3>{});
    case 4: return body(std::integral_constant<int, 4>{});
    case 5: return body(std::integral_constant<int, 5>{});
    case 6: return body(std::integral_constant<int, 6>{});
    case 7: return body(std::integral_constant<int, 7>{});
    case 8: return body(std::integral_constant<int, 8>{});
    default: TORCH_CHECK(false, "attention: head dim ", dh, " is over 128");
  }
}

Tensor unit_channel_stride(const Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); }

class CausalAttnFn : public Function<CausalAttnFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in,
                        const Tensor& v_in, double scale_d, bool keep) {
    TORCH_CHECK(q_in.dim() == 4 && q_in.sizes() == k_in.sizes() && q_in.sizes() == v_in.sizes(),
                "attention: q, k, v of one shape (B, H, T, Dh)");
    Tensor q = unit_channel_stride(q_in), k = unit_channel_stride(k_in),
           v = unit_channel_stride(v_in);
    int64_t b = q.size(0), h = q.size(1), t = q.size(2), dh = q.size(3);
    float scale = static_cast<float>(scale_d);
    TORCH_CHECK(dh >= 1 && dh <= 128 && t >= 1, "attention: head dim 1..128, T >= 1");
    const int64_t tp = round16(t), dp = 16 * ((dh + 15) / 16);
    Tensor o = at::empty({b, t, h, dh}, q.options());
    // The probabilities of every head when the backward needs them, else one per thread.
    Tensor p = keep ? at::empty({b, h, t, tp}, q.options()) : Tensor();
    float* op = o.data_ptr<float>();
    at::parallel_for(0, b * h, 1, [&](int64_t h0, int64_t h1) {
      FlushDenormals ftz;
      std::vector<float> kt(dh * tp), vp(t * dp), own(keep ? 0 : t * tp);
      for (int64_t bh = h0; bh < h1; bh++) {
        float* pp = keep ? p.data_ptr<float>() + bh * t * tp : own.data();
        float* out = op + ((bh / h) * t * h + bh % h) * dh;
        with_head_vectors(dh, [&](auto nv) {
          attn_head_fwd<decltype(nv)::value>(head_of(q, bh, h), head_of(k, bh, h),
                                             head_of(v, bh, h), pp, out, h * dh, kt.data(),
                                             vp.data(), t, dh, scale);
        });
      }
    });
    if (keep) {
      ctx->save_for_backward({q, k, v, o, p});
      ctx->saved_data["scale"] = scale_d;
    }
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &o = saved[3], &p = saved[4];
    float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    int64_t b = q.size(0), h = q.size(1), t = q.size(2), dh = q.size(3);
    // The output's gradient as (B, H, T, Dh) strides over the (B, T, H, Dh) layout.
    Tensor g = grads[0].contiguous().transpose(1, 2);
    Tensor dq = at::empty({b, t, h, dh}, q.options());
    Tensor dk = at::empty({b, t, h, dh}, q.options());
    Tensor dv = at::empty({b, t, h, dh}, q.options());
    const int64_t tp = round16(t), dp = 16 * ((dh + 15) / 16);
    at::parallel_for(0, b * h, 1, [&](int64_t h0, int64_t h1) {
      FlushDenormals ftz;
      std::vector<float> vt(dh * tp), kp(t * dp), dkp(t * dp), dvp(t * dp), ds(kAttnRows * tp);
      for (int64_t bh = h0; bh < h1; bh++) {
        int64_t off = ((bh / h) * t * h + bh % h) * dh;
        with_head_vectors(dh, [&](auto nv) {
          attn_head_bwd<decltype(nv)::value>(
              head_of(q, bh, h), head_of(k, bh, h), head_of(v, bh, h), head_of(g, bh, h),
              o.data_ptr<float>() + off, p.data_ptr<float>() + bh * t * tp,
              dq.data_ptr<float>() + off, dk.data_ptr<float>() + off, dv.data_ptr<float>() + off,
              h * dh, vt.data(), kp.data(), dkp.data(), dvp.data(), ds.data(), t, dh, scale);
        });
      }
    });
    return {dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), Tensor(), Tensor()};
  }
};

void check_f32(const Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kFloat, what,
              ": a contiguous f32 CPU tensor");
}

// Split-bf16 products ("bf16x3"): x W^T for f32 x and W as xh Wh + (xh Wl + xl Wh), where
// xh = bf16(x), xl = bf16(x - xh) and likewise for W, each product bf16 x bf16 with f32
// accumulation on AMX (oneDNN's brgemm micro-kernel through ATen's cpublas). The dropped
// xl Wl and the rounding of the low parts leave ~2^-17 of each term: 4.3e-6 relative on a
// (3200 x 576) x (576 x 192) product, against 7.1e-7 for f32 sgemm and 3.7e-3 for plain
// bf16, at 3.5x the speed of f32 (Sapphire Rapids, one thread). Only where AMX is
// (`could_pack`); elsewhere the callers keep f32.
//
// Determinism: fixed blocks of kSplitRows rows of x and kSplitCols columns of W^T, each
// block's three products accumulated into its output in one order; threads take whole
// blocks, so the bits do not depend on the thread count.
constexpr int64_t kSplitRows = 128;
// oneDNN packs (VNNI layout) at most 64 columns of B at a time.
constexpr int64_t kSplitCols = 64;

// High and low bf16 parts of n f32 values: hi = bf16(v), lo = bf16(v - hi), lo = 0 where hi
// is not finite (so inf and NaN pass through the high product alone).
SINKREP_CLONES
void split_bf16(const float* v, uint16_t* hi, uint16_t* lo, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t h = bf16_bits(__builtin_bit_cast(uint32_t, v[i]));
    float rest = v[i] - __builtin_bit_cast(float, h << 16);
    uint32_t l = bf16_bits(__builtin_bit_cast(uint32_t, rest));
    hi[i] = static_cast<uint16_t>(h);
    lo[i] = static_cast<uint16_t>((h & 0x7F80u) == 0x7F80u ? 0u : l);
  }
}

const at::BFloat16* as_bf16(const uint16_t* p) { return reinterpret_cast<const at::BFloat16*>(p); }

// W (N, K) f32 -> (2, ceil(N / 64), K, 64) bf16: [0] the high and [1] the low parts of W^T,
// each block of 64 output columns (the last may be narrower) in oneDNN's packed layout.
at::Tensor split_pack(const at::Tensor& w) {
  int64_t n = w.size(0), k = w.size(1);
  int64_t nblk = (n + kSplitCols - 1) / kSplitCols;
  at::Tensor wt = w.t().contiguous();  // (K, N): B of x W^T
  at::Tensor hi = at::empty({k, n}, w.options().dtype(at::kBFloat16));
  at::Tensor lo = at::empty({k, n}, w.options().dtype(at::kBFloat16));
  split_bf16(wt.data_ptr<float>(), bf16_ptr(hi), bf16_ptr(lo), k * n);
  at::Tensor out = at::zeros({2, nblk, k, kSplitCols}, w.options().dtype(at::kBFloat16));
  for (int part = 0; part < 2; part++) {
    const uint16_t* src = bf16_ptr(part == 0 ? hi : lo);
    for (int64_t j = 0; j < nblk; j++) {
      int64_t nb = std::min(kSplitCols, n - j * kSplitCols);
      at::native::cpublas::pack(k, nb, n, nb, at::kBFloat16, at::kBFloat16,
                                src + j * kSplitCols, bf16_ptr(out[part][j]));
    }
  }
  return out;
}

// x W^T (M, N) f32 from x's split parts xh, xl (M, K) bf16 and the packed W (N, K) of
// split_pack.
at::Tensor split_mm(const at::Tensor& xh, const at::Tensor& xl, const at::Tensor& packed,
                    int64_t n) {
  int64_t m = xh.size(0), k = xh.size(1);
  int64_t nblk = packed.size(1);
  at::Tensor y = at::empty({m, n}, xh.options().dtype(at::kFloat));
  const uint16_t* ah = bf16_ptr(xh);
  const uint16_t* al = bf16_ptr(xl);
  float* yp = y.data_ptr<float>();
  const uint16_t* wh = bf16_ptr(packed[0]);
  const uint16_t* wl = bf16_ptr(packed[1]);
  int64_t blocks = (m + kSplitRows - 1) / kSplitRows;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      int64_t r0 = b * kSplitRows, mb = std::min(kSplitRows, m - r0);
      const at::BFloat16* h = as_bf16(ah + r0 * k);
      const at::BFloat16* l = as_bf16(al + r0 * k);
      for (int64_t j = 0; j < nblk; j++) {
        int64_t nb = std::min(kSplitCols, n - j * kSplitCols);
        const at::BFloat16* bh = as_bf16(wh + j * k * kSplitCols);
        const at::BFloat16* bl = as_bf16(wl + j * k * kSplitCols);
        float* c = yp + r0 * n + j * kSplitCols;
        // The two small terms first, then the large one.
        at::native::cpublas::brgemm(mb, nb, k, k, nb, n, false, h, bl, c, true);
        at::native::cpublas::brgemm(mb, nb, k, k, nb, n, true, l, bh, c, true);
        at::native::cpublas::brgemm(mb, nb, k, k, nb, n, true, h, bh, c, true);
      }
    }
    at::native::cpublas::brgemm_release(true);
  });
  return y;
}

// Checks an inference RMSNorm's f32 input and gain, then runs
// body(x, w, r0, r1, d, period, eps) over ranges of rows in parallel, denormals flushed.
template <typename Body>
void rms_infer_rows(const at::Tensor& x, const at::Tensor& w, double eps, Body body) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat,
              "RMSNorm: f32 input and gain");
  check_infer(x, "RMSNorm input");
  at::Tensor wc = w.contiguous();
  int64_t d = x.size(-1);
  int64_t rows = x.numel() / d;
  int64_t period = wc.numel() / d;
  const float* xp = x.data_ptr<float>();
  const float* wp = wc.data_ptr<float>();
  float e = static_cast<float>(eps);
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / d), [&](int64_t r0, int64_t r1) {
    FlushDenormals ftz;
    body(xp, wp, r0, r1, d, period, e);
  });
}

template <typename F>
int guarded(F f, at::Tensor** out, char* err, size_t errlen) {
  try {
    *out = new at::Tensor(f());
    return 0;
  } catch (const std::exception& e) {
    if (err && errlen) {
      std::strncpy(err, e.what(), errlen - 1);
      err[errlen - 1] = '\0';
    }
    *out = nullptr;
    return 1;
  }
}

}  // namespace

extern "C" {

// x: (..., D) f32 contiguous; w: (P, D) or (D) f32 contiguous, P dividing the row count
// pattern (row r uses gain row r % P).
int sinkrep_fused_rms_norm(const at::Tensor* x, const at::Tensor* w, double eps, at::Tensor** out,
                           char* err, size_t errlen) {
  return guarded([&] { return RmsNormFn::apply(*x, *w, eps); }, out, err, errlen);
}

// a, u: same shape, f32 contiguous.
int sinkrep_fused_swiglu(const at::Tensor* a, const at::Tensor* u, at::Tensor** out, char* err,
                         size_t errlen) {
  return guarded([&] { return SwigluFn::apply(*a, *u); }, out, err, errlen);
}

// q, k, v: (B, H, T, Dh) f32 CPU with unit channel stride. Returns z (B, T, H, Dh)
// contiguous: causal attention, an autograd function (crate::fused::causal_attention).
int sinkrep_fused_causal_attention(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                                   double scale, at::Tensor** out, char* err, size_t errlen) {
  // Forward runs with grad mode off: whether the backward will need the probabilities is
  // decided here.
  bool keep = at::GradMode::is_enabled() &&
              (q->requires_grad() || k->requires_grad() || v->requires_grad());
  return guarded([&] { return CausalAttnFn::apply(*q, *k, *v, scale, keep); }, out, err,
                 errlen);
}

// x: (B, T, H, Dh) f32 contiguous; cos, sin: (T_max >= T, Dh/2) f32 contiguous.
int sinkrep_fused_rope(const at::Tensor* x, const at::Tensor* cs, const at::Tensor* sn,
                       at::Tensor** out, char* err, size_t errlen) {
  return guarded([&] { return RopeFn::apply(*x, *cs, *sn); }, out, err, errlen);
}

// Inference RMSNorm of x (rows, D) f32 with gain (D) or (P, D) f32: an f32 output into
// out_f32 when want_f32, a bf16 one into out_bf16 when want_bf16 (at least one).
int sinkrep_infer_rms_norm(const at::Tensor* x, const at::Tensor* w, double eps, int want_f32,
                           int want_bf16, at::Tensor** out_f32, at::Tensor** out_bf16, char* err,
                           size_t errlen) {
  at::Tensor yb;
  int rc = guarded(
      [&] {
        at::Tensor yf = want_f32 ? at::empty_like(*x) : at::Tensor();
        if (want_bf16) yb = at::empty(x->sizes(), x->options().dtype(at::kBFloat16));
        float* yfp = want_f32 ? yf.data_ptr<float>() : nullptr;
        uint16_t* ybp = want_bf16 ? bf16_ptr(yb) : nullptr;
        rms_infer_rows(*x, *w, eps, [&](const float* xp, const float* wp, int64_t r0, int64_t r1,
                                        int64_t d, int64_t period, float e) {
          rms_infer(xp, wp, yfp, ybp, r0, r1, d, period, e);
        });
        return yf;
      },
      out_f32, err, errlen);
  *out_bf16 = rc == 0 && want_bf16 ? new at::Tensor(yb) : nullptr;
  return rc;
}

// Inference residual add and RMSNorm: s = x + a for x (rows, D) f32 and a of x's shape, f32
// or bf16, both contiguous; then RMSNorm of s with gain (D) or (P, D) f32, as
// sinkrep_infer_rms_norm would give it from s. Returns s in out_sum; the norm in out_f32
// when want_f32, in out_bf16 when want_bf16 (at least one).
//
// split != 0: instead, the norm's split-bf16 parts as sinkrep_infer_rms_norm_split gives
// them, the high part in out_bf16 and the low part in out_f32's place (want_* ignored).
int sinkrep_infer_add_rms_norm(const at::Tensor* x, const at::Tensor* a, const at::Tensor* w,
                               double eps, int want_f32, int want_bf16, int split,
                               at::Tensor** out_sum, at::Tensor** out_f32, at::Tensor** out_bf16,
                               char* err, size_t errlen) {
  at::Tensor yf, yb;
  if (split) want_f32 = want_bf16 = 1;
  int rc = guarded(
      [&] {
        check_f32(*x, "residual stream");
        check_infer(*a, "residual branch");
        TORCH_CHECK(x->sizes() == a->sizes(), "residual add: stream and branch of one shape");
        TORCH_CHECK(want_f32 || want_bf16, "add + RMSNorm: no output wanted");
        at::Tensor s = at::empty_like(*x);
        auto bf16_like = [&] { return at::empty(x->sizes(), x->options().dtype(at::kBFloat16)); };
        if (want_f32) yf = split ? bf16_like() : at::empty_like(*x);
        if (want_bf16) yb = bf16_like();
        float* sp = s.data_ptr<float>();
        float* yfp = want_f32 && !split ? yf.data_ptr<float>() : nullptr;
        uint16_t* ylp = split ? bf16_ptr(yf) : nullptr;
        uint16_t* ybp = want_bf16 ? bf16_ptr(yb) : nullptr;
        bool bf = is_bf16(*a);
        const void* ap = a->data_ptr();
        rms_infer_rows(*x, *w, eps, [&](const float* xp, const float* wp, int64_t r0, int64_t r1,
                                        int64_t d, int64_t period, float e) {
          auto run = [&](auto* a_typed) {
            if (split)
              add_rms_infer_split(xp, a_typed, wp, sp, ybp, ylp, r0, r1, d, period, e);
            else
              add_rms_infer(xp, a_typed, wp, sp, yfp, ybp, r0, r1, d, period, e);
          };
          if (bf)
            run(static_cast<const uint16_t*>(ap));
          else
            run(static_cast<const float*>(ap));
        });
        return s;
      },
      out_sum, err, errlen);
  *out_f32 = rc == 0 && want_f32 ? new at::Tensor(yf) : nullptr;
  *out_bf16 = rc == 0 && want_bf16 ? new at::Tensor(yb) : nullptr;
  return rc;
}

// Inference silu(a) * u for a, u of one shape and kind (f32 or bf16), contiguous: an f32
// output when want_f32, a bf16 one when want_bf16 (at least one).
int sinkrep_infer_swiglu(const at::Tensor* a, const at::Tensor* u, int want_f32, int want_bf16,
                         at::Tensor** out_f32, at::Tensor** out_bf16, char* err, size_t errlen) {
  at::Tensor hb;
  int rc = guarded(
      [&] {
        check_infer(*a, "SwiGLU gate");
        check_infer(*u, "SwiGLU up");
        TORCH_CHECK(a->sizes() == u->sizes() && a->scalar_type() == u->scalar_type(),
                    "SwiGLU: gate and up of one shape and kind");
        at::Tensor hf =
            want_f32 ? at::empty(a->sizes(), a->options().dtype(at::kFloat)) : at::Tensor();
        if (want_bf16) hb = at::empty(a->sizes(), a->options().dtype(at::kBFloat16));
        float* hfp = want_f32 ? hf.data_ptr<float>() : nullptr;
        uint16_t* hbp = want_bf16 ? bf16_ptr(hb) : nullptr;
        bool bf = is_bf16(*a);
        const void* ap = a->data_ptr();
        const void* up = u->data_ptr();
        at::parallel_for(0, a->numel(), kGrain, [&](int64_t i0, int64_t i1) {
          FlushDenormals ftz;
          if (bf)
            swiglu_infer_bf16(static_cast<const uint16_t*>(ap), static_cast<const uint16_t*>(up),
                              hfp, hbp, i0, i1);
          else
            swiglu_infer_f32(static_cast<const float*>(ap), static_cast<const float*>(up), hfp,
                             hbp, i0, i1);
        });
        return hf;
      },
      out_f32, err, errlen);
  *out_bf16 = rc == 0 && want_bf16 ? new at::Tensor(hb) : nullptr;
  return rc;
}

// Inference RoPE of x (B, T, H, Dh), f32 or bf16 contiguous, with tables (T_max >= T, Dh/2)
// f32, pairs half-split or (adjacent != 0) adjacent: returns (B, H, T, Dh) contiguous in
// bf16 when out_bf16, else f32.
int sinkrep_infer_rope(const at::Tensor* x, const at::Tensor* cs, const at::Tensor* sn,
                       int adjacent, int out_bf16, at::Tensor** out, char* err, size_t errlen) {
  return guarded(
      [&] {
        check_infer(*x, "RoPE input");
        TORCH_CHECK(x->dim() == 4 && x->size(3) % 2 == 0, "RoPE input: (B, T, H, Dh), Dh even");
        TORCH_CHECK(cs->scalar_type() == at::kFloat && sn->scalar_type() == at::kFloat &&
                        cs->is_contiguous() && sn->is_contiguous() && cs->size(0) >= x->size(1) &&
                        cs->size(1) == x->size(3) / 2,
                    "RoPE tables: f32 (T_max >= T, Dh/2)");
        int64_t b = x->size(0), t = x->size(1), h = x->size(2), dh = x->size(3);
        auto kind = out_bf16 ? at::kBFloat16 : at::kFloat;
        at::Tensor o = at::empty({b, h, t, dh}, x->options().dtype(kind));
        int64_t rows = b * t * h;
        int64_t stride = cs->size(1);
        const float* cp = cs->data_ptr<float>();
        const float* sp = sn->data_ptr<float>();
        bool in_bf = is_bf16(*x);
        bool adj = adjacent != 0;
        const void* xp = x->data_ptr();
        void* op = o.data_ptr();
        at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / dh), [&](int64_t r0, int64_t r1) {
          FlushDenormals ftz;
          if (in_bf && out_bf16)
            rope_infer(static_cast<const uint16_t*>(xp), cp, sp, static_cast<uint16_t*>(op), r0,
                       r1, t, h, dh, stride, adj);
          else if (in_bf)
            rope_infer(static_cast<const uint16_t*>(xp), cp, sp, static_cast<float*>(op), r0, r1,
                       t, h, dh, stride, adj);
          else if (out_bf16)
            rope_infer(static_cast<const float*>(xp), cp, sp, static_cast<uint16_t*>(op), r0, r1,
                       t, h, dh, stride, adj);
          else
            rope_infer(static_cast<const float*>(xp), cp, sp, static_cast<float*>(op), r0, r1, t,
                       h, dh, stride, adj);
        });
        return o;
      },
      out, err, errlen);
}

// x f32 and a bf16, of one shape, contiguous: returns x + a in f32.
int sinkrep_infer_add_widen(const at::Tensor* x, const at::Tensor* a, at::Tensor** out, char* err,
                            size_t errlen) {
  return guarded(
      [&] {
        check_f32(*x, "residual stream");
        TORCH_CHECK(a->device().is_cpu() && a->is_contiguous() && is_bf16(*a),
                    "residual branch: a contiguous bf16 CPU tensor");
        TORCH_CHECK(x->sizes() == a->sizes(), "residual add: stream and branch of one shape");
        at::Tensor o = at::empty_like(*x);
        const float* xp = x->data_ptr<float>();
        const uint16_t* ap = bf16_ptr(*a);
        float* op = o.data_ptr<float>();
        at::parallel_for(0, x->numel(), kGrain,
                         [&](int64_t i0, int64_t i1) { add_widen(xp, ap, op, i0, i1); });
        return o;
      },
      out, err, errlen);
}

// x: (B, ...) f32 contiguous, B >= 1. Returns (3, ...) f32: the mean over B, the sum over B
// of (x - mean), and the sum of its square.
int sinkrep_batch_moments(const at::Tensor* x, at::Tensor** out, char* err, size_t errlen) {
  return guarded(
      [&] {
        check_f32(*x, "moments input");
        TORCH_CHECK(x->dim() >= 2 && x->size(0) >= 1, "moments input: (B >= 1, ...)");
        int64_t nb = x->size(0);
        int64_t n = x->numel() / nb;
        auto sizes = x->sizes().vec();
        sizes[0] = 3;
        at::Tensor o = at::empty(sizes, x->options());
        const float* xp = x->data_ptr<float>();
        float* op = o.data_ptr<float>();
        at::parallel_for(0, n, 4096, [&](int64_t c0, int64_t c1) {
          FlushDenormals ftz;
          batch_moments(xp, op, op + n, op + 2 * n, nb, n, c0, c1);
        });
        return o;
      },
      out, err, errlen);
}

// x: (..., D) f32 contiguous. Returns (2, ...) f32 without the last dimension: each row's
// L2 norm and max |x|.
int sinkrep_row_norm_maxabs(const at::Tensor* x, at::Tensor** out, char* err, size_t errlen) {
  return guarded(
      [&] {
        check_f32(*x, "row statistics input");
        TORCH_CHECK(x->dim() >= 1 && x->size(-1) >= 1, "row statistics input: (..., D >= 1)");
        int64_t d = x->size(-1);
        int64_t rows = x->numel() / d;
        auto sizes = x->sizes().vec();
        sizes.pop_back();
        sizes.insert(sizes.begin(), 2);
        at::Tensor o = at::empty(sizes, x->options());
        const float* xp = x->data_ptr<float>();
        float* op = o.data_ptr<float>();
        at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / d), [&](int64_t r0, int64_t r1) {
          FlushDenormals ftz;
          row_norm_maxabs(xp, op, op + rows, r0, r1, d);
        });
        return o;
      },
      out, err, errlen);
}

// scores: (B, H, T, T) f32 contiguous, q k^T before scaling. Returns the causal softmax of
// scale * scores over the last dimension, (B, H, T, T) f32 (zeros above the diagonal).
int sinkrep_causal_softmax(const at::Tensor* scores, double scale, at::Tensor** out, char* err,
                           size_t errlen) {
  return guarded(
      [&] {
        check_f32(*scores, "attention scores");
        TORCH_CHECK(scores->dim() == 4 && scores->size(2) == scores->size(3),
                    "attention scores: (B, H, T, T)");
        int64_t t = scores->size(3);
        int64_t rows = t == 0 ? 0 : scores->numel() / t;
        at::Tensor o = at::empty_like(*scores);
        const float* sp = scores->data_ptr<float>();
        float* op = o.data_ptr<float>();
        float sc = static_cast<float>(scale);
        at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(t, 1)),
                         [&](int64_t r0, int64_t r1) {
                           FlushDenormals ftz;
                           causal_softmax_rows(sp, op, r0, r1, t, sc);
                         });
        return o;
      },
      out, err, errlen);
}

// x: (B, T, F) f32 contiguous; skip: a position to leave out, or -1. Returns (F): max |x|
// over every sequence and position but skip (zeros when nothing is left).
int sinkrep_channel_maxabs(const at::Tensor* x, int64_t skip, at::Tensor** out, char* err,
                           size_t errlen) {
  return guarded(
      [&] {
        check_f32(*x, "channel max input");
        TORCH_CHECK(x->dim() == 3, "channel max input: (B, T, F)");
        int64_t nb = x->size(0), t = x->size(1), f = x->size(2);
        at::Tensor o = at::empty({f}, x->options());
        const float* xp = x->data_ptr<float>();
        float* op = o.data_ptr<float>();
        at::parallel_for(0, f, 256, [&](int64_t c0, int64_t c1) {
          channel_maxabs(xp, op, nb, t, f, skip, c0, c1);
        });
        return o;
      },
      out, err, errlen);
}

// 1 when split-bf16 products can run here (AMX: oneDNN packs and multiplies bf16), else 0.
int sinkrep_split_available() {
  try {
    return at::native::cpublas::could_pack(at::kBFloat16) ? 1 : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// w: (N, K) f32 contiguous, N % 16 == 0, K % 2 == 0: the packed high and low parts
// (split_pack) for sinkrep_split_mm.
int sinkrep_split_pack(const at::Tensor* w, at::Tensor** out, char* err, size_t errlen) {
  return guarded(
      [&] {
        check_f32(*w, "split weight");
        TORCH_CHECK(w->dim() == 2 && w->size(0) % 16 == 0 && w->size(1) % 2 == 0,
                    "split weight: (N, K) with N % 16 == 0 and K even");
        return split_pack(*w);
      },
      out, err, errlen);
}

// xh, xl: (M, K) bf16 contiguous, the split parts of an f32 x (sinkrep_infer_rms_norm_split);
// packed: from sinkrep_split_pack of an (N, K) weight. Returns x W^T (M, N) f32 from three
// bf16 products.
int sinkrep_split_mm(const at::Tensor* xh, const at::Tensor* xl, const at::Tensor* packed,
                     int64_t n, at::Tensor** out, char* err, size_t errlen) {
  return guarded(
      [&] {
        for (const at::Tensor* t : {xh, xl})
          TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() &&
                          t->scalar_type() == at::kBFloat16 && t->dim() == 2,
                      "split product input: (M, K) contiguous bf16 CPU tensors");
        TORCH_CHECK(xh->sizes() == xl->sizes(), "split product: parts of one shape");
        TORCH_CHECK(packed->scalar_type() == at::kBFloat16 && packed->dim() == 4 &&
                        packed->size(0) == 2 && packed->size(2) == xh->size(1) &&
                        packed->size(3) == kSplitCols &&
                        packed->size(1) == (n + kSplitCols - 1) / kSplitCols,
                    "split product: packed weight does not fit the input");
        return split_mm(*xh, *xl, *packed, n);
      },
      out, err, errlen);
}

// Inference RMSNorm of x (rows, D) f32 with gain (D) or (P, D) f32 as split-bf16 parts: the
// high part (the bf16 output of sinkrep_infer_rms_norm) into out_hi, the low into out_lo.
int sinkrep_infer_rms_norm_split(const at::Tensor* x, const at::Tensor* w, double eps,
                                 at::Tensor** out_hi, at::Tensor** out_lo, char* err,
                                 size_t errlen) {
  at::Tensor yl;
  int rc = guarded(
      [&] {
        at::Tensor yh = at::empty(x->sizes(), x->options().dtype(at::kBFloat16));
        yl = at::empty(x->sizes(), x->options().dtype(at::kBFloat16));
        uint16_t* yhp = bf16_ptr(yh);
        uint16_t* ylp = bf16_ptr(yl);
        rms_infer_rows(*x, *w, eps, [&](const float* xp, const float* wp, int64_t r0, int64_t r1,
                                        int64_t d, int64_t period, float e) {
          rms_infer_split(xp, wp, yhp, ylp, r0, r1, d, period, e);
        });
        return yh;
      },
      out_hi, err, errlen);
  *out_lo = rc == 0 ? new at::Tensor(yl) : nullptr;
  return rc;
}

}  // extern "C"
