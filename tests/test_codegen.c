/* The LLVM back end against the reference interpreter: every op model and
 * recurrent model of the gradient tests and every example, the same params,
 * data and dropout seed in both, forward and backward; the loss, every metric
 * and every param gradient must agree to f32 accuracy. The interpreter runs
 * in PREC_F32 (every op's result rounded to float), the generated code in f32
 * with double accumulators (codegen.h).
 *
 * Training: three steps of the generated step and update against
 * interp_run and interp_optimizer_step, with each optimizer of `optimizers`,
 * every param and optimizer slot compared after the third. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "autodiff.h"
#include "codegen.h"
#include "dropout.h"
#include "elab.h"
#include "interp.h"
#include "jit.h"
#include "gradcheck.h"
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

/* Sequences longer than this run one example: the interpreter is slow on them. */
#define LONG_SEQUENCE 500

/* ---- loading ----------------------------------------------------------------------- */

typedef struct Loaded {
    Program *prog;
    Arena arena;
    Diags diags;
    Model model;
} Loaded;

static bool load(Loaded *l, const char *text, const char *path, int64_t batch) {
    diag_init(&l->diags);
    arena_init(&l->arena);
    l->prog = text ? program_load_string("test.seq", text, &l->diags) : program_load(path, &l->diags);
    ElabOptions o = {.batch = batch};
    GradOptions go;
    bool ok = l->prog && l->diags.errors == 0 && elab_model(l->prog, NULL, &o, &l->arena, &l->model, &l->diags) &&
              schedule_tbptt(l->model.graph, &l->model.recipe, &go, &l->diags) &&
              schedule_windows(l->model.graph, &go, &l->diags);
    /* A model without a loss (imdb_stack: an inference benchmark) is compared forward only. */
    ok = ok && (!l->model.graph->loss || ad_backward(l->model.graph, &go, &l->diags));
    if (!ok) {
        char *s = diag_render(&l->diags);
        fprintf(stderr, "%s", s);
        free(s);
    }
    return ok;
}

static void unload(Loaded *l) {
    arena_free(&l->arena);
    diag_free(&l->diags);
    program_free(l->prog);
}

/* Inputs and targets: gradcheck_fill_input, the gradient check's own data. */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- comparison ------------------------------------------------------------------------ */

/* The worst of |a - b| / (1e-5 max(|a|, |b|) + 1e-6 max(max |b| over the
 * tensor, scale)): at most 1 passes. `scale` is the largest gradient of the
 * model (0 for other values): a gradient that is zero in exact arithmetic
 * (a bias ahead of batchnorm, which subtracts the mean) is rounding noise in
 * both runs, of the size of the terms that cancelled, not of its own.
 * Non-finite values must match exactly. */
static double tensor_error(const float *a, const double *b, int64_t n, double scale, int64_t *where) {
    double top = scale, worst = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(b[i])) top = fmax(top, fabs(b[i]));
    *where = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = a[i], y = b[i], e;
        if (!isfinite(x) || !isfinite(y)) {
            e = (isnan(x) && isnan(y)) || x == y ? 0 : INFINITY;
        } else {
            double err = fabs(x - y), tol = 1e-5 * fmax(fabs(x), fabs(y)) + 1e-6 * top;
            e = err == 0 ? 0 : tol == 0 ? INFINITY : err / tol;
        }
        if (e > worst) {
            worst = e;
            *where = i;
        }
    }
    return worst;
}

typedef struct Run {
    Loaded l;
    Interp *it;
    CgModule *m;
    CgJit *j;
    uint8_t *slab;
} Run;

static float *slab_f32(Run *r, const Node *n) {
    return (float *)(void *)(r->slab + cg_plan_offset(cg_plan(r->m), n));
}

static double node_error(Run *r, const Node *n, double scale, int64_t *where) {
    return tensor_error(slab_f32(r, n), interp_data(r->it, n), interp_size(r->l.model.graph, n), scale, where);
}

/* The largest gradient entry of the model, by the interpreter. */
static double gradient_scale(Run *r) {
    const Graph *g = r->l.model.graph;
    double top = 0;
    for (int i = 0; i < g->grads.len; i++) {
        const Node *dp = g->grads.items[i];
        if (!dp) continue;
        const double *v = interp_data(r->it, dp);
        for (int64_t k = 0; k < interp_size(g, dp); k++)
            if (isfinite(v[k])) top = fmax(top, fabs(v[k]));
    }
    return top;
}

static bool caller_writes(const Node *n) { return n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_STATEVAR; }

/* Loads, fills, compiles and runs both; returns the worst error over the
 * loss, the metrics and the gradients (asserting it is at most 1). */
static double differential(const char *text, const char *path, int64_t batch, bool training, const char *label) {
    Run r = {0};
    ck_assert_msg(load(&r.l, text, path, batch), "model does not elaborate: %s", label);
    Graph *g = r.l.model.graph;
    int64_t longest = 0;
    for (int i = 0; i < g->inputs.len; i++) {
        const Node *x = g->inputs.items[i];
        if (x->type.rank > 0) longest = longest > x->type.dims[0] ? longest : x->type.dims[0];
    }
    if (longest > LONG_SEQUENCE && batch > 1) {
        unload(&r.l);
        ck_assert(load(&r.l, text, path, 1));
        g = r.l.model.graph;
    }
    r.it = interp_new(g, PREC_F32);
    interp_init_params(r.it, 1);
    RtRng rng;
    rt_rng_seed(&rng, 1, 7);
    for (int i = 0; i < g->inputs.len; i++) gradcheck_fill_input(r.it, g, g->inputs.items[i], &rng);
    for (int i = 0; i < g->targets.len; i++) gradcheck_fill_input(r.it, g, g->targets.items[i], &rng);
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op != OP_STATEVAR) continue;
        double *v = interp_data(r.it, n);
        for (int64_t k = 0; k < interp_size(g, n); k++) v[k] = (double)(float)(rt_rng_uniform(&rng) - 0.5);
    }

    char *err = NULL;
    r.m = cg_lower(g, g->name, &err);
    ck_assert_msg(r.m != NULL, "%s: %s", label, err ? err : "?");
    r.j = cg_jit(r.m, &err);
    ck_assert_msg(r.j != NULL, "%s: %s", label, err ? err : "?");
    const CgPlan *plan = cg_plan(r.m);
    r.slab = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
    ck_assert_ptr_nonnull(r.slab);
    memset(r.slab, 0, (size_t)plan->slab_bytes);
    gradcheck_write_slab(r.it, g, plan->offset, r.slab);

    const uint64_t dropout_seed = 2;
    interp_run(r.it, training, dropout_seed);
    double t0 = now_ms();
    cg_jit_entry(r.j)(r.slab, training, dropout_seed, g->nodes.len);
    double run_ms = now_ms() - t0;

    /* What must agree: the loss, every metric, every gradient. */
    double worst = 0, scale = gradient_scale(&r);
    const char *worst_name = g->loss ? "loss" : "output";
    int64_t where;
    const Node *first = g->loss ? g->loss : g->output;
    ck_assert_ptr_nonnull(first);
    double e = node_error(&r, first, 0, &where);
    worst = e;
    ck_assert_msg(e <= 1, "%s: %s [%lld] %.9g vs %.9g", label, g->loss ? "loss" : "output", (long long)where,
                  slab_f32(&r, first)[where], interp_data(r.it, first)[where]);
    for (int i = 0; i < g->metrics.len; i++) {
        const Node *mt = g->metrics.items[i];
        e = node_error(&r, mt, 0, &where);
        ck_assert_msg(e <= 1, "%s: metric %d %.9g vs %.9g", label, i, slab_f32(&r, mt)[0], interp_data(r.it, mt)[0]);
        if (e > worst) worst = e, worst_name = "a metric";
    }
    for (int i = 0; i < g->grads.len; i++) {
        const Node *dp = g->grads.items[i], *p = g->params.items[i];
        if (!dp) continue;
        e = node_error(&r, dp, scale, &where);
        if (e > 1) {
            /* Say where the two first part, to find the op at fault. */
            for (int k = 0; k < g->nodes.len; k++) {
                const Node *n = g->nodes.items[k];
                int64_t at;
                if (n->type.dtype != DT_F32 || caller_writes(n) || node_error(&r, n, 0, &at) <= 1) continue;
                fprintf(stderr, "%s: first difference at node %d (%s%s%s) [%lld]: %.9g vs %.9g\n", label, n->id,
                        op_name(n->op), n->name ? " " : "", n->name ? n->name : "", (long long)at,
                        slab_f32(&r, n)[at], interp_data(r.it, n)[at]);
                break;
            }
        }
        ck_assert_msg(e <= 1, "%s: gradient of %s [%lld]: %.9g vs %.9g (error %.3g of the tolerance)", label, p->name,
                      (long long)where, slab_f32(&r, dp)[where], interp_data(r.it, dp)[where], e);
        if (e > worst) worst = e, worst_name = p->name;
    }
    CgTiming *t = cg_timing(r.m);
    fprintf(stderr,
            "codegen %-18s batch %lld %s: lower %7.1f ms  passes %7.1f ms  jit %7.1f ms  run %7.2f ms  "
            "slab %9lld bytes  worst %.3f of tolerance (%s)\n",
            label, (long long)g->batch, training ? "train" : "infer", t->lower_ms, t->passes_ms, t->jit_ms, run_ms,
            (long long)plan->slab_bytes, worst, worst_name);
    free(r.slab);
    cg_jit_free(r.j);
    cg_free(r.m);
    interp_free(r.it);
    unload(&r.l);
    return worst;
}

/* ---- training: step and update against interp_run and interp_optimizer_step ---------------- */

/* Keras' rules, each clipping on one of them; learning rates large enough
 * that three steps move the params well beyond the tolerance. */
static const Optimizer optimizers[] = {
    {.kind = OPT_SGD, .lr = 0.1, .clipvalue = 0.05},
    {.kind = OPT_SGD, .lr = 0.05, .momentum = 0.9, .nesterov = true, .clipnorm = 0.5},
    {.kind = OPT_RMSPROP, .lr = 0.01, .rho = 0.9, .epsilon = 1e-7, .global_clipnorm = 0.3},
    {.kind = OPT_RMSPROP, .lr = 0.01, .rho = 0.8, .momentum = 0.5, .epsilon = 1e-7},
    {.kind = OPT_ADAM, .lr = 0.01, .beta_1 = 0.9, .beta_2 = 0.999, .epsilon = 1e-7},
};
static const char *const optimizer_names[] = {"sgd+clipvalue", "sgd+nesterov+clipnorm", "rmsprop+global_clipnorm",
                                              "rmsprop+momentum", "adam"};
#define NOPT ((int)(sizeof optimizers / sizeof optimizers[0]))
#define TRAIN_STEPS 3
#define LATER_STEPS 4

/* The op models trained with every optimizer: dense layers, an embedding,
 * batchnorm (frozen moving statistics), dropout. */
static const int trained_op_models[] = {0, 3, 11, 13, 14};

/* The interpreter's values of n into the slab, as f32 or int32. */
static void write_slab(Run *r, const Node *n) {
    gradcheck_write_node(r->it, r->l.model.graph, n, cg_plan(r->m)->offset, r->slab);
}

/* Returns the worst error over every param and slot after TRAIN_STEPS steps
 * (asserting it is at most 1). At every step the loss and the gradients must
 * agree as in `differential`: to the tolerance at the first step, to
 * LATER_STEPS times it later (imdb_birnn's recurrent bias, summed over 500
 * steps, reaches 1.5 of it at the third step: the step's rounding at
 * trained params, not the update's).
 *
 * SGD runs end to end: its update is Lipschitz in the gradient, so the
 * gradients' rounding differences stay at rounding size in the params.
 * RMSprop and Adam divide by the root of the mean square: a gradient at the
 * level of rounding noise (a bias ahead of batchnorm, whose exact gradient is
 * 0; an embedding row touched by terms that cancel) gets a step of about lr
 * whatever its sign, and the two runs part by O(lr). For them the
 * interpreter's gradients are written into the slab once compared, so that
 * both updates see the same gradients and the update itself is held to
 * 1e-5; the step is still checked at every step on the params the update
 * wrote.
 *
 * The step does not apply the graph's updates (moving statistics, stateful
 * carries): the host does, and here they are taken from the interpreter. */
static double train_differential(const char *text, const char *path, int64_t batch, const Optimizer *opt,
                                 const char *label) {
    Run r = {0};
    ck_assert_msg(load(&r.l, text, path, batch), "model does not elaborate: %s", label);
    Graph *g = r.l.model.graph;
    int64_t longest = 0;
    for (int i = 0; i < g->inputs.len; i++) {
        const Node *x = g->inputs.items[i];
        if (x->type.rank > 0) longest = longest > x->type.dims[0] ? longest : x->type.dims[0];
    }
    if (longest > LONG_SEQUENCE && batch > 1) {
        unload(&r.l);
        ck_assert(load(&r.l, text, path, 1));
        g = r.l.model.graph;
    }
    ck_assert_msg(g->loss != NULL, "%s has no loss", label);
    r.it = interp_new(g, PREC_F32);
    interp_init_params(r.it, 1);
    RtRng rng;
    rt_rng_seed(&rng, 1, 7);
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op != OP_STATEVAR) continue;
        double *v = interp_data(r.it, n);
        for (int64_t k = 0; k < interp_size(g, n); k++) v[k] = (double)(float)(rt_rng_uniform(&rng) - 0.5);
    }

    char *err = NULL;
    r.m = cg_lower(g, g->name, &err);
    ck_assert_msg(r.m != NULL, "%s: %s", label, err ? err : "?");
    ck_assert_msg(cg_add_update(r.m, opt, &err), "%s: %s", label, err ? err : "?");
    r.j = cg_jit(r.m, &err);
    ck_assert_msg(r.j != NULL, "%s: %s", label, err ? err : "?");
    CgStepFn step = cg_jit_entry(r.j);
    CgUpdateFn update = cg_jit_update(r.j);
    ck_assert_ptr_nonnull(update);
    const CgPlan *plan = cg_plan(r.m);
    r.slab = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
    ck_assert_ptr_nonnull(r.slab);
    memset(r.slab, 0, (size_t)plan->slab_bytes); /* the optimizer's slots start at zero */
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_PARAM || n->op == OP_STATEVAR) write_slab(&r, n);
    }

    const Node *const *params = (const Node *const *)g->params.items;
    const Node *const *grads = (const Node *const *)g->grads.items;
    ck_assert_int_eq(g->grads.len, g->params.len);
    int64_t where;
    double run_ms = 0;
    bool share_grads = opt->kind != OPT_SGD;
    for (int64_t t = 1; t <= TRAIN_STEPS; t++) {
        for (int i = 0; i < g->inputs.len; i++) gradcheck_fill_input(r.it, g, g->inputs.items[i], &rng);
        for (int i = 0; i < g->targets.len; i++) gradcheck_fill_input(r.it, g, g->targets.items[i], &rng);
        for (int i = 0; i < g->inputs.len; i++) write_slab(&r, g->inputs.items[i]);
        for (int i = 0; i < g->targets.len; i++) write_slab(&r, g->targets.items[i]);
        uint64_t dropout_seed = 2 + (uint64_t)t;
        interp_run(r.it, true, dropout_seed);
        double t0 = now_ms();
        step(r.slab, 1, dropout_seed, g->nodes.len);
        run_ms += now_ms() - t0;
        double e = node_error(&r, g->loss, 0, &where), scale = gradient_scale(&r);
        ck_assert_msg(e <= (t == 1 ? 1 : LATER_STEPS), "%s: loss at step %lld: %.9g vs %.9g", label, (long long)t, slab_f32(&r, g->loss)[0],
                      interp_data(r.it, g->loss)[0]);
        for (int i = 0; i < g->grads.len; i++) {
            if (!grads[i]) continue;
            e = node_error(&r, grads[i], scale, &where);
            ck_assert_msg(e <= (t == 1 ? 1 : LATER_STEPS), "%s: gradient of %s at step %lld [%lld]: %.9g vs %.9g (error %.3g of the tolerance)",
                          label, params[i]->name, (long long)t, (long long)where, slab_f32(&r, grads[i])[where],
                          interp_data(r.it, grads[i])[where], e);
            if (share_grads) write_slab(&r, grads[i]);
        }
        interp_optimizer_step(r.it, opt, params, grads, g->params.len, t);
        interp_apply_updates(r.it);
        t0 = now_ms();
        update(r.slab, (uint64_t)t, opt->lr);
        run_ms += now_ms() - t0;
        for (int i = 0; i < g->updates.len; i++) write_slab(&r, ((const Update *)g->updates.items[i])->var);
    }

    /* The absolute floor: 1e-6 of the largest param of the model (a bias
     * that starts at zero moves by rounding noise of the model's size). */
    double top = 0;
    for (int i = 0; i < g->params.len; i++) {
        const double *v = interp_data(r.it, params[i]);
        for (int64_t k = 0; k < interp_size(g, params[i]); k++)
            if (isfinite(v[k])) top = fmax(top, fabs(v[k]));
    }
    double slot_top[CG_OPT_SLOTS] = {0};
    for (int w = 0; w < CG_OPT_SLOTS; w++)
        for (int i = 0; i < g->params.len; i++) {
            if (plan->slot[w][i] < 0) continue;
            const double *v = interp_slot(r.it, params[i], w);
            for (int64_t k = 0; k < interp_size(g, params[i]); k++)
                if (isfinite(v[k])) slot_top[w] = fmax(slot_top[w], fabs(v[k]));
        }
    double worst = 0;
    const char *worst_name = "-";
    for (int i = 0; i < g->params.len; i++) {
        const Node *p = params[i];
        double e = node_error(&r, p, top, &where);
        ck_assert_msg(e <= 1, "%s: %s after %d steps [%lld]: %.9g vs %.9g (error %.3g of the tolerance)", label,
                      p->name, TRAIN_STEPS, (long long)where, slab_f32(&r, p)[where], interp_data(r.it, p)[where], e);
        if (e > worst) worst = e, worst_name = p->name;
        for (int w = 0; w < CG_OPT_SLOTS; w++) {
            if (plan->slot[w][i] < 0) continue;
            const float *mine = (const float *)(const void *)(r.slab + plan->slot[w][i]);
            e = tensor_error(mine, interp_slot(r.it, p, w), interp_size(g, p), slot_top[w], &where);
            ck_assert_msg(e <= 1, "%s: slot %d of %s [%lld]: %.9g vs %.9g", label, w, p->name, (long long)where,
                          mine[where], interp_slot(r.it, p, w)[where]);
            if (e > worst) worst = e, worst_name = p->name;
        }
    }
    CgTiming *tm = cg_timing(r.m);
    fprintf(stderr,
            "codegen train %-30s batch %lld: compile %7.1f ms  %d steps %8.2f ms  worst %.3f of tolerance (%s)\n",
            label, (long long)g->batch, tm->lower_ms + tm->passes_ms + tm->jit_ms, TRAIN_STEPS, run_ms, worst,
            worst_name);
    free(r.slab);
    cg_jit_free(r.j);
    cg_free(r.m);
    interp_free(r.it);
    unload(&r.l);
    return worst;
}

START_TEST(op_models_train) {
    int model = trained_op_models[_i / NOPT], o = _i % NOPT;
    char label[64];
    snprintf(label, sizeof label, "op model %d %s", model, optimizer_names[o]);
    train_differential(op_models[model], NULL, 2, &optimizers[o], label);
}
END_TEST

/* Each recurrent model with one optimizer, in turn: every rule meets scans. */
START_TEST(rnn_models_train) {
    int o = _i % NOPT;
    char label[64];
    snprintf(label, sizeof label, "rnn model %d %s", _i, optimizer_names[o]);
    train_differential(rnn_models[_i], NULL, 2, &optimizers[o], label);
}
END_TEST

/* Every example with a loss, with Adam at Keras' defaults: the examples'
 * gradients are compared at every step, and a larger rate walks the
 * smaller ones into regions where the step's own rounding grows. */
static const Optimizer keras_adam = {.kind = OPT_ADAM, .lr = 0.001, .beta_1 = 0.9, .beta_2 = 0.999, .epsilon = 1e-7};

START_TEST(examples_train) {
    if (strcmp(examples[_i], "imdb_stack") == 0) return; /* no loss: an inference benchmark */
    char path[4096], label[64];
    snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
    snprintf(label, sizeof label, "%s adam", examples[_i]);
    train_differential(NULL, path, 2, &keras_adam, label);
}
END_TEST

/* The update's symbol and signature; the slots the rule needs, and only those. */
START_TEST(update_entry_and_slots) {
    Loaded l;
    ck_assert(load(&l, op_models[13], NULL, 2));
    const Graph *g = l.model.graph;
    for (int o = 0; o < NOPT; o++) {
        char *err = NULL;
        CgModule *m = cg_lower(g, "upd", &err);
        ck_assert_msg(m != NULL, "%s", err ? err : "?");
        ck_assert_ptr_null(cg_update_signature(m));
        int64_t before = cg_plan(m)->slab_bytes;
        ck_assert_msg(cg_add_update(m, &optimizers[o], &err), "%s", err ? err : "?");
        const CgSignature *sig = cg_update_signature(m);
        ck_assert_ptr_nonnull(sig);
        ck_assert_str_eq(sig->name, "upd_update");
        ck_assert_int_eq(sig->nargs, 3);
        ck_assert_int_eq(sig->args[0], CG_PTR);
        ck_assert_int_eq(sig->args[1], CG_U64);
        ck_assert_int_eq(sig->args[2], CG_F64);
        ck_assert_str_eq(cg_signature(m)->name, "upd_step");
        const CgPlan *p = cg_plan(m);
        ck_assert_int_eq(p->nparams, g->params.len);
        int64_t end = before;
        int kept = 0;
        for (int w = 0; w < CG_OPT_SLOTS; w++) {
            bool used = optimizers[o].kind == OPT_ADAM ||
                        (w == 0 ? optimizers[o].momentum != 0 : optimizers[o].kind == OPT_RMSPROP);
            for (int i = 0; i < p->nparams; i++) {
                const Node *n = g->params.items[i];
                bool trained = g->grads.items[i] && n->param.trainable;
                if (!used || !trained) {
                    ck_assert_int_eq(p->slot[w][i], -1);
                    continue;
                }
                kept++;
                ck_assert_int_eq(p->slot[w][i] % CG_ALIGN, 0);
                ck_assert_int_ge(p->slot[w][i], end);
                end = p->slot[w][i] + 4 * interp_size(g, n);
                ck_assert_int_le(end, p->slab_bytes);
            }
        }
        if (o == 0) ck_assert_int_eq(kept, 0); /* plain SGD keeps nothing */
        ck_assert(o == 0 || kept > 0);
        /* once per module */
        ck_assert(!cg_add_update(m, &optimizers[o], &err));
        free(err);
        cg_free(m);
    }
    unload(&l);
}
END_TEST

/* ---- tests ----------------------------------------------------------------------------- */

START_TEST(op_models_agree) {
    char label[32];
    snprintf(label, sizeof label, "op model %d", _i);
    differential(op_models[_i], NULL, 2, true, label);
}
END_TEST

START_TEST(op_models_agree_batch_one) {
    char label[32];
    snprintf(label, sizeof label, "op model %d", _i);
    differential(op_models[_i], NULL, 1, true, label);
}
END_TEST

START_TEST(rnn_models_agree) {
    char label[32];
    snprintf(label, sizeof label, "rnn model %d", _i);
    differential(rnn_models[_i], NULL, 2, true, label);
}
END_TEST

START_TEST(examples_agree) {
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
    differential(NULL, path, 2, false, examples[_i]);
    differential(NULL, path, 2, true, examples[_i]);
}
END_TEST

/* Inference: dropout masks are ones, batchnorm uses the moving statistics. */
START_TEST(inference_mode) {
    const char *text = "model m { input x: f32[3, 4]  target y: f32[3, 1]\n"
                       "  h = dropout(batchnorm(dense(x, units: 6, activation: relu)), 0.5)\n"
                       "  g = lstm(h, units: 3, sequences: true, dropout: 0.3, recurrent_dropout: 0.3)\n"
                       "  p = dense(batchnorm(g, momentum: 0.9), units: 1, activation: sigmoid)\n"
                       "  loss binary_crossentropy(p, y)  metric accuracy(p, y) }";
    differential(text, NULL, 4, false, "inference");
    differential(text, NULL, 4, true, "inference (training)");
}
END_TEST

/* Batchnorm and the column sums of its gradient work on blocks of 32
 * features in vectors of 8: 45 features are a whole block and a tail of a
 * whole vector and 5 lanes of one. */
START_TEST(batchnorm_tail_block) {
    const char *text = "model m { input x: f32[2, 3]  target y: f32[2, 1]\n"
                       "  p = dense(batchnorm(dense(x, units: 45), momentum: 0.9), units: 1)\n"
                       "  loss mse(p, y) }";
    differential(text, NULL, 3, false, "batchnorm tail (inference)");
    differential(text, NULL, 3, true, "batchnorm tail (training)");
}
END_TEST

/* The runtime's mask is the interpreter's DROPMASK, draw for draw. */
START_TEST(dropout_mask_matches_interpreter) {
    Loaded l;
    ck_assert(load(&l, op_models[14], NULL, 3));
    Graph *g = l.model.graph;
    Interp *it = interp_new(g, PREC_F32);
    interp_init_params(it, 1);
    interp_run_prefix(it, g->nforward, true, 9);
    int found = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op != OP_DROPMASK) continue;
        int64_t size = interp_size(g, n);
        float *mask = malloc(sizeof(float) * (size_t)size);
        rt_dropout_mask_f32(mask, size, n->rate, 9, RT_DROPOUT_STREAM_BASE + (uint64_t)n->id);
        int zeros = 0;
        for (int64_t k = 0; k < size; k++) {
            ck_assert_msg((double)mask[k] == interp_data(it, n)[k], "element %lld", (long long)k);
            zeros += mask[k] == 0;
        }
        ck_assert(zeros > 0 && zeros < size);
        free(mask);
        found++;
    }
    ck_assert_int_gt(found, 0);
    interp_free(it);
    unload(&l);
}
END_TEST

/* The pointers to a step's slice of a sequence a scan leaves in the slab
 * (CgGraphPlan.indirect) point into that slab: zeroed, two slabs compare. */
static void clear_step_pointers(const CgPlan *p, uint8_t *slab) {
    for (int g = 0; g < p->ngraphs; g++)
        for (int i = 0; i < p->graphs[g].nnodes; i++)
            if (p->graphs[g].indirect[i]) memset(slab + p->graphs[g].offset[i], 0, 8);
}

/* The interpreter with params from their initializers (seed 1) and inputs
 * and targets filled (seed 1, stream 7): what two slabs start from. */
static Interp *filled_interp(const Graph *g) {
    Interp *it = interp_new(g, PREC_F32);
    interp_init_params(it, 1);
    RtRng rng;
    rt_rng_seed(&rng, 1, 7);
    for (int i = 0; i < g->inputs.len; i++) gradcheck_fill_input(it, g, g->inputs.items[i], &rng);
    for (int i = 0; i < g->targets.len; i++) gradcheck_fill_input(it, g, g->targets.items[i], &rng);
    return it;
}

/* A module compiled on three threads is three objects whose kernels call
 * each other across them, and computes the bits one object computes: a
 * training step from the same slab leaves the same slab. */
START_TEST(split_objects_same_bits) {
    Loaded l;
    ck_assert(load(&l, rnn_models[1], NULL, 4));
    Graph *g = l.model.graph;
    char *err = NULL;
    Interp *it = filled_interp(g);
    uint8_t *slab[2];
    CgModule *m[2];
    CgJit *j[2];
    int threads[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        m[k] = cg_lower(g, g->name, &err);
        ck_assert_msg(m[k] != NULL, "%s", err ? err : "?");
        rt_set_threads(threads[k]); /* the JIT compiles on as many threads as kernels run on */
        j[k] = cg_jit(m[k], &err);
        ck_assert_msg(j[k] != NULL, "%s", err ? err : "?");
        ck_assert_int_eq(cg_jit_objects(j[k]), threads[k]);
        const CgPlan *plan = cg_plan(m[k]);
        slab[k] = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
        ck_assert_ptr_nonnull(slab[k]);
        memset(slab[k], 0, (size_t)plan->slab_bytes);
        gradcheck_write_slab(it, g, plan->offset, slab[k]);
        rt_set_threads(1);
        cg_jit_entry(j[k])(slab[k], 1, 5, g->nodes.len);
    }
    rt_set_threads(0);
    ck_assert_int_eq(cg_plan(m[0])->slab_bytes, cg_plan(m[1])->slab_bytes);
    for (int k = 0; k < 2; k++) clear_step_pointers(cg_plan(m[k]), slab[k]);
    ck_assert(memcmp(slab[0], slab[1], (size_t)cg_plan(m[0])->slab_bytes) == 0);
    for (int k = 0; k < 2; k++) {
        cg_jit_free(j[k]);
        cg_free(m[k]);
        free(slab[k]);
    }
    interp_free(it);
    unload(&l);
}
END_TEST

/* The quick tier and the optimized tier of one module (the quick one first:
 * compiling it must leave the module as it was) compute the same bits: two
 * training steps and Adam's updates from the same slab leave the same slab.
 * `seqc run` changes tiers between two calls on that promise. Every example,
 * so that every kind of kernel runs at both tiers. */
START_TEST(tiers_same_bits) {
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
    Loaded l;
    ck_assert(load(&l, NULL, path, 2));
    Graph *g = l.model.graph;
    const Node *x = g->inputs.len ? g->inputs.items[0] : NULL;
    if (x && x->type.rank > 0 && x->type.dims[0] > LONG_SEQUENCE) {
        unload(&l);
        ck_assert(load(&l, NULL, path, 1));
        g = l.model.graph;
    }
    char *err = NULL;
    CgModule *m = cg_lower(g, g->name, &err);
    ck_assert_msg(m != NULL, "%s: %s", examples[_i], err ? err : "?");
    ck_assert_msg(!g->loss || cg_add_update(m, &keras_adam, &err), "%s: %s", examples[_i], err ? err : "?");
    CgJit *j[2];
    j[0] = cg_jit_quick(m, rt_threads(), &err);
    ck_assert_msg(j[0] != NULL, "%s: %s", examples[_i], err ? err : "?");
    j[1] = cg_jit(m, &err);
    ck_assert_msg(j[1] != NULL, "%s: %s", examples[_i], err ? err : "?");
    const CgPlan *plan = cg_plan(m);
    Interp *it = filled_interp(g);
    uint8_t *slab[2];
    for (int k = 0; k < 2; k++) {
        slab[k] = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
        ck_assert_ptr_nonnull(slab[k]);
        memset(slab[k], 0, (size_t)plan->slab_bytes);
        gradcheck_write_slab(it, g, plan->offset, slab[k]);
        for (uint64_t t = 1; t <= 2; t++) {
            cg_jit_entry(j[k])(slab[k], g->loss != NULL, 2 + t, g->nodes.len);
            if (g->loss) cg_jit_update(j[k])(slab[k], t, keras_adam.lr);
        }
        clear_step_pointers(plan, slab[k]);
    }
    ck_assert_msg(memcmp(slab[0], slab[1], (size_t)plan->slab_bytes) == 0, "%s: the tiers differ", examples[_i]);
    for (int k = 0; k < 2; k++) {
        cg_jit_free(j[k]);
        free(slab[k]);
    }
    interp_free(it);
    cg_free(m);
    unload(&l);
}
END_TEST

/* The plan: every node of the model and of each body has an aligned buffer
 * inside the slab, and no two buffers of the same graph overlap; a capture
 * of the captured value's type reads that value in place, and a state input
 * the scan's carried state. */
static char *ir_text(const CgModule *m) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    cg_dump_ir(m, f);
    fclose(f);
    return text;
}

/* `seqc run` plans the inference module and lowers it later, on the tiers'
 * thread (build_model's infer_later): planned, then lowered, it is the
 * module cg_lower makes, with the same plan, symbols and IR. */
START_TEST(planned_then_lowered) {
    Loaded l;
    ck_assert(load(&l, rnn_models[5], NULL, 3));
    const Graph *g = l.model.graph;
    char *err = NULL;
    CgModule *now = cg_lower(g, "m", &err);
    ck_assert_msg(now != NULL, "%s", err ? err : "?");
    CgModule *later = cg_plan_module(g, "m", &err);
    ck_assert_msg(later != NULL, "%s", err ? err : "?");
    const CgPlan *a = cg_plan(now), *b = cg_plan(later);
    ck_assert_int_eq(a->slab_bytes, b->slab_bytes);
    ck_assert_int_eq(a->ngraphs, b->ngraphs);
    for (int gi = 0; gi < a->ngraphs; gi++) {
        ck_assert_int_eq(a->graphs[gi].nnodes, b->graphs[gi].nnodes);
        ck_assert(memcmp(a->graphs[gi].offset, b->graphs[gi].offset, sizeof(int64_t) * (size_t)a->graphs[gi].nnodes) == 0);
    }
    ck_assert_str_eq(cg_signature(now)->name, cg_signature(later)->name);
    const CgExternSymbol *ea, *eb;
    ck_assert_int_eq(cg_extern_symbols(now, &ea), cg_extern_symbols(later, &eb));
    for (int k = 0; k < 2; k++) /* the second call finds it lowered */
        ck_assert_msg(cg_lower_module(later, &err), "%s", err ? err : "?");
    char *ia = ir_text(now), *ib = ir_text(later);
    ck_assert_str_eq(ia, ib);
    free(ia);
    free(ib);
    cg_free(now);
    cg_free(later);
    unload(&l);
}
END_TEST

/* The object cache's key is the module's as it is when asked, though the
 * bitcode it is taken from is kept for the next question (and for the
 * parts of a split compile): a module asked for its key, then given its
 * update, is compiled (in parts) and cached with the update; a second
 * module, given it before any question, finds that entry. */
START_TEST(cache_key_follows_the_module) {
    char dir[] = "/tmp/seqc-cache-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *was = getenv("SEQC_CACHE");
    char *old = was ? strdup(was) : NULL;
    setenv("SEQC_CACHE", dir, 1);
    rt_set_threads(3);
    Loaded l;
    ck_assert(load(&l, rnn_models[1], NULL, 4));
    const Graph *g = l.model.graph;
    ck_assert_ptr_nonnull(g->loss);
    char *err = NULL;
    CgModule *m[2];
    CgJit *j[2];
    for (int k = 0; k < 2; k++) {
        m[k] = cg_lower(g, g->name, &err);
        ck_assert_msg(m[k] != NULL, "%s", err ? err : "?");
        if (k == 0) { /* a miss, whose bitcode the module keeps */
            ck_assert_ptr_null(cg_jit_cached(m[k], &err));
            ck_assert_msg(!err, "%s", err);
        }
        ck_assert_msg(cg_add_update(m[k], &keras_adam, &err), "%s", err ? err : "?");
        j[k] = k == 0 ? cg_jit(m[k], &err) : cg_jit_cached(m[k], &err);
        ck_assert_msg(j[k] != NULL, "module %d: %s", k, err ? err : "not in the cache");
        ck_assert_ptr_nonnull(cg_jit_update(j[k]));
    }
    ck_assert_int_gt(cg_jit_objects(j[0]), 1);
    ck_assert(!cg_timing(m[0])->cached && cg_timing(m[1])->cached);
    for (int k = 0; k < 2; k++) {
        cg_jit_free(j[k]);
        cg_free(m[k]);
    }
    unload(&l);
    rt_set_threads(0);
    if (old) setenv("SEQC_CACHE", old, 1);
    else unsetenv("SEQC_CACHE");
    free(old);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[sizeof dir + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remove(path);
    }
    closedir(d);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(memory_plan_is_sound) {
    Loaded l;
    ck_assert(load(&l, rnn_models[5], NULL, 3));
    char *err = NULL;
    CgModule *m = cg_lower(l.model.graph, "plan", &err);
    ck_assert_msg(m != NULL, "%s", err ? err : "?");
    const CgPlan *p = cg_plan(m);
    ck_assert_int_gt(p->ngraphs, 1);
    int slices = 0, in_registers = 0;
    for (int gi = 0; gi < p->ngraphs; gi++) {
        const CgGraphPlan *gp = &p->graphs[gi];
        ck_assert_ptr_eq(cg_plan_graph(p, gp->g), gp);
        const Node *scan = NULL;
        for (int k = 0; gp->g->parent && k < gp->g->parent->nodes.len; k++) {
            const Node *x = gp->g->parent->nodes.items[k];
            if (x->op == OP_SCAN && x->scan.body == gp->g) scan = x;
        }
        ck_assert(gi == 0 || scan != NULL);
        int64_t end = 0;
        int aliased = 0;
        for (int i = 0; i < gp->nnodes; i++) {
            const Node *n = gp->g->nodes.items[i];
            ck_assert_int_eq(cg_plan_offset(p, n), gp->offset[i]);
            ck_assert_int_eq(gp->offset[i] % CG_ALIGN, 0);
            if (n->op == OP_CAPTURE) {
                const Node *from = scan->in[scan->scan.nseq + scan->scan.nstate + n->index];
                if (type_equal(&from->type, &n->type)) {
                    ck_assert_int_eq(gp->offset[i], cg_plan_offset(p, from));
                    aliased++;
                    continue;
                }
            }
            if (n->op == OP_STATE_IN) {
                /* Read in place from the scan's carried state, in its working storage. */
                int64_t at = cg_plan_graph(p, scan->graph)->extra[scan->id];
                for (int k = 0; k < n->index; k++)
                    at += (4 * interp_size(l.model.graph, scan->in[scan->scan.nseq + k]) + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN;
                if (type_equal(&scan->in[scan->scan.nseq + n->index]->type, &n->type)) {
                    ck_assert_int_eq(gp->offset[i], at);
                    aliased++;
                    continue;
                }
            }
            ck_assert_int_ge(gp->offset[i], end);
            /* A step's slice of a sequence: a pointer the scan sets. A scan
             * that leaves only its states: nothing. A fused kernel's member
             * that nothing outside it reads (a product, a slice or an
             * elementwise node: an LSTM's gates): nothing either. */
            bool states_only = n->op == OP_SCAN && n->scan.nout == 0;
            int64_t want = gp->indirect[i] ? 8 : states_only ? 0 : 4 * interp_size(l.model.graph, n);
            if (gp->bytes[i] == 0 && want > 0 && n->op != OP_STEP_IN && n->op != OP_STATE_IN && n->op != OP_CAPTURE && n->op != OP_SCAN) {
                in_registers++;
                want = 0;
            }
            ck_assert_int_eq(gp->bytes[i], want);
            end = gp->offset[i] + gp->bytes[i];
            ck_assert_int_le(end, p->slab_bytes);
        }
        if (gi > 0) ck_assert_int_gt(aliased, 0);
        for (int i = 0; i < gp->nnodes; i++) slices += gp->indirect[i];
    }
    /* The backward steps read the forward's pre-activations where the
     * forward steps wrote them: a pointer each in the bodies, no copy. */
    ck_assert_int_gt(slices, 0);
    ck_assert_int_gt(in_registers, 0);
    const CgSignature *sig = cg_signature(m);
    ck_assert_str_eq(sig->name, "plan_step");
    ck_assert_int_eq(sig->nargs, 4);
    ck_assert_int_eq(sig->args[0], CG_PTR);
    ck_assert_int_eq(sig->args[2], CG_U64);
    /* The IR prints, and the module can be dropped without a JIT. */
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(devnull);
    cg_dump_ir(m, devnull);
    fclose(devnull);
    cg_free(m);
    unload(&l);
}
END_TEST

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s was not written", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = '\0';
    fclose(f);
    return b;
}

/* The step written as LLVM IR, assembly and an ELF object defines the entry point. */
START_TEST(emit_files) {
    Loaded l;
    ck_assert(load(&l, op_models[0], NULL, 2));
    char *err = NULL;
    CgModule *m = cg_lower(l.model.graph, "emitted", &err);
    ck_assert_msg(m && cg_optimize(m, &err), "%s", err ? err : "");
    char dir[] = "/tmp/seqc-emit-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[3][64];
    static const char *const ext[] = {"ll", "s", "o"};
    for (int k = 0; k < 3; k++) {
        snprintf(path[k], sizeof path[k], "%s/step.%s", dir, ext[k]);
        ck_assert_msg(cg_emit(m, (CgEmitKind)k, path[k], &err), "%s", err ? err : "");
    }
    size_t n;
    char *ll = slurp(path[0], &n);
    ck_assert_ptr_nonnull(strstr(ll, "define void @emitted_step(ptr"));
    char *as = slurp(path[1], &n);
    ck_assert_ptr_nonnull(strstr(as, "emitted_step:"));
    char *obj = slurp(path[2], &n);
    ck_assert(n > 64 && memcmp(obj, "\x7f" "ELF", 4) == 0);
    ck_assert_ptr_nonnull(memmem(obj, n, "emitted_step", strlen("emitted_step")));
    /* an unwritable path is an error naming it */
    ck_assert(!cg_emit(m, CG_EMIT_OBJ, "/nonexistent-dir/x.o", &err));
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/x.o"));
    free(err);
    for (int k = 0; k < 3; k++) remove(path[k]);
    rmdir(dir);
    free(ll);
    free(as);
    free(obj);
    cg_free(m);
    unload(&l);
}
END_TEST

int main(void) {
    Suite *s = suite_create("codegen");
    TCase *ops = tcase_create("ops");
    tcase_set_timeout(ops, 300);
    int nops = (int)(sizeof op_models / sizeof op_models[0]);
    tcase_add_loop_test(ops, op_models_agree, 0, nops);
    tcase_add_loop_test(ops, op_models_agree_batch_one, 0, nops);
    tcase_add_test(ops, inference_mode);
    tcase_add_test(ops, batchnorm_tail_block);
    tcase_add_test(ops, dropout_mask_matches_interpreter);
    tcase_add_test(ops, memory_plan_is_sound);
    tcase_add_test(ops, planned_then_lowered);
    tcase_add_test(ops, split_objects_same_bits);
    tcase_add_test(ops, emit_files);
    suite_add_tcase(s, ops);
    TCase *rnn = tcase_create("recurrent");
    tcase_set_timeout(rnn, 300);
    tcase_add_loop_test(rnn, rnn_models_agree, 0, (int)(sizeof rnn_models / sizeof rnn_models[0]));
    suite_add_tcase(s, rnn);
    TCase *ex = tcase_create("examples");
    tcase_set_timeout(ex, 600);
    tcase_add_loop_test(ex, examples_agree, 0, examples_to_run());
    suite_add_tcase(s, ex);
    TCase *tr = tcase_create("training");
    tcase_set_timeout(tr, 600);
    tcase_add_test(tr, update_entry_and_slots);
    tcase_add_loop_test(tr, op_models_train, 0, (int)(sizeof trained_op_models / sizeof trained_op_models[0]) * NOPT);
    tcase_add_loop_test(tr, rnn_models_train, 0, (int)(sizeof rnn_models / sizeof rnn_models[0]));
    tcase_add_loop_test(tr, examples_train, 0, examples_to_run());
    suite_add_tcase(s, tr);
    TCase *tiers = tcase_create("tiers");
    tcase_set_timeout(tiers, 600);
    tcase_add_loop_test(tiers, tiers_same_bits, 0, examples_to_run());
    tcase_add_test(tiers, cache_key_follows_the_module);
    suite_add_tcase(s, tiers);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
