// The run-time kernel dispatch and the GEMM operators
// torch.ops.torch_geometric_binary.{xnor_gemm, xnor_gemm_threshold}.
//
// For packed rows a, w of K channels (bit 1 = +1, bit 0 = -1, padding 0):
//   dot(a, w) = sum_k sign_a[k] * sign_w[k] = K - 2 * popcount(a XOR w).
// The tile kernels exist once per instruction set (AVX-512 VPOPCNTDQ, AVX2
// nibble lookup, scalar POPCNT on x86; NEON on AArch64; portable) and the
// fastest one the CPU runs is picked at run time.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <atomic>

#include "xnor_kernels.h"
#include "xnor_ops.h"

namespace tgb {

// ---------------------------------------------------------------------------
// Run-time dispatch (the table of kernels, kImpls, and cpu_supports are in
// xnor_kernels.h).

namespace {
std::atomic<int> g_impl{-1};
}  // namespace

const Impl& impl() {
  int i = g_impl.load(std::memory_order_relaxed);
  if (i < 0) {
    i = best_impl();
    g_impl.store(i, std::memory_order_relaxed);
  }
  return kImpls[i];
}

std::string isa() { return impl().name; }

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (int i = 0; i < kNumImpls; ++i)
    if (cpu_supports(kImpls[i].name)) out.emplace_back(kImpls[i].name);
  return out;
}

std::string set_isa(const std::string& name) {
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

void launch(const Gemm& g, RunFn fn) {
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

std::vector<uint64_t> interleave(const uint64_t* w, int64_t N, int64_t W) {
  const int64_t NB = (N + kBlock - 1) / kBlock;
  std::vector<uint64_t> wt(NB * W * kBlock, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < W; ++k)
      wt[((n / kBlock) * W + k) * kBlock + n % kBlock] = w[n * W + k];
  return wt;
}

// ---------------------------------------------------------------------------
// Operators.

namespace {

void check_packed(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.scalar_type() == at::kLong &&
                  t.device().is_cpu(),
              "xnor_gemm: expected '", name, "' to be a 2-D int64 CPU tensor "
              "of packed bits (got ", t.sizes(), ", ", t.scalar_type(), ")");
}

// Validates the operands and lays the weights out as [NB, W, kBlock].
Gemm make_gemm(const at::Tensor& a, const at::Tensor& w, int64_t K,
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
  wt = interleave(reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>()),
                  g.N, g.W);
  g.wt = wt.data();
  return g;
}

}  // namespace

at::Tensor xnor_gemm(const at::Tensor& a, const at::Tensor& w, int64_t K) {
  const at::Tensor ac = a.contiguous(), wc = w.contiguous();
  std::vector<uint64_t> wt;
  Gemm g = make_gemm(ac, wc, K, wt);
  at::Tensor out = at::empty({g.M, g.N}, ac.options().dtype(at::kInt));
  if (g.M == 0 || g.N == 0) return out;
  g.dot = out.data_ptr<int32_t>();
  launch(g, impl().dots);
  return out;
}

at::Tensor xnor_gemm_threshold(const at::Tensor& a, const at::Tensor& w,
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

  std::vector<int64_t> pcmax(g.NB * kBlock, -1);
  std::vector<uint64_t> flipw(std::max<int64_t>(g.NW, 1), 0);
  const int64_t* tp = t.data_ptr<int64_t>();
  const bool* fp = f.data_ptr<bool>();
  for (int64_t n = 0; n < g.N; ++n) {
    pcmax[n] = popcount_limit(K, tp[n]);
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

}  // namespace tgb
