#include "schedule.h"

#include "shape.h"

static Node *emit(Node *n, Diags *d) {
    const char *why = NULL;
    if (shape_infer(n, &why)) return n;
    diag_error(d, n->span, "%s", why);
    return NULL;
}

/* The loss (or metric) `l` over the last `keep` of its `steps` steps: a new
 * node of the same op on time slices of its operands. */
static Node *last_steps(Graph *g, Node *l, int64_t steps, int64_t keep, Diags *d) {
    Node *in[2];
    for (int i = 0; i < 2; i++) {
        Node *x = l->in[i];
        if (!x->type.batched || x->type.rank < 1 || x->type.dims[0] != steps) return NULL;
        Node *s = graph_add(g, OP_TIME_SLICE, l->span, 1, &x);
        s->slice.start = steps - keep;
        s->slice.len = keep;
        if (!(in[i] = emit(s, d))) return NULL;
    }
    Node *n = graph_add(g, l->op, l->span, 2, in);
    n->loss = l->loss;
    if (l->op == OP_ACCURACY) n->accuracy = l->accuracy;
    n->name = l->name;
    return emit(n, d);
}

static bool is_loss_op(OpKind op) { return op == OP_BCE || op == OP_SCE || op == OP_CCE || op == OP_MSE; }

bool schedule_tbptt(Graph *g, const TrainRecipe *r, GradOptions *out, Diags *d) {
    out->window = 0;
    if (r->bptt_window == 0) return true;
    int errors = d->errors;
    if (!graph_is_stateful(g)) {
        if (r->bptt_every != r->bptt_window)
            diag_error(d, r->span, "bptt(every: %lld, window: %lld) cuts a stream into overlapping windows, which "
                       "needs a stateful layer (stateful: true); for sequences that are not streams write bptt %lld",
                       (long long)r->bptt_every, (long long)r->bptt_window, (long long)r->bptt_window);
        out->window = r->bptt_window;
        return d->errors == errors;
    }
    /* A stream: each batch is one window of every stream, so the model's
     * sequence inputs are the window. */
    int64_t steps = 0;
    for (int i = 0; i < g->inputs.len; i++) {
        const Node *x = g->inputs.items[i];
        if (x->type.rank < 1) continue;
        steps = x->type.dims[0];
        if (steps != r->bptt_window) {
            diag_error(d, x->span, "input '%s' has %lld steps, but the train block's bptt window is %lld; a stateful "
                       "model reads the stream one window at a time, so they must agree", x->name,
                       (long long)steps, (long long)r->bptt_window);
            return false;
        }
    }
    int64_t k1 = r->bptt_every;
    if (k1 >= steps) return true;
    for (int i = 0; i < g->updates.len; i++) {
        Update *u = g->updates.items[i];
        if (u->value->op == OP_SCAN_STATE) u->value->scan_state.after = k1;
    }
    if (!g->loss || !is_loss_op(g->loss->op)) {
        diag_error(d, g->loss ? g->loss->span : r->span,
                   "bptt(every: %lld, window: %lld) trains each step once by counting the loss over the last %lld "
                   "steps of a window; write the loss as one of the built-in losses on per-step predictions",
                   (long long)k1, (long long)steps, (long long)k1);
        return false;
    }
    Node *loss = last_steps(g, g->loss, steps, k1, d);
    if (!loss) {
        if (d->errors == errors)
            diag_error(d, g->loss->span, "the loss must compare per-step predictions of %lld steps for "
                       "bptt(every:, window:)", (long long)steps);
        return false;
    }
    g->loss = loss;
    for (int i = 0; i < g->metrics.len; i++) {
        Node *m = g->metrics.items[i];
        Node *cut = m->nin == 2 ? last_steps(g, m, steps, k1, d) : NULL;
        if (cut) g->metrics.items[i] = cut;
    }
    return d->errors == errors;
}
