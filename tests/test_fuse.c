/* The fusion passes (compiler/fuse.h): every op model and recurrent model of
 * the gradient tests, every example, and cells written here, each elaborated
 * twice with the same params, data and dropout seed: once as autodiff leaves
 * it, once through the passes. The reference interpreter (f64) must give the
 * same loss, metrics and gradients to 1e-12 of each tensor's largest entry
 * (the rewrites change the order in which sums over steps add their terms,
 * nothing else); the generated code of the rewritten graph must agree with
 * the interpreter on it to test_codegen.c's tolerance. The structure is
 * checked too: no matmul left in a loop that needs no carried state, fewer
 * weight-gradient matmuls inside backward loops. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "codegen.h"
#include "elab.h"
#include "fuse.h"
#include "gradcheck.h"
#include "interp.h"
#include "jit.h"
#include "models.h"
#include "pool.h"
#include "program.h"
#include "rng.h"
#include "schedule.h"

static const char *root(void) {
    const char *r = getenv("SEQC_SOURCE_ROOT");
    return r ? r : ".";
}

#define examples example_names
#define NEXAMPLES (examples_to_run())
#define NRNN ((int)(sizeof rnn_models / sizeof rnn_models[0]))
#define NOPS ((int)(sizeof op_models / sizeof op_models[0]))

/* Cells written in the language, not in lib/std.seq: the passes must find
 * their input projections and weight sums without knowing them. */
static const char *const user_cells[] = {
    /* minimal GRU, one gate; the projection split after the bias */
    "cell mgru(x: [I]) -> h {\n"
    "  state h: [units]\n"
    "  param W: [I, 2 * units] init glorot_uniform  param U: [units, units] init orthogonal\n"
    "  param V: [units, units] init orthogonal  param b: [2 * units] init zeros\n"
    "  xf, xh = split(x @ W + b, 2)\n"
    "  f = sigmoid(xf + h @ U)\n"
    "  h = (1 - f) * h + f * tanh(xh + (f * h) @ V)\n"
    "}\n"
    "model m { input x: f32[5, 3]  target y: f32[2]\n"
    "  h = mgru(x, units: 4, direction: both)  p = dense(h, units: 2)\n"
    "  loss mse(p, y) }",
    /* peephole LSTM over an embedding with padding, every step out, plus work
     * on params alone (scaled and summed weights) inside the step */
    "cell peep(x: [I]) -> h {\n"
    "  state h: [units]  state c: [units]\n"
    "  param W: [I, 4 * units] init glorot_uniform  param U: [units, 4 * units] init orthogonal\n"
    "  param P: [3 * units] init uniform(min: -0.5, max: 0.5)  param b: [4 * units] init lstm_bias\n"
    "  param s: [4 * units] init ones\n"
    "  i, f, g, o = split(tanh(x @ (W * 0.5)) * s + h @ U + (b + s), 4)\n"
    "  pi, pf, po = split(P, 3)\n"
    "  c = sigmoid(f + pf * c) * c + sigmoid(i + pi * c) * tanh(g)\n"
    "  h = sigmoid(o + po * c) * tanh(c)\n"
    "}\n"
    "model m { input w: i32[6]  target y: f32[6, 2]\n"
    "  e = embedding(w, vocab: 9, dim: 3, mask_zero: true)\n"
    "  h = peep(e, units: 3, sequences: true)  p = dense(h, units: 2)\n"
    "  loss mse(p, y) }",
    /* an IndRNN: elementwise recurrence, the only matmul is the projection */
    "cell indrnn(x: [I]) -> h {\n"
    "  state h: [units]\n"
    "  param W: [I, units] init glorot_uniform  param u: [units] init uniform(min: 0, max: 1)\n"
    "  param b: [units] init zeros\n"
    "  h = relu(x @ W + u * h + b)\n"
    "}\n"
    "model m { input x: f32[7, 2]  target y: f32[1]\n"
    "  h = indrnn(x, units: 5, sequences: true)  g = indrnn(h, units: 3, direction: backward)\n"
    "  p = dense(g, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
};
#define NUSER ((int)(sizeof user_cells / sizeof user_cells[0]))

/* ---- loading ------------------------------------------------------------------------ */

typedef struct Passes {
    bool softmax_ce;        /* fuse_softmax_ce before autodiff */
    bool softmax_late;      /* ... after schedule_tbptt rather than before */
    bool graph;             /* fuse_graph after it */
    bool full_backprop;     /* ignore the train block's bptt window */
    int64_t steps;          /* ElabOptions.steps: 0, as declared */
    bool bias_sums;         /* FuseOptions.bias_sums */
    bool windows;           /* schedule_windows before autodiff */
} Passes;

typedef struct Loaded {
    Program *prog;
    Arena arena;
    Diags diags;
    Model model;
    FuseStats stats;
    bool stats_windows;     /* schedule_windows split a scan */
} Loaded;

static void load(Loaded *l, const char *text, const char *path, int64_t batch, Passes how) {
    memset(l, 0, sizeof *l);
    diag_init(&l->diags);
    arena_init(&l->arena);
    l->prog = text ? program_load_string("test.seq", text, &l->diags) : program_load(path, &l->diags);
    ElabOptions o = {.batch = batch, .steps = how.steps};
    GradOptions go;
    bool ok = l->prog && l->diags.errors == 0 && elab_model(l->prog, NULL, &o, &l->arena, &l->model, &l->diags);
    /* A stream read `steps` at a time: the window is as long. */
    TrainRecipe *r = &l->model.recipe;
    if (ok && how.steps && r->bptt_window > how.steps) {
        r->bptt_window = how.steps;
        if (r->bptt_every > how.steps) r->bptt_every = how.steps;
    }
    if (ok && how.softmax_ce && !how.softmax_late) l->stats.softmax_ce = fuse_softmax_ce(l->model.graph);
    ok = ok && schedule_tbptt(l->model.graph, &l->model.recipe, &go, &l->diags);
    if (ok && how.softmax_ce && how.softmax_late) l->stats.softmax_ce = fuse_softmax_ce(l->model.graph);
    if (how.full_backprop) go.window = 0;
    if (ok && how.windows) {
        int before = l->model.graph->nodes.len;
        ok = schedule_windows(l->model.graph, &go, &l->diags);
        l->stats_windows = l->model.graph->nodes.len != before;
    }
    ok = ok && (!l->model.graph->loss || ad_backward(l->model.graph, &go, &l->diags));
    if (!ok) {
        char *s = diag_render(&l->diags);
        fprintf(stderr, "%s", s);
        free(s);
    }
    ck_assert_msg(ok, "model does not elaborate: %s", text ? text : path);
    if (how.graph) {
        char *err = NULL;
        FuseOptions fo = {.stats = &l->stats, .bias_sums = how.bias_sums};
        bool fused = fuse_graph(l->model.graph, &fo, &err);
        ck_assert_msg(fused, "%s", err ? err : "?");
        ck_assert(graph_verify(l->model.graph, stderr));
    }
}

static void unload(Loaded *l) {
    arena_free(&l->arena);
    diag_free(&l->diags);
    program_free(l->prog);
}

/* Inputs and targets: gradcheck_fill_input, the gradient check's own data. */

/* Params from seed 1 (or copied from `same`, which has the same params: an
 * orthogonal init of a large matrix is slow), then inputs, targets and state
 * variables from one stream. */
static Interp *fill(const Graph *g, Precision prec, Interp *same, const Graph *same_g) {
    Interp *it = interp_new(g, prec);
    if (!same) interp_init_params(it, 1);
    for (int i = 0; same && i < g->params.len; i++) {
        const Node *p = g->params.items[i], *q = same_g->params.items[i];
        ck_assert_int_eq(interp_size(g, p), interp_size(same_g, q));
        memcpy(interp_data(it, p), interp_data(same, q), sizeof(double) * (size_t)interp_size(g, p));
    }
    RtRng rng;
    rt_rng_seed(&rng, 1, 7);
    for (int i = 0; i < g->inputs.len; i++) gradcheck_fill_input(it, g, g->inputs.items[i], &rng);
    for (int i = 0; i < g->targets.len; i++) gradcheck_fill_input(it, g, g->targets.items[i], &rng);
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op != OP_STATEVAR) continue;
        double *v = interp_data(it, n);
        for (int64_t k = 0; k < interp_size(g, n); k++) v[k] = (double)(float)(rt_rng_uniform(&rng) - 0.5);
    }
    return it;
}

/* ---- structure ------------------------------------------------------------------------ */

/* Does body node x depend on a carried state? */
static bool reads_state(const Node *x) {
    if (x->op == OP_STATE_IN) return true;
    for (int k = 0; k < x->nin; k++)
        if (reads_state(x->in[k])) return true;
    return false;
}

/* Matmuls inside scan bodies that need no carried state (but in the forward
 * before a window of truncated BPTT, which keeps its projection in the loop:
 * hoisted, it would be stored for every step). */
static int loop_invariant_matmuls(const Graph *g) {
    int n = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *s = g->nodes.items[i];
        if (s->op != OP_SCAN || s->scan.walk_end > 0) continue;
        for (int k = 0; k < s->scan.body->nodes.len; k++) {
            const Node *x = s->scan.body->nodes.items[k];
            if ((x->op == OP_MATMUL || x->op == OP_MATMUL_T) && !reads_state(x)) n++;
        }
    }
    return n;
}

/* Nodes of op `op` inside scan bodies: all of them, or of the backward scans only. */
static int body_ops(const Graph *g, OpKind op, bool backward_only) {
    int n = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *s = g->nodes.items[i];
        if (s->op != OP_SCAN || (backward_only && i < g->nforward)) continue;
        for (int k = 0; k < s->scan.body->nodes.len; k++) n += ((const Node *)s->scan.body->nodes.items[k])->op == op;
    }
    return n;
}

static int scans(const Graph *g) {
    int n = 0;
    for (int i = 0; i < g->nodes.len; i++) n += ((const Node *)g->nodes.items[i])->op == OP_SCAN;
    return n;
}

/* ---- the interpreter before and after ------------------------------------------------- */

/* max |a - b| over a tensor, relative to its largest entry (absolute below 1e-300). */
static double tensor_diff(const double *a, const double *b, int64_t n) {
    double top = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) top = fmax(top, fmax(fabs(a[i]), fabs(b[i])));
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            if (!(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])))) return INFINITY;
            continue;
        }
        worst = fmax(worst, fabs(a[i] - b[i]));
    }
    return top > 1e-300 ? worst / top : worst;
}

#define SAME 1e-12
#define BCE_LOGITS 2e-6

/* Runs the unfused and the fused graph in f64 (training, dropout drawn) and
 * asserts they agree to `tol`; returns the worst difference. */
static double equivalent(const char *text, const char *path, int64_t batch, Passes fused, double tol,
                         const char *label) {
    Passes plain = {.full_backprop = fused.full_backprop, .steps = fused.steps};
    Loaded a, b;
    load(&a, text, path, batch, plain);
    load(&b, text, path, batch, fused);
    Graph *ga = a.model.graph, *gb = b.model.graph;
    /* A binary cross-entropy of probabilities adds Keras' epsilon 1e-7 inside
     * its logs, which the form from logits (what Keras runs on a sigmoid's
     * output) does not: the two agree to about that, relative. */
    for (int i = 0; fused.softmax_ce && i < ga->nodes.len; i++) {
        const Node *n = ga->nodes.items[i];
        if (n->op == OP_BCE && !n->loss.from_logits && tol < BCE_LOGITS) tol = BCE_LOGITS;
    }
    ck_assert_int_eq(ga->params.len, gb->params.len);
    ck_assert_int_eq(ga->grads.len, gb->grads.len);
    ck_assert_int_eq(ga->metrics.len, gb->metrics.len);
    Interp *ia = fill(ga, PREC_F64, NULL, NULL), *ib = fill(gb, PREC_F64, ia, ga);
    interp_run(ia, true, 2);
    interp_run(ib, true, 2);
    double worst = 0;
    const Node *fa = ga->loss ? ga->loss : ga->output, *fb = gb->loss ? gb->loss : gb->output;
    double e = tensor_diff(interp_data(ia, fa), interp_data(ib, fb), interp_size(ga, fa));
    ck_assert_msg(e <= tol, "%s: loss %.17g vs %.17g", label, interp_data(ia, fa)[0], interp_data(ib, fb)[0]);
    worst = e;
    for (int i = 0; i < ga->metrics.len; i++) {
        const Node *ma = ga->metrics.items[i], *mb = gb->metrics.items[i];
        e = tensor_diff(interp_data(ia, ma), interp_data(ib, mb), 1);
        ck_assert_msg(e <= tol, "%s: metric %d %.17g vs %.17g", label, i, interp_data(ia, ma)[0], interp_data(ib, mb)[0]);
    }
    for (int i = 0; i < ga->grads.len; i++) {
        const Node *da = ga->grads.items[i], *db = gb->grads.items[i];
        const Node *p = ga->params.items[i];
        ck_assert_msg((da == NULL) == (db == NULL), "%s: gradient of %s appeared or vanished", label, p->name);
        if (!da) continue;
        ck_assert_int_eq(interp_size(ga, da), interp_size(gb, db));
        e = tensor_diff(interp_data(ia, da), interp_data(ib, db), interp_size(ga, da));
        ck_assert_msg(e <= tol, "%s: gradient of %s differs by %.3g of its largest entry", label, p->name, e);
        worst = fmax(worst, e);
    }
    /* Every matmul that needs no carried state has left its loop. */
    if (fused.graph) ck_assert_msg(loop_invariant_matmuls(gb) == 0, "%s: a loop-invariant matmul stayed", label);
    interp_free(ia);
    interp_free(ib);
    unload(&a);
    unload(&b);
    return worst;
}

static const Passes all_passes = {.softmax_ce = true, .graph = true, .windows = true};
static const Passes graph_passes = {.graph = true};

/* ---- generated code after the passes ---------------------------------------------------- */

/* test_codegen.c's measure: |a - b| / (1e-5 max(|a|, |b|) + 1e-6 max(max |b|, scale)). */
static double f32_error(const float *a, const double *b, int64_t n, double scale) {
    double top = scale, worst = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(b[i])) top = fmax(top, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) {
        double x = a[i], y = b[i], e;
        if (!isfinite(x) || !isfinite(y)) {
            e = (isnan(x) && isnan(y)) || x == y ? 0 : INFINITY;
        } else {
            double err = fabs(x - y), tol = 1e-5 * fmax(fabs(x), fabs(y)) + 1e-6 * top;
            e = err == 0 ? 0 : tol == 0 ? INFINITY : err / tol;
        }
        worst = fmax(worst, e);
    }
    return worst;
}

/* A model lowered, compiled and run for one training step, beside the
 * interpreter's step on the same params and inputs. */
typedef struct Generated {
    Loaded l;
    Interp *it;
    CgModule *m;
    CgJit *j;
    uint8_t *slab;
} Generated;

static void generated_run(Generated *r, const char *text, const char *path, int64_t batch, Passes how,
                          const char *label) {
    load(&r->l, text, path, batch, how);
    Graph *g = r->l.model.graph;
    r->it = fill(g, PREC_F32, NULL, NULL);
    char *err = NULL;
    r->m = cg_lower(g, g->name, &err);
    ck_assert_msg(r->m != NULL, "%s: %s", label, err ? err : "?");
    r->j = cg_jit(r->m, &err);
    ck_assert_msg(r->j != NULL, "%s: %s", label, err ? err : "?");
    const CgPlan *plan = cg_plan(r->m);
    r->slab = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
    ck_assert_ptr_nonnull(r->slab);
    memset(r->slab, 0, (size_t)plan->slab_bytes);
    gradcheck_write_slab(r->it, g, plan->offset, r->slab);
    interp_run(r->it, true, 2);
    cg_jit_entry(r->j)(r->slab, 1, 2, g->nodes.len);
}

/* The generated loss (or output) and gradients against the interpreter's:
 * the worst error, in tolerances. */
static double generated_check(const Generated *r, const char *label) {
    const Graph *g = r->l.model.graph;
    const CgPlan *plan = cg_plan(r->m);
    double scale = 0, worst;
    for (int i = 0; i < g->grads.len; i++) {
        const Node *dp = g->grads.items[i];
        if (!dp) continue;
        for (int64_t k = 0; k < interp_size(g, dp); k++) scale = fmax(scale, fabs(interp_data(r->it, dp)[k]));
    }
    const Node *first = g->loss ? g->loss : g->output;
    worst = f32_error((const float *)(void *)(r->slab + cg_plan_offset(plan, first)), interp_data(r->it, first),
                      interp_size(g, first), 0);
    ck_assert_msg(worst <= 1, "%s: loss %.3g of the tolerance", label, worst);
    for (int i = 0; i < g->grads.len; i++) {
        const Node *dp = g->grads.items[i], *p = g->params.items[i];
        if (!dp) continue;
        double e = f32_error((const float *)(void *)(r->slab + cg_plan_offset(plan, dp)), interp_data(r->it, dp),
                             interp_size(g, dp), scale);
        ck_assert_msg(e <= 1, "%s: gradient of %s: %.3g of the tolerance", label, p->name, e);
        worst = fmax(worst, e);
    }
    return worst;
}

static void generated_free(Generated *r) {
    free(r->slab);
    cg_jit_free(r->j);
    cg_free(r->m);
    interp_free(r->it);
    unload(&r->l);
}

static double generated_agrees(const char *text, const char *path, int64_t batch, Passes how, const char *label) {
    Generated r;
    generated_run(&r, text, path, batch, how, label);
    double worst = generated_check(&r, label);
    generated_free(&r);
    return worst;
}

/* The examples read reviews of hundreds of steps; a few steps exercise the
 * same graph and keep the interpreter quick (a stream is then read that many
 * steps at a time, and a longer bptt window is cut to it). */
#define EXAMPLE_STEPS 12

static Passes example_passes(void) {
    Passes p = all_passes;
    p.steps = EXAMPLE_STEPS;
    return p;
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(op_models_unchanged) {
    char label[32];
    snprintf(label, sizeof label, "op model %d", _i);
    equivalent(op_models[_i], NULL, 2, graph_passes, SAME, label);
    equivalent(op_models[_i], NULL, 1, graph_passes, SAME, label);
}
END_TEST

START_TEST(rnn_models_unchanged) {
    char label[32];
    snprintf(label, sizeof label, "rnn model %d", _i);
    equivalent(rnn_models[_i], NULL, 2, all_passes, SAME, label);
    equivalent(rnn_models[_i], NULL, 1, all_passes, SAME, label);
    /* The windowed model (bptt 4 of 9 steps) once more through every step. */
    Passes full = all_passes;
    full.full_backprop = true;
    full.bias_sums = true;
    equivalent(rnn_models[_i], NULL, 2, full, SAME, label);
}
END_TEST

START_TEST(user_cells_unchanged) {
    char label[32];
    snprintf(label, sizeof label, "user cell %d", _i);
    equivalent(user_cells[_i], NULL, 2, all_passes, SAME, label);
    equivalent(user_cells[_i], NULL, 1, all_passes, SAME, label);
    Passes biases = all_passes;
    biases.bias_sums = true;
    equivalent(user_cells[_i], NULL, 2, biases, SAME, label);
}
END_TEST

START_TEST(examples_unchanged) {
    char path[512];
    snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
    equivalent(NULL, path, 2, example_passes(), SAME, examples[_i]);
}
END_TEST

/* What the passes do to the standard cells and to a cell of the user's. */
START_TEST(structure) {
    for (int which = 0; which < 3; which++) {
        const char *text = which == 0 ? rnn_models[1] : which == 1 ? user_cells[0] : user_cells[1];
        Loaded a, b;
        load(&a, text, NULL, 2, (Passes){0});
        load(&b, text, NULL, 2, all_passes);
        const Graph *ga = a.model.graph, *gb = b.model.graph;
        ck_assert_int_gt(loop_invariant_matmuls(ga), 0);
        ck_assert_int_eq(loop_invariant_matmuls(gb), 0);
        ck_assert_int_eq(scans(ga), scans(gb));
        int wa = body_ops(ga, OP_MATMUL_W, true), wb = body_ops(gb, OP_MATMUL_W, true);
        ck_assert_msg(wb < wa, "case %d: %d weight-gradient matmuls in backward loops, %d before", which, wb, wa);
        /* Only products with the carried state remain: one per recurrent matrix. */
        ck_assert_int_eq(wb, 0);
        ck_assert_int_gt(b.stats.hoisted_steps, 0);
        ck_assert_int_gt(b.stats.moved_sums, 0);
        ck_assert_int_gt(b.stats.dropped_states, 0);
        /* The peephole cell's scaled weights and summed biases are params alone. */
        if (which == 2) ck_assert_int_gt(b.stats.hoisted_captures, 0);
        /* The gates' gradients are concatenated, not zero-filled and added. */
        ck_assert_int_gt(body_ops(ga, OP_SLICE_GRAD, true), 0);
        ck_assert_int_eq(body_ops(gb, OP_SLICE_GRAD, true), 0);
        ck_assert_int_gt(b.stats.concats, 0);
        /* The state's gradient reads the recurrent matrix transposed once, before the loop. */
        ck_assert_int_gt(body_ops(ga, OP_MATMUL_T, true), 0);
        ck_assert_int_eq(body_ops(gb, OP_MATMUL_T, true), 0);
        ck_assert_int_gt(b.stats.transposed, 0);
        unload(&b);
        /* Bias sums too, on request: nothing but the carried state's products stays. */
        Passes biases = all_passes;
        biases.bias_sums = true;
        load(&b, text, NULL, 2, biases);
        ck_assert_int_gt(body_ops(a.model.graph, OP_SUM_TO, true), 0);
        ck_assert_int_eq(body_ops(b.model.graph, OP_SUM_TO, true), 0);
        unload(&a);
        unload(&b);
    }
}
END_TEST

/* Each rewrite alone keeps the values. */
START_TEST(rewrites_one_at_a_time) {
    for (int which = 0; which < 2; which++) {
        Loaded a, b;
        load(&a, user_cells[1], NULL, 2, (Passes){0});
        load(&b, user_cells[1], NULL, 2, (Passes){0});
        char *err = NULL;
        FuseStats st = {0};
        FuseOptions o = {.no_hoist = which == 0, .no_sums = which == 1, .stats = &st};
        ck_assert_msg(fuse_graph(b.model.graph, &o, &err), "%s", err ? err : "?");
        ck_assert_int_eq(st.hoisted_steps > 0, which == 1);
        ck_assert_int_eq(st.moved_sums > 0, which == 0);
        Graph *ga = a.model.graph, *gb = b.model.graph;
        Interp *ia = fill(ga, PREC_F64, NULL, NULL), *ib = fill(gb, PREC_F64, ia, ga);
        interp_run(ia, true, 2);
        interp_run(ib, true, 2);
        for (int i = 0; i < ga->grads.len; i++) {
            const Node *da = ga->grads.items[i], *db = gb->grads.items[i];
            if (!da) continue;
            ck_assert_double_le(tensor_diff(interp_data(ia, da), interp_data(ib, db), interp_size(ga, da)), SAME);
        }
        interp_free(ia);
        interp_free(ib);
        unload(&a);
        unload(&b);
    }
}
END_TEST

/* Dropout masks draw from streams keyed by their node: the pass keeps their ids. */
START_TEST(dropout_masks_keep_their_ids) {
    Loaded a, b;
    load(&a, rnn_models[8], NULL, 2, (Passes){0});
    load(&b, rnn_models[8], NULL, 2, all_passes);
    int na = 0, nb = 0;
    for (int i = 0; i < a.model.graph->nodes.len; i++) na += ((Node *)a.model.graph->nodes.items[i])->op == OP_DROPMASK;
    for (int i = 0; i < b.model.graph->nodes.len; i++) {
        const Node *n = b.model.graph->nodes.items[i];
        if (n->op != OP_DROPMASK) continue;
        nb++;
        ck_assert_int_eq(((Node *)a.model.graph->nodes.items[i])->op, OP_DROPMASK);
    }
    ck_assert_int_eq(na, 4);
    ck_assert_int_eq(na, nb);
    unload(&a);
    unload(&b);
}
END_TEST

/* Softmax + cross-entropy: fused where the loss reads the softmax, the
 * softmax kept where a metric or the output reads it too. */
START_TEST(softmax_ce_fused) {
    Loaded l;
    char path[512];
    snprintf(path, sizeof path, "%s/examples/charlm.seq", root());
    load(&l, NULL, path, 2, all_passes);
    const Graph *g = l.model.graph;
    ck_assert_int_eq(l.stats.softmax_ce, 1);
    ck_assert_int_eq(g->loss->op, OP_SCE);
    ck_assert(g->loss->loss.from_logits);
    ck_assert_int_ne(g->loss->in[0]->op, OP_SOFTMAX);
    ck_assert_int_eq(((const Node *)g->metrics.items[0])->in[0]->op, OP_SOFTMAX);
    int softmax_grads = 0;
    for (int i = g->nforward; i < g->nodes.len; i++) softmax_grads += ((Node *)g->nodes.items[i])->op == OP_SOFTMAX_GRAD;
    ck_assert_int_eq(softmax_grads, 0);
    unload(&l);
    /* A loss over the last steps of a window: the time slice moves to the logits. */
    load(&l, rnn_models[10], NULL, 2, all_passes);
    ck_assert_int_ge(l.stats.softmax_ce, 1);
    ck_assert(l.model.graph->loss->loss.from_logits);
    ck_assert_int_eq(l.model.graph->loss->in[0]->op, OP_TIME_SLICE);
    ck_assert_int_ne(l.model.graph->loss->in[0]->in[0]->op, OP_SOFTMAX);
    unload(&l);
    /* The same fused after the schedule has cut the loss to the window's last steps. */
    Passes late = all_passes;
    late.softmax_late = true;
    load(&l, rnn_models[10], NULL, 2, late);
    ck_assert_int_eq(l.stats.softmax_ce, 2); /* the whole window's loss, unused now, and the cut one */
    ck_assert(l.model.graph->loss->loss.from_logits);
    ck_assert_int_eq(l.model.graph->loss->in[0]->op, OP_TIME_SLICE);
    ck_assert_int_ne(l.model.graph->loss->in[0]->in[0]->op, OP_SOFTMAX);
    unload(&l);
    equivalent(rnn_models[10], NULL, 2, late, SAME, "softmax fused after the schedule");
    /* Categorical, on sequences. */
    equivalent(op_models[5], NULL, 2, all_passes, SAME, "categorical");
    equivalent(op_models[3], NULL, 2, all_passes, SAME, "sparse");
    /* Rows enough for the loss's kernel to sum the bias gradient by blocks
     * (CG_SCE_BLOCK), the last one short. */
    generated_agrees(op_models[3], NULL, 2 * CG_SCE_BLOCK + 22, all_passes, "sparse, blocks of rows");
    generated_agrees(op_models[4], NULL, 2 * CG_SCE_BLOCK + 22, all_passes, "sparse from logits, blocks of rows");
}
END_TEST

/* The offsets of the logits of model `text`'s loss and of the gradient by
 * them, lowered for the batch. */
static void logits_and_grad(const char *text, int64_t batch, int64_t *logits, int64_t *grad) {
    Loaded l;
    load(&l, text, NULL, batch, all_passes);
    Graph *g = l.model.graph;
    char *err = NULL;
    CgModule *m = cg_lower(g, g->name, &err);
    ck_assert_msg(m != NULL, "%s", err ? err : "?");
    const Node *z = g->loss->in[0], *dz = NULL;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *x = g->nodes.items[i];
        if (x->op == OP_LOSS_GRAD && x->in[0] == z) dz = x;
    }
    ck_assert_ptr_nonnull(dz);
    *logits = cg_plan_offset(cg_plan(m), z);
    *grad = cg_plan_offset(cg_plan(m), dz);
    cg_free(m);
    unload(&l);
}

/* The loss's row pass writes the gradient over the logits when nothing else
 * reads them (softmax fused into the loss: the model's output, the
 * probabilities, is not computed in training), reading the target's logit
 * first: the loss and gradients agree with the interpreter's. Not when the
 * logits are the model's output too. */
START_TEST(loss_grad_over_logits) {
    int64_t z, dz;
    logits_and_grad(op_models[3], 2 * CG_SCE_BLOCK + 22, &z, &dz);
    ck_assert_int_eq(dz, z);
    generated_agrees(op_models[3], NULL, 2 * CG_SCE_BLOCK + 22, all_passes, "sparse, in place");
    logits_and_grad(op_models[4], 8, &z, &dz);
    ck_assert_int_ne(dz, z);
}
END_TEST

/* A fused kernel of a model graph stores only what something reads: the
 * dense layer's product (16 units wide, so that it and its bias make one
 * kernel: codegen_epilogue.c) before its bias goes no further than the kernel
 * and has no place in the slab, the logits after the bias do (the loss
 * reads them, and agrees with the interpreter's). */
static const char wide_softmax[] = "model m { input x: f32[3]  target y: i32[]\n"
                                   "  p = dense(x, units: 16, activation: softmax)\n"
                                   "  loss sparse_categorical_crossentropy(p, y) }";

START_TEST(unread_member_not_stored) {
    const char *label = "the product before its bias not stored";
    Generated r;
    generated_run(&r, wide_softmax, NULL, 8, all_passes, label);
    const Graph *g = r.l.model.graph;
    const CgPlan *plan = cg_plan(r.m);
    const Node *product = NULL;
    for (int i = 0; i < g->nodes.len && !product; i++)
        if (((Node *)g->nodes.items[i])->op == OP_MATMUL) product = g->nodes.items[i];
    ck_assert_ptr_nonnull(product);
    ck_assert_int_eq(cg_plan_graph(plan, g)->bytes[product->id], 0);
    ck_assert(*(const float *)(void *)(r.slab + cg_plan_offset(plan, g->loss)) > 0);
    generated_check(&r, label);
    generated_free(&r);
}
END_TEST

/* Model text run twice, each checked against the interpreter: r[0] with
 * every kernel one part, r[1] with every unit of work a part of its own on
 * three threads; then the loss and gradients of r[1] must be r[0]'s bits. */
static void generated_split_pair(Generated r[2], const char *text, int64_t batch, const char *label) {
    for (int k = 0; k < 2; k++) {
        if (k) {
            setenv("SEQC_SPLIT_SMALL", "1", 1);
            rt_set_threads(3);
        }
        char what[96];
        snprintf(what, sizeof what, "%s, %s", label, k ? "a part a unit" : "one part");
        generated_run(&r[k], text, NULL, batch, all_passes, what);
        unsetenv("SEQC_SPLIT_SMALL");
        rt_set_threads(0);
        generated_check(&r[k], what);
    }
    const Graph *g[2] = {r[0].l.model.graph, r[1].l.model.graph};
    for (int i = -1; i < g[0]->grads.len; i++) {
        const Node *x[2];
        for (int k = 0; k < 2; k++) x[k] = i < 0 ? g[k]->loss : g[k]->grads.items[i];
        if (!x[0]) continue;
        size_t bytes = 4 * (size_t)(type_elements(&x[0]->type) * (x[0]->type.batched ? batch : 1));
        ck_assert_msg(memcmp(r[0].slab + cg_plan_offset(cg_plan(r[0].m), x[0]),
                             r[1].slab + cg_plan_offset(cg_plan(r[1].m), x[1]), bytes) == 0,
                      "%s: %s differs with a part a unit", label, i < 0 ? "the loss" : "a gradient");
    }
}

/* A wide output layer (1,100 classes, by rows) runs its loss's row pass in
 * its own kernel, a row tile at a time: the loss and gradients agree with
 * the interpreter's, and the blocks of 64 rows (the last one of 22: two
 * tiles of 8, then 6 rows one at a time), each a part of its own on three
 * threads, give the bits one part gives. */
static const char wide_output[] = "model m { input x: f32[3]  target y: i32[]\n"
                                  "  p = dense(x, units: 1100, activation: softmax)\n"
                                  "  loss sparse_categorical_crossentropy(p, y) }";

START_TEST(loss_rows_in_product_kernel) {
    Generated r[2];
    generated_split_pair(r, wide_output, 2 * CG_SCE_BLOCK + 22, "wide output");
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(cg_stats(r[k].m)->loss_rows, 1);
        generated_free(&r[k]);
    }
}
END_TEST

/* An embedding into an LSTM: the embedding's output, its input projection,
 * the last step's gradient placed in a sequence for the backward scan, the
 * backward scan's gradient sequence and the input gradient from it are
 * stored time-major (codegen.c, time_major_values), which scans read and
 * write where they lie; the loss and gradients agree with the
 * interpreter's, and a part an example on three threads gives the bits one
 * part gives. */
static const char embedded_lstm[] = "model m { input w: i32[6]  target y: f32[2]\n"
                                    "  e = embedding(w, vocab: 11, dim: 3)\n"
                                    "  h = lstm(e, units: 4)  p = dense(h, units: 2)\n"
                                    "  loss mse(p, y) }";

START_TEST(sequences_time_major) {
    Generated r[2];
    generated_split_pair(r, embedded_lstm, 5, "embedded lstm");
    const Graph *g = r[0].l.model.graph;
    const CgPlan *plan = cg_plan(r[0].m);
    int embed = 0, product = 0, backward = 0, input_grad = 0, placed = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *x = g->nodes.items[i];
        bool tm = cg_time_major(plan, x);
        if (x->op == OP_EMBED) embed += tm;
        if (x->op == OP_MATMUL && x->type.batched && x->type.rank == 2) product += tm;
        if (x->op == OP_SCAN && x->scan.reverse) backward += tm;
        if (x->op == OP_EMBED_GRAD) input_grad += cg_time_major(plan, x->in[1]);
        if (x->op == OP_PLACE_STEP) placed += tm;
        if (x == g->loss || x == g->output) ck_assert(!tm);
    }
    ck_assert_int_eq(embed, 1);
    ck_assert_int_eq(product, 1);
    ck_assert_int_eq(backward, 1);
    ck_assert_int_eq(input_grad, 1);
    ck_assert_int_eq(placed, 1);
    for (int k = 0; k < 2; k++) generated_free(&r[k]);
}
END_TEST

/* Probabilities below Keras' 1e-7 clip: the fused loss is the exact one, so
 * compare its gradient with finite differences instead of the clipped form. */
START_TEST(softmax_ce_large_logits) {
    Loaded l;
    load(&l, op_models[8], NULL, 2, (Passes){.softmax_ce = true, .graph = true, .full_backprop = true});
    ck_assert_int_eq(l.stats.softmax_ce, 1);
    GradcheckOptions o;
    gradcheck_defaults(&o);
    GradcheckReport r;
    gradcheck_run(l.model.graph, l.model.graph->nforward, &o, &r);
    if (!r.ok) gradcheck_print(l.model.graph, &o, &r, stderr);
    ck_assert(r.ok);
    ck_assert(isfinite(r.loss));
    unload(&l);
}
END_TEST

START_TEST(generated_rnn_models) {
    char label[32];
    snprintf(label, sizeof label, "rnn model %d", _i);
    generated_agrees(rnn_models[_i], NULL, 2, all_passes, label);
}
END_TEST

START_TEST(generated_user_cells) {
    char label[32];
    snprintf(label, sizeof label, "user cell %d", _i);
    generated_agrees(user_cells[_i], NULL, 2, all_passes, label);
    Passes biases = all_passes;
    biases.bias_sums = true;
    generated_agrees(user_cells[_i], NULL, 2, biases, label);
}
END_TEST

START_TEST(generated_examples) {
    char path[512];
    snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
    generated_agrees(NULL, path, 2, example_passes(), examples[_i]);
}
END_TEST

/* The nodes of a forward scan's body that depend on its product of a carried
 * state (h @ U): a cell's whole gate arithmetic. */
static int recurrent_dependents(const Graph *body) {
    bool *mark = calloc((size_t)body->nodes.len, sizeof *mark);
    ck_assert_ptr_nonnull(mark);
    int count = 0;
    for (int i = 0; i < body->nodes.len; i++) {
        const Node *n = body->nodes.items[i];
        bool dep = n->op == OP_MATMUL && n->in[0]->op == OP_STATE_IN;
        for (int k = 0; k < n->nin && !dep; k++) dep = mark[n->in[k]->id];
        mark[n->id] = dep;
        count += dep;
    }
    free(mark);
    return count;
}

/* The gate arithmetic of cells written in the language runs inside the
 * recurrent matmul's kernel: the peephole LSTM's (its gates read slices of
 * a param, its states a mask) and the stock LSTM's; not one node of it on
 * its own. */
START_TEST(epilogue_takes_the_gates) {
    const char *lstm = "model m { input x: f32[5, 3]  target y: f32[2]\n"
                       "  h = lstm(x, units: 16)  p = dense(h, units: 2)  loss mse(p, y) }";
    const char *texts[] = {user_cells[1], lstm};
    for (int t = 0; t < 2; t++) {
        Loaded l;
        load(&l, texts[t], NULL, 4, all_passes);
        Graph *g = l.model.graph;
        int expected = 0;
        for (int i = 0; i < g->nodes.len; i++) {
            const Node *n = g->nodes.items[i];
            if (n->op == OP_SCAN && !n->scan.reverse) expected = recurrent_dependents(n->scan.body);
        }
        ck_assert_int_gt(expected, 8);
        char *err = NULL;
        CgModule *m = cg_lower(g, g->name, &err);
        ck_assert_msg(m != NULL, "%s", err ? err : "?");
        /* The peephole cell's kernel also takes the products of its peephole
         * weights and of the mask with the states (they read no gate, but
         * have a gate's shape): more than the dependents. */
        if (t == 0) ck_assert_int_ge(cg_stats(m)->largest_epilogue, expected);
        else ck_assert_int_eq(cg_stats(m)->largest_epilogue, expected);
        cg_free(m);
        unload(&l);
    }
}
END_TEST

/* Aligned bytes of the model graph's inputs. */
static int64_t input_bytes(const Graph *g, const CgPlan *p) {
    int64_t bytes = 0;
    for (int i = 0; i < g->nodes.len; i++)
        if (((const Node *)g->nodes.items[i])->op == OP_INPUT)
            bytes += (p->graphs[0].bytes[i] + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN;
    return bytes;
}

/* Truncated BPTT (`bptt 4`) through whole sequences: the forward before the
 * window is a scan of its own that keeps nothing, so no value but the
 * inputs grows with the sequence, 9 steps or 60, one direction or two; and
 * the slab less its inputs is no larger than over the window alone (4
 * steps, no scan split): the states the steps before the window leave are
 * where the window carries them, its ids are read in place, and the
 * embedding's gradient marks its rows, whatever the number of ids. */
START_TEST(window_memory_bounded) {
    const char *text = "model m { input w: i32[%d]  target y: f32[1]\n"
                       "  e = embedding(w, vocab: 11, dim: 3)\n"
                       "  h = lstm(e, units: 3, direction: %s)  p = dense(h, units: 1, activation: sigmoid)\n"
                       "  loss binary_crossentropy(p, y) }\n"
                       "train { bptt 4 }";
    for (int both = 0; both < 2; both++) {
        Loaded l[2];
        CgModule *m[2];
        for (int k = 0; k < 2; k++) {
            char model[512];
            snprintf(model, sizeof model, text, k ? 60 : 9, both ? "both" : "forward");
            load(&l[k], model, NULL, 2, all_passes);
            ck_assert(l[k].stats_windows);
            const Graph *g = l[k].model.graph;
            int walkers = 0;
            for (int i = 0; i < g->nodes.len; i++) {
                const Node *n = g->nodes.items[i];
                walkers += n->op == OP_SCAN && n->scan.walk_end > 0;
                if (n->op != OP_INPUT && n->type.batched && n->type.rank >= 2) /* [steps, features] */
                    ck_assert_msg(n->type.dims[0] <= 4, "%s node %d has %lld steps", op_name(n->op), i,
                                  (long long)n->type.dims[0]);
            }
            ck_assert_int_eq(walkers, both ? 2 : 1);
            /* Both directions' lookups scatter into one embedding gradient. */
            if (both) ck_assert_int_eq(l[k].stats.merged_embed_grads, 1);
            char *err = NULL;
            m[k] = cg_lower(g, g->name, &err);
            ck_assert_msg(m[k] != NULL, "%s", err ? err : "?");
        }
        const Graph *g0 = l[0].model.graph, *g1 = l[1].model.graph;
        const CgPlan *p0 = cg_plan(m[0]), *p1 = cg_plan(m[1]);
        ck_assert_int_eq(g0->nodes.len, g1->nodes.len);
        int64_t grown = 0;
        for (int i = 0; i < g0->nodes.len; i++) {
            const Node *a = g0->nodes.items[i], *b = g1->nodes.items[i];
            ck_assert_int_eq(a->op, b->op);
            if (a->op == OP_INPUT) grown += (p1->graphs[0].bytes[i] + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN -
                                            (p0->graphs[0].bytes[i] + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN;
            else ck_assert_int_eq(p0->graphs[0].bytes[i], p1->graphs[0].bytes[i]);
        }
        ck_assert_int_eq(p1->slab_bytes - p0->slab_bytes, grown);
        Loaded lw;
        char model[512];
        snprintf(model, sizeof model, text, 4, both ? "both" : "forward");
        load(&lw, model, NULL, 2, all_passes);
        char *err = NULL;
        CgModule *mw = cg_lower(lw.model.graph, lw.model.graph->name, &err);
        ck_assert_msg(mw != NULL, "%s", err ? err : "?");
        const CgPlan *pw = cg_plan(mw);
        ck_assert_int_le(p1->slab_bytes - input_bytes(g1, p1), pw->slab_bytes - input_bytes(lw.model.graph, pw));
        cg_free(mw);
        unload(&lw);
        for (int k = 0; k < 2; k++) {
            cg_free(m[k]);
            unload(&l[k]);
        }
    }
}
END_TEST

/* Under a loss fused with its softmax, the softmax output is read only by
 * predictions, which run the inference variant: the training step does not
 * compute it, unless a metric reads it. */
START_TEST(unread_output_not_computed) {
    const char *texts[2] = {"model m { input x: f32[3]  target y: i32[]\n"
                            "  p = dense(x, units: 5, activation: softmax)\n"
                            "  loss sparse_categorical_crossentropy(p, y) }",
                            "model m { input x: f32[3]  target y: i32[]\n"
                            "  p = dense(x, units: 5, activation: softmax)\n"
                            "  loss sparse_categorical_crossentropy(p, y)  metric accuracy(p, y) }"};
    for (int k = 0; k < 2; k++) {
        Loaded l;
        load(&l, texts[k], NULL, 2, all_passes);
        ck_assert_int_eq(l.stats.softmax_ce, 1);
        char *err = NULL;
        CgModule *m = cg_lower(l.model.graph, "m", &err);
        ck_assert_msg(m != NULL, "%s", err ? err : "?");
        ck_assert_int_eq(cg_stats(m)->unread, k == 0 ? 1 : 0);
        cg_free(m);
        unload(&l);
        generated_agrees(texts[k], NULL, 2, all_passes, k == 0 ? "unread softmax" : "softmax read by a metric");
    }
}
END_TEST

static Suite *fuse_suite(void) {
    Suite *s = suite_create("fuse");
    TCase *eq = tcase_create("equivalence");
    tcase_set_timeout(eq, 300);
    tcase_add_loop_test(eq, op_models_unchanged, 0, NOPS);
    tcase_add_loop_test(eq, rnn_models_unchanged, 0, NRNN);
    tcase_add_loop_test(eq, user_cells_unchanged, 0, NUSER);
    tcase_add_loop_test(eq, examples_unchanged, 0, examples_to_run());
    suite_add_tcase(s, eq);
    TCase *st = tcase_create("structure");
    tcase_add_test(st, structure);
    tcase_add_test(st, rewrites_one_at_a_time);
    tcase_add_test(st, dropout_masks_keep_their_ids);
    tcase_add_test(st, softmax_ce_fused);
    tcase_add_test(st, softmax_ce_large_logits);
    tcase_add_test(st, loss_grad_over_logits);
    tcase_add_test(st, unread_member_not_stored);
    tcase_add_test(st, loss_rows_in_product_kernel);
    tcase_add_test(st, sequences_time_major);
    tcase_add_test(st, window_memory_bounded);
    tcase_add_test(st, unread_output_not_computed);
    suite_add_tcase(s, st);
    TCase *cg = tcase_create("generated");
    tcase_set_timeout(cg, 600);
    tcase_add_loop_test(cg, generated_rnn_models, 0, NRNN);
    tcase_add_loop_test(cg, generated_user_cells, 0, NUSER);
    tcase_add_loop_test(cg, generated_examples, 0, examples_to_run());
    tcase_add_test(cg, epilogue_takes_the_gates);
    suite_add_tcase(s, cg);
    return s;
}

int main(void) {
    SRunner *r = srunner_create(fuse_suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
