// The chain executor (see xnor_chain.h): ChainPlan's layouts, built once,
// and its run. With AVX2 it also has bit-sliced kernels (carry-save
// counting across channels or across rows).
#include "xnor_chain.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cmath>
#include <cstring>

#include "xnor_kernels.h"
#include "xnor_ops.h"

namespace tgb {
namespace {

constexpr int64_t kChainRows = 64;  // Rows per block of the fused layers.

const char* kNonFinite =
    "xnor_chain: non-finite value in the float input (its thresholds hold "
    "for finite values)";

// Whether the chain may use the bit-sliced AVX2 kernels (the dispatch
// picked AVX2: AVX-512 VPOPCNTDQ counts faster).
[[maybe_unused]] bool use_sliced() {
#if TGB_X86
  return std::strcmp(impl().name, "avx2") == 0;
#else
  return false;
#endif
}

// Count bit planes of the bit-sliced kernels for K inputs: K + 1 < 2^B.
[[maybe_unused]] int planes(int64_t K) {
  int B = 5;
  while ((int64_t(1) << B) <= K + 1) ++B;
  return B;
}

// Contiguous int64 (without a dispatcher call when it already is one).
at::Tensor as_long(const at::Tensor& t) {
  if (t.scalar_type() == at::kLong && t.is_contiguous()) return t;
  return t.to(at::kLong).contiguous();
}

// pcmax [S, NB * kBlock] of thresholds [S, N] (-1 pads).
std::vector<int64_t> limits(const PlanLayer& c, const int64_t* t,
                            int64_t S) {
  std::vector<int64_t> pcmax(S * c.NB * kBlock, -1);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t n = 0; n < c.N; ++n)
      pcmax[s * c.NB * kBlock + n] = popcount_limit(c.K, t[s * c.N + n]);
  return pcmax;
}

// The bit-sliced limits pcmax + 1 of the channel-sliced kernel,
// [S][NV][B][4].
[[maybe_unused]] std::vector<uint64_t> sliced_limits(const PlanLayer& c,
                                                     const int64_t* pcmax,
                                                     int64_t S) {
  std::vector<uint64_t> lim(S * c.NV * c.B * 4, 0);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t n = 0; n < c.N; ++n) {
      const int64_t l = pcmax[s * c.NB * kBlock + n] + 1;
      const int64_t v = n / 256, word = (n % 256) / 64;
      for (int b = 0; b < c.B; ++b)
        if ((l >> b) & 1)
          lim[((s * c.NV + v) * c.B + b) * 4 + word] |= uint64_t(1)
                                                        << (n % 64);
    }
  return lim;
}

struct FloatEpilogue {
  const float* scales = nullptr;  // optional, one per channel
  const float* bias = nullptr;  // optional
  const float* alpha = nullptr;
  const float* beta = nullptr;
  float scale = 1.f, lo = 0.f, hi = 0.f;
};

Gemm chain_gemm(const PlanLayer& l, const uint64_t* a, int64_t M,
                const uint64_t* zeros, const int64_t* pcmax) {
  Gemm g{};
  g.a = a;
  g.wt = l.wt.data();
  g.M = M;
  g.N = l.N;
  g.W = l.W;
  g.K = l.K;
  g.NB = l.NB;
  g.NW = l.NW;
  g.pcmax = pcmax;
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

// Moves the distinct rows of `rows` (n rows of W words) to its front, in
// their order of first appearance; returns their number. Open addressing
// on a multiplicative hash of the words (a table of row numbers kept per
// thread, words compared inline): linear in n.
int64_t distinct_rows(uint64_t* rows, int64_t n, int64_t W) {
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

}  // namespace

// ---------------------------------------------------------------------------
// The plan.

ChainPlan::ChainPlan(std::vector<at::Tensor> weights, int64_t in_channels,
                     std::vector<at::Tensor> thresholds, int64_t pool,
                     int64_t out_mode)
    : pool_(pool), out_mode_(out_mode) {
  const int64_t L = static_cast<int64_t>(weights.size());
  TORCH_CHECK(L >= 1 && static_cast<int64_t>(thresholds.size()) == L,
              "ChainPlan: expected as many weights as thresholds, at least "
              "one (got ", L, " and ", thresholds.size(), ")");
  TORCH_CHECK(out_mode >= 0 && out_mode <= 2, "ChainPlan: out_mode must be "
              "0 (bits), 1 (dots) or 2 (floats)");
  TORCH_CHECK(pool >= -1 && pool < L, "ChainPlan: no layer ", pool,
              " to pool");
  TORCH_CHECK(!(pool == L - 1 && out_mode != 0), "ChainPlan: a pooled last "
              "layer outputs bits");
  layers_.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    PlanLayer& c = layers_[l];
    const at::Tensor& w = weights[l];
    c.K = l == 0 ? in_channels : layers_[l - 1].N;
    c.W = (c.K + 63) / 64;
    TORCH_CHECK(c.K >= 1 && c.K <= INT32_MAX, "ChainPlan: bad input "
                "channels of layer ", l, " (", c.K, ")");
    TORCH_CHECK(w.scalar_type() == at::kLong && w.device().is_cpu() &&
                    w.dim() == 2 && w.size(0) >= 1 && w.size(1) == c.W,
                "ChainPlan: the weights of layer ", l, " must be packed "
                "int64 [N, ", c.W, "] for its ", c.K, " inputs (got ",
                w.scalar_type(), " of shape ", w.sizes(), ")");
    c.N = w.size(0);
    c.NB = (c.N + kBlock - 1) / kBlock;
    c.NW = (c.N + 63) / 64;
    max_nw_ = std::max(max_nw_, c.NW);
    const at::Tensor wc = w.contiguous();
    const auto* wp = reinterpret_cast<const uint64_t*>(wc.data_ptr<int64_t>());
    c.wt = interleave(wp, c.N, c.W);

    const bool dots = l == L - 1 && out_mode != 0;
    const at::Tensor& t = thresholds[l];
    if (dots || l == pool) {
      TORCH_CHECK(t.numel() == 0, "ChainPlan: layer ", l, dots ? " outputs "
                  "dots" : " is pooled (its thresholds come with each call)",
                  " and takes no thresholds (got ", t.sizes(), ")");
    } else {
      TORCH_CHECK(!t.is_floating_point() && t.device().is_cpu() &&
                      t.dim() == 1 && t.size(0) == c.N,
                  "ChainPlan: the thresholds of layer ", l, " must be an "
                  "integer [", c.N, "] tensor (got ", t.scalar_type(),
                  " of shape ", t.sizes(), ")");
      c.pcmax = limits(c, as_long(t).data_ptr<int64_t>(), 1);
    }

#if TGB_X86
    // Bit-sliced layouts for the layers up to the pooled one (the layers
    // after it run on one row per group).
    const int64_t P = pool >= 0 ? pool : L - 1;
    if (l > P || c.K > kMaxSlicedInputs) continue;
    c.Kp = (c.K + 15) / 16 * 16;
    c.NV = (c.N + 255) / 256;
    c.B = planes(c.K);
    auto bit = [&](int64_t n, int64_t k) {
      return (wp[n * c.W + k / 64] >> (k % 64)) & 1;
    };
    if (c.N >= 256 && !dots) {  // Channel-sliced: full 256-bit vectors.
      c.tw.assign(c.Kp * c.NV * 4, 0);
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t k = 0; k < c.K; ++k)
          if (bit(n, k))
            c.tw[k * c.NV * 4 + n / 64] |= uint64_t(1) << (n % 64);
      c.twn.resize(c.tw.size());
      for (size_t i = 0; i < c.tw.size(); ++i) c.twn[i] = ~c.tw[i];
      if (!c.pcmax.empty()) c.lim = sliced_limits(c, c.pcmax.data(), 1);
    }
    if (pool >= 0) {  // Row-sliced: per channel and input, the word offset
      c.off.assign(c.N * c.Kp, 0);  // of the input's vector or complement.
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t k = 0; k < c.K; ++k)
          c.off[n * c.Kp + k] = static_cast<uint8_t>(4 * bit(n, k));
    }
#endif
  }
#if TGB_X86
  row_sliced_ = pool >= 0;
  for (int64_t l = 0; l <= pool; ++l)
    row_sliced_ = row_sliced_ && !layers_[l].off.empty();
#endif
}

void ChainPlan::set_epilogue(const at::Tensor& rows, double scale, double lo,
                             double hi) {
  const int64_t N = layers_.back().N;
  TORCH_CHECK(out_mode_ == 2, "ChainPlan: an epilogue needs float outputs "
              "(out_mode 2)");
  TORCH_CHECK(rows.scalar_type() == at::kFloat && rows.dim() == 2 &&
                  rows.size(0) >= 2 && rows.size(0) <= 4 &&
                  rows.size(1) == N,
              "ChainPlan: the epilogue must be a float32 [2, 3 or 4, ", N,
              "] tensor ([[scale,] bias,] alpha, beta) (got ",
              rows.scalar_type(), " of shape ", rows.sizes(), ")");
  epi_ = rows.contiguous().clone();
  scale_ = static_cast<float>(scale);
  lo_ = static_cast<float>(lo);
  hi_ = static_cast<float>(hi);
}

// A copy of an optional float32 bias of n entries (undefined if absent).
static at::Tensor bias_copy(const std::optional<at::Tensor>& bias, int64_t n,
                            const char* what) {
  if (!bias.has_value()) return at::Tensor();
  TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 &&
                  bias->size(0) == n,
              "ChainPlan: ", what, " must be a float32 [", n,
              "] tensor (got ", bias->scalar_type(), " of shape ",
              bias->sizes(), ")");
  return bias->contiguous().clone();
}

void ChainPlan::set_input(const at::Tensor& in_threshold,
                          const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias) {
  const int64_t K = layers_[0].K;
  TORCH_CHECK(in_threshold.scalar_type() == at::kFloat &&
                  in_threshold.dim() == 2 && in_threshold.size(0) == 2 &&
                  in_threshold.size(1) == K,
              "ChainPlan: 'in_threshold' must be a float32 [2, ", K,
              "] tensor (signs, thresholds) (got ", in_threshold.scalar_type(),
              " of shape ", in_threshold.sizes(), ")");
  const at::Tensor t = in_threshold.contiguous();
  const float* tp = t.data_ptr<float>();
  in_sgn_.assign(tp, tp + K);
  in_thr_.assign(tp + K, tp + 2 * K);
  first_w_ = first_b_ = at::Tensor();
  lt_wt_.clear();
  if (!weight.has_value()) {
    TORCH_CHECK(!bias.has_value(), "ChainPlan: a first-layer bias needs "
                "its weight");
    return;
  }
  TORCH_CHECK(weight->scalar_type() == at::kFloat && weight->dim() == 2 &&
                  weight->size(0) == K,
              "ChainPlan: the first layer's weight must be a float32 [", K,
              ", C] tensor (got ", weight->scalar_type(), " of shape ",
              weight->sizes(), ")");
  first_w_ = weight->contiguous().clone();
  first_b_ = bias_copy(bias, K, "the first layer's bias");
  // The weights for the rounding-bound kernel: transposed, padded to 8.
  const int64_t Kin = first_w_.size(1), Kp = (K + 7) / 8 * 8;
  const float* wp = first_w_.data_ptr<float>();
  lt_wt_.assign(Kin * Kp, 0.f);
  lt_wabs_.assign(Kin * Kp, 0.f);
  lt_b_.assign(Kp, 0.f);
  lt_sgn_.assign(Kp, 0.f);
  lt_thr_.assign(Kp, 0.f);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t i = 0; i < Kin; ++i) {
      lt_wt_[i * Kp + k] = wp[k * Kin + i];
      lt_wabs_[i * Kp + k] = std::fabs(wp[k * Kin + i]);
    }
    lt_b_[k] = first_b_.defined() ? first_b_.data_ptr<float>()[k] : 0.f;
    lt_sgn_[k] = in_sgn_[k];
    lt_thr_[k] = in_thr_[k];
  }
}

void ChainPlan::set_final(const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias) {
  const int64_t N = layers_.back().N;
  TORCH_CHECK(out_mode_ == 2, "ChainPlan: a final linear layer needs float "
              "outputs (out_mode 2)");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 2 &&
                  weight.size(1) == N,
              "ChainPlan: the final weight must be float32 [C, ", N,
              "] (got ", weight.scalar_type(), " of shape ", weight.sizes(),
              ")");
  final_w_ = weight.contiguous().clone();
  final_b_ = bias_copy(bias, weight.size(0), "the final bias");
}

// ---------------------------------------------------------------------------
// The run.

at::Tensor ChainPlan::run(const at::Tensor& x,
                          const std::optional<at::Tensor>& counts,
                          const std::optional<at::Tensor>& pool_thresholds,
                          const std::optional<at::Tensor>& group_set) const {
  const std::vector<PlanLayer>& layers = layers_;
  const int64_t L = static_cast<int64_t>(layers.size());
  const int64_t pool = pool_, out_mode = out_mode_;
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu(), "xnor_chain: expected a "
              "2-D CPU input (got shape ", x.sizes(), ")");
  const bool float_in = x.is_floating_point();
  TORCH_CHECK(!float_in || x.scalar_type() == at::kFloat,
              "xnor_chain: float inputs must be float32");
  TORCH_CHECK(float_in || x.scalar_type() == at::kLong,
              "xnor_chain: expected packed int64 or float32 inputs");
  TORCH_CHECK(float_in || in_sgn_.empty(), "xnor_chain: this plan "
              "binarizes float32 inputs (got packed int64)");
  const PlanLayer& first = layers[0];
  const PlanLayer& last = layers[L - 1];
  const at::Tensor& lw = first_w_;
  const at::Tensor& lb = first_b_;
  const int64_t in_width = lw.defined() ? lw.size(1)
                           : float_in   ? first.K : first.W;
  TORCH_CHECK(x.size(1) == in_width, "xnor_chain: the input has ",
              x.size(1), float_in ? " channels" : " words", " per row, ",
              lw.defined() ? "the first linear layer takes " : "the first "
              "layer takes ", in_width, float_in ? " channels" : " words");
  const at::Tensor xc = x.contiguous();
  // The first layer by torch's own operation (the float thresholds are
  // exact for its rounding).
  const auto torch_linear = [&]() {
    return at::linear(xc, lw, lb.defined() ? std::optional<at::Tensor>(lb)
                                           : std::nullopt);
  };
  const int64_t M = xc.size(0);
  // Float inputs: bit = [x * sgn >= thr] per channel, or the sign.
  const float* in_sgn = in_sgn_.empty() ? nullptr : in_sgn_.data();
  const float* in_t = in_thr_.empty() ? nullptr : in_thr_.data();

  FloatEpilogue epi;
  if (out_mode == 2) {
    TORCH_CHECK(epi_.defined(), "xnor_chain: out_mode 2 needs the epilogue "
                "(ChainPlan.set_epilogue)");
    const float* ep = epi_.data_ptr<float>();
    const int64_t rows = epi_.size(0);
    epi.scales = rows == 4 ? ep : nullptr;
    const int64_t o = rows - 2;  // Rows before alpha.
    epi.bias = o ? ep + (o - 1) * last.N : nullptr;
    epi.alpha = ep + o * last.N;
    epi.beta = ep + (o + 1) * last.N;
    epi.scale = scale_;
    epi.lo = lo_;
    epi.hi = hi_;
  }

  // Groups, and the pooled layer's popcount limits.
  int64_t G = 0, S = 0;
  std::vector<int64_t> offsets, sets, pool_pcmax;
  if (pool >= 0) {
    TORCH_CHECK(counts.has_value() && pool_thresholds.has_value() &&
                    group_set.has_value(),
                "xnor_chain: pooling needs 'counts', 'pool_thresholds' and "
                "'group_set'");
    const at::Tensor cn = as_long(*counts);
    const at::Tensor gs = as_long(*group_set);
    TORCH_CHECK(cn.dim() == 1 && gs.dim() == 1 && gs.numel() == cn.numel(),
                "xnor_chain: expected 'counts' and 'group_set' of one shape "
                "[G] (got ", cn.sizes(), " and ", gs.sizes(), ")");
    G = cn.numel();
    const int64_t* cp = cn.data_ptr<int64_t>();
    offsets.assign(G + 1, 0);
    for (int64_t g = 0; g < G; ++g) {
      TORCH_CHECK(cp[g] >= 0, "xnor_chain: group ", g, " has a negative "
                  "count (", cp[g], ")");
      offsets[g + 1] = offsets[g] + cp[g];
    }
    TORCH_CHECK(offsets[G] == M, "xnor_chain: the groups hold ", offsets[G],
                " rows but the input has ", M);
    const PlanLayer& pl = layers[pool];
    const at::Tensor& pt = *pool_thresholds;
    TORCH_CHECK(!pt.is_floating_point() && pt.device().is_cpu() &&
                    pt.dim() == 2 && pt.size(0) >= 1 && pt.size(1) == pl.N,
                "xnor_chain: the pooled layer's thresholds must be an "
                "integer [S, ", pl.N, "] tensor (got ", pt.sizes(), ")");
    S = pt.size(0);
    sets.assign(gs.data_ptr<int64_t>(), gs.data_ptr<int64_t>() + G);
    for (int64_t g = 0; g < G; ++g)
      TORCH_CHECK(sets[g] >= 0 && sets[g] < S, "xnor_chain: group ", g,
                  " selects threshold row ", sets[g], " of ", S);
    pool_pcmax = limits(pl, as_long(pt).data_ptr<int64_t>(), S);
  } else {
    TORCH_CHECK(!counts.has_value() && !pool_thresholds.has_value() &&
                    !group_set.has_value(),
                "xnor_chain: groups given to a chain without pooling");
  }
  // Layer l's popcount limits for threshold row `set`.
  const auto pcmax_of = [&](int64_t l, int64_t set) -> const int64_t* {
    if (l == pool) return pool_pcmax.data() + set * layers[l].NB * kBlock;
    return layers[l].pcmax.empty() ? nullptr : layers[l].pcmax.data();
  };

#if TGB_X86
  // Row-sliced path (tchain_*) for PointNet-like chains: pooling over large
  // groups; otherwise the channel-sliced kernel for wide layers.
  const bool use_t = row_sliced_ && use_sliced() && G > 0 && M >= 128 * G;
  const bool chan_sliced = !use_t && use_sliced();
  std::vector<uint64_t> pool_lim;  // The pooled layer's, [S][NV][B][4].
  if (chan_sliced && pool >= 0 && !layers[pool].tw.empty())
    pool_lim = sliced_limits(layers[pool], pool_pcmax.data(), S);
#else
  const bool use_t = false;
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
  const at::Tensor& fw = final_w_;
  const at::Tensor& fb = final_b_;
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

  const std::vector<uint64_t> zeros(max_nw_, 0);
  const int64_t PNW = layers[P].NW;

  // Work per block, in word pairs, sets the parallel grain.
  int64_t block_work = 0;
  for (int64_t l = 0; l <= P; ++l)
    block_work += kChainRows * layers[l].NB * kBlock * layers[l].W;
  const int64_t grain =
      std::max<int64_t>(1, (int64_t(1) << 17) /
                               std::max<int64_t>(1, block_work));

  // Without pooling, the first layer runs first.
  const at::Tensor xin = lw.defined() && pool < 0 ? torch_linear() : xc;
  const void* xp = xin.data_ptr();
  // Packs float rows [r0, r1) of `xf` into `dst` for the first binary layer.
  const auto pack_float = [&](const float* xf, uint64_t* dst, int64_t r0,
                              int64_t r1) {
    // A ValueError (and only this): the Python side reports it as
    // NonFiniteInput.
    TORCH_CHECK_VALUE(pack_float_rows(xf, first.K, first.W, in_sgn, in_t,
                                      dst, r0, r1),
                      kNonFinite);
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
        lt.wt = lt_wt_.data();
        lt.wabs = lt_wabs_.data();
        lt.b = lt_b_.data();
        lt.sgn = lt_sgn_.data();
        lt.thr = lt_thr_.data();
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
      const PlanLayer& c = layers[l];
      avx2::TLayer& t = tl[l];
      t.K = c.K;
      t.N = c.N;
      t.Kp = c.Kp;
      t.B = c.B;
      t.off = c.off.data();
      const int64_t SL = l == P ? S : 1;
      lim[l].resize(SL * c.N);
      for (int64_t s = 0; s < SL; ++s) {
        const int64_t* pc = pcmax_of(l, s);
        for (int64_t n = 0; n < c.N; ++n) lim[l][s * c.N + n] = pc[n] + 1;
      }
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
    std::vector<uint64_t> buf_a(kChainRows * std::max(max_nw_, first.W));
    std::vector<uint64_t> buf_b(kChainRows * max_nw_);
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
        const PlanLayer& c = layers[l];
        const bool pooled = l == pool;
        const int64_t set = pooled ? sets[blk.group] : 0;
#if TGB_X86
        if (chan_sliced && !c.tw.empty()) {
          avx2::Sliced sl;
          sl.wt = c.tw.data();
          sl.wtn = c.twn.data();
          sl.Kp = c.Kp;
          sl.NV = c.NV;
          sl.B = c.B;
          const int64_t Win = l == 0 ? first.W : layers[l - 1].NW;
          const uint64_t* lim =
              (pooled ? pool_lim.data() : c.lim.data()) +
              set * c.NV * c.B * 4;
          if (pooled) {
            avx2::sliced_rows(sl, in, Win, rows, lim, nullptr, c.NW,
                              partial.data() + bi * PNW);
            continue;
          }
          if (l < L - 1 || out_mode == 0) {
            uint64_t* dst =
                l == L - 1
                    ? reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()) +
                          blk.r0 * c.NW
                    : (in == buf_a.data() ? buf_b.data() : buf_a.data());
            avx2::sliced_rows(sl, in, Win, rows, lim, dst, c.NW, nullptr);
            in = dst;
            continue;
          }
        }
#endif
        const Gemm g = chain_gemm(c, in, rows, zeros.data(),
                                  pcmax_of(l, set));
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
  const PlanLayer& pl = layers[P];
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
    const PlanLayer& c = layers[l];
    const Gemm g = chain_gemm(c, cur.data(), G, zeros.data(), pcmax_of(l, 0));
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

at::Tensor xnor_chain_run(const c10::intrusive_ptr<ChainPlan>& plan,
                          const at::Tensor& x,
                          const std::optional<at::Tensor>& counts,
                          const std::optional<at::Tensor>& pool_thresholds,
                          const std::optional<at::Tensor>& group_set) {
  return plan->run(x, counts, pool_thresholds, group_set);
}

}  // namespace tgb
