// Bit packing: the signs of float rows as 64-bit words (bit 1 means +1,
// bit k of word k / 64 holds channel k, padding bits 0), for
// torch.ops.torch_geometric_binary.pack_bits and the float inputs of the
// chain executor.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <vector>
#include <c10/util/Exception.h>

#include "xnor_kernels.h"
#include "xnor_ops.h"

namespace tgb {
namespace {

template <typename scalar_t>
void pack_rows(const scalar_t* x, int64_t K, int64_t W, uint64_t* out,
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

bool pack_rows_thr(const float* x, int64_t K, int64_t W, const float* sgn,
                   const float* thr, uint64_t* out, int64_t r0, int64_t r1) {
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

[[maybe_unused]] bool has_avx2() {
#if TGB_X86
  static const bool yes = cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

}  // namespace

bool pack_float_rows(const float* x, int64_t K, int64_t W, const float* sgn,
                     const float* thr, uint64_t* out, int64_t r0,
                     int64_t r1) {
#if TGB_X86
  if (has_avx2()) {
    if (sgn != nullptr)
      return avx2::pack_rows_f32_thr(x, K, W, sgn, thr, out, r0, r1);
    avx2::pack_rows_f32(x, K, W, out, r0, r1);
    return true;
  }
#endif
  if (sgn != nullptr) return pack_rows_thr(x, K, W, sgn, thr, out, r0, r1);
  pack_rows<float>(x, K, W, out, r0, r1);
  return true;
}

at::Tensor pack_bits(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_floating_point() && x.device().is_cpu(),
              "pack_bits: expected a 2-D floating-point CPU tensor (got ",
              x.sizes(), ", ", x.scalar_type(), ")");
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), W = (K + 63) / 64;
  at::Tensor out = at::empty({M, W}, xc.options().dtype(at::kLong));
  if (M == 0 || W == 0) return out;
  auto* o = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / K);
  if (xc.scalar_type() == at::kFloat) {
    const float* xp = xc.data_ptr<float>();
    at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
      pack_float_rows(xp, K, W, nullptr, nullptr, o, r0, r1);
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, xc.scalar_type(), "pack_bits", [&] {
        const scalar_t* xp = xc.data_ptr<scalar_t>();
        at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
          pack_rows<scalar_t>(xp, K, W, o, r0, r1);
        });
      });
  return out;
}

at::Tensor edge_diff_bits(const at::Tensor& x, const at::Tensor& src,
                          int64_t k, const std::optional<at::Tensor>& theta) {
  TORCH_CHECK_VALUE(x.dim() == 2 && x.scalar_type() == at::kFloat &&
                  x.device().is_cpu(),
              "edge_diff_bits: 'x' must be a 2-D float32 CPU tensor (got ",
              x.sizes(), ", ", x.scalar_type(), ")");
  TORCH_CHECK_VALUE(k >= 1 && src.dim() == 1 && src.scalar_type() == at::kLong &&
                  src.numel() == x.size(0) * k,
              "edge_diff_bits: 'src' must be int64 with k = ", k,
              " sources per point of 'x' (", x.size(0), " points; got ",
              src.sizes(), ")");
  const at::Tensor xc = x.contiguous(), sc = src.contiguous();
  const int64_t N = xc.size(0), C = xc.size(1), W = (C + 63) / 64;
  const int64_t E = N * k;
  at::Tensor th;
  if (theta.has_value()) {
    TORCH_CHECK_VALUE(theta->numel() == C && theta->scalar_type() == at::kFloat,
                "edge_diff_bits: 'theta' must be float32 with ", C,
                " entries");
    th = theta->contiguous();
  }
  at::Tensor out = at::empty({E, W}, xc.options().dtype(at::kLong));
  if (E == 0 || W == 0) return out;
  const float* xp = xc.data_ptr<float>();
  const int64_t* sp = sc.data_ptr<int64_t>();
  const float* tp = th.defined() ? th.data_ptr<float>() : nullptr;
  auto* o = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  for (int64_t e = 0; e < E; ++e)
    TORCH_CHECK_VALUE(sp[e] >= 0 && sp[e] < N, "edge_diff_bits: source index ",
                sp[e], " out of range for ", N, " points");
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / C);
  at::parallel_for(0, E, grain, [&](int64_t e0, int64_t e1) {
    std::vector<float> diff(C);
    for (int64_t e = e0; e < e1; ++e) {
      // The float operations of torch: (x_j - x_i) - theta.
      const float* xj = xp + sp[e] * C;
      const float* xi = xp + (e / k) * C;
      for (int64_t c = 0; c < C; ++c) diff[c] = xj[c] - xi[c];
      if (tp != nullptr)
        for (int64_t c = 0; c < C; ++c) diff[c] = diff[c] - tp[c];
      pack_float_rows(diff.data(), C, W, nullptr, nullptr, o + e * W, 0, 1);
    }
  });
  return out;
}

}  // namespace tgb
