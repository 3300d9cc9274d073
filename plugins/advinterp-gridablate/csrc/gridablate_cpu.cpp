// advinterp_gridablate: the operator schemas (declared once, here) and the CPU kernels.
// Built as the Python module advinterp_gridablate._C; importing it registers the ops.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gridablate.h"

namespace advinterp_gridablate {
namespace {

// Elements per parallel task (ATen's at::internal::GRAIN_SIZE, which lives in a heavier header).
constexpr int64_t kGrainSize = 32768;

at::Tensor host_boxes(const at::Tensor& boxes) { return boxes.to(at::kCPU).contiguous(); }

at::Tensor ablate_cpu(const at::Tensor& x_adv, const at::Tensor& x0, const at::Tensor& boxes, int64_t start,
                      int64_t count) {
  check_ablate_args(x_adv, x0, boxes, start, count);
  TORCH_CHECK_VALUE(x_adv.device().is_cpu(), "advinterp_gridablate::ablate (CPU kernel): x_adv is on ",
                    x_adv.device(), "; put x_adv and x0 on the CPU");
  const at::Tensor xa = x_adv.contiguous(), xc = x0.contiguous();
  const int64_t N = xa.size(0), C = xa.size(1), H = xa.size(2), W = xa.size(3);
  at::Tensor out = at::empty({N, count, C, H, W}, xa.options());
  const at::Tensor b = host_boxes(boxes);
  check_boxes_inside(b, start, count, H, W, "advinterp_gridablate::ablate");
  if (out.numel() == 0) return out;
  const int64_t* bp = b.const_data_ptr<int64_t>() + 4 * start;
  const int64_t planes = N * count * C, HW = H * W;  // one output plane (n, j, c) per work item
  const int64_t grain = std::max<int64_t>(1, kGrainSize / HW);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xa.scalar_type(), "advinterp_gridablate_ablate_cpu", [&] {
    const scalar_t* pa = xa.const_data_ptr<scalar_t>();
    const scalar_t* pc = xc.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    auto copy = [](scalar_t* dst, const scalar_t* src, int64_t n) {
      if (n > 0) std::memcpy(dst, src, sizeof(scalar_t) * n);
    };
    at::parallel_for(0, planes, grain, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = p % C, t = p / C;
        const int64_t j = t % count, n = t / count;
        const int64_t* bx = bp + 4 * j;
        const int64_t y0 = bx[0], x0 = bx[1], y1 = bx[2], x1 = bx[3];
        const scalar_t* a = pa + (n * C + c) * HW;
        const scalar_t* z = pc + (n * C + c) * HW;
        scalar_t* o = po + p * HW;
        // rows above and below the box in one block each; the box rows in three segments
        // ([0, x0) adversarial, [x0, x1) clean, [x1, W) adversarial): every byte written once
        copy(o, a, y0 * W);
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t r = y * W;
          copy(o + r, a + r, x0);
          copy(o + r + x0, z + r + x0, x1 - x0);
          copy(o + r + x1, a + r + x1, W - x1);
        }
        copy(o + y1 * W, a + y1 * W, (H - y1) * W);
      }
    });
  });
  return out;
}

at::Tensor scatter_mean_cpu(const at::Tensor& scores, const at::Tensor& boxes, int64_t height, int64_t width) {
  check_scatter_args(scores, boxes, height, width);
  TORCH_CHECK_VALUE(scores.device().is_cpu(), "advinterp_gridablate::scatter_mean (CPU kernel): scores is on ",
                    scores.device(), "; put it on the CPU");
  const at::Tensor s = scores.contiguous();
  const int64_t N = s.size(0), m = s.size(1), H = height, W = width;
  const at::Tensor b = host_boxes(boxes);
  check_boxes_inside(b, 0, m, H, W, "advinterp_gridablate::scatter_mean");
  at::Tensor out = at::empty({N, H, W}, s.options());
  if (out.numel() == 0) return out;
  const int64_t* bp = b.const_data_ptr<int64_t>();
  std::vector<int64_t> cover(H * W, 0);  // how many boxes cover each pixel (the same for every image)
  int64_t area = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t y = bp[4 * i]; y < bp[4 * i + 2]; ++y)
      for (int64_t x = bp[4 * i + 1]; x < bp[4 * i + 3]; ++x) ++cover[y * W + x];
    area += (bp[4 * i + 2] - bp[4 * i]) * (bp[4 * i + 3] - bp[4 * i + 1]);
  }
  const int64_t row_cost = m + W + area / H;  // box tests, additions and stores of one output row
  const int64_t grain = std::max<int64_t>(1, kGrainSize / row_cost);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_scatter_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ps = s.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N * H, grain, [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> acc(W);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / H, y = r % H;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t i = 0; i < m; ++i) {  // box order, as the reference accumulates
          const int64_t* bx = bp + 4 * i;
          if (y < bx[0] || y >= bx[2]) continue;
          const acc_t v = static_cast<acc_t>(ps[n * m + i]);
          for (int64_t x = bx[1]; x < bx[3]; ++x) acc[x] += v;
        }
        const int64_t* cv = cover.data() + y * W;
        scalar_t* o = po + r * W;
        for (int64_t x = 0; x < W; ++x)
          o[x] = cv[x] > 0 ? static_cast<scalar_t>(acc[x] / static_cast<acc_t>(cv[x])) : static_cast<scalar_t>(0);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(advinterp_gridablate, m) {
  // The fake (meta) kernels and the autograd formulas are registered in Python by this module.
  m.set_python_module("advinterp_gridablate.ops");
  m.def("ablate(Tensor x_adv, Tensor x0, Tensor boxes, int start, int count) -> Tensor");
  m.def("scatter_mean(Tensor scores, Tensor boxes, int height, int width) -> Tensor");
}

TORCH_LIBRARY_IMPL(advinterp_gridablate, CPU, m) {
  m.impl("ablate", &ablate_cpu);
  m.impl("scatter_mean", &scatter_mean_cpu);
}

}  // namespace advinterp_gridablate

// A plain Python module: importing advinterp_gridablate._C loads this library, whose static
// initialisers above register the ops with the dispatcher (no Python bindings needed).
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "advinterp_gridablate ops (CPU kernels)", -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}
