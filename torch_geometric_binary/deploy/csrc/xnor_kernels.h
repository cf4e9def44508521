// The XNOR-popcount tile kernels of every instruction set and the table the
// run-time dispatch picks from, without any torch header: the translation
// units that call kernels (xnor_gemm.cpp: the dispatch and the GEMM
// operators; xnor_pack.cpp: bit packing; xnor_chain.cpp: the chain
// executor) and the standalone test driver test_xnor_kernels.cpp include
// this file. Its functions are static: each translation unit has its own
// copy, and the dispatch state lives in xnor_gemm.cpp alone.
//
// Per instruction set, a namespace provides kRows, tile_dots<R> and
// tile_mask<R> and includes xnor_driver.inc, whose run<false> (dots) and
// run<true> (bits, or OR pooling into oracc) are the entry points:
//   generic  portable C++ (xnor_scalar.inc), every CPU;
//   popcnt, avx2, avx512   x86 (xnor_kernels_x86.inc, under TGB_X86);
//   neon     AArch64 Advanced SIMD (xnor_kernels_neon.inc, under TGB_NEON).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "xnor.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define TGB_X86 1
#include <immintrin.h>
#else
#define TGB_X86 0
#endif

// AArch64 always has Advanced SIMD (NEON) under Linux, macOS and Windows.
#if defined(__aarch64__) && defined(__ARM_NEON)
#define TGB_NEON 1
#include <arm_neon.h>
#else
#define TGB_NEON 0
#endif

// Each including translation unit uses only some of the static functions.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

namespace tgb {

// ---------------------------------------------------------------------------
// Portable fallback (also the reference the other kernels must match).
namespace generic {
#include "xnor_scalar.inc"
#include "xnor_driver.inc"
}  // namespace generic

#include "xnor_kernels_x86.inc"
#include "xnor_kernels_neon.inc"

// ---------------------------------------------------------------------------
// The kernels the dispatch chooses from.

// In order of preference (fastest first, measured on AVX2 hardware; on
// AArch64 NEON, which cannot be timed here: see benchmarks/results/
// arm_neon.md).
static const Impl kImpls[] = {
#if TGB_X86
    {"avx512_vpopcntdq", avx512::run<false>, avx512::run<true>},
    {"avx2", avx2::run<false>, avx2::run<true>},
    {"popcnt", popcnt::run<false>, popcnt::run<true>},
#endif
#if TGB_NEON
    {"neon", neon::run<false>, neon::run<true>},
#endif
    {"generic", generic::run<false>, generic::run<true>},
};
constexpr int kNumImpls = sizeof(kImpls) / sizeof(kImpls[0]);

static bool cpu_supports(const std::string& name) {
#if TGB_X86
  __builtin_cpu_init();
  if (name == "avx512_vpopcntdq")
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vpopcntdq");
  if (name == "avx2")
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
  if (name == "popcnt") return __builtin_cpu_supports("popcnt");
#endif
#if TGB_NEON
  if (name == "neon") return true;
#endif
  return name == "generic";
}

static int best_impl() {
  for (int i = 0; i < kNumImpls; ++i)
    if (cpu_supports(kImpls[i].name)) return i;
  return kNumImpls - 1;
}

}  // namespace tgb

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
