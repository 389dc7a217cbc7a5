/* Reverse mode. Walk the nodes backwards; each op's rule turns the gradient
 * of its result into gradients of its inputs, built as new nodes from the same
 * op table; gradients that meet are summed. Rules are in ops.def order. */
#include "autodiff.h"

#include <stdlib.h>
#include <string.h>

#include "shape.h"

typedef struct AD {
    Graph *g;           /* where the gradient nodes go */
    int n;              /* nodes [0, n) of g have gradient slots */
    Node **grad;        /* grad[id]: d(loss)/d(node), summed so far */
    bool *needs;        /* needs[id]: the node depends on something we differentiate for */
    Node ***scan_dstate;/* scan_dstate[id][i]: gradient of a scan's final state i */
    Span span;          /* of the node whose rule is running: derived nodes point at the user's line */
    int64_t window;
    Diags *d;           /* user errors: an extern without a derivative */
    bool *failed;       /* shared with the walks of scan bodies */
} AD;

static void internal(const char *what, const Node *n, const char *why) {
    fprintf(stderr, "seqc: internal error in autodiff: %s %s: %s\n", what, n ? op_name(n->op) : "", why ? why : "");
    abort();
}

/* Appends a node whose payload and declared type the caller has set. */
static Node *emit(Node *n) {
    const char *why = NULL;
    if (!shape_infer(n, &why)) internal("building", n, why);
    return n;
}

static Node *node(AD *a, OpKind op, int nin, Node **in) { return graph_add(a->g, op, a->span, nin, in); }
static Node *op1(AD *a, OpKind op, Node *x) { return emit(node(a, op, 1, &x)); }
static Node *op2(AD *a, OpKind op, Node *x, Node *y) { return emit(node(a, op, 2, (Node *[]){x, y})); }

static Node *constant(AD *a, double v) {
    Node *n = node(a, OP_CONST, 0, NULL);
    n->constant = v;
    return emit(n);
}

static Node *zeros(AD *a, const Type *t) {
    Node *n = node(a, OP_ZEROS, 0, NULL);
    n->type = *t;
    return emit(n);
}

/* An op whose result type its creator declares. */
static Node *declared(AD *a, OpKind op, int nin, Node **in, const Type *t) {
    Node *n = node(a, op, nin, in);
    n->type = *t;
    return n;
}

/* A broadcast operand's gradient: summed down to the operand's type. */
static Node *sum_to(AD *a, Node *dy, const Type *t) {
    if (type_equal(&dy->type, t)) return dy;
    return emit(declared(a, OP_SUM_TO, 1, &dy, t));
}

/* A gradient broadcast up to the type `t` (from a reduction's result). */
static Node *spread(AD *a, Node *dy, const Type *t) { return op2(a, OP_ADD, zeros(a, t), dy); }

static void accum(AD *a, Node *x, Node *dx) {
    if (!dx || x->id >= a->n || x->graph != a->g || !a->needs[x->id]) return;
    if (!type_equal(&dx->type, &x->type)) dx = sum_to(a, dx, &x->type);
    a->grad[x->id] = a->grad[x->id] ? op2(a, OP_ADD, a->grad[x->id], dx) : dx;
}

static Type step_type(const Type *seq) {
    Type t = *seq;
    memmove(t.dims, t.dims + 1, sizeof(int64_t) * (size_t)(t.rank - 1));
    t.rank--;
    t.dims[t.rank] = 0;
    return t;
}

static Type seq_type(const Type *step, int64_t steps) {
    Type t = *step;
    memmove(t.dims + 1, t.dims, sizeof(int64_t) * (size_t)t.rank);
    t.dims[0] = steps;
    t.rank++;
    t.batched = true;
    return t;
}

static Node *time_slice(AD *a, Node *x, int64_t begin, int64_t len) {
    if (begin == 0 && len == x->type.dims[0]) return x;
    Node *n = node(a, OP_TIME_SLICE, 1, &x);
    n->slice.start = begin;
    n->slice.len = len;
    return emit(n);
}

static void grad_scan(AD *a, Node *s);

/* ---- one rule per op ---------------------------------------------------- */

static void grad_batchnorm(AD *a, Node *n, Node *dy) {
    /* Training mode: the batch's own statistics, so they carry gradient too.
     * dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) */
    Node *x = n->in[0], *gamma = n->in[1], *beta = n->in[2];
    Node *mu = op1(a, OP_MEAN_LEAD, x);
    Node *xc = op2(a, OP_SUB, x, mu);
    Node *var = op1(a, OP_MEAN_LEAD, op2(a, OP_MUL, xc, xc));
    Node *rstd = op1(a, OP_RSQRT, op2(a, OP_ADD, var, constant(a, n->batchnorm.epsilon)));
    Node *xhat = op2(a, OP_MUL, xc, rstd);
    accum(a, beta, op1(a, OP_SUM_LEAD, dy));
    accum(a, gamma, op1(a, OP_SUM_LEAD, op2(a, OP_MUL, dy, xhat)));
    if (!a->needs[x->id]) return;
    Node *dxhat = op2(a, OP_MUL, dy, gamma);
    Node *centred = op2(a, OP_SUB, dxhat, op1(a, OP_MEAN_LEAD, dxhat));
    Node *proj = op2(a, OP_MUL, xhat, op1(a, OP_MEAN_LEAD, op2(a, OP_MUL, dxhat, xhat)));
    accum(a, x, op2(a, OP_MUL, rstd, op2(a, OP_SUB, centred, proj)));
}

static void rule(AD *a, Node *n, Node *dy) {
    Node **in = n->in;
    switch (n->op) {
    case OP_INPUT: case OP_PARAM: case OP_CONST: case OP_ZEROS: case OP_STATEVAR: case OP_DROPMASK:
    case OP_STEP_IN: case OP_STATE_IN: case OP_CAPTURE: case OP_NONZERO: case OP_ACCURACY:
        return; /* leaves, and what has no gradient */
    case OP_NEG:
        accum(a, in[0], op1(a, OP_NEG, dy));
        return;
    case OP_TANH: case OP_SIGMOID: case OP_HARD_SIGMOID: case OP_RELU: case OP_EXP: case OP_LOG: case OP_RSQRT: {
        Node *g = node(a, OP_ACT_GRAD, 3, (Node *[]){in[0], n, dy});
        g->act = n->op;
        accum(a, in[0], emit(g));
        return;
    }
    case OP_EXTERN: { /* dx = dy * grad(x), the derivative itself an extern call */
        if (!n->ext->grad) {
            diag_error(a->d, n->span, "cannot differentiate through extern '%s': it has no derivative", n->ext->name);
            diag_note(a->d, n->ext->decl, "'%s' is declared here; name its derivative, float NAME(float x), with "
                      "'grad NAME' after the library", n->ext->name);
            *a->failed = true;
            return;
        }
        Node *g = node(a, OP_EXTERN, 1, &in[0]);
        g->ext = n->ext->grad;
        accum(a, in[0], op2(a, OP_MUL, dy, emit(g)));
        return;
    }
    case OP_ADD:
        accum(a, in[0], dy);
        accum(a, in[1], dy);
        return;
    case OP_SUB:
        accum(a, in[0], dy);
        if (a->needs[in[1]->id]) accum(a, in[1], op1(a, OP_NEG, dy));
        return;
    case OP_MUL:
        if (a->needs[in[0]->id]) accum(a, in[0], op2(a, OP_MUL, dy, in[1]));
        if (a->needs[in[1]->id]) accum(a, in[1], op2(a, OP_MUL, dy, in[0]));
        return;
    case OP_DIV: /* d(x/y)/dy = -(x/y)/y */
        if (a->needs[in[0]->id]) accum(a, in[0], op2(a, OP_DIV, dy, in[1]));
        if (a->needs[in[1]->id]) accum(a, in[1], op1(a, OP_NEG, op2(a, OP_DIV, op2(a, OP_MUL, dy, n), in[1])));
        return;
    case OP_SOFTMAX:
        accum(a, in[0], op2(a, OP_SOFTMAX_GRAD, n, dy));
        return;
    case OP_MATMUL:
        if (a->needs[in[0]->id]) accum(a, in[0], op2(a, OP_MATMUL_T, dy, in[1]));
        if (a->needs[in[1]->id]) accum(a, in[1], op2(a, OP_MATMUL_W, in[0], dy));
        return;
    case OP_EMBED:
        accum(a, in[1], emit(declared(a, OP_EMBED_GRAD, 2, (Node *[]){in[0], dy}, &in[1]->type)));
        return;
    case OP_SLICE: {
        Node *g = declared(a, OP_SLICE_GRAD, 1, &dy, &in[0]->type);
        g->slice = n->slice;
        accum(a, in[0], emit(g));
        return;
    }
    case OP_CONCAT: {
        int64_t off = 0;
        for (int i = 0; i < n->nin; i++) {
            int64_t len = in[i]->type.dims[in[i]->type.rank - 1];
            if (a->needs[in[i]->id]) {
                Node *s = node(a, OP_SLICE, 1, &dy);
                s->slice.start = off;
                s->slice.len = len;
                accum(a, in[i], emit(s));
            }
            off += len;
        }
        return;
    }
    case OP_REVERSE:
        accum(a, in[0], op1(a, OP_REVERSE, dy));
        return;
    case OP_LAST: {
        Node *g = declared(a, OP_PLACE_STEP, 1, &dy, &in[0]->type);
        g->index = (int)(in[0]->type.dims[0] - 1);
        accum(a, in[0], emit(g));
        return;
    }
    case OP_RESHAPE:
        accum(a, in[0], emit(declared(a, OP_RESHAPE, 1, &dy, &in[0]->type)));
        return;
    case OP_TRANSPOSE:
        accum(a, in[0], op1(a, OP_TRANSPOSE, dy));
        return;
    case OP_MAX_TIME:
    case OP_MEAN_TIME: {
        Node *args[3] = {in[0], dy, n->nin > 1 ? in[1] : NULL};
        accum(a, in[0], emit(node(a, n->op == OP_MAX_TIME ? OP_MAX_TIME_GRAD : OP_MEAN_TIME_GRAD, n->nin + 1, args)));
        return;
    }
    case OP_BATCHNORM:
        grad_batchnorm(a, n, dy);
        return;
    case OP_MEAN_LEAD: {
        int64_t count = type_elements(&in[0]->type) / in[0]->type.dims[in[0]->type.rank - 1] *
                        (in[0]->type.batched ? n->graph->batch : 1);
        accum(a, in[0], spread(a, op2(a, OP_MUL, dy, constant(a, 1.0 / (double)count)), &in[0]->type));
        return;
    }
    case OP_SUM_LEAD:
        accum(a, in[0], spread(a, dy, &in[0]->type));
        return;
    case OP_TIME_SLICE: {
        Node *g = node(a, OP_TIME_PAD, 1, &dy);
        g->slice.start = n->slice.start;
        g->slice.len = in[0]->type.dims[0];
        accum(a, in[0], emit(g));
        return;
    }
    case OP_TIME_PAD:
        accum(a, in[0], time_slice(a, dy, n->slice.start, in[0]->type.dims[0]));
        return;
    case OP_SCAN:
        grad_scan(a, n);
        return;
    case OP_SCAN_STATE: {
        Node *s = in[0];
        /* A state taken before the end (the carry of TBPTT(k1, k2)) feeds the
         * next window, where the gradient stops by definition. */
        if (n->scan_state.after != s->in[0]->type.dims[0]) return;
        Node **slot = &a->scan_dstate[s->id][n->scan_state.index];
        *slot = *slot ? op2(a, OP_ADD, *slot, dy) : dy;
        return;
    }
    case OP_SCAN_OUT:
        internal("differentiating", n, "the extra outputs of a scan are the backward pass's own");
        return;
    case OP_BCE: case OP_SCE: case OP_CCE: case OP_MSE: {
        Node *g = node(a, OP_LOSS_GRAD, 3, (Node *[]){in[0], in[1], dy});
        g->loss = n->loss;
        accum(a, in[0], emit(g));
        return;
    }
    case OP_MEAN_ALL: {
        double count = (double)type_elements(&in[0]->type) * (in[0]->type.batched ? (double)n->graph->batch : 1);
        accum(a, in[0], spread(a, op2(a, OP_MUL, dy, constant(a, 1.0 / count)), &in[0]->type));
        return;
    }
    case OP_ACT_GRAD: case OP_MATMUL_T: case OP_MATMUL_W: case OP_SUM_TO: case OP_SOFTMAX_GRAD:
    case OP_EMBED_GRAD: case OP_SLICE_GRAD: case OP_PLACE_STEP: case OP_MAX_TIME_GRAD: case OP_MEAN_TIME_GRAD:
    case OP_LOSS_GRAD: case OP_COUNT:
        break;
    }
    internal("no gradient rule for", n, "second derivatives are not supported");
}

/* ---- the walk ------------------------------------------------------------ */

/* needs[i]: node i depends on a value being differentiated for (marked by the caller). */
static void mark_needs(AD *a) {
    for (int i = 0; i < a->n; i++) {
        Node *n = a->g->nodes.items[i];
        if (n->op == OP_DROPMASK || n->op == OP_NONZERO || n->op == OP_ACCURACY) continue;
        for (int k = 0; k < n->nin && !a->needs[i]; k++) a->needs[i] = a->needs[n->in[k]->id];
    }
}

static void walk(AD *a) {
    for (int i = a->n - 1; i >= 0; i--) {
        Node *n = a->g->nodes.items[i];
        Node *dy = a->grad[i];
        bool scan_has_grad = false;
        if (n->op == OP_SCAN && a->scan_dstate[i])
            for (int k = 0; k < n->scan.nstate; k++) scan_has_grad |= a->scan_dstate[i][k] != NULL;
        if ((!dy && !scan_has_grad) || !a->needs[i]) continue;
        if (dy && !dy->name && n->name) dy->name = arena_printf(a->g->arena, "grad of %s", n->name);
        a->span = n->span;
        rule(a, n, dy);
    }
}

static void ad_init(AD *a, Graph *g, int64_t window) {
    memset(a, 0, sizeof *a);
    a->g = g;
    a->n = g->nodes.len;
    a->grad = ARENA_ARRAY(g->arena, Node *, a->n ? a->n : 1);
    a->needs = ARENA_ARRAY(g->arena, bool, a->n ? a->n : 1);
    a->scan_dstate = ARENA_ARRAY(g->arena, Node **, a->n ? a->n : 1);
    for (int i = 0; i < a->n; i++) {
        Node *n = g->nodes.items[i];
        if (n->op == OP_SCAN) a->scan_dstate[i] = ARENA_ARRAY(g->arena, Node *, n->scan.nstate);
    }
    a->window = window;
}

/* Activations whose derivative reads their value and not their input. */
static bool value_derivative(OpKind op) { return op == OP_TANH || op == OP_SIGMOID || op == OP_EXP; }

/* The one node that reads x, or NULL (uses: graph_uses, outputs counted). */
static Node *only_reader(const Graph *fb, const Node *x, const int *uses) {
    if (uses[x->id] != 1) return NULL;
    for (int j = x->id + 1; j < fb->nodes.len; j++) {
        Node *y = fb->nodes.items[j];
        for (int k = 0; k < y->nin; k++)
            if (y->in[k] == x) return y;
    }
    return NULL;
}

/* What the forward keeps of a recurrent product (its end, below) for the
 * backward step, in its place: for each of its uses, a slice of it (or
 * the product whole), the value_derivative activation the slice leads to,
 * directly (an LSTM's gates, a SimpleRNN's tanh) or through one add with
 * another value (a GRU's sigmoid(xz + hz)); else the slice itself (a GRU's
 * hh, which r * hh reads). As many floats as the product, and the
 * backward computes none of those activations again. 0 (keep the product)
 * when no use leads to an activation, a use is not a slice, or past max. */
static int kept_of(const Graph *fb, const Node *end, const int *uses, Node **kept, int max) {
    int n = 0, users = 0, acts = 0;
    for (int i = end->id + 1; i < fb->nodes.len; i++) {
        Node *x = fb->nodes.items[i];
        bool reads = false;
        for (int k = 0; k < x->nin; k++) reads |= x->in[k] == end;
        if (!reads) continue;
        users++;
        Node *act = x->op == OP_SLICE ? only_reader(fb, x, uses) : x;
        if (act && x->op == OP_SLICE && (act->op == OP_ADD || act->op == OP_SUB) && act->in[0] != act->in[1])
            act = only_reader(fb, act, uses);
        bool is_act = act && act->nin == 1 && value_derivative(act->op);
        if ((!is_act && x->op != OP_SLICE) || n == max) return 0;
        acts += is_act;
        kept[n++] = is_act ? act : x;
    }
    return users == uses[end->id] && acts > 0 ? n : 0;
}

/* ---- scans -------------------------------------------------------------- */

static Node *placeholder(Graph *g, OpKind op, int index, const Type *t, Span at, const char *name) {
    Node *n = graph_add(g, op, at, 0, NULL);
    n->index = index;
    n->type = *t;
    n->name = name;
    return n;
}

static Node *first_state_in(const Graph *body, int index) {
    for (int i = 0; i < body->nodes.len; i++) {
        Node *n = body->nodes.items[i];
        if (n->op == OP_STATE_IN && n->index == index) return n;
    }
    return NULL;
}

static void grad_scan(AD *a, Node *s) {
    Graph *fb = s->scan.body;
    Arena *arena = a->g->arena;
    int nseq = s->scan.nseq, nst = s->scan.nstate, ncap = s->scan.ncapture;
    int64_t steps = s->in[0]->type.dims[0];
    int64_t w = a->window > 0 && a->window < steps ? a->window : steps;
    int64_t begin = s->scan.reverse ? 0 : steps - w; /* the last w steps walked, as time indices */
    if (s->scan.nout != 1) internal("differentiating", s, "a scan differentiated twice");
    if (s->scan.walk_end > 0) internal("differentiating", s, "a scan over some of its steps (it has no gradient)");

    /* The forward scan keeps the states entering each step of the window. */
    Node *hist[64];
    if (nst > 64) internal("differentiating", s, "more than 64 states");
    for (int i = 0; i < nst; i++) {
        Node *st = first_state_in(fb, i);
        if (!st) st = placeholder(fb, OP_STATE_IN, i, &((Node *)s->in[nseq + i])->type, s->span, NULL);
        ptrvec_push(arena, &fb->outputs, st);
    }
    s->scan.nout = 1 + nst;
    s->scan.keep_begin = begin;
    s->scan.keep_end = begin + w;
    for (int i = 0; i < nst; i++) {
        Node *h = node(a, OP_SCAN_OUT, 1, &s);
        h->index = 1 + i;
        hist[i] = emit(h);
    }
    /* ... and each step's recurrent products (a matmul of a value computed
     * from a carried state: h @ U), which the backward step then reads
     * instead of computing again: B x N floats a step against a product
     * (and its wait for the threads) inside the backward loop. What a
     * product is kept as is the end of the adds that only bring the step's
     * input and a bias to it (an LSTM's pre-activations x_t W + h U + b):
     * the step computes them anyway, and an add's gradient reads no value,
     * so the backward needs neither the product nor the step's input for
     * them (nor a pass over all steps adding them up again). Where those
     * lead to activations whose derivative reads their value (an LSTM's
     * gates, a SimpleRNN's tanh, a GRU's z and r: kept_of), the activations
     * are kept instead, as many floats, and the backward computes none of
     * them again. */
    Node *prod_fwd[16], *prod_kept[16];
    int nprod = 0;
    bool *from_state = ARENA_ARRAY(arena, bool, fb->nodes.len ? fb->nodes.len : 1);
    int *uses = graph_uses(fb, arena);
    for (int i = 0; i < fb->nodes.len; i++) {
        Node *f = fb->nodes.items[i];
        from_state[i] = f->op == OP_STATE_IN;
        for (int k = 0; k < f->nin && !from_state[i]; k++) from_state[i] = from_state[f->in[k]->id];
    }
    for (int i = 0; i < fb->nodes.len; i++) {
        Node *f = fb->nodes.items[i];
        if (f->op != OP_MATMUL || !from_state[f->in[0]->id] || nprod == 16) continue;
        Node *end = f;
        for (int j = end->id + 1; j < fb->nodes.len && uses[end->id] == 1; j++) {
            Node *r = fb->nodes.items[j];
            if (r->nin != 2 || (r->in[0] != end && r->in[1] != end)) continue;
            Node *other = r->in[0] == end ? r->in[1] : r->in[0];
            if ((r->op != OP_ADD && r->op != OP_SUB) || other == end || from_state[other->id] ||
                !type_equal(&r->type, &end->type))
                break;
            end = r;
        }
        Node *instead[16];
        int ninstead = kept_of(fb, end, uses, instead, 16 - nprod);
        for (int j = 0; j < (ninstead ? ninstead : 1); j++) {
            Node *kept = ninstead ? instead[j] : end;
            ptrvec_push(arena, &fb->outputs, kept);
            Node *k = node(a, OP_SCAN_OUT, 1, &s);
            k->index = 1 + nst + nprod;
            s->scan.nout++;
            prod_fwd[nprod] = kept;
            prod_kept[nprod++] = emit(k);
        }
    }

    /* The backward step's inputs: the forward sequences and history over the
     * window, and the gradient of each step's output. */
    Node *out0 = fb->outputs.items[nst];
    Type step_out = out0->type;
    Type win_out = seq_type(&step_out, w);
    Node *g0 = a->grad[s->id], *dyw;
    if (!g0) {
        dyw = zeros(a, &win_out);
    } else if (s->scan.sequences) {
        dyw = time_slice(a, g0, begin, w);
    } else {
        dyw = declared(a, OP_PLACE_STEP, 1, &g0, &win_out);
        dyw->index = s->scan.reverse ? 0 : (int)(w - 1);
        emit(dyw);
    }
    int ncarry = nst, acc_of[128];
    if (ncap > 128) internal("differentiating", s, "more than 128 captures");
    for (int k = 0; k < ncap; k++) acc_of[k] = a->needs[s->in[nseq + nst + k]->id] ? ncarry++ : -1;

    Graph *gb = graph_new(arena, a->g, arena_printf(arena, "grad of %s", s->scan.cell ? s->scan.cell : "scan"));
    Node **map = ARENA_ARRAY(arena, Node *, fb->nodes.len ? fb->nodes.len : 1);
    Node *px[64], *ph[64], *pc[128], *pcarry[192];
    if (nseq > 64) internal("differentiating", s, "more than 64 sequences");
    for (int i = 0; i < nseq; i++) {
        Type t = step_type(&s->in[i]->type);
        px[i] = placeholder(gb, OP_STEP_IN, i, &t, s->span, NULL);
    }
    for (int i = 0; i < nst; i++)
        ph[i] = placeholder(gb, OP_STEP_IN, nseq + i, &s->in[nseq + i]->type, s->span, "state before the step");
    Node *pdy = placeholder(gb, OP_STEP_IN, nseq + nst, &step_out, s->span, "grad of the step's output");
    Node *pprod[16];
    for (int j = 0; j < nprod; j++)
        pprod[j] = placeholder(gb, OP_STEP_IN, nseq + nst + 1 + j, &prod_fwd[j]->type, s->span,
                               value_derivative(prod_fwd[j]->op) ? "an activation of a recurrent product"
                               : prod_fwd[j]->op == OP_SLICE    ? "a part of a recurrent product"
                                                                : "a recurrent product and what the step adds to it");
    for (int i = 0; i < nst; i++)
        pcarry[i] = placeholder(gb, OP_STATE_IN, i, &s->in[nseq + i]->type, s->span, "grad of the state after the step");
    for (int k = 0; k < ncap; k++)
        if (acc_of[k] >= 0)
            pcarry[acc_of[k]] = placeholder(gb, OP_STATE_IN, acc_of[k], &s->in[nseq + nst + k]->type, s->span,
                                            "grad of the capture, summed");
    for (int k = 0; k < ncap; k++) pc[k] = placeholder(gb, OP_CAPTURE, k, &s->in[nseq + nst + k]->type, s->span, NULL);

    /* Recompute the forward step from the kept state. */
    for (int i = 0; i < fb->nodes.len; i++) {
        Node *f = fb->nodes.items[i];
        if (f->op == OP_STEP_IN) { map[i] = px[f->index]; continue; }
        if (f->op == OP_STATE_IN) { map[i] = ph[f->index]; continue; }
        if (f->op == OP_CAPTURE) { map[i] = pc[f->index]; continue; }
        Node *in[64];
        if (f->nin > 64) internal("cloning", f, "too many inputs");
        for (int k = 0; k < f->nin; k++) in[k] = map[f->in[k]->id];
        map[i] = graph_add_like(gb, f, f->nin, in);
    }

    /* The step's own reverse pass, seeded with the carried state gradients
     * and this step's output gradient. */
    AD b;
    ad_init(&b, gb, 0);
    b.d = a->d;
    b.failed = a->failed;
    for (int i = 0; i < nseq; i++) b.needs[px[i]->id] = a->needs[s->in[i]->id];
    for (int i = 0; i < nst; i++) b.needs[ph[i]->id] = true;
    for (int k = 0; k < ncap; k++) b.needs[pc[k]->id] = acc_of[k] >= 0;
    mark_needs(&b);
    for (int i = 0; i <= nst; i++) {
        Node *target = map[((Node *)fb->outputs.items[i])->id];
        Node *seed = i < nst ? pcarry[i] : pdy;
        b.span = s->span;
        accum(&b, target, seed);
    }
    walk(&b);
    /* The recomputed step reads the products kept: a matmul's gradient
     * reads its operands, never its value, and an add's reads none, so the
     * clones are left unread. */
    for (int j = 0; j < nprod; j++) {
        Node *clone = map[prod_fwd[j]->id];
        for (int i = 0; i < gb->nodes.len; i++) {
            Node *x = gb->nodes.items[i];
            for (int k = 0; k < x->nin; k++)
                if (x->in[k] == clone) x->in[k] = pprod[j];
            /* A kept activation's derivative reads the activation, not its
             * input, which is then left unread too (kept_of). */
            if (x->op == OP_ACT_GRAD && x->in[1] == pprod[j] && value_derivative(x->act)) x->in[0] = pprod[j];
        }
    }

    for (int i = 0; i < nst; i++) {
        Node *d = b.grad[ph[i]->id];
        ptrvec_push(arena, &gb->outputs, d ? d : placeholder(gb, OP_ZEROS, 0, &ph[i]->type, s->span, NULL));
    }
    for (int k = 0; k < ncap; k++) {
        if (acc_of[k] < 0) continue;
        Node *d = b.grad[pc[k]->id];
        ptrvec_push(arena, &gb->outputs, d ? op2(&b, OP_ADD, pcarry[acc_of[k]], d) : pcarry[acc_of[k]]);
    }
    int nout = 0, dx_of[64];
    for (int i = 0; i < nseq; i++) {
        dx_of[i] = -1;
        if (!a->needs[s->in[i]->id]) continue;
        Node *d = b.grad[px[i]->id];
        ptrvec_push(arena, &gb->outputs, d ? d : placeholder(gb, OP_ZEROS, 0, &px[i]->type, s->span, NULL));
        dx_of[i] = nout++;
    }

    /* The backward scan, walking the window the other way. */
    Node *gin[64 + 64 + 1 + 16 + 192 + 128];
    int nin = 0;
    for (int i = 0; i < nseq; i++) gin[nin++] = time_slice(a, s->in[i], begin, w);
    for (int i = 0; i < nst; i++) gin[nin++] = hist[i];
    gin[nin++] = dyw;
    for (int j = 0; j < nprod; j++) gin[nin++] = prod_kept[j];
    for (int i = 0; i < nst; i++) {
        Node *d = a->scan_dstate[s->id][i];
        gin[nin++] = d ? d : zeros(a, &s->in[nseq + i]->type);
    }
    for (int k = 0; k < ncap; k++)
        if (acc_of[k] >= 0) gin[nin++] = zeros(a, &s->in[nseq + nst + k]->type);
    for (int k = 0; k < ncap; k++) gin[nin++] = s->in[nseq + nst + k];
    Node *gs = node(a, OP_SCAN, nin, gin);
    gs->scan.body = gb;
    gs->scan.nseq = nseq + nst + 1 + nprod;
    gs->scan.nstate = ncarry;
    gs->scan.ncapture = ncap;
    gs->scan.nout = nout;
    gs->scan.reverse = !s->scan.reverse;
    gs->scan.sequences = true;
    gs->scan.keep_begin = 0;
    gs->scan.keep_end = w;
    gs->scan.cell = gb->name;
    emit(gs);

    for (int i = 0; i < nseq; i++) {
        if (dx_of[i] < 0) continue;
        Node *dx = gs;
        if (dx_of[i] > 0) {
            dx = node(a, OP_SCAN_OUT, 1, &gs);
            dx->index = dx_of[i];
            emit(dx);
        }
        if (w < steps) {
            Node *pad = node(a, OP_TIME_PAD, 1, &dx);
            pad->slice.start = begin;
            pad->slice.len = steps;
            dx = emit(pad);
        }
        accum(a, s->in[i], dx);
    }
    for (int i = 0; i < ncarry; i++) {
        int k = -1;
        if (i >= nst)
            for (int j = 0; j < ncap; j++)
                if (acc_of[j] == i) k = j;
        Node *target = i < nst ? s->in[nseq + i] : s->in[nseq + nst + k];
        /* Under truncation the state entering the window gets no gradient,
         * nor does a state taken before the end of another scan (the one
         * schedule_windows puts before the window). */
        bool stopped = target->op == OP_SCAN_STATE &&
                       target->scan_state.after != target->in[0]->in[0]->type.dims[0];
        if (!a->needs[target->id] || (i < nst && (w < steps || stopped))) continue;
        Node *st = node(a, OP_SCAN_STATE, 1, &gs);
        st->scan_state.index = i;
        st->scan_state.after = w;
        accum(a, target, emit(st));
    }
}

bool ad_backward(Graph *g, const GradOptions *o, Diags *d) {
    Span at = {0};
    if (!g->loss) {
        diag_error(d, at, "model '%s' has no loss to differentiate", g->name ? g->name : "?");
        return false;
    }
    AD a;
    bool failed = false;
    g->nforward = g->nodes.len;
    ad_init(&a, g, o ? o->window : 0);
    a.d = d;
    a.failed = &failed;
    for (int i = 0; i < g->params.len; i++) {
        Node *p = g->params.items[i];
        a.needs[p->id] = p->param.trainable;
    }
    mark_needs(&a);
    g->grads.len = 0;
    if (!a.needs[g->loss->id]) {
        /* Would it depend on a param if every op let the dependence through? Then
         * an op without a gradient is in the way: name it. */
        bool *dep = ARENA_ARRAY(g->arena, bool, a.n ? a.n : 1);
        const char *blocker = NULL;
        for (int i = 0; i < a.n; i++) {
            Node *n = g->nodes.items[i];
            dep[i] = n->op == OP_PARAM && n->param.trainable;
            for (int k = 0; k < n->nin && !dep[i]; k++) dep[i] = dep[n->in[k]->id];
            if (dep[i] && !a.needs[i] && !blocker) blocker = op_name(n->op);
        }
        if (dep[g->loss->id] && blocker)
            diag_error(d, g->loss->span, "the loss of model '%s' depends on its params only through %s, which has no "
                       "gradient", g->name ? g->name : "?", blocker);
        else
            diag_error(d, at, "the loss of model '%s' does not depend on any trainable param", g->name ? g->name : "?");
        return false;
    }
    a.span = g->loss->span;
    a.grad[g->loss->id] = constant(&a, 1.0);
    walk(&a);
    if (failed) return false;
    for (int i = 0; i < g->params.len; i++) {
        Node *p = g->params.items[i];
        Node *dp = p->param.trainable ? a.grad[p->id] : NULL;
        if (dp) dp->name = arena_printf(g->arena, "grad of %s", p->name);
        ptrvec_push(g->arena, &g->grads, dp);
    }
    return true;
}
