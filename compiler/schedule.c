#include "schedule.h"

#include <string.h>

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

/* ---- the forward before the window ----------------------------------------------------- */

typedef struct Made {
    Node *node, *before;    /* a node the pass made, and the scan it goes just before */
} Made;

typedef struct Windows {
    Graph *g;
    Arena *arena;
    int64_t window;
    PtrVec made;            /* Made, in the order made */
    PtrVec lookups;         /* embeddings the pass read around, dead if nothing else reads them */
    bool failed;
    Diags *d;
} Windows;

static Node *made(Windows *w, Node *n, Node *before) {
    const char *why = NULL;
    if (!shape_infer(n, &why)) {
        diag_error(w->d, n->span, "internal: truncated BPTT's forward: %s", why ? why : "no type");
        w->failed = true;
    }
    Made *m = ARENA_NEW(w->arena, Made);
    m->node = n;
    m->before = before;
    ptrvec_push(w->arena, &w->made, m);
    return n;
}

/* An embedding of a model input: the scan before the window looks its rows
 * up step by step instead of reading the whole sequence of them. */
static bool is_lookup(const Node *x) {
    return x->op == OP_EMBED && x->in[0]->op == OP_INPUT && !x->in[1]->type.batched;
}

static Type step_of(const Type *seq) {
    Type t = *seq;
    memmove(t.dims, t.dims + 1, sizeof(int64_t) * (size_t)(t.rank - 1));
    t.rank--;
    return t;
}

static Node *placeholder(Graph *g, OpKind op, int index, Type t, Span at) {
    Node *n = graph_add(g, op, at, 0, NULL);
    n->index = index;
    n->type = t;
    return n;
}

/* Steps [begin, begin + len) of sequence x: an embedding's of the ids' steps. */
static Node *steps_of(Windows *w, Node *x, int64_t begin, int64_t len, Node *before) {
    for (int i = 0; i < w->made.len; i++) {
        Node *m = ((Made *)w->made.items[i])->node;
        if (m->op == OP_TIME_SLICE && m->in[0] == x && m->slice.start == begin && m->slice.len == len) return m;
        if (m->op == OP_EMBED && is_lookup(x) && m->in[1] == x->in[1] && m->in[0]->op == OP_TIME_SLICE &&
            m->in[0]->in[0] == x->in[0] && m->in[0]->slice.start == begin && m->in[0]->slice.len == len)
            return m;
    }
    Node *from = is_lookup(x) ? x->in[0] : x;
    Node *cut = graph_add(w->g, OP_TIME_SLICE, x->span, 1, &from);
    cut->slice.start = begin;
    cut->slice.len = len;
    made(w, cut, before);
    if (!is_lookup(x)) return cut;
    Node *in[2] = {cut, x->in[1]};
    Node *e = made(w, graph_add(w->g, OP_EMBED, x->span, 2, in), before);
    e->name = x->name;
    return e;
}

/* Scan s walks T steps and only its last `window` are differentiated: a
 * scan without outputs walks the ones before, keeping nothing but its
 * states, and s walks the window from the states it leaves. */
static void split_scan(Windows *w, Node *s) {
    Graph *b = s->scan.body, *g = w->g;
    int nseq = s->scan.nseq, nst = s->scan.nstate, ncap = s->scan.ncapture;
    int64_t T = s->in[0]->type.dims[0], K = w->window;
    int64_t kb = s->scan.reverse ? 0 : T - K; /* the window, as time indices */
    /* Its inputs: a lookup's ids instead of its rows, and its table captured. */
    int nlook = 0;
    for (int i = 0; i < nseq; i++) nlook += is_lookup(s->in[i]);
    Node **in = ARENA_ARRAY(w->arena, Node *, s->nin + nlook);
    int *table_of = ARENA_ARRAY(w->arena, int, nseq);
    for (int i = 0; i < s->nin; i++) in[i] = s->in[i];
    for (int i = 0, look = 0; i < nseq; i++) {
        if (!is_lookup(s->in[i])) continue;
        in[i] = s->in[i]->in[0];
        in[s->nin + look] = s->in[i]->in[1];
        table_of[i] = ncap + look++;
    }

    /* The body before the window: the same step, with lookups inside. */
    Graph *pb = graph_new(w->arena, g, arena_printf(w->arena, "%s before the window", s->scan.cell ? s->scan.cell : "scan"));
    Node **map = ARENA_ARRAY(w->arena, Node *, b->nodes.len ? b->nodes.len : 1);
    for (int i = 0; i < b->nodes.len; i++) {
        Node *f = b->nodes.items[i];
        if (f->op == OP_STEP_IN && f->index >= 0 && f->index < nseq && is_lookup(s->in[f->index])) {
            const Node *x = s->in[f->index];
            Node *lin[2] = {placeholder(pb, OP_STEP_IN, f->index, step_of(&x->in[0]->type), f->span),
                            placeholder(pb, OP_CAPTURE, table_of[f->index], x->in[1]->type, f->span)};
            Node *e = graph_add(pb, OP_EMBED, f->span, 2, lin);
            const char *why = NULL;
            if (!shape_infer(e, &why) || !type_equal(&e->type, &f->type)) {
                diag_error(w->d, f->span, "internal: a lookup in the step: %s", why ? why : "its type differs");
                w->failed = true;
                return;
            }
            map[i] = e;
            continue;
        }
        Node *fin[64];
        if (f->nin > 64) {
            diag_error(w->d, f->span, "internal: a step's node with %d inputs", f->nin);
            w->failed = true;
            return;
        }
        for (int k = 0; k < f->nin; k++) fin[k] = map[f->in[k]->id];
        map[i] = graph_add_like(pb, f, f->nin, fin);
    }
    /* Its states only: what it leaves for the window. */
    for (int i = 0; i < nst; i++) ptrvec_push(w->arena, &pb->outputs, map[((Node *)b->outputs.items[i])->id]);
    Node *p = graph_add_like(g, s, s->nin + nlook, in);
    p->name = NULL;
    p->scan.body = pb;
    p->scan.ncapture = ncap + nlook;
    p->scan.nout = 0;
    p->scan.keep_begin = p->scan.keep_end = 0;
    p->scan.walk_begin = s->scan.reverse ? K : 0;
    p->scan.walk_end = s->scan.reverse ? T : T - K;
    made(w, p, s);

    /* The window, from the states the steps before it leave. */
    for (int i = 0; i < nseq; i++) {
        if (is_lookup(s->in[i])) ptrvec_push(w->arena, &w->lookups, s->in[i]);
        s->in[i] = steps_of(w, s->in[i], kb, K, s);
    }
    s->scan.keep_begin = 0;
    s->scan.keep_end = K;
    for (int i = 0; i < nst; i++) {
        Node *st = graph_add(g, OP_SCAN_STATE, s->span, 1, &p);
        st->scan_state.index = i;
        st->scan_state.after = T - K;
        s->in[nseq + i] = made(w, st, s);
    }
    const char *why = NULL;
    if (!shape_infer(s, &why)) {
        diag_error(w->d, s->span, "internal: the window's scan: %s", why ? why : "no type");
        w->failed = true;
    }
}

static bool splits(const Graph *g, const Node *s, int64_t window) {
    if (s->op != OP_SCAN || s->scan.sequences || s->scan.stateful || s->scan.nout != 1 || s->scan.walk_end > 0)
        return false;
    if (s->in[0]->type.dims[0] <= window) return false;
    const Graph *b = s->scan.body;
    for (int i = 0; i < b->nodes.len; i++)
        if (((const Node *)b->nodes.items[i])->op == OP_SCAN) return false;
    for (int i = s->id + 1; i < g->nodes.len; i++) {
        const Node *u = g->nodes.items[i];
        if ((u->op == OP_SCAN_OUT || u->op == OP_SCAN_STATE) && u->in[0] == s) return false;
    }
    return true;
}

bool schedule_windows(Graph *g, const GradOptions *o, Diags *d) {
    if (!o || o->window <= 0 || graph_is_stateful(g)) return true;
    Windows w = {.g = g, .arena = g->arena, .window = o->window, .d = d};
    int n0 = g->nodes.len;
    for (int i = 0; i < n0 && !w.failed; i++) {
        Node *s = g->nodes.items[i];
        if (splits(g, s, w.window)) split_scan(&w, s);
    }
    if (w.failed) return false;
    if (g->nodes.len == n0) return true;
    /* The new nodes just before their scans; the lookups read around go. */
    bool *dead = ARENA_ARRAY(w.arena, bool, n0);
    int *uses = graph_uses(g, w.arena);
    for (int k = 0; k < w.lookups.len; k++) {
        Node *x = w.lookups.items[k];
        dead[x->id] = uses[x->id] == 0;
    }
    Node **old = ARENA_ARRAY(w.arena, Node *, g->nodes.len);
    memcpy(old, g->nodes.items, sizeof *old * (size_t)g->nodes.len);
    int len = 0;
    for (int i = 0; i < n0; i++) {
        for (int k = 0; k < w.made.len; k++) {
            Made *m = w.made.items[k];
            if (m->before == old[i]) g->nodes.items[len++] = m->node;
        }
        if (!dead[i]) g->nodes.items[len++] = old[i];
    }
    g->nodes.len = len;
    for (int i = 0; i < len; i++) ((Node *)g->nodes.items[i])->id = i;
    return graph_verify(g, stderr);
}
