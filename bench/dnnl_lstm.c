/* Times oneDNN's fused LSTM primitive (f32, one layer), forward training pass
 * plus backward pass: the vendor-tuned peer of seqc's recurrent layer.
 *
 *     dnnl-lstm NAME T B I H DIRS [--steps N] [--warmup W]
 *
 * T time steps, B batch, I input features, H hidden units; DIRS 1 runs left
 * to right, DIRS 2 both ways with the two outputs concatenated (2H features).
 * Build: cc -O2 -std=c11 bench/dnnl_lstm.c -ldnnl -o dnnl-lstm
 * oneDNN threads with OpenMP: set OMP_NUM_THREADS to choose the count.
 *
 * Activations use plain layouts (tnc, ldnc). Weights are created in ldigo and
 * reordered once, before timing, into the layouts the forward and backward
 * primitives choose (format any), as a framework keeps them; the weight
 * gradients stay in the backward primitive's layout. Initial states are
 * random, diff_dst_layer random, diff_dst_iter(_c) zero.
 *
 * One timed iteration = zeroing the weight gradients (oneDNN 2.6 adds into
 * them), one forward (forward_training, which fills the workspace) and one
 * backward (diff_src_layer, diff_src_iter(_c), diff_weights_layer/iter,
 * diff_bias). W warm-ups, then N timed iterations (CLOCK_MONOTONIC). Prints:
 *
 *     model=NAME median_ms=X min_ms=X max_ms=X gflops=X threads=S
 *
 * gflops counts the matrix products only: the forward's
 * 2*T*B*4H*(I+H)*DIRS, the backward twice that (input and weight gradients),
 * 6*T*B*4H*(I+H)*DIRS per iteration, divided by the median time. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#define CHECK(call) check((call), #call)

static void check(dnnl_status_t st, const char *call) {
    if (st != dnnl_success) {
        fprintf(stderr, "dnnl-lstm: %s failed: %s\n", call, dnnl_status2str(st));
        exit(1);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: dnnl-lstm NAME T B I H DIRS [--steps N] [--warmup W]\n");
    exit(2);
}

static long parse_int(const char *s, long min) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < min) usage();
    return v;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* Uniform in [-scale, scale) (xorshift64*). */
static float rnd(float scale) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545f4914f6cdd1du;
    return scale * (2.0f * (float)(r >> 40) / (float)(1u << 24) - 1.0f);
}

static dnnl_memory_desc_t md_new(int ndims, const dnnl_dims_t dims, dnnl_format_tag_t tag) {
    dnnl_memory_desc_t md;
    CHECK(dnnl_memory_desc_init_by_tag(&md, ndims, dims, dnnl_f32, tag));
    return md;
}

/* The layout primitive PD wants for its execution argument ARG. */
static const dnnl_memory_desc_t *arg_md(const_dnnl_primitive_desc_t pd, int arg) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
    if (!md) {
        fprintf(stderr, "dnnl-lstm: dnnl_primitive_desc_query_md(arg %d) failed\n", arg);
        exit(1);
    }
    return md;
}

/* A memory object with library-allocated storage, filled with uniform values
 * in [-scale, scale) (zeros if scale is 0). */
static dnnl_memory_t mem_new(const dnnl_memory_desc_t *md, dnnl_engine_t eng, float scale) {
    dnnl_memory_t m;
    CHECK(dnnl_memory_create(&m, md, eng, DNNL_MEMORY_ALLOCATE));
    void *p;
    CHECK(dnnl_memory_get_data_handle(m, &p));
    size_t bytes = dnnl_memory_desc_get_size(md);
    memset(p, 0, bytes);
    if (scale != 0)
        for (size_t i = 0; i < bytes / sizeof(float); i++) ((float *)p)[i] = rnd(scale);
    return m;
}

static void mem_zero(dnnl_memory_t m) {
    const dnnl_memory_desc_t *md;
    void *p;
    CHECK(dnnl_memory_get_memory_desc(m, &md));
    CHECK(dnnl_memory_get_data_handle(m, &p));
    memset(p, 0, dnnl_memory_desc_get_size(md));
}

/* A copy of SRC in layout MD (SRC itself if it already has that layout). */
static dnnl_memory_t reorder_to(dnnl_memory_t src, const dnnl_memory_desc_t *md,
                                dnnl_engine_t eng, dnnl_stream_t stream) {
    const dnnl_memory_desc_t *src_md;
    CHECK(dnnl_memory_get_memory_desc(src, &src_md));
    if (dnnl_memory_desc_equal(src_md, md)) return src;
    dnnl_memory_t dst;
    CHECK(dnnl_memory_create(&dst, md, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    CHECK(dnnl_reorder_primitive_desc_create(&pd, src_md, eng, md, eng, NULL));
    CHECK(dnnl_primitive_create(&prim, pd));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    CHECK(dnnl_primitive_execute(prim, stream, 2, args));
    CHECK(dnnl_stream_wait(stream));
    CHECK(dnnl_primitive_destroy(prim));
    CHECK(dnnl_primitive_desc_destroy(pd));
    return dst;
}

/* The thread count of the OpenMP runtime oneDNN runs on (libgomp is loaded as
 * libdnnl's dependency), else OMP_NUM_THREADS, else "default". */
static void threads_used(char *buf, size_t n) {
    int (*max_threads)(void);
    *(void **)&max_threads = dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    const char *env = getenv("OMP_NUM_THREADS");
    if (max_threads) snprintf(buf, n, "%d", max_threads());
    else snprintf(buf, n, "%s", env && *env ? env : "default");
}

int main(int argc, char **argv) {
    const char *pos[6];
    int npos = 0;
    long steps = 10, warmup = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = parse_int(argv[++i], 1);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = parse_int(argv[++i], 0);
        else if (argv[i][0] == '-' || npos == 6) usage();
        else pos[npos++] = argv[i];
    }
    if (npos != 6) usage();
    const char *name = pos[0];
    long T = parse_int(pos[1], 1), B = parse_int(pos[2], 1), I = parse_int(pos[3], 1),
         H = parse_int(pos[4], 1), D = parse_int(pos[5], 1);
    if (D > 2) usage();
    dnnl_rnn_direction_t dir = D == 1 ? dnnl_unidirectional_left2right : dnnl_bidirectional_concat;

    dnnl_engine_t eng;
    dnnl_stream_t stream;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));

    /* Plain layouts; 4 gates in oneDNN's order (i, f, c~, o). */
    dnnl_dims_t src_dims = {T, B, I}, dst_dims = {T, B, D * H}, state_dims = {1, D, B, H};
    dnnl_dims_t wl_dims = {1, D, I, 4, H}, wi_dims = {1, D, H, 4, H}, bias_dims = {1, D, 4, H};
    dnnl_memory_desc_t src_md = md_new(3, src_dims, dnnl_tnc);
    dnnl_memory_desc_t dst_md = md_new(3, dst_dims, dnnl_tnc);
    dnnl_memory_desc_t state_md = md_new(4, state_dims, dnnl_ldnc);
    dnnl_memory_desc_t bias_md = md_new(4, bias_dims, dnnl_ldgo);
    dnnl_memory_desc_t wl_user = md_new(5, wl_dims, dnnl_ldigo);
    dnnl_memory_desc_t wi_user = md_new(5, wi_dims, dnnl_ldigo);
    dnnl_memory_desc_t wl_any = md_new(5, wl_dims, dnnl_format_tag_any);
    dnnl_memory_desc_t wi_any = md_new(5, wi_dims, dnnl_format_tag_any);

    dnnl_rnn_desc_t fwd_d, bwd_d;
    CHECK(dnnl_lstm_forward_desc_init(&fwd_d, dnnl_forward_training, dir, &src_md, &state_md,
                                      &state_md, &wl_any, &wi_any, &bias_md, &dst_md, &state_md,
                                      &state_md, 0));
    dnnl_primitive_desc_t fwd_pd, bwd_pd;
    CHECK(dnnl_primitive_desc_create(&fwd_pd, &fwd_d, NULL, eng, NULL));
    CHECK(dnnl_lstm_backward_desc_init(&bwd_d, dnnl_backward, dir, &src_md, &state_md, &state_md,
                                       &wl_any, &wi_any, &bias_md, &dst_md, &state_md, &state_md,
                                       &src_md, &state_md, &state_md, &wl_any, &wi_any, &bias_md,
                                       &dst_md, &state_md, &state_md, 0));
    CHECK(dnnl_primitive_desc_create(&bwd_pd, &bwd_d, NULL, eng, fwd_pd));
    dnnl_primitive_t fwd, bwd;
    CHECK(dnnl_primitive_create(&fwd, fwd_pd));
    CHECK(dnnl_primitive_create(&bwd, bwd_pd));

    /* Data and states. */
    dnnl_memory_t src = mem_new(&src_md, eng, 1.0f);
    dnnl_memory_t h0 = mem_new(&state_md, eng, 0.5f), c0 = mem_new(&state_md, eng, 0.5f);
    dnnl_memory_t dst = mem_new(&dst_md, eng, 0);
    dnnl_memory_t hT = mem_new(&state_md, eng, 0), cT = mem_new(&state_md, eng, 0);
    dnnl_memory_t ws = mem_new(arg_md(fwd_pd, DNNL_ARG_WORKSPACE), eng, 0);

    /* Weights: user ldigo, reordered once for each primitive. */
    float wscale = 1.0f / (float)H;
    dnnl_memory_t wl = mem_new(&wl_user, eng, wscale), wi = mem_new(&wi_user, eng, wscale);
    dnnl_memory_t bias = mem_new(&bias_md, eng, wscale);
    dnnl_memory_t wl_fwd = reorder_to(wl, arg_md(fwd_pd, DNNL_ARG_WEIGHTS_LAYER), eng, stream);
    dnnl_memory_t wi_fwd = reorder_to(wi, arg_md(fwd_pd, DNNL_ARG_WEIGHTS_ITER), eng, stream);
    dnnl_memory_t wl_bwd = reorder_to(wl, arg_md(bwd_pd, DNNL_ARG_WEIGHTS_LAYER), eng, stream);
    dnnl_memory_t wi_bwd = reorder_to(wi, arg_md(bwd_pd, DNNL_ARG_WEIGHTS_ITER), eng, stream);

    /* Gradients. */
    dnnl_memory_t d_src = mem_new(&src_md, eng, 0);
    dnnl_memory_t d_h0 = mem_new(&state_md, eng, 0), d_c0 = mem_new(&state_md, eng, 0);
    dnnl_memory_t d_wl = mem_new(arg_md(bwd_pd, DNNL_ARG_DIFF_WEIGHTS_LAYER), eng, 0);
    dnnl_memory_t d_wi = mem_new(arg_md(bwd_pd, DNNL_ARG_DIFF_WEIGHTS_ITER), eng, 0);
    dnnl_memory_t d_bias = mem_new(&bias_md, eng, 0);
    dnnl_memory_t d_dst = mem_new(&dst_md, eng, 1.0f);
    dnnl_memory_t d_hT = mem_new(&state_md, eng, 0), d_cT = mem_new(&state_md, eng, 0);

    dnnl_exec_arg_t fwd_args[] = {
        {DNNL_ARG_SRC_LAYER, src},         {DNNL_ARG_SRC_ITER, h0},
        {DNNL_ARG_SRC_ITER_C, c0},         {DNNL_ARG_WEIGHTS_LAYER, wl_fwd},
        {DNNL_ARG_WEIGHTS_ITER, wi_fwd},   {DNNL_ARG_BIAS, bias},
        {DNNL_ARG_DST_LAYER, dst},         {DNNL_ARG_DST_ITER, hT},
        {DNNL_ARG_DST_ITER_C, cT},         {DNNL_ARG_WORKSPACE, ws},
    };
    dnnl_exec_arg_t bwd_args[] = {
        {DNNL_ARG_SRC_LAYER, src},           {DNNL_ARG_SRC_ITER, h0},
        {DNNL_ARG_SRC_ITER_C, c0},           {DNNL_ARG_WEIGHTS_LAYER, wl_bwd},
        {DNNL_ARG_WEIGHTS_ITER, wi_bwd},     {DNNL_ARG_BIAS, bias},
        {DNNL_ARG_DST_LAYER, dst},           {DNNL_ARG_DST_ITER, hT},
        {DNNL_ARG_DST_ITER_C, cT},           {DNNL_ARG_WORKSPACE, ws},
        {DNNL_ARG_DIFF_SRC_LAYER, d_src},    {DNNL_ARG_DIFF_SRC_ITER, d_h0},
        {DNNL_ARG_DIFF_SRC_ITER_C, d_c0},    {DNNL_ARG_DIFF_WEIGHTS_LAYER, d_wl},
        {DNNL_ARG_DIFF_WEIGHTS_ITER, d_wi},  {DNNL_ARG_DIFF_BIAS, d_bias},
        {DNNL_ARG_DIFF_DST_LAYER, d_dst},    {DNNL_ARG_DIFF_DST_ITER, d_hT},
        {DNNL_ARG_DIFF_DST_ITER_C, d_cT},
    };
    int n_fwd = (int)(sizeof fwd_args / sizeof fwd_args[0]);
    int n_bwd = (int)(sizeof bwd_args / sizeof bwd_args[0]);

    double *ms = malloc((size_t)steps * sizeof *ms);
    if (!ms) return 1;
    for (long it = 0; it < warmup + steps; it++) {
        double t0 = now_ms();
        /* oneDNN 2.6's RNN backward accumulates into diff_weights_layer/iter
         * and diff_bias (it has no overwrite flag), so a real training step
         * zeroes them first: timed. */
        mem_zero(d_wl);
        mem_zero(d_wi);
        mem_zero(d_bias);
        CHECK(dnnl_primitive_execute(fwd, stream, n_fwd, fwd_args));
        CHECK(dnnl_primitive_execute(bwd, stream, n_bwd, bwd_args));
        CHECK(dnnl_stream_wait(stream));
        double t1 = now_ms();
        if (it >= warmup) ms[it - warmup] = t1 - t0;
    }
    qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
    double median = steps % 2 ? ms[steps / 2] : 0.5 * (ms[steps / 2 - 1] + ms[steps / 2]);
    double flop = 6.0 * (double)T * (double)B * 4.0 * (double)H * (double)(I + H) * (double)D;
    char threads[32];
    threads_used(threads, sizeof threads);
    printf("model=%s median_ms=%.3f min_ms=%.3f max_ms=%.3f gflops=%.2f threads=%s\n", name, median,
           ms[0], ms[steps - 1], flop / (median * 1e6), threads);

    free(ms);
    dnnl_memory_t mems[] = {src, h0, c0, dst, hT, cT, ws, wl, wi, bias, d_src, d_h0, d_c0, d_wl,
                            d_wi, d_bias, d_dst, d_hT, d_cT};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++) CHECK(dnnl_memory_destroy(mems[i]));
    dnnl_memory_t copies[] = {wl_fwd, wi_fwd, wl_bwd, wi_bwd};
    for (int i = 0; i < 4; i++)
        if (copies[i] != wl && copies[i] != wi) CHECK(dnnl_memory_destroy(copies[i]));
    CHECK(dnnl_primitive_destroy(fwd));
    CHECK(dnnl_primitive_destroy(bwd));
    CHECK(dnnl_primitive_desc_destroy(fwd_pd));
    CHECK(dnnl_primitive_desc_destroy(bwd_pd));
    CHECK(dnnl_stream_destroy(stream));
    CHECK(dnnl_engine_destroy(eng));
    return 0;
}
