// Shared declarations of the XNOR-popcount kernels, without any torch
// header (the standalone test_xnor_kernels.cpp includes them too).
//
// Bit convention: bit 1 means +1, bit 0 means -1; bit k of word k / 64 holds
// channel k; padding bits are 0 in both operands, so they XOR to 0 and add
// nothing to the popcount.
#pragma once

#include <cstdint>

namespace tgb {

// Output channels per interleaved weight block: 4 AVX2 vectors or 2 AVX-512
// vectors of 64-bit lanes. Four blocks make one 64-bit output word.
constexpr int64_t kBlock = 16;

// One XNOR-GEMM problem. The weights are re-laid out once per call as
// `wt[NB][W][kBlock]` (zero columns past N) so that one vector load gives
// the same word of kBlock consecutive output channels.
struct Gemm {
  const uint64_t* a;      // [M, W] packed inputs
  const uint64_t* wt;     // [NB, W, kBlock] interleaved packed weights
  int64_t M, N, W, K, NB;
  int32_t* dot;           // [M, N] output of xnor_gemm (or nullptr)
  const int64_t* pcmax;   // [NB * kBlock]: bit = popcount <= pcmax; -1 pads
  const uint64_t* flip;   // [NW] bits to invert, 0 in the padding
  uint64_t* bits;         // [M, NW] output of xnor_gemm_threshold
  int64_t NW;
  // If set, the threshold kernels OR every row's output word into
  // oracc[NW] instead of writing bits (a max pooling over the rows).
  uint64_t* oracc;
};

// Runs rows [m0, m1) and weight blocks [b0, b1) (b0 a multiple of 4).
using RunFn = void (*)(const Gemm&, int64_t, int64_t, int64_t, int64_t);

// One instruction set's entry points (the table is kImpls in
// xnor_kernels.h).
struct Impl {
  const char* name;
  RunFn dots;  // int32 dots into Gemm::dot
  RunFn bits;  // bits into Gemm::bits, or OR pooling into Gemm::oracc
};

// The most inputs of a layer that the bit-sliced AVX2 kernels take: their
// counts have at most 10 bit planes and the limit pcmax + 1 <= K + 1 must
// stay below 2^10. (The one statement of this limit.)
constexpr int kMaxPlanes = 10;
constexpr int64_t kMaxSlicedInputs = (int64_t(1) << kMaxPlanes) - 2;

}  // namespace tgb
