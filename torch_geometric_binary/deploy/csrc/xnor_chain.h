// The chain executor: consecutive binary layers in one call, optionally
// with a max (OR) pooling of one layer's output bits over groups of rows.
//
// Layer l maps packed rows of K_l channels to N_l = K_{l+1} channels,
// bit = [dot >= t] (thresholds with the flips already folded into the
// weights). Layers 0 .. P (P = `pool`, or the last layer) run on blocks of
// rows that stay in L1 between layers; the bits of layer P are OR-ed over
// each group of rows, with the threshold row of layer P that the group
// selects (thresholds that depend on the group, e.g. on its size); as an
// OR is unchanged by repeated rows, layers 0 .. P run on each group's
// distinct input rows only. Layers after P run on the pooled rows. The last
// layer writes bits (out_mode 0), int32 dots (1) or floats (2):
//   y = clamp(fma(float(dot) * scale [+ bias], alpha, beta), lo, hi),
// with `scale` one scalar or one per channel (an epilogue row).
//
// A ChainPlan is built once from the plain layers (packed weights [N, W]
// and thresholds) and owns every derived layout (interleaved, transposed
// and row-sliced weights, popcount limits); run() takes only the input and
// what varies per call (the groups and the pooled layer's thresholds).
#pragma once

#include <torch/custom_class.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "xnor.h"

namespace tgb {

struct PlanLayer {
  int64_t K = 0, N = 0, W = 0, NB = 0, NW = 0;
  std::vector<uint64_t> wt;     // [NB, W, kBlock] interleaved weights
  std::vector<int64_t> pcmax;   // [NB * kBlock]; -1 pads (bit 0); empty for
                                // the pooled layer and a dots layer
  // Bit-sliced AVX2 layouts (x86 builds), used when the dispatch runs AVX2:
  std::vector<uint64_t> tw, twn;  // [Kp][NV * 4] transposed weights and
                                  // their complement (channel-sliced)
  std::vector<uint64_t> lim;      // [NV][B][4] bit-sliced pcmax + 1
  std::vector<uint8_t> off;       // [N][Kp] row-sliced word offsets (0, 4)
  int64_t Kp = 0, NV = 0;         // K rounded up to 16; 256-channel vectors
  int B = 0;                      // count bit planes (K + 1 < 2^B)
};

class ChainPlan : public torch::CustomClassHolder {
 public:
  // weights[l]: packed int64 [N_l, ceil(K_l / 64)] (flip-folded);
  // thresholds[l]: integer [N_l], or empty for the pooled layer (its
  // thresholds come with each call) and for a last layer with dots or
  // float outputs; pool: the pooled layer or -1; out_mode: 0 bits, 1 dots,
  // 2 floats (then set_epilogue).
  ChainPlan(std::vector<at::Tensor> weights, int64_t in_channels,
            std::vector<at::Tensor> thresholds, int64_t pool,
            int64_t out_mode);

  // The float epilogue of out_mode 2: [[scale,] bias,] alpha, beta rows
  // (float32 [2, 3 or 4, N]) and the scalar scale, lo, hi.
  void set_epilogue(const at::Tensor& rows, double scale, double lo,
                    double hi);
  // Float32 inputs binarized per channel as [x * sgn >= thr]
  // (in_threshold [2, K]: sgn, thr), optionally after a full-precision
  // linear layer (weight [K, C], bias [K]) whose output they binarize.
  void set_input(const at::Tensor& in_threshold,
                 const std::optional<at::Tensor>& weight,
                 const std::optional<at::Tensor>& bias);
  // A full-precision linear layer on the float output (the classifier):
  // float32 [C, N] weight, [C] bias; accumulated in float64.
  void set_final(const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias);

  // Python: plan.run(...), or torch.ops.torch_geometric_binary.
  // xnor_chain_run(plan, ...) (the method call has less overhead).
  // x: packed int64 [M, W_0] or float32 [M, K_0] rows (or [M, C] with a
  // first linear layer). With pooling: counts int64 [G] (consecutive
  // groups of rows), pool_thresholds integer [S, N_pool] and group_set
  // int64 [G] (each group's row of pool_thresholds).
  at::Tensor run(const at::Tensor& x, const std::optional<at::Tensor>& counts,
                 const std::optional<at::Tensor>& pool_thresholds,
                 const std::optional<at::Tensor>& group_set) const;

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  std::vector<PlanLayer> layers_;
  int64_t pool_ = -1, out_mode_ = 0, max_nw_ = 1;
  bool row_sliced_ = false;  // layers 0 .. pool fit the row-sliced kernel
  // Epilogue (out_mode 2).
  at::Tensor epi_;
  float scale_ = 1.f, lo_ = 0.f, hi_ = 0.f;
  // Input stage.
  std::vector<float> in_sgn_, in_thr_;  // [K_0] each, or empty
  at::Tensor first_w_, first_b_;
  // The first linear layer for the rounding-bound kernel (AVX2), [Kin][Kp]
  // and [Kp] with Kp = K_0 rounded up to 8.
  std::vector<float> lt_wt_, lt_wabs_, lt_b_, lt_sgn_, lt_thr_;
  // Final linear layer.
  at::Tensor final_w_, final_b_;
};

// torch.ops.torch_geometric_binary.xnor_chain_run.
at::Tensor xnor_chain_run(const c10::intrusive_ptr<ChainPlan>& plan,
                          const at::Tensor& x,
                          const std::optional<at::Tensor>& counts,
                          const std::optional<at::Tensor>& pool_thresholds,
                          const std::optional<at::Tensor>& group_set);

}  // namespace tgb
