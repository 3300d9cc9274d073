// advinterp_gridablate: shared declarations and host-side argument checks of the two ops
//
//   ablate(Tensor x_adv, Tensor x0, Tensor boxes, int start, int count) -> Tensor
//       (N, count, C, H, W): out[n, j] = x_adv[n] with the pixels of boxes[start + j] taken from x0[n]
//   scatter_mean(Tensor scores, Tensor boxes, int height, int width) -> Tensor
//       (N, height, width): per pixel, the mean of scores[n, i] over the boxes i covering it (0: none)
//
// boxes: (m, 4) int64 [y0, x0, y1, x1], end exclusive, on the CPU or on the images' device (a
// device copy costs a synchronisation: the boxes are validated on the host).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

namespace advinterp_gridablate {

inline bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_boxes_tensor(const at::Tensor& boxes, const char* op) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must be (m, 4) [y0, x0, y1, x1], got shape ",
                    boxes.sizes());
  TORCH_CHECK_VALUE(boxes.scalar_type() == at::kLong, op, ": boxes must be int64, got ", boxes.scalar_type());
}

// Every box of rows [start, start + count) of the host int64 (m, 4) tensor lies inside H x W.
inline void check_boxes_inside(const at::Tensor& boxes_cpu, int64_t start, int64_t count, int64_t H, int64_t W,
                               const char* op) {
  const int64_t* b = boxes_cpu.const_data_ptr<int64_t>();
  for (int64_t i = start; i < start + count; ++i) {
    const int64_t y0 = b[4 * i], x0 = b[4 * i + 1], y1 = b[4 * i + 2], x1 = b[4 * i + 3];
    TORCH_CHECK_VALUE(0 <= y0 && y0 <= y1 && y1 <= H && 0 <= x0 && x0 <= x1 && x1 <= W, op, ": boxes[", i, "] = [",
                      y0, ", ", x0, ", ", y1, ", ", x1, "] is not a window inside the ", H, "x", W,
                      " image (0 <= y0 <= y1 <= H, 0 <= x0 <= x1 <= W)");
  }
}

inline void check_ablate_args(const at::Tensor& x_adv, const at::Tensor& x0, const at::Tensor& boxes, int64_t start,
                              int64_t count) {
  constexpr const char* op = "advinterp_gridablate::ablate";
  TORCH_CHECK_VALUE(x_adv.dim() == 4, op, ": x_adv must be (N, C, H, W), got shape ", x_adv.sizes());
  TORCH_CHECK_VALUE(x0.sizes() == x_adv.sizes(), op, ": x0 has shape ", x0.sizes(), ", x_adv ", x_adv.sizes(),
                    "; they must be equal");
  TORCH_CHECK_VALUE(x0.scalar_type() == x_adv.scalar_type(), op, ": x0 is ", x0.scalar_type(), ", x_adv ",
                    x_adv.scalar_type(), "; they must have the same dtype");
  TORCH_CHECK_VALUE(is_supported_dtype(x_adv.scalar_type()), op,
                    ": images must be float32, float64, float16 or bfloat16, got ", x_adv.scalar_type());
  TORCH_CHECK_VALUE(x0.device() == x_adv.device(), op, ": x0 is on ", x0.device(), ", x_adv on ", x_adv.device(),
                    "; they must be on the same device");
  check_boxes_tensor(boxes, op);
  TORCH_CHECK_VALUE(start >= 0 && count >= 0 && start <= boxes.size(0) && count <= boxes.size(0) - start, op,
                    ": start=", start, ", count=", count, " do not select a range of the ", boxes.size(0),
                    " boxes (need 0 <= start, 0 <= count, start + count <= m)");
  TORCH_CHECK_VALUE(x_adv.size(2) < std::numeric_limits<int32_t>::max() &&
                        x_adv.size(3) < std::numeric_limits<int32_t>::max(),
                    op, ": image sides must be below 2^31");
}

inline void check_scatter_args(const at::Tensor& scores, const at::Tensor& boxes, int64_t height, int64_t width) {
  constexpr const char* op = "advinterp_gridablate::scatter_mean";
  TORCH_CHECK_VALUE(scores.dim() == 2, op, ": scores must be (N, m), got shape ", scores.sizes());
  TORCH_CHECK_VALUE(is_supported_dtype(scores.scalar_type()), op,
                    ": scores must be float32, float64, float16 or bfloat16, got ", scores.scalar_type());
  check_boxes_tensor(boxes, op);
  TORCH_CHECK_VALUE(scores.size(1) == boxes.size(0), op, ": scores has ", scores.size(1), " columns for ",
                    boxes.size(0), " boxes; need one score per box");
  TORCH_CHECK_VALUE(height >= 1 && width >= 1 && height < std::numeric_limits<int32_t>::max() &&
                        width < std::numeric_limits<int32_t>::max(),
                    op, ": height=", height, ", width=", width, " must be positive (and below 2^31)");
}

}  // namespace advinterp_gridablate
