/* The reference interpreter against numbers worked out here, independently:
 * the Keras cell equations written out as loops, the loss formulas, central
 * finite differences for every gradient op, and the optimizers' update rules. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elab.h"
#include "init.h"
#include "interp.h"
#include "mathf.h"
#include "program.h"
#include "rng.h"
#include "shape.h"

/* ---- loading models and building graphs by hand ---- */

static void infer(Node *n);

typedef struct Loaded {
    Program *p;
    Arena arena;
    Diags diags;
    Graph *g;
} Loaded;

static Graph *load(Loaded *L, const char *text, int64_t batch) {
    diag_init(&L->diags);
    L->p = program_load_string("test.seq", text, &L->diags);
    ck_assert_ptr_nonnull(L->p);
    arena_init(&L->arena);
    ElabOptions o = {.batch = batch};
    Model m;
    bool ok = elab_model(L->p, NULL, &o, &L->arena, &m, &L->diags);
    char *msg = diag_render(&L->diags);
    ck_assert_msg(ok, "the test model does not elaborate:\n%s\n%s", msg, text);
    free(msg);
    L->g = m.graph;
    return m.graph;
}

static void unload(Loaded *L) {
    arena_free(&L->arena);
    diag_free(&L->diags);
    program_free(L->p);
}

/* The last node of the model graph with this name (a layer's output). */
static Node *named(const Graph *g, const char *name) {
    Node *found = NULL;
    for (int i = 0; i < g->nodes.len; i++) {
        Node *n = g->nodes.items[i];
        if (n->name && strcmp(n->name, name) == 0) found = n;
    }
    ck_assert_msg(found != NULL, "no node named %s", name);
    return found;
}

static Node *param(const Graph *g, const char *name) {
    for (int i = 0; i < g->params.len; i++) {
        Node *n = g->params.items[i];
        if (strcmp(n->name, name) == 0) return n;
    }
    ck_abort_msg("no param named %s", name);
    return NULL;
}

static Node *first_op(const Graph *g, OpKind op) {
    for (int i = 0; i < g->nodes.len; i++) {
        Node *n = g->nodes.items[i];
        if (n->op == op) return n;
    }
    ck_abort_msg("no %s node", op_name(op));
    return NULL;
}

static void set(Interp *it, const Graph *g, const Node *n, const double *v, int64_t count) {
    ck_assert_int_eq(interp_size(g, n), count);
    memcpy(interp_data(it, n), v, sizeof(double) * (size_t)count);
}

static Type tensor(DType dt, bool batched, int rank, int64_t d0, int64_t d1, int64_t d2) {
    Type t = {.dtype = dt, .rank = rank, .batched = batched, .dims = {d0, d1, d2}};
    for (int i = rank; i < SEQC_MAX_RANK; i++) t.dims[i] = 0;
    return t;
}

static Graph *hand_graph(Arena *a, int64_t batch) {
    arena_init(a);
    Graph *g = graph_new(a, NULL, "hand");
    g->batch = batch;
    return g;
}

/* A source of a declared type: an input, or a param when unbatched. */
static Node *source(Graph *g, OpKind op, Type t) {
    Node *n = graph_add(g, op, (Span){0}, 0, NULL);
    n->type = t;
    if (op == OP_PARAM) {
        n->param.trainable = true;
        n->param.init.kind = "zeros";
        n->name = "w";
    }
    return n;
}

static void infer(Node *n) {
    const char *why = NULL;
    ck_assert_msg(shape_infer(n, &why), "%s: %s", op_name(n->op), why);
}

static Node *op1(Graph *g, OpKind op, Node *a) {
    Node *n = graph_add(g, op, (Span){0}, 1, &a);
    infer(n);
    return n;
}

static Node *op2(Graph *g, OpKind op, Node *a, Node *b) {
    Node *n = graph_add(g, op, (Span){0}, 2, (Node *[]){a, b});
    infer(n);
    return n;
}

static Node *op3(Graph *g, OpKind op, Node *a, Node *b, Node *c) {
    Node *n = graph_add(g, op, (Span){0}, 3, (Node *[]){a, b, c});
    infer(n);
    return n;
}

static Node *constant(Graph *g, double v) {
    Node *n = graph_add(g, OP_CONST, (Span){0}, 0, NULL);
    n->constant = v;
    infer(n);
    return n;
}

/* Distinct, irregular values, so that a transposed matrix or swapped gate
 * block gives different numbers. */
static void irregular(double *v, int64_t n, double phase) {
    for (int64_t k = 0; k < n; k++) v[k] = 0.7 * sin(1.37 * (double)k + phase) + 0.05 * (double)(k % 3);
}

static void near(double got, double want, double tol, const char *what, int64_t i) {
    ck_assert_msg(fabs(got - want) <= tol * (1 + fabs(want)), "%s[%lld]: got %.17g, want %.17g", what, (long long)i,
                  got, want);
}

static double sigm(double x) { return 1 / (1 + exp(-x)); }

/* ---- recurrent cells, against the Keras equations ---- */

/* One example of SimpleRNN: h = tanh(x W + h U + b). x [T][I], out [T][U]. */
static void keras_rnn(const double *x, int T, int I, int U, const double *W, const double *Uw, const double *b,
                      double *h, double *out) {
    for (int t = 0; t < T; t++) {
        double z[8];
        for (int j = 0; j < U; j++) {
            z[j] = b[j];
            for (int i = 0; i < I; i++) z[j] += x[t * I + i] * W[i * U + j];
            for (int k = 0; k < U; k++) z[j] += h[k] * Uw[k * U + j];
        }
        for (int j = 0; j < U; j++) h[j] = out[t * U + j] = tanh(z[j]);
    }
}

START_TEST(rnn_one_unit_by_hand) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[2, 1]  h = rnn(x, units: 1) }", 1);
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, param(g, "h.W"), (double[]){0.5}, 1);
    set(it, g, param(g, "h.U"), (double[]){-1}, 1);
    set(it, g, param(g, "h.b"), (double[]){0.1}, 1);
    set(it, g, named(g, "x"), (double[]){1, 2}, 2);
    interp_run(it, false, 0);
    /* tanh(2 * 0.5 - tanh(1 * 0.5 + 0.1) + 0.1) */
    ck_assert_double_eq_tol(interp_data(it, named(g, "h"))[0], 0.5101632506598709, 1e-15);
    interp_free(it);
    unload(&L);
}
END_TEST

START_TEST(rnn_sequences) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[3, 2]  h = rnn(x, units: 2, sequences: true) }", 2);
    Interp *it = interp_new(g, PREC_F64);
    double W[4] = {0.5, -0.3, 0.8, 0.1}, U[4] = {0.2, -0.7, 0.4, 0.6}, b[2] = {0.05, -0.1};
    double x[12] = {0.3, -1.2, 0.7, 0.4, -0.5, 0.9, 1.1, 0.2, -0.8, -0.3, 0.6, 1.4};
    set(it, g, param(g, "h.W"), W, 4);
    set(it, g, param(g, "h.U"), U, 4);
    set(it, g, param(g, "h.b"), b, 2);
    set(it, g, named(g, "x"), x, 12);
    interp_run(it, false, 0);
    const double *got = interp_data(it, named(g, "h"));
    for (int e = 0; e < 2; e++) {
        double h[2] = {0, 0}, want[6];
        keras_rnn(x + e * 6, 3, 2, 2, W, U, b, h, want);
        for (int i = 0; i < 6; i++) near(got[e * 6 + i], want[i], 1e-14, "rnn", e * 6 + i);
    }
    interp_free(it);
    unload(&L);
}
END_TEST

/* One example of LSTM, gates i, f, c, o in column blocks of W, U, b. */
static void keras_lstm(const double *x, int T, int I, int U, const double *W, const double *Uw, const double *b,
                       double *h, double *c, double *out) {
    for (int t = 0; t < T; t++) {
        double z[32];
        for (int j = 0; j < 4 * U; j++) {
            z[j] = b[j];
            for (int i = 0; i < I; i++) z[j] += x[t * I + i] * W[i * 4 * U + j];
            for (int k = 0; k < U; k++) z[j] += h[k] * Uw[k * 4 * U + j];
        }
        for (int j = 0; j < U; j++) {
            double ig = sigm(z[j]), fg = sigm(z[U + j]), gg = tanh(z[2 * U + j]), og = sigm(z[3 * U + j]);
            c[j] = fg * c[j] + ig * gg;
            h[j] = og * tanh(c[j]);
            if (out) out[t * U + j] = h[j];
        }
    }
}

START_TEST(lstm_sequences) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[3, 2]  h = lstm(x, units: 2, sequences: true) }", 2);
    Interp *it = interp_new(g, PREC_F64);
    double W[16], U[16], b[8], x[12];
    irregular(W, 16, 0.3);
    irregular(U, 16, 1.9);
    irregular(b, 8, 4.1);
    irregular(x, 12, 2.2);
    set(it, g, param(g, "h.W"), W, 16);
    set(it, g, param(g, "h.U"), U, 16);
    set(it, g, param(g, "h.b"), b, 8);
    set(it, g, named(g, "x"), x, 12);
    interp_run(it, false, 0);
    const double *got = interp_data(it, named(g, "h"));
    for (int e = 0; e < 2; e++) {
        double h[2] = {0, 0}, c[2] = {0, 0}, want[6];
        keras_lstm(x + e * 6, 3, 2, 2, W, U, b, h, c, want);
        for (int i = 0; i < 6; i++) near(got[e * 6 + i], want[i], 1e-14, "lstm", e * 6 + i);
    }
    interp_free(it);
    unload(&L);
}
END_TEST

/* One example of GRU, reset_after: gates z, r, h; the recurrent matmul has its own bias. */
static void keras_gru(const double *x, int T, int I, int U, const double *W, const double *Uw, const double *b,
                      const double *rb, double *h, double *out) {
    for (int t = 0; t < T; t++) {
        double xs[24], hs[24];
        for (int j = 0; j < 3 * U; j++) {
            xs[j] = b[j];
            hs[j] = rb[j];
            for (int i = 0; i < I; i++) xs[j] += x[t * I + i] * W[i * 3 * U + j];
            for (int k = 0; k < U; k++) hs[j] += h[k] * Uw[k * 3 * U + j];
        }
        for (int j = 0; j < U; j++) {
            double z = sigm(xs[j] + hs[j]), r = sigm(xs[U + j] + hs[U + j]);
            double cand = tanh(xs[2 * U + j] + r * hs[2 * U + j]);
            out[t * U + j] = z * h[j] + (1 - z) * cand;
        }
        for (int j = 0; j < U; j++) h[j] = out[t * U + j];
    }
}

START_TEST(gru_sequences) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[3, 2]  h = gru(x, units: 2, sequences: true) }", 2);
    Interp *it = interp_new(g, PREC_F64);
    double W[12], U[12], b[6], rb[6], x[12];
    irregular(W, 12, 0.7);
    irregular(U, 12, 2.9);
    irregular(b, 6, 5.3);
    irregular(rb, 6, 0.1);
    irregular(x, 12, 3.3);
    set(it, g, param(g, "h.W"), W, 12);
    set(it, g, param(g, "h.U"), U, 12);
    set(it, g, param(g, "h.b"), b, 6);
    set(it, g, param(g, "h.rb"), rb, 6);
    set(it, g, named(g, "x"), x, 12);
    interp_run(it, false, 0);
    const double *got = interp_data(it, named(g, "h"));
    for (int e = 0; e < 2; e++) {
        double h[2] = {0, 0}, want[6];
        keras_gru(x + e * 6, 3, 2, 2, W, U, b, rb, h, want);
        for (int i = 0; i < 6; i++) near(got[e * 6 + i], want[i], 1e-14, "gru", e * 6 + i);
    }
    interp_free(it);
    unload(&L);
}
END_TEST

/* ---- masking and direction ---- */

static void set_lstm_embedding(Interp *it, const Graph *g) {
    double E[10], W[16], U[16], b[8];
    irregular(E, 10, 0.9);
    irregular(W, 16, 1.1);
    irregular(U, 16, 2.3);
    irregular(b, 8, 3.7);
    set(it, g, param(g, "e.embeddings"), E, 10);
    set(it, g, param(g, "h.W"), W, 16);
    set(it, g, param(g, "h.U"), U, 16);
    set(it, g, param(g, "h.b"), b, 8);
}

START_TEST(masked_steps_carry_the_state) {
    Loaded padded, plain, seq;
    Graph *gp = load(&padded, "model m { input ids: i32[4]  e = embedding(ids, vocab: 5, dim: 2, mask_zero: true)"
                              "  h = lstm(e, units: 2) }", 2);
    Graph *gs = load(&plain, "model m { input ids: i32[2]  e = embedding(ids, vocab: 5, dim: 2, mask_zero: true)"
                             "  h = lstm(e, units: 2) }", 2);
    Graph *gq = load(&seq, "model m { input ids: i32[4]  e = embedding(ids, vocab: 5, dim: 2, mask_zero: true)"
                           "  h = lstm(e, units: 2, sequences: true) }", 2);
    Interp *ip = interp_new(gp, PREC_F64), *is = interp_new(gs, PREC_F64), *iq = interp_new(gq, PREC_F64);
    set_lstm_embedding(ip, gp);
    set_lstm_embedding(is, gs);
    set_lstm_embedding(iq, gq);
    set(ip, gp, named(gp, "ids"), (double[]){0, 0, 3, 1, 0, 0, 2, 4}, 8);
    set(is, gs, named(gs, "ids"), (double[]){3, 1, 2, 4}, 4);
    /* Example 0 pre-padded, example 1 post-padded. */
    set(iq, gq, named(gq, "ids"), (double[]){0, 0, 3, 1, 2, 4, 0, 0}, 8);
    interp_run(ip, false, 0);
    interp_run(is, false, 0);
    interp_run(iq, false, 0);
    const double *hp = interp_data(ip, named(gp, "h")), *hs = interp_data(is, named(gs, "h"));
    for (int i = 0; i < 4; i++) ck_assert_double_eq_tol(hp[i], hs[i], 1e-15);
    /* The unmasked steps are a plain LSTM. */
    double E[10];
    memcpy(E, interp_data(ip, param(gp, "e.embeddings")), sizeof E);
    double x[4] = {E[6], E[7], E[2], E[3]}, h[2] = {0, 0}, c[2] = {0, 0};
    keras_lstm(x, 2, 2, 2, interp_data(ip, param(gp, "h.W")), interp_data(ip, param(gp, "h.U")),
               interp_data(ip, param(gp, "h.b")), h, c, NULL);
    near(hp[0], h[0], 1e-14, "masked lstm", 0);
    near(hp[1], h[1], 1e-14, "masked lstm", 1);
    /* With sequences, a masked step repeats the previous output (zeros before any real step). */
    const double *hq = interp_data(iq, named(gq, "h"));
    for (int i = 0; i < 4; i++) ck_assert_double_eq(hq[i], 0.0);
    for (int i = 0; i < 2; i++) {
        ck_assert_double_eq_tol(hq[6 + i], hs[i], 1e-15);
        ck_assert_double_eq(hq[8 + 2 * 2 + i], hq[8 + 2 + i]);
        ck_assert_double_eq(hq[8 + 3 * 2 + i], hq[8 + 2 + i]);
        ck_assert_double_eq_tol(hq[8 + 2 + i], hs[2 + i], 1e-15);
    }
    interp_free(ip);
    interp_free(is);
    interp_free(iq);
    unload(&padded);
    unload(&plain);
    unload(&seq);
}
END_TEST

/* A one-unit SimpleRNN over x [T] walked in the given order; out[k] after k + 1 steps. */
static void rnn1(const double *x, int T, bool backward, double w, double u, double b, double *out) {
    double h = 0;
    for (int k = 0; k < T; k++) {
        int t = backward ? T - 1 - k : k;
        h = tanh(x[t] * w + h * u + b);
        out[k] = h;
    }
}

START_TEST(bidirectional_is_forward_then_backward) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[3, 1]  h = rnn(x, units: 1, direction: both) }", 2);
    Interp *it = interp_new(g, PREC_F64);
    double x[6] = {0.4, -0.9, 1.3, 0.2, 0.8, -1.1};
    set(it, g, named(g, "x"), x, 6);
    set(it, g, param(g, "h.forward.W"), (double[]){0.7}, 1);
    set(it, g, param(g, "h.forward.U"), (double[]){-0.4}, 1);
    set(it, g, param(g, "h.forward.b"), (double[]){0.1}, 1);
    set(it, g, param(g, "h.backward.W"), (double[]){-0.6}, 1);
    set(it, g, param(g, "h.backward.U"), (double[]){0.9}, 1);
    set(it, g, param(g, "h.backward.b"), (double[]){-0.2}, 1);
    interp_run(it, false, 0);
    const double *got = interp_data(it, named(g, "h"));
    for (int e = 0; e < 2; e++) {
        double f[3], r[3];
        rnn1(x + 3 * e, 3, false, 0.7, -0.4, 0.1, f);
        rnn1(x + 3 * e, 3, true, -0.6, 0.9, -0.2, r);
        near(got[2 * e], f[2], 1e-15, "forward", e);
        near(got[2 * e + 1], r[2], 1e-15, "backward", e);
    }
    interp_free(it);
    unload(&L);
}
END_TEST

START_TEST(backward_sequences_in_walked_order) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[4, 1]  h = rnn(x, units: 1, direction: backward, sequences: true) }",
                    1);
    Interp *it = interp_new(g, PREC_F64);
    double x[4] = {0.4, -0.9, 1.3, 0.2};
    set(it, g, named(g, "x"), x, 4);
    set(it, g, param(g, "h.W"), (double[]){0.7}, 1);
    set(it, g, param(g, "h.U"), (double[]){-0.4}, 1);
    set(it, g, param(g, "h.b"), (double[]){0.1}, 1);
    interp_run(it, false, 0);
    double want[4];
    rnn1(x, 4, true, 0.7, -0.4, 0.1, want);
    const double *got = interp_data(it, named(g, "h"));
    for (int k = 0; k < 4; k++) near(got[k], want[k], 1e-15, "backward sequence", k);
    interp_free(it);
    unload(&L);
}
END_TEST

/* ---- scan outputs, intermediate states, stateful layers ---- */

/* Adds to the (only) scan of g: the state entering each step as an extra
 * output kept over [1, 3), and the state after 0, 1, 2 and 4 steps. */
static void extend_scan(Graph *g, Node **out, Node **after) {
    Node *scan = first_op(g, OP_SCAN);
    Graph *body = scan->scan.body;
    ptrvec_push(g->arena, &body->outputs, first_op(body, OP_STATE_IN));
    scan->scan.nout = 2;
    scan->scan.keep_begin = 1;
    scan->scan.keep_end = 3;
    *out = graph_add(g, OP_SCAN_OUT, (Span){0}, 1, &scan);
    (*out)->index = 1;
    infer(*out);
    static const int64_t steps[4] = {0, 1, 2, 4};
    for (int k = 0; k < 4; k++) {
        after[k] = graph_add(g, OP_SCAN_STATE, (Span){0}, 1, &scan);
        after[k]->scan_state.index = 0;
        after[k]->scan_state.after = steps[k];
        infer(after[k]);
    }
}

static void check_extended_scan(bool backward) {
    Loaded L;
    Graph *g = load(&L, backward ? "model m { input x: f32[4, 1]  h = rnn(x, units: 1, direction: backward) }"
                                 : "model m { input x: f32[4, 1]  h = rnn(x, units: 1) }", 2);
    Node *out, *after[4];
    extend_scan(g, &out, after);
    ck_assert_int_eq(out->type.dims[0], 2);
    Interp *it = interp_new(g, PREC_F64);
    double x[8] = {0.4, -0.9, 1.3, 0.2, -0.3, 0.5, 0.8, -1.2};
    set(it, g, named(g, "x"), x, 8);
    set(it, g, param(g, "h.W"), (double[]){0.7}, 1);
    set(it, g, param(g, "h.U"), (double[]){-0.4}, 1);
    set(it, g, param(g, "h.b"), (double[]){0.1}, 1);
    interp_run(it, false, 0);
    for (int e = 0; e < 2; e++) {
        double h[4];
        rnn1(x + 4 * e, 4, backward, 0.7, -0.4, 0.1, h); /* h[k]: after k + 1 steps */
        /* The state entering the step at time t, after (backward ? 3 - t : t) steps. */
        for (int t = 1; t < 3; t++) {
            int walked = backward ? 3 - t : t;
            double want = walked == 0 ? 0 : h[walked - 1];
            near(interp_data(it, out)[2 * e + (t - 1)], want, 1e-15, "kept state", t);
        }
        ck_assert_double_eq(interp_data(it, after[0])[e], 0.0);
        near(interp_data(it, after[1])[e], h[0], 1e-15, "after 1", e);
        near(interp_data(it, after[2])[e], h[1], 1e-15, "after 2", e);
        near(interp_data(it, after[3])[e], h[3], 1e-15, "after 4", e);
        near(interp_data(it, named(g, "h"))[e], h[3], 1e-15, "output", e);
    }
    interp_free(it);
    unload(&L);
}

START_TEST(scan_keeps_outputs_and_states) {
    check_extended_scan(false);
    check_extended_scan(true);
}
END_TEST

/* A scan with no per-step output (a backward scan whose inputs need no
 * gradient) still walks its steps and carries its states. */
START_TEST(scan_without_outputs) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[3, 1]  h = rnn(x, units: 1) }", 1);
    Node *scan = first_op(g, OP_SCAN);
    scan->scan.body->outputs.len = scan->scan.nstate;
    scan->scan.nout = 0;
    infer(scan);
    Node *fin = graph_add(g, OP_SCAN_STATE, (Span){0}, 1, &scan);
    fin->scan_state.after = 3;
    infer(fin);
    Interp *it = interp_new(g, PREC_F64);
    double x[3] = {0.4, -0.9, 1.3}, h[3];
    set(it, g, named(g, "x"), x, 3);
    set(it, g, param(g, "h.W"), (double[]){0.7}, 1);
    set(it, g, param(g, "h.U"), (double[]){-0.4}, 1);
    set(it, g, param(g, "h.b"), (double[]){0.1}, 1);
    interp_run(it, false, 0);
    rnn1(x, 3, false, 0.7, -0.4, 0.1, h);
    near(interp_data(it, fin)[0], h[2], 1e-15, "final state", 0);
    ck_assert_double_eq(interp_data(it, scan)[0], 0.0);
    interp_free(it);
    unload(&L);
}
END_TEST

START_TEST(stateful_layer_continues) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[3, 1]  h = rnn(x, units: 1, stateful: true) }", 2);
    ck_assert_int_eq(g->updates.len, 1);
    Interp *it = interp_new(g, PREC_F64);
    double x[6] = {0.4, -0.9, 1.3, 0.2, -0.3, 0.5}, y[6] = {0.8, -1.2, 0.6, 1.0, 0.1, -0.7};
    set(it, g, param(g, "h.W"), (double[]){0.7}, 1);
    set(it, g, param(g, "h.U"), (double[]){-0.4}, 1);
    set(it, g, param(g, "h.b"), (double[]){0.1}, 1);
    interp_zero_state(it);
    set(it, g, named(g, "x"), x, 6);
    interp_run(it, true, 0);
    interp_apply_updates(it);
    set(it, g, named(g, "x"), y, 6);
    interp_run(it, true, 0);
    for (int e = 0; e < 2; e++) {
        double both[6] = {x[3 * e], x[3 * e + 1], x[3 * e + 2], y[3 * e], y[3 * e + 1], y[3 * e + 2]}, h[6];
        rnn1(both, 6, false, 0.7, -0.4, 0.1, h);
        near(interp_data(it, named(g, "h"))[e], h[5], 1e-15, "second window", e);
    }
    interp_zero_state(it);
    interp_run(it, true, 0);
    double h[3];
    rnn1(y, 3, false, 0.7, -0.4, 0.1, h);
    near(interp_data(it, named(g, "h"))[0], h[2], 1e-15, "after reset", 0);
    interp_free(it);
    unload(&L);
}
END_TEST

/* ---- dropout and batchnorm ---- */

START_TEST(dropout_masks) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[50]  d = dropout(x, 0.5) }", 4);
    Interp *it = interp_new(g, PREC_F64);
    double x[200];
    for (int i = 0; i < 200; i++) x[i] = i + 1;
    set(it, g, named(g, "x"), x, 200);
    Node *d = named(g, "d");
    interp_run(it, false, 7);
    for (int i = 0; i < 200; i++) ck_assert_double_eq(interp_data(it, d)[i], x[i]);
    double first[200];
    interp_run(it, true, 7);
    memcpy(first, interp_data(it, d), sizeof first);
    int zeros = 0;
    for (int i = 0; i < 200; i++) {
        ck_assert(first[i] == 0 || first[i] == 2 * x[i]);
        zeros += first[i] == 0;
    }
    ck_assert_int_gt(zeros, 70);
    ck_assert_int_lt(zeros, 130);
    interp_run(it, true, 7);
    ck_assert(memcmp(first, interp_data(it, d), sizeof first) == 0);
    interp_run(it, true, 8);
    ck_assert(memcmp(first, interp_data(it, d), sizeof first) != 0);
    interp_free(it);
    unload(&L);
}
END_TEST

/* A cell's dropout is the identity at inference and one fixed mask per seed in training. */
START_TEST(cell_dropout) {
    Loaded a, b;
    Graph *ga = load(&a, "model m { input x: f32[3, 2]  h = lstm(x, units: 2, dropout: 0.5, recurrent_dropout: 0.3) }",
                     2);
    Graph *gb = load(&b, "model m { input x: f32[3, 2]  h = lstm(x, units: 2) }", 2);
    Interp *ia = interp_new(ga, PREC_F64), *ib = interp_new(gb, PREC_F64);
    double x[12];
    irregular(x, 12, 0.5);
    interp_init_params(ia, 3);
    interp_init_params(ib, 3);
    set(ia, ga, named(ga, "x"), x, 12);
    set(ib, gb, named(gb, "x"), x, 12);
    interp_run(ia, false, 1);
    interp_run(ib, false, 1);
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq(interp_data(ia, named(ga, "h"))[i], interp_data(ib, named(gb, "h"))[i]);
    double first[4];
    interp_run(ia, true, 11);
    memcpy(first, interp_data(ia, named(ga, "h")), sizeof first);
    interp_run(ia, true, 11);
    ck_assert(memcmp(first, interp_data(ia, named(ga, "h")), sizeof first) == 0);
    ck_assert(memcmp(first, interp_data(ib, named(gb, "h")), sizeof first) != 0);
    interp_free(ia);
    interp_free(ib);
    unload(&a);
    unload(&b);
}
END_TEST

START_TEST(batchnorm_training_and_inference) {
    Loaded L;
    Graph *g = load(&L, "model m { input x: f32[2, 3]  n = batchnorm(x, momentum: 0.9, epsilon: 0.001) }", 2);
    Interp *it = interp_new(g, PREC_F64);
    double x[12] = {1, 2, 3, 4, -5, 6, 0.5, 0.25, -1, 2, 8, 0};
    double gamma[3] = {1.5, -0.5, 2}, beta[3] = {0.1, 0.2, -0.3}, mm[3] = {0.5, -1, 2}, mv[3] = {2, 0.5, 4};
    set(it, g, named(g, "x"), x, 12);
    set(it, g, param(g, "n.gamma"), gamma, 3);
    set(it, g, param(g, "n.beta"), beta, 3);
    set(it, g, param(g, "n.moving_mean"), mm, 3);
    set(it, g, param(g, "n.moving_variance"), mv, 3);
    Node *n = named(g, "n");
    interp_run(it, false, 0);
    for (int i = 0; i < 12; i++) {
        int f = i % 3;
        near(interp_data(it, n)[i], gamma[f] * (x[i] - mm[f]) / sqrt(mv[f] + 0.001) + beta[f], 1e-14, "inference", i);
    }
    interp_run(it, true, 0);
    double mean[3] = {0}, var[3] = {0};
    for (int i = 0; i < 12; i++) mean[i % 3] += x[i] / 4;
    for (int i = 0; i < 12; i++) var[i % 3] += (x[i] - mean[i % 3]) * (x[i] - mean[i % 3]) / 4;
    ck_assert_double_eq_tol(mean[1], 1.3125, 1e-15); /* (2 - 5 + 0.25 + 8) / 4 */
    for (int i = 0; i < 12; i++) {
        int f = i % 3;
        near(interp_data(it, n)[i], gamma[f] * (x[i] - mean[f]) / sqrt(var[f] + 0.001) + beta[f], 1e-14, "training", i);
    }
    interp_apply_updates(it);
    for (int f = 0; f < 3; f++) {
        near(interp_data(it, param(g, "n.moving_mean"))[f], 0.9 * mm[f] + 0.1 * mean[f], 1e-14, "moving mean", f);
        near(interp_data(it, param(g, "n.moving_variance"))[f], 0.9 * mv[f] + 0.1 * var[f], 1e-14, "moving variance",
             f);
    }
    interp_free(it);
    unload(&L);
}
END_TEST

/* ---- losses and metrics ---- */

static double run_scalar(const char *text, int64_t batch, const double *p, int64_t np, const double *y, int64_t ny,
                         bool metric) {
    Loaded L;
    Graph *g = load(&L, text, batch);
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, named(g, "p"), p, np);
    set(it, g, named(g, "y"), y, ny);
    interp_run(it, false, 0);
    double v = interp_data(it, metric ? g->metrics.items[0] : g->loss)[0];
    interp_free(it);
    unload(&L);
    return v;
}

START_TEST(binary_crossentropy_values) {
    double p[6] = {0, 1, 0.3, 0.9, 0.5, 0.2}, y[6] = {1, 0, 0, 1, 1, 0};
    double got = run_scalar("model m { input p: f32[3]  target y: f32[3]  loss binary_crossentropy(p, y) }", 2, p, 6,
                            y, 6, false);
    const double eps = 1e-7;
    double want = 0;
    for (int i = 0; i < 6; i++) {
        double q = p[i] < eps ? eps : p[i] > 1 - eps ? 1 - eps : p[i];
        want += -(y[i] * log(q + eps) + (1 - y[i]) * log(1 - q + eps)) / 6;
    }
    near(got, want, 1e-14, "bce", 0);
    /* p = 0 against y = 1 costs -log(2e-7) = 15.42...: the clip, then Keras' extra epsilon. */
    double one = run_scalar("model m { input p: f32[1]  target y: f32[1]  loss binary_crossentropy(p, y) }", 1,
                            (double[]){0}, 1, (double[]){1}, 1, false);
    near(one, 15.424948470398375, 1e-12, "bce at 0", 0);
    double z[6] = {-2, 0.5, 3, -0.1, 10, -30};
    got = run_scalar("model m { input p: f32[3]  target y: f32[3]  loss binary_crossentropy(p, y, from_logits: true) }",
                     2, z, 6, y, 6, false);
    want = 0;
    for (int i = 0; i < 6; i++) want += (fmax(z[i], 0) - z[i] * y[i] + log(1 + exp(-fabs(z[i])))) / 6;
    near(got, want, 1e-14, "bce logits", 0);
}
END_TEST

START_TEST(sparse_crossentropy_values) {
    /* Two examples of two positions, three classes; the target has a trailing 1. */
    double p[12] = {0.2, 0.5, 0.3, 0, 0.4, 0.6, 0.7, 0.1, 0.2, 0.25, 0.25, 0.5};
    double y[4] = {1, 0, 2, 2};
    double got = run_scalar("model m { input p: f32[2, 3]  target y: i32[2, 1]  loss sparse_categorical_crossentropy(p, y) }",
                            2, p, 12, y, 4, false);
    const double eps = 1e-7;
    double want = 0;
    for (int r = 0; r < 4; r++) {
        double sum = 0, cp[3];
        for (int c = 0; c < 3; c++) {
            double v = p[3 * r + c];
            cp[c] = v < eps ? eps : v > 1 - eps ? 1 - eps : v;
            sum += cp[c];
        }
        want += (-log(cp[(int)y[r]]) + log(sum)) / 4;
    }
    near(got, want, 1e-14, "sce", 0);
    /* The position whose true class has p = 0: -log(1e-7) + log(1 + 1e-7). */
    double one = run_scalar("model m { input p: f32[3]  target y: i32[]  loss sparse_categorical_crossentropy(p, y) }",
                            1, (double[]){0, 0.4, 0.6}, 3, (double[]){0}, 1, false);
    near(one, -log(1e-7) + log(1 + 1e-7), 1e-14, "sce clipped", 0);
    double z[6] = {1.5, -0.5, 0.2, -2, 3, 0.7};
    got = run_scalar("model m { input p: f32[3]  target y: i32[]  loss sparse_categorical_crossentropy(p, y, from_logits: true) }",
                     2, z, 6, (double[]){2, 1}, 2, false);
    want = 0;
    for (int r = 0; r < 2; r++) {
        double s = 0;
        for (int c = 0; c < 3; c++) s += exp(z[3 * r + c]);
        want += (-z[3 * r + (r == 0 ? 2 : 1)] + log(s)) / 2;
    }
    near(got, want, 1e-14, "sce logits", 0);
}
END_TEST

START_TEST(categorical_crossentropy_values) {
    /* Unnormalized predictions: Keras divides by their sum first. */
    double p[6] = {2, 1, 1, 0, 3, 1}, y[6] = {0, 1, 0, 0.5, 0, 0.5};
    double got = run_scalar("model m { input p: f32[3]  target y: f32[3]  loss categorical_crossentropy(p, y) }", 2, p,
                            6, y, 6, false);
    double want = (-log(0.25) + -0.5 * log(1e-7) - 0.5 * log(0.25)) / 2;
    near(got, want, 1e-14, "cce", 0);
    double z[6] = {0.3, -1, 2, 1, 1, -0.5};
    got = run_scalar("model m { input p: f32[3]  target y: f32[3]  loss categorical_crossentropy(p, y, from_logits: true) }",
                     2, z, 6, y, 6, false);
    want = 0;
    for (int r = 0; r < 2; r++) {
        double s = 0;
        for (int c = 0; c < 3; c++) s += exp(z[3 * r + c]);
        for (int c = 0; c < 3; c++) want -= y[3 * r + c] * (z[3 * r + c] - log(s)) / 2;
    }
    near(got, want, 1e-14, "cce logits", 0);
}
END_TEST

START_TEST(mse_and_mean_values) {
    double p[4] = {1, 2, 3, 4}, y[4] = {1.5, 2, 1, 4};
    double got = run_scalar("model m { input p: f32[2]  target y: f32[2]  loss mse(p, y) }", 2, p, 4, y, 4, false);
    ck_assert_double_eq_tol(got, (0.25 + 0 + 4 + 0) / 4, 1e-15);
    got = run_scalar("model m { input p: f32[2]  target y: f32[2]  loss mse(p, y)  metric mean(p) }", 2, p, 4, y, 4, true);
    ck_assert_double_eq_tol(got, 2.5, 1e-15);
}
END_TEST

START_TEST(accuracy_values) {
    /* Binary (one probability per position): p > 0.5 strictly. */
    double got = run_scalar("model m { input p: f32[2, 1]  target y: f32[2, 1]  loss mse(p, y)  metric accuracy(p, y) }", 2,
                            (double[]){0.5, 0.51, 0.1, 0.9}, 4, (double[]){0, 1, 1, 1}, 4, true);
    ck_assert_double_eq_tol(got, 0.75, 1e-15);
    /* Sparse: the first maximum wins a tie. */
    got = run_scalar("model m { input p: f32[3]  target y: i32[]  loss sparse_categorical_crossentropy(p, y)  "
                     "metric accuracy(p, y) }", 3, (double[]){0.4, 0.4, 0.2, 0.1, 0.2, 0.7, 0.3, 0.3, 0.4}, 9,
                     (double[]){1, 2, 2}, 3, true);
    ck_assert_double_eq_tol(got, 2.0 / 3, 1e-15);
    /* Categorical: argmax against argmax. */
    got = run_scalar("model m { input p: f32[3]  target y: f32[3]  loss categorical_crossentropy(p, y)  "
                     "metric accuracy(p, y) }", 2, (double[]){0.1, 0.6, 0.3, 0.5, 0.2, 0.3}, 6,
                     (double[]){0, 1, 0, 0, 0, 1}, 6, true);
    ck_assert_double_eq_tol(got, 0.5, 1e-15);
}
END_TEST

/* ---- gradient ops against central differences ---- */

/* Checks that node `grad` holds d/dx of sum(y * dy) (of y alone when dy is
 * NULL: a scalar), by central differences in every entry of x. */
static void fd_check(Interp *it, const Graph *g, Node *x, const Node *y, const Node *dy, const Node *grad,
                     const char *what) {
    int64_t n = interp_size(g, x), ny = interp_size(g, y);
    ck_assert_int_eq(interp_size(g, grad), n);
    interp_run(it, true, 5);
    double *analytic = malloc(sizeof(double) * (size_t)n);
    memcpy(analytic, interp_data(it, grad), sizeof(double) * (size_t)n);
    double *xv = interp_data(it, x), h = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double saved = xv[i], f[2];
        for (int side = 0; side < 2; side++) {
            xv[i] = saved + (side ? -h : h);
            interp_run(it, true, 5);
            f[side] = 0;
            for (int64_t k = 0; k < ny; k++) f[side] += interp_data(it, y)[k] * (dy ? interp_data(it, dy)[k] : 1);
        }
        xv[i] = saved;
        double fd = (f[0] - f[1]) / (2 * h);
        ck_assert_msg(fabs(fd - analytic[i]) <= 1e-6 * (1 + fabs(fd)), "%s[%lld]: analytic %.12g, differences %.12g",
                      what, (long long)i, analytic[i], fd);
    }
    free(analytic);
}

static void fill(Interp *it, const Graph *g, const Node *n, double phase) {
    int64_t k = interp_size(g, n);
    irregular(interp_data(it, n), k, phase);
}

START_TEST(activation_grads) {
    static const OpKind acts[] = {OP_TANH, OP_SIGMOID, OP_HARD_SIGMOID, OP_RELU, OP_EXP, OP_LOG, OP_RSQRT, OP_NEG};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        Arena ar;
        Graph *g = hand_graph(&ar, 2);
        Node *x = source(g, OP_INPUT, tensor(DT_F32, true, 1, 4, 0, 0));
        Node *dy = source(g, OP_INPUT, tensor(DT_F32, true, 1, 4, 0, 0));
        Node *y = op1(g, acts[a], x);
        Node *dx = op3(g, OP_ACT_GRAD, x, y, dy);
        dx->act = acts[a];
        Interp *it = interp_new(g, PREC_F64);
        /* Away from the kinks (0 for relu, +-2.5 for hard_sigmoid); positive for log and rsqrt. */
        double xs[8] = {0.3, -1.2, 2.0, 3.1, -0.7, 0.9, -2.9, 1.6};
        bool positive = acts[a] == OP_LOG || acts[a] == OP_RSQRT;
        for (int i = 0; i < 8; i++) interp_data(it, x)[i] = positive ? fabs(xs[i]) + 0.2 : xs[i];
        fill(it, g, dy, 0.8);
        fd_check(it, g, x, y, dy, dx, op_name(acts[a]));
        interp_free(it);
        arena_free(&ar);
    }
}
END_TEST

START_TEST(structural_grads) {
    Arena ar;
    Graph *g = hand_graph(&ar, 2);
    Node *x = source(g, OP_INPUT, tensor(DT_F32, true, 2, 3, 4, 0));
    Node *w = source(g, OP_PARAM, tensor(DT_F32, false, 2, 4, 2, 0));
    Node *bias = source(g, OP_PARAM, tensor(DT_F32, false, 2, 1, 4, 0));
    /* x @ w and its two gradients */
    Node *y = op2(g, OP_MATMUL, x, w);
    Node *dy = source(g, OP_INPUT, y->type);
    Node *dx = op2(g, OP_MATMUL_T, dy, w), *dw = op2(g, OP_MATMUL_W, x, dy);
    /* x + bias [1, 4]: the bias gradient sums over the batch and the first axis */
    Node *yb = op2(g, OP_ADD, x, bias);
    Node *dyb = source(g, OP_INPUT, yb->type);
    Node *db = graph_add(g, OP_SUM_TO, (Span){0}, 1, &dyb);
    db->type = bias->type;
    infer(db);
    /* softmax */
    Node *ys = op1(g, OP_SOFTMAX, x);
    Node *dys = source(g, OP_INPUT, ys->type);
    Node *dxs = op2(g, OP_SOFTMAX_GRAD, ys, dys);
    /* slice [1, 3) of the last axis */
    Node *sl = graph_add(g, OP_SLICE, (Span){0}, 1, &x);
    sl->slice.start = 1;
    sl->slice.len = 2;
    infer(sl);
    Node *dsl = source(g, OP_INPUT, sl->type);
    Node *dxsl = graph_add(g, OP_SLICE_GRAD, (Span){0}, 1, &dsl);
    dxsl->type = x->type;
    dxsl->slice = sl->slice;
    infer(dxsl);
    /* last step, time slice, reverse */
    Node *last = op1(g, OP_LAST, x);
    Node *dlast = source(g, OP_INPUT, last->type);
    Node *dxlast = graph_add(g, OP_PLACE_STEP, (Span){0}, 1, &dlast);
    dxlast->type = x->type;
    dxlast->index = 2;
    infer(dxlast);
    Node *ts = graph_add(g, OP_TIME_SLICE, (Span){0}, 1, &x);
    ts->slice.start = 1;
    ts->slice.len = 2;
    infer(ts);
    Node *dts = source(g, OP_INPUT, ts->type);
    Node *dxts = graph_add(g, OP_TIME_PAD, (Span){0}, 1, &dts);
    dxts->slice.start = 1;
    dxts->slice.len = 3;
    infer(dxts);
    Node *rv = op1(g, OP_REVERSE, x);
    Node *drv = source(g, OP_INPUT, rv->type);
    Node *dxrv = op1(g, OP_REVERSE, drv);

    Interp *it = interp_new(g, PREC_F64);
    fill(it, g, x, 0.1);
    fill(it, g, w, 1.2);
    fill(it, g, bias, 2.3);
    Node *dys_all[] = {dy, dyb, dys, dsl, dlast, dts, drv};
    for (size_t i = 0; i < sizeof dys_all / sizeof dys_all[0]; i++) fill(it, g, dys_all[i], 0.4 + (double)i);
    fd_check(it, g, x, y, dy, dx, "matmul_t");
    fd_check(it, g, w, y, dy, dw, "matmul_w");
    fd_check(it, g, bias, yb, dyb, db, "sum_to");
    fd_check(it, g, x, ys, dys, dxs, "softmax_grad");
    fd_check(it, g, x, sl, dsl, dxsl, "slice_grad");
    fd_check(it, g, x, last, dlast, dxlast, "place_step");
    fd_check(it, g, x, ts, dts, dxts, "time_pad");
    fd_check(it, g, x, rv, drv, dxrv, "reverse");
    interp_free(it);
    arena_free(&ar);
}
END_TEST

START_TEST(embedding_grad) {
    Arena ar;
    Graph *g = hand_graph(&ar, 2);
    Node *ids = source(g, OP_INPUT, tensor(DT_I32, true, 1, 3, 0, 0));
    Node *tab = source(g, OP_PARAM, tensor(DT_F32, false, 2, 4, 2, 0));
    Node *y = op2(g, OP_EMBED, ids, tab);
    Node *dy = source(g, OP_INPUT, y->type);
    Node *dt = graph_add(g, OP_EMBED_GRAD, (Span){0}, 2, (Node *[]){ids, dy});
    dt->type = tab->type;
    infer(dt);
    Interp *it = interp_new(g, PREC_F64);
    memcpy(interp_data(it, ids), (double[]){2, 0, 2, 3, 2, 1}, sizeof(double) * 6); /* id 2 three times */
    fill(it, g, tab, 0.3);
    fill(it, g, dy, 1.7);
    interp_run(it, false, 0);
    ck_assert_double_eq(interp_data(it, y)[0], interp_data(it, tab)[4]);
    ck_assert_double_eq(interp_data(it, y)[9], interp_data(it, tab)[5]);
    fd_check(it, g, tab, y, dy, dt, "embedding_grad");
    interp_free(it);
    arena_free(&ar);
}
END_TEST

START_TEST(pooling_grads) {
    Arena ar;
    Graph *g = hand_graph(&ar, 2);
    Node *x = source(g, OP_INPUT, tensor(DT_F32, true, 2, 4, 2, 0));
    Node *mask = source(g, OP_INPUT, tensor(DT_F32, true, 1, 4, 0, 0));
    Node *mx = graph_add(g, OP_MAX_TIME, (Span){0}, 2, (Node *[]){x, mask});
    infer(mx);
    Node *mean = graph_add(g, OP_MEAN_TIME, (Span){0}, 2, (Node *[]){x, mask});
    infer(mean);
    Node *dmx = source(g, OP_INPUT, mx->type), *dmean = source(g, OP_INPUT, mean->type);
    Node *gmx = graph_add(g, OP_MAX_TIME_GRAD, (Span){0}, 3, (Node *[]){x, dmx, mask});
    infer(gmx);
    Node *gmean = graph_add(g, OP_MEAN_TIME_GRAD, (Span){0}, 3, (Node *[]){x, dmean, mask});
    infer(gmean);
    Interp *it = interp_new(g, PREC_F64);
    /* Example 0: step 1 is masked and holds the largest values; example 1 is all masked. */
    double xv[16] = {0.3, -0.2, 9, 9, 0.8, -0.6, -0.1, 0.4, 1, 2, 3, 4, 5, 6, 7, 8};
    memcpy(interp_data(it, x), xv, sizeof xv);
    memcpy(interp_data(it, mask), (double[]){1, 0, 1, 1, 0, 0, 0, 0}, sizeof(double) * 8);
    fill(it, g, dmx, 0.2);
    fill(it, g, dmean, 1.4);
    interp_run(it, false, 0);
    const double *m = interp_data(it, mx), *a = interp_data(it, mean);
    ck_assert_double_eq(m[0], 0.8);
    ck_assert_double_eq(m[1], 0.4);
    ck_assert_double_eq_tol(a[0], (0.3 + 0.8 - 0.1) / 3, 1e-15);
    ck_assert_double_eq_tol(a[1], (-0.2 - 0.6 + 0.4) / 3, 1e-15);
    for (int i = 2; i < 4; i++) {
        ck_assert_double_eq(m[i], 0.0);
        ck_assert_double_eq(a[i], 0.0);
    }
    fd_check(it, g, x, mx, dmx, gmx, "global_max_pool_grad");
    fd_check(it, g, x, mean, dmean, gmean, "global_avg_pool_grad");
    /* Ties go to the first step. */
    memcpy(interp_data(it, x), (double[]){5, 1, 0, 2, 5, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, sizeof(double) * 16);
    memcpy(interp_data(it, mask), (double[]){1, 1, 1, 1, 1, 1, 1, 1}, sizeof(double) * 8);
    interp_run(it, false, 0);
    ck_assert_double_eq(interp_data(it, gmx)[0], interp_data(it, dmx)[0]);
    ck_assert_double_eq(interp_data(it, gmx)[4], 0.0);
    ck_assert_double_eq(interp_data(it, gmx)[3], interp_data(it, dmx)[1]);
    ck_assert_double_eq(interp_data(it, gmx)[5], 0.0);
    interp_free(it);
    arena_free(&ar);
}
END_TEST

/* LOSS_GRAD of each loss against differences of the loss itself, times d(loss) = 1.5. */
static void loss_grad_case(const char *text, OpKind loss, bool logits, const double *p, int64_t np, const double *y,
                           int64_t ny) {
    Loaded L;
    Graph *g = load(&L, text, 2);
    Node *pn = named(g, "p"), *yn = named(g, "y");
    Node *scaled = op2(g, OP_MUL, g->loss, constant(g, 1.5));
    Node *dp = op3(g, OP_LOSS_GRAD, pn, yn, constant(g, 1.5));
    dp->loss.loss = loss;
    dp->loss.from_logits = logits;
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, pn, p, np);
    set(it, g, yn, y, ny);
    fd_check(it, g, pn, scaled, NULL, dp, op_name(loss));
    interp_free(it);
    unload(&L);
}

START_TEST(loss_grads) {
    double p[6] = {0.2, 0.7, 0.4, 0.9, 0.35, 0.6}, y[6] = {1, 0, 0, 1, 1, 0}, z[6] = {-1.2, 0.4, 2.1, -0.3, 0.8, -2};
    double soft[6] = {0.2, 0.7, 0.4, 0.9, 0.15, 0.6}, yc[6] = {0.2, 0.8, 0, 0, 0.5, 0.5};
    loss_grad_case("model m { input p: f32[3]  target y: f32[3]  loss binary_crossentropy(p, y) }", OP_BCE, false, p,
                   6, y, 6);
    loss_grad_case("model m { input p: f32[3]  target y: f32[3]  loss binary_crossentropy(p, y, from_logits: true) }",
                   OP_BCE, true, z, 6, y, 6);
    loss_grad_case("model m { input p: f32[3]  target y: i32[]  loss sparse_categorical_crossentropy(p, y) }", OP_SCE,
                   false, soft, 6, (double[]){1, 2}, 2);
    loss_grad_case("model m { input p: f32[3]  target y: i32[1]  loss sparse_categorical_crossentropy(p, y, "
                   "from_logits: true) }", OP_SCE, true, z, 6, (double[]){0, 2}, 2);
    loss_grad_case("model m { input p: f32[3]  target y: f32[3]  loss categorical_crossentropy(p, y) }", OP_CCE, false,
                   soft, 6, yc, 6);
    loss_grad_case("model m { input p: f32[3]  target y: f32[3]  loss categorical_crossentropy(p, y, from_logits: true) }",
                   OP_CCE, true, z, 6, yc, 6);
    loss_grad_case("model m { input p: f32[3]  target y: f32[3]  loss mse(p, y) }", OP_MSE, false, z, 6, yc, 6);
}
END_TEST

/* Where the clip holds p, the loss does not move with it. */
START_TEST(clipped_loss_grads_are_zero) {
    Loaded L;
    Graph *g = load(&L, "model m { input p: f32[2]  target y: f32[2]  loss binary_crossentropy(p, y) }", 1);
    Node *dp = op3(g, OP_LOSS_GRAD, named(g, "p"), named(g, "y"), constant(g, 1));
    dp->loss.loss = OP_BCE;
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, named(g, "p"), (double[]){0, 1}, 2);
    set(it, g, named(g, "y"), (double[]){1, 0}, 2);
    interp_run(it, true, 0);
    ck_assert_double_eq(interp_data(it, dp)[0], 0.0);
    ck_assert_double_eq(interp_data(it, dp)[1], 0.0);
    interp_free(it);
    unload(&L);
}
END_TEST

/* ---- forward ops with small literal answers ---- */

START_TEST(structural_ops) {
    Arena ar;
    Graph *g = hand_graph(&ar, 2);
    Node *x = source(g, OP_INPUT, tensor(DT_F32, true, 2, 3, 2, 0));
    Node *u = source(g, OP_PARAM, tensor(DT_F32, false, 2, 3, 1, 0));
    Node *cat = graph_add(g, OP_CONCAT, (Span){0}, 2, (Node *[]){x, u});
    infer(cat);
    Node *row = source(g, OP_PARAM, tensor(DT_F32, false, 1, 2, 0, 0));
    Node *div = op2(g, OP_DIV, x, row);
    Node *rs = op1(g, OP_RSQRT, row);
    Node *hs = op1(g, OP_HARD_SIGMOID, x);
    Node *mean = op1(g, OP_MEAN_LEAD, x), *sum = op1(g, OP_SUM_LEAD, x);
    Node *flat = graph_add(g, OP_RESHAPE, (Span){0}, 1, &x);
    flat->type = tensor(DT_F32, true, 1, 6, 0, 0);
    infer(flat);
    Node *pad = graph_add(g, OP_TIME_PAD, (Span){0}, 1, &x);
    pad->slice.start = 1;
    pad->slice.len = 5;
    infer(pad);
    Node *sm = op1(g, OP_SOFTMAX, x);
    Node *ids = source(g, OP_INPUT, tensor(DT_I32, true, 1, 3, 0, 0));
    Node *nz = op1(g, OP_NONZERO, ids);
    Interp *it = interp_new(g, PREC_F64);
    double xv[12] = {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, 7, 0.5};
    memcpy(interp_data(it, x), xv, sizeof xv);
    memcpy(interp_data(it, u), (double[]){10, 20, 30}, sizeof(double) * 3);
    memcpy(interp_data(it, row), (double[]){2, 4}, sizeof(double) * 2);
    memcpy(interp_data(it, ids), (double[]){0, 5, 1, 3, 0, 0}, sizeof(double) * 6);
    interp_run(it, false, 0);
    static const double want_cat[18] = {1, 2, 10, 3, 4, 20, 5, 6, 30, -1, -2, 10, -3, -4, 20, 7, 0.5, 30};
    for (int i = 0; i < 18; i++) ck_assert_double_eq(interp_data(it, cat)[i], want_cat[i]);
    for (int i = 0; i < 12; i++) ck_assert_double_eq(interp_data(it, div)[i], xv[i] / (i % 2 ? 4 : 2));
    ck_assert_double_eq(interp_data(it, rs)[1], 0.5);
    ck_assert_double_eq_tol(interp_data(it, hs)[0], 0.7, 1e-15);
    ck_assert_double_eq(interp_data(it, hs)[4], 1.0);   /* 0.2 * 5 + 0.5 */
    ck_assert_double_eq(interp_data(it, hs)[9], 0.0);   /* -4 */
    ck_assert_double_eq_tol(interp_data(it, mean)[0], (1 + 3 + 5 - 1 - 3 + 7) / 6.0, 1e-15);
    ck_assert_double_eq_tol(interp_data(it, sum)[1], 2 + 4 + 6 - 2 - 4 + 0.5, 1e-15);
    for (int i = 0; i < 12; i++) ck_assert_double_eq(interp_data(it, flat)[i], xv[i]);
    static const double want_pad[10] = {0, 0, 1, 2, 3, 4, 5, 6, 0, 0};
    for (int i = 0; i < 10; i++) ck_assert_double_eq(interp_data(it, pad)[i], want_pad[i]);
    ck_assert_double_eq(interp_data(it, pad)[10 + 2], -1);
    ck_assert_double_eq_tol(interp_data(it, sm)[0], 1 / (1 + exp(1.0)), 1e-15);
    ck_assert_double_eq_tol(interp_data(it, sm)[11], exp(0.5) / (exp(7.0) + exp(0.5)), 1e-15);
    static const double want_nz[6] = {0, 1, 1, 1, 0, 0};
    for (int i = 0; i < 6; i++) ck_assert_double_eq(interp_data(it, nz)[i], want_nz[i]);
    interp_free(it);
    arena_free(&ar);
}
END_TEST

START_TEST(embedding_lookup_and_flatten) {
    Loaded L;
    Graph *g = load(&L, "model m { input ids: i32[3]  e = embedding(ids, vocab: 4, dim: 2)  f = flatten(e) }", 1);
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, param(g, "e.embeddings"), (double[]){0, 1, 10, 11, 20, 21, 30, 31}, 8);
    set(it, g, named(g, "ids"), (double[]){3, 0, 2}, 3);
    interp_run(it, false, 0);
    static const double want[6] = {30, 31, 0, 1, 20, 21};
    for (int i = 0; i < 6; i++) ck_assert_double_eq(interp_data(it, named(g, "f"))[i], want[i]);
    interp_free(it);
    unload(&L);
}
END_TEST

/* Data the runtime should have refused: the interpreter stops and names it. */
START_TEST(id_outside_vocabulary_aborts) {
    Loaded L;
    Graph *g = load(&L, "model m { input ids: i32[2]  e = embedding(ids, vocab: 4, dim: 2) }", 1);
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, named(g, "ids"), (double[]){1, 4}, 2);
    interp_run(it, false, 0);
}
END_TEST

START_TEST(target_class_outside_aborts) {
    Loaded L;
    Graph *g = load(&L, "model m { input p: f32[3]  target y: i32[]  loss sparse_categorical_crossentropy(p, y) }", 1);
    Interp *it = interp_new(g, PREC_F64);
    set(it, g, named(g, "p"), (double[]){0.2, 0.3, 0.5}, 3);
    set(it, g, named(g, "y"), (double[]){3}, 1);
    interp_run(it, false, 0);
}
END_TEST

/* ---- precision and initialization ---- */

START_TEST(f32_rounds_every_result) {
    const char *text = "model m { input x: f32[1]  a = x * 0.1  b = x + 0.000000001 }";
    Loaded L;
    Graph *g = load(&L, text, 1);
    Interp *i64 = interp_new(g, PREC_F64), *i32 = interp_new(g, PREC_F32);
    set(i64, g, named(g, "x"), (double[]){1}, 1);
    set(i32, g, named(g, "x"), (double[]){1}, 1);
    interp_run(i64, false, 0);
    interp_run(i32, false, 0);
    ck_assert_double_eq(interp_data(i64, named(g, "a"))[0], 0.1);
    ck_assert_double_eq(interp_data(i32, named(g, "a"))[0], 0.100000001490116119384765625); /* (float)0.1 */
    ck_assert_double_eq(interp_data(i64, named(g, "b"))[0], 1.000000001);
    ck_assert_double_eq(interp_data(i32, named(g, "b"))[0], 1.0); /* below half an ulp of 1.0f */
    interp_free(i64);
    interp_free(i32);
    unload(&L);
}
END_TEST

START_TEST(init_params_from_specs) {
    Loaded L;
    Graph *g = load(&L, "model m { input ids: i32[3]  e = embedding(ids, vocab: 6, dim: 3)  h = lstm(e, units: 2) }", 1);
    Interp *a = interp_new(g, PREC_F64), *b = interp_new(g, PREC_F64), *f = interp_new(g, PREC_F32);
    interp_init_params(a, 42);
    interp_init_params(b, 42);
    interp_init_params(f, 42);
    for (int i = 0; i < g->params.len; i++) {
        const Node *p = g->params.items[i];
        int64_t n = interp_size(g, p);
        ck_assert(memcmp(interp_data(a, p), interp_data(b, p), sizeof(double) * (size_t)n) == 0);
        for (int64_t k = 0; k < n; k++) {
            double v = interp_data(a, p)[k];
            ck_assert_double_eq(interp_data(f, p)[k], (double)(float)v);
        }
    }
    /* Each param from its own stream: the kernel is glorot_uniform from stream 1. */
    Node *W = param(g, "h.W");
    ck_assert_ptr_eq(g->params.items[1], W);
    double want[24];
    RtRng rng;
    rt_rng_seed(&rng, 42, 1);
    rt_init_glorot_uniform(want, W->type.dims, 2, &rng);
    for (int k = 0; k < 24; k++) ck_assert_double_eq(interp_data(a, W)[k], want[k]);
    static const double bias[8] = {0, 0, 1, 1, 0, 0, 0, 0};
    for (int k = 0; k < 8; k++) ck_assert_double_eq(interp_data(a, param(g, "h.b"))[k], bias[k]);
    for (int k = 0; k < 18; k++) ck_assert(fabs(interp_data(a, param(g, "e.embeddings"))[k]) <= 0.05);
    interp_init_params(b, 43);
    ck_assert(memcmp(interp_data(a, W), interp_data(b, W), sizeof want) != 0);
    interp_free(a);
    interp_free(b);
    interp_free(f);
    unload(&L);
}
END_TEST

/* ---- optimizers ---- */

typedef struct OptRig {
    Arena ar;
    Graph *g;
    Node *w, *gw, *w2, *gw2, *frozen, *gfrozen;
    Interp *it;
} OptRig;

static void rig_new(OptRig *r) {
    r->g = hand_graph(&r->ar, 1);
    r->w = source(r->g, OP_PARAM, tensor(DT_F32, false, 1, 3, 0, 0));
    r->gw = source(r->g, OP_PARAM, tensor(DT_F32, false, 1, 3, 0, 0));
    r->w2 = source(r->g, OP_PARAM, tensor(DT_F32, false, 1, 1, 0, 0));
    r->gw2 = source(r->g, OP_PARAM, tensor(DT_F32, false, 1, 1, 0, 0));
    r->frozen = source(r->g, OP_PARAM, tensor(DT_F32, false, 1, 1, 0, 0));
    r->frozen->param.trainable = false;
    r->gfrozen = source(r->g, OP_PARAM, tensor(DT_F32, false, 1, 1, 0, 0));
    r->it = interp_new(r->g, PREC_F64);
    memcpy(interp_data(r->it, r->w), (double[]){1, -2, 0.5}, sizeof(double) * 3);
    interp_data(r->it, r->w2)[0] = 0.25;
    interp_data(r->it, r->frozen)[0] = 7;
    interp_data(r->it, r->gfrozen)[0] = 1;
}

static void rig_step(OptRig *r, const Optimizer *o, const double *g, double g2, int64_t step) {
    memcpy(interp_data(r->it, r->gw), g, sizeof(double) * 3);
    interp_data(r->it, r->gw2)[0] = g2;
    const Node *params[3] = {r->w, r->w2, r->frozen}, *grads[3] = {r->gw, r->gw2, r->gfrozen};
    interp_optimizer_step(r->it, o, params, grads, 3, step);
    ck_assert_double_eq(interp_data(r->it, r->frozen)[0], 7);
}

static void rig_free(OptRig *r) {
    interp_free(r->it);
    arena_free(&r->ar);
}

static const double G1[3] = {0.1, -0.2, 0.3}, G2[3] = {-0.4, 0.05, 0.3};

/* Two steps of an optimizer against `rule`, the update written out per element:
 * w and the two slots of each element, gradient g at step t. */
typedef void Rule(const Optimizer *o, double *w, double *slot0, double *slot1, double g, int step);

static void check_two_steps(const Optimizer *o, Rule *rule) {
    OptRig r;
    rig_new(&r);
    double w[3] = {1, -2, 0.5}, s0[3] = {0}, s1[3] = {0};
    for (int t = 1; t <= 2; t++) {
        rig_step(&r, o, t == 1 ? G1 : G2, 0, t);
        for (int i = 0; i < 3; i++) {
            rule(o, &w[i], &s0[i], &s1[i], (t == 1 ? G1 : G2)[i], t);
            near(interp_data(r.it, r.w)[i], w[i], 1e-14, "weight", i);
        }
    }
    rig_free(&r);
}

static void sgd_rule(const Optimizer *o, double *w, double *v, double *unused, double g, int t) {
    (void)unused;
    (void)t;
    *v = o->momentum * *v - o->lr * g;
    *w = o->nesterov ? *w + o->momentum * *v - o->lr * g : *w + *v;
}

static void rmsprop_rule(const Optimizer *o, double *w, double *mom, double *ms, double g, int t) {
    (void)t;
    *ms = o->rho * *ms + (1 - o->rho) * g * g;
    if (o->momentum > 0) {
        *mom = o->momentum * *mom + o->lr * g / sqrt(*ms + o->epsilon);
        *w -= *mom;
    } else {
        *w -= o->lr * g / (sqrt(*ms) + o->epsilon);
    }
}

static void adam_rule(const Optimizer *o, double *w, double *m, double *v, double g, int t) {
    *m = o->beta_1 * *m + (1 - o->beta_1) * g;
    *v = o->beta_2 * *v + (1 - o->beta_2) * g * g;
    double mhat = *m / (1 - pow(o->beta_1, t)), vhat = *v / (1 - pow(o->beta_2, t));
    /* Keras folds the corrections into the rate, and epsilon scales with sqrt(1 - b2^t). */
    *w -= o->lr * mhat / (sqrt(vhat) + o->epsilon / sqrt(1 - pow(o->beta_2, t)));
}

START_TEST(sgd_steps) {
    OptRig r;
    rig_new(&r);
    Optimizer plain = {.kind = OPT_SGD, .lr = 0.1};
    rig_step(&r, &plain, G1, 2, 1);
    near(interp_data(r.it, r.w)[0], 1 - 0.01, 1e-15, "plain sgd", 0);
    near(interp_data(r.it, r.w)[1], -2 + 0.02, 1e-15, "plain sgd", 1);
    near(interp_data(r.it, r.w2)[0], 0.25 - 0.2, 1e-15, "plain sgd", 2);
    rig_free(&r);
    Optimizer mom = {.kind = OPT_SGD, .lr = 0.1, .momentum = 0.9};
    check_two_steps(&mom, sgd_rule);
    /* By hand: v1 = -0.01, w1 = 0.99; v2 = 0.9 * -0.01 + 0.04 = 0.031, w2 = 1.021. */
    rig_new(&r);
    rig_step(&r, &mom, G1, 0, 1);
    rig_step(&r, &mom, G2, 0, 2);
    near(interp_data(r.it, r.w)[0], 1.021, 1e-15, "momentum", 0);
    rig_free(&r);
    Optimizer nesterov = {.kind = OPT_SGD, .lr = 0.1, .momentum = 0.9, .nesterov = true};
    check_two_steps(&nesterov, sgd_rule);
}
END_TEST

START_TEST(rmsprop_steps) {
    Optimizer plain = {.kind = OPT_RMSPROP, .lr = 0.01, .rho = 0.9, .epsilon = 1e-7};
    check_two_steps(&plain, rmsprop_rule);
    /* First step by hand: ms = 0.1 g^2, w -= 0.01 g / (sqrt(0.1) |g| + eps). */
    OptRig r;
    rig_new(&r);
    rig_step(&r, &plain, G1, 0, 1);
    near(interp_data(r.it, r.w)[0], 1 - 0.01 * 0.1 / (sqrt(0.1) * 0.1 + 1e-7), 1e-15, "rmsprop", 0);
    rig_free(&r);
    Optimizer mom = {.kind = OPT_RMSPROP, .lr = 0.01, .rho = 0.8, .momentum = 0.5, .epsilon = 1e-7};
    check_two_steps(&mom, rmsprop_rule);
}
END_TEST

START_TEST(adam_steps) {
    Optimizer o = {.kind = OPT_ADAM, .lr = 0.001, .beta_1 = 0.9, .beta_2 = 0.999, .epsilon = 1e-7};
    check_two_steps(&o, adam_rule);
    /* Adam's first step moves each weight by about lr against the gradient's sign. */
    OptRig r;
    rig_new(&r);
    rig_step(&r, &o, G1, 0, 1);
    static const double w0[3] = {1, -2, 0.5};
    for (int i = 0; i < 3; i++) near(interp_data(r.it, r.w)[i], w0[i] - 0.001 * (G1[i] > 0 ? 1 : -1), 1e-5, "adam", i);
    rig_free(&r);
}
END_TEST

START_TEST(gradient_clipping) {
    double g[3] = {3, 4, 0};
    OptRig r;
    /* clipnorm: each tensor to norm 1; w2's gradient (0.5) is under it. */
    Optimizer norm = {.kind = OPT_SGD, .lr = 1, .clipnorm = 1};
    rig_new(&r);
    rig_step(&r, &norm, g, 0.5, 1);
    near(interp_data(r.it, r.w)[0], 1 - 0.6, 1e-15, "clipnorm", 0);
    near(interp_data(r.it, r.w)[1], -2 - 0.8, 1e-15, "clipnorm", 1);
    near(interp_data(r.it, r.w2)[0], 0.25 - 0.5, 1e-15, "clipnorm", 2);
    rig_free(&r);
    Optimizer value = {.kind = OPT_SGD, .lr = 1, .clipvalue = 0.5};
    rig_new(&r);
    rig_step(&r, &value, (double[]){3, -4, 0.25}, -0.75, 1);
    near(interp_data(r.it, r.w)[0], 0.5, 1e-15, "clipvalue", 0);
    near(interp_data(r.it, r.w)[1], -1.5, 1e-15, "clipvalue", 1);
    near(interp_data(r.it, r.w)[2], 0.25, 1e-15, "clipvalue", 2);
    near(interp_data(r.it, r.w2)[0], 0.75, 1e-15, "clipvalue", 3);
    rig_free(&r);
    /* global_clipnorm: the joint norm of (3, 4, 0) and (12) is 13; 6.5 halves both. */
    Optimizer global = {.kind = OPT_SGD, .lr = 1, .global_clipnorm = 6.5};
    rig_new(&r);
    rig_step(&r, &global, g, 12, 1);
    near(interp_data(r.it, r.w)[0], 1 - 1.5, 1e-15, "global_clipnorm", 0);
    near(interp_data(r.it, r.w)[1], -2 - 2, 1e-15, "global_clipnorm", 1);
    near(interp_data(r.it, r.w2)[0], 0.25 - 6, 1e-15, "global_clipnorm", 2);
    rig_free(&r);
}
END_TEST

/* ---- the example models run ---- */

START_TEST(examples_run) {
    static const char *const names[] = {"alarm",      "charlm", "forecast", "imdb_lstm_small",
                                        "imdb_bigru", "poet",   "wordlm"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char path[4096];
        const char *r = getenv("SEQC_SOURCE_ROOT");
        snprintf(path, sizeof path, "%s/examples/%s.seq", r ? r : ".", names[k]);
        Diags d;
        diag_init(&d);
        Program *p = program_load(path, &d);
        ck_assert_ptr_nonnull(p);
        Arena ar;
        arena_init(&ar);
        ElabOptions o = {.batch = 2};
        Model m;
        ck_assert_msg(elab_model(p, NULL, &o, &ar, &m, &d), "%s does not elaborate", names[k]);
        Graph *g = m.graph;
        Interp *it = interp_new(g, PREC_F32);
        interp_init_params(it, 1);
        interp_zero_state(it);
        for (int i = 0; i < g->inputs.len + g->targets.len; i++) {
            const Node *n = i < g->inputs.len ? g->inputs.items[i] : g->targets.items[i - g->inputs.len];
            for (int64_t j = 0; j < interp_size(g, n); j++)
                interp_data(it, n)[j] = n->type.dtype == DT_I32 ? (double)((j * 7 + i) % 3) : 0.25 * (double)(j % 4);
        }
        interp_run(it, true, 9);
        double loss = interp_data(it, g->loss)[0];
        ck_assert_msg(isfinite(loss) && loss > 0, "%s: loss %g", names[k], loss);
        for (int i = 0; i < g->metrics.len; i++) {
            double acc = interp_data(it, g->metrics.items[i])[0];
            ck_assert_msg(acc >= 0 && acc <= 1, "%s: accuracy %g", names[k], acc);
        }
        interp_apply_updates(it);
        interp_free(it);
        arena_free(&ar);
        diag_free(&d);
        program_free(p);
    }
}
END_TEST

/* |got - want| in units of the last place of want rounded to f32 (of the
 * smallest denormal where want is below the normal range). */
static double ulps(float got, double want) {
    if (isinf(want) || isnan(want)) return got == want || (isnan(got) && isnan(want)) ? 0 : INFINITY;
    float w = fabsf((float)want);
    double unit = w < 1.17549435e-38f ? 1.40129846e-45 : (double)(nextafterf(w, INFINITY) - w);
    return fabs((double)got - want) / unit;
}

/* mathf.c, the f32 exp and tanh both the interpreter and the generated code
 * compute: within 2 ulp of the exact function over the float range (a
 * sample of about a million bit patterns, every sign and exponent), and the
 * special values right. */
START_TEST(f32_exp_and_tanh_accuracy) {
    double worst_exp = 0, worst_tanh = 0;
    float at_exp = 0, at_tanh = 0;
    for (uint64_t b = 0; b < 0x100000000ull; b += 4093) {
        uint32_t bits = (uint32_t)b;
        float x;
        memcpy(&x, &bits, sizeof x);
        if (isnan(x)) continue;
        double e = ulps(seqc_expf(x), exp((double)x)), t = ulps(seqc_tanhf(x), tanh((double)x));
        if (e > worst_exp) worst_exp = e, at_exp = x;
        if (t > worst_tanh) worst_tanh = t, at_tanh = x;
    }
    ck_assert_msg(worst_exp <= 2, "exp: %.2f ulp at %a", worst_exp, (double)at_exp);
    ck_assert_msg(worst_tanh <= 2, "tanh: %.2f ulp at %a", worst_tanh, (double)at_tanh);
    ck_assert(isnan(seqc_expf(NAN)) && isnan(seqc_tanhf(NAN)));
    ck_assert(seqc_expf(INFINITY) == INFINITY && seqc_expf(-INFINITY) == 0 && seqc_expf(89.0f) == INFINITY);
    ck_assert(seqc_expf(0) == 1 && seqc_expf(-104.0f) == 0 && seqc_expf(-100.0f) > 0);
    ck_assert(seqc_tanhf(INFINITY) == 1 && seqc_tanhf(-INFINITY) == -1 && seqc_tanhf(20.0f) == 1);
    ck_assert(seqc_tanhf(0.0f) == 0 && signbit(seqc_tanhf(-0.0f)));
    /* Either side of the switch from the polynomial to exp. */
    ck_assert_double_le(ulps(seqc_tanhf(nextafterf(0.625f, 0)), tanh((double)nextafterf(0.625f, 0))), 2);
    ck_assert_double_le(ulps(seqc_tanhf(0.625f), tanh(0.625)), 2);
}
END_TEST

/* The next of a seeded xorshift stream, as a double in [0, 1). */
static double next_unit(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (double)(*s >> 11) / 9007199254740992.0;
}

/* |got - want| in units of the last place of want (of got itself at 0). */
static double ulps_double(double got, double want) {
    return want == 0 ? fabs(got) : fabs(got - want) / (nextafter(want, INFINITY) - want);
}

/* The double exp of the losses: within 2 ulp of long double's expl over the
 * range where it is normal (2 million seeded points, a quarter in [-1, 1]). */
START_TEST(double_exp_accuracy) {
    double worst = 0, at = 0;
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < 2000000; i++) {
        double u = next_unit(&s), x = i % 4 ? -708.0 + u * 1417.0 : 2 * u - 1;
        double e = ulps_double(seqc_exp(x), (double)expl((long double)x));
        if (e > worst) worst = e, at = x;
    }
    ck_assert_msg(worst <= 2, "exp: %.2f ulp at %.17g", worst, at);
    ck_assert(isnan(seqc_exp(NAN)) && seqc_exp(INFINITY) == INFINITY && seqc_exp(-INFINITY) == 0);
    ck_assert(seqc_exp(0) == 1 && seqc_exp(710) == INFINITY && seqc_exp(-746) == 0 && seqc_exp(-740) > 0);
}
END_TEST

/* The double log1p of a loss from logits, on [0, 1]: within 2.5 ulp of long
 * double's log1pl (4 million seeded points, spread over [0, 1] and down to
 * 2^-60). */
START_TEST(double_log1p_accuracy) {
    double worst = 0, at = 0;
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < 4000000; i++) {
        double u = next_unit(&s), x = i % 2 ? u : ldexp(u, -(i % 61));
        double e = ulps_double(seqc_log1p_unit(x), (double)log1pl((long double)x));
        if (e > worst) worst = e, at = x;
    }
    ck_assert_msg(worst <= 2.5, "log1p: %.2f ulp at %.17g", worst, at);
    ck_assert(isnan(seqc_log1p_unit(NAN)) && seqc_log1p_unit(0) == 0);
    ck_assert_double_eq(seqc_log1p_unit(1), log1p(1.0));
}
END_TEST

int main(void) {
    Suite *s = suite_create("interp");
    TCase *cells = tcase_create("cells");
    tcase_add_test(cells, rnn_one_unit_by_hand);
    tcase_add_test(cells, rnn_sequences);
    tcase_add_test(cells, lstm_sequences);
    tcase_add_test(cells, gru_sequences);
    tcase_add_test(cells, masked_steps_carry_the_state);
    tcase_add_test(cells, bidirectional_is_forward_then_backward);
    tcase_add_test(cells, backward_sequences_in_walked_order);
    tcase_add_test(cells, scan_keeps_outputs_and_states);
    tcase_add_test(cells, scan_without_outputs);
    tcase_add_test(cells, stateful_layer_continues);
    tcase_add_test(cells, dropout_masks);
    tcase_add_test(cells, cell_dropout);
    tcase_add_test(cells, batchnorm_training_and_inference);
    suite_add_tcase(s, cells);
    TCase *losses = tcase_create("losses");
    tcase_add_test(losses, binary_crossentropy_values);
    tcase_add_test(losses, sparse_crossentropy_values);
    tcase_add_test(losses, categorical_crossentropy_values);
    tcase_add_test(losses, mse_and_mean_values);
    tcase_add_test(losses, accuracy_values);
    suite_add_tcase(s, losses);
    TCase *grads = tcase_create("gradient ops");
    tcase_add_test(grads, activation_grads);
    tcase_add_test(grads, structural_grads);
    tcase_add_test(grads, embedding_grad);
    tcase_add_test(grads, pooling_grads);
    tcase_add_test(grads, loss_grads);
    tcase_add_test(grads, clipped_loss_grads_are_zero);
    suite_add_tcase(s, grads);
    TCase *ops = tcase_create("ops");
    tcase_add_test(ops, structural_ops);
    tcase_add_test(ops, embedding_lookup_and_flatten);
    tcase_add_test_raise_signal(ops, id_outside_vocabulary_aborts, SIGABRT);
    tcase_add_test_raise_signal(ops, target_class_outside_aborts, SIGABRT);
    tcase_add_test(ops, f32_rounds_every_result);
    tcase_add_test(ops, f32_exp_and_tanh_accuracy);
    tcase_add_test(ops, double_exp_accuracy);
    tcase_add_test(ops, double_log1p_accuracy);
    tcase_add_test(ops, init_params_from_specs);
    suite_add_tcase(s, ops);
    TCase *opt = tcase_create("optimizers");
    tcase_add_test(opt, sgd_steps);
    tcase_add_test(opt, rmsprop_steps);
    tcase_add_test(opt, adam_steps);
    tcase_add_test(opt, gradient_clipping);
    suite_add_tcase(s, opt);
    TCase *ex = tcase_create("examples");
    tcase_set_timeout(ex, 120);
    tcase_add_test(ex, examples_run);
    suite_add_tcase(s, ex);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
