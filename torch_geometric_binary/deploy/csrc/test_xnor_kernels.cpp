// Standalone check of the XNOR-popcount tile kernels (no torch): every
// instruction set this build has and this CPU supports (x86: AVX-512
// VPOPCNTDQ, AVX2, POPCNT; AArch64: NEON; and the portable one), through the
// dispatch's own entry points (Impl::dots and Impl::bits, i.e. run<false>
// and run<true> of xnor_driver.inc), against a direct reference on the
// unpacked definition, bit for bit:
//   dot  = K - 2 popcount(a XOR w)          (xnor_gemm),
//   bits = [dot >= t] XOR flip              (xnor_gemm_threshold),
//   oracc = OR over the rows of bits        (the chain's max pooling).
// Many shapes (M, K, N not multiples of 64, of the 16-channel block or of
// the row tiles; K up to 2100, past the 31-word byte counters), with the
// rows and blocks split into ranges as the parallel launcher does.
//
// Build and run (scripts/check_arm.sh does both, natively and for AArch64
// under qemu-aarch64):
//   g++ -O2 -std=c++17 -o test_xnor_kernels test_xnor_kernels.cpp
//   ./test_xnor_kernels            # [--quick] fewer shapes
// Exits 0 if every check passes, 1 on the first mismatch.
#include "xnor_kernels.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>

using tgb::Gemm;
using tgb::kBlock;

namespace {

struct Problem {
  int64_t M, K, N, W, NB, NW;
  std::vector<uint64_t> a, w, wt;  // packed rows; w: [N, W]; wt interleaved
  std::vector<int64_t> t;          // thresholds [N]
  std::vector<uint8_t> flip;       // [N]
  std::vector<int64_t> pcmax;      // [NB * kBlock], as xnor_gemm_threshold
  std::vector<uint64_t> flipw;     // [NW]
};

uint64_t valid_mask(int64_t K, int64_t w) {
  const int64_t n = std::min<int64_t>(64, K - 64 * w);
  return n == 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
}

Problem make_problem(int64_t M, int64_t K, int64_t N, std::mt19937_64& rng) {
  Problem p;
  p.M = M;
  p.K = K;
  p.N = N;
  p.W = (K + 63) / 64;
  p.NB = (N + kBlock - 1) / kBlock;
  p.NW = (N + 63) / 64;
  // Random bits, sometimes biased (long runs of agreement or disagreement
  // push the counts to 0 or K); padding bits 0.
  auto word = [&](int64_t w, int bias) {
    uint64_t x = rng();
    if (bias == 1) x &= rng();
    if (bias == 2) x |= rng();
    return x & valid_mask(K, w);
  };
  const int bias_a = static_cast<int>(rng() % 3);
  const int bias_w = static_cast<int>(rng() % 3);
  p.a.resize(M * p.W);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t w = 0; w < p.W; ++w) p.a[m * p.W + w] = word(w, bias_a);
  p.w.resize(N * p.W);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t w = 0; w < p.W; ++w) p.w[n * p.W + w] = word(w, bias_w);
  // A copy of a row among the weights (count 0 for that pair) and its
  // complement (count K: every byte counter at its maximum).
  if (M > 0 && N > 1)
    std::copy_n(p.a.data(), p.W, p.w.data() + (N / 2) * p.W);
  if (M > 0 && N > 2)
    for (int64_t w = 0; w < p.W; ++w)
      p.w[(N - 1) * p.W + w] = ~p.a[(M - 1) * p.W + w] & valid_mask(K, w);
  // The interleaved layout of interleave() (xnor_gemm.cpp).
  p.wt.assign(p.NB * p.W * kBlock, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < p.W; ++k)
      p.wt[((n / kBlock) * p.W + k) * kBlock + n % kBlock] = p.w[n * p.W + k];
  // Thresholds: mostly near the dots, some beyond [-K, K] either way, and
  // the conversion of xnor_gemm_threshold: dot >= t <=> pc <= (K - t) / 2.
  p.t.resize(N);
  p.flip.resize(N);
  p.pcmax.assign(p.NB * kBlock, -1);
  p.flipw.assign(std::max<int64_t>(p.NW, 1), 0);
  for (int64_t n = 0; n < N; ++n) {
    const uint64_t u = rng() % 16;
    int64_t t;
    if (u == 0) t = K + 1 + static_cast<int64_t>(rng() % 5);
    else if (u == 1) t = -K - static_cast<int64_t>(rng() % 5);
    else if (u == 2) t = K;
    else if (u == 3) t = -K;
    else t = static_cast<int64_t>(rng() % (2 * K + 1)) - K;
    if (rng() % 2) t /= 4;  // Closer to the typical dots.
    p.t[n] = t;
    p.flip[n] = static_cast<uint8_t>(rng() % 2);
    p.pcmax[n] = t > K ? -1 : std::min<int64_t>(K, (K - t) / 2);
    if (p.flip[n]) p.flipw[n / 64] |= uint64_t(1) << (n % 64);
  }
  return p;
}

// The reference, straight from the definitions.
int32_t ref_dot(const Problem& p, int64_t m, int64_t n) {
  int64_t pc = 0;
  for (int64_t w = 0; w < p.W; ++w) {
    // SWAR bit count (no popcount instruction or builtin).
    uint64_t x = p.a[m * p.W + w] ^ p.w[n * p.W + w];
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    pc += static_cast<int64_t>((x * 0x0101010101010101ull) >> 56);
  }
  return static_cast<int32_t>(p.K - 2 * pc);
}

Gemm base_gemm(const Problem& p) {
  Gemm g{};
  g.a = p.a.data();
  g.wt = p.wt.data();
  g.M = p.M;
  g.N = p.N;
  g.W = p.W;
  g.K = p.K;
  g.NB = p.NB;
  g.NW = p.NW;
  g.pcmax = p.pcmax.data();
  g.flip = p.flipw.data();
  return g;
}

// Runs fn over rows and blocks split as launch() (xnor_gemm.cpp) does: row
// ranges at random points, block ranges at random multiples of 4 blocks
// (one output word), or the whole problem in one call.
void launch(const Gemm& g, tgb::RunFn fn, std::mt19937_64& rng) {
  const bool whole = rng() % 2 == 0;
  const int64_t rstep = whole ? g.M : 1 + static_cast<int64_t>(rng() % 70);
  const int64_t bstep =
      whole ? g.NB + 4 : 4 * (1 + static_cast<int64_t>(rng() % 3));
  for (int64_t m0 = 0; m0 < g.M; m0 += rstep)
    for (int64_t b0 = 0; b0 < g.NB; b0 += bstep)
      fn(g, m0, std::min(g.M, m0 + rstep), b0, std::min(g.NB, b0 + bstep));
}

struct Stats {
  int64_t problems = 0, dots = 0, words = 0, ors = 0;
};

bool check(const tgb::Impl& impl, const Problem& p, std::mt19937_64& rng,
           Stats& st) {
  std::vector<int32_t> ref(p.M * p.N);
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t n = 0; n < p.N; ++n) ref[m * p.N + n] = ref_dot(p, m, n);
  std::vector<uint64_t> ref_bits(p.M * p.NW, 0), ref_or(p.NW, 0);
  for (int64_t m = 0; m < p.M; ++m)
    for (int64_t n = 0; n < p.N; ++n) {
      const bool bit = (ref[m * p.N + n] >= p.t[n]) != (p.flip[n] != 0);
      if (bit) {
        ref_bits[m * p.NW + n / 64] |= uint64_t(1) << (n % 64);
        ref_or[n / 64] |= uint64_t(1) << (n % 64);
      }
    }
  auto fail = [&](const char* what, int64_t m, int64_t i, long long got,
                  long long want) {
    std::printf("MISMATCH %s: isa=%s M=%lld K=%lld N=%lld row=%lld "
                "index=%lld got=%lld (0x%llx) want=%lld (0x%llx)\n",
                what, impl.name, (long long)p.M, (long long)p.K,
                (long long)p.N, (long long)m, (long long)i, got,
                (unsigned long long)got, want, (unsigned long long)want);
    return false;
  };

  // Dots. A sentinel around the output catches writes past N.
  Gemm g = base_gemm(p);
  std::vector<int32_t> dot(p.M * p.N + 16, 0x5a5a5a5a);
  g.dot = dot.data();
  launch(g, impl.dots, rng);
  for (int64_t i = 0; i < p.M * p.N; ++i)
    if (dot[i] != ref[i])
      return fail("dot", i / p.N, i % p.N, dot[i], ref[i]);
  for (int64_t i = p.M * p.N; i < p.M * p.N + 16; ++i)
    if (dot[i] != 0x5a5a5a5a) return fail("dot past end", -1, i, dot[i], 0);
  st.dots += p.M * p.N;

  // Bits.
  g = base_gemm(p);
  std::vector<uint64_t> bits(p.M * p.NW + 4, 0xa5a5a5a5a5a5a5a5ull);
  g.bits = bits.data();
  launch(g, impl.bits, rng);
  for (int64_t i = 0; i < p.M * p.NW; ++i)
    if (bits[i] != ref_bits[i])
      return fail("bits", i / p.NW, i % p.NW, (long long)bits[i],
                  (long long)ref_bits[i]);
  for (int64_t i = p.M * p.NW; i < p.M * p.NW + 4; ++i)
    if (bits[i] != 0xa5a5a5a5a5a5a5a5ull)
      return fail("bits past end", -1, i, (long long)bits[i], 0);
  st.words += p.M * p.NW;

  // OR pooling over all rows (bits is not written).
  g = base_gemm(p);
  std::vector<uint64_t> oracc(p.NW, 0);
  std::vector<uint64_t> untouched(1, 0x1234);
  g.bits = untouched.data();
  g.oracc = oracc.data();
  launch(g, impl.bits, rng);
  for (int64_t i = 0; i < p.NW; ++i)
    if (oracc[i] != ref_or[i])
      return fail("oracc", -1, i, (long long)oracc[i], (long long)ref_or[i]);
  if (untouched[0] != 0x1234)
    return fail("oracc wrote bits", -1, 0, (long long)untouched[0], 0x1234);
  st.ors += p.NW;
  ++st.problems;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
#if TGB_X86
  const char* arch = "x86";
#elif TGB_NEON
  const char* arch = "aarch64 NEON";
#else
  const char* arch = "portable";
#endif
  std::vector<const tgb::Impl*> impls;
  std::string names;
  for (int i = 0; i < tgb::kNumImpls; ++i) {
    if (!tgb::cpu_supports(tgb::kImpls[i].name)) {
      std::printf("skip %s (not supported by this CPU)\n",
                  tgb::kImpls[i].name);
      continue;
    }
    impls.push_back(&tgb::kImpls[i]);
    names += std::string(names.empty() ? "" : ", ") + tgb::kImpls[i].name;
  }
  std::printf("test_xnor_kernels: %s build; dispatch default '%s'; "
              "checking %s\n",
              arch, tgb::kImpls[tgb::best_impl()].name, names.c_str());

  // Shapes: every (M, K, N) of the grid, plus random ones.
  const std::vector<int64_t> Ms = quick
      ? std::vector<int64_t>{1, 3, 4, 5, 9, 70}
      : std::vector<int64_t>{1, 2, 3, 4, 5, 7, 9, 17, 70, 131};
  const std::vector<int64_t> Ks = quick
      ? std::vector<int64_t>{1, 63, 64, 65, 200, 256, 513, 1100, 1985, 2100}
      : std::vector<int64_t>{1,   3,   63,  64,  65,   127,  128,  129,
                             200, 256, 257, 300, 511,  512,  513,  1000,
                             1024, 1100, 1984, 1985, 2048, 2100};
  const std::vector<int64_t> Ns = quick
      ? std::vector<int64_t>{1, 15, 16, 17, 63, 64, 65, 130}
      : std::vector<int64_t>{1, 8, 9, 15, 16, 17, 31, 48, 63, 64, 65, 100,
                             130, 257};
  std::vector<std::array<int64_t, 3>> shapes;
  for (int64_t M : Ms)
    for (int64_t K : Ks)
      for (int64_t N : Ns) shapes.push_back({M, K, N});
  std::mt19937_64 rng(20240607);
  const int extra = quick ? 20 : 200;
  for (int i = 0; i < extra; ++i)
    shapes.push_back({1 + static_cast<int64_t>(rng() % 150),
                      1 + static_cast<int64_t>(rng() % 1100),
                      1 + static_cast<int64_t>(rng() % 300)});

  Stats total;
  for (const auto& s : shapes) {
    const Problem p = make_problem(s[0], s[1], s[2], rng);
    for (const tgb::Impl* impl : impls) {
      Stats st;
      if (!check(*impl, p, rng, st)) {
        std::printf("FAILED\n");
        return 1;
      }
      total.problems += st.problems;
      total.dots += st.dots;
      total.words += st.words;
      total.ors += st.ors;
    }
  }
  std::printf("OK: %zu shapes (M 1..150, K 1..2100, N 1..300) x %zu "
              "instruction sets = %lld checks: %lld dots, %lld threshold "
              "words, %lld OR-pooled words, all equal to the reference\n",
              shapes.size(), impls.size(), (long long)total.problems,
              (long long)total.dots, (long long)total.words,
              (long long)total.ors);
  return 0;
}
