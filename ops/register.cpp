// Operator schemas of the RoI layer: torch.ops.maskrcnn.* (the list itself is ops/schemas.h).
//
// Backends register their kernels in ops/cpu/*.cpp and ops/cuda/*.cu with TORCH_LIBRARY_IMPL;
// the fake (meta) kernels and the autograd formulas are registered from Python with
// torch.library (maskrcnn/ops/_registration.py), so that torch.compile can trace through them.
#include <Python.h>
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(maskrcnn, m) { maskrcnn::define_roi_ops(m); }

// `import maskrcnn._C` loads the library (running the registrations above); it has no Python API.
static struct PyModuleDef maskrcnn_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&maskrcnn_c_module); }
