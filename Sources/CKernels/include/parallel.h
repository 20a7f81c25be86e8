#ifndef BLOCKWISE_PARALLEL_H
#define BLOCKWISE_PARALLEL_H
// Parallel loops on libgomp's thread team, the one oneDNN's convolutions use, so the kernels'
// own loops and oneDNN's never compete for cores (two runtimes would: an OpenMP worker
// spin-waiting after a convolution holds the core a Dispatch worker needs).

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*bw_range_body)(void *context, long part, long begin, long end);

/// Calls body(context, p, p * count / parts, (p + 1) * count / parts) for p in 0..<parts,
/// on `parts` threads of the OpenMP team; returns when all are done.
void bw_parallel_ranges(int parts, long count, void *context, bw_range_body body);

#ifdef __cplusplus
}
#endif
#endif
