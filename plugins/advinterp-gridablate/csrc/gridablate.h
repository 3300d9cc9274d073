// advinterp_gridablate: shared declarations and host-side argument checks of the two ops
//
//   ablate(Tensor x_adv, Tensor x0, Tensor boxes, int start, int count) -> Tensor
//       (N, count, C, H, W): out[n, j] = x_adv[n] with the pixels of boxes[start + j] taken from x0[n]
//   scatter_mean(Tensor scores, Tensor boxes, int height, int width) -> Tensor
//       (N, height, width): per pixel, the mean of scores[n, i] over the boxes i covering it (0: none)
//
//   crop(Tensor src, Tensor index, Tensor offsets, int height, int width, float fill) -> Tensor
//       (B, C, height, width): out[b, c, i, j] = src[index[b], c, oy + i, ox + j] inside the map, fill outside
//   paste(Tensor base, Tensor index, Tensor patch, Tensor offsets) -> Tensor
//       (B, C, H, W): base[index[b]] with patch[b] written at offsets[b] = [oy, ox], clipped to the map
//   crop_paste(Tensor src, Tensor index, Tensor offsets, int height, int width, float fill, Tensor patch,
//              Tensor patch_offsets) -> Tensor
//       (B, C, height, width): paste(crop(src, index, offsets, height, width, fill), arange(B), patch,
//       patch_offsets) in one pass: patch[b] at patch_offsets[b] = [py, px] (relative to the window's
//       corner, clipped to the window), the crop elsewhere; every output element written once
//
// boxes: (m, 4) int64 [y0, x0, y1, x1], end exclusive, on the CPU or on the images' device (a
// device copy costs a synchronisation: the boxes are validated on the host). The same holds for
// the (B,) int64 map indices and (B, 2) int64 window offsets of crop / paste.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
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

// Memory layout of the maps of crop / paste, and of their outputs (as advinterp.patches._format):
// contiguous if the tensor is, else channels-last if it is channels-last contiguous, else
// contiguous (the kernel makes a copy first).
inline bool use_channels_last(const at::Tensor& maps) {
  return !maps.is_contiguous() && maps.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Shapes, dtypes and devices of (maps, index, offsets) shared by crop and paste.
inline void check_window_args(const at::Tensor& maps, const char* maps_name, const at::Tensor& index,
                              const at::Tensor& offsets, const char* op) {
  TORCH_CHECK_VALUE(maps.dim() == 4, op, ": ", maps_name, " must be (M, C, H, W), got shape ", maps.sizes());
  TORCH_CHECK_VALUE(is_supported_dtype(maps.scalar_type()), op, ": ", maps_name,
                    " must be float32, float64, float16 or bfloat16, got ", maps.scalar_type());
  TORCH_CHECK_VALUE(index.dim() == 1 && index.scalar_type() == at::kLong, op,
                    ": index must be an int64 (B,) tensor, got ", index.scalar_type(), " of shape ", index.sizes());
  TORCH_CHECK_VALUE(offsets.dim() == 2 && offsets.size(1) == 2 && offsets.size(0) == index.size(0) &&
                        offsets.scalar_type() == at::kLong,
                    op, ": offsets must be an int64 (", index.size(0), ", 2) tensor of [oy, ox], got ",
                    offsets.scalar_type(), " of shape ", offsets.sizes());
  for (const at::Tensor* t : {&index, &offsets})
    TORCH_CHECK_VALUE(t->device().is_cpu() || t->device() == maps.device(), op,
                      ": index and offsets must be on the CPU or on ", maps_name, "'s device (", maps.device(),
                      "), got ", t->device());
  TORCH_CHECK_VALUE(maps.size(2) < std::numeric_limits<int32_t>::max() &&
                        maps.size(3) < std::numeric_limits<int32_t>::max(),
                    op, ": map sides must be below 2^31");
}

// patch of paste / crop_paste: (B, C, h, w), the maps' dtype and device (any layout: the kernels
// convert it).
inline void check_patch_args(const at::Tensor& base, const at::Tensor& index, const at::Tensor& patch,
                             const char* op, const char* maps_name = "base") {
  TORCH_CHECK_VALUE(patch.dim() == 4 && patch.size(0) == index.size(0) && patch.size(1) == base.size(1), op,
                    ": patch must be (", index.size(0), ", ", base.size(1), ", h, w), got shape ", patch.sizes());
  TORCH_CHECK_VALUE(patch.scalar_type() == base.scalar_type() && patch.device() == base.device(), op, ": patch is ",
                    patch.scalar_type(), " on ", patch.device(), ", ", maps_name, " ", base.scalar_type(), " on ",
                    base.device(), "; they must have the same dtype and device");
  TORCH_CHECK_VALUE(patch.size(2) < std::numeric_limits<int32_t>::max() &&
                        patch.size(3) < std::numeric_limits<int32_t>::max(),
                    op, ": patch sides must be below 2^31");
}

// patch_offsets of crop_paste: int64 (B, 2) [py, px], on the CPU or on the maps' device.
inline void check_patch_offsets(const at::Tensor& maps, const char* maps_name, const at::Tensor& index,
                                const at::Tensor& patch_offsets, const char* op) {
  TORCH_CHECK_VALUE(patch_offsets.dim() == 2 && patch_offsets.size(1) == 2 && patch_offsets.size(0) == index.size(0) &&
                        patch_offsets.scalar_type() == at::kLong,
                    op, ": patch_offsets must be an int64 (", index.size(0), ", 2) tensor of [py, px], got ",
                    patch_offsets.scalar_type(), " of shape ", patch_offsets.sizes());
  TORCH_CHECK_VALUE(patch_offsets.device().is_cpu() || patch_offsets.device() == maps.device(), op,
                    ": patch_offsets must be on the CPU or on ", maps_name, "'s device (", maps.device(), "), got ",
                    patch_offsets.device());
}

// Arguments of crop: (src, index, offsets) and a window size >= 0.
inline void check_crop_args(const at::Tensor& src, const at::Tensor& index, const at::Tensor& offsets,
                            int64_t height, int64_t width, const char* op) {
  check_window_args(src, "src", index, offsets, op);
  TORCH_CHECK_VALUE(height >= 0 && width >= 0, op, ": height=", height, ", width=", width, " must be >= 0");
}

// Arguments of crop_paste: crop's, the patch and its offsets in the window.
inline void check_crop_paste_args(const at::Tensor& src, const at::Tensor& index, const at::Tensor& offsets,
                                  int64_t height, int64_t width, const at::Tensor& patch,
                                  const at::Tensor& patch_offsets, const char* op) {
  check_crop_args(src, index, offsets, height, width, op);
  check_patch_args(src, index, patch, op, "src");
  check_patch_offsets(src, "src", index, patch_offsets, op);
}

// Every entry of the host int64 (B,) tensor is a map index in [0, M).
inline void check_index_inside(const at::Tensor& index_cpu, int64_t M, const char* op) {
  const int64_t* p = index_cpu.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < index_cpu.numel(); ++b)
    TORCH_CHECK_VALUE(0 <= p[b] && p[b] < M, op, ": index[", b, "] = ", p[b], " is not a map index in [0, ", M, ")");
}

// The columns [lo, hi) of a window of `len` positions starting at `off` that lie in [0, size),
// without overflow for any int64 `off` (lo == hi when none does).
inline void window_span(int64_t off, int64_t len, int64_t size, int64_t& lo, int64_t& hi) {
  if (off >= size || len <= 0 || off <= -len) {
    lo = hi = 0;
    return;
  }
  lo = off < 0 ? -off : 0;
  hi = std::min<int64_t>(len, size - off);
}

}  // namespace advinterp_gridablate
