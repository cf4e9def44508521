// Bit-packed XNOR-popcount kernels for binary (1-bit) layers, registered as
// torch.ops.torch_geometric_binary.{pack_bits, xnor_gemm,
// xnor_gemm_threshold, xnor_chain}.
//
// For packed rows a, w of K channels (bit 1 = +1, bit 0 = -1, padding 0):
//   dot(a, w) = sum_k sign_a[k] * sign_w[k] = K - 2 * popcount(a XOR w).
//
// The tile kernels exist once per instruction set (AVX-512 VPOPCNTDQ, AVX2
// nibble lookup, scalar POPCNT on x86; NEON on AArch64; portable) and the
// fastest one the CPU runs is picked at run time. The kernels need no torch
// headers (xnor_kernels.h and the per-ISA files it includes; the standalone
// test_xnor_kernels.cpp builds them alone); this file is the ATen glue and
// the operators. xnor_chain runs consecutive binary layers (with an
// optional OR max pooling) in one call; with AVX2 it also has bit-sliced
// kernels (carry-save counting across channels or across rows). Only light
// ATen headers are included to keep the single translation unit fast to
// compile.
#include <Python.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "xnor.h"
#include "xnor_kernels.h"

namespace tgb {

// ---------------------------------------------------------------------------
// Run-time dispatch (the table of kernels, kImpls, and cpu_supports are in
// xnor_kernels.h).

static std::atomic<int> g_impl{-1};

static const Impl& impl() {
  int i = g_impl.load(std::memory_order_relaxed);
  if (i < 0) {
    i = best_impl();
    g_impl.store(i, std::memory_order_relaxed);
  }
  return kImpls[i];
}

static std::string isa() { return impl().name; }

static std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (int i = 0; i < kNumImpls; ++i)
    if (cpu_supports(kImpls[i].name)) out.emplace_back(kImpls[i].name);
  return out;
}

// Selects the kernels by name ("auto" = the fastest supported); returns the
// previous name. For tests and benchmarks.
static std::string set_isa(const std::string& name) {
  const std::string previous = isa();
  if (name == "auto") {
    g_impl.store(best_impl());
    return previous;
  }
  for (int i = 0; i < kNumImpls; ++i) {
    if (name == kImpls[i].name) {
      TORCH_CHECK(cpu_supports(name), "xnor kernels: this CPU does not "
                  "support '", name, "'");
      g_impl.store(i);
      return previous;
    }
  }
  TORCH_CHECK(false, "xnor kernels: unknown instruction set '", name, "'");
}

// ---------------------------------------------------------------------------
// Operators.

template <typename scalar_t>
static void pack_rows(const scalar_t* x, int64_t K, int64_t W, uint64_t* out,
                      int64_t r0, int64_t r1) {
  for (int64_t row = r0; row < r1; ++row) {
    const scalar_t* xr = x + row * K;
    for (int64_t w = 0; w < W; ++w) {
      uint64_t bits = 0;
      const int64_t k1 = std::min<int64_t>(K, 64 * w + 64);
      for (int64_t k = 64 * w; k < k1; ++k)
        bits |= static_cast<uint64_t>(static_cast<double>(xr[k]) >= 0.0)
                << (k - 64 * w);
      out[row * W + w] = bits;
    }
  }
}

static bool pack_rows_thr(const float* x, int64_t K, int64_t W,
                          const float* sgn, const float* thr, uint64_t* out,
                          int64_t r0, int64_t r1) {
  bool finite = true;
  for (int64_t row = r0; row < r1; ++row) {
    const float* xr = x + row * K;
    for (int64_t w = 0; w < W; ++w) {
      uint64_t bits = 0;
      const int64_t k1 = std::min<int64_t>(K, 64 * w + 64);
      for (int64_t k = 64 * w; k < k1; ++k) {
        finite = finite && std::isfinite(xr[k]);
        bits |= static_cast<uint64_t>(xr[k] * sgn[k] >= thr[k])
                << (k - 64 * w);
      }
      out[row * W + w] = bits;
    }
  }
  return finite;
}

static const char* kNonFinite =
    "xnor_chain: non-finite value in the float input (its thresholds hold "
    "for finite values)";

[[maybe_unused]] static bool has_avx2() {
#if TGB_X86
  static const bool yes = cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

static at::Tensor pack_bits(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_floating_point() && x.device().is_cpu(),
              "pack_bits: expected a 2-D floating-point CPU tensor (got ",
              x.sizes(), ", ", x.scalar_type(), ")");
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), W = (K + 63) / 64;
  at::Tensor out = at::empty({M, W}, xc.options().dtype(at::kLong));
  if (M == 0 || W == 0) return out;
  auto* o = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / K);
#if TGB_X86
  if (xc.scalar_type() == at::kFloat && has_avx2()) {
    const float* xp = xc.data_ptr<float>();
    at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
      avx2::pack_rows_f32(xp, K, W, o, r0, r1);
    });
    return out;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, xc.scalar_type(), "pack_bits", [&] {
        const scalar_t* xp = xc.data_ptr<scalar_t>();
        at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
          pack_rows<scalar_t>(xp, K, W, o, r0, r1);
        });
      });
  return out;
}

static void check_packed(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == at::kLong &&
                  t.device().is_cpu(),
              "xnor_gemm: expected '", name, "' to be a 2-D int64 CPU tensor "
              "of packed bits (got ", t.sizes(), ", ", t.scalar_type(), ")");
}

// Validates the operands and lays the weights out as [NB, W, kBlock].
static Gemm make_gemm(const at::Tensor& a, const at::Tensor& w, int64_t K,
                      std::vector<uint64_t>& wt) {
  check_packed(a, "a");
  check_packed(w, "w");
  Gemm g{};
  g.M = a.size(0);
  g.N = w.size(0);
  g.W = a.size(1);
  g.K = K;
  TORCH_CHECK(w.size(1) == g.W, "xnor_gemm: 'a' and 'w' have different "
              "numbers of words (", g.W, " vs. ", w.size(1), ")");
  TORCH_CHECK(K >= 1 && K <= INT32_MAX && (K + 63) / 64 == g.W,
              "xnor_gemm: K=", K, " does not match ", g.W, " words per row");
  g.NB = (g.N + kBlock - 1) / kBlock;
  g.a = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  const auto* wp = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  wt.assign(g.NB * g.W * kBlock, 0);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.W; ++k)
      wt[((n / kBlock) * g.W + k) * kBlock + n % kBlock] = wp[n * g.W + k];
  g.wt = wt.data();
  return g;
}

// Splits rows into groups and weight blocks into cache-sized chunks (whole
// output words), and runs the (group, chunk) items in parallel.
static void launch(const Gemm& g, RunFn fn) {
  constexpr int64_t kChunkBytes = 32 * 1024;
  constexpr int64_t kRowsPerItem = 64;
  const int64_t block_bytes = g.W * kBlock * int64_t(sizeof(uint64_t));
  int64_t cb = std::max<int64_t>(4, kChunkBytes / block_bytes / 4 * 4);
  cb = std::min<int64_t>(cb, (g.NB + 3) / 4 * 4);
  const int64_t nchunks = (g.NB + cb - 1) / cb;
  const int64_t ngroups = (g.M + kRowsPerItem - 1) / kRowsPerItem;
  // About 2^18 word pairs (~50 us) per task: small calls stay serial, as
  // waking threads costs more than it saves there.
  const int64_t item_work = std::min(g.M, kRowsPerItem) *
                            std::min(g.NB, cb) * kBlock * g.W;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / item_work);
  at::parallel_for(0, ngroups * nchunks, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t gi = i / nchunks, ci = i % nchunks;
      fn(g, gi * kRowsPerItem, std::min(g.M, (gi + 1) * kRowsPerItem),
         ci * cb, std::min(g.NB, (ci + 1) * cb));
    }
  });
}

static at::Tensor xnor_gemm(const at::Tensor& a, const at::Tensor& w,
                            int64_t K) {
  const at::Tensor ac = a.contiguous(), wc = w.contiguous();
  std::vector<uint64_t> wt;
  Gemm g = make_gemm(ac, wc, K, wt);
  at::Tensor out = at::empty({g.M, g.N}, ac.options().dtype(at::kInt));
  if (g.M == 0 || g.N == 0) return out;
  g.dot = out.data_ptr<int32_t>();
  launch(g, impl().dots);
  return out;
}

static at::Tensor xnor_gemm_threshold(const at::Tensor& a, const at::Tensor& w,
                                      int64_t K, const at::Tensor& threshold,
                                      const at::Tensor& flip) {
  const at::Tensor ac = a.contiguous(), wc = w.contiguous();
  std::vector<uint64_t> wt;
  Gemm g = make_gemm(ac, wc, K, wt);
  TORCH_CHECK(threshold.dim() == 1 && threshold.size(0) == g.N &&
                  !threshold.is_floating_point() &&
                  threshold.device().is_cpu(),
              "xnor_gemm_threshold: expected an integer 'threshold' of shape "
              "[", g.N, "] (got ", threshold.sizes(), ")");
  TORCH_CHECK(flip.dim() == 1 && flip.size(0) == g.N &&
                  !flip.is_floating_point() && flip.device().is_cpu(),
              "xnor_gemm_threshold: expected a bool 'flip' of shape [", g.N,
              "] (got ", flip.sizes(), ")");
  const at::Tensor t = threshold.to(at::kLong).contiguous();
  const at::Tensor f = flip.to(at::kBool).contiguous();
  g.NW = (g.N + 63) / 64;

  // dot >= t  <=>  K - 2 pc >= t  <=>  pc <= floor((K - t) / 2).
  std::vector<int64_t> pcmax(g.NB * kBlock, -1);
  std::vector<uint64_t> flipw(std::max<int64_t>(g.NW, 1), 0);
  const int64_t* tp = t.data_ptr<int64_t>();
  const bool* fp = f.data_ptr<bool>();
  for (int64_t n = 0; n < g.N; ++n) {
    pcmax[n] = tp[n] > K ? -1 : std::min<int64_t>(K, (K - tp[n]) / 2);
    if (fp[n]) flipw[n / 64] |= uint64_t(1) << (n % 64);
  }
  g.pcmax = pcmax.data();
  g.flip = flipw.data();

  at::Tensor out = at::empty({g.M, g.NW}, ac.options().dtype(at::kLong));
  if (g.M == 0 || g.N == 0) return out;
  g.bits = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  launch(g, impl().bits);
  return out;
}


// ---------------------------------------------------------------------------
// xnor_chain: consecutive binary layers in one call, optionally with a max
// (OR) pooling of one layer's output bits over groups of rows.
//
// Layer l maps packed rows of K_l channels to N_l = K_{l+1} channels,
// bit = [dot >= t] (thresholds with the flips already folded into the
// weights). Layers 0 .. P (P = `pool`, or the last layer) run on blocks of
// rows that stay in L1 between layers; the bits of layer P are OR-ed over
// each group of rows [ptr[g], ptr[g + 1]), with the threshold row
// `group_set[g]` of layer P (thresholds that depend on the group, e.g. on
// its size); as an OR is unchanged by repeated rows, layers 0 .. P run on
// each group's distinct input rows only. Layers after P run on the pooled
// rows. The last layer writes
// bits (out_mode 0), int32 dots (1) or floats (2):
//   y = clamp(fma(float(dot) * scale [+ bias], alpha, beta), lo, hi),
// with `scale` one scalar or one per channel (an epilogue row).

namespace {

constexpr int64_t kChainRows = 64;  // Rows per block of the fused layers.

struct ChainLayer {
  const uint64_t* wt = nullptr;  // [NB, W, kBlock] interleaved weights
  int64_t K = 0, N = 0, W = 0, NB = 0, NW = 0, S = 0;
  std::vector<int64_t> pcmax;    // [S, NB * kBlock]; -1 pads (bit 0)
#if TGB_X86
  // The bit-sliced kernel (AVX2), when the transposed weights are given.
  bool sliced = false;
  avx2::Sliced sl;
  std::vector<uint64_t> wtn;     // complemented transposed weights
  std::vector<uint64_t> lim;     // [S][NV][B][4] bit-sliced pcmax + 1
#endif
};

// Whether the chain may use the bit-sliced AVX2 kernel (the dispatch picked
// AVX2: AVX-512 VPOPCNTDQ counts faster).
[[maybe_unused]] static bool use_sliced() {
#if TGB_X86
  return std::string(impl().name) == "avx2";
#else
  return false;
#endif
}

struct FloatEpilogue {
  const float* scales = nullptr;  // optional, one per channel
  const float* bias = nullptr;  // optional
  const float* alpha = nullptr;
  const float* beta = nullptr;
  float scale = 1.f, lo = 0.f, hi = 0.f;
};

Gemm chain_gemm(const ChainLayer& l, const uint64_t* a, int64_t M,
                const uint64_t* zeros, int64_t set) {
  Gemm g{};
  g.a = a;
  g.wt = l.wt;
  g.M = M;
  g.N = l.N;
  g.W = l.W;
  g.K = l.K;
  g.NB = l.NB;
  g.NW = l.NW;
  g.pcmax = l.pcmax.empty() ? nullptr
                            : l.pcmax.data() + set * l.NB * kBlock;
  g.flip = zeros;
  return g;
}

void apply_float_epilogue(const int32_t* dot, int64_t rows, int64_t N,
                          const FloatEpilogue& e, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t n = 0; n < N; ++n) {
      // The same float operations as BiLinear (dot * scale + bias) and
      // BatchNorm in inference mode (one fused multiply-add).
      float x = static_cast<float>(dot[r * N + n]) *
                (e.scales != nullptr ? e.scales[n] : e.scale);
      if (e.bias != nullptr) x = x + e.bias[n];
      float y = std::fma(x, e.alpha[n], e.beta[n]);
      y = y < e.lo ? e.lo : (y > e.hi ? e.hi : y);  // NaN stays NaN.
      out[r * N + n] = y;
    }
  }
}

// Float dot product accumulated in float64, in four independent sums (a
// single running sum waits on each addition's latency).
double dot_f64(const float* a, const float* b, int64_t n) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j)
      s[j] += static_cast<double>(a[i + j]) * b[i + j];
  for (; i < n; ++i) s[0] += static_cast<double>(a[i]) * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Runs one layer on `rows` rows: bits into `bits`, or OR-pooled into
// `oracc`, or dots into `dot`.
void run_layer(const Gemm& g0, int64_t rows, uint64_t* bits, uint64_t* oracc,
               int32_t* dot, bool parallel) {
  Gemm g = g0;
  g.M = rows;
  if (dot != nullptr) {
    g.dot = dot;
    if (parallel) launch(g, impl().dots);
    else impl().dots(g, 0, rows, 0, g.NB);
    return;
  }
  g.bits = bits;
  g.oracc = oracc;
  if (parallel) launch(g, impl().bits);
  else impl().bits(g, 0, rows, 0, g.NB);
}

}  // namespace

// Moves the distinct rows of `rows` (n rows of W words) to its front, in
// their order of first appearance; returns their number. Open addressing
// on a multiplicative hash of the words (a table of row numbers kept per
// thread, words compared inline): linear in n.
static int64_t distinct_rows(uint64_t* rows, int64_t n, int64_t W) {
  if (n <= 1) return n;
  int shift = 63;  // The table has 2^(64 - shift) >= 2n slots.
  while ((int64_t(1) << (64 - shift)) < 2 * n) --shift;
  const int64_t mask = (int64_t(1) << (64 - shift)) - 1;
  thread_local std::vector<int64_t> slot;  // row number, -1 = empty
  slot.assign(mask + 1, -1);
  const auto same = [W](const uint64_t* a, const uint64_t* b) {
    for (int64_t w = 0; w < W; ++w)
      if (a[w] != b[w]) return false;
    return true;
  };
  int64_t u = 0;
  for (int64_t r = 0; r < n; ++r) {
    const uint64_t* row = rows + r * W;
    uint64_t h = 0;
    for (int64_t w = 0; w < W; ++w) h = (h ^ row[w]) * 0x9E3779B97F4A7C15ull;
    for (int64_t s = static_cast<int64_t>(h >> shift);; s = (s + 1) & mask) {
      if (slot[s] < 0) {
        slot[s] = u;
        if (u != r) std::copy_n(row, W, rows + u * W);
        ++u;
        break;
      }
      if (same(row, rows + slot[s] * W)) break;
    }
  }
  return u;
}

// Contiguous int64 (without a dispatcher call when it already is one).
static at::Tensor as_long(const at::Tensor& t) {
  if (t.scalar_type() == at::kLong && t.is_contiguous()) return t;
  return t.to(at::kLong).contiguous();
}

static at::Tensor xnor_chain(const at::Tensor& x, at::TensorList weights,
                             at::IntArrayRef in_channels,
                             at::IntArrayRef out_channels,
                             at::TensorList thresholds, int64_t pool,
                             const std::optional<at::Tensor>& ptr,
                             const std::optional<at::Tensor>& group_set,
                             int64_t out_mode,
                             const std::optional<at::Tensor>& epilogue,
                             double scale, double lo, double hi,
                             const std::optional<at::Tensor>& in_threshold,
                             at::TensorList transposed,
                             const std::optional<at::Tensor>& final_weight,
                             const std::optional<at::Tensor>& final_bias,
                             at::TensorList toffsets,
                             const std::optional<at::Tensor>& first_weight,
                             const std::optional<at::Tensor>& first_bias) {
  const int64_t L = static_cast<int64_t>(weights.size());
  TORCH_CHECK(L >= 1 && static_cast<int64_t>(in_channels.size()) == L &&
                  static_cast<int64_t>(out_channels.size()) == L &&
                  static_cast<int64_t>(thresholds.size()) == L,
              "xnor_chain: expected as many weights, in_channels, "
              "out_channels and thresholds as layers");
  TORCH_CHECK(out_mode >= 0 && out_mode <= 2, "xnor_chain: out_mode must be "
              "0 (bits), 1 (dots) or 2 (floats)");
  TORCH_CHECK(pool >= -1 && pool < L, "xnor_chain: bad pool layer ", pool);
  TORCH_CHECK(!(pool == L - 1 && out_mode != 0), "xnor_chain: a pooled last "
              "layer outputs bits");
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu(), "xnor_chain: expected a "
              "2-D CPU input");
  const bool float_in = x.is_floating_point();
  TORCH_CHECK(!float_in || x.scalar_type() == at::kFloat,
              "xnor_chain: float inputs must be float32");
  TORCH_CHECK(float_in || x.scalar_type() == at::kLong,
              "xnor_chain: expected packed int64 or float32 inputs");

  std::vector<ChainLayer> layers(L);
  std::vector<at::Tensor> keep;
  int64_t max_nw = 1;
  for (int64_t l = 0; l < L; ++l) {
    ChainLayer& c = layers[l];
    c.K = in_channels[l];
    c.N = out_channels[l];
    TORCH_CHECK(c.K >= 1 && c.K <= INT32_MAX && c.N >= 1,
                "xnor_chain: bad channels of layer ", l);
    TORCH_CHECK(l == 0 || c.K == layers[l - 1].N, "xnor_chain: layer ", l,
                " takes ", c.K, " channels but layer ", l - 1, " gives ",
                layers[l - 1].N);
    c.W = (c.K + 63) / 64;
    c.NB = (c.N + kBlock - 1) / kBlock;
    c.NW = (c.N + 63) / 64;
    max_nw = std::max(max_nw, c.NW);
    const at::Tensor& w = weights[l];
    TORCH_CHECK(w.scalar_type() == at::kLong && w.device().is_cpu() &&
                    w.is_contiguous() && w.numel() == c.NB * c.W * kBlock,
                "xnor_chain: weights of layer ", l, " must be a contiguous "
                "int64 tensor of ", c.NB * c.W * kBlock, " interleaved words "
                "(got ", w.sizes(), ")");
    c.wt = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
    const bool dots = l == L - 1 && out_mode != 0;
    if (dots) continue;
    const at::Tensor& t = thresholds[l];
    const bool table = l == pool;
    TORCH_CHECK(!t.is_floating_point() && t.device().is_cpu() &&
                    t.dim() == (table ? 2 : 1) && t.size(-1) == c.N,
                "xnor_chain: thresholds of layer ", l, " must be an integer ",
                table ? "[S, N]" : "[N]", " tensor with N = ", c.N, " (got ",
                t.sizes(), ")");
    const at::Tensor tl = as_long(t);
    keep.push_back(tl);
    c.S = table ? tl.size(0) : 1;
    TORCH_CHECK(c.S >= 1, "xnor_chain: no thresholds for layer ", l);
    c.pcmax.assign(c.S * c.NB * kBlock, -1);
    const int64_t* tp = tl.data_ptr<int64_t>();
    for (int64_t s = 0; s < c.S; ++s)
      for (int64_t n = 0; n < c.N; ++n) {
        const int64_t tv = tp[s * c.N + n];
        c.pcmax[s * c.NB * kBlock + n] =
            tv > c.K ? -1 : std::min<int64_t>(c.K, (c.K - tv) / 2);
      }
  }
  const ChainLayer& first = layers[0];
  // An optional full-precision linear layer before the chain (its float
  // output binarized by 'in_threshold'): the input is that layer's input.
  at::Tensor lw, lb;
  if (first_weight.has_value()) {
    lw = first_weight->contiguous();
    TORCH_CHECK(float_in && in_threshold.has_value() &&
                    lw.scalar_type() == at::kFloat && lw.dim() == 2 &&
                    lw.size(0) == first.K,
                "xnor_chain: 'first_weight' must be a float32 [", first.K,
                ", C] tensor, with float inputs and 'in_threshold'");
    if (first_bias.has_value()) {
      lb = first_bias->contiguous();
      TORCH_CHECK(lb.scalar_type() == at::kFloat && lb.dim() == 1 &&
                      lb.size(0) == first.K,
                  "xnor_chain: 'first_bias' must be a float32 [", first.K,
                  "] tensor");
    }
  }
  const int64_t in_width = lw.defined() ? lw.size(1)
                           : float_in   ? first.K : first.W;
  TORCH_CHECK(x.size(1) == in_width, "xnor_chain: the input has ",
              x.size(1), float_in ? " channels" : " words", " per row, ",
              lw.defined() ? "'first_weight' takes " : "the first layer "
              "takes ", in_width, float_in ? " channels" : " words");
  const at::Tensor xc = x.contiguous();
  // The first layer by torch's own operation (the float thresholds are
  // exact for its rounding).
  const auto torch_linear = [&]() {
    return at::linear(xc, lw, lb.defined() ? std::optional<at::Tensor>(lb)
                                           : std::nullopt);
  };
  const int64_t M = xc.size(0);
  // Float inputs: bit = [x * sgn >= thr] per channel, or the sign.
  at::Tensor in_thr;
  const float* in_sgn = nullptr;
  const float* in_t = nullptr;
  if (in_threshold.has_value()) {
    in_thr = in_threshold->contiguous();
    TORCH_CHECK(float_in && in_thr.scalar_type() == at::kFloat &&
                    in_thr.dim() == 2 && in_thr.size(0) == 2 &&
                    in_thr.size(1) == first.K,
                "xnor_chain: 'in_threshold' must be a float32 [2, ", first.K,
                "] tensor (signs, thresholds) for float inputs");
    in_sgn = in_thr.data_ptr<float>();
    in_t = in_sgn + first.K;
  }

  FloatEpilogue epi;
  at::Tensor epi_t;
  const ChainLayer& last = layers[L - 1];
  if (out_mode == 2) {
    TORCH_CHECK(epilogue.has_value(), "xnor_chain: out_mode 2 needs the "
                "epilogue");
    epi_t = epilogue->contiguous();
    TORCH_CHECK(epi_t.scalar_type() == at::kFloat && epi_t.dim() == 2 &&
                    epi_t.size(0) >= 2 && epi_t.size(0) <= 4 &&
                    epi_t.size(1) == last.N,
                "xnor_chain: the epilogue must be a float32 [2, 3 or 4, ",
                last.N, "] tensor ([[scale,] bias,] alpha, beta)");
    const float* ep = epi_t.data_ptr<float>();
    const int64_t rows = epi_t.size(0);
    epi.scales = rows == 4 ? ep : nullptr;
    const int64_t o = rows - 2;  // Rows before alpha.
    epi.bias = o ? ep + (o - 1) * last.N : nullptr;
    epi.alpha = ep + o * last.N;
    epi.beta = ep + (o + 1) * last.N;
    epi.scale = static_cast<float>(scale);
    epi.lo = static_cast<float>(lo);
    epi.hi = static_cast<float>(hi);
  }

  // Groups.
  int64_t G = 0;
  std::vector<int64_t> offsets, sets;
  if (pool >= 0) {
    TORCH_CHECK(ptr.has_value() && group_set.has_value(), "xnor_chain: "
                "pooling needs 'ptr' and 'group_set'");
    const at::Tensor p = as_long(*ptr);
    const at::Tensor gs = as_long(*group_set);
    TORCH_CHECK(p.dim() == 1 && p.numel() >= 1 && gs.dim() == 1 &&
                    gs.numel() == p.numel() - 1,
                "xnor_chain: expected 'ptr' of shape [G + 1] and "
                "'group_set' of shape [G]");
    G = gs.numel();
    offsets.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + G + 1);
    sets.assign(gs.data_ptr<int64_t>(), gs.data_ptr<int64_t>() + G);
    TORCH_CHECK(offsets[0] == 0 && offsets[G] == M, "xnor_chain: 'ptr' must "
                "run from 0 to the number of rows (", M, ")");
    for (int64_t g = 0; g < G; ++g) {
      TORCH_CHECK(offsets[g] <= offsets[g + 1], "xnor_chain: 'ptr' must be "
                  "non-decreasing");
      TORCH_CHECK(sets[g] >= 0 && sets[g] < layers[pool].S, "xnor_chain: "
                  "group ", g, " selects threshold row ", sets[g], " of ",
                  layers[pool].S);
    }
  }

#if TGB_X86
  // Row-sliced path (see tchain_block) for PointNet-like chains: float
  // input, pooling over large groups; otherwise the channel-sliced kernel
  // for wide layers with the transposed weights given.
  const int64_t P0 = pool >= 0 ? pool : L - 1;
  bool use_t = pool >= 0 && use_sliced() && G > 0 && M >= 128 * G &&
               static_cast<int64_t>(toffsets.size()) == L;
  for (int64_t l = 0; l <= P0 && use_t; ++l) {
    const at::Tensor& o = toffsets[l];
    use_t = layers[l].K <= 1022 && o.scalar_type() == at::kByte &&
            o.is_contiguous() && o.dim() == 2 && o.size(0) == layers[l].N &&
            o.size(1) == (layers[l].K + 15) / 16 * 16;
  }
  for (int64_t l = 0; l <= P0 && !use_t; ++l) {
    ChainLayer& c = layers[l];
    if (l == L - 1 && out_mode != 0) continue;
    const bool have_t = static_cast<int64_t>(transposed.size()) == L &&
                        transposed[l].numel() > 0;
    if (have_t && use_sliced()) {
      const at::Tensor& tw = transposed[l];
      const int64_t NV = (c.N + 255) / 256, Kp = (c.K + 15) / 16 * 16;
      TORCH_CHECK(tw.scalar_type() == at::kLong && tw.is_contiguous() &&
                      tw.dim() == 2 && tw.size(0) == Kp &&
                      tw.size(1) == 4 * NV && c.K <= 1022,
                  "xnor_chain: transposed weights of layer ", l, " must be "
                  "a contiguous int64 [", Kp, ", ", 4 * NV, "] tensor");
      int B = 5;
      while ((int64_t(1) << B) <= c.K + 1) ++B;
      c.sliced = true;
      c.sl.wt = reinterpret_cast<const uint64_t*>(tw.data_ptr<int64_t>());
      c.wtn.resize(tw.numel());
      for (int64_t i = 0; i < tw.numel(); ++i) c.wtn[i] = ~c.sl.wt[i];
      c.sl.wtn = c.wtn.data();
      c.sl.Kp = Kp;
      c.sl.NV = NV;
      c.sl.B = B;
      c.lim.assign(c.S * NV * B * 4, 0);
      for (int64_t s = 0; s < c.S; ++s)
        for (int64_t n = 0; n < c.N; ++n) {
          const int64_t lim = c.pcmax[s * c.NB * kBlock + n] + 1;
          const int64_t v = n / 256, word = (n % 256) / 64;
          for (int b = 0; b < B; ++b)
            if ((lim >> b) & 1)
              c.lim[((s * NV + v) * B + b) * 4 + word] |=
                  uint64_t(1) << (n % 64);
        }
    }
  }
#endif

  // Row blocks of the fused part (when pooling: within one group, over its
  // distinct rows, below).
  struct Block { int64_t r0, r1, group; };
  std::vector<Block> blocks;
  if (pool < 0)
    for (int64_t r = 0; r < M; r += kChainRows)
      blocks.push_back({r, std::min(M, r + kChainRows), 0});
  const int64_t P = pool >= 0 ? pool : L - 1;
  const int64_t rows_out = pool >= 0 ? G : M;

  // An optional full-precision linear layer on the float output (the
  // classifier): float32 in and out, accumulated in float64.
  at::Tensor fw, fb;
  if (final_weight.has_value()) {
    TORCH_CHECK(out_mode == 2, "xnor_chain: a final linear layer needs "
                "float outputs (out_mode 2)");
    fw = final_weight->contiguous();
    TORCH_CHECK(fw.scalar_type() == at::kFloat && fw.dim() == 2 &&
                    fw.size(1) == last.N,
                "xnor_chain: 'final_weight' must be float32 [C, ", last.N,
                "]");
    if (final_bias.has_value()) {
      fb = final_bias->contiguous();
      TORCH_CHECK(fb.scalar_type() == at::kFloat && fb.dim() == 1 &&
                      fb.size(0) == fw.size(0),
                  "xnor_chain: 'final_bias' must be float32 [", fw.size(0),
                  "]");
    }
  }
  auto finish = [&](const at::Tensor& h) -> at::Tensor {
    if (!fw.defined()) return h;
    const int64_t R = h.size(0), C = fw.size(0), N = h.size(1);
    at::Tensor logits = at::empty({R, C}, h.options());
    const float* hp = h.data_ptr<float>();
    const float* wp = fw.data_ptr<float>();
    const float* bp = fb.defined() ? fb.data_ptr<float>() : nullptr;
    float* lp = logits.data_ptr<float>();
    at::parallel_for(0, R, std::max<int64_t>(1, 4096 / (C * N + 1)),
                     [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < C; ++c)
          lp[r * C + c] = static_cast<float>(
              (bp != nullptr ? bp[c] : 0.0) +
              dot_f64(hp + r * N, wp + c * N, N));
    });
    return logits;
  };

  at::Tensor out;
  if (out_mode == 0)
    out = at::empty({rows_out, last.NW}, xc.options().dtype(at::kLong));
  else if (out_mode == 1)
    out = at::empty({rows_out, last.N}, xc.options().dtype(at::kInt));
  else
    out = at::empty({rows_out, last.N}, xc.options().dtype(at::kFloat));
  if (rows_out == 0) return finish(out);

  const std::vector<uint64_t> zeros(max_nw, 0);
  const int64_t PNW = layers[P].NW;

  // Work per block, in word pairs, sets the parallel grain.
  int64_t block_work = 0;
  for (int64_t l = 0; l <= P; ++l)
    block_work += kChainRows * layers[l].NB * kBlock * layers[l].W;
  const int64_t grain =
      std::max<int64_t>(1, (int64_t(1) << 17) /
                               std::max<int64_t>(1, block_work));

#if !TGB_X86
  const bool use_t = false;
#endif
  // Without pooling, the first layer runs first.
  const at::Tensor xin = lw.defined() && pool < 0 ? torch_linear() : xc;
  const void* xp = xin.data_ptr();
  // Packs float rows [r0, r1) of `xf` into `dst` for the first binary layer.
  const auto pack_float = [&](const float* xf, uint64_t* dst, int64_t r0,
                              int64_t r1) {
    bool ok = true;
#if TGB_X86
    if (has_avx2() && in_sgn != nullptr)
      ok = avx2::pack_rows_f32_thr(xf, first.K, first.W, in_sgn, in_t, dst,
                                   r0, r1);
    else if (has_avx2())
      avx2::pack_rows_f32(xf, first.K, first.W, dst, r0, r1);
    else
#endif
    if (in_sgn != nullptr)
      ok = pack_rows_thr(xf, first.K, first.W, in_sgn, in_t, dst, r0, r1);
    else
      pack_rows<float>(xf, first.K, first.W, dst, r0, r1);
    TORCH_CHECK(ok, kNonFinite);
  };

  // With pooling, the rows are packed first (parallel over rows), then each
  // group keeps its distinct rows (parallel over groups), at the front of
  // its rows: the pooled bits are an OR over the rows, so a repeated row
  // adds nothing, and real clouds repeat many (nearby points share the
  // first layer's code; about half of a ModelNet40 cloud of 1,024 points).
  // The layers up to the pooled one run on the distinct rows only.
  const int64_t W0 = first.W;
  std::vector<uint64_t> packed;
  std::vector<int64_t> distinct;
  if (pool >= 0) {
    packed.resize(M * W0);
    at::Tensor xlin;  // torch's first layer (where a bit is uncertain)
    if (lw.defined()) {
#if TGB_X86
      // The row-sliced path takes the bits under a rounding bound; the
      // others call torch's layer (faster where torch has AVX-512).
      if (use_t) {
        avx2::LinearThr lt;
        lt.Kin = lw.size(1);
        lt.K = first.K;
        lt.Kp = (lt.K + 7) / 8 * 8;
        lt.wt.assign(lt.Kin * lt.Kp, 0.f);
        lt.wabs.assign(lt.Kin * lt.Kp, 0.f);
        lt.b.assign(lt.Kp, 0.f);
        lt.sgn.assign(lt.Kp, 0.f);
        lt.thr.assign(lt.Kp, 0.f);
        const float* wp = lw.data_ptr<float>();
        for (int64_t k = 0; k < lt.K; ++k) {
          for (int64_t i = 0; i < lt.Kin; ++i) {
            lt.wt[i * lt.Kp + k] = wp[k * lt.Kin + i];
            lt.wabs[i * lt.Kp + k] = std::fabs(wp[k * lt.Kin + i]);
          }
          lt.b[k] = lb.defined() ? lb.data_ptr<float>()[k] : 0.f;
          lt.sgn[k] = in_sgn[k];
          lt.thr[k] = in_t[k];
        }
        std::atomic<bool> sure{true};
        at::parallel_for(0, M, 256, [&](int64_t r0, int64_t r1) {
          if (!avx2::pack_rows_linear_thr(lt, static_cast<const float*>(xp),
                                          W0, packed.data(), r0, r1))
            sure = false;
        });
        if (!sure) xlin = torch_linear();
      } else
#endif
        xlin = torch_linear();
    }
    if (float_in && (!lw.defined() || xlin.defined())) {
      const float* xf = static_cast<const float*>(
          xlin.defined() ? xlin.data_ptr() : xp);
      at::parallel_for(0, M, 256, [&](int64_t r0, int64_t r1) {
        pack_float(xf, packed.data(), r0, r1);
      });
    } else if (!float_in) {
      std::copy_n(static_cast<const uint64_t*>(xp), M * W0, packed.data());
    }
    distinct.assign(G, 0);
    at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g)
        distinct[g] = distinct_rows(packed.data() + offsets[g] * W0,
                                    offsets[g + 1] - offsets[g], W0);
    });
    if (!use_t)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t r = offsets[g]; r < offsets[g] + distinct[g];
             r += kChainRows)
          blocks.push_back(
              {r, std::min(offsets[g] + distinct[g], r + kChainRows), g});
  }
  std::vector<uint64_t> partial(pool >= 0 ? blocks.size() * PNW : 0, 0);
  // The group of each row of `partial`.
  std::vector<int64_t> pgroup;
  for (const Block& b : blocks) pgroup.push_back(b.group);

#if TGB_X86
  if (use_t) {
    // Phase 1 (parallel over blocks of 256 rows of one group): the layers
    // before the pooled one, row-sliced. Phase 2 (parallel over groups and
    // channel ranges): the pooled layer, each channel over the blocks of its
    // group until one sets it.
    std::vector<avx2::TLayer> tl(P + 1);
    std::vector<std::vector<int64_t>> lim(P + 1);
    for (int64_t l = 0; l <= P; ++l) {
      const ChainLayer& c = layers[l];
      avx2::TLayer& t = tl[l];
      t.K = c.K;
      t.N = c.N;
      t.Kp = (c.K + 15) / 16 * 16;
      t.B = 5;
      while ((int64_t(1) << t.B) <= c.K + 1) ++t.B;
      t.off = toffsets[l].data_ptr<uint8_t>();
      lim[l].resize(c.S * c.N);
      for (int64_t s = 0; s < c.S; ++s)
        for (int64_t n = 0; n < c.N; ++n)
          lim[l][s * c.N + n] = c.pcmax[s * c.NB * kBlock + n] + 1;
    }
    struct TBlock { int64_t r0, rows, group; };
    std::vector<TBlock> tb;
    std::vector<int64_t> gfirst(G + 1, 0);
    for (int64_t g = 0; g < G; ++g) {
      gfirst[g] = static_cast<int64_t>(tb.size());
      const int64_t end = offsets[g] + distinct[g];
      for (int64_t r = offsets[g]; r < end; r += 256)
        tb.push_back({r, std::min<int64_t>(256, end - r), g});
    }
    gfirst[G] = static_cast<int64_t>(tb.size());
    const int64_t nb = static_cast<int64_t>(tb.size());
    const int64_t KpP = tl[P].Kp;
    int64_t kmax = 1;
    for (int64_t l = 0; l < P; ++l)
      kmax = std::max(kmax, std::max(tl[l].Kp, tl[l].N));
    std::vector<uint64_t> xs_all(nb * KpP * 8);
    at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
      std::vector<uint64_t> xa(8 * kmax), xb(8 * kmax);
      std::vector<const int64_t*> lims(P + 1);
      for (int64_t l = 0; l < P; ++l) lims[l] = lim[l].data();
      for (int64_t bi = b0; bi < b1; ++bi) {
        const TBlock& blk = tb[bi];
        avx2::tchain_inputs(tl, P, lims, packed.data() + blk.r0 * W0, W0,
                            blk.rows, xa.data(), xb.data(),
                            xs_all.data() + bi * KpP * 8);
      }
    });
    // Phase 2: items of (group, range of channels in whole words), taken
    // by the threads one at a time (a thread that the machine slows down
    // takes fewer).
    const int64_t NP = layers[P].N;
    const int64_t span = G >= 8 ? NP : std::max<int64_t>(
        64, (NP / 16 + 63) / 64 * 64);
    struct PItem { int64_t g, c0, c1; };
    std::vector<PItem> items;
    for (int64_t g = 0; g < G; ++g)
      if (gfirst[g + 1] > gfirst[g])
        for (int64_t c = 0; c < NP; c += span)
          items.push_back({g, c, std::min(NP, c + span)});
    partial.assign(G * PNW, 0);
    pgroup.clear();
    for (int64_t g = 0; g < G; ++g)
      if (gfirst[g + 1] > gfirst[g]) pgroup.push_back(g);
    // partial row i belongs to group pgroup[i]: index rows by group.
    std::vector<int64_t> prow(G, -1);
    for (size_t i = 0; i < pgroup.size(); ++i) prow[pgroup[i]] = i;
    const int64_t nitems = static_cast<int64_t>(items.size());
    std::atomic<int64_t> next{0};
    at::parallel_for(0, std::min<int64_t>(nitems, at::get_num_threads()), 1,
                     [&](int64_t, int64_t) {
      std::vector<const uint64_t*> xs;
      std::vector<int64_t> rows;
      for (int64_t ii = next++; ii < nitems; ii = next++) {
        const PItem& it = items[ii];
        xs.clear();
        rows.clear();
        for (int64_t b = gfirst[it.g]; b < gfirst[it.g + 1]; ++b) {
          xs.push_back(xs_all.data() + b * KpP * 8);
          rows.push_back(tb[b].rows);
        }
        avx2::tchain_pool(tl[P], xs.data(), rows.data(),
                          static_cast<int64_t>(xs.size()),
                          lim[P].data() + sets[it.g] * NP, it.c0, it.c1,
                          partial.data() + prow[it.g] * PNW);
      }
    });
  }
#endif

  if (!use_t)
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), grain,
                   [&](int64_t b0, int64_t b1) {
    std::vector<uint64_t> buf_a(kChainRows * std::max(max_nw, first.W));
    std::vector<uint64_t> buf_b(kChainRows * max_nw);
    std::vector<int32_t> dots;
    if (P == L - 1 && out_mode == 2) dots.resize(kChainRows * last.N);
    for (int64_t bi = b0; bi < b1; ++bi) {
      const Block& blk = blocks[bi];
      const int64_t rows = blk.r1 - blk.r0;
      const uint64_t* in;
      if (pool >= 0) {
        in = packed.data() + blk.r0 * W0;
      } else if (float_in) {
        pack_float(static_cast<const float*>(xp) + blk.r0 * first.K,
                   buf_a.data(), 0, rows);
        in = buf_a.data();
      } else {
        in = static_cast<const uint64_t*>(xp) + blk.r0 * first.W;
      }
      for (int64_t l = 0; l <= P; ++l) {
        const ChainLayer& c = layers[l];
        const bool pooled = l == pool;
        const int64_t set = pooled ? sets[blk.group] : 0;
#if TGB_X86
        if (c.sliced) {
          const int64_t Win = l == 0 ? first.W : layers[l - 1].NW;
          const uint64_t* lim = c.lim.data() + set * c.sl.NV * c.sl.B * 4;
          if (pooled) {
            avx2::sliced_rows(c.sl, in, Win, rows, lim, nullptr, c.NW,
                              partial.data() + bi * PNW);
            continue;
          }
          if (l < L - 1 || out_mode == 0) {
            uint64_t* dst =
                l == L - 1
                    ? reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()) +
                          blk.r0 * c.NW
                    : (in == buf_a.data() ? buf_b.data() : buf_a.data());
            avx2::sliced_rows(c.sl, in, Win, rows, lim, dst, c.NW, nullptr);
            in = dst;
            continue;
          }
        }
#endif
        const Gemm g = chain_gemm(c, in, rows, zeros.data(), set);
        if (pooled) {
          run_layer(g, rows, nullptr, partial.data() + bi * PNW, nullptr,
                    false);
        } else if (l == L - 1 && out_mode == 1) {
          run_layer(g, rows, nullptr, nullptr,
                    out.data_ptr<int32_t>() + blk.r0 * c.N, false);
        } else if (l == L - 1 && out_mode == 2) {
          run_layer(g, rows, nullptr, nullptr, dots.data(), false);
          apply_float_epilogue(dots.data(), rows, c.N, epi,
                               out.data_ptr<float>() + blk.r0 * c.N);
        } else if (l == L - 1) {
          run_layer(g, rows,
                    reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()) +
                        blk.r0 * c.NW,
                    nullptr, nullptr, false);
        } else {
          uint64_t* dst = in == buf_a.data() ? buf_b.data() : buf_a.data();
          run_layer(g, rows, dst, nullptr, nullptr, false);
          in = dst;
        }
      }
    }
  });
  if (pool < 0) return finish(out);

  // OR the blocks of each group; an empty group pools to 0, whose sign is
  // +1: all (valid) bits set.
  const ChainLayer& pl = layers[P];
  std::vector<uint64_t> pooled(G * PNW, 0);
  std::vector<uint64_t> valid(PNW, ~uint64_t(0));
  if (pl.N % 64) valid[PNW - 1] = (uint64_t(1) << (pl.N % 64)) - 1;
  std::vector<bool> seen(G, false);
  for (size_t bi = 0; bi < pgroup.size(); ++bi) {
    const int64_t g = pgroup[bi];
    seen[g] = true;
    for (int64_t w = 0; w < PNW; ++w)
      pooled[g * PNW + w] |= partial[bi * PNW + w];
  }
  for (int64_t g = 0; g < G; ++g)
    if (!seen[g])
      for (int64_t w = 0; w < PNW; ++w) pooled[g * PNW + w] = valid[w];
  if (P == L - 1) {
    std::memcpy(out.data_ptr<int64_t>(), pooled.data(),
                G * PNW * sizeof(uint64_t));
    return out;
  }

  // The layers after the pooling, on G rows.
  std::vector<uint64_t> cur = std::move(pooled), nxt;
  for (int64_t l = P + 1; l < L; ++l) {
    const ChainLayer& c = layers[l];
    const Gemm g = chain_gemm(c, cur.data(), G, zeros.data(), 0);
    if (l == L - 1 && out_mode == 1) {
      run_layer(g, G, nullptr, nullptr, out.data_ptr<int32_t>(), true);
    } else if (l == L - 1 && out_mode == 2) {
      std::vector<int32_t> d(G * c.N);
      run_layer(g, G, nullptr, nullptr, d.data(), true);
      apply_float_epilogue(d.data(), G, c.N, epi, out.data_ptr<float>());
    } else if (l == L - 1) {
      run_layer(g, G, reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()),
                nullptr, nullptr, true);
    } else {
      nxt.assign(G * c.NW, 0);
      run_layer(g, G, nxt.data(), nullptr, nullptr, true);
      std::swap(cur, nxt);
    }
  }
  return finish(out);
}

}  // namespace tgb

TORCH_LIBRARY(torch_geometric_binary, m) {
  m.def("pack_bits(Tensor x) -> Tensor");
  m.def("xnor_gemm(Tensor a, Tensor w, int K) -> Tensor");
  m.def("xnor_gemm_threshold(Tensor a, Tensor w, int K, Tensor threshold, "
        "Tensor flip) -> Tensor");
  m.def("xnor_chain(Tensor x, Tensor[] weights, int[] in_channels, "
        "int[] out_channels, Tensor[] thresholds, int pool, Tensor? ptr, "
        "Tensor? group_set, int out_mode, Tensor? epilogue, float scale, "
        "float lo, float hi, Tensor? in_threshold, "
        "Tensor[] transposed, Tensor? final_weight, Tensor? final_bias, "
        "Tensor[] toffsets, Tensor? first_weight=None, "
        "Tensor? first_bias=None) -> Tensor");
  m.def("xnor_isa() -> str", &tgb::isa);
  m.def("xnor_supported_isas() -> str[]", &tgb::supported_isas);
  m.def("xnor_set_isa(str name) -> str", &tgb::set_isa);
}

TORCH_LIBRARY_IMPL(torch_geometric_binary, CPU, m) {
  m.impl("pack_bits", &tgb::pack_bits);
  m.impl("xnor_gemm", &tgb::xnor_gemm);
  m.impl("xnor_chain", &tgb::xnor_chain);
  m.impl("xnor_gemm_threshold", &tgb::xnor_gemm_threshold);
}

// A plain module so that `import torch_geometric_binary.deploy._xnor` loads
// the library (which registers the operators above).
extern "C" PyMODINIT_FUNC PyInit__xnor(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_xnor",
                                      "XNOR-popcount kernels", -1, nullptr};
  return PyModule_Create(&module);
}
