// Graph construction for point clouds: farthest point sampling, radius and
// k-nearest-neighbour search, registered as
// torch.ops.torch_geometric_binary.{graph_fps, graph_radius, graph_knn}.
//
// Each returns what torch_cluster's CPU kernels return, index for index and
// in the same order, only faster (torch_cluster stays the reference):
//  * fps: the distance arithmetic of torch_cluster's tensor expression
//    ((x - x[i]) ** 2).sum(1), its first-maximum argmax, its number of
//    samples ceil(float(n) * float(ratio)) and its random start (C rand() % n,
//    one draw per non-empty cloud, in cloud order). One pass per sample
//    updates the distances and finds the argmax (AVX2 for float 3-d clouds)
//    instead of three tensor operations with allocations.
//  * radius, and knn in up to kKdTreeMaxDim dims: a replica of the nanoflann
//    kd-tree torch_cluster builds (leaf size 10, middle split, same
//    arithmetic), searched in the same order, so neighbours come out in the
//    same order (radius: search order, the first max_num_neighbors kept; knn:
//    ascending distance, equal distances in search order), without the
//    per-point std::vector copies and the growing output vector.
//  * knn in more dims: distances by a matrix product (at::mm, on centred
//    coordinates) and a k-selection on them (a bound from block minima, then
//    only the entries under it: knn_candidates). Their order is the exact order
//    wherever two values differ by more than a rounding bound; runs of closer
//    values are re-measured with nanoflann's arithmetic and re-sorted. Equal
//    re-measured distances are ordered by the kd-tree replica's visit order
//    (KdTree::visit_rank: the tree's structure, no search), which is how
//    nanoflann orders and keeps them; a query with NaN or overflowing
//    distances goes through the kd-tree search itself.
//
// Built with -ffp-contract=off: a fused multiply-add would round differently
// from torch_cluster's separate multiply and add.
#include <Python.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <bitset>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define TGB_X86 1
#include <immintrin.h>
#else
#define TGB_X86 0
#endif

namespace tgb_graph {

using at::Tensor;

// knn in at most this many dims searches the kd-tree replica; above it, the
// matrix-product path (a kd-tree degenerates to brute force there).
constexpr int64_t kKdTreeMaxDim = 8;
// nanoflann's default, used by torch_cluster.
constexpr int64_t kLeafMaxSize = 10;
// Queries per task of the query loops.
constexpr int64_t kQueryChunk = 128;

// ---------------------------------------------------------------------------
// Input checks: ValueError with the operation and argument named.

static Tensor points_arg(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": '", name,
                    "' must be a CPU tensor (got ", t.device(), ")");
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat ||
                        t.scalar_type() == at::kDouble,
                    op, ": '", name, "' must be float32 or float64 (got ",
                    t.scalar_type(), ")");
  TORCH_CHECK_VALUE(t.dim() == 1 || t.dim() == 2, op, ": '", name,
                    "' must have shape [num_points, num_dims] (got ",
                    t.sizes(), ")");
  return (t.dim() == 1 ? t.view({-1, 1}) : t).contiguous();
}

// Checks a batch vector (int64, one entry per point, sorted, >= 0) and
// returns its largest cloud id (-1 when absent or empty).
static int64_t check_batch(const std::optional<Tensor>& batch, int64_t n,
                           const char* op, const char* name) {
  if (!batch.has_value()) return n > 0 ? 0 : -1;
  const Tensor& b = *batch;
  TORCH_CHECK_VALUE(b.device().is_cpu() && b.scalar_type() == at::kLong &&
                        b.dim() == 1,
                    op, ": '", name, "' must be a 1-D int64 CPU tensor (got ",
                    b.sizes(), ", ", b.scalar_type(), ")");
  TORCH_CHECK_VALUE(b.numel() == n, op, ": '", name, "' has ", b.numel(),
                    " entries for ", n, " points");
  if (n == 0) return -1;
  const Tensor bc = b.contiguous();
  const int64_t* p = bc.data_ptr<int64_t>();
  TORCH_CHECK_VALUE(p[0] >= 0, op, ": '", name, "' has negative cloud ids");
  for (int64_t i = 1; i < n; i++)
    TORCH_CHECK_VALUE(p[i] >= p[i - 1], op, ": '", name,
                      "' must be sorted (PyG's convention: each cloud's "
                      "points contiguous, clouds in order)");
  return p[n - 1];
}

// Cloud start offsets ptr[0..B] of a checked batch vector: ptr[b] is the
// first index with batch >= b (torch_cluster's bucketize).
static std::vector<int64_t> cloud_ptr(const std::optional<Tensor>& batch,
                                      int64_t n, int64_t B) {
  std::vector<int64_t> ptr(B + 1, n);
  ptr[0] = 0;
  if (!batch.has_value() || n == 0) return ptr;
  const Tensor bc = batch->contiguous();
  const int64_t* p = bc.data_ptr<int64_t>();
  int64_t b = 0;
  for (int64_t i = 0; i < n; i++)
    while (b < p[i]) ptr[++b] = i;
  return ptr;
}

// ---------------------------------------------------------------------------
// Farthest point sampling.

// torch's sum over the last dim of a contiguous [n, D] tensor for D <= 4:
// ((a0 + a1) + a2) + a3. (Beyond, torch reduces in another order; the Python
// wrapper sends such clouds to torch_cluster.)
template <typename T>
static inline T sqdist_torch(const T* a, const T* b, int64_t D) {
  T d0 = a[0] - b[0];
  T s = d0 * d0;
  for (int64_t d = 1; d < D; d++) {
    const T dd = a[d] - b[d];
    s = s + dd * dd;
  }
  return s;
}

template <typename T>
static void fps_cloud(const T* p, int64_t n, int64_t D, int64_t start,
                      int64_t m, int64_t offset, int64_t* out) {
  std::vector<T> dist(n, std::numeric_limits<T>::infinity());
  int64_t cur = start;
  out[0] = offset + start;
  for (int64_t i = 1; i < m; i++) {
    const T* c = p + cur * D;
    T best = -std::numeric_limits<T>::infinity();
    int64_t arg = 0;
    for (int64_t j = 0; j < n; j++) {
      const T d = sqdist_torch(p + j * D, c, D);
      const T v = d < dist[j] ? d : dist[j];
      dist[j] = v;
      if (v > best) {  // Strict: the first maximum, as torch.argmax.
        best = v;
        arg = j;
      }
    }
    out[i] = offset + arg;
    cur = arg;
  }
}

#if TGB_X86
static bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

static bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

// The vector kernels of float 3-d clouds (fps, kd-tree leaves): 2 AVX-512,
// 1 AVX2, 0 scalar; the best the CPU has, or at most
// TORCH_GEOMETRIC_BINARY_GRAPH_ISA ("avx512", "avx2" or "scalar": tests
// compare each with torch_cluster).
static int graph_isa() {
#if TGB_X86
  int isa = cpu_has_avx512() ? 2 : (cpu_has_avx2() ? 1 : 0);
#else
  int isa = 0;
#endif
  if (const char* env = std::getenv("TORCH_GEOMETRIC_BINARY_GRAPH_ISA")) {
    const std::string want(env);
    const int cap = want == "scalar" ? 0 : (want == "avx2" ? 1 : 2);
    isa = std::min(isa, cap);
  }
  return isa;
}

#if TGB_X86
// The squared distances d[i] from vec to the slots i of a leaf of
// `count` <= 16 points (coordinates xs, ys, zs), by point_dist's arithmetic
// ((dx * dx + dy * dy) + dz * dz, no fused multiply-add); bit i of the
// result: d[i] < bound.
static_assert(kLeafMaxSize <= 16, "a leaf fits one AVX-512 vector");
__attribute__((target("avx512f"))) static uint32_t leaf_dists_avx512(
    const float* xs, const float* ys, const float* zs, int64_t count,
    const float* vec, float bound, float* d) {
  const __mmask16 live = static_cast<__mmask16>((1u << count) - 1);
  const __m512 dx = _mm512_sub_ps(_mm512_set1_ps(vec[0]),
                                  _mm512_maskz_loadu_ps(live, xs));
  const __m512 dy = _mm512_sub_ps(_mm512_set1_ps(vec[1]),
                                  _mm512_maskz_loadu_ps(live, ys));
  const __m512 dz = _mm512_sub_ps(_mm512_set1_ps(vec[2]),
                                  _mm512_maskz_loadu_ps(live, zs));
  const __m512 dist = _mm512_add_ps(
      _mm512_add_ps(_mm512_mul_ps(dx, dx), _mm512_mul_ps(dy, dy)),
      _mm512_mul_ps(dz, dz));
  _mm512_store_ps(d, dist);
  return _mm512_mask_cmp_ps_mask(live, dist, _mm512_set1_ps(bound),
                                 _CMP_LT_OQ);
}

// leaf_dists_avx512 with AVX2: two vectors of 8 slots.
__attribute__((target("avx2"))) static uint32_t leaf_dists_avx2(
    const float* xs, const float* ys, const float* zs, int64_t count,
    const float* vec, float bound, float* d) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 b = _mm256_set1_ps(bound);
  uint32_t hits = 0;
  for (int64_t h = 0; h < count; h += 8) {
    const __m256i live = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(static_cast<int>(count - h)), lane);
    const __m256 dx = _mm256_sub_ps(_mm256_set1_ps(vec[0]),
                                    _mm256_maskload_ps(xs + h, live));
    const __m256 dy = _mm256_sub_ps(_mm256_set1_ps(vec[1]),
                                    _mm256_maskload_ps(ys + h, live));
    const __m256 dz = _mm256_sub_ps(_mm256_set1_ps(vec[2]),
                                    _mm256_maskload_ps(zs + h, live));
    const __m256 dist = _mm256_add_ps(
        _mm256_add_ps(_mm256_mul_ps(dx, dx), _mm256_mul_ps(dy, dy)),
        _mm256_mul_ps(dz, dz));
    _mm256_storeu_ps(d + h, dist);
    const __m256 hit = _mm256_and_ps(_mm256_cmp_ps(dist, b, _CMP_LT_OQ),
                                     _mm256_castsi256_ps(live));
    hits |= static_cast<uint32_t>(_mm256_movemask_ps(hit)) << h;
  }
  return hits;
}

// A float 3-d cloud as three coordinate arrays and the running distances,
// padded to a multiple of `step` points (padding: distance -1, never the
// maximum).
struct FpsArrays {
  int64_t np;
  std::vector<float> buf;
  float *xs, *ys, *zs, *ds;
  FpsArrays(const float* p, int64_t n, int64_t step)
      : np((n + step - 1) / step * step), buf(4 * np) {
    xs = buf.data(), ys = xs + np, zs = ys + np, ds = zs + np;
    for (int64_t j = 0; j < n; j++) {
      xs[j] = p[3 * j], ys[j] = p[3 * j + 1], zs[j] = p[3 * j + 2];
      ds[j] = std::numeric_limits<float>::infinity();
    }
    for (int64_t j = n; j < np; j++) {
      xs[j] = ys[j] = zs[j] = 0.f;
      ds[j] = -1.f;
    }
  }
};

// The first maximum over lanes that each hold their first maximum (value
// bv[l] at index bi[l]): the largest value, the smallest index among equal.
static int32_t first_max(const float* bv, const int32_t* bi, int lanes) {
  float mv = bv[0];
  int32_t mi = bi[0];
  for (int l = 1; l < lanes; l++)
    if (bv[l] > mv || (bv[l] == mv && bi[l] < mi)) mv = bv[l], mi = bi[l];
  return mi;
}

// float 3-d clouds: coordinates as three arrays, 8 points per step; per lane
// the first maximum is kept, then the lanes' maxima give the first overall.
__attribute__((target("avx2"))) static void fps_cloud_avx2(
    const float* p, int64_t n, int64_t start, int64_t m, int64_t offset,
    int64_t* out) {
  FpsArrays a(p, n, 8);
  const int64_t np = a.np;
  float *xs = a.xs, *ys = a.ys, *zs = a.zs, *ds = a.ds;
  int64_t cur = start;
  out[0] = offset + start;
  const __m256i step = _mm256_set1_epi32(8);
  for (int64_t i = 1; i < m; i++) {
    const __m256 cx = _mm256_set1_ps(xs[cur]), cy = _mm256_set1_ps(ys[cur]),
                 cz = _mm256_set1_ps(zs[cur]);
    __m256 best = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256i besti = _mm256_setzero_si256();
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t j = 0; j < np; j += 8) {
      const __m256 dx = _mm256_sub_ps(_mm256_loadu_ps(xs + j), cx);
      const __m256 dy = _mm256_sub_ps(_mm256_loadu_ps(ys + j), cy);
      const __m256 dz = _mm256_sub_ps(_mm256_loadu_ps(zs + j), cz);
      const __m256 d = _mm256_add_ps(
          _mm256_add_ps(_mm256_mul_ps(dx, dx), _mm256_mul_ps(dy, dy)),
          _mm256_mul_ps(dz, dz));
      const __m256 v = _mm256_min_ps(d, _mm256_loadu_ps(ds + j));
      _mm256_storeu_ps(ds + j, v);
      const __m256 gt = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
      best = _mm256_blendv_ps(best, v, gt);
      besti = _mm256_castps_si256(_mm256_blendv_ps(
          _mm256_castsi256_ps(besti), _mm256_castsi256_ps(idx), gt));
      idx = _mm256_add_epi32(idx, step);
    }
    alignas(32) float bv[8];
    alignas(32) int32_t bi[8];
    _mm256_store_ps(bv, best);
    _mm256_store_si256(reinterpret_cast<__m256i*>(bi), besti);
    cur = first_max(bv, bi, 8);
    out[i] = offset + cur;
  }
}

// As fps_cloud_avx2 with 16 lanes and two running maxima (32 points per
// step): the maximum's compare-and-blend chain, not the arithmetic, bounds
// the loop, so two independent chains halve its length. Each lane keeps
// its first maximum; the lanes' maxima, smallest index first among equal
// values, give the first overall.
__attribute__((target("avx512f"))) static void fps_cloud_avx512(
    const float* p, int64_t n, int64_t start, int64_t m, int64_t offset,
    int64_t* out) {
  FpsArrays a(p, n, 32);
  const int64_t np = a.np;
  float *xs = a.xs, *ys = a.ys, *zs = a.zs, *ds = a.ds;
  int64_t cur = start;
  out[0] = offset + start;
  const __m512i step = _mm512_set1_epi32(32);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                          11, 12, 13, 14, 15);
  for (int64_t i = 1; i < m; i++) {
    const __m512 cx = _mm512_set1_ps(xs[cur]), cy = _mm512_set1_ps(ys[cur]),
                 cz = _mm512_set1_ps(zs[cur]);
    const __m512 lowest =
        _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512 best[2] = {lowest, lowest};
    __m512i besti[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    __m512i idx[2] = {lanes, _mm512_add_epi32(lanes, _mm512_set1_epi32(16))};
    for (int64_t j = 0; j < np; j += 32) {
      for (int h = 0; h < 2; h++) {
        const int64_t k = j + 16 * h;
        const __m512 dx = _mm512_sub_ps(_mm512_loadu_ps(xs + k), cx);
        const __m512 dy = _mm512_sub_ps(_mm512_loadu_ps(ys + k), cy);
        const __m512 dz = _mm512_sub_ps(_mm512_loadu_ps(zs + k), cz);
        const __m512 d = _mm512_add_ps(
            _mm512_add_ps(_mm512_mul_ps(dx, dx), _mm512_mul_ps(dy, dy)),
            _mm512_mul_ps(dz, dz));
        const __m512 v = _mm512_min_ps(d, _mm512_loadu_ps(ds + k));
        _mm512_storeu_ps(ds + k, v);
        const __mmask16 gt = _mm512_cmp_ps_mask(v, best[h], _CMP_GT_OQ);
        best[h] = _mm512_mask_mov_ps(best[h], gt, v);
        besti[h] = _mm512_mask_mov_epi32(besti[h], gt, idx[h]);
        idx[h] = _mm512_add_epi32(idx[h], step);
      }
    }
    alignas(64) float bv[32];
    alignas(64) int32_t bi[32];
    _mm512_store_ps(bv, best[0]), _mm512_store_ps(bv + 16, best[1]);
    _mm512_store_si512(bi, besti[0]), _mm512_store_si512(bi + 16, besti[1]);
    cur = first_max(bv, bi, 32);
    out[i] = offset + cur;
  }
}
#endif

static Tensor graph_fps(const Tensor& src_, const std::optional<Tensor>& batch,
                        double ratio, bool random_start) {
  const char* op = "fps";
  const Tensor src = points_arg(src_, op, "pos");
  TORCH_CHECK_VALUE(ratio > 0.0 && ratio <= 1.0, op,
                    ": 'ratio' must be in (0, 1] (got ", ratio, ")");
  const int64_t N = src.size(0), D = src.size(1);
  const int64_t B = check_batch(batch, N, op, "batch") + 1;
  TORCH_CHECK_VALUE(N == 0 || D > 0, op, ": 'pos' has no coordinates");
  if (N == 0) return at::empty({0}, src.options().dtype(at::kLong));
  const std::vector<int64_t> ptr = cloud_ptr(batch, N, B);

  // Samples per cloud: ceil(float32(n) * float32(ratio)), as torch_cluster
  // computes it; empty clouds (a skipped id) give none.
  const float r = static_cast<float>(ratio);
  std::vector<int64_t> out_ptr(B + 1, 0), start(B, 0);
  for (int64_t b = 0; b < B; b++) {
    const int64_t n = ptr[b + 1] - ptr[b];
    const int64_t m =
        n == 0 ? 0
               : static_cast<int64_t>(std::ceil(static_cast<float>(n) * r));
    out_ptr[b + 1] = out_ptr[b] + m;
    // torch_cluster draws rand() % n once per cloud; drawing here, in cloud
    // order, gives its start points from the same C rand() state.
    if (random_start && n > 0) start[b] = std::rand() % n;
  }
  Tensor out = at::empty({out_ptr[B]}, src.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();

  const int isa = graph_isa();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "graph_fps", [&] {
    const scalar_t* p = src.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) {
        const int64_t n = ptr[b + 1] - ptr[b], m = out_ptr[b + 1] - out_ptr[b];
        if (m == 0) continue;
#if TGB_X86
        if (std::is_same<scalar_t, float>::value && D == 3 && isa >= 2) {
          fps_cloud_avx512(reinterpret_cast<const float*>(p) + ptr[b] * 3, n,
                           start[b], m, ptr[b], o + out_ptr[b]);
          continue;
        }
        if (std::is_same<scalar_t, float>::value && D == 3 && isa >= 1) {
          fps_cloud_avx2(reinterpret_cast<const float*>(p) + ptr[b] * 3, n,
                         start[b], m, ptr[b], o + out_ptr[b]);
          continue;
        }
#endif
        fps_cloud<scalar_t>(p + ptr[b] * D, n, D, start[b], m, ptr[b],
                            o + out_ptr[b]);
      }
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// nanoflann's kd-tree (KDTreeSingleIndexAdaptor with L2_Adaptor, as
// torch_cluster instantiates it), rebuilt on flat arrays. Every comparison
// and every rounding is nanoflann's, so the tree and the search order are.

// L2_Adaptor::evalMetric: groups of four, then the remaining dims.
template <typename T>
static inline T eval_metric(const T* a, const T* b, int64_t D) {
  T result = T();
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {
    const T d0 = a[d] - b[d], d1 = a[d + 1] - b[d + 1],
            d2 = a[d + 2] - b[d + 2], d3 = a[d + 3] - b[d + 3];
    result += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
  }
  for (; d < D; d++) {
    const T d0 = a[d] - b[d];
    result += d0 * d0;
  }
  return result;
}

template <typename T>
struct KdTree {
  struct Node {
    int32_t child1 = -1, child2 = -1;  // -1: a leaf over vind[left, right).
    int32_t divfeat = 0;
    int64_t left = 0, right = 0;
    T divlow = 0, divhigh = 0;
  };

  const T* pts = nullptr;  // The cloud's points, [n, D] row-major.
  int64_t n = 0, D = 0;
  std::vector<int64_t> vind;
  std::vector<int64_t> where;  // Inverse of vind: a point's slot.
  std::vector<T> slots;        // The points in slot order (leaves contiguous),
  std::vector<T> soa;          // or (simd_leaves) their x, y, z as 3 arrays.
  int simd_leaves = 0;  // Leaves by leaf_dists_avx512 (2) or _avx2 (1).
  std::vector<Node> nodes;
  std::vector<T> root_low, root_high;

  T at(int64_t i, int64_t d) const { return pts[i * D + d]; }

  // With vector_leaves (float 3-d points; graph_isa's 2 or 1), searches
  // measure each leaf in one AVX-512 step or two AVX2 steps.
  void build(const T* p, int64_t n_, int64_t D_, int vector_leaves = 0) {
    pts = p, n = n_, D = D_;
    vind.resize(n);
    std::iota(vind.begin(), vind.end(), 0);
    nodes.clear();
    nodes.reserve(2 * (n / 5 + 1));
    root_low.assign(p, p + D);
    root_high.assign(p, p + D);
    for (int64_t k = 1; k < n; k++)
      for (int64_t i = 0; i < D; i++) {
        if (at(k, i) < root_low[i]) root_low[i] = at(k, i);
        if (at(k, i) > root_high[i]) root_high[i] = at(k, i);
      }
    // divideTree tightens the bbox it gets; the root's is tight already.
    std::vector<T> low(root_low), high(root_high);
    divide(0, n, low.data(), high.data());
    where.resize(n);
    for (int64_t i = 0; i < n; i++) where[vind[i]] = i;
    // The leaves' points in slot order: as three coordinate arrays for the
    // vector leaves, else as rows.
    simd_leaves =
        std::is_same<T, float>::value && D == 3 ? vector_leaves : 0;
    if (simd_leaves) {
      slots.clear();
      soa.resize(3 * n);
      for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < 3; d++) soa[d * n + i] = at(vind[i], d);
    } else {
      soa.clear();
      slots.resize(n * D);
      for (int64_t i = 0; i < n; i++)
        std::copy(p + vind[i] * D, p + (vind[i] + 1) * D,
                  slots.data() + i * D);
    }
  }

  void min_max(const int64_t* ind, int64_t count, int64_t e, T& lo,
               T& hi) const {
    lo = hi = at(ind[0], e);
    for (int64_t i = 1; i < count; i++) {
      const T v = at(ind[i], e);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }

  void plane_split(int64_t* ind, int64_t count, int64_t cutfeat, T cutval,
                   int64_t& lim1, int64_t& lim2) const {
    int64_t left = 0, right = count - 1;
    for (;;) {
      while (left <= right && at(ind[left], cutfeat) < cutval) ++left;
      while (right && left <= right && at(ind[right], cutfeat) >= cutval)
        --right;
      if (left > right || !right) break;
      std::swap(ind[left], ind[right]);
      ++left, --right;
    }
    lim1 = left;
    right = count - 1;
    for (;;) {
      while (left <= right && at(ind[left], cutfeat) <= cutval) ++left;
      while (right && left <= right && at(ind[right], cutfeat) > cutval)
        --right;
      if (left > right || !right) break;
      std::swap(ind[left], ind[right]);
      ++left, --right;
    }
    lim2 = left;
  }

  void middle_split(int64_t* ind, int64_t count, int64_t& index,
                    int64_t& cutfeat, T& cutval, const T* low,
                    const T* high) const {
    const T EPS = static_cast<T>(0.00001);
    T max_span = high[0] - low[0];
    for (int64_t i = 1; i < D; i++) {
      const T span = high[i] - low[i];
      if (span > max_span) max_span = span;
    }
    T max_spread = -1;
    cutfeat = 0;
    for (int64_t i = 0; i < D; i++) {
      const T span = high[i] - low[i];
      if (span > (1 - EPS) * max_span) {
        T lo, hi;
        min_max(ind, count, i, lo, hi);
        const T spread = hi - lo;
        if (spread > max_spread) cutfeat = i, max_spread = spread;
      }
    }
    const T split_val = (low[cutfeat] + high[cutfeat]) / 2;
    T lo, hi;
    min_max(ind, count, cutfeat, lo, hi);
    cutval = split_val < lo ? lo : (split_val > hi ? hi : split_val);
    int64_t lim1, lim2;
    plane_split(ind, count, cutfeat, cutval, lim1, lim2);
    if (lim1 > count / 2)
      index = lim1;
    else if (lim2 < count / 2)
      index = lim2;
    else
      index = count / 2;
  }

  // divideTree; low/high is the node's bbox, tightened on return.
  int32_t divide(int64_t left, int64_t right, T* low, T* high) {
    const int32_t id = static_cast<int32_t>(nodes.size());
    nodes.emplace_back();
    if (right - left <= kLeafMaxSize) {
      nodes[id].left = left, nodes[id].right = right;
      for (int64_t i = 0; i < D; i++) low[i] = high[i] = at(vind[left], i);
      for (int64_t k = left + 1; k < right; k++)
        for (int64_t i = 0; i < D; i++) {
          const T v = at(vind[k], i);
          if (low[i] > v) low[i] = v;
          if (high[i] < v) high[i] = v;
        }
      return id;
    }
    int64_t idx, cutfeat;
    T cutval;
    middle_split(vind.data() + left, right - left, idx, cutfeat, cutval, low,
                 high);
    std::vector<T> lb(4 * D);
    T *llow = lb.data(), *lhigh = llow + D, *rlow = lhigh + D,
      *rhigh = rlow + D;
    std::copy(low, low + D, llow), std::copy(high, high + D, lhigh);
    lhigh[cutfeat] = cutval;
    const int32_t c1 = divide(left, left + idx, llow, lhigh);
    std::copy(low, low + D, rlow), std::copy(high, high + D, rhigh);
    rlow[cutfeat] = cutval;
    const int32_t c2 = divide(left + idx, right, rlow, rhigh);
    Node& node = nodes[id];
    node.left = left, node.right = right;  // For visit_rank.
    node.child1 = c1, node.child2 = c2;
    node.divfeat = static_cast<int32_t>(cutfeat);
    node.divlow = lhigh[cutfeat];
    node.divhigh = rlow[cutfeat];
    for (int64_t i = 0; i < D; i++) {
      low[i] = std::min(llow[i], rlow[i]);
      high[i] = std::max(lhigh[i], rhigh[i]);
    }
    return id;
  }

  // findNeighbors (eps = 0). `dists` is scratch of D values.
  template <class R>
  void find(R& result, const T* vec, T* dists) const {
    if (n == 0) return;
    T distsq = T();
    for (int64_t i = 0; i < D; i++) {
      dists[i] = T();
      if (vec[i] < root_low[i]) {
        dists[i] = (vec[i] - root_low[i]) * (vec[i] - root_low[i]);
        distsq += dists[i];
      }
      if (vec[i] > root_high[i]) {
        dists[i] = (vec[i] - root_high[i]) * (vec[i] - root_high[i]);
        distsq += dists[i];
      }
    }
    search_level(result, vec, 0, distsq, dists);
  }

  // The position of point p in the order in which find() would visit the
  // points for the query vec if it pruned nothing: depth first, the child
  // on the query's side of each split first (search_level's choice), a
  // leaf's points in slot order. find() keeps, of equal distances, the
  // points it visits first, and lists them in that order, so its result is
  // the k smallest by (distance, visit_rank) (up to a subtree it prunes by
  // a rounding error, see the top of the file).
  int64_t visit_rank(int64_t p, const T* vec) const {
    const int64_t v = where[p];
    int64_t rank = 0;
    const Node* node = &nodes[0];
    while (node->child1 >= 0) {
      const Node& c1 = nodes[node->child1];
      const Node& c2 = nodes[node->child2];
      const T val = vec[node->divfeat];
      const bool first1 = ((val - node->divlow) + (val - node->divhigh)) < 0;
      if (v < c1.right) {
        if (!first1) rank += c2.right - c2.left;
        node = &c1;
      } else {
        if (first1) rank += c1.right - c1.left;
        node = &c2;
      }
    }
    return rank + (v - node->left);
  }

  template <class R>
  bool search_level(R& result, const T* vec, int32_t id, T mindistsq,
                    T* dists) const {
    const Node& node = nodes[id];
    if (node.child1 < 0) {
#if TGB_X86
      // The leaf's distances in one or two vector steps, then the points
      // under the bound offered in slot order, as below.
      if constexpr (std::is_same<T, float>::value) {
        if (simd_leaves) {
          alignas(64) float d[16];
          uint32_t hits = (simd_leaves == 2 ? leaf_dists_avx512
                                            : leaf_dists_avx2)(
              soa.data() + node.left, soa.data() + n + node.left,
              soa.data() + 2 * n + node.left, node.right - node.left, vec,
              result.worst(), d);
          for (; hits; hits &= hits - 1) {
            const int b = __builtin_ctz(hits);
            if (!result.add(d[b], vind[node.left + b])) return false;
          }
          return true;
        }
      }
#endif
      const T worst_dist = result.worst();  // Read once per leaf.
      for (int64_t i = node.left; i < node.right; i++) {
        const int64_t index = vind[i];
        // eval_metric; for 3 dims spelt out (the same operations).
        const T* pt = slots.data() + i * D;
        const T dist = D == 3 ? ((T() + (vec[0] - pt[0]) * (vec[0] - pt[0])) +
                                 (vec[1] - pt[1]) * (vec[1] - pt[1])) +
                                    (vec[2] - pt[2]) * (vec[2] - pt[2])
                              : eval_metric(vec, pt, D);
        if (dist < worst_dist && !result.add(dist, index)) return false;
      }
      return true;
    }
    const int64_t idx = node.divfeat;
    const T val = vec[idx];
    const T diff1 = val - node.divlow, diff2 = val - node.divhigh;
    int32_t best, other;
    T cut_dist;
    if ((diff1 + diff2) < 0) {
      best = node.child1, other = node.child2;
      cut_dist = (val - node.divhigh) * (val - node.divhigh);
    } else {
      best = node.child2, other = node.child1;
      cut_dist = (val - node.divlow) * (val - node.divlow);
    }
    if (!search_level(result, vec, best, mindistsq, dists)) return false;
    const T dst = dists[idx];
    mindistsq = mindistsq + cut_dist - dst;
    dists[idx] = cut_dist;
    if (mindistsq <= result.worst()) {  // nanoflann multiplies by 1 + eps.
      if (!search_level(result, vec, other, mindistsq, dists)) return false;
    }
    dists[idx] = dst;
    return true;
  }
};

// nanoflann's KNNResultSet: kept sorted by insertion, a new point goes after
// the equal distances found before it.
template <typename T>
struct KnnResult {
  int64_t* indices;
  T* dists;
  int64_t capacity, count = 0;
  KnnResult(int64_t* i, T* d, int64_t k) : indices(i), dists(d), capacity(k) {
    if (capacity) dists[capacity - 1] = std::numeric_limits<T>::max();
  }
  T worst() const { return dists[capacity - 1]; }
  bool add(T dist, int64_t index) {
    int64_t i;
    for (i = count; i > 0; --i) {
      if (dists[i - 1] > dist) {
        if (i < capacity) dists[i] = dists[i - 1], indices[i] = indices[i - 1];
      } else {
        break;
      }
    }
    if (i < capacity) dists[i] = dist, indices[i] = index;
    if (count < capacity) count++;
    return true;
  }
};

// nanoflann's RadiusResultSet, unsorted; torch_cluster keeps the first
// `max` points found, so the search stops there.
template <typename T>
struct RadiusResult {
  T radius;
  int64_t* out;
  int64_t max, count = 0;
  T worst() const { return radius; }
  bool add(T dist, int64_t index) {
    if (dist < radius) {
      out[count++] = index;
      if (count == max) return false;
    }
    return true;
  }
};

// Edges found by a chunk of queries: x indices (global) and y indices.
struct Edges {
  std::vector<int64_t> src, dst;
};

static Tensor concat_edges(const std::vector<Edges>& chunks,
                           const at::TensorOptions& opt) {
  int64_t E = 0;
  for (const Edges& c : chunks) E += static_cast<int64_t>(c.src.size());
  Tensor out = at::empty({2, E}, opt.dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  int64_t e = 0;
  for (const Edges& c : chunks) {
    const int64_t m = static_cast<int64_t>(c.src.size());
    if (m == 0) continue;
    std::memcpy(o + e, c.src.data(), m * sizeof(int64_t));
    std::memcpy(o + E + e, c.dst.data(), m * sizeof(int64_t));
    e += m;
  }
  return out;
}

// Common set-up of radius and knn: checked inputs and cloud offsets.
struct Pairs {
  Tensor x, y;
  int64_t D = 0, B = 0;
  std::vector<int64_t> ptr_x, ptr_y, cloud_y;  // cloud_y: cloud of each y.
};

// Checks the batch vectors of a.x and a.y (rows: points) and sets the
// cloud count, the cloud offsets of both and the cloud of every y.
static void set_clouds(Pairs& a, const std::optional<Tensor>& batch_x,
                       const std::optional<Tensor>& batch_y, const char* op) {
  const int64_t Nx = a.x.size(0), Ny = a.y.size(0);
  const int64_t mx = check_batch(batch_x, Nx, op, "batch_x");
  const int64_t my = check_batch(batch_y, Ny, op, "batch_y");
  TORCH_CHECK_VALUE(
      (batch_x.has_value() || my <= 0) && (batch_y.has_value() || mx <= 0),
      op, ": give both 'batch_x' and 'batch_y' for more than one cloud");
  a.B = std::max<int64_t>(std::max(mx, my), 0) + 1;
  a.ptr_x = cloud_ptr(batch_x, Nx, a.B);
  a.ptr_y = cloud_ptr(batch_y, Ny, a.B);
  a.cloud_y.resize(Ny);
  for (int64_t b = 0; b < a.B; b++)
    for (int64_t i = a.ptr_y[b]; i < a.ptr_y[b + 1]; i++) a.cloud_y[i] = b;
}

static Pairs pair_args(const Tensor& x_, const Tensor& y_,
                       const std::optional<Tensor>& batch_x,
                       const std::optional<Tensor>& batch_y, const char* op) {
  Pairs a;
  a.x = points_arg(x_, op, "x");
  a.y = points_arg(y_, op, "y");
  TORCH_CHECK_VALUE(a.x.scalar_type() == a.y.scalar_type(), op,
                    ": 'x' and 'y' have different dtypes (",
                    a.x.scalar_type(), ", ", a.y.scalar_type(), ")");
  TORCH_CHECK_VALUE(a.x.size(1) == a.y.size(1), op, ": 'x' has ",
                    a.x.size(1), " dims, 'y' has ", a.y.size(1));
  a.D = a.x.size(1);
  set_clouds(a, batch_x, batch_y, op);
  return a;
}

// Builds the kd-tree replica of every cloud with points in x and in y.
template <typename T>
static std::vector<KdTree<T>> build_trees(const Pairs& a) {
  std::vector<KdTree<T>> trees(a.B);
  const T* x = a.x.data_ptr<T>();
  const int vector_leaves = graph_isa();
  at::parallel_for(0, a.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t n = a.ptr_x[b + 1] - a.ptr_x[b];
      if (n > 0 && a.ptr_y[b + 1] > a.ptr_y[b])
        trees[b].build(x + a.ptr_x[b] * a.D, n, a.D, vector_leaves);
    }
  });
  return trees;
}

static Tensor graph_radius(const Tensor& x_, const Tensor& y_, double r,
                           const std::optional<Tensor>& batch_x,
                           const std::optional<Tensor>& batch_y,
                           int64_t max_num_neighbors) {
  const char* op = "radius";
  TORCH_CHECK_VALUE(r >= 0.0, op, ": 'r' must be >= 0 (got ", r, ")");
  TORCH_CHECK_VALUE(max_num_neighbors >= 0, op,
                    ": 'max_num_neighbors' must be >= 0 (got ",
                    max_num_neighbors, ")");
  Pairs a = pair_args(x_, y_, batch_x, batch_y, op);
  const int64_t Ny = a.y.size(0);
  std::vector<Edges> chunks((Ny + kQueryChunk - 1) / kQueryChunk);
  if (a.x.numel() == 0 || a.y.numel() == 0 || max_num_neighbors == 0)
    return concat_edges({}, a.x.options());

  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "graph_radius", [&] {
    using T = scalar_t;
    const std::vector<KdTree<T>> trees = build_trees<T>(a);
    const T* y = a.y.data_ptr<T>();
    // torch_cluster passes r * r (double) as the float radius.
    const T radius = static_cast<T>(r * r);
    at::parallel_for(0, chunks.size(), 1, [&](int64_t c0, int64_t c1) {
      std::vector<T> dists(a.D);
      std::vector<int64_t> found;
      for (int64_t c = c0; c < c1; c++) {
        Edges& e = chunks[c];
        for (int64_t i = c * kQueryChunk;
             i < std::min(Ny, (c + 1) * kQueryChunk); i++) {
          const int64_t b = a.cloud_y[i];
          const KdTree<T>& tree = trees[b];
          if (tree.n == 0) continue;
          found.resize(std::min(max_num_neighbors, tree.n));
          RadiusResult<T> res{radius, found.data(),
                              static_cast<int64_t>(found.size())};
          tree.find(res, y + i * a.D, dists.data());
          for (int64_t j = 0; j < res.count; j++) {
            e.src.push_back(a.ptr_x[b] + found[j]);
            e.dst.push_back(i);
          }
        }
      }
    });
  });
  return concat_edges(chunks, a.x.options());
}

// knn by the kd-tree replica, queries [i0, i1) into `e`.
template <typename T>
static void knn_tree_queries(const Pairs& a, const std::vector<KdTree<T>>& trees,
                             int64_t k, int64_t i0, int64_t i1, Edges& e) {
  const T* y = a.y.data_ptr<T>();
  std::vector<T> dists(a.D), kd(k);
  std::vector<int64_t> ki(k);
  for (int64_t i = i0; i < i1; i++) {
    const int64_t b = a.cloud_y[i];
    const KdTree<T>& tree = trees[b];
    if (tree.n == 0) continue;
    KnnResult<T> res(ki.data(), kd.data(), k);
    tree.find(res, y + i * a.D, dists.data());
    for (int64_t j = 0; j < res.count; j++) {
      e.src.push_back(a.ptr_x[b] + ki[j]);
      e.dst.push_back(i);
    }
  }
}

// nanoflann's distances from `a` to four points at once (the same
// arithmetic as eval_metric; four chains hide the adds' latency).
template <typename T>
static inline void eval_metric4(const T* a, const T* const* b, int64_t D,
                                T* out) {
  T r0 = T(), r1 = T(), r2 = T(), r3 = T();
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {
#define TGB_GROUP(r, p)                                                 \
  {                                                                     \
    const T d0 = a[d] - p[d], d1 = a[d + 1] - p[d + 1],                 \
            d2 = a[d + 2] - p[d + 2], d3 = a[d + 3] - p[d + 3];         \
    r += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;                         \
  }
    TGB_GROUP(r0, b[0]) TGB_GROUP(r1, b[1]) TGB_GROUP(r2, b[2])
    TGB_GROUP(r3, b[3])
#undef TGB_GROUP
  }
  for (; d < D; d++) {
    const T e0 = a[d] - b[0][d], e1 = a[d] - b[1][d], e2 = a[d] - b[2][d],
            e3 = a[d] - b[3][d];
    r0 += e0 * e0, r1 += e1 * e1, r2 += e2 * e2, r3 += e3 * e3;
  }
  out[0] = r0, out[1] = r1, out[2] = r2, out[3] = r3;
}

// The minimum of each block of bs entries of v[0, n) (NaNs skipped): four
// lanes per block, a loop the compiler vectorizes.
template <typename T>
static void block_minima(const T* v, int64_t n, int64_t bs,
                         std::vector<T>& mins) {
  const T inf = std::numeric_limits<T>::infinity();
  mins.clear();
  for (int64_t j = 0; j < n; j += bs) {
    const int64_t end = std::min(n, j + bs);
    T m[4] = {inf, inf, inf, inf};
    int64_t l = j;
    for (; l + 4 <= end; l += 4)
      for (int h = 0; h < 4; h++) m[h] = v[l + h] < m[h] ? v[l + h] : m[h];
    for (; l < end; l++) m[0] = v[l] < m[0] ? v[l] : m[0];
    const T a = m[0] < m[1] ? m[0] : m[1], b = m[2] < m[3] ? m[2] : m[3];
    mins.push_back(a < b ? a : b);
  }
}

// Block size of knn_candidates for n entries and k kept: at least 2k blocks.
static inline int64_t knn_block_size(int64_t n, int64_t k) {
  return std::min<int64_t>(16, std::max<int64_t>(1, n / (2 * k)));
}

#if TGB_X86
// e_j = norm_j - 2 S_j for j < n and the minimum of each block of 16 of
// them (NaNs skipped, as block_minima): the same float operations as the
// scalar loops, 8 lanes at a time.
__attribute__((target("avx2"))) static void shifted_minima16_avx2(
    const float* norm, const float* S, int64_t n, float* e, float* mins) {
  const __m256 two = _mm256_set1_ps(2.f);
  const float inf = std::numeric_limits<float>::infinity();
  int64_t j = 0, b = 0;
  for (; j + 16 <= n; j += 16, b++) {
    const __m256 v0 = _mm256_sub_ps(
        _mm256_loadu_ps(norm + j), _mm256_mul_ps(two, _mm256_loadu_ps(S + j)));
    const __m256 v1 = _mm256_sub_ps(
        _mm256_loadu_ps(norm + j + 8),
        _mm256_mul_ps(two, _mm256_loadu_ps(S + j + 8)));
    _mm256_storeu_ps(e + j, v0);
    _mm256_storeu_ps(e + j + 8, v1);
    // min_ps(a, m) is a < m ? a : m: a NaN in a leaves m.
    __m256 m = _mm256_min_ps(v0, _mm256_set1_ps(inf));
    m = _mm256_min_ps(v1, m);
    __m128 h = _mm_min_ps(_mm256_castps256_ps128(m),
                          _mm256_extractf128_ps(m, 1));
    h = _mm_min_ps(h, _mm_movehl_ps(h, h));
    h = _mm_min_ss(h, _mm_shuffle_ps(h, h, 1));
    mins[b] = _mm_cvtss_f32(h);
  }
  if (j < n) {
    float m = inf;
    for (; j < n; j++) {
      e[j] = norm[j] - 2 * S[j];
      m = e[j] < m ? e[j] : m;
    }
    mins[b] = m;
  }
}
#endif

// The entries of v[0, n) within slack(kth) = abs + rel * kth of the k-th
// smallest, kth, as (value, index) in index order (all of them for n <= k).
// An upper bound of kth is the k-th smallest of the minima `mins` of the
// blocks of bs = knn_block_size(n, k) entries (at least k blocks; k
// distinct entries are at or below it); only the blocks whose minimum is
// within slack of it are scanned, and the exact kth comes from the few
// entries found there (blocks of 16: for n = 1024, k = 20, about 24
// entries on random data). False (and the caller searches the kd-tree)
// when a NaN could be among the k.
template <typename T>
static bool knn_candidates(const T* v, int64_t n, int64_t k, T abs, T rel,
                           const std::vector<T>& mins,
                           std::vector<std::pair<T, int64_t>>& cand,
                           std::vector<T>& scratch) {
  cand.clear();
  if (n <= k) {
    for (int64_t j = 0; j < n; j++)
      if (v[j] == v[j]) cand.push_back({v[j], j});
    return static_cast<int64_t>(cand.size()) == n;
  }
  const int64_t bs = knn_block_size(n, k);
  scratch.assign(mins.begin(), mins.end());
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end());
  const T bound = scratch[k - 1];
  const T lim = bound + (abs + rel * bound);
  for (int64_t b = 0; b < static_cast<int64_t>(mins.size()); b++) {
    if (!(mins[b] <= lim)) continue;
    for (int64_t j = b * bs; j < std::min(n, (b + 1) * bs); j++)
      if (v[j] <= lim) cand.push_back({v[j], j});
  }
  if (static_cast<int64_t>(cand.size()) < k) return false;
  scratch.resize(cand.size());
  for (size_t l = 0; l < cand.size(); l++) scratch[l] = cand[l].first;
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end());
  const T kth = scratch[k - 1];
  const T thr = kth + (abs + rel * kth);
  cand.erase(std::remove_if(cand.begin(), cand.end(),
                            [thr](const std::pair<T, int64_t>& c) {
                              return !(c.first <= thr);
                            }),
             cand.end());
  return true;
}

// knn by a matrix product (see the top of the file), for high dims.
template <typename T>
static void knn_gemm(const Pairs& a, int64_t k, std::vector<Edges>& out) {
  // The product must stay in T under autocast (bf16 training); at::parallel_for
  // carries this guard into its threads.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t D = a.D, B = a.B;
  const T* x = a.x.data_ptr<T>();
  const T* y = a.y.data_ptr<T>();
  const auto opt = a.x.options();

  // Per cloud: centred points, their squared norms and the largest one; the
  // kd-tree only when a query ties.
  struct Cloud {
    Tensor xct;  // [D, n]: the product's faster layout.
    std::vector<T> mean, norm;
    T max_norm = 0;
    std::once_flag tree_once;
    KdTree<T> tree;
  };
  std::vector<Cloud> clouds(B);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
      const int64_t s = a.ptr_x[b], n = a.ptr_x[b + 1] - s;
      if (n == 0 || a.ptr_y[b + 1] == a.ptr_y[b]) continue;
      Cloud& c = clouds[b];
      std::vector<double> mean(D, 0.0);
      for (int64_t j = 0; j < n; j++)
        for (int64_t d = 0; d < D; d++) mean[d] += x[(s + j) * D + d];
      c.mean.resize(D);
      for (int64_t d = 0; d < D; d++) c.mean[d] = static_cast<T>(mean[d] / n);
      c.xct = at::empty({D, n}, opt);
      T* xct = c.xct.template data_ptr<T>();
      c.norm.assign(n, T(0));
      for (int64_t j = 0; j < n; j++) {
        T acc = 0;
        for (int64_t d = 0; d < D; d++) {
          const T v = x[(s + j) * D + d] - c.mean[d];
          xct[d * n + j] = v;
          acc += v * v;
        }
        c.norm[j] = acc;
      }
      c.max_norm = *std::max_element(c.norm.begin(), c.norm.end());
    }
  });

  // Tasks: a block of one cloud's queries; blocks of ~256K product entries.
  struct Task {
    int64_t b, i0, i1;
  };
  std::vector<Task> tasks;
  for (int64_t b = 0; b < B; b++) {
    const int64_t n = a.ptr_x[b + 1] - a.ptr_x[b];
    if (n == 0) continue;
    const int64_t rows = std::max<int64_t>(16, (int64_t(1) << 18) / n);
    for (int64_t i = a.ptr_y[b]; i < a.ptr_y[b + 1]; i += rows)
      tasks.push_back({b, i, std::min(a.ptr_y[b + 1], i + rows)});
  }
  out.assign(tasks.size(), Edges());

  // |approx - exact| of a shifted distance is below tol_factor * (|x_c|^2 +
  // |y_c|^2) (centring, the product and nanoflann's sum each round at most
  // ~(D + 2) u relative to these norms); 16 (D + 4) u covers it twice over.
  const T u = std::numeric_limits<T>::epsilon() / 2;
  const T tol_factor = static_cast<T>(16 * (D + 4)) * u;

  at::parallel_for(0, tasks.size(), 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> ebuf, mins, sel, dists(D), kd(k);
    std::vector<int64_t> ki(k);
    std::vector<std::pair<T, int64_t>> cand;
    std::vector<std::tuple<T, int64_t, int64_t>> ranked;
    for (int64_t t = t0; t < t1; t++) {
      const Task& task = tasks[t];
      Cloud& c = clouds[task.b];
      const int64_t s = a.ptr_x[task.b], n = a.ptr_x[task.b + 1] - s;
      const int64_t m = task.i1 - task.i0;
      ebuf.resize(n);
      Tensor yb = at::empty({m, D}, opt);
      T* ybp = yb.template data_ptr<T>();
      std::vector<T> ynorm(m, T(0));
      for (int64_t i = 0; i < m; i++) {
        T acc = 0;
        for (int64_t d = 0; d < D; d++) {
          const T v = y[(task.i0 + i) * D + d] - c.mean[d];
          ybp[i * D + d] = v;
          acc += v * v;
        }
        ynorm[i] = acc;
      }
      const Tensor prod = at::mm(yb, c.xct);  // [m, n]
      const T* S = prod.template data_ptr<T>();
      Edges& e = out[t];
      const int64_t kk = std::min(k, n);
      e.src.reserve(m * kk), e.dst.reserve(m * kk);
      T* er = ebuf.data();
      const T* norm = c.norm.data();
      for (int64_t i = 0; i < m; i++) {
        const int64_t q = task.i0 + i;
        const T* Si = S + i * n;
        // e_j = |x_j|^2 - 2 <x_j, y>: the distance less |y|^2, and the
        // minima of its blocks (for knn_candidates).
        const int64_t bs = knn_block_size(n, k);
        mins.resize((n + bs - 1) / bs);
#if TGB_X86
        if (std::is_same<T, float>::value && bs == 16 && n > k &&
            cpu_has_avx2()) {
          shifted_minima16_avx2(reinterpret_cast<const float*>(norm),
                                reinterpret_cast<const float*>(Si), n,
                                reinterpret_cast<float*>(er),
                                reinterpret_cast<float*>(mins.data()));
        } else
#endif
        {
          for (int64_t j = 0; j < n; j++) er[j] = norm[j] - 2 * Si[j];
          if (n > k) block_minima(er, n, bs, mins);
        }
        // Candidates in approximate order. Where two neighbours' approximate
        // values are more than `tol` apart, their exact distances are in the
        // same order; only runs of closer values, where they reach the k
        // kept, are re-measured as nanoflann measures them and re-sorted.
        const T tol = tol_factor * (ynorm[i] + c.max_norm);
        const T* yq = y + q * D;
        bool fallback = !knn_candidates<T>(er, n, k, tol, T(0), mins, cand, sel);
        const int64_t nc = fallback ? 0 : static_cast<int64_t>(cand.size());
        std::sort(cand.begin(), cand.begin() + nc);
        for (int64_t r0 = 0; r0 < std::min(kk, nc);) {
          int64_t r1 = r0 + 1;
          while (r1 < nc && cand[r1].first - cand[r1 - 1].first <= tol) r1++;
          if (r1 - r0 > 1) {
            int64_t l = r0;
            for (; l + 4 <= r1; l += 4) {
              const T* pts[4] = {x + (s + cand[l].second) * D,
                                 x + (s + cand[l + 1].second) * D,
                                 x + (s + cand[l + 2].second) * D,
                                 x + (s + cand[l + 3].second) * D};
              T dd[4];
              eval_metric4(yq, pts, D, dd);
              for (int h = 0; h < 4; h++) cand[l + h].first = dd[h];
            }
            for (; l < r1; l++)
              cand[l].first = eval_metric(yq, x + (s + cand[l].second) * D, D);
            std::sort(cand.begin() + r0, cand.begin() + r1);
            bool tie = false;
            for (l = r0 + 1; l < std::min(r1, kk + 1); l++)
              tie = tie || cand[l].first == cand[l - 1].first;
            if (tie) {
              // Equal distances: the kd-tree's visit order decides which
              // are kept and in which order (its structure only, no search).
              std::call_once(c.tree_once,
                             [&] { c.tree.build(x + s * D, n, D); });
              ranked.clear();
              for (l = r0; l < r1; l++)
                ranked.push_back({cand[l].first,
                                  c.tree.visit_rank(cand[l].second, yq),
                                  cand[l].second});
              std::sort(ranked.begin(), ranked.end());
              for (l = r0; l < r1; l++)
                cand[l] = {std::get<0>(ranked[l - r0]),
                           std::get<2>(ranked[l - r0])};
            }
          }
          r0 = r1;
        }
        // The kd-tree never keeps a distance at or above T's largest value.
        for (int64_t l = 0; l < std::min(kk, nc) && !fallback; l++)
          fallback = !(cand[l].first < std::numeric_limits<T>::max());
        if (!fallback) {
          for (int64_t l = 0; l < kk; l++) {
            e.src.push_back(s + cand[l].second);
            e.dst.push_back(q);
          }
          continue;
        }
        // NaNs or overflows: the kd-tree search itself.
        std::call_once(c.tree_once, [&] { c.tree.build(x + s * D, n, D); });
        KnnResult<T> res(ki.data(), kd.data(), k);
        c.tree.find(res, yq, dists.data());
        for (int64_t l = 0; l < res.count; l++) {
          e.src.push_back(s + ki[l]);
          e.dst.push_back(q);
        }
      }
    }
  });
}

static Tensor graph_knn(const Tensor& x_, const Tensor& y_, int64_t k,
                        const std::optional<Tensor>& batch_x,
                        const std::optional<Tensor>& batch_y) {
  const char* op = "knn";
  TORCH_CHECK_VALUE(k >= 1, op, ": 'k' must be >= 1 (got ", k, ")");
  Pairs a = pair_args(x_, y_, batch_x, batch_y, op);
  if (a.x.numel() == 0 || a.y.numel() == 0)
    return concat_edges({}, a.x.options());
  std::vector<Edges> chunks;
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "graph_knn", [&] {
    using T = scalar_t;
    if (a.D > kKdTreeMaxDim) {
      knn_gemm<T>(a, k, chunks);
      return;
    }
    const std::vector<KdTree<T>> trees = build_trees<T>(a);
    const int64_t Ny = a.y.size(0);
    chunks.resize((Ny + kQueryChunk - 1) / kQueryChunk);
    at::parallel_for(0, chunks.size(), 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++)
        knn_tree_queries<T>(a, trees, k, c * kQueryChunk,
                            std::min(Ny, (c + 1) * kQueryChunk), chunks[c]);
    });
  });
  return concat_edges(chunks, a.x.options());
}

// The kd-tree replica's knn for any dims (tests compare it with the
// matrix-product path).
static Tensor graph_knn_kdtree(const Tensor& x_, const Tensor& y_, int64_t k,
                               const std::optional<Tensor>& batch_x,
                               const std::optional<Tensor>& batch_y) {
  const char* op = "knn";
  TORCH_CHECK_VALUE(k >= 1, op, ": 'k' must be >= 1 (got ", k, ")");
  Pairs a = pair_args(x_, y_, batch_x, batch_y, op);
  if (a.x.numel() == 0 || a.y.numel() == 0)
    return concat_edges({}, a.x.options());
  std::vector<Edges> chunks(1);
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "graph_knn_kdtree", [&] {
    const auto trees = build_trees<scalar_t>(a);
    knn_tree_queries<scalar_t>(a, trees, k, 0, a.y.size(0), chunks[0]);
  });
  return concat_edges(chunks, a.x.options());
}

// ---------------------------------------------------------------------------
// k-NN by Hamming distance between packed binary codes (int64 words, the
// layout of torch_geometric_binary.utils.bits: padding bits 0, so they never
// count). Nearest first, equal distances in index order: a counting sort
// over the distances 0..64W, O(n + 64W) per query after the popcounts, or
// for codes of up to 3 words a search over byte distances with AVX2
// (knn_hamming_avx2, about twice as fast; for one-word codes
// knn_hamming_avx512).

static Tensor words_arg(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": '", name,
                    "' must be a CPU tensor (got ", t.device(), ")");
  TORCH_CHECK_VALUE(t.scalar_type() == at::kLong && t.dim() == 2, op, ": '",
                    name, "' must be packed int64 words of shape "
                    "[num_points, num_words] (got ", t.sizes(), ", ",
                    t.scalar_type(), ")");
  return t.contiguous();
}

static inline int popcount64(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(v);
#else
  return static_cast<int>(std::bitset<64>(v).count());
#endif
}

#if defined(__GNUC__) || defined(__clang__)
#define TGB_INLINE inline __attribute__((always_inline))
#else
#define TGB_INLINE inline
#endif

// Inlined into a caller compiled for POPCNT where the CPU has it.
static TGB_INLINE void knn_hamming_queries(const uint64_t* x, const uint64_t* y,
                                int64_t W, int64_t k,
                                const std::vector<int64_t>& ptr_x,
                                const std::vector<int64_t>& cloud_y,
                                int64_t q0, int64_t q1, Edges& out) {
  // Four interleaved histograms: repeated codes give runs of one distance,
  // and one counter would serialize their increments.
  const int64_t H = 64 * W + 1;  // Distances 0..64W.
  std::vector<int32_t> dist, hist(4 * H), next(H);
  for (int64_t q = q0; q < q1; q++) {
    const int64_t b = cloud_y[q], s0 = ptr_x[b], n = ptr_x[b + 1] - s0;
    const int64_t kk = std::min(k, n);
    if (kk == 0) continue;
    dist.resize(n);
    std::fill(hist.begin(), hist.end(), 0);
    const uint64_t* yq = y + q * W;
    const uint64_t* xs = x + s0 * W;
    if (W == 1) {  // DGCNN's 64 channels: one word per code.
      const uint64_t y0 = yq[0];
      for (int64_t j = 0; j < n; j++) {
        const int32_t d = popcount64(xs[j] ^ y0);
        dist[j] = d;
        hist[(j & 3) * H + d]++;
      }
    } else {
      for (int64_t j = 0; j < n; j++) {
        const uint64_t* xj = xs + j * W;
        int32_t d = 0;
        for (int64_t w = 0; w < W; w++) d += popcount64(xj[w] ^ yq[w]);
        dist[j] = d;
        hist[(j & 3) * H + d]++;
      }
    }
    for (int64_t d = 0; d < H; d++)
      hist[d] += hist[H + d] + hist[2 * H + d] + hist[3 * H + d];
    // The k-th distance t; every point nearer is kept, then the first ones
    // at distance t in index order.
    int64_t below = 0, t = 0;
    while (below + hist[t] < kk) below += hist[t++];
    int64_t pos = 0;
    for (int64_t d = 0; d <= t; d++) {
      next[d] = static_cast<int32_t>(pos);
      pos += hist[d];
    }
    const size_t base = out.src.size();
    out.src.resize(base + kk);
    int64_t at_t = kk - below, left = kk;
    for (int64_t j = 0; j < n; j++) {
      const int32_t d = dist[j];
      if (d < t || (d == t && at_t-- > 0)) {
        out.src[base + next[d]++] = s0 + j;
        if (--left == 0) break;
      }
    }
    out.dst.insert(out.dst.end(), kk, q);
  }
}

#if TGB_X86
__attribute__((target("popcnt")))
#endif
static void knn_hamming_popcnt(const uint64_t* x, const uint64_t* y,
                               int64_t W, int64_t k,
                               const std::vector<int64_t>& ptr_x,
                               const std::vector<int64_t>& cloud_y,
                               int64_t q0, int64_t q1, Edges& out) {
  knn_hamming_queries(x, y, W, k, ptr_x, cloud_y, q0, q1, out);
}

static void knn_hamming_generic(const uint64_t* x, const uint64_t* y,
                                int64_t W, int64_t k,
                                const std::vector<int64_t>& ptr_x,
                                const std::vector<int64_t>& cloud_y,
                                int64_t q0, int64_t q1, Edges& out) {
  knn_hamming_queries(x, y, W, k, ptr_x, cloud_y, q0, q1, out);
}

#if TGB_X86
// knn_hamming_queries for codes of at most kHammingByteWords words, with
// AVX2: the distances as bytes (they fit), the k-th distance t by a binary
// search over 0..64W on counts of the bytes <= t (32 per step), then the
// points nearer than t sorted by distance (a counting sort of at most k
// points) and the first ones at t, in index order: the same edges, without
// a histogram update and a branch per point.
constexpr int64_t kHammingByteWords = 3;

// Bit l: byte l of *d is at most those of tv (unsigned).
__attribute__((target("avx2"))) static inline uint32_t le_mask_avx2(
    const __m256i* d, __m256i tv) {
  const __m256i v = _mm256_loadu_si256(d);
  return static_cast<uint32_t>(
      _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(v, tv), v)));
}

// The bytes of d[0, nv) at most t.
__attribute__((target("avx2,popcnt"))) static int64_t count_le_avx2(
    const __m256i* d, int64_t nv, int64_t t) {
  const __m256i tv = _mm256_set1_epi8(static_cast<char>(t));
  int64_t c = 0;
  for (int64_t v = 0; v < nv; v++) c += _mm_popcnt_u32(le_mask_avx2(d + v, tv));
  return c;
}

__attribute__((target("avx2,popcnt"))) static void knn_hamming_avx2(
    const uint64_t* x, const uint64_t* y, int64_t W, int64_t k,
    const std::vector<int64_t>& ptr_x, const std::vector<int64_t>& cloud_y,
    int64_t q0, int64_t q1, Edges& out) {
  std::vector<uint8_t> dist;
  std::vector<int64_t> near;
  std::vector<int32_t> start(64 * W + 1);
  for (int64_t q = q0; q < q1; q++) {
    const int64_t b = cloud_y[q], s0 = ptr_x[b], n = ptr_x[b + 1] - s0;
    const int64_t kk = std::min(k, n);
    if (kk == 0) continue;
    const int64_t nv = (n + 31) / 32;
    dist.resize(32 * nv);
    const uint64_t* yq = y + q * W;
    const uint64_t* xs = x + s0 * W;
    if (W == 1) {  // Four distances a store: 1.5x the loop below (64 bits).
      const uint64_t y0 = yq[0];
      int64_t j = 0;
      for (; j + 4 <= n; j += 4) {
        const uint32_t d4 = static_cast<uint32_t>(
            _mm_popcnt_u64(xs[j] ^ y0) | _mm_popcnt_u64(xs[j + 1] ^ y0) << 8 |
            _mm_popcnt_u64(xs[j + 2] ^ y0) << 16 |
            _mm_popcnt_u64(xs[j + 3] ^ y0) << 24);
        std::memcpy(dist.data() + j, &d4, 4);
      }
      for (; j < n; j++)
        dist[j] = static_cast<uint8_t>(_mm_popcnt_u64(xs[j] ^ y0));
    } else {
      for (int64_t j = 0; j < n; j++) {
        int64_t d = 0;
        for (int64_t w = 0; w < W; w++) d += _mm_popcnt_u64(xs[j * W + w] ^ yq[w]);
        dist[j] = static_cast<uint8_t>(d);
      }
    }
    std::fill(dist.begin() + n, dist.end(), uint8_t(255));  // Above 64W.
    const __m256i* dv = reinterpret_cast<const __m256i*>(dist.data());
    // t: the smallest distance with at least kk points at or below it;
    // below: the points nearer than t.
    int64_t lo = 0, hi = 64 * W, below = 0;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2, c = count_le_avx2(dv, nv, mid);
      if (c >= kk) {
        hi = mid;
      } else {
        lo = mid + 1, below = c;
      }
    }
    const int64_t t = lo;
    const size_t base = out.src.size();
    out.src.resize(base + kk);
    int64_t* o = out.src.data() + base;
    if (below > 0) {  // The points nearer than t, by (distance, index).
      near.clear();
      const __m256i tv = _mm256_set1_epi8(static_cast<char>(t - 1));
      for (int64_t v = 0; v < nv; v++)
        for (uint32_t m = le_mask_avx2(dv + v, tv); m; m &= m - 1)
          near.push_back(32 * v + __builtin_ctz(m));
      std::fill(start.begin(), start.begin() + t + 1, 0);
      for (int64_t j : near) start[dist[j] + 1]++;
      for (int64_t d = 1; d < t; d++) start[d] += start[d - 1];
      for (int64_t j : near) o[start[dist[j]]++] = s0 + j;
    }
    int64_t need = kk - below;  // The first points at distance t.
    const __m256i tv = _mm256_set1_epi8(static_cast<char>(t));
    for (int64_t v = 0; v < nv && need > 0; v++) {
      const __m256i d = _mm256_loadu_si256(dv + v);
      for (uint32_t m = static_cast<uint32_t>(_mm256_movemask_epi8(
               _mm256_cmpeq_epi8(d, tv)));
           m && need > 0; m &= m - 1, need--)
        o[kk - need] = s0 + 32 * v + __builtin_ctz(m);
    }
    out.dst.insert(out.dst.end(), kk, q);
  }
}

// knn_hamming_avx2 with AVX-512 (BW for the byte compares, VPOPCNTDQ for
// the distances): 64 distances a compare, and for one-word codes 8
// popcounts a vector narrowed to bytes; the same steps, the same edges.
// 2.2-3.3x faster than knn_hamming_avx2 for 1,024 one-word codes, k = 20.
static bool cpu_has_hamming_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vpopcntdq");
  return yes;
}

__attribute__((target("avx512f,avx512bw,popcnt"))) static inline uint64_t
le_mask_avx512(const uint8_t* d, __m512i tv) {
  return _mm512_cmple_epu8_mask(_mm512_loadu_si512(d), tv);
}

__attribute__((target("avx512f,avx512bw,avx512vpopcntdq,popcnt"))) static void
knn_hamming_avx512(const uint64_t* x, const uint64_t* y, int64_t W, int64_t k,
                   const std::vector<int64_t>& ptr_x,
                   const std::vector<int64_t>& cloud_y, int64_t q0, int64_t q1,
                   Edges& out) {
  std::vector<uint8_t> dist;
  std::vector<int64_t> near;
  std::vector<int32_t> start(64 * W + 1);
  for (int64_t q = q0; q < q1; q++) {
    const int64_t b = cloud_y[q], s0 = ptr_x[b], n = ptr_x[b + 1] - s0;
    const int64_t kk = std::min(k, n);
    if (kk == 0) continue;
    const int64_t nv = (n + 63) / 64;
    dist.resize(64 * nv);
    const uint64_t* yq = y + q * W;
    const uint64_t* xs = x + s0 * W;
    int64_t j = 0;
    if (W == 1) {
      const __m512i y0 = _mm512_set1_epi64(static_cast<long long>(yq[0]));
      for (; j + 8 <= n; j += 8)
        _mm_storel_epi64(
            reinterpret_cast<__m128i*>(dist.data() + j),
            _mm512_cvtepi64_epi8(_mm512_popcnt_epi64(
                _mm512_xor_si512(_mm512_loadu_si512(xs + j), y0))));
    }
    for (; j < n; j++) {
      int64_t d = 0;
      for (int64_t w = 0; w < W; w++)
        d += _mm_popcnt_u64(xs[j * W + w] ^ yq[w]);
      dist[j] = static_cast<uint8_t>(d);
    }
    std::fill(dist.begin() + n, dist.end(), uint8_t(255));  // Above 64W.
    // t: the smallest distance with at least kk points at or below it;
    // below: the points nearer than t.
    int64_t lo = 0, hi = 64 * W, below = 0;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      const __m512i tv = _mm512_set1_epi8(static_cast<char>(mid));
      int64_t c = 0;
      for (int64_t v = 0; v < nv; v++)
        c += _mm_popcnt_u64(le_mask_avx512(dist.data() + 64 * v, tv));
      if (c >= kk) {
        hi = mid;
      } else {
        lo = mid + 1, below = c;
      }
    }
    const int64_t t = lo;
    const size_t base = out.src.size();
    out.src.resize(base + kk);
    int64_t* o = out.src.data() + base;
    if (below > 0) {  // The points nearer than t, by (distance, index).
      near.clear();
      const __m512i tv = _mm512_set1_epi8(static_cast<char>(t - 1));
      for (int64_t v = 0; v < nv; v++)
        for (uint64_t m = le_mask_avx512(dist.data() + 64 * v, tv); m;
             m &= m - 1)
          near.push_back(64 * v + __builtin_ctzll(m));
      std::fill(start.begin(), start.begin() + t + 1, 0);
      for (int64_t i : near) start[dist[i] + 1]++;
      for (int64_t d = 1; d < t; d++) start[d] += start[d - 1];
      for (int64_t i : near) o[start[dist[i]]++] = s0 + i;
    }
    int64_t need = kk - below;  // The first points at distance t.
    const __m512i tv = _mm512_set1_epi8(static_cast<char>(t));
    for (int64_t v = 0; v < nv && need > 0; v++) {
      for (uint64_t m = _mm512_cmpeq_epu8_mask(
               _mm512_loadu_si512(dist.data() + 64 * v), tv);
           m && need > 0; m &= m - 1, need--)
        o[kk - need] = s0 + 64 * v + __builtin_ctzll(m);
    }
    out.dst.insert(out.dst.end(), kk, q);
  }
}
#endif

static Tensor graph_knn_hamming(const Tensor& x_, const Tensor& y_, int64_t k,
                                const std::optional<Tensor>& batch_x,
                                const std::optional<Tensor>& batch_y) {
  const char* op = "knn_hamming";
  TORCH_CHECK_VALUE(k >= 1, op, ": 'k' must be >= 1 (got ", k, ")");
  Pairs a;  // D: words per code.
  a.x = words_arg(x_, op, "x");
  a.y = words_arg(y_, op, "y");
  TORCH_CHECK_VALUE(a.x.size(1) == a.y.size(1), op, ": 'x' has ",
                    a.x.size(1), " words per code, 'y' has ", a.y.size(1));
  a.D = a.x.size(1);
  set_clouds(a, batch_x, batch_y, op);
  const int64_t Ny = a.y.size(0), W = a.D;
  if (a.x.size(0) == 0 || Ny == 0 || W == 0)
    return concat_edges({}, a.x.options());
  const auto* xp = reinterpret_cast<const uint64_t*>(a.x.data_ptr<int64_t>());
  const auto* yp = reinterpret_cast<const uint64_t*>(a.y.data_ptr<int64_t>());
#if TGB_X86
  static const bool popcnt = __builtin_cpu_supports("popcnt");
#else
  static const bool popcnt = false;
#endif
  auto* queries = popcnt ? knn_hamming_popcnt : knn_hamming_generic;
#if TGB_X86
  if (W <= kHammingByteWords && graph_isa() >= 1) queries = knn_hamming_avx2;
  // One-word codes (DGCNN's 64 channels) only: at two words the AVX2
  // search was as fast (1.8 against 1.9-2.2 ms at 1,024 codes on Zen 4).
  if (W == 1 && graph_isa() >= 2 && cpu_has_hamming_avx512())
    queries = knn_hamming_avx512;
#endif
  std::vector<Edges> chunks((Ny + kQueryChunk - 1) / kQueryChunk);
  at::parallel_for(0, chunks.size(), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      const int64_t q0 = c * kQueryChunk;
      const int64_t q1 = std::min(Ny, q0 + kQueryChunk);
      queries(xp, yp, W, k, a.ptr_x, a.cloud_y, q0, q1, chunks[c]);
    }
  });
  return concat_edges(chunks, a.x.options());
}

}  // namespace tgb_graph

TORCH_LIBRARY_FRAGMENT(torch_geometric_binary, m) {
  m.def("graph_fps(Tensor pos, Tensor? batch, float ratio, bool random_start)"
        " -> Tensor");
  m.def("graph_radius(Tensor x, Tensor y, float r, Tensor? batch_x, "
        "Tensor? batch_y, int max_num_neighbors) -> Tensor");
  m.def("graph_knn(Tensor x, Tensor y, int k, Tensor? batch_x, "
        "Tensor? batch_y) -> Tensor");
  m.def("graph_knn_hamming(Tensor x, Tensor y, int k, Tensor? batch_x, "
        "Tensor? batch_y) -> Tensor");
  m.def("graph_knn_kdtree(Tensor x, Tensor y, int k, Tensor? batch_x, "
        "Tensor? batch_y) -> Tensor");
}

TORCH_LIBRARY_IMPL(torch_geometric_binary, CPU, m) {
  m.impl("graph_fps", &tgb_graph::graph_fps);
  m.impl("graph_radius", &tgb_graph::graph_radius);
  m.impl("graph_knn", &tgb_graph::graph_knn);
  m.impl("graph_knn_kdtree", &tgb_graph::graph_knn_kdtree);
  m.impl("graph_knn_hamming", &tgb_graph::graph_knn_hamming);
}

// A plain module so that `import torch_geometric_binary._graph` loads the
// library (which registers the operators above).
extern "C" PyMODINIT_FUNC PyInit__graph(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_graph",
                                      "Graph construction kernels", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
