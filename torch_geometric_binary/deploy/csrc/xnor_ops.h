// The ATen-level functions shared by the translation units of the
// extension torch_geometric_binary.deploy._xnor:
//   xnor_pack.cpp      bit packing (pack_bits, float rows for the chain);
//   xnor_gemm.cpp      the run-time kernel dispatch and the GEMM operators;
//   xnor_chain.cpp     the chain executor (ChainPlan, xnor_chain.h);
//   xnor_register.cpp  the operator and class registration.
// The kernels themselves (per instruction set, no torch) are in
// xnor_kernels.h and the .inc files it includes.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "xnor.h"

namespace tgb {

// --- Dispatch (xnor_gemm.cpp) ----------------------------------------------

// The kernels picked for this CPU (or forced by set_isa).
const Impl& impl();
std::string isa();
std::vector<std::string> supported_isas();
// Selects the kernels by name ("auto" = the fastest supported); returns the
// previous name. For tests and benchmarks.
std::string set_isa(const std::string& name);

// Splits rows into groups and weight blocks into cache-sized chunks (whole
// output words), and runs the (group, chunk) items of `fn` in parallel.
void launch(const Gemm& g, RunFn fn);

// Re-lays packed weights [N, W] (row n at w + n * W) out as the kernels
// read them, [ceil(N / kBlock), W, kBlock] (zero columns past N).
std::vector<uint64_t> interleave(const uint64_t* w, int64_t N, int64_t W);

// dot >= t  <=>  K - 2 pc >= t  <=>  pc <= floor((K - t) / 2); -1: never.
inline int64_t popcount_limit(int64_t K, int64_t t) {
  return t > K ? -1 : std::min<int64_t>(K, (K - t) / 2);
}

at::Tensor xnor_gemm(const at::Tensor& a, const at::Tensor& w, int64_t K);
at::Tensor xnor_gemm_threshold(const at::Tensor& a, const at::Tensor& w,
                               int64_t K, const at::Tensor& threshold,
                               const at::Tensor& flip);

// --- Bit packing (xnor_pack.cpp) -------------------------------------------

at::Tensor pack_bits(const at::Tensor& x);

// The packed signs of EdgeConv's differences (x[src[e]] - x[e / k]) - theta
// for k sources per point (DGCNN's uniform neighbourhoods), without the
// float messages.
at::Tensor edge_diff_bits(const at::Tensor& x, const at::Tensor& src,
                          int64_t k, const std::optional<at::Tensor>& theta);

// Packs float32 rows [r0, r1) of x ([*, K]) into out ([*, W] words): bit k
// is [x_k * sgn_k >= thr_k] with thresholds, else [x_k >= 0]. Returns false
// if a compared value is not finite (thresholds hold for finite values).
bool pack_float_rows(const float* x, int64_t K, int64_t W, const float* sgn,
                     const float* thr, uint64_t* out, int64_t r0, int64_t r1);

}  // namespace tgb
