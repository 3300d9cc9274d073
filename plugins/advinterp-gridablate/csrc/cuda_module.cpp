// The Python module advinterp_gridablate._C_cuda: importing it loads the CUDA kernels
// (gridablate_cuda.cu), whose static initialisers register them for the CUDA dispatch key.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda", "advinterp_gridablate ops (CUDA kernels)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
