// Fused training kernels (torch_geometric_binary._fused).
//
// sign / ste_backward: the package's sign (+1 for x >= 0, -1 otherwise) and
// its clipped straight-through gradient, one vectorized pass each (ATen's
// comparison-based forms make several passes through bool tensors).
//
// group_max_forward / group_max_backward: the max over groups of rows of a
// product H W^T, and its gradient, without keeping the product
// (torch_geometric_binary.nn.fused.GroupMaxProduct).
//
// Forward: for tiles of groups, the product comes from ATen's matmul (oneDNN:
// AMX/AVX512-BF16 for bf16), one pass over the tile (in cache) takes the max
// of every (group, channel), a second lists the rows equal to it (ties
// included) and counts them. Backward: each max's gradient, shared evenly by
// its rows, goes to those rows only: dH[r] += s W[c], dW[c] += s H[r].
//
// shifted_sign / rprelu_forward and their backwards: ReActNet's learned
// input thresholds (with the STE or ApproxSign gradient) and RPReLU in one
// pass each, column sums included.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cmath>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <limits>
#include <vector>

namespace {

using torch::Tensor;

// Products of +-1 matrices over at most 256 input channels are exact in a
// 16-bit float (as functional.sign_product).
constexpr int64_t kExactChannels = 256;

Tensor tile_product(const Tensor& h, const Tensor& w) {
  const int64_t K = h.size(-1);
  if (h.element_size() > 2 || K <= kExactChannels) {
    return at::matmul(h, w.t());
  }
  Tensor out;
  for (int64_t s = 0; s < K; s += kExactChannels) {
    const int64_t len = std::min(kExactChannels, K - s);
    Tensor part =
        at::matmul(h.narrow(-1, s, len), w.narrow(-1, s, len).t()).to(at::kFloat);
    out = out.defined() ? out.add_(part) : part;
  }
  return out;
}

// The product of +-1 matrices from their packed signs (K channels), by the
// XNOR-popcount GEMM of torch_geometric_binary.deploy._xnor (found through
// the dispatcher: the library must be loaded), as exact float32 integers.
Tensor packed_product(const Tensor& hp, const Tensor& wp, int64_t K) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torch_geometric_binary::xnor_gemm", "")
          .typed<Tensor(const Tensor&, const Tensor&, int64_t)>();
  return op.call(hp, wp, K).to(at::kFloat);
}

// Element access: bf16 -> float by a shift, which compilers vectorize (the
// c10::BFloat16 conversion operator they do not).
template <typename T>
struct Load {
  using acc = at::opmath_type<T>;
  static inline acc at(const T* p, int64_t i) { return static_cast<acc>(p[i]); }
};
template <>
struct Load<c10::BFloat16> {
  using acc = float;
  static inline float at(const c10::BFloat16* p, int64_t i) {
    const uint32_t u =
        static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
};

// Hot loops are compiled for AVX-512, AVX2 and the baseline, picked at load
// time (GCC/clang function multi-versioning on x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define TGB_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TGB_CLONES
#endif
#define TGB_INLINE inline __attribute__((always_inline))

// mx[c] = max over the n rows of p [n, C]; returns whether a NaN was seen.
template <typename T>
TGB_INLINE bool rows_max(const T* __restrict__ p, int64_t n, int64_t C,
                         typename Load<T>::acc* __restrict__ mx) {
  using acc_t = typename Load<T>::acc;
  for (int64_t c = 0; c < C; ++c) {
    mx[c] = -std::numeric_limits<acc_t>::infinity();
  }
  int32_t nan = 0;  // An int, not a bool: GCC vectorizes the loop then.
  for (int64_t i = 0; i < n; ++i) {
    const T* row = p + i * C;
    for (int64_t c = 0; c < C; ++c) {
      const acc_t v = Load<T>::at(row, c);
      const acc_t m = mx[c];
      mx[c] = v > m ? v : m;
      nan |= static_cast<int32_t>(v != v);
    }
  }
  return nan != 0;
}

// Appends (row0 + i, c) for every p[i, c] == mx[c] to rows/cols (from index
// k on; each has room for n * C more) and counts them per channel.
template <typename T>
TGB_INLINE int64_t rows_equal(const T* __restrict__ p, int64_t n, int64_t C,
                              const typename Load<T>::acc* __restrict__ mx,
                              int32_t* __restrict__ count, int32_t row0,
                              int32_t* __restrict__ rows,
                              int32_t* __restrict__ cols, int64_t k) {
  for (int64_t c = 0; c < C; ++c) count[c] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* row = p + i * C;
    for (int64_t c = 0; c < C; ++c) {
      const int32_t eq = Load<T>::at(row, c) == mx[c];
      count[c] += eq;
      // Branch-free append: write always, advance on a match.
      rows[k] = row0 + static_cast<int32_t>(i);
      cols[k] = static_cast<int32_t>(c);
      k += eq;
    }
  }
  return k;
}

#define TGB_SCAN(T, NAME)                                                    \
  TGB_CLONES bool NAME##_max(const T* p, int64_t n, int64_t C,              \
                             Load<T>::acc* mx) {                            \
    return rows_max<T>(p, n, C, mx);                                        \
  }                                                                         \
  TGB_CLONES int64_t NAME##_equal(const T* p, int64_t n, int64_t C,          \
                                  const Load<T>::acc* mx, int32_t* count,    \
                                  int32_t row0, int32_t* rows,               \
                                  int32_t* cols, int64_t k) {                \
    return rows_equal<T>(p, n, C, mx, count, row0, rows, cols, k);          \
  }
TGB_SCAN(float, scan_f32)
TGB_SCAN(c10::BFloat16, scan_bf16)
#undef TGB_SCAN

template <typename T>
bool scan_max(const T* p, int64_t n, int64_t C, typename Load<T>::acc* mx) {
  if constexpr (std::is_same_v<T, float>) return scan_f32_max(p, n, C, mx);
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return scan_bf16_max(p, n, C, mx);
  }
  return rows_max<T>(p, n, C, mx);
}

#if defined(__x86_64__) && defined(__GNUC__)
// The entries equal to their channel's max with AVX-512: a 16-lane compare,
// then a compress-store of the matching channel indices (most lanes do not
// match). rows/cols need 16 values of slack.
template <bool kBF16>
__attribute__((target("avx512f"))) int64_t equal_avx512(
    const void* data, int64_t n, int64_t C, const float* mx, int32_t* count,
    int32_t row0, int32_t* rows, int32_t* cols, int64_t k) {
  for (int64_t c = 0; c < C; ++c) count[c] = 0;
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                          11, 12, 13, 14, 15);
  const __m512i ones = _mm512_set1_epi32(1);
  const int64_t vec_end = C - C % 16;
  for (int64_t i = 0; i < n; ++i) {
    const __m512i row_id = _mm512_set1_epi32(row0 + static_cast<int32_t>(i));
    for (int64_t c = 0; c < vec_end; c += 16) {
      __m512 v;
      if constexpr (kBF16) {
        const uint16_t* p = static_cast<const uint16_t*>(data) + i * C + c;
        const __m512i wide = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        v = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
      } else {
        v = _mm512_loadu_ps(static_cast<const float*>(data) + i * C + c);
      }
      const __mmask16 eq =
          _mm512_cmp_ps_mask(v, _mm512_loadu_ps(mx + c), _CMP_EQ_OQ);
      if (eq == 0) continue;
      _mm512_mask_compressstoreu_epi32(
          cols + k, eq, _mm512_add_epi32(lanes, _mm512_set1_epi32(c)));
      _mm512_storeu_si512(rows + k, row_id);
      const __m512i cnt = _mm512_loadu_si512(count + c);
      _mm512_storeu_si512(count + c, _mm512_mask_add_epi32(cnt, eq, cnt, ones));
      k += __builtin_popcount(static_cast<unsigned>(eq));
    }
    for (int64_t c = vec_end; c < C; ++c) {
      float v;
      if constexpr (kBF16) {
        v = Load<c10::BFloat16>::at(
            static_cast<const c10::BFloat16*>(data) + i * C, c);
      } else {
        v = static_cast<const float*>(data)[i * C + c];
      }
      const int32_t eq = v == mx[c];
      count[c] += eq;
      rows[k] = row0 + static_cast<int32_t>(i);
      cols[k] = static_cast<int32_t>(c);
      k += eq;
    }
  }
  return k;
}

// The same with AVX2: an 8-lane compare, then the few matching lanes one by
// one (no compress-store).
template <bool kBF16>
__attribute__((target("avx2"))) int64_t equal_avx2(
    const void* data, int64_t n, int64_t C, const float* mx, int32_t* count,
    int32_t row0, int32_t* rows, int32_t* cols, int64_t k) {
  for (int64_t c = 0; c < C; ++c) count[c] = 0;
  const int64_t vec_end = C - C % 8;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t row = row0 + static_cast<int32_t>(i);
    for (int64_t c = 0; c < vec_end; c += 8) {
      __m256 v;
      if constexpr (kBF16) {
        const uint16_t* p = static_cast<const uint16_t*>(data) + i * C + c;
        const __m256i wide = _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        v = _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
      } else {
        v = _mm256_loadu_ps(static_cast<const float*>(data) + i * C + c);
      }
      unsigned eq = static_cast<unsigned>(_mm256_movemask_ps(
          _mm256_cmp_ps(v, _mm256_loadu_ps(mx + c), _CMP_EQ_OQ)));
      for (; eq; eq &= eq - 1) {
        const int32_t col = static_cast<int32_t>(c) + __builtin_ctz(eq);
        rows[k] = row;
        cols[k++] = col;
        ++count[col];
      }
    }
    for (int64_t c = vec_end; c < C; ++c) {
      float v;
      if constexpr (kBF16) {
        v = Load<c10::BFloat16>::at(
            static_cast<const c10::BFloat16*>(data) + i * C, c);
      } else {
        v = static_cast<const float*>(data)[i * C + c];
      }
      const int32_t eq = v == mx[c];
      count[c] += eq;
      rows[k] = row;
      cols[k] = static_cast<int32_t>(c);
      k += eq;
    }
  }
  return k;
}

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
#endif

// The widest scan the CPU has (2: AVX-512, 1: AVX2, 0: plain loops), capped
// by TORCH_GEOMETRIC_BINARY_FUSED_ISA ("avx512", "avx2" or "scalar": tests
// run each against the PyTorch path).
int scan_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  int isa = has_avx512() ? 2 : (has_avx2() ? 1 : 0);
#else
  int isa = 0;
#endif
  if (const char* env = std::getenv("TORCH_GEOMETRIC_BINARY_FUSED_ISA")) {
    const std::string want(env);
    isa = std::min(isa, want == "scalar" ? 0 : (want == "avx2" ? 1 : 2));
  }
  return isa;
}

template <typename T>
int64_t scan_equal(const T* p, int64_t n, int64_t C,
                   const typename Load<T>::acc* mx, int32_t* count,
                   int32_t row0, int32_t* rows, int32_t* cols, int64_t k) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same_v<T, float> ||
                std::is_same_v<T, c10::BFloat16>) {
    const int isa = scan_isa();
    if (isa == 2) {
      return equal_avx512<std::is_same_v<T, c10::BFloat16>>(
          p, n, C, mx, count, row0, rows, cols, k);
    }
    if (isa == 1) {
      return equal_avx2<std::is_same_v<T, c10::BFloat16>>(
          p, n, C, mx, count, row0, rows, cols, k);
    }
  }
#endif
  if constexpr (std::is_same_v<T, float>) {
    return scan_f32_equal(p, n, C, mx, count, row0, rows, cols, k);
  }
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return scan_bf16_equal(p, n, C, mx, count, row0, rows, cols, k);
  }
  return rows_equal<T>(p, n, C, mx, count, row0, rows, cols, k);
}

// The max of every channel over the group's n rows, and its entries.
template <typename scalar_t, typename acc_t>
void scan_group(const scalar_t* __restrict__ p, int64_t n, int64_t C,
                acc_t* __restrict__ mx, int32_t* __restrict__ count,
                int32_t row0, std::vector<int32_t>& rows,
                std::vector<int32_t>& cols) {
  const bool nan = scan_max<scalar_t>(p, n, C, mx);
  if (nan) {  // NaN wins the max, as in torch.amax; it has no gradient.
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = static_cast<acc_t>(p[i * C + c]);
        if (v != v) mx[c] = v;
      }
    }
  }
  // Room for every entry, in per-thread scratch (n * C can be large).
  thread_local std::vector<int32_t> r_buf, c_buf;
  if (static_cast<int64_t>(r_buf.size()) < n * C + 16) {
    r_buf.resize(n * C + 16);
    c_buf.resize(n * C + 16);
  }
  const int64_t end = scan_equal<scalar_t>(p, n, C, mx, count, row0,
                                           r_buf.data(), c_buf.data(), 0);
  rows.insert(rows.end(), r_buf.begin(), r_buf.begin() + end);
  cols.insert(cols.end(), c_buf.begin(), c_buf.begin() + end);
}

// h: [R, K], w: [C, K] (same dtype), ptr: [G + 1] (int64) CSR offsets of
// G non-empty groups of consecutive rows. Returns the max [G, C] (float32, or
// float64 for float64 inputs), the row, channel and group of every entry
// equal to its max, and the number of such entries per (g, c). The product
// is formed for tiles of whole groups of about tile_rows rows; where h and w
// hold +-1 only, from their packed signs h_bits, w_bits (pack_bits) if given.
std::vector<Tensor> group_max_forward(Tensor h, Tensor w, Tensor ptr,
                                      int64_t tile_rows,
                                      c10::optional<Tensor> h_bits,
                                      c10::optional<Tensor> w_bits) {
  TORCH_CHECK(h.dim() == 2 && w.dim() == 2 && h.size(1) == w.size(1),
              "group_max_forward: expected h [R, K] and w [C, K], got ",
              h.sizes(), " and ", w.sizes());
  TORCH_CHECK(h.scalar_type() == w.scalar_type(),
              "group_max_forward: h and w differ in dtype");
  TORCH_CHECK(h.size(0) < std::numeric_limits<int32_t>::max(),
              "group_max_forward: too many rows");
  TORCH_CHECK(ptr.dim() == 1 && ptr.size(0) >= 1 &&
                  ptr.scalar_type() == at::kLong,
              "group_max_forward: ptr must be int64 [G + 1]");
  TORCH_CHECK(h_bits.has_value() == w_bits.has_value(),
              "group_max_forward: give both packed operands or neither");
  const bool packed = h_bits.has_value();
  if (packed) {
    TORCH_CHECK(h.scalar_type() == at::kFloat &&
                    h_bits->size(0) == h.size(0) &&
                    w_bits->size(0) == w.size(0),
                "group_max_forward: the packed operands must be the float32 "
                "h and w's packed rows");
  }
  h = h.contiguous();
  w = w.contiguous();
  ptr = ptr.contiguous();
  const int64_t G = ptr.size(0) - 1, C = w.size(0);
  const int64_t* off = ptr.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[G] == h.size(0),
              "group_max_forward: ptr does not cover the rows of h");
  for (int64_t g = 0; g < G; ++g) {
    TORCH_CHECK(off[g + 1] > off[g], "group_max_forward: group ", g,
                " is empty");
  }
  const auto acc_type =
      h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor out = torch::empty({G, C}, h.options().dtype(acc_type));
  Tensor count = torch::empty({G, C}, h.options().dtype(at::kInt));
  std::vector<std::vector<int32_t>> rows(G), cols(G);
  tile_rows = std::max<int64_t>(1, tile_rows);
  for (int64_t a = 0; a < G;) {
    int64_t b = a + 1;  // Whole groups, at least one.
    while (b < G && off[b + 1] - off[a] <= tile_rows) ++b;
    Tensor prod =
        packed ? packed_product(h_bits->slice(0, off[a], off[b]), *w_bits,
                                h.size(1))
               : tile_product(h.slice(0, off[a], off[b]), w).contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, prod.scalar_type(), "group_max_forward",
        [&] {
          using acc_t = at::opmath_type<scalar_t>;
          TORCH_CHECK(out.element_size() == sizeof(acc_t));
          const scalar_t* p = prod.data_ptr<scalar_t>();
          acc_t* mx = reinterpret_cast<acc_t*>(out.data_ptr());
          int32_t* cnt = count.data_ptr<int32_t>();
          at::parallel_for(a, b, 1, [&](int64_t g0, int64_t g1) {
            for (int64_t g = g0; g < g1; ++g) {
              scan_group<scalar_t, acc_t>(
                  p + (off[g] - off[a]) * C, off[g + 1] - off[g], C,
                  mx + g * C, cnt + g * C, static_cast<int32_t>(off[g]),
                  rows[g], cols[g]);
            }
          });
        });
    a = b;
  }
  int64_t E = 0;
  for (const auto& r : rows) E += r.size();
  Tensor rows_t = torch::empty({E}, h.options().dtype(at::kInt));
  Tensor cols_t = torch::empty({E}, h.options().dtype(at::kInt));
  Tensor groups_t = torch::empty({E}, h.options().dtype(at::kInt));
  int32_t* rp = rows_t.data_ptr<int32_t>();
  int32_t* cp = cols_t.data_ptr<int32_t>();
  int32_t* gp = groups_t.data_ptr<int32_t>();
  for (int64_t g = 0; g < G; ++g) {
    std::copy(rows[g].begin(), rows[g].end(), rp);
    std::copy(cols[g].begin(), cols[g].end(), cp);
    std::fill(gp, gp + rows[g].size(), static_cast<int32_t>(g));
    rp += rows[g].size();
    cp += cols[g].size();
    gp += rows[g].size();
  }
  return {out, rows_t, cols_t, groups_t, count};
}

// dst[idx[e]] += share(e) * src[other[e]] for the entries e0 <= e < e1
// (rows of K values); with lo <= hi, only entries whose dst index lies in
// [lo, hi) (threads split dw by channel range).
template <typename T>
TGB_INLINE void spread(const int32_t* __restrict__ idx,
                       const int32_t* __restrict__ other,
                       const int32_t* __restrict__ rows,
                       const int32_t* __restrict__ cols,
                       const int32_t* __restrict__ groups,
                       const int32_t* __restrict__ count,
                       const typename Load<T>::acc* __restrict__ grad,
                       int64_t C, const T* __restrict__ src,
                       typename Load<T>::acc* __restrict__ dst, int64_t K,
                       int64_t e0, int64_t e1, int64_t lo, int64_t hi) {
  using acc_t = typename Load<T>::acc;
  for (int64_t e = e0; e < e1; ++e) {
    const int64_t d = idx[e];
    if (lo < hi && (d < lo || d >= hi)) continue;
    const int64_t g = static_cast<int64_t>(groups[e]) * C + cols[e];
    const acc_t share = grad[g] / static_cast<acc_t>(count[g]);
    const T* from = src + static_cast<int64_t>(other[e]) * K;
    acc_t* to = dst + d * K;
    for (int64_t k = 0; k < K; ++k) {
      to[k] += share * Load<T>::at(from, k);
    }
  }
  (void)rows;
}

#define TGB_SPREAD(T, NAME)                                                  \
  TGB_CLONES void NAME(const int32_t* idx, const int32_t* other,             \
                       const int32_t* rows, const int32_t* cols,             \
                       const int32_t* groups, const int32_t* count,          \
                       const Load<T>::acc* grad, int64_t C, const T* src,     \
                       Load<T>::acc* dst, int64_t K, int64_t e0, int64_t e1,  \
                       int64_t lo, int64_t hi) {                              \
    spread<T>(idx, other, rows, cols, groups, count, grad, C, src, dst, K,   \
              e0, e1, lo, hi);                                               \
  }
TGB_SPREAD(float, spread_f32)
TGB_SPREAD(c10::BFloat16, spread_bf16)
#undef TGB_SPREAD

template <typename T>
void spread_any(const int32_t* idx, const int32_t* other, const int32_t* rows,
                const int32_t* cols, const int32_t* groups,
                const int32_t* count, const typename Load<T>::acc* grad,
                int64_t C, const T* src, typename Load<T>::acc* dst, int64_t K,
                int64_t e0, int64_t e1, int64_t lo, int64_t hi) {
  if constexpr (std::is_same_v<T, float>) {
    spread_f32(idx, other, rows, cols, groups, count, grad, C, src, dst, K,
               e0, e1, lo, hi);
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    spread_bf16(idx, other, rows, cols, groups, count, grad, C, src, dst, K,
                e0, e1, lo, hi);
  } else {
    spread<T>(idx, other, rows, cols, groups, count, grad, C, src, dst, K,
              e0, e1, lo, hi);
  }
}

// Stores a float row of K values into T (rounding to nearest even for
// bf16, as torch does).
template <typename T>
TGB_INLINE void store_row(const typename Load<T>::acc* __restrict__ src,
                          T* __restrict__ dst, int64_t K) {
  for (int64_t k = 0; k < K; ++k) dst[k] = static_cast<T>(src[k]);
}

// The gradients of group_max_forward's max: grad_out [G, C] shared evenly by
// the entries (rows, cols, groups) of each max. h: [R, K], w: [C, K], ptr:
// the groups' offsets. Returns dh [R, K] in h's dtype and dw [C, K] in
// float32 (float64 for float64 inputs).
std::vector<Tensor> group_max_backward(Tensor rows, Tensor cols, Tensor groups,
                                       Tensor count, Tensor grad_out,
                                       Tensor h, Tensor w, Tensor ptr,
                                       bool need_h) {
  h = h.contiguous();
  w = w.contiguous();
  ptr = ptr.contiguous();
  const int64_t R = h.size(0), K = h.size(1), C = w.size(0);
  const int64_t G = ptr.size(0) - 1;
  const int64_t E = rows.numel();
  const auto acc_type =
      h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor grad = grad_out.to(acc_type).contiguous();
  Tensor dh = need_h ? torch::empty({R, K}, h.options()) : Tensor();
  Tensor dw = torch::zeros({C, K}, h.options().dtype(acc_type));
  const int32_t* rp = rows.data_ptr<int32_t>();
  const int32_t* cp = cols.data_ptr<int32_t>();
  const int32_t* gr = groups.data_ptr<int32_t>();
  const int32_t* cnt = count.data_ptr<int32_t>();
  const int64_t* off = ptr.data_ptr<int64_t>();
  // Each group's entries are contiguous (forward order): their offsets.
  std::vector<int64_t> e_off(G + 1, 0);
  for (int64_t e = 0; e < E; ++e) ++e_off[gr[e] + 1];
  for (int64_t g = 0; g < G; ++g) e_off[g + 1] += e_off[g];
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, h.scalar_type(), "group_max_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* hp = h.data_ptr<scalar_t>();
        const scalar_t* wp = w.data_ptr<scalar_t>();
        const acc_t* gp = reinterpret_cast<const acc_t*>(grad.data_ptr());
        if (need_h) {
          // Group by group: a zeroed float block of the group's rows (in
          // cache) takes its entries, then is stored once into dh.
          scalar_t* dhp = dh.data_ptr<scalar_t>();
          at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
            std::vector<acc_t> block;
            for (int64_t g = g0; g < g1; ++g) {
              const int64_t n = off[g + 1] - off[g];
              block.assign(n * K, acc_t(0));
              spread_any<scalar_t>(rp, cp, rp, cp, gr, cnt, gp, C, wp,
                                   block.data() - off[g] * K, K, e_off[g],
                                   e_off[g + 1], 0, 0);
              for (int64_t i = 0; i < n; ++i) {
                store_row<scalar_t>(block.data() + i * K,
                                    dhp + (off[g] + i) * K, K);
              }
            }
          });
        }
        // Threads take disjoint channel ranges of dw.
        acc_t* dwp = reinterpret_cast<acc_t*>(dw.data_ptr());
        const int64_t chunks = std::max<int64_t>(1, at::get_num_threads());
        at::parallel_for(0, chunks, 1, [&](int64_t t0, int64_t t1) {
          const int64_t lo = C * t0 / chunks, hi = C * t1 / chunks;
          if (lo >= hi) return;
          spread_any<scalar_t>(cp, rp, rp, cp, gr, cnt, gp, C, hp, dwp, K, 0,
                               E, lo, hi);
        });
      });
  return {dh, dw};
}


// Plain loops over restrict pointers, so that the compiler vectorizes them
// (bf16 through its bits: a shift to read, a select of bit patterns to
// write).
template <typename T>
struct Bits {
  using type = T;
};
template <>
struct Bits<c10::BFloat16> {
  using type = uint16_t;
};

template <typename T>
TGB_INLINE void sign_impl(const T* __restrict__ src, T* __restrict__ dst,
                          int64_t a, int64_t b) {
  using acc_t = typename Load<T>::acc;
  using B = typename Bits<T>::type;
  const T one_t(1), minus_one_t(-1);
  B one, minus_one;
  std::memcpy(&one, &one_t, sizeof(B));
  std::memcpy(&minus_one, &minus_one_t, sizeof(B));
  B* out = reinterpret_cast<B*>(dst);
  for (int64_t i = a; i < b; ++i) {
    out[i] = Load<T>::at(src, i) >= acc_t(0) ? one : minus_one;
  }
}

template <typename T>
TGB_INLINE void ste_impl(const T* __restrict__ g, const T* __restrict__ x,
                         T* __restrict__ dst, int64_t a, int64_t b) {
  using acc_t = typename Load<T>::acc;
  using B = typename Bits<T>::type;
  const B* gb = reinterpret_cast<const B*>(g);
  B* out = reinterpret_cast<B*>(dst);
  for (int64_t i = a; i < b; ++i) {
    // Branch-free: load both, then select (the mask is data-dependent).
    const acc_t v = Load<T>::at(x, i);
    const bool inside = (v >= acc_t(-1)) & (v <= acc_t(1));
    out[i] = inside ? gb[i] : B(0);
  }
}

#define TGB_ELEMENTWISE(T, NAME)                                             \
  TGB_CLONES void NAME##_sign(const T* src, T* dst, int64_t a, int64_t b) {  \
    sign_impl<T>(src, dst, a, b);                                            \
  }                                                                          \
  TGB_CLONES void NAME##_ste(const T* g, const T* x, T* dst, int64_t a,      \
                             int64_t b) {                                    \
    ste_impl<T>(g, x, dst, a, b);                                            \
  }
TGB_ELEMENTWISE(float, ew_f32)
TGB_ELEMENTWISE(c10::BFloat16, ew_bf16)
#undef TGB_ELEMENTWISE

template <typename T>
void sign_loop(const T* src, T* dst, int64_t a, int64_t b) {
  if constexpr (std::is_same_v<T, float>) {
    ew_f32_sign(src, dst, a, b);
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    ew_bf16_sign(src, dst, a, b);
  } else {
    sign_impl<T>(src, dst, a, b);
  }
}

template <typename T>
void ste_loop(const T* g, const T* x, T* dst, int64_t a, int64_t b) {
  if constexpr (std::is_same_v<T, float>) {
    ew_f32_ste(g, x, dst, a, b);
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    ew_bf16_ste(g, x, dst, a, b);
  } else {
    ste_impl<T>(g, x, dst, a, b);
  }
}

Tensor sign(Tensor x) {
  x = x.contiguous();
  Tensor out = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "sign", [&] {
        const scalar_t* src = x.data_ptr<scalar_t>();
        scalar_t* dst = out.data_ptr<scalar_t>();
        at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t a, int64_t b) {
          sign_loop<scalar_t>(src, dst, a, b);
        });
      });
  return out;
}

Tensor ste_backward(Tensor grad, Tensor x) {
  TORCH_CHECK(grad.sizes() == x.sizes(), "ste_backward: shapes differ");
  grad = grad.contiguous();
  x = x.to(grad.scalar_type()).contiguous();
  Tensor out = torch::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, grad.scalar_type(), "ste_backward", [&] {
        const scalar_t* g = grad.data_ptr<scalar_t>();
        const scalar_t* src = x.data_ptr<scalar_t>();
        scalar_t* dst = out.data_ptr<scalar_t>();
        at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t a, int64_t b) {
          ste_loop<scalar_t>(g, src, dst, a, b);
        });
      });
  return out;
}

// Shifted signs and RPReLU (float32; other dtypes take the PyTorch path).
// x [rows, C], per-channel vectors [C]. Each is one pass over the rows, and
// computes what the PyTorch path computes, operation for operation, so that
// both give the same bits where ATen's kernels are vectorized (AVX2 and
// up): setup.py builds this file with -ffp-contract=off, and the one fused
// multiply-add, where ATen's addcmul has one, is explicit. Column sums add
// in double (ATen's, in float, may differ in the last bits).
enum Estimator : int64_t { kSte = 0, kApprox = 1 };

// out = sign(x - theta).
TGB_CLONES void shifted_sign_rows(const float* __restrict__ x,
                                  const float* __restrict__ theta,
                                  float* __restrict__ out, int64_t r0,
                                  int64_t r1, int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * C;
    float* o = out + r * C;
    for (int64_t c = 0; c < C; ++c) o[c] = xr[c] - theta[c] >= 0.f ? 1.f : -1.f;
  }
}

// Column sums: float over blocks of kSumRows rows (vectorized), double
// across blocks.
constexpr int64_t kSumRows = 64;

TGB_INLINE void add_block(const float* __restrict__ part,
                          double* __restrict__ sums, int64_t n) {
  for (int64_t i = 0; i < n; ++i) sums[i] += part[i];
}

TGB_INLINE void add_block_d(const double* __restrict__ part,
                            double* __restrict__ sums, int64_t n) {
  for (int64_t i = 0; i < n; ++i) sums[i] += part[i];
}

// grad_x = g * w(x - theta) with the estimator's weight w; part[c] += the
// column sums of grad_x.
TGB_CLONES void shifted_sign_grad_rows(const float* __restrict__ g,
                                       const float* __restrict__ x,
                                       const float* __restrict__ theta,
                                       float* __restrict__ gx,
                                       float* __restrict__ part, int64_t r0,
                                       int64_t r1, int64_t C, int64_t est) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* gr = g + r * C;
    const float* xr = x + r * C;
    float* o = gx + r * C;
    if (est == kSte) {
      for (int64_t c = 0; c < C; ++c) {
        const float d = xr[c] - theta[c];
        const bool inside = (d >= -1.f) & (d <= 1.f);
        const float v = inside ? gr[c] : 0.f;
        o[c] = v;
        part[c] += v;
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const float d = xr[c] - theta[c];
        const float w = 2.f - 2.f * std::fabs(d);
        // clamp_min(0) keeps NaN, as ATen's.
        const float v = gr[c] * (w < 0.f ? 0.f : w);
        o[c] = v;
        part[c] += v;
      }
    }
  }
}

// out = z + min(z, 0) (beta - 1) + zeta with z = x - gamma.
TGB_CLONES void rprelu_rows(const float* __restrict__ x,
                            const float* __restrict__ gamma,
                            const float* __restrict__ bm1,
                            const float* __restrict__ zeta,
                            float* __restrict__ out, int64_t r0, int64_t r1,
                            int64_t C) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * C;
    float* o = out + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float z = xr[c] - gamma[c];
      const float m = z < 0.f ? z : 0.f;
      o[c] = std::fma(m, bm1[c], z) + zeta[c];  // As ATen's addcmul.
    }
  }
}

// grad_x = z > 0 ? g : g * beta; column sums of g (zeta), of grad_x (minus
// gamma's) and of g * min(z, 0) (beta), added to part[0, 3C).
TGB_CLONES void rprelu_grad_rows(const float* __restrict__ g,
                                 const float* __restrict__ x,
                                 const float* __restrict__ gamma,
                                 const float* __restrict__ beta,
                                 float* __restrict__ gx,
                                 float* __restrict__ part, int64_t r0,
                                 int64_t r1, int64_t C) {
  float* __restrict__ s_g = part;
  float* __restrict__ s_gx = part + C;
  float* __restrict__ s_gm = part + 2 * C;
  for (int64_t r = r0; r < r1; ++r) {
    const float* gr = g + r * C;
    const float* xr = x + r * C;
    float* o = gx + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float z = xr[c] - gamma[c];
      const float m = z < 0.f ? z : 0.f;
      const float gb = gr[c] * beta[c];
      const float v = z > 0.f ? gr[c] : gb;
      o[c] = v;
      s_g[c] += gr[c];
      s_gx[c] += v;
      s_gm[c] += gr[c] * m;
    }
  }
}

// The grain of the row loops: about 64K floats a task.
int64_t row_grain(int64_t C) {
  return std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(C, 1));
}

// Runs body(r0, r1, part) over blocks of at most kSumRows rows, part being
// n_sums vectors of C floats that start at zero for each block, and returns
// the column sums over all blocks (double; per-thread, then added).
template <typename F>
std::vector<double> rows_with_sums(int64_t rows, int64_t C, int64_t n_sums,
                                   const F& body) {
  const int64_t grain = std::max<int64_t>(kSumRows, row_grain(C));
  const int64_t threads = at::get_num_threads(), n = n_sums * C;
  std::vector<double> sums(threads * n, 0.0);
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    double* mine = sums.data() + at::get_thread_num() * n;
    std::vector<float> part(n);
    for (int64_t b = r0; b < r1; b += kSumRows) {
      std::fill(part.begin(), part.end(), 0.f);
      body(b, std::min(b + kSumRows, r1), part.data());
      add_block(part.data(), mine, n);
    }
  });
  std::vector<double> total(n, 0.0);
  for (int64_t t = 0; t < threads; ++t) add_block_d(sums.data() + t * n, total.data(), n);
  return total;
}

// Rows of x [..., C]: C channels and numel / C rows.
int64_t num_rows(const Tensor& x) {
  const int64_t C = x.size(-1);
  return C ? x.numel() / C : 0;
}

// The float32 operands of a row kernel, checked and contiguous: x [..., C],
// then the per-channel vectors [C], then grad (shaped as x) if given.
std::vector<Tensor> row_operands(const char* op, const Tensor& x,
                                 std::initializer_list<Tensor> vectors,
                                 const std::optional<Tensor>& grad = {}) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1, op,
              ": float32 tensors only");
  std::vector<Tensor> out{x.contiguous()};
  for (const Tensor& v : vectors) {
    TORCH_CHECK(v.scalar_type() == at::kFloat, op, ": float32 tensors only");
    TORCH_CHECK(v.dim() == 1 && v.size(0) == x.size(-1), op,
                ": a per-channel vector must have x.size(-1) entries");
    out.push_back(v.contiguous());
  }
  if (grad.has_value()) {
    TORCH_CHECK(grad->sizes() == x.sizes() &&
                    grad->scalar_type() == at::kFloat,
                op, ": grad must match x");
    out.push_back(grad->contiguous());
  }
  return out;
}

Tensor column_sums(const std::vector<double>& s, int64_t i, int64_t C,
                   double sign = 1.0) {
  Tensor out = torch::empty({C}, torch::kFloat);
  float* o = out.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) o[c] = static_cast<float>(sign * s[i * C + c]);
  return out;
}

Tensor shifted_sign(const Tensor& x_, const Tensor& theta_) {
  const auto t = row_operands("shifted_sign", x_, {theta_});
  const Tensor &x = t[0], &theta = t[1];
  Tensor out = torch::empty_like(x);
  const int64_t C = x.size(-1);
  const float *px = x.data_ptr<float>(), *pt = theta.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, num_rows(x), row_grain(C), [&](int64_t r0, int64_t r1) {
    shifted_sign_rows(px, pt, po, r0, r1, C);
  });
  return out;
}

std::vector<Tensor> shifted_sign_backward(const Tensor& grad_,
                                          const Tensor& x_,
                                          const Tensor& theta_,
                                          int64_t estimator) {
  TORCH_CHECK(estimator == kSte || estimator == kApprox,
              "shifted_sign_backward: unknown estimator ", estimator);
  const auto t = row_operands("shifted_sign_backward", x_, {theta_}, grad_);
  const Tensor &x = t[0], &theta = t[1], &grad = t[2];
  Tensor gx = torch::empty_like(x);
  const int64_t C = x.size(-1);
  const float *pg = grad.data_ptr<float>(), *px = x.data_ptr<float>(),
              *pt = theta.data_ptr<float>();
  float* po = gx.data_ptr<float>();
  const auto s = rows_with_sums(num_rows(x), C, 1,
                                [&](int64_t r0, int64_t r1, float* part) {
    shifted_sign_grad_rows(pg, px, pt, po, part, r0, r1, C, estimator);
  });
  return {gx, column_sums(s, 0, C, -1.0)};
}

Tensor rprelu_forward(const Tensor& x_, const Tensor& gamma_,
                      const Tensor& bm1_, const Tensor& zeta_) {
  const auto t = row_operands("rprelu_forward", x_, {gamma_, bm1_, zeta_});
  const Tensor& x = t[0];
  Tensor out = torch::empty_like(x);
  const int64_t C = x.size(-1);
  const float *px = x.data_ptr<float>(), *pg = t[1].data_ptr<float>(),
              *pb = t[2].data_ptr<float>(), *pz = t[3].data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, num_rows(x), row_grain(C), [&](int64_t r0, int64_t r1) {
    rprelu_rows(px, pg, pb, pz, po, r0, r1, C);
  });
  return out;
}

// grad_x, grad_gamma, grad_beta, grad_zeta.
std::vector<Tensor> rprelu_backward(const Tensor& grad_, const Tensor& x_,
                                    const Tensor& gamma_,
                                    const Tensor& beta_) {
  const auto t = row_operands("rprelu_backward", x_, {gamma_, beta_}, grad_);
  const Tensor& x = t[0];
  Tensor gx = torch::empty_like(x);
  const int64_t C = x.size(-1);
  const float *pg = t[3].data_ptr<float>(), *px = x.data_ptr<float>(),
              *pga = t[1].data_ptr<float>(), *pb = t[2].data_ptr<float>();
  float* po = gx.data_ptr<float>();
  const auto s = rows_with_sums(num_rows(x), C, 3,
                                [&](int64_t r0, int64_t r1, float* part) {
    rprelu_grad_rows(pg, px, pga, pb, po, part, r0, r1, C);
  });
  return {gx, column_sums(s, 1, C, -1.0), column_sums(s, 2, C),
          column_sums(s, 0, C)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sign", &sign, "+1 where x >= 0, -1 elsewhere (NaN: -1)");
  m.def("ste_backward", &ste_backward,
        "grad where |x| <= 1, 0 elsewhere (NaN: 0)");
  m.def("group_max_forward", &group_max_forward,
        "max over groups of rows of h @ w.T, with the rows of every max",
        py::arg("h"), py::arg("w"), py::arg("ptr"), py::arg("tile_rows"),
        py::arg("h_bits") = py::none(), py::arg("w_bits") = py::none());
  m.def("group_max_backward", &group_max_backward,
        "gradients of group_max_forward");
  m.def("shifted_sign", &shifted_sign, "sign(x - theta), float32");
  m.def("shifted_sign_backward", &shifted_sign_backward,
        "gradients of shifted_sign (estimator 0: clipped STE, 1: ApproxSign)");
  m.def("rprelu_forward", &rprelu_forward,
        "z + min(z, 0) (beta - 1) + zeta with z = x - gamma, float32");
  m.def("rprelu_backward", &rprelu_backward,
        "gradients of rprelu_forward: x, gamma, beta, zeta");
}
