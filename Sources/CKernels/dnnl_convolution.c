#include "dnnl_convolution.h"
#include <dnnl.h>
#include <stdlib.h>
#include <string.h>

extern void omp_set_num_threads(int);

static dnnl_engine_t engine;
static dnnl_stream_t stream;

static int ensure_engine(void) {
    if (engine) return 0;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return -1;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return -1;
    return 0;
}

/// omp_set_num_threads sets the calling thread's team size: call it from the thread that runs
/// the kernels (the CLI sets threads and trains on its main thread).
void bw_dnnl_set_threads(int threads) { omp_set_num_threads(threads < 1 ? 1 : threads); }

/// A reorder between a plain (user) layout and oneDNN's chosen one; `accumulate` adds into the destination.
typedef struct {
    dnnl_primitive_t primitive;  // NULL when the layouts are equal
    dnnl_memory_t from, to;
} reorder_t;

struct bw_dnnl_conv {
    dnnl_primitive_t forward, backward_data, backward_weights;
    dnnl_memory_t src, weights, bias, dst;             // forward arguments (oneDNN layouts)
    dnnl_memory_t bw_src, diff_dst, diff_src, bw_weights, diff_weights;  // backward arguments
    dnnl_memory_t w_diff_dst;  // backward-weights' diff_dst when its layout differs from backward-data's
    int separate_diff_dst;
    dnnl_memory_t scratch_forward, scratch_data, scratch_weights;
    reorder_t src_in, weights_in, dst_out;                            // forward
    reorder_t bw_src_in, diff_dst_in, w_diff_dst_in, bw_weights_in, diff_src_out, diff_weights_out;  // backward
    /// Byte offsets of the parts in the workspace.
    size_t off_src, off_weights, off_dst, off_scratch_forward;
    size_t off_bw_src, off_diff_dst, off_w_diff_dst, off_diff_src, off_bw_weights, off_diff_weights, off_scratch_backward;
    size_t bytes;
};

static const dnnl_memory_desc_t *query(const_dnnl_primitive_desc_t pd, dnnl_query_t what);

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

static int make_memory(dnnl_memory_t *memory, const dnnl_memory_desc_t *md) {
    return dnnl_memory_create(memory, md, engine, DNNL_MEMORY_NONE) == dnnl_success ? 0 : -1;
}

/// A reorder user->chosen or chosen->user; no primitive when the layouts agree. The reorder must
/// need no scratchpad (oneDNN would allocate it behind the ledger's back): otherwise it fails,
/// and with it the convolution, which then runs on the reference path.
static int make_reorder(reorder_t *r, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, int accumulate) {
    memset(r, 0, sizeof *r);
    if (make_memory(&r->from, from) || make_memory(&r->to, to)) return -1;
    if (dnnl_memory_desc_equal(from, to) && !accumulate) return 0;
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return -1;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (accumulate) {
        dnnl_post_ops_t ops = NULL;
        if (dnnl_post_ops_create(&ops) != dnnl_success) { dnnl_primitive_attr_destroy(attr); return -1; }
        dnnl_post_ops_append_sum(ops, 1.0f);
        dnnl_primitive_attr_set_post_ops(attr, ops);
        dnnl_post_ops_destroy(ops);
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t status = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr);
    dnnl_primitive_attr_destroy(attr);
    if (status != dnnl_success) return -1;
    if (dnnl_memory_desc_get_size(query(pd, dnnl_query_scratchpad_md)) != 0) { dnnl_primitive_desc_destroy(pd); return -1; }
    status = dnnl_primitive_create(&r->primitive, pd);
    dnnl_primitive_desc_destroy(pd);
    return status == dnnl_success ? 0 : -1;
}

/// Runs a reorder from `from` (user or workspace pointer) to `to`; a plain copy when the layouts agree.
static int run_reorder(reorder_t *r, const void *from, void *to) {
    if (!r->primitive) {
        if (from != to) {
            const dnnl_memory_desc_t *md;
            dnnl_memory_get_memory_desc(r->from, &md);
            memcpy(to, from, dnnl_memory_desc_get_size(md));
        }
        return 0;
    }
    dnnl_memory_set_data_handle_v2(r->from, (void *)from, stream);
    dnnl_memory_set_data_handle_v2(r->to, to, stream);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->from}, {DNNL_ARG_TO, r->to}};
    return dnnl_primitive_execute(r->primitive, stream, 2, args) == dnnl_success ? 0 : -1;
}

static void destroy_reorder(reorder_t *r) {
    if (r->primitive) dnnl_primitive_destroy(r->primitive);
    if (r->from) dnnl_memory_destroy(r->from);
    if (r->to) dnnl_memory_destroy(r->to);
}

static const dnnl_memory_desc_t *query(const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

bw_dnnl_conv *bw_dnnl_conv_create(int images, int in_channels, int out_channels, int kernel, int stride, int padding,
                                  int height, int width, int has_bias) {
    if (ensure_engine()) return NULL;
    int out_h = (height + 2 * padding - kernel) / stride + 1, out_w = (width + 2 * padding - kernel) / stride + 1;
    // oneDNN's right padding makes the last window end exactly at the input's edge.
    int pad_r_h = (out_h - 1) * stride + kernel - height - padding, pad_r_w = (out_w - 1) * stride + kernel - width - padding;
    dnnl_dims_t src_dims = {images, in_channels, height, width}, dst_dims = {images, out_channels, out_h, out_w};
    dnnl_dims_t weight_dims = {out_channels, in_channels, kernel, kernel}, bias_dims = {out_channels};
    dnnl_dims_t strides = {stride, stride}, pad_l = {padding, padding}, pad_r = {pad_r_h, pad_r_w};
    dnnl_memory_desc_t user_src, user_dst, user_weights, user_bias, any_src, any_dst, any_weights;
    dnnl_memory_desc_init_by_tag(&user_src, 4, src_dims, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&user_dst, 4, dst_dims, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&user_weights, 4, weight_dims, dnnl_f32, dnnl_oihw);
    dnnl_memory_desc_init_by_tag(&user_bias, 1, bias_dims, dnnl_f32, dnnl_x);
    dnnl_memory_desc_init_by_tag(&any_src, 4, src_dims, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&any_dst, 4, dst_dims, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&any_weights, 4, weight_dims, dnnl_f32, dnnl_format_tag_any);

    bw_dnnl_conv *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) { free(c); return NULL; }
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    dnnl_convolution_desc_t fd, dd, wd;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    int failed = 0;
    failed |= dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &any_src, &any_weights,
                                                 has_bias ? &user_bias : NULL, &any_dst, strides, pad_l, pad_r) != dnnl_success;
    failed |= failed || dnnl_primitive_desc_create(&fpd, &fd, attr, engine, NULL) != dnnl_success;
    failed |= failed || dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &any_src, &any_weights, &any_dst,
                                                                 strides, pad_l, pad_r) != dnnl_success;
    failed |= failed || dnnl_primitive_desc_create(&dpd, &dd, attr, engine, fpd) != dnnl_success;
    failed |= failed || dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &any_src, &any_weights, NULL,
                                                                    &any_dst, strides, pad_l, pad_r) != dnnl_success;
    failed |= failed || dnnl_primitive_desc_create(&wpd, &wd, attr, engine, fpd) != dnnl_success;
    dnnl_primitive_attr_destroy(attr);
    if (failed) goto fail;


    const dnnl_memory_desc_t *src = query(fpd, dnnl_query_src_md), *weights = query(fpd, dnnl_query_weights_md),
                             *dst = query(fpd, dnnl_query_dst_md);
    const dnnl_memory_desc_t *d_diff_dst = query(dpd, dnnl_query_diff_dst_md), *d_weights = query(dpd, dnnl_query_weights_md),
                             *d_diff_src = query(dpd, dnnl_query_diff_src_md);
    const dnnl_memory_desc_t *w_src = query(wpd, dnnl_query_src_md), *w_diff_dst = query(wpd, dnnl_query_diff_dst_md),
                             *w_diff_weights = query(wpd, dnnl_query_diff_weights_md);

    if (make_memory(&c->src, src) || make_memory(&c->weights, weights) || make_memory(&c->dst, dst)) goto fail;
    if (has_bias && make_memory(&c->bias, &user_bias)) goto fail;
    if (make_memory(&c->diff_dst, d_diff_dst) || make_memory(&c->bw_weights, d_weights) || make_memory(&c->diff_src, d_diff_src)) goto fail;
    if (make_memory(&c->bw_src, w_src) || make_memory(&c->diff_weights, w_diff_weights)) goto fail;
    c->separate_diff_dst = !dnnl_memory_desc_equal(w_diff_dst, d_diff_dst);
    if (make_memory(&c->w_diff_dst, w_diff_dst)) goto fail;
    if (make_memory(&c->scratch_forward, query(fpd, dnnl_query_scratchpad_md))
        || make_memory(&c->scratch_data, query(dpd, dnnl_query_scratchpad_md))
        || make_memory(&c->scratch_weights, query(wpd, dnnl_query_scratchpad_md))) goto fail;

    if (make_reorder(&c->src_in, &user_src, src, 0) || make_reorder(&c->weights_in, &user_weights, weights, 0)
        || make_reorder(&c->dst_out, dst, &user_dst, 0)
        || make_reorder(&c->bw_src_in, &user_src, w_src, 0) || make_reorder(&c->diff_dst_in, &user_dst, d_diff_dst, 0)
        || make_reorder(&c->w_diff_dst_in, &user_dst, w_diff_dst, 0)
        || make_reorder(&c->bw_weights_in, &user_weights, d_weights, 0)
        || make_reorder(&c->diff_src_out, d_diff_src, &user_src, 1)
        || make_reorder(&c->diff_weights_out, w_diff_weights, &user_weights, 1)) goto fail;

    if (dnnl_primitive_create(&c->forward, fpd) != dnnl_success || dnnl_primitive_create(&c->backward_data, dpd) != dnnl_success
        || dnnl_primitive_create(&c->backward_weights, wpd) != dnnl_success) goto fail;

    // Forward: [src | weights | dst | scratch]; backward: [diff_dst | (diff_dst in backward-weights'
    // layout, if it differs) | weights | diff_weights | diff_src, then src | scratch].
    size_t at = 0;
    c->off_src = at; at += align64(dnnl_memory_desc_get_size(src));
    c->off_weights = at; at += align64(dnnl_memory_desc_get_size(weights));
    c->off_dst = at; at += align64(dnnl_memory_desc_get_size(dst));
    c->off_scratch_forward = at; at += align64(dnnl_memory_desc_get_size(query(fpd, dnnl_query_scratchpad_md)));
    size_t forward_bytes = at;
    at = 0;
    c->off_diff_dst = at; at += align64(dnnl_memory_desc_get_size(d_diff_dst));
    c->off_w_diff_dst = c->separate_diff_dst ? at : c->off_diff_dst;
    if (c->separate_diff_dst) at += align64(dnnl_memory_desc_get_size(w_diff_dst));
    c->off_bw_weights = at; at += align64(dnnl_memory_desc_get_size(d_weights));
    c->off_diff_weights = at; at += align64(dnnl_memory_desc_get_size(w_diff_weights));
    // diff_src is added into the caller's tensor before src is copied in for the weight
    // gradient, so the two share one region (the larger of the two).
    size_t diff_src_bytes = dnnl_memory_desc_get_size(d_diff_src), src_bytes = dnnl_memory_desc_get_size(w_src);
    c->off_diff_src = at; c->off_bw_src = at;
    at += align64(diff_src_bytes > src_bytes ? diff_src_bytes : src_bytes);
    c->off_scratch_backward = at;
    size_t scratch_d = dnnl_memory_desc_get_size(query(dpd, dnnl_query_scratchpad_md));
    size_t scratch_w = dnnl_memory_desc_get_size(query(wpd, dnnl_query_scratchpad_md));
    at += align64(scratch_d > scratch_w ? scratch_d : scratch_w);
    c->bytes = forward_bytes > at ? forward_bytes : at;
    dnnl_primitive_desc_destroy(fpd); dnnl_primitive_desc_destroy(dpd); dnnl_primitive_desc_destroy(wpd);
    return c;
fail:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (dpd) dnnl_primitive_desc_destroy(dpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    bw_dnnl_conv_destroy(c);
    return NULL;
}

void bw_dnnl_conv_destroy(bw_dnnl_conv *c) {
    if (!c) return;
    dnnl_primitive_t primitives[] = {c->forward, c->backward_data, c->backward_weights};
    for (int i = 0; i < 3; i++) if (primitives[i]) dnnl_primitive_destroy(primitives[i]);
    dnnl_memory_t memories[] = {c->src, c->weights, c->bias, c->dst, c->bw_src, c->diff_dst, c->diff_src, c->bw_weights,
                                c->diff_weights, c->scratch_forward, c->scratch_data, c->scratch_weights, c->w_diff_dst};
    for (int i = 0; i < 13; i++) if (memories[i]) dnnl_memory_destroy(memories[i]);
    reorder_t *reorders[] = {&c->src_in, &c->weights_in, &c->dst_out, &c->bw_src_in, &c->diff_dst_in, &c->w_diff_dst_in,
                             &c->bw_weights_in, &c->diff_src_out, &c->diff_weights_out};
    for (int i = 0; i < 9; i++) destroy_reorder(reorders[i]);
    free(c);
}

size_t bw_dnnl_conv_workspace_bytes(const bw_dnnl_conv *c) { return c->bytes; }

static void bind(dnnl_memory_t memory, void *pointer) { dnnl_memory_set_data_handle_v2(memory, pointer, stream); }

int bw_dnnl_conv_forward(bw_dnnl_conv *c, const float *src, const float *weights, const float *bias, float *dst, void *workspace) {
    if (c->bias && !bias) return -1;  // created with a bias: one must be given
    char *w = workspace;
    void *src_b = w + c->off_src, *weights_b = w + c->off_weights, *dst_b = w + c->off_dst;
    if (run_reorder(&c->src_in, src, src_b) || run_reorder(&c->weights_in, weights, weights_b)) return -1;
    bind(c->src, src_b); bind(c->weights, weights_b); bind(c->dst, dst_b);
    bind(c->scratch_forward, w + c->off_scratch_forward);
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, c->src}, {DNNL_ARG_WEIGHTS, c->weights}, {DNNL_ARG_DST, c->dst},
                               {DNNL_ARG_SCRATCHPAD, c->scratch_forward}, {DNNL_ARG_BIAS, c->bias}};
    if (c->bias) bind(c->bias, (void *)bias);
    if (dnnl_primitive_execute(c->forward, stream, c->bias ? 5 : 4, args) != dnnl_success) return -1;
    if (run_reorder(&c->dst_out, dst_b, dst)) return -1;
    return dnnl_stream_wait(stream) == dnnl_success ? 0 : -1;
}

int bw_dnnl_conv_backward(bw_dnnl_conv *c, const float *src, const float *weights, const float *diff_dst,
                          float *diff_src, float *diff_weights, void *workspace) {
    char *w = workspace;
    void *diff_dst_b = w + c->off_diff_dst, *scratch = w + c->off_scratch_backward;
    if (run_reorder(&c->diff_dst_in, diff_dst, diff_dst_b)) return -1;
    bind(c->diff_dst, diff_dst_b);
    if (diff_src) {
        void *weights_b = w + c->off_bw_weights, *diff_src_b = w + c->off_diff_src;
        if (run_reorder(&c->bw_weights_in, weights, weights_b)) return -1;
        bind(c->bw_weights, weights_b); bind(c->diff_src, diff_src_b); bind(c->scratch_data, scratch);
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_DIFF_DST, c->diff_dst}, {DNNL_ARG_WEIGHTS, c->bw_weights},
                                   {DNNL_ARG_DIFF_SRC, c->diff_src}, {DNNL_ARG_SCRATCHPAD, c->scratch_data}};
        if (dnnl_primitive_execute(c->backward_data, stream, 4, args) != dnnl_success) return -1;
        if (run_reorder(&c->diff_src_out, diff_src_b, diff_src)) return -1;
    }
    if (diff_weights) {
        void *src_b = w + c->off_bw_src, *diff_weights_b = w + c->off_diff_weights;
        if (run_reorder(&c->bw_src_in, src, src_b)) return -1;
        void *w_diff_dst_b = w + c->off_w_diff_dst;
        if (c->separate_diff_dst && run_reorder(&c->w_diff_dst_in, diff_dst, w_diff_dst_b)) return -1;
        bind(c->w_diff_dst, w_diff_dst_b);
        bind(c->bw_src, src_b); bind(c->diff_weights, diff_weights_b); bind(c->scratch_weights, scratch);
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, c->bw_src}, {DNNL_ARG_DIFF_DST, c->w_diff_dst},
                                   {DNNL_ARG_DIFF_WEIGHTS, c->diff_weights}, {DNNL_ARG_SCRATCHPAD, c->scratch_weights}};
        if (dnnl_primitive_execute(c->backward_weights, stream, 4, args) != dnnl_success) return -1;
        if (run_reorder(&c->diff_weights_out, diff_weights_b, diff_weights)) return -1;
    }
    return dnnl_stream_wait(stream) == dnnl_success ? 0 : -1;
}
