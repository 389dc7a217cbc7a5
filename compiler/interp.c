/* The reference interpreter (see interp.h). One function per op, in the order
 * of ops.def; each starts with the shapes it reads. Loops are written out in
 * full: when a fast back end disagrees with this file, this file must be the
 * one that is obviously right. */
#include "interp.h"

#include <ffi.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"
#include "mathf.h"
#include "rng.h"

/* One graph's values: a buffer per node, and for each SCAN node the values of
 * its body (those of the step evaluated last). */
typedef struct Store Store;
struct Store {
    const Graph *g;
    int nnodes;             /* the nodes that existed when the store was made */
    double **val;           /* by node id */
    Store **body;           /* by node id: a SCAN's body, else NULL */
};

struct Interp {
    const Graph *model;
    Precision prec;
    int64_t batch;
    Store *top;
    bool training;
    uint64_t dropout_seed;
    double **slots[2];      /* optimizer state by model node id, made on first use */
    ffi_cif extern_cif;     /* float f(float): every extern function's signature */
};

/* The argument types of extern_cif: libffi keeps the pointer, not a copy. */
static ffi_type *extern_args[1] = {&ffi_type_float};

/* Dropout streams start here so that they never meet the param streams
 * (a param's stream is its index in model->params). */
#define DROPOUT_STREAM_BASE 1000003u

/* keras.backend.epsilon(): the clip bound of the probability losses. */
#define KERAS_EPSILON 1e-7

/* ---- failures ------------------------------------------------------------ */

/* A malformed graph or data the runtime should have refused: there is no
 * sensible value to go on with, so say which node and stop. */
__attribute__((noreturn, format(printf, 2, 3))) static void fail(const Node *n, const char *fmt, ...) {
    fprintf(stderr, "seqc: reference interpreter: ");
    if (n) {
        fprintf(stderr, "%s node %d", op_name(n->op), n->id);
        if (n->name) fprintf(stderr, " '%s'", n->name);
        if (n->graph && n->graph->parent) fprintf(stderr, " in the step of %s", n->graph->name);
        if (n->span.src) {
            int line, col;
            source_line_col(n->span.src, n->span.off, &line, &col);
            fprintf(stderr, " (%s:%d:%d)", n->span.src->path, line, col);
        }
        fprintf(stderr, ": ");
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "seqc: reference interpreter: out of memory (%zu x %zu bytes)\n", n, size);
        abort();
    }
    return p;
}

/* ---- storage ------------------------------------------------------------- */

static int64_t model_batch(const Graph *g) {
    while (g->parent) g = g->parent;
    return g->batch;
}

int64_t interp_size(const Graph *g, const Node *n) {
    return type_elements(&n->type) * (n->type.batched ? model_batch(g) : 1);
}

static Store *store_new(const Graph *g) {
    Store *s = xcalloc(1, sizeof *s);
    s->g = g;
    s->nnodes = g->nodes.len;
    s->val = xcalloc((size_t)s->nnodes, sizeof *s->val);
    s->body = xcalloc((size_t)s->nnodes, sizeof *s->body);
    for (int i = 0; i < s->nnodes; i++) {
        const Node *n = g->nodes.items[i];
        s->val[i] = xcalloc((size_t)interp_size(g, n), sizeof(double));
        if (n->op == OP_SCAN) s->body[i] = store_new(n->scan.body);
    }
    return s;
}

static void store_free(Store *s) {
    if (!s) return;
    for (int i = 0; i < s->nnodes; i++) {
        free(s->val[i]);
        store_free(s->body[i]);
    }
    free(s->val);
    free(s->body);
    free(s);
}

Interp *interp_new(const Graph *model, Precision prec) {
    if (model->parent) fail(NULL, "interp_new wants a model graph, not a scan body");
    if (model->batch < 1) fail(NULL, "model '%s' has batch size %lld", model->name, (long long)model->batch);
    Interp *it = xcalloc(1, sizeof *it);
    it->model = model;
    it->prec = prec;
    it->batch = model->batch;
    it->top = store_new(model);
    if (ffi_prep_cif(&it->extern_cif, FFI_DEFAULT_ABI, 1, &ffi_type_float, extern_args) != FFI_OK)
        fail(NULL, "libffi cannot describe float f(float)");
    return it;
}

void interp_free(Interp *it) {
    if (!it) return;
    for (int k = 0; k < 2; k++) {
        if (!it->slots[k]) continue;
        for (int i = 0; i < it->top->nnodes; i++) free(it->slots[k][i]);
        free(it->slots[k]);
    }
    store_free(it->top);
    free(it);
}

static void need_model_node(const Interp *it, const Node *n) {
    if (n->graph != it->model || n->id < 0 || n->id >= it->top->nnodes)
        fail(n, "not a node of the interpreted model graph (or added after interp_new)");
}

double *interp_data(Interp *it, const Node *n) {
    need_model_node(it, n);
    return it->top->val[n->id];
}

Precision interp_precision(const Interp *it) { return it->prec; }

double *interp_slot(Interp *it, const Node *param, int which) {
    need_model_node(it, param);
    if (which < 0 || which > 1) fail(param, "optimizer slot %d", which);
    if (!it->slots[which]) it->slots[which] = xcalloc((size_t)it->top->nnodes, sizeof(double *));
    double **slot = &it->slots[which][param->id];
    if (!*slot) *slot = xcalloc((size_t)interp_size(it->model, param), sizeof(double));
    return *slot;
}

/* ---- helpers ------------------------------------------------------------- */

static double *val(Store *s, const Node *n) { return s->val[n->id]; }
static int64_t elems(const Node *n) { return type_elements(&n->type); }
static int64_t last_dim(const Node *n) { return n->type.dims[n->type.rank - 1]; }
/* Examples a value holds: the batch if batched, else one shared by all. */
static int64_t nex(const Interp *it, const Node *n) { return n->type.batched ? it->batch : 1; }
/* Example b of n: its own slice when batched, the shared value when not. */
static double *ex(Store *s, const Node *n, int64_t b) { return val(s, n) + (n->type.batched ? b * elems(n) : 0); }

static void zero(Interp *it, Store *s, const Node *n) {
    memset(val(s, n), 0, sizeof(double) * (size_t)(elems(n) * nex(it, n)));
}

static double round_to(const Interp *it, double v) { return it->prec == PREC_F32 ? (double)(float)v : v; }

/* Element `flat` of the per-example shape `big`, mapped to the flat index of
 * the same element in `small` (numpy broadcasting: shapes right-aligned, an
 * axis of size 1 or a missing axis stretches). */
static int64_t bcast_index(const Node *at, const Type *big, const Type *small, int64_t flat) {
    if (small->rank > big->rank) fail(at, "cannot broadcast a rank %d value to rank %d", small->rank, big->rank);
    int64_t idx[SEQC_MAX_RANK];
    for (int k = big->rank - 1; k >= 0; k--) {
        idx[k] = flat % big->dims[k];
        flat /= big->dims[k];
    }
    int64_t r = 0;
    for (int k = 0; k < small->rank; k++) {
        int j = k + big->rank - small->rank;
        if (small->dims[k] != 1 && small->dims[k] != big->dims[j])
            fail(at, "axis %d of size %lld does not broadcast to %lld", k, (long long)small->dims[k],
                 (long long)big->dims[j]);
        r = r * small->dims[k] + (small->dims[k] == 1 ? 0 : idx[j]);
    }
    return r;
}

/* Copies `len` doubles of every example: example b of dst at dst_off from
 * example b of src at src_off. An unbatched source is the same for every
 * example; a batched source needs a batched destination. */
static void copy_examples(const Interp *it, const Node *at, double *dst, const Type *dt, int64_t dst_off,
                          const double *src, const Type *st, int64_t src_off, int64_t len) {
    int64_t de = type_elements(dt), se = type_elements(st);
    if (st->batched && !dt->batched) fail(at, "a batched value cannot be stored in an unbatched one");
    if (dst_off < 0 || src_off < 0 || dst_off + len > de || src_off + len > se)
        fail(at, "%lld elements from offset %lld of %lld do not fit at offset %lld of %lld", (long long)len,
             (long long)src_off, (long long)se, (long long)dst_off, (long long)de);
    for (int64_t b = 0; b < (dt->batched ? it->batch : 1); b++)
        memcpy(dst + (dt->batched ? b * de : 0) + dst_off, src + (st->batched ? b * se : 0) + src_off,
               sizeof(double) * (size_t)len);
}

static double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + seqc_exp(-x));
    double e = seqc_exp(x);
    return e / (1.0 + e);
}

/* A class id stored as a double; anything but a whole number in [0, classes)
 * is data the runtime should have refused. */
static int64_t class_id(const Node *at, double v, int64_t classes, const char *what) {
    if (!(v >= 0 && v < (double)classes) || v != floor(v))
        fail(at, "%s %.17g is outside [0, %lld)", what, v, (long long)classes);
    return (int64_t)v;
}

/* ---- sources ------------------------------------------------------------- */

/* DROPMASK: the declared (batched) type. Drawn in row-major order from the
 * stream of this node, so a dropout seed reproduces every mask; an element is
 * kept when its uniform draw is >= rate, as TF's dropout decides. */
static void ev_dropmask(Interp *it, Store *s, const Node *n) {
    double *o = val(s, n);
    int64_t size = elems(n) * nex(it, n);
    if (!it->training) {
        for (int64_t i = 0; i < size; i++) o[i] = 1.0;
        return;
    }
    if (!(n->rate >= 0 && n->rate < 1)) fail(n, "dropout rate %g is outside [0, 1)", n->rate);
    RtRng rng;
    rt_rng_seed(&rng, it->dropout_seed, DROPOUT_STREAM_BASE + (uint64_t)n->id);
    double kept = 1.0 / (1.0 - n->rate);
    for (int64_t i = 0; i < size; i++) o[i] = rt_rng_uniform(&rng) >= n->rate ? kept : 0.0;
}

/* ---- elementwise ----------------------------------------------------------- */

static double unary(const Node *n, double x) {
    switch (n->op) {
    case OP_NEG: return -x;
    case OP_TANH: return tanh(x);
    case OP_SIGMOID: return sigmoid(x);
    case OP_HARD_SIGMOID: {
        double y = 0.2 * x + 0.5;
        return y < 0 ? 0.0 : y > 1 ? 1.0 : y;
    }
    case OP_RELU: return x < 0 ? 0.0 : x;
    case OP_EXP: return exp(x);
    case OP_LOG: return log(x);
    case OP_RSQRT: return 1.0 / sqrt(x);
    default: fail(n, "not an elementwise function");
    }
}

/* In f32, the functions as the generated code computes them: mathf.c's exp
 * and tanh, libm's other float functions, and the same formulas, operation
 * for operation, so both give the same bits (a relu or max downstream then
 * takes the same branch). */
static float unary_f32(const Node *n, float x) {
    switch (n->op) {
    case OP_NEG: return -x;
    case OP_TANH: return seqc_tanhf(x);
    case OP_SIGMOID: {
        float e = seqc_expf(-fabsf(x)), d = 1.0f + e;
        return x >= 0 ? 1.0f / d : e / d;
    }
    case OP_HARD_SIGMOID: {
        float scaled = 0.2f * x, y = scaled + 0.5f;
        return y < 0 ? 0.0f : y > 1 ? 1.0f : y;
    }
    case OP_RELU: return x < 0 ? 0.0f : x;
    case OP_EXP: return seqc_expf(x);
    case OP_LOG: return logf(x);
    case OP_RSQRT: return 1.0f / sqrtf(x);
    default: fail(n, "not an elementwise function");
    }
}

/* x [...] -> [...] */
static void ev_unary(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    bool f32 = it->prec == PREC_F32;
    for (int64_t b = 0; b < nex(it, n); b++) {
        const double *xb = ex(s, x, b);
        double *o = ex(s, n, b);
        for (int64_t i = 0; i < elems(n); i++) o[i] = f32 ? unary_f32(n, (float)xb[i]) : unary(n, xb[i]);
    }
}

/* x [...] -> [...]: the user's float f(float) at every element, called
 * through libffi as any foreign function is. The argument is x rounded to
 * float, the result exact in f32: in PREC_F64 too the function computes in f32. */
static void ev_extern(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    if (!n->ext || !n->ext->fn) fail(n, "no function to call");
    for (int64_t b = 0; b < nex(it, n); b++) {
        const double *xb = ex(s, x, b);
        double *o = ex(s, n, b);
        for (int64_t i = 0; i < elems(n); i++) {
            float arg = (float)xb[i];
            void *args[1] = {&arg};
            union { ffi_arg word; float f; } r; /* libffi writes at least a register's width */
            ffi_call(&it->extern_cif, FFI_FN(n->ext->fn), &r, args);
            o[i] = r.f;
        }
    }
}

/* a, b broadcast -> the broadcast shape */
static void ev_binary(Interp *it, Store *s, const Node *n) {
    const Node *a = n->in[0], *c = n->in[1];
    for (int64_t b = 0; b < nex(it, n); b++) {
        const double *u = ex(s, a, b), *v = ex(s, c, b);
        double *o = ex(s, n, b);
        for (int64_t i = 0; i < elems(n); i++) {
            double x = u[bcast_index(n, &n->type, &a->type, i)], y = v[bcast_index(n, &n->type, &c->type, i)];
            switch (n->op) {
            case OP_ADD: o[i] = x + y; break;
            case OP_SUB: o[i] = x - y; break;
            case OP_MUL: o[i] = x * y; break;
            case OP_DIV: o[i] = x / y; break;
            default: fail(n, "not an arithmetic op");
            }
        }
    }
}

/* ---- structure ------------------------------------------------------------- */

/* A row's sum (of exps): term c into partial c mod 8, the partials then
 * added in order, as the generated code's vector of 8 doubles does. */
#define SUM_LANES 8

static double lane_total(const double part[SUM_LANES]) {
    double sum = part[0];
    for (int j = 1; j < SUM_LANES; j++) sum += part[j];
    return sum;
}

/* x [..., C] -> [..., C], each row exp(x - max) / sum */
static void ev_softmax(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t C = last_dim(n), rows = elems(n) / C;
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t r = 0; r < rows; r++) {
            const double *xr = ex(s, x, b) + r * C;
            double *o = ex(s, n, b) + r * C;
            double mx = xr[0], part[SUM_LANES] = {0};
            for (int64_t c = 1; c < C; c++)
                if (xr[c] > mx) mx = xr[c];
            for (int64_t c = 0; c < C; c++) part[c % SUM_LANES] += exp(xr[c] - mx);
            double sum = lane_total(part);
            for (int64_t c = 0; c < C; c++) o[c] = exp(xr[c] - mx) / sum;
        }
}

/* x [..., K] @ w [K, N] -> [..., N] */
/* One term of a matrix product's sum: in f64, acc + a * b; in f32 the
 * generated code's rule, a float accumulator taking each term with a fused
 * multiply-add (one rounding per term), the terms in the same order. */
static inline double mac(bool f32, double acc, double a, double b) {
    return f32 ? (double)fmaf((float)a, (float)b, (float)acc) : acc + a * b;
}

static void ev_matmul(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0], *w = n->in[1];
    if (w->type.batched || w->type.rank != 2) fail(n, "the right side is not a [K, N] matrix");
    int64_t K = w->type.dims[0], N = w->type.dims[1], rows = elems(x) / K;
    const double *wv = val(s, w);
    bool f32 = it->prec == PREC_F32;
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t r = 0; r < rows; r++) {
            const double *xr = ex(s, x, b) + r * K;
            double *restrict o = ex(s, n, b) + r * N;
            /* Row by row of w, so memory is read in order; each o[j] still sums
             * its terms in the order k = 0, 1, ... */
            for (int64_t j = 0; j < N; j++) o[j] = 0;
            for (int64_t k = 0; k < K; k++) {
                const double xk = xr[k], *restrict wk = wv + k * N;
                for (int64_t j = 0; j < N; j++) o[j] = mac(f32, o[j], xk, wk[j]);
            }
        }
}

/* ids i32 [...], table [V, D] -> [..., D]: row ids[p] of the table at every position p */
static void ev_embed(Interp *it, Store *s, const Node *n) {
    const Node *ids = n->in[0], *tab = n->in[1];
    if (tab->type.batched || tab->type.rank != 2) fail(n, "the table is not a [V, D] matrix");
    int64_t V = tab->type.dims[0], D = tab->type.dims[1], P = elems(ids);
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t p = 0; p < P; p++) {
            int64_t id = class_id(n, ex(s, ids, b)[p], V, "token id");
            memcpy(ex(s, n, b) + p * D, val(s, tab) + id * D, sizeof(double) * (size_t)D);
        }
}

/* ids [...] -> f32 [...]: 1 where the id is not 0 */
static void ev_nonzero(Interp *it, Store *s, const Node *n) {
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t i = 0; i < elems(n); i++) ex(s, n, b)[i] = ex(s, n->in[0], b)[i] != 0 ? 1.0 : 0.0;
}

/* x [..., C] -> [..., len]: last-axis entries [start, start + len) */
static void ev_slice(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t C = last_dim(x), len = n->slice.len, rows = elems(n) / len;
    if (n->slice.start < 0 || n->slice.start + len > C) fail(n, "slice outside the last axis");
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < len; j++) ex(s, n, b)[r * len + j] = ex(s, x, b)[r * C + n->slice.start + j];
}

/* x_k [..., C_k] -> [..., sum C_k], in input order */
static void ev_concat(Interp *it, Store *s, const Node *n) {
    int64_t C = last_dim(n), rows = elems(n) / C;
    for (int64_t b = 0; b < nex(it, n); b++) {
        int64_t off = 0;
        for (int k = 0; k < n->nin; k++) {
            const Node *x = n->in[k];
            int64_t Ck = last_dim(x);
            if (Ck * rows != elems(x)) fail(n, "input %d does not have the leading axes of the result", k);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < Ck; j++) ex(s, n, b)[r * C + off + j] = ex(s, x, b)[r * Ck + j];
            off += Ck;
        }
        if (off != C) fail(n, "the inputs add up to %lld entries, not %lld", (long long)off, (long long)C);
    }
}

/* x [T, ...] -> [T, ...]: step t of the result is step T - 1 - t of x */
static void ev_reverse(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t T = x->type.dims[0], step = elems(x) / T;
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < step; i++) ex(s, n, b)[t * step + i] = ex(s, x, b)[(T - 1 - t) * step + i];
}

/* w [K, N] -> [N, K] */
static void ev_transpose(Store *s, const Node *n) {
    const Node *w = n->in[0];
    int64_t K = w->type.dims[0], N = w->type.dims[1];
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < N; j++) val(s, n)[j * K + k] = val(s, w)[k * N + j];
}

/* x [T, ...] -> [...]: step T - 1 */
static void ev_last(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t T = x->type.dims[0], step = elems(n);
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t i = 0; i < step; i++) ex(s, n, b)[i] = ex(s, x, b)[(T - 1) * step + i];
}

/* x -> the declared type, the same elements in the same order */
static void ev_reshape(Interp *it, Store *s, const Node *n) {
    if (elems(n->in[0]) != elems(n)) fail(n, "reshape changes the element count");
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t i = 0; i < elems(n); i++) ex(s, n, b)[i] = ex(s, n->in[0], b)[i];
}

/* Is step t of example b real? Without a mask every step is. */
static bool step_on(Store *s, const Node *mask, int64_t b, int64_t t) { return !mask || ex(s, mask, b)[t] != 0; }

/* x [T, ...] [, mask [T]] -> [...]: max or mean over the unmasked steps; 0 when all are masked */
static void ev_pool_time(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0], *mask = n->nin > 1 ? n->in[1] : NULL;
    int64_t T = x->type.dims[0], step = elems(n);
    if (mask && elems(mask) != T) fail(n, "the mask has %lld steps, x has %lld", (long long)elems(mask), (long long)T);
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t i = 0; i < step; i++) {
            double acc = 0;
            int64_t count = 0;
            for (int64_t t = 0; t < T; t++) {
                if (!step_on(s, mask, b, t)) continue;
                double v = ex(s, x, b)[t * step + i];
                if (n->op == OP_MEAN_TIME) acc += v;
                else if (count == 0 || v > acc) acc = v;
                count++;
            }
            ex(s, n, b)[i] = count == 0 ? 0.0 : n->op == OP_MEAN_TIME ? acc / (double)count : acc;
        }
}

/* x [..., F], gamma, beta, moving mean, moving variance [F] -> [..., F].
 * Training normalizes with the mean and biased variance over the batch and
 * every axis but the last; inference with the moving statistics. */
static void ev_batchnorm(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t F = last_dim(x), rows = elems(x) / F, nb = nex(it, x);
    for (int k = 1; k < 5; k++)
        if (n->in[k]->type.batched || elems(n->in[k]) != F)
            fail(n, "statistic %d is not a vector of %lld", k, (long long)F);
    const double *gamma = val(s, n->in[1]), *beta = val(s, n->in[2]);
    double *mean = xcalloc((size_t)F, sizeof(double)), *var = xcalloc((size_t)F, sizeof(double));
    for (int64_t f = 0; f < F; f++) {
        if (!it->training) {
            mean[f] = val(s, n->in[3])[f];
            var[f] = val(s, n->in[4])[f];
            continue;
        }
        double sum = 0, sq = 0, count = (double)(nb * rows);
        for (int64_t b = 0; b < nb; b++)
            for (int64_t r = 0; r < rows; r++) sum += ex(s, x, b)[r * F + f];
        mean[f] = sum / count;
        for (int64_t b = 0; b < nb; b++)
            for (int64_t r = 0; r < rows; r++) {
                double d = ex(s, x, b)[r * F + f] - mean[f];
                sq += d * d;
            }
        var[f] = sq / count;
    }
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t f = 0; f < F; f++) {
                double v = ex(s, x, b)[r * F + f];
                ex(s, n, b)[r * F + f] = gamma[f] * (v - mean[f]) / sqrt(var[f] + n->batchnorm.epsilon) + beta[f];
            }
    free(mean);
    free(var);
}

/* x [..., F] -> [F]: sum (or mean) over the batch and every axis but the last */
static void ev_lead(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t F = last_dim(x), rows = elems(x) / F, nb = nex(it, x);
    for (int64_t f = 0; f < F; f++) {
        double sum = 0;
        for (int64_t b = 0; b < nb; b++)
            for (int64_t r = 0; r < rows; r++) sum += ex(s, x, b)[r * F + f];
        val(s, n)[f] = n->op == OP_MEAN_LEAD ? sum / (double)(nb * rows) : sum;
    }
}

/* x [T, ...] -> [len, ...]: steps [start, start + len) */
static void ev_time_slice(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t T = x->type.dims[0], step = elems(x) / T;
    if (n->slice.start < 0 || n->slice.start + n->slice.len > T) fail(n, "steps outside the sequence");
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t t = 0; t < n->slice.len; t++)
            for (int64_t i = 0; i < step; i++)
                ex(s, n, b)[t * step + i] = ex(s, x, b)[(n->slice.start + t) * step + i];
}

/* x [len', ...] -> [slice.len, ...]: x at steps [start, start + len'), zeros elsewhere */
static void ev_time_pad(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    int64_t L = x->type.dims[0], step = elems(x) / L;
    if (n->slice.start < 0 || n->slice.start + L > n->type.dims[0]) fail(n, "steps outside the result");
    zero(it, s, n);
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t t = 0; t < L; t++)
            for (int64_t i = 0; i < step; i++)
                ex(s, n, b)[(n->slice.start + t) * step + i] = ex(s, x, b)[t * step + i];
}

/* ---- scan ---------------------------------------------------------------- */

static void eval_node(Interp *it, Store *s, const Node *n);

/* SCAN: inputs nseq sequences [T, ...], nstate initial states, ncapture
 * captures. Walks the steps (backward if reverse); at each, fills the body's
 * placeholders, evaluates the body in order and carries the next states.
 * Writes its own value (output 0; a scan without outputs, nout = 0, has none
 * and is a zero scalar) and those of the SCAN_OUT and SCAN_STATE nodes that
 * read it (they follow it in the graph), keeping only the steps they ask for. */
static void ev_scan(Interp *it, Store *s, const Node *n) {
    const Graph *body = n->scan.body;
    Store *bs = s->body[n->id];
    int nseq = n->scan.nseq, nstate = n->scan.nstate, ncap = n->scan.ncapture, nout = n->scan.nout;
    if (nseq < 1 || nout < 0 || n->nin != nseq + nstate + ncap || body->outputs.len != nstate + nout)
        fail(n, "%d inputs and %d body outputs for %d sequences, %d states, %d captures, %d outputs", n->nin,
             body->outputs.len, nseq, nstate, ncap, nout);
    int64_t T = n->in[0]->type.dims[0];
    for (int i = 0; i < nseq; i++)
        if (n->in[i]->type.rank < 1 || n->in[i]->type.dims[0] != T)
            fail(n, "sequence %d does not have %lld steps", i, (long long)T);
    int64_t first, walked = scan_walked(n, &first);

    /* The state between steps, each of its initial value's type. */
    const Node **init = xcalloc((size_t)(nstate ? nstate : 1), sizeof *init);
    double **state = xcalloc((size_t)(nstate ? nstate : 1), sizeof *state);
    for (int i = 0; i < nstate; i++) {
        init[i] = n->in[nseq + i];
        const Node *next = body->outputs.items[i];
        if (elems(next) != elems(init[i])) fail(n, "state %d changes size in the step", i);
        state[i] = xcalloc((size_t)interp_size(s->g, init[i]), sizeof(double));
        memcpy(state[i], val(s, init[i]), sizeof(double) * (size_t)interp_size(s->g, init[i]));
    }
    for (int k = 0; k < bs->nnodes; k++) {
        const Node *c = body->nodes.items[k];
        if (c->op != OP_CAPTURE) continue;
        if (c->index < 0 || c->index >= ncap) fail(c, "capture %d of %d", c->index, ncap);
        const Node *from = n->in[nseq + nstate + c->index];
        if (elems(from) != elems(c)) fail(c, "the captured value has %lld elements, not %lld", (long long)elems(from),
                                         (long long)elems(c));
        copy_examples(it, c, val(bs, c), &c->type, 0, val(s, from), &from->type, 0, elems(c));
    }
    /* The nodes that read this scan's extra outputs and intermediate states. */
    int nuse = 0;
    const Node **uses = xcalloc((size_t)s->nnodes, sizeof *uses);
    for (int k = n->id + 1; k < s->nnodes; k++) {
        const Node *u = s->g->nodes.items[k];
        if ((u->op != OP_SCAN_OUT && u->op != OP_SCAN_STATE) || u->in[0] != n) continue;
        if (u->op == OP_SCAN_OUT && (u->index < 1 || u->index >= nout)) fail(u, "output %d of %d", u->index, nout);
        if (u->op == OP_SCAN_STATE && (u->scan_state.index < 0 || u->scan_state.index >= nstate ||
                                       u->scan_state.after < 0 || u->scan_state.after > walked))
            fail(u, "state %d after %lld steps, of %d states and %lld steps", u->scan_state.index,
                 (long long)u->scan_state.after, nstate, (long long)walked);
        uses[nuse++] = u;
    }
    if (n->scan.keep_begin < 0 || n->scan.keep_end > T || n->scan.keep_begin > n->scan.keep_end)
        fail(n, "kept steps [%lld, %lld) of %lld", (long long)n->scan.keep_begin, (long long)n->scan.keep_end,
             (long long)T);

    for (int k = 0; k < nuse; k++) {
        const Node *u = uses[k];
        if (u->op == OP_SCAN_STATE && u->scan_state.after == 0) {
            const Node *st = init[u->scan_state.index];
            copy_examples(it, u, val(s, u), &u->type, 0, state[u->scan_state.index], &st->type, 0, elems(u));
        }
    }
    for (int64_t w = 0; w < walked; w++) {
        int64_t t = n->scan.reverse ? first + walked - 1 - w : first + w;
        for (int k = 0; k < bs->nnodes; k++) {
            const Node *b = body->nodes.items[k];
            if (b->op == OP_STEP_IN) {
                if (b->index < 0 || b->index >= nseq) fail(b, "sequence %d of %d", b->index, nseq);
                const Node *seq = n->in[b->index];
                int64_t step = elems(seq) / T;
                if (step != elems(b)) fail(b, "steps of %lld elements, not %lld", (long long)step, (long long)elems(b));
                copy_examples(it, b, val(bs, b), &b->type, 0, val(s, seq), &seq->type, t * step, step);
            } else if (b->op == OP_STATE_IN) {
                if (b->index < 0 || b->index >= nstate) fail(b, "state %d of %d", b->index, nstate);
                const Node *st = init[b->index];
                if (elems(st) != elems(b))
                    fail(b, "the state has %lld elements, not %lld", (long long)elems(st), (long long)elems(b));
                copy_examples(it, b, val(bs, b), &b->type, 0, state[b->index], &st->type, 0, elems(b));
            } else if (b->op != OP_CAPTURE) {
                eval_node(it, bs, b);
            }
        }
        const Node *out = nout > 0 ? body->outputs.items[nstate] : NULL;
        if (!out) {
            zero(it, s, n);
        } else if (n->scan.sequences) {
            if (elems(n) != T * elems(out)) fail(n, "the step output does not fit the sequence");
            copy_examples(it, n, val(s, n), &n->type, t * elems(out), val(bs, out), &out->type, 0, elems(out));
        } else if (w == walked - 1) {
            if (elems(n) != elems(out)) fail(n, "the step output does not fit the result");
            copy_examples(it, n, val(s, n), &n->type, 0, val(bs, out), &out->type, 0, elems(out));
        }
        for (int k = 0; k < nuse; k++) {
            const Node *u = uses[k];
            if (u->op != OP_SCAN_OUT || t < n->scan.keep_begin || t >= n->scan.keep_end) continue;
            const Node *o = body->outputs.items[nstate + u->index];
            if (elems(u) != (n->scan.keep_end - n->scan.keep_begin) * elems(o))
                fail(u, "the step output does not fit the kept steps");
            copy_examples(it, u, val(s, u), &u->type, (t - n->scan.keep_begin) * elems(o), val(bs, o), &o->type, 0,
                          elems(o));
        }
        for (int i = 0; i < nstate; i++) {
            const Node *next = body->outputs.items[i];
            copy_examples(it, next, state[i], &init[i]->type, 0, val(bs, next), &next->type, 0, elems(next));
        }
        for (int k = 0; k < nuse; k++) {
            const Node *u = uses[k];
            if (u->op != OP_SCAN_STATE || u->scan_state.after != w + 1) continue;
            const Node *st = init[u->scan_state.index];
            copy_examples(it, u, val(s, u), &u->type, 0, state[u->scan_state.index], &st->type, 0, elems(u));
        }
    }
    for (int i = 0; i < nstate; i++) free(state[i]);
    free(state);
    free(init);
    free(uses);
}

/* ---- losses and metrics ---------------------------------------------------- */

static double clip_probability(double p) {
    return p < KERAS_EPSILON ? KERAS_EPSILON : p > 1 - KERAS_EPSILON ? 1 - KERAS_EPSILON : p;
}
/* Where clip_by_value passes the gradient through (its bounds included). */
static bool unclipped(double p) { return p >= KERAS_EPSILON && p <= 1 - KERAS_EPSILON; }

static double bce(double p, double y, bool logits) {
    if (logits) return (p > 0 ? p : 0.0) - p * y + seqc_log1p_unit(seqc_exp(-fabs(p)));
    double q = clip_probability(p);
    return -(y * log(q + KERAS_EPSILON) + (1 - y) * log(1 - q + KERAS_EPSILON));
}

/* d bce / d p */
static double bce_grad(double p, double y, bool logits) {
    if (logits) return sigmoid(p) - y;
    if (!unclipped(p)) return 0.0;
    return -y / (p + KERAS_EPSILON) + (1 - y) / (1 - p + KERAS_EPSILON);
}

/* The log-probabilities a sparse or categorical loss works on: log(clip(p))
 * for probabilities (as TF does before its softmax cross-entropy), the
 * logits themselves otherwise. */
static void class_scores(const double *p, int64_t C, bool logits, double *q) {
    for (int64_t c = 0; c < C; c++) q[c] = logits ? p[c] : log(clip_probability(p[c]));
}

static double logsumexp(const double *q, int64_t C) {
    double mx = q[0], part[SUM_LANES] = {0};
    for (int64_t c = 1; c < C; c++)
        if (q[c] > mx) mx = q[c];
    for (int64_t c = 0; c < C; c++) part[c % SUM_LANES] += seqc_exp(q[c] - mx);
    return mx + log(lane_total(part));
}

static int64_t argmax(const double *v, int64_t C) {
    int64_t best = 0;
    for (int64_t c = 1; c < C; c++)
        if (v[c] > v[best]) best = c;
    return best;
}

/* Per-position loss of row p [C] against target row y: SCE reads one class
 * id y[0], CCE a distribution y [C]. q is scratch of C doubles. */
static double class_loss(const Node *n, OpKind loss, const double *p, const double *y, int64_t C, bool logits,
                         double *q) {
    if (loss == OP_SCE) {
        class_scores(p, C, logits, q);
        return -q[class_id(n, y[0], C, "target class")] + logsumexp(q, C);
    }
    double l = 0;
    if (logits) {
        double lse = logsumexp(p, C);
        for (int64_t c = 0; c < C; c++) l -= y[c] * (p[c] - lse);
        return l;
    }
    double sum = 0;
    for (int64_t c = 0; c < C; c++) sum += p[c];
    for (int64_t c = 0; c < C; c++) l -= y[c] * log(clip_probability(p[c] / sum));
    return l;
}

/* d class_loss / d p into g [C]. */
static void class_loss_grad(const Node *n, OpKind loss, const double *p, const double *y, int64_t C, bool logits,
                            double *q, double *g) {
    if (loss == OP_SCE) {
        int64_t k = class_id(n, y[0], C, "target class");
        class_scores(p, C, logits, q);
        double lse = logsumexp(q, C);
        for (int64_t c = 0; c < C; c++) {
            double d = seqc_exp(q[c] - lse) - (c == k ? 1.0 : 0.0); /* d l / d q_c */
            g[c] = logits ? d : unclipped(p[c]) ? d / p[c] : 0.0;
        }
        return;
    }
    if (logits) {
        double lse = logsumexp(p, C), ysum = 0;
        for (int64_t c = 0; c < C; c++) ysum += y[c];
        for (int64_t c = 0; c < C; c++) g[c] = seqc_exp(p[c] - lse) * ysum - y[c];
        return;
    }
    /* r = p / sum(p); l = -sum y log clip(r); with d l / d r_c = q_c:
     * d l / d p_j = (q_j - sum_c q_c r_c) / sum(p). */
    double sum = 0, dot = 0;
    for (int64_t c = 0; c < C; c++) sum += p[c];
    for (int64_t c = 0; c < C; c++) {
        double r = p[c] / sum;
        q[c] = unclipped(r) ? -y[c] / r : 0.0;
        dot += q[c] * r;
    }
    for (int64_t c = 0; c < C; c++) g[c] = (q[c] - dot) / sum;
}

/* The positions a loss averages over: elements for BCE and MSE, rows of the
 * class axis for SCE and CCE. Checks the target against the prediction. */
static int64_t loss_width(const Node *n, OpKind loss, const Node *p, const Node *y) {
    if (loss == OP_BCE || loss == OP_MSE) {
        if (elems(y) != elems(p)) fail(n, "target and prediction differ in size");
        return 1;
    }
    int64_t C = last_dim(p);
    if (loss == OP_SCE && elems(y) * C != elems(p))
        fail(n, "%lld class ids for %lld positions", (long long)elems(y), (long long)(elems(p) / C));
    if (loss == OP_CCE && elems(y) != elems(p)) fail(n, "target and prediction differ in size");
    return C;
}

/* p [...], y -> f32 []: Keras' loss, the mean over batch and positions */
static void ev_loss(Interp *it, Store *s, const Node *n) {
    const Node *p = n->in[0], *y = n->in[1];
    OpKind loss = n->op;
    bool logits = n->loss.from_logits;
    int64_t C = loss_width(n, loss, p, y), P = elems(p) / C;
    int64_t ystride = loss == OP_SCE ? 1 : C;
    double *q = xcalloc((size_t)C, sizeof(double));
    double sum = 0;
    for (int64_t b = 0; b < nex(it, p); b++) {
        const double *pb = ex(s, p, b), *yb = ex(s, y, b);
        for (int64_t i = 0; i < P; i++) {
            if (loss == OP_BCE) sum += bce(pb[i], yb[i], logits);
            else if (loss == OP_MSE) sum += (pb[i] - yb[i]) * (pb[i] - yb[i]);
            else sum += class_loss(n, loss, pb + i * C, yb + i * ystride, C, logits, q);
        }
    }
    free(q);
    val(s, n)[0] = sum / (double)(nex(it, p) * P);
}

/* p [...], y -> f32 []: the fraction of positions predicted right */
static void ev_accuracy(Interp *it, Store *s, const Node *n) {
    const Node *p = n->in[0], *y = n->in[1];
    AccuracyKind kind = n->accuracy;
    if (kind != ACC_BINARY && kind != ACC_SPARSE && kind != ACC_CATEGORICAL)
        fail(n, "accuracy kind %d is none of binary, sparse, categorical", (int)kind);
    int64_t C = kind == ACC_BINARY ? 1 : last_dim(p), P = elems(p) / C;
    if (elems(y) != (kind == ACC_SPARSE ? P : elems(p))) fail(n, "target and prediction do not match");
    double right = 0;
    for (int64_t b = 0; b < nex(it, p); b++) {
        const double *pb = ex(s, p, b), *yb = ex(s, y, b);
        for (int64_t i = 0; i < P; i++) {
            bool ok;
            if (kind == ACC_BINARY) ok = (pb[i] > 0.5 ? 1.0 : 0.0) == yb[i];
            else if (kind == ACC_SPARSE) ok = (double)argmax(pb + i * C, C) == yb[i];
            else ok = argmax(pb + i * C, C) == argmax(yb + i * C, C);
            right += ok;
        }
    }
    val(s, n)[0] = right / (double)(nex(it, p) * P);
}

/* x -> f32 []: the mean of every element of every example */
static void ev_mean_all(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    double sum = 0;
    for (int64_t i = 0; i < elems(x) * nex(it, x); i++) sum += val(s, x)[i];
    val(s, n)[0] = sum / (double)(elems(x) * nex(it, x));
}

/* ---- gradients --------------------------------------------------------------- */

static double act_grad(const Node *n, double x, double y, double dy) {
    switch (n->act) {
    case OP_TANH: return dy * (1 - y * y);
    case OP_SIGMOID: return dy * y * (1 - y);
    case OP_HARD_SIGMOID: return x > -2.5 && x < 2.5 ? 0.2 * dy : 0.0;
    case OP_RELU: return x > 0 ? dy : 0.0;
    case OP_EXP: return dy * y;
    case OP_LOG: return dy / x;
    case OP_RSQRT: return -0.5 * dy * y * y * y;
    case OP_NEG: return -dy;
    default: fail(n, "no derivative rule for %s", op_name(n->act));
    }
}

/* x, y = f(x), dy -> dx, all of x's shape */
static void ev_act_grad(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0], *y = n->in[1], *dy = n->in[2];
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t i = 0; i < elems(n); i++)
            ex(s, n, b)[i] = act_grad(n, ex(s, x, b)[i], ex(s, y, b)[bcast_index(n, &n->type, &y->type, i)],
                                      ex(s, dy, b)[bcast_index(n, &n->type, &dy->type, i)]);
}

/* dy [..., N], w [K, N] -> dy @ w^T [..., K] */
static void ev_matmul_t(Interp *it, Store *s, const Node *n) {
    const Node *dy = n->in[0], *w = n->in[1];
    if (w->type.batched || w->type.rank != 2) fail(n, "the matrix is not [K, N]");
    int64_t K = w->type.dims[0], N = w->type.dims[1], rows = elems(dy) / N;
    const double *wv = val(s, w);
    bool f32 = it->prec == PREC_F32;
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < K; k++) {
                double sum = 0;
                for (int64_t j = 0; j < N; j++) sum = mac(f32, sum, ex(s, dy, b)[r * N + j], wv[k * N + j]);
                ex(s, n, b)[r * K + k] = sum;
            }
}

/* x [..., K], dy [..., N] -> [K, N]: x^T dy summed over the batch and leading positions */
static void ev_matmul_w(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0], *dy = n->in[1];
    int64_t K = last_dim(x), N = last_dim(dy), rows = elems(x) / K;
    if (rows * N != elems(dy)) fail(n, "x and dy have different leading axes");
    int64_t nb = x->type.batched || dy->type.batched ? it->batch : 1;
    double *o = val(s, n);
    bool f32 = it->prec == PREC_F32;
    /* Each o[k, j] sums its terms in the order (b, r) = (0, 0), (0, 1), ...;
     * the loops run in that order outermost so memory is read in order. */
    for (int64_t i = 0; i < K * N; i++) o[i] = 0;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < rows; r++) {
            const double *xr = ex(s, x, b) + r * K, *restrict dr = ex(s, dy, b) + r * N;
            for (int64_t k = 0; k < K; k++) {
                const double xk = xr[k];
                double *restrict ok = o + k * N;
                for (int64_t j = 0; j < N; j++) ok[j] = mac(f32, ok[j], xk, dr[j]);
            }
        }
}

/* x -> the declared type: each element of x added to the element it was
 * broadcast from (and over the batch, when the result is unbatched) */
static void ev_sum_to(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0];
    if (n->type.batched && !x->type.batched) fail(n, "cannot sum an unbatched value to a batched one");
    zero(it, s, n);
    for (int64_t b = 0; b < nex(it, x); b++)
        for (int64_t i = 0; i < elems(x); i++) ex(s, n, b)[bcast_index(n, &x->type, &n->type, i)] += ex(s, x, b)[i];
}

/* y, dy [..., C] -> y * (dy - sum(dy * y)) per row */
static void ev_softmax_grad(Interp *it, Store *s, const Node *n) {
    const Node *y = n->in[0], *dy = n->in[1];
    int64_t C = last_dim(n), rows = elems(n) / C;
    if (elems(dy) != elems(y)) fail(n, "y and dy differ in size");
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t r = 0; r < rows; r++) {
            const double *yr = ex(s, y, b) + r * C, *dr = ex(s, dy, b) + r * C;
            double dot = 0;
            for (int64_t c = 0; c < C; c++) dot += dr[c] * yr[c];
            for (int64_t c = 0; c < C; c++) ex(s, n, b)[r * C + c] = yr[c] * (dr[c] - dot);
        }
}

/* The examples a gradient that scatters into a declared type reads: the
 * batch if any input is batched. An unbatched result collects them all. */
static int64_t nex_any(const Interp *it, const Node *n) {
    for (int k = 0; k < n->nin; k++)
        if (n->in[k]->type.batched) return it->batch;
    return 1;
}

/* ids [...], dy [..., D] -> [V, D]: row ids[p] gets dy[p], summed */
static void ev_embed_grad(Interp *it, Store *s, const Node *n) {
    if (n->type.rank != 2) fail(n, "the declared type is not [V, D]");
    if (n->nin < 2 || n->nin % 2) fail(n, "%d inputs, not pairs of ids and dy", n->nin);
    int64_t V = n->type.dims[0], D = n->type.dims[1];
    zero(it, s, n);
    for (int q = 0; q < n->nin; q += 2) {
        const Node *ids = n->in[q], *dy = n->in[q + 1];
        int64_t P = elems(ids);
        if (P * D != elems(dy)) fail(n, "%lld ids for dy of %lld elements", (long long)P, (long long)elems(dy));
        for (int64_t b = 0; b < nex_any(it, n); b++)
            for (int64_t p = 0; p < P; p++) {
                int64_t id = class_id(n, ex(s, ids, b)[p], V, "token id");
                for (int64_t j = 0; j < D; j++) ex(s, n, b)[id * D + j] += ex(s, dy, b)[p * D + j];
            }
    }
}

/* dy [..., len] -> the declared [..., C]: dy at last-axis [start, start + len), zeros elsewhere */
static void ev_slice_grad(Interp *it, Store *s, const Node *n) {
    const Node *dy = n->in[0];
    int64_t C = last_dim(n), len = n->slice.len, rows = elems(dy) / len;
    if (n->slice.start < 0 || n->slice.start + len > C || rows * C != elems(n)) fail(n, "dy does not fit the slice");
    zero(it, s, n);
    for (int64_t b = 0; b < nex_any(it, n); b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < len; j++) ex(s, n, b)[r * C + n->slice.start + j] += ex(s, dy, b)[r * len + j];
}

/* dy [...] -> the declared [T, ...]: dy at step `index`, zeros elsewhere */
static void ev_place_step(Interp *it, Store *s, const Node *n) {
    const Node *dy = n->in[0];
    int64_t T = n->type.dims[0], step = elems(dy);
    if (n->index < 0 || n->index >= T || step * T != elems(n)) fail(n, "step %d does not fit", n->index);
    zero(it, s, n);
    for (int64_t b = 0; b < nex_any(it, n); b++)
        for (int64_t i = 0; i < step; i++) ex(s, n, b)[n->index * step + i] += ex(s, dy, b)[i];
}

/* x [T, ...], dy [...] [, mask [T]] -> [T, ...]. max: dy to the first
 * unmasked step attaining the maximum; mean: dy / count to every unmasked
 * step. All steps masked: zeros. */
static void ev_pool_time_grad(Interp *it, Store *s, const Node *n) {
    const Node *x = n->in[0], *dy = n->in[1], *mask = n->nin > 2 ? n->in[2] : NULL;
    int64_t T = x->type.dims[0], step = elems(x) / T;
    if (elems(dy) != step) fail(n, "dy is not one step of x");
    if (mask && elems(mask) != T) fail(n, "the mask has %lld steps, x has %lld", (long long)elems(mask), (long long)T);
    zero(it, s, n);
    for (int64_t b = 0; b < nex(it, n); b++)
        for (int64_t i = 0; i < step; i++) {
            int64_t count = 0, best = -1;
            for (int64_t t = 0; t < T; t++) {
                if (!step_on(s, mask, b, t)) continue;
                if (best < 0 || ex(s, x, b)[t * step + i] > ex(s, x, b)[best * step + i]) best = t;
                count++;
            }
            if (count == 0) continue;
            double g = ex(s, dy, b)[i];
            if (n->op == OP_MAX_TIME_GRAD) {
                ex(s, n, b)[best * step + i] = g;
                continue;
            }
            for (int64_t t = 0; t < T; t++)
                if (step_on(s, mask, b, t)) ex(s, n, b)[t * step + i] = g / (double)count;
        }
}

/* p, y, dl [] -> d(loss)/dp * dl, p's shape: the derivative of ev_loss */
static void ev_loss_grad(Interp *it, Store *s, const Node *n) {
    const Node *p = n->in[0], *y = n->in[1], *dl = n->in[2];
    OpKind loss = n->loss.loss;
    if (loss != OP_BCE && loss != OP_SCE && loss != OP_CCE && loss != OP_MSE)
        fail(n, "no gradient for %s", op_name(loss));
    if (dl->type.batched || elems(dl) != 1) fail(n, "d(loss) is not a scalar");
    bool logits = n->loss.from_logits;
    int64_t C = loss_width(n, loss, p, y), P = elems(p) / C;
    int64_t ystride = loss == OP_SCE ? 1 : C;
    double scale = val(s, dl)[0] / (double)(nex(it, p) * P);
    double *q = xcalloc((size_t)C, sizeof(double)), *g = xcalloc((size_t)C, sizeof(double));
    for (int64_t b = 0; b < nex(it, p); b++) {
        const double *pb = ex(s, p, b), *yb = ex(s, y, b);
        double *o = ex(s, n, b);
        for (int64_t i = 0; i < P; i++) {
            if (loss == OP_BCE) {
                o[i] = bce_grad(pb[i], yb[i], logits) * scale;
            } else if (loss == OP_MSE) {
                o[i] = 2 * (pb[i] - yb[i]) * scale;
            } else {
                class_loss_grad(n, loss, pb + i * C, yb + i * ystride, C, logits, q, g);
                for (int64_t c = 0; c < C; c++) o[i * C + c] = g[c] * scale;
            }
        }
    }
    free(q);
    free(g);
}

/* ---- evaluation -------------------------------------------------------------- */

/* Ops whose unbatched result may come from batched inputs: they sum or
 * average over the batch themselves (a scan checks each copy it makes).
 * Every other op works example by example. */
static bool reduces_batch(OpKind op) {
    switch (op) {
    case OP_MEAN_LEAD: case OP_SUM_LEAD: case OP_SCAN: case OP_SCAN_STATE:
    case OP_BCE: case OP_SCE: case OP_CCE: case OP_MSE: case OP_ACCURACY: case OP_MEAN_ALL:
    case OP_MATMUL_W: case OP_SUM_TO: case OP_EMBED_GRAD: case OP_SLICE_GRAD: case OP_PLACE_STEP:
        return true;
    default:
        return false;
    }
}

static void eval_node(Interp *it, Store *s, const Node *n) {
    if (!n->type.batched && !reduces_batch(n->op))
        for (int k = 0; k < n->nin; k++)
            if (n->in[k]->type.batched) fail(n, "input %d is batched but the result is not", k);
    switch (n->op) {
    case OP_INPUT:
    case OP_PARAM:
    case OP_STATEVAR:
        return; /* the caller's */
    case OP_CONST: val(s, n)[0] = n->constant; break;
    case OP_ZEROS: zero(it, s, n); break;
    case OP_DROPMASK: ev_dropmask(it, s, n); break;
    case OP_STEP_IN:
    case OP_STATE_IN:
    case OP_CAPTURE:
        if (s == it->top) fail(n, "a placeholder outside a scan body");
        return; /* ev_scan has filled it */
    case OP_NEG:
    case OP_TANH:
    case OP_SIGMOID:
    case OP_HARD_SIGMOID:
    case OP_RELU:
    case OP_EXP:
    case OP_LOG:
    case OP_RSQRT: ev_unary(it, s, n); break;
    case OP_EXTERN: ev_extern(it, s, n); break;
    case OP_ADD:
    case OP_SUB:
    case OP_MUL:
    case OP_DIV: ev_binary(it, s, n); break;
    case OP_SOFTMAX: ev_softmax(it, s, n); break;
    case OP_MATMUL: ev_matmul(it, s, n); break;
    case OP_EMBED: ev_embed(it, s, n); break;
    case OP_NONZERO: ev_nonzero(it, s, n); break;
    case OP_SLICE: ev_slice(it, s, n); break;
    case OP_CONCAT: ev_concat(it, s, n); break;
    case OP_REVERSE: ev_reverse(it, s, n); break;
    case OP_TRANSPOSE: ev_transpose(s, n); break;
    case OP_LAST: ev_last(it, s, n); break;
    case OP_RESHAPE: ev_reshape(it, s, n); break;
    case OP_MAX_TIME:
    case OP_MEAN_TIME: ev_pool_time(it, s, n); break;
    case OP_BATCHNORM: ev_batchnorm(it, s, n); break;
    case OP_MEAN_LEAD:
    case OP_SUM_LEAD: ev_lead(it, s, n); break;
    case OP_TIME_SLICE: ev_time_slice(it, s, n); break;
    case OP_TIME_PAD: ev_time_pad(it, s, n); break;
    case OP_SCAN: ev_scan(it, s, n); return; /* copies of rounded values */
    case OP_SCAN_OUT:
    case OP_SCAN_STATE:
        if (n->in[0]->op != OP_SCAN) fail(n, "reads a %s node, not a scan", op_name(n->in[0]->op));
        return; /* ev_scan has filled it */
    case OP_BCE:
    case OP_SCE:
    case OP_CCE:
    case OP_MSE: ev_loss(it, s, n); break;
    case OP_ACCURACY: ev_accuracy(it, s, n); break;
    case OP_MEAN_ALL: ev_mean_all(it, s, n); break;
    case OP_ACT_GRAD: ev_act_grad(it, s, n); break;
    case OP_MATMUL_T: ev_matmul_t(it, s, n); break;
    case OP_MATMUL_W: ev_matmul_w(it, s, n); break;
    case OP_SUM_TO: ev_sum_to(it, s, n); break;
    case OP_SOFTMAX_GRAD: ev_softmax_grad(it, s, n); break;
    case OP_EMBED_GRAD: ev_embed_grad(it, s, n); break;
    case OP_SLICE_GRAD: ev_slice_grad(it, s, n); break;
    case OP_PLACE_STEP: ev_place_step(it, s, n); break;
    case OP_MAX_TIME_GRAD:
    case OP_MEAN_TIME_GRAD: ev_pool_time_grad(it, s, n); break;
    case OP_LOSS_GRAD: ev_loss_grad(it, s, n); break;
    case OP_COUNT: fail(n, "no such op");
    }
    if (n->type.dtype == DT_F32 && it->prec == PREC_F32) {
        double *o = val(s, n);
        for (int64_t i = 0; i < elems(n) * nex(it, n); i++) o[i] = round_to(it, o[i]);
    }
}

void interp_run(Interp *it, bool training, uint64_t dropout_seed) {
    interp_run_prefix(it, it->top->nnodes, training, dropout_seed);
}

void interp_run_prefix(Interp *it, int n, bool training, uint64_t dropout_seed) {
    it->training = training;
    it->dropout_seed = dropout_seed;
    if (n > it->top->nnodes) n = it->top->nnodes;
    for (int i = 0; i < n; i++) eval_node(it, it->top, it->model->nodes.items[i]);
}

void interp_apply_updates(Interp *it) {
    const Graph *m = it->model;
    for (int i = 0; i < m->updates.len; i++) {
        const Update *u = m->updates.items[i];
        need_model_node(it, u->var);
        need_model_node(it, u->value);
        copy_examples(it, u->var, interp_data(it, u->var), &u->var->type, 0, interp_data(it, u->value),
                      &u->value->type, 0, elems(u->var));
    }
}

/* ---- params and state ------------------------------------------------------ */

void interp_init_params(Interp *it, uint64_t seed) {
    const Graph *m = it->model;
    for (int i = 0; i < m->params.len; i++) {
        const Node *p = m->params.items[i];
        const InitSpec *init = &p->param.init;
        RtInitSpec spec;
        if (!rt_init_spec_from(init->kind, init->args, &spec))
            fail(p, "unknown initializer '%s'", init->kind ? init->kind : "(none)");
        RtRng rng;
        rt_rng_seed(&rng, seed, (uint64_t)i);
        double *data = interp_data(it, p);
        RtInitStatus st = rt_init_fill(&spec, data, p->type.dims, p->type.rank, &rng);
        if (st != RT_INIT_OK) fail(p, "%s", rt_init_status_message(st));
        if (it->prec == PREC_F32) rt_init_round_f32(data, interp_size(m, p));
    }
}

void interp_zero_state(Interp *it) {
    for (int i = 0; i < it->top->nnodes; i++) {
        const Node *n = it->model->nodes.items[i];
        if (n->op == OP_STATEVAR) zero(it, it->top, n);
    }
}
