// advinterp_gridablate: CUDA kernels of ablate, scatter_mean, crop, paste and crop_paste (schemas: gridablate_cpu.cpp).
// Built as advinterp_gridablate._C_cuda where nvcc and a CUDA build of torch are present. Only c10's
// CUDA headers are used (not ATen/cuda/CUDAContext.h), so a toolkit without cuBLAS/cuSPARSE headers does.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/core/Scalar.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include "gridablate.h"

namespace advinterp_gridablate {
namespace {

constexpr int kThreads = 256;

// One block row (blockIdx.x) per output plane (n, j, c); blockIdx.y and the threads stride over
// the plane's H*W pixels, so reads and writes are coalesced. A pixel takes x0 inside box j,
// x_adv elsewhere: no mask is materialised.
template <typename scalar_t, typename index_t>
__global__ void ablate_kernel(const scalar_t* __restrict__ xa, const scalar_t* __restrict__ xc,
                              const int64_t* __restrict__ boxes, scalar_t* __restrict__ out, int64_t planes,
                              int64_t count, int64_t C, index_t H, index_t W) {
  const index_t HW = H * W;
  for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
    const int64_t c = p % C;
    const int64_t t = p / C;
    const int64_t j = t % count, n = t / count;
    const index_t y0 = static_cast<index_t>(boxes[4 * j]), x0 = static_cast<index_t>(boxes[4 * j + 1]);
    const index_t y1 = static_cast<index_t>(boxes[4 * j + 2]), x1 = static_cast<index_t>(boxes[4 * j + 3]);
    const int64_t src = (n * C + c) * static_cast<int64_t>(HW);
    const scalar_t* a = xa + src;
    const scalar_t* z = xc + src;
    scalar_t* o = out + p * static_cast<int64_t>(HW);
    for (index_t e = static_cast<index_t>(blockIdx.y) * blockDim.x + threadIdx.x; e < HW;
         e += static_cast<index_t>(gridDim.y) * blockDim.x) {
      const index_t y = e / W, x = e - y * W;
      o[e] = (y >= y0 && y < y1 && x >= x0 && x < x1) ? z[e] : a[e];
    }
  }
}

// One thread per output pixel of image n = blockIdx.y (+ gridDim.y strides); boxes and scores
// are staged in shared memory a tile at a time and accumulated in box order (as the reference).
template <typename scalar_t>
__global__ void scatter_mean_kernel(const scalar_t* __restrict__ scores, const int64_t* __restrict__ boxes,
                                    scalar_t* __restrict__ out, int64_t N, int64_t m, int H, int W) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int4 sbox[kThreads];
  __shared__ acc_t sval[kThreads];
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int y = e < HW ? static_cast<int>(e / W) : -1;
  const int x = e < HW ? static_cast<int>(e - static_cast<int64_t>(y) * W) : -1;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    acc_t acc = 0;
    int cnt = 0;
    for (int64_t i0 = 0; i0 < m; i0 += kThreads) {
      const int64_t i = i0 + threadIdx.x;
      if (i < m) {
        sbox[threadIdx.x] = make_int4(static_cast<int>(boxes[4 * i]), static_cast<int>(boxes[4 * i + 1]),
                                      static_cast<int>(boxes[4 * i + 2]), static_cast<int>(boxes[4 * i + 3]));
        sval[threadIdx.x] = static_cast<acc_t>(scores[n * m + i]);
      }
      __syncthreads();
      const int tile = static_cast<int>(min(static_cast<int64_t>(kThreads), m - i0));
      for (int k = 0; k < tile; ++k) {
        const int4 b = sbox[k];
        if (y >= b.x && y < b.z && x >= b.y && x < b.w) {
          acc += sval[k];
          ++cnt;
        }
      }
      __syncthreads();
    }
    if (e < HW) out[n * HW + e] = cnt > 0 ? static_cast<scalar_t>(acc / static_cast<acc_t>(cnt)) : scalar_t(0);
  }
}

// The boxes, validated on the host, as an int64 tensor on `device` (rows [start, start + count)).
at::Tensor device_boxes(const at::Tensor& boxes, int64_t start, int64_t count, int64_t H, int64_t W,
                        const at::Device& device, const char* op) {
  const at::Tensor host = boxes.to(at::kCPU).contiguous();  // a no-op for CPU boxes; else one sync
  check_boxes_inside(host, start, count, H, W, op);
  if (boxes.device() == device) return boxes.narrow(0, start, count).contiguous();
  // Asynchronous: a copy from pageable memory is staged before cudaMemcpyAsync returns, so the
  // temporary may go, and the stream is not synchronised (as a blocking copy would).
  return host.narrow(0, start, count).to(device, at::kLong, /*non_blocking=*/true);
}

at::Tensor ablate_cuda(const at::Tensor& x_adv, const at::Tensor& x0, const at::Tensor& boxes, int64_t start,
                       int64_t count) {
  check_ablate_args(x_adv, x0, boxes, start, count);
  TORCH_CHECK_VALUE(x_adv.is_cuda(), "advinterp_gridablate::ablate (CUDA kernel): x_adv is on ", x_adv.device(),
                    "; put x_adv and x0 on the CUDA device (boxes may stay on the CPU)");
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const at::Tensor xa = x_adv.contiguous(), xc = x0.contiguous();
  const int64_t N = xa.size(0), C = xa.size(1), H = xa.size(2), W = xa.size(3);
  at::Tensor out = at::empty({N, count, C, H, W}, xa.options());
  const at::Tensor b = device_boxes(boxes, start, count, H, W, xa.device(), "advinterp_gridablate::ablate");
  if (out.numel() == 0) return out;
  const int64_t planes = N * count * C, HW = H * W;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(planes, std::numeric_limits<int32_t>::max())),
                  static_cast<unsigned>(std::min<int64_t>((HW + kThreads - 1) / kThreads, 65535)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xa.scalar_type(), "advinterp_gridablate_ablate_cuda", [&] {
    if (HW < (int64_t(1) << 30)) {  // 32-bit pixel indices (with room for the grid stride)
      ablate_kernel<scalar_t, int32_t><<<grid, kThreads, 0, stream>>>(
          xa.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>(), b.const_data_ptr<int64_t>(),
          out.mutable_data_ptr<scalar_t>(), planes, count, C, static_cast<int32_t>(H), static_cast<int32_t>(W));
    } else {
      ablate_kernel<scalar_t, int64_t><<<grid, kThreads, 0, stream>>>(
          xa.const_data_ptr<scalar_t>(), xc.const_data_ptr<scalar_t>(), b.const_data_ptr<int64_t>(),
          out.mutable_data_ptr<scalar_t>(), planes, count, C, H, W);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor scatter_mean_cuda(const at::Tensor& scores, const at::Tensor& boxes, int64_t height, int64_t width) {
  check_scatter_args(scores, boxes, height, width);
  TORCH_CHECK_VALUE(scores.is_cuda(), "advinterp_gridablate::scatter_mean (CUDA kernel): scores is on ",
                    scores.device(), "; put it on the CUDA device (boxes may stay on the CPU)");
  const c10::cuda::CUDAGuard guard(scores.device());
  const at::Tensor s = scores.contiguous();
  const int64_t N = s.size(0), m = s.size(1);
  at::Tensor out = at::empty({N, height, width}, s.options());
  const at::Tensor b = device_boxes(boxes, 0, m, height, width, s.device(), "advinterp_gridablate::scatter_mean");
  if (out.numel() == 0) return out;
  const int64_t HW = height * width;
  TORCH_CHECK_VALUE((HW + kThreads - 1) / kThreads <= std::numeric_limits<int32_t>::max(),
                    "advinterp_gridablate::scatter_mean: a ", height, "x", width, " map is too large");
  const dim3 grid(static_cast<unsigned>((HW + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(N, 65535)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_scatter_cuda", [&] {
    scatter_mean_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(s.const_data_ptr<scalar_t>(),
                                                                 b.const_data_ptr<int64_t>(),
                                                                 out.mutable_data_ptr<scalar_t>(), N, m,
                                                                 static_cast<int>(height), static_cast<int>(width));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}


// ------------------------------------------------------------------------- crop and paste
// One thread per output element (grid-stride), in the output's memory order (NCHW or
// channels-last), so the writes are coalesced; reads are contiguous along a window row.
// `e` decomposes into (b, c, y, x) of a (B, C, rows, cols) tensor in that order.
struct Coord {
  int64_t b, c, y, x;
};

__device__ __forceinline__ Coord decompose(int64_t e, int64_t C, int64_t rows, int64_t cols, bool cl) {
  Coord k;
  if (cl) {
    k.c = e % C;
    e /= C;
    k.x = e % cols;
    e /= cols;
    k.y = e % rows;
    k.b = e / rows;
  } else {
    k.x = e % cols;
    e /= cols;
    k.y = e % rows;
    e /= rows;
    k.c = e % C;
    k.b = e / C;
  }
  return k;
}

__device__ __forceinline__ int64_t offset_of(int64_t n, int64_t c, int64_t y, int64_t x, int64_t C, int64_t H,
                                             int64_t W, bool cl) {
  return cl ? ((n * H + y) * W + x) * C + c : ((n * C + c) * H + y) * W + x;
}

template <typename scalar_t>
__global__ void crop_kernel(const scalar_t* __restrict__ src, const int64_t* __restrict__ index,
                            const int64_t* __restrict__ offsets, scalar_t* __restrict__ out, int64_t total,
                            int64_t C, int64_t H, int64_t W, int64_t height, int64_t width, scalar_t fill, bool cl) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord k = decompose(e, C, height, width, cl);  // k.y, k.x: position i, j in the window
    const int64_t oy = offsets[2 * k.b], ox = offsets[2 * k.b + 1];
    // 0 <= oy + i < H, written without overflow for any int64 oy
    const bool inside = oy >= -k.y && oy < H - k.y && ox >= -k.x && ox < W - k.x;
    out[e] = inside ? src[offset_of(index[k.b], k.c, oy + k.y, ox + k.x, C, H, W, cl)] : fill;
  }
}

template <typename scalar_t>
__global__ void paste_kernel(const scalar_t* __restrict__ base, const int64_t* __restrict__ index,
                             const scalar_t* __restrict__ patch, const int64_t* __restrict__ offsets,
                             scalar_t* __restrict__ out, int64_t total, int64_t C, int64_t H, int64_t W, int64_t h,
                             int64_t w, bool cl) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord k = decompose(e, C, H, W, cl);
    const int64_t oy = offsets[2 * k.b], ox = offsets[2 * k.b + 1];
    // 0 <= y - oy < h, without overflow
    const bool in_patch = oy <= k.y && oy > k.y - h && ox <= k.x && ox > k.x - w;
    out[e] = in_patch ? patch[offset_of(k.b, k.c, k.y - oy, k.x - ox, C, h, w, cl)]
                      : base[offset_of(index[k.b], k.c, k.y, k.x, C, H, W, cl)];
  }
}

// paste(crop(...), arange(B), patch, patch_offsets) in one pass: patch[b] where window position
// (i, j) lies in it (at patch_offsets[b] = [py, px]), else the crop's value.
template <typename scalar_t>
__global__ void crop_paste_kernel(const scalar_t* __restrict__ src, const int64_t* __restrict__ index,
                                  const int64_t* __restrict__ offsets, const scalar_t* __restrict__ patch,
                                  const int64_t* __restrict__ patch_offsets, scalar_t* __restrict__ out, int64_t total,
                                  int64_t C, int64_t H, int64_t W, int64_t height, int64_t width, int64_t h, int64_t w,
                                  scalar_t fill, bool cl) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Coord k = decompose(e, C, height, width, cl);  // k.y, k.x: position i, j in the window
    const int64_t py = patch_offsets[2 * k.b], px = patch_offsets[2 * k.b + 1];
    // 0 <= i - py < h, without overflow
    if (py <= k.y && py > k.y - h && px <= k.x && px > k.x - w) {
      out[e] = patch[offset_of(k.b, k.c, k.y - py, k.x - px, C, h, w, cl)];
      continue;
    }
    const int64_t oy = offsets[2 * k.b], ox = offsets[2 * k.b + 1];
    const bool inside = oy >= -k.y && oy < H - k.y && ox >= -k.x && ox < W - k.x;
    out[e] = inside ? src[offset_of(index[k.b], k.c, oy + k.y, ox + k.x, C, H, W, cl)] : fill;
  }
}

// index and offsets, validated on the host, as contiguous int64 tensors on `device`.
std::pair<at::Tensor, at::Tensor> device_windows(const at::Tensor& index, const at::Tensor& offsets, int64_t M,
                                                 const at::Device& device, const char* op) {
  const at::Tensor host_index = index.to(at::kCPU).contiguous();  // one sync for device indices
  check_index_inside(host_index, M, op);
  auto on_device = [&](const at::Tensor& t) {
    if (t.device() == device) return t.contiguous();
    // a copy from pageable host memory is staged before cudaMemcpyAsync returns (see device_boxes)
    return t.contiguous().to(device, at::kLong, /*non_blocking=*/true);
  };
  return {on_device(index), on_device(offsets)};
}

dim3 elementwise_grid(int64_t total) {
  return dim3(static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20)));
}

at::MemoryFormat format_of(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor crop_cuda(const at::Tensor& src, const at::Tensor& index, const at::Tensor& offsets, int64_t height,
                     int64_t width, double fill) {
  constexpr const char* op = "advinterp_gridablate::crop";
  check_crop_args(src, index, offsets, height, width, op);
  TORCH_CHECK_VALUE(src.is_cuda(), op, " (CUDA kernel): src is on ", src.device(),
                    "; put it on the CUDA device (index and offsets may stay on the CPU)");
  const c10::cuda::CUDAGuard guard(src.device());
  const bool cl = use_channels_last(src);
  const at::Tensor s = src.contiguous(format_of(cl));
  const int64_t M = s.size(0), C = s.size(1), H = s.size(2), W = s.size(3), B = index.size(0);
  at::Tensor idx, off;  // (named tensors, not structured bindings: the dispatch lambda captures them)
  std::tie(idx, off) = device_windows(index, offsets, M, s.device(), op);
  at::Tensor out = at::empty({B, C, height, width}, s.options().memory_format(format_of(cl)));
  const int64_t total = out.numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_crop_cuda", [&] {
    const scalar_t fv = c10::Scalar(fill).to<scalar_t>();  // raises, as torch.full does, if fill overflows
    if (total == 0) return;
    crop_kernel<scalar_t><<<elementwise_grid(total), kThreads, 0, stream>>>(
        s.const_data_ptr<scalar_t>(), idx.const_data_ptr<int64_t>(), off.const_data_ptr<int64_t>(),
        out.mutable_data_ptr<scalar_t>(), total, C, H, W, height, width, fv, cl);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor paste_cuda(const at::Tensor& base, const at::Tensor& index, const at::Tensor& patch,
                      const at::Tensor& offsets) {
  constexpr const char* op = "advinterp_gridablate::paste";
  check_window_args(base, "base", index, offsets, op);
  check_patch_args(base, index, patch, op);
  TORCH_CHECK_VALUE(base.is_cuda(), op, " (CUDA kernel): base is on ", base.device(),
                    "; put base and patch on the CUDA device (index and offsets may stay on the CPU)");
  const c10::cuda::CUDAGuard guard(base.device());
  const bool cl = use_channels_last(base);
  const at::Tensor s = base.contiguous(format_of(cl)), p = patch.contiguous(format_of(cl));
  const int64_t M = s.size(0), C = s.size(1), H = s.size(2), W = s.size(3), B = index.size(0);
  at::Tensor idx, off;  // (named tensors, not structured bindings: the dispatch lambda captures them)
  std::tie(idx, off) = device_windows(index, offsets, M, s.device(), op);
  at::Tensor out = at::empty({B, C, H, W}, s.options().memory_format(format_of(cl)));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_paste_cuda", [&] {
    paste_kernel<scalar_t><<<elementwise_grid(total), kThreads, 0, stream>>>(
        s.const_data_ptr<scalar_t>(), idx.const_data_ptr<int64_t>(), p.const_data_ptr<scalar_t>(),
        off.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), total, C, H, W, p.size(2), p.size(3), cl);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor crop_paste_cuda(const at::Tensor& src, const at::Tensor& index, const at::Tensor& offsets, int64_t height,
                           int64_t width, double fill, const at::Tensor& patch, const at::Tensor& patch_offsets) {
  constexpr const char* op = "advinterp_gridablate::crop_paste";
  check_crop_paste_args(src, index, offsets, height, width, patch, patch_offsets, op);
  TORCH_CHECK_VALUE(src.is_cuda(), op, " (CUDA kernel): src is on ", src.device(),
                    "; put src and patch on the CUDA device (index and offsets may stay on the CPU)");
  const c10::cuda::CUDAGuard guard(src.device());
  const bool cl = use_channels_last(src);
  const at::Tensor s = src.contiguous(format_of(cl)), p = patch.contiguous(format_of(cl));
  const int64_t M = s.size(0), C = s.size(1), H = s.size(2), W = s.size(3), B = index.size(0);
  at::Tensor idx, off;  // (named tensors, not structured bindings: the dispatch lambda captures them)
  std::tie(idx, off) = device_windows(index, offsets, M, s.device(), op);
  const at::Tensor poff = patch_offsets.device() == s.device()
                              ? patch_offsets.contiguous()
                              : patch_offsets.contiguous().to(s.device(), at::kLong, /*non_blocking=*/true);
  at::Tensor out = at::empty({B, C, height, width}, s.options().memory_format(format_of(cl)));
  const int64_t total = out.numel();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "advinterp_gridablate_crop_paste_cuda",
                                  [&] {
    const scalar_t fv = c10::Scalar(fill).to<scalar_t>();  // raises, as torch.full does, if fill overflows
    if (total == 0) return;
    crop_paste_kernel<scalar_t><<<elementwise_grid(total), kThreads, 0, stream>>>(
        s.const_data_ptr<scalar_t>(), idx.const_data_ptr<int64_t>(), off.const_data_ptr<int64_t>(),
        p.const_data_ptr<scalar_t>(), poff.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), total, C, H,
        W, height, width, p.size(2), p.size(3), fv, cl);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(advinterp_gridablate, CUDA, m) {
  m.impl("ablate", &ablate_cuda);
  m.impl("scatter_mean", &scatter_mean_cuda);
  m.impl("crop", &crop_cuda);
  m.impl("paste", &paste_cuda);
  m.impl("crop_paste", &crop_paste_cuda);
}

}  // namespace advinterp_gridablate
