#ifndef BLOCKWISE_DNNL_CONVOLUTION_H
#define BLOCKWISE_DNNL_CONVOLUTION_H
// A 2-D convolution through oneDNN (Debian libdnnl-dev), for a fixed geometry and chunk of
// images. Tensors cross the boundary in plain N C H W / O I H W (fp32); oneDNN's blocked
// copies, its scratchpad and its weight-gradient partials live in a caller-provided
// workspace whose size is known before any allocation (`bw_dnnl_conv_workspace_bytes`), so the
// caller's memory ledger counts every byte the convolution uses (primitive objects and their
// JIT code aside).
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bw_dnnl_conv bw_dnnl_conv;

/// Creates the forward, backward-data and backward-weights primitives for `images` images of
/// [in_channels, height, width] convolved with [out_channels, in_channels, kernel, kernel]
/// (zero padding `padding`, stride `stride`). Returns NULL when oneDNN refuses.
bw_dnnl_conv *bw_dnnl_conv_create(int images, int in_channels, int out_channels, int kernel, int stride, int padding,
                                  int height, int width, int has_bias);
void bw_dnnl_conv_destroy(bw_dnnl_conv *conv);

/// Workspace bytes the forward and backward calls need (the larger of the two; 64-byte aligned parts).
size_t bw_dnnl_conv_workspace_bytes(const bw_dnnl_conv *conv);

/// dst = conv(src, weights) + bias (bias may be NULL if created without one). Returns 0 on success.
int bw_dnnl_conv_forward(bw_dnnl_conv *conv, const float *src, const float *weights, const float *bias,
                         float *dst, void *workspace);

/// diff_src += conv_transpose(diff_dst, weights) (skipped if diff_src is NULL);
/// diff_weights += diff_dst x columns(src) (skipped if diff_weights is NULL). Returns 0 on success.
int bw_dnnl_conv_backward(bw_dnnl_conv *conv, const float *src, const float *weights, const float *diff_dst,
                          float *diff_src, float *diff_weights, void *workspace);

/// Threads oneDNN's OpenMP runtime may use.
void bw_dnnl_set_threads(int threads);

#ifdef __cplusplus
}
#endif
#endif
