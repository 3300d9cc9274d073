// advinterp_gridablate: the operator schemas (declared once, here) and the CPU kernels.
// Built as the Python module advinterp_gridablate._C; importing it registers the ops.
// (ablate and scatter_mean for the PSE analysis; crop, paste and crop_paste for the incremental executor.)
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/Scalar.h>
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


// ------------------------------------------------------------------------- crop and paste
// Windows move whole rows: in NCHW a row of a plane, in channels-last a row of pixels with all
// their channels (the in-map part of a window row is one contiguous run in either layout), so
// each output row is written once: fill / memcpy / fill (crop), base / patch / base (paste).

at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor crop_cpu(const at::Tensor& src, const at::Tensor& index, const at::Tensor& offsets, int64_t height,
                    int64_t width, double fill) {
  constexpr const char* op = "advinterp_gridablate::crop";
  check_crop_args(src, index, offsets, height, width, op);
  TORCH_CHECK_VALUE(src.device().is_cpu(), op, " (CPU kernel): src is on ", src.device(), "; put it on the CPU");
  const bool cl = use_channels_last(src);
  const at::Tensor s = src.contiguous(format_of(cl));
  const at::Tensor idx = index.to(at::kCPU).contiguous(), off = offsets.to(at::kCPU).contiguous();
  const int64_t M = s.size(0), C = s.size(1), H = s.size(2), W = s.size(3), B = idx.numel();
  check_index_inside(idx, M, op);
  at::Tensor out = at::empty({B, C, height, width}, s.options().memory_format(format_of(cl)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_crop_cpu", [&] {
    const scalar_t fv = c10::Scalar(fill).to<scalar_t>();  // raises, as torch.full does, if fill overflows
    if (out.numel() == 0) return;
    const scalar_t* ps = s.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t* pi = idx.const_data_ptr<int64_t>();
    const int64_t* pf = off.const_data_ptr<int64_t>();
    // one task per output row: (b, c, i) in NCHW (width values), (b, i) in channels-last (width * C)
    const int64_t row = cl ? width * C : width, rows = cl ? B * height : B * C * height;
    const int64_t grain = std::max<int64_t>(1, kGrainSize / row);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r % height, t = r / height;
        const int64_t b = cl ? t : t / C, c = cl ? 0 : t % C;
        const int64_t oy = pf[2 * b], ox = pf[2 * b + 1];
        scalar_t* o = po + r * row;
        int64_t ylo, yhi, lo, hi;
        window_span(oy, height, H, ylo, yhi);
        if (i < ylo || i >= yhi) {
          std::fill_n(o, row, fv);
          continue;
        }
        window_span(ox, width, W, lo, hi);
        const int64_t y = oy + i;
        if (cl) {  // src row (index[b], y): W pixels of C channels
          const scalar_t* in = ps + ((pi[b] * H + y) * W) * C;
          std::fill_n(o, lo * C, fv);
          if (hi > lo) std::memcpy(o + lo * C, in + (ox + lo) * C, sizeof(scalar_t) * (hi - lo) * C);
          std::fill_n(o + hi * C, (width - hi) * C, fv);
        } else {
          const scalar_t* in = ps + ((pi[b] * C + c) * H + y) * W;
          std::fill_n(o, lo, fv);
          if (hi > lo) std::memcpy(o + lo, in + (ox + lo), sizeof(scalar_t) * (hi - lo));
          std::fill_n(o + hi, width - hi, fv);
        }
      }
    });
  });
  return out;
}

at::Tensor paste_cpu(const at::Tensor& base, const at::Tensor& index, const at::Tensor& patch,
                     const at::Tensor& offsets) {
  constexpr const char* op = "advinterp_gridablate::paste";
  check_window_args(base, "base", index, offsets, op);
  check_patch_args(base, index, patch, op);
  TORCH_CHECK_VALUE(base.device().is_cpu(), op, " (CPU kernel): base is on ", base.device(),
                    "; put base and patch on the CPU");
  const bool cl = use_channels_last(base);
  const at::Tensor s = base.contiguous(format_of(cl)), p = patch.contiguous(format_of(cl));
  const at::Tensor idx = index.to(at::kCPU).contiguous(), off = offsets.to(at::kCPU).contiguous();
  const int64_t M = s.size(0), C = s.size(1), H = s.size(2), W = s.size(3), B = idx.numel();
  const int64_t h = p.size(2), w = p.size(3);
  check_index_inside(idx, M, op);
  at::Tensor out = at::empty({B, C, H, W}, s.options().memory_format(format_of(cl)));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_paste_cpu", [&] {
    const scalar_t* ps = s.const_data_ptr<scalar_t>();
    const scalar_t* pp = p.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t* pi = idx.const_data_ptr<int64_t>();
    const int64_t* pf = off.const_data_ptr<int64_t>();
    auto copy = [](scalar_t* dst, const scalar_t* from, int64_t n) {
      if (n > 0) std::memcpy(dst, from, sizeof(scalar_t) * n);
    };
    // one task per output row: (b, c, y) in NCHW (W values), (b, y) in channels-last (W * C)
    const int64_t row = cl ? W * C : W, rows = cl ? B * H : B * C * H;
    const int64_t grain = std::max<int64_t>(1, kGrainSize / row);
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t y = r % H, t = r / H;
        const int64_t b = cl ? t : t / C, c = cl ? 0 : t % C;
        const int64_t oy = pf[2 * b], ox = pf[2 * b + 1];
        const scalar_t* in = ps + (cl ? (pi[b] * H + y) * W * C : ((pi[b] * C + c) * H + y) * W);
        scalar_t* o = po + r * row;
        int64_t ilo, ihi, lo, hi;
        window_span(oy, h, H, ilo, ihi);  // patch rows [ilo, ihi) land in the map
        window_span(ox, w, W, lo, hi);    // patch columns [lo, hi)
        if (ilo == ihi || hi == lo || y < oy + ilo || y >= oy + ihi) {  // (oy + ilo: no overflow when ilo < ihi)
          copy(o, in, row);
          continue;
        }
        const int64_t i = y - oy;  // the patch row written here
        const int64_t x0 = ox + lo, x1 = ox + hi;  // map columns [x0, x1) come from the patch
        const int64_t k = cl ? C : 1;
        const scalar_t* q = pp + (cl ? ((b * h + i) * w + lo) * C : ((b * C + c) * h + i) * w + lo);
        copy(o, in, x0 * k);
        copy(o + x0 * k, q, (x1 - x0) * k);
        copy(o + x1 * k, in + x1 * k, (W - x1) * k);
      }
    });
  });
  return out;
}

// paste(crop(...), arange(B), patch, patch_offsets) in one pass. An output row (window row i) is
// crop columns [0, x0), patch columns [x0, x1), crop columns [x1, width) when patch row i - py
// lands in it (x0 == x1 == 0 otherwise); the crop columns are fill / memcpy / fill as in crop.
at::Tensor crop_paste_cpu(const at::Tensor& src, const at::Tensor& index, const at::Tensor& offsets, int64_t height,
                          int64_t width, double fill, const at::Tensor& patch, const at::Tensor& patch_offsets) {
  constexpr const char* op = "advinterp_gridablate::crop_paste";
  check_crop_paste_args(src, index, offsets, height, width, patch, patch_offsets, op);
  TORCH_CHECK_VALUE(src.device().is_cpu(), op, " (CPU kernel): src is on ", src.device(),
                    "; put src and patch on the CPU");
  const bool cl = use_channels_last(src);
  const at::Tensor s = src.contiguous(format_of(cl)), p = patch.contiguous(format_of(cl));
  const at::Tensor idx = index.to(at::kCPU).contiguous(), off = offsets.to(at::kCPU).contiguous();
  const at::Tensor poff = patch_offsets.to(at::kCPU).contiguous();
  const int64_t M = s.size(0), C = s.size(1), H = s.size(2), W = s.size(3), B = idx.numel();
  const int64_t h = p.size(2), w = p.size(3);
  check_index_inside(idx, M, op);
  at::Tensor out = at::empty({B, C, height, width}, s.options().memory_format(format_of(cl)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_crop_paste_cpu",
                                  [&] {
    const scalar_t fv = c10::Scalar(fill).to<scalar_t>();  // raises, as torch.full does, if fill overflows
    if (out.numel() == 0) return;
    const scalar_t* ps = s.const_data_ptr<scalar_t>();
    const scalar_t* pp = p.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t* pi = idx.const_data_ptr<int64_t>();
    const int64_t* pf = off.const_data_ptr<int64_t>();
    const int64_t* pq = poff.const_data_ptr<int64_t>();
    const int64_t k = cl ? C : 1;  // values per window column in a row
    // one task per output row: (b, c, i) in NCHW (width values), (b, i) in channels-last (width * C)
    const int64_t row = width * k, rows = cl ? B * height : B * C * height;
    const int64_t grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(row, 1));
    at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r % height, t = r / height;
        const int64_t b = cl ? t : t / C, c = cl ? 0 : t % C;
        scalar_t* o = po + r * row;
        // the crop: window columns [lo, hi) read map row oy + i (none when it is outside the map)
        const int64_t oy = pf[2 * b], ox = pf[2 * b + 1];
        int64_t ylo, yhi, lo = 0, hi = 0;
        window_span(oy, height, H, ylo, yhi);
        const scalar_t* in = nullptr;
        if (i >= ylo && i < yhi) {
          window_span(ox, width, W, lo, hi);
          const int64_t y = oy + i;
          in = ps + (cl ? (pi[b] * H + y) * W * C : ((pi[b] * C + c) * H + y) * W);  // map row y
        }
        // window columns [j0, j1) of the crop: fill, map values, fill
        auto crop_cols = [&](int64_t j0, int64_t j1) {
          if (j1 <= j0) return;
          const int64_t a = std::min(std::max(lo, j0), j1), e = std::min(std::max(hi, j0), j1);
          std::fill_n(o + j0 * k, (a - j0) * k, fv);
          if (e > a) std::memcpy(o + a * k, in + (ox + a) * k, sizeof(scalar_t) * (e - a) * k);
          const int64_t f = std::max(a, e);
          std::fill_n(o + f * k, (j1 - f) * k, fv);
        };
        // the patch: patch rows [ilo, ihi) and columns [plo, phi) land in the window
        const int64_t py = pq[2 * b], px = pq[2 * b + 1];
        int64_t ilo, ihi, plo, phi;
        window_span(py, h, height, ilo, ihi);
        window_span(px, w, width, plo, phi);
        if (ilo == ihi || plo == phi || i < py + ilo || i >= py + ihi) {  // (py + ilo: no overflow when ilo < ihi)
          crop_cols(0, width);
          continue;
        }
        const int64_t pr = i - py;                 // the patch row written here
        const int64_t x0 = px + plo, x1 = px + phi;  // window columns [x0, x1) come from the patch
        crop_cols(0, x0);
        std::memcpy(o + x0 * k, pp + (cl ? ((b * h + pr) * w + plo) * C : ((b * C + c) * h + pr) * w + plo),
                    sizeof(scalar_t) * (x1 - x0) * k);
        crop_cols(x1, width);
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
  m.def("crop(Tensor src, Tensor index, Tensor offsets, int height, int width, float fill) -> Tensor");
  m.def("paste(Tensor base, Tensor index, Tensor patch, Tensor offsets) -> Tensor");
  m.def(
      "crop_paste(Tensor src, Tensor index, Tensor offsets, int height, int width, float fill, Tensor patch, "
      "Tensor patch_offsets) -> Tensor");
}

TORCH_LIBRARY_IMPL(advinterp_gridablate, CPU, m) {
  m.impl("ablate", &ablate_cpu);
  m.impl("scatter_mean", &scatter_mean_cpu);
  m.impl("crop", &crop_cpu);
  m.impl("paste", &paste_cpu);
  m.impl("crop_paste", &crop_paste_cpu);
}

}  // namespace advinterp_gridablate

// A plain Python module: importing advinterp_gridablate._C loads this library, whose static
// initialisers above register the ops with the dispatcher (no Python bindings needed).
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "advinterp_gridablate ops (CPU kernels)", -1,
                                          nullptr};
  return PyModule_Create(&module_def);
}
