/* Gradient checks: reverse mode against finite differences (both by the
 * reference interpreter, in f64) for every op, every standard cell, a cell
 * written by hand, bidirectional and stacked layers, every example model; and
 * truncated backpropagation against graphs that hold the earlier state fixed. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "elab.h"
#include "gradcheck.h"
#include "interp.h"
#include "models.h"
#include "program.h"
#include "schedule.h"

static const char *root(void) {
    const char *r = getenv("SEQC_SOURCE_ROOT");
    return r ? r : ".";
}

typedef struct Loaded {
    Program *prog;
    Arena arena;
    Diags diags;
    Model model;
} Loaded;

static bool load_as(Loaded *l, const char *text, const char *path, int64_t batch, bool full_backprop) {
    diag_init(&l->diags);
    arena_init(&l->arena);
    l->prog = text ? program_load_string("test.seq", text, &l->diags) : program_load(path, &l->diags);
    ElabOptions o = {.batch = batch};
    GradOptions go;
    bool ok = l->prog && l->diags.errors == 0 && elab_model(l->prog, NULL, &o, &l->arena, &l->model, &l->diags) &&
              schedule_tbptt(l->model.graph, &l->model.recipe, &go, &l->diags);
    /* Finite differences see every step: check the untruncated gradient (the
     * truncated one is checked against a graph holding the state fixed). */
    if (full_backprop) go.window = 0;
    else ok = ok && schedule_windows(l->model.graph, &go, &l->diags);
    ok = ok && ad_backward(l->model.graph, &go, &l->diags);
    if (!ok) {
        char *s = diag_render(&l->diags);
        fprintf(stderr, "%s", s);
        free(s);
    }
    return ok;
}

static bool load(Loaded *l, const char *text, const char *path, int64_t batch) {
    return load_as(l, text, path, batch, false);
}

static void unload(Loaded *l) {
    arena_free(&l->arena);
    diag_free(&l->diags);
    program_free(l->prog);
}

/* Checks `text` (or the file at `path`) and returns the worst relative error:
 * tensors of up to `full_below` entries entry by entry, larger ones at
 * `samples` entries. */
static bool generated;  /* the analytic side from the generated code (gradcheck --generated) */

static double check_model_full(const char *text, const char *path, int64_t batch, int64_t samples, int64_t full_below,
                               void (*adjust)(Interp *, const Graph *, void *)) {
    Loaded l;
    ck_assert_msg(load_as(&l, text, path, batch, true), "model does not elaborate:\n%s", text ? text : path);
    GradcheckOptions o;
    gradcheck_defaults(&o);
    o.generated = generated;
    o.samples = samples;
    o.full_below = full_below;
    o.adjust = adjust;
    GradcheckReport r;
    gradcheck_run(l.model.graph, l.model.graph->nforward, &o, &r);
    if (!r.ok) gradcheck_print(l.model.graph, &o, &r, stderr);
    ck_assert_msg(!r.error, "%s", r.error);
    ck_assert_msg(r.nrows > 0, "no gradient was checked");
    ck_assert_msg(isfinite(r.loss), "the loss is not finite");
    double worst = r.worst_rel;
    ck_assert_msg(r.ok, "gradient check failed (worst relative error %g):\n%s", worst, text ? text : path);
    unload(&l);
    return worst;
}

static double check_model(const char *text, const char *path, int64_t batch, int64_t samples,
                          void (*adjust)(Interp *, const Graph *, void *)) {
    return check_model_full(text, path, batch, samples, 64, adjust);
}

#define CHECK(src) check_model(src, NULL, 2, 16, NULL)

/* ---- ops -------------------------------------------------------------------- */

START_TEST(op_gradients) { CHECK(op_models[_i]); }
END_TEST

START_TEST(op_gradients_batch_one) { check_model(op_models[_i], NULL, 1, 16, NULL); }
END_TEST

/* ---- recurrent layers ---------------------------------------------------------- */

START_TEST(rnn_gradients) { CHECK(rnn_models[_i]); }
END_TEST

/* Every example of the first ids fully masked: the states stay at zero. */
static void mask_everything(Interp *it, const Graph *g, void *ctx) {
    (void)ctx;
    const Node *w = g->inputs.items[0];
    double *v = interp_data(it, w);
    int64_t per = interp_size(g, w) / g->batch;
    for (int64_t k = 0; k < per; k++) v[k] = 0; /* example 0 is all padding */
}

START_TEST(all_masked_sequence) {
    check_model("model m { input w: i32[5]  target y: f32[1]\n"
                "  e = embedding(w, vocab: 6, dim: 2, mask_zero: true)\n"
                "  h = lstm(e, units: 3, sequences: true)  g = global_max_pool(h)  k = global_avg_pool(h)\n"
                "  p = dense(concat(g, k, last(h)), units: 1, activation: sigmoid)\n"
                "  loss binary_crossentropy(p, y) }",
                NULL, 3, 16, mask_everything);
}
END_TEST

/* ---- every example ------------------------------------------------------------ */

#define examples example_names

START_TEST(example_gradients) {
    if (strcmp(examples[_i], "imdb_stack") == 0) return; /* no loss: nothing to differentiate */
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
    /* One example, few entries per tensor: the long IMDB sequences make each
     * interpreter run costly, and every op is checked in full above. */
    check_model_full(NULL, path, 1, 1, 4, NULL);
}
END_TEST

/* The same checks with the reverse-mode gradient of the generated code: the
 * rules as lowered, not only as interpreted. */
START_TEST(op_gradients_generated) {
    generated = true;
    CHECK(op_models[_i]);
    generated = false;
}
END_TEST

START_TEST(rnn_gradients_generated) {
    generated = true;
    CHECK(rnn_models[_i]);
    generated = false;
}
END_TEST

START_TEST(example_gradients_generated) {
    generated = true;
    if (strcmp(examples[_i], "imdb_stack") != 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/examples/%s.seq", root(), examples[_i]);
        check_model_full(NULL, path, 1, 1, 4, NULL);
    }
    generated = false;
}
END_TEST

/* ---- truncated backpropagation --------------------------------------------------- */

static void copy_params(Interp *to, const Graph *gt, Interp *from, const Graph *gf) {
    ck_assert_int_eq(gt->params.len, gf->params.len);
    for (int i = 0; i < gt->params.len; i++) {
        const Node *a = gt->params.items[i], *b = gf->params.items[i];
        ck_assert_str_eq(a->name, b->name);
        memcpy(interp_data(to, a), interp_data(from, b), sizeof(double) * (size_t)interp_size(gt, a));
    }
}

/* `bptt 4` on 8 steps equals a stateful model reading the same 8 steps as two
 * windows of 4: the state after the first window enters the second as a
 * constant, and the gradient comes from the second window alone. */
START_TEST(bptt_window_equals_state_fed_as_constant) {
    Loaded whole, windows;
    ck_assert(load(&whole,
                   "model m { input x: f32[8, 2]  target y: f32[1]\n"
                   "  h = lstm(x, units: 3)  p = dense(h, units: 1, activation: sigmoid)\n"
                   "  loss binary_crossentropy(p, y) }\n"
                   "train { bptt 4 }",
                   NULL, 2));
    ck_assert(load(&windows,
                   "model m { input x: f32[4, 2]  target y: f32[1]\n"
                   "  h = lstm(x, units: 3, stateful: true)  p = dense(h, units: 1, activation: sigmoid)\n"
                   "  loss binary_crossentropy(p, y) }",
                   NULL, 2));
    Graph *gw = whole.model.graph, *gs = windows.model.graph;
    Interp *a = interp_new(gw, PREC_F64), *b = interp_new(gs, PREC_F64);
    interp_init_params(a, 3);
    copy_params(b, gs, a, gw);
    interp_zero_state(b);
    const Node *xw = gw->inputs.items[0], *yw = gw->targets.items[0];
    const Node *xs = gs->inputs.items[0], *ys = gs->targets.items[0];
    double *x = interp_data(a, xw);
    for (int64_t i = 0; i < interp_size(gw, xw); i++) x[i] = sin(0.7 * (double)i + 0.3);
    interp_data(a, yw)[0] = 1;
    interp_data(a, yw)[1] = 0;
    memcpy(interp_data(b, ys), interp_data(a, yw), sizeof(double) * 2);
    interp_run(a, true, 1);
    for (int half = 0; half < 2; half++) {
        double *xb = interp_data(b, xs);
        for (int ex = 0; ex < 2; ex++)
            memcpy(xb + ex * 8, x + ex * 16 + half * 8, sizeof(double) * 8);
        interp_run(b, true, 1);
        if (half == 0) interp_apply_updates(b);
    }
    ck_assert_double_eq_tol(interp_data(a, gw->loss)[0], interp_data(b, gs->loss)[0], 1e-12);
    for (int i = 0; i < gw->params.len; i++) {
        const Node *da = gw->grads.items[i], *db = gs->grads.items[i];
        ck_assert_ptr_nonnull(da);
        ck_assert_ptr_nonnull(db);
        const double *va = interp_data(a, da), *vb = interp_data(b, db);
        for (int64_t k = 0; k < interp_size(gw, da); k++)
            ck_assert_msg(fabs(va[k] - vb[k]) <= 1e-12 * fmax(1, fabs(va[k])), "%s[%lld]: %.17g vs %.17g",
                          ((const Node *)gw->params.items[i])->name, (long long)k, va[k], vb[k]);
    }
    /* Without truncation the gradient reaches the first window and differs:
     * the comparison above could fail. */
    Loaded full;
    ck_assert(load_as(&full,
                      "model m { input x: f32[8, 2]  target y: f32[1]\n"
                      "  h = lstm(x, units: 3)  p = dense(h, units: 1, activation: sigmoid)\n"
                      "  loss binary_crossentropy(p, y) }\n"
                      "train { bptt 4 }",
                      NULL, 2, true));
    Graph *gf = full.model.graph;
    Interp *c = interp_new(gf, PREC_F64);
    copy_params(c, gf, a, gw);
    memcpy(interp_data(c, gf->inputs.items[0]), x, sizeof(double) * (size_t)interp_size(gw, xw));
    memcpy(interp_data(c, gf->targets.items[0]), interp_data(a, yw), sizeof(double) * 2);
    interp_run(c, true, 1);
    double differs = 0;
    for (int i = 0; i < gf->params.len; i++) {
        const Node *df = gf->grads.items[i], *da = gw->grads.items[i];
        for (int64_t k = 0; k < interp_size(gf, df); k++)
            differs = fmax(differs, fabs(interp_data(c, df)[k] - interp_data(a, da)[k]));
    }
    ck_assert_msg(differs > 1e-6, "the truncated gradient equals the full one (%g)", differs);
    interp_free(c);
    unload(&full);
    interp_free(a);
    interp_free(b);
    unload(&whole);
    unload(&windows);
}
END_TEST

/* TBPTT(k1 = 2, k2 = 6) on a stream: the state carried to the next window is
 * the one after 2 steps, which a model reading just those 2 steps computes. */
START_TEST(tbptt_carries_state_after_k1_steps) {
    Loaded w, two;
    ck_assert(load(&w,
                   "model m { input x: f32[6, 1]  target y: f32[6, 1]\n"
                   "  h = gru(x, units: 2, sequences: true, stateful: true)  p = dense(h, units: 1)\n"
                   "  loss mse(p, y) }\n"
                   "train { bptt(every: 2, window: 6) }",
                   NULL, 1));
    ck_assert(load(&two,
                   "model m { input x: f32[2, 1]  target y: f32[2, 1]\n"
                   "  h = gru(x, units: 2, sequences: true, stateful: true)  p = dense(h, units: 1)\n"
                   "  loss mse(p, y) }",
                   NULL, 1));
    Graph *g6 = w.model.graph, *g2 = two.model.graph;
    Interp *a = interp_new(g6, PREC_F64), *b = interp_new(g2, PREC_F64);
    interp_init_params(a, 5);
    copy_params(b, g2, a, g6);
    interp_zero_state(a);
    interp_zero_state(b);
    double *x6 = interp_data(a, g6->inputs.items[0]), *x2 = interp_data(b, g2->inputs.items[0]);
    for (int i = 0; i < 6; i++) x6[i] = 0.3 * i - 0.8;
    x2[0] = x6[0];
    x2[1] = x6[1];
    interp_run(a, true, 1);
    interp_apply_updates(a);
    interp_run(b, true, 1);
    interp_apply_updates(b);
    ck_assert_int_eq(g6->updates.len, 1);
    const Update *ua = g6->updates.items[0], *ub = g2->updates.items[0];
    for (int k = 0; k < 2; k++)
        ck_assert_double_eq_tol(interp_data(a, ua->var)[k], interp_data(b, ub->var)[k], 1e-14);
    /* and the loss counts the last 2 steps of the 6 */
    ck_assert_int_eq(g6->loss->in[0]->type.dims[0], 2);
    interp_free(a);
    interp_free(b);
    unload(&w);
    unload(&two);
}
END_TEST

/* The sigmoids and tanhs the backward step of model text's first recurrent
 * layer computes: those its outputs reach, the forward step's clones it
 * leaves unread not counted. */
static int backward_activations(const char *text) {
    Loaded l;
    ck_assert(load(&l, text, NULL, 2));
    const Graph *body = NULL;
    for (int i = 0; i < l.model.graph->nodes.len && !body; i++) {
        const Node *n = l.model.graph->nodes.items[i];
        if (n->op == OP_SCAN && n->scan.reverse) body = n->scan.body;
    }
    ck_assert_ptr_nonnull(body);
    bool *live = calloc((size_t)body->nodes.len + 1, sizeof *live);
    ck_assert_ptr_nonnull(live);
    for (int i = 0; i < body->outputs.len; i++) live[((Node *)body->outputs.items[i])->id] = true;
    int count = 0;
    for (int i = body->nodes.len - 1; i >= 0; i--) {
        const Node *x = body->nodes.items[i];
        if (!live[i]) continue;
        count += x->op == OP_SIGMOID || x->op == OP_TANH;
        for (int k = 0; k < x->nin; k++) live[x->in[k]->id] = true;
    }
    free(live);
    unload(&l);
    return count;
}

/* An LSTM's backward step reads the gates' activations its forward step
 * kept and computes only tanh(c) again; a SimpleRNN's, its kept output and
 * nothing; a GRU's, its kept gates z and r and the product's part r * hh
 * reads, and computes only the candidate's tanh again. */
START_TEST(backward_reads_kept_activations) {
    ck_assert_int_eq(backward_activations(rnn_models[1]), 1);
    ck_assert_int_eq(backward_activations(rnn_models[0]), 0);
    ck_assert_int_eq(backward_activations(rnn_models[2]), 1);
}
END_TEST

/* ---- bad input ----------------------------------------------------------------- */

static char *backward_error(const char *text) {
    Diags d;
    diag_init(&d);
    Program *p = program_load_string("t.seq", text, &d);
    Arena arena;
    arena_init(&arena);
    ElabOptions o = {0};
    Model m;
    GradOptions go;
    bool ok = elab_model(p, NULL, &o, &arena, &m, &d) && schedule_tbptt(m.graph, &m.recipe, &go, &d) &&
              ad_backward(m.graph, &go, &d);
    ck_assert(!ok);
    char *s = diag_render(&d);
    arena_free(&arena);
    diag_free(&d);
    program_free(p);
    return s;
}

START_TEST(nothing_to_differentiate) {
    char *s = backward_error("model m { input x: f32[3]  target y: f32[3]\n  loss mse(x, y) }");
    ck_assert_msg(strstr(s, "the loss of model 'm' does not depend on any trainable param") != NULL, "%s", s);
    free(s);
    s = backward_error("model m { input x: f32[3]  h = dense(x, units: 2) }");
    ck_assert_msg(strstr(s, "model 'm' has no loss to differentiate") != NULL, "%s", s);
    free(s);
    s = backward_error("model m { input x: f32[3]  target y: f32[1]\n"
                       "  p = dense(x, units: 1, activation: sigmoid)\n  loss accuracy(p, y) }");
    ck_assert_msg(strstr(s, "accuracy") != NULL, "%s", s);
    free(s);
}
END_TEST

START_TEST(integer_target_into_float_loss) {
    char *s = backward_error("model m { input x: f32[3]  target y: i32[1]\n"
                             "  p = dense(x, units: 1, activation: sigmoid)\n  loss binary_crossentropy(p, y) }");
    ck_assert_msg(strstr(s, "binary_crossentropy takes f32 targets, but the target is i32[1]") != NULL, "%s", s);
    free(s);
}
END_TEST

int main(void) {
    Suite *s = suite_create("grad");
    TCase *ops = tcase_create("ops");
    tcase_set_timeout(ops, 120);
    int nops = (int)(sizeof op_models / sizeof op_models[0]);
    tcase_add_loop_test(ops, op_gradients, 0, nops);
    tcase_add_loop_test(ops, op_gradients_batch_one, 0, nops);
    suite_add_tcase(s, ops);
    TCase *rnn = tcase_create("recurrent");
    tcase_set_timeout(rnn, 120);
    tcase_add_loop_test(rnn, rnn_gradients, 0, (int)(sizeof rnn_models / sizeof rnn_models[0]));
    tcase_add_test(rnn, all_masked_sequence);
    tcase_add_test(rnn, bptt_window_equals_state_fed_as_constant);
    tcase_add_test(rnn, tbptt_carries_state_after_k1_steps);
    tcase_add_test(rnn, backward_reads_kept_activations);
    suite_add_tcase(s, rnn);
    TCase *ex = tcase_create("examples");
    tcase_set_timeout(ex, 600);
    tcase_add_loop_test(ex, example_gradients, 0, examples_to_run());
    suite_add_tcase(s, ex);
    TCase *gen = tcase_create("generated code");
    tcase_set_timeout(gen, 600);
    tcase_add_loop_test(gen, op_gradients_generated, 0, nops);
    tcase_add_loop_test(gen, rnn_gradients_generated, 0, (int)(sizeof rnn_models / sizeof rnn_models[0]));
    /* The nine quick examples hold every layer kind; the rest repeat them at
     * sizes whose finite differences cost minutes. */
    tcase_add_loop_test(gen, example_gradients_generated, 0, NQUICK_EXAMPLES);
    suite_add_tcase(s, gen);
    TCase *bad = tcase_create("bad input");
    tcase_add_test(bad, nothing_to_differentiate);
    tcase_add_test(bad, integer_target_into_float_loss);
    suite_add_tcase(s, bad);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
