#include "gradcheck.h"

#include "jit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "interp.h"
#include "jit.h"
#include "rng.h"

void gradcheck_defaults(GradcheckOptions *o) {
    o->seed = 1;
    o->full_below = 64;
    o->samples = 16;
    o->threshold = 1e-6;
    o->adjust = NULL;
    o->ctx = NULL;
}

/* Follows time slices back to the value they slice. */
static const Node *source(const Node *n) {
    while (n->op == OP_TIME_SLICE) n = n->in[0];
    return n;
}

/* What an input is read by decides which values make sense for it: token ids
 * below the embedding's vocabulary (with some padding zeros when masked),
 * class ids below the class count, 0/1 targets for binary cross-entropy,
 * one-hot rows for categorical. */
typedef struct InputUse {
    int64_t vocab, classes;
    bool masked, binary, onehot;
} InputUse;

static InputUse input_use(const Graph *g, const Node *x) {
    InputUse u = {0};
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_EMBED && source(n->in[0]) == x) {
            int64_t v = n->in[1]->type.dims[0];
            if (!u.vocab || v < u.vocab) u.vocab = v;
        }
        if (n->op == OP_NONZERO && source(n->in[0]) == x) u.masked = true;
        if ((n->op == OP_SCE || n->op == OP_ACCURACY) && source(n->in[1]) == x && x->type.dtype == DT_I32) {
            int64_t c = n->in[0]->type.dims[n->in[0]->type.rank - 1];
            if (!u.classes || c < u.classes) u.classes = c;
        }
        if ((n->op == OP_BCE || (n->op == OP_ACCURACY && n->accuracy == ACC_BINARY)) && source(n->in[1]) == x)
            u.binary = true;
        if ((n->op == OP_CCE || (n->op == OP_ACCURACY && n->accuracy == ACC_CATEGORICAL)) && source(n->in[1]) == x)
            u.onehot = true;
    }
    return u;
}

void gradcheck_fill_input(struct Interp *it, const Graph *g, const Node *x, struct RtRng *rng) {
    double *v = interp_data(it, x);
    int64_t n = interp_size(g, x);
    InputUse u = input_use(g, x);
    if (x->type.dtype == DT_I32) {
        int64_t bound = u.vocab ? u.vocab : u.classes ? u.classes : 2;
        if (u.vocab && u.classes && u.classes < bound) bound = u.classes;
        for (int64_t i = 0; i < n; i++) {
            v[i] = (double)(rt_rng_next_u32(rng) % (uint32_t)bound);
            if (u.masked && rt_rng_uniform(rng) < 0.2) v[i] = 0;
        }
        return;
    }
    if (u.onehot && x->type.rank >= 1) {
        int64_t c = x->type.dims[x->type.rank - 1];
        memset(v, 0, sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i += c) v[i + rt_rng_next_u32(rng) % (uint32_t)c] = 1;
        return;
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = u.binary ? (double)(rt_rng_next_u32(rng) & 1) : 2 * rt_rng_uniform(rng) - 1;
}

void gradcheck_write_node(Interp *it, const Graph *g, const Node *n, const int64_t *offset, uint8_t *slab) {
    const double *v = interp_data(it, n);
    uint8_t *dst = slab + offset[n->id];
    for (int64_t k = 0; k < interp_size(g, n); k++) {
        if (n->type.dtype == DT_I32) ((int32_t *)(void *)dst)[k] = (int32_t)v[k];
        else ((float *)(void *)dst)[k] = (float)v[k];
    }
}

void gradcheck_write_slab(Interp *it, const Graph *g, const int64_t *offset, uint8_t *slab) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_STATEVAR) gradcheck_write_node(it, g, n, offset, slab);
    }
}

static double loss_at(Interp *it, const Graph *g, int nforward, uint64_t seed) {
    interp_run_prefix(it, nforward, true, seed);
    return interp_data(it, g->loss)[0];
}

static double central(Interp *it, const Graph *g, int nforward, uint64_t seed, double *w, double w0, double h) {
    *w = w0 + h;
    double up = loss_at(it, g, nforward, seed);
    *w = w0 - h;
    double down = loss_at(it, g, nforward, seed);
    *w = w0;
    return (up - down) / (2 * h);
}

/* An extern function computes in f32 (float f(float)) even in an f64 run: its
 * argument and result move in steps near 1e-7 of themselves, so a difference
 * over a step of 1e-4 is off by about 1e-3 of the derivative. A model that
 * calls one is differenced over 1e-2 (Richardson leaves a truncation error
 * near 1e-8), which leaves a rounding error near 1e-5 * |loss|: gradients are
 * compared on a floor of 1e-3 * |loss| and held to F32_THRESHOLD at least. A
 * wrong derivative is still off by far more. */
#define F32_THRESHOLD 1e-2

static bool calls_f32_function(const Graph *g) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_EXTERN || (n->op == OP_SCAN && calls_f32_function(n->scan.body))) return true;
    }
    return false;
}

static double threshold_of(const Graph *g, const GradcheckOptions *o) {
    double t = o->generated ? fmax(o->threshold, GRADCHECK_GENERATED_THRESHOLD) : o->threshold;
    return calls_f32_function(g) ? fmax(t, F32_THRESHOLD) : t;
}

/* The generated code's gradients at the interpreter's inputs, params and
 * states (rounded to f32), with the same dropout seed: grads[i] as doubles. */
static bool generated_grads(Interp *it, const Graph *g, uint64_t dropout_seed, double **grads, char **error) {
    CgModule *m = cg_lower(g, "gradcheck", error);
    CgJit *j = m ? cg_jit(m, error) : NULL;
    uint8_t *slab = j ? aligned_alloc(CG_ALIGN, (size_t)cg_plan(m)->slab_bytes) : NULL;
    if (!slab) {
        if (j) cg_jit_free(j);
        if (m) cg_free(m);
        if (!*error) *error = strdup("seqc gradcheck: out of memory");
        return false;
    }
    memset(slab, 0, (size_t)cg_plan(m)->slab_bytes);
    const int64_t *off = cg_plan(m)->offset;
    gradcheck_write_slab(it, g, off, slab);
    cg_jit_entry(j)(slab, 1, dropout_seed, g->nodes.len);
    for (int i = 0; i < g->params.len; i++) {
        const Node *dp = g->grads.items[i];
        if (!dp || !grads[i]) continue;
        const float *f = (const float *)(void *)(slab + off[dp->id]);
        for (int64_t k = 0; k < interp_size(g, dp); k++) grads[i][k] = f[k];
    }
    free(slab);
    cg_jit_free(j);
    cg_free(m);
    return true;
}

/* Central differences with one Richardson step: (4 D(h/2) - D(h)) / 3 cancels
 * the h^2 term, so a step large enough to keep rounding small (1e-4) leaves a
 * truncation error near 1e-16. When D(h) and D(h/2) disagree beyond what a
 * smooth function allows, a kink (relu, max) lies within h: then a step of 1e-7
 * is used, whose rounding error is near 1e-8 * |loss|, and *kinked is set so
 * the caller compares on that scale. With f32 functions: steps 1e-2 and 1e-3. */
static double numeric(Interp *it, const Graph *g, int nforward, uint64_t seed, double *w, double floor, bool f32,
                      bool *kinked) {
    double w0 = *w, scale = fabs(w0) > 1 ? fabs(w0) : 1, h = f32 ? 1e-2 : 1e-4;
    double d1 = central(it, g, nforward, seed, w, w0, h * scale);
    double d2 = central(it, g, nforward, seed, w, w0, 0.5 * h * scale);
    *kinked = fabs(d1 - d2) > (f32 ? 1e-2 : 1e-4) * fmax(fabs(d2), floor);
    if (*kinked) return central(it, g, nforward, seed, w, w0, (f32 ? 1e-3 : 1e-7) * scale);
    return (4 * d2 - d1) / 3;
}

void gradcheck_run(Graph *g, int nforward, const GradcheckOptions *o, GradcheckReport *r) {
    memset(r, 0, sizeof *r);
    r->rows = ARENA_ARRAY(g->arena, GradcheckRow, g->params.len ? g->params.len : 1);
    Interp *it = interp_new(g, PREC_F64);
    interp_init_params(it, o->seed);
    RtRng rng;
    rt_rng_seed(&rng, o->seed, 7);
    for (int i = 0; i < g->inputs.len; i++) gradcheck_fill_input(it, g, g->inputs.items[i], &rng);
    for (int i = 0; i < g->targets.len; i++) gradcheck_fill_input(it, g, g->targets.items[i], &rng);
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op != OP_STATEVAR) continue;
        double *v = interp_data(it, n);
        for (int64_t k = 0; k < interp_size(g, n); k++) v[k] = rt_rng_uniform(&rng) - 0.5;
    }
    if (o->adjust) o->adjust(it, g, o->ctx);
    uint64_t dropout_seed = o->seed + 1;
    interp_run(it, true, dropout_seed);
    r->loss = interp_data(it, g->loss)[0];
    r->ok = isfinite(r->loss);
    bool f32 = calls_f32_function(g);
    /* Keep every analytic gradient now: the finite-difference runs overwrite them. */
    double **grads = calloc((size_t)g->params.len + 1, sizeof(double *));
    for (int i = 0; i < g->params.len; i++) {
        const Node *dp = g->grads.items[i];
        if (!dp) continue;
        int64_t n = interp_size(g, dp);
        grads[i] = malloc(sizeof(double) * (size_t)n);
        memcpy(grads[i], interp_data(it, dp), sizeof(double) * (size_t)n);
    }
    if (o->generated && !generated_grads(it, g, dropout_seed, grads, &r->error)) r->ok = false;
    for (int i = 0; i < g->params.len; i++) {
        const Node *p = g->params.items[i];
        double *analytic = grads[i];
        if (!analytic) continue;
        if (r->error) {
            free(analytic);
            continue;
        }
        int64_t n = interp_size(g, p);
        double largest = 0;
        for (int64_t k = 0; k < n; k++) largest = fmax(largest, fabs(analytic[k]));
        /* Central differences in f64 carry a rounding error near
         * 1e-15 * |loss| / h = 1e-11 * |loss|, so a gradient below 1e-5 * |loss|
         * cannot be resolved to 1e-6: such entries, and those a thousand times
         * smaller than their tensor's largest, are compared against that scale. */
        /* f32 arithmetic (an extern function's, the generated code's) leaves
         * gradients that vanish exactly (a bias before batchnorm) at its own
         * noise, near 1e-7 * |loss| per operation: a larger floor. */
        double floor = fmax(1e-3 * largest, (f32 ? 1e-3 : o->generated ? 1e-4 : 1e-5) * fmax(1, fabs(r->loss)));
        GradcheckRow *row = &r->rows[r->nrows++];
        row->param = p;
        int64_t count = n <= o->full_below ? n : o->samples;
        double *w = interp_data(it, p);
        for (int64_t c = 0; c < count; c++) {
            int64_t k = n <= o->full_below ? c : (int64_t)(rt_rng_uniform(&rng) * (double)n);
            bool kinked;
            double num = numeric(it, g, nforward, dropout_seed, &w[k], floor, f32, &kinked);
            double err = fabs(num - analytic[k]);
            double scale = kinked ? fmax(floor, 1e-2 * fmax(1, fabs(r->loss))) : floor;
            double rel = err / fmax(fmax(fabs(num), fabs(analytic[k])), scale);
            row->kinks += kinked;
            if (!isfinite(num)) rel = err = INFINITY;
            row->max_abs = fmax(row->max_abs, err);
            row->max_rel = fmax(row->max_rel, rel);
            row->checked++;
        }
        r->worst_rel = fmax(r->worst_rel, row->max_rel);
        free(analytic);
    }
    free(grads);
    r->ok = r->ok && !r->error && r->nrows > 0 && r->worst_rel <= threshold_of(g, o);
    interp_free(it);
}

void gradcheck_print(const Graph *g, const GradcheckOptions *o, const GradcheckReport *r, FILE *out) {
    Arena a;
    arena_init(&a);
    int w = 9;
    double threshold = threshold_of(g, o);
    for (int i = 0; i < r->nrows; i++) {
        int len = (int)strlen(r->rows[i].param->name);
        if (len > w) w = len;
    }
    if (r->error) fprintf(out, "%s\n", r->error);
    fprintf(out, "gradient check of model '%s': batch %lld, %s, loss %.6g\n", g->name ? g->name : "",
            (long long)g->batch,
            o->generated ? "gradients of the generated code (f32) against f64 differences" : "f64", r->loss);
    fprintf(out, "%-*s  %-16s %8s  %12s  %12s\n", w, "parameter", "shape", "checked", "max abs err", "max rel err");
    for (int i = 0; i < r->nrows; i++) {
        const GradcheckRow *row = &r->rows[i];
        char *shape = type_str(&a, &row->param->type) + 3; /* drop "f32" */
        fprintf(out, "%-*s  %-16s %8lld  %12.3e  %12.3e%s", w, row->param->name, shape, (long long)row->checked,
                row->max_abs, row->max_rel, row->max_rel > threshold ? "  FAILED" : "");
        if (row->kinks) fprintf(out, "  (%lld near a kink)", (long long)row->kinks);
        fputc('\n', out);
    }
    if (r->nrows == 0)
        fprintf(out, "no trainable param has a gradient\n");
    else
        fprintf(out, "largest relative error %.3e (threshold %.0e%s): %s\n", r->worst_rel, threshold,
                threshold > o->threshold ? (o->generated ? ", f32 code" : ", an extern function computes in f32") : "",
                r->ok ? "ok" : "FAILED");
    arena_free(&a);
}
