// The operators and the class of torch_geometric_binary.deploy._xnor:
//   torch.ops.torch_geometric_binary.{pack_bits, xnor_gemm,
//     xnor_gemm_threshold, xnor_chain_run, xnor_isa, xnor_supported_isas,
//     xnor_set_isa},
//   torch.classes.torch_geometric_binary.ChainPlan.
#include <Python.h>

#include <torch/library.h>

#include "xnor_chain.h"
#include "xnor_ops.h"

TORCH_LIBRARY(torch_geometric_binary, m) {
  m.class_<tgb::ChainPlan>("ChainPlan")
      .def(torch::init<std::vector<at::Tensor>, int64_t,
                       std::vector<at::Tensor>, int64_t, int64_t>())
      .def("set_epilogue", &tgb::ChainPlan::set_epilogue)
      .def("set_input", &tgb::ChainPlan::set_input)
      .def("set_final", &tgb::ChainPlan::set_final)
      .def("run", &tgb::ChainPlan::run)
      .def("num_layers", &tgb::ChainPlan::num_layers);
  m.def("pack_bits(Tensor x) -> Tensor");
  m.def("edge_diff_bits(Tensor x, Tensor src, int k, Tensor? theta) -> "
        "Tensor");
  m.def("xnor_gemm(Tensor a, Tensor w, int K) -> Tensor");
  m.def("xnor_gemm_threshold(Tensor a, Tensor w, int K, Tensor threshold, "
        "Tensor flip) -> Tensor");
  m.def("xnor_chain_run(__torch__.torch.classes.torch_geometric_binary."
        "ChainPlan plan, Tensor x, Tensor? counts=None, "
        "Tensor? pool_thresholds=None, Tensor? group_set=None) -> Tensor",
        &tgb::xnor_chain_run);
  m.def("xnor_isa() -> str", &tgb::isa);
  m.def("xnor_supported_isas() -> str[]", &tgb::supported_isas);
  m.def("xnor_set_isa(str name) -> str", &tgb::set_isa);
}

TORCH_LIBRARY_IMPL(torch_geometric_binary, CPU, m) {
  m.impl("pack_bits", &tgb::pack_bits);
  m.impl("edge_diff_bits", &tgb::edge_diff_bits);
  m.impl("xnor_gemm", &tgb::xnor_gemm);
  m.impl("xnor_gemm_threshold", &tgb::xnor_gemm_threshold);
}

// A plain module so that `import torch_geometric_binary.deploy._xnor` loads
// the library (which registers the operators above).
extern "C" PyMODINIT_FUNC PyInit__xnor(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_xnor",
                                      "XNOR-popcount kernels", -1, nullptr};
  return PyModule_Create(&module);
}
