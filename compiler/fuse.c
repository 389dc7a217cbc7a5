/* Fusion passes (fuse.h). Nodes the rewrites add to the model graph are
 * appended while they work, each with a place (just before or after a node
 * that was there); one renumbering at the end puts them where they belong. */
#include "fuse.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shape.h"

typedef struct Place {
    Node *anchor;           /* a node of the graph before the pass */
    bool after;
} Place;

typedef struct Fuse {
    Graph *g;
    Arena *arena;
    int n0;                 /* the model graph's nodes before the pass */
    PtrVec places;          /* Place of node n0 + i */
    PtrVec made;            /* hoisted nodes, for reuse by a later scan (the backward scan's recomputation) */
    PtrVec dead;            /* nodes of the graph the pass replaced */
    bool bias_sums;         /* FuseOptions.bias_sums */
    FuseStats stats;
    char *error;
} Fuse;

static void fail(Fuse *f, const Node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(Fuse *f, const Node *n, const char *fmt, ...) {
    if (f->error) return;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    size_t len = strlen(what) + 96;
    f->error = malloc(len);
    if (f->error)
        snprintf(f->error, len, "seqc: fusion: internal error at %s node %d: %s", n ? op_name(n->op) : "?",
                 n ? n->id : -1, what);
}

static Node *infer(Fuse *f, Node *n) {
    const char *why = NULL;
    if (!shape_infer(n, &why)) fail(f, n, "%s", why ? why : "no type");
    return n;
}

/* A new node of the model graph, placed next to `anchor`; its payload and
 * declared type are the caller's to set. */
static Node *outside(Fuse *f, OpKind op, Span at, int nin, Node **in, Node *anchor, bool after) {
    Node *n = graph_add(f->g, op, at, nin, in);
    Place *p = ARENA_NEW(f->arena, Place);
    p->anchor = anchor;
    p->after = after;
    ptrvec_push(f->arena, &f->places, p);
    return n;
}

/* n, the node the pass added last, or an identical one it made before (then
 * n is taken back): the backward scan's recomputation of x_t @ W reads the
 * forward scan's, and bias sums of the same per-step value are one. */
static Node *unique(Fuse *f, Node *n) {
    for (int i = 0; i < f->made.len; i++) {
        Node *m = f->made.items[i];
        bool same = m->op == n->op && m->nin == n->nin && type_equal(&m->type, &n->type);
        for (int k = 0; same && k < m->nin; k++) same = m->in[k] == n->in[k];
        if (same && n->op == OP_CONST) same = m->constant == n->constant;
        if (same && (n->op == OP_SLICE || n->op == OP_SLICE_GRAD))
            same = m->slice.start == n->slice.start && m->slice.len == n->slice.len;
        if (!same) continue;
        if (f->g->nodes.items[f->g->nodes.len - 1] == n) {
            f->g->nodes.len--;
            f->places.len--;
        }
        return m;
    }
    ptrvec_push(f->arena, &f->made, n);
    return n;
}

/* A copy of `like` (a body node) in the model graph, on inputs `in`, before `anchor`. */
static Node *clone_outside(Fuse *f, const Node *like, Node **in, Node *anchor) {
    Node *n = outside(f, like->op, like->span, like->nin, in, anchor, false);
    node_copy_payload(n, like);
    return unique(f, infer(f, n));
}

/* Every reader of `old` in the model graph (and the graph's own references)
 * reads `new` instead; `except` keeps reading `old`. */
static void replace_uses(Fuse *f, Node *old, Node *new, const Node *except) {
    Graph *g = f->g;
    for (int i = 0; i < g->nodes.len; i++) {
        Node *n = g->nodes.items[i];
        if (n == except || n == new) continue;
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] == old) n->in[k] = new;
    }
    if (g->loss == old) g->loss = new;
    if (g->output == old) g->output = new;
    for (int i = 0; i < g->grads.len; i++)
        if (g->grads.items[i] == old) g->grads.items[i] = new;
    for (int i = 0; i < g->metrics.len; i++)
        if (g->metrics.items[i] == old) g->metrics.items[i] = new;
    for (int i = 0; i < g->updates.len; i++) {
        Update *u = g->updates.items[i];
        if (u->value == old) u->value = new;
    }
    for (int i = 0; i < g->layers.len; i++) {
        Layer *l = g->layers.items[i];
        if (l->out == old) l->out = new;
    }
}

/* ---- the new order ---------------------------------------------------------------- */

static bool is_dead(const Fuse *f, const Node *n) {
    for (int i = 0; i < f->dead.len; i++)
        if (f->dead.items[i] == n) return true;
    return false;
}

static bool topological(Node **order, int len) {
    for (int i = 0; i < len; i++) order[i]->id = i;
    for (int i = 0; i < len; i++)
        for (int k = 0; k < order[i]->nin; k++)
            if (order[i]->in[k]->graph != order[i]->graph || order[i]->in[k]->id >= i) return false;
    return true;
}

/* Puts each new node next to its anchor, drops the dead ones, and gives every
 * dropout mask back its old id where the order allows it. */
static void renumber(Fuse *f) {
    Graph *g = f->g;
    int n0 = f->n0, total = g->nodes.len, nnew = total - n0;
    Node **old = malloc(sizeof *old * (size_t)(total ? total : 1));
    Node **order = ARENA_ARRAY(f->arena, Node *, total ? total : 1);
    Node **pinned = ARENA_ARRAY(f->arena, Node *, total ? total : 1);
    if (!old) {
        fail(f, NULL, "out of memory");
        return;
    }
    memcpy(old, g->nodes.items, sizeof *old * (size_t)total);
    int len = 0, nforward = 0;
    for (int i = 0; i < n0; i++) {
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 1 && !is_dead(f, old[i])) order[len++] = old[i];
            for (int k = 0; k < nnew; k++) {
                Place *p = f->places.items[k];
                if (p->anchor == old[i] && p->after == (pass == 1) && !is_dead(f, old[n0 + k]))
                    order[len++] = old[n0 + k];
            }
        }
        if (i == g->nforward - 1) nforward = len;
    }
    /* Masks draw from a stream keyed by their id: put each back at its old
     * place. A mask has no inputs, so it may move earlier freely. */
    int nrest = 0, next_mask = 0;
    Node **rest = malloc(sizeof *rest * (size_t)(len ? len : 1));
    if (!rest) {
        free(old);
        fail(f, NULL, "out of memory");
        return;
    }
    for (int i = 0; i < len; i++)
        if (order[i]->op != OP_DROPMASK) rest[nrest++] = order[i];
    int r = 0;
    bool ok = true;
    for (int pos = 0; pos < len; pos++) {
        while (next_mask < n0 && old[next_mask]->op != OP_DROPMASK) next_mask++;
        if (next_mask < n0 && next_mask == pos) {
            pinned[pos] = old[next_mask++];
        } else if (r < nrest) {
            pinned[pos] = rest[r++];
        } else {
            ok = false;
            break;
        }
    }
    free(rest);
    free(old);
    if (ok && r == nrest && topological(pinned, len)) {
        order = pinned;
    } else if (!topological(order, len)) {
        fail(f, NULL, "the rewritten graph is not in topological order");
        return;
    }
    g->nodes.items = (void **)order;
    g->nodes.len = len;
    g->nodes.cap = total ? total : 1;
    if (g->nforward > 0) g->nforward = nforward;
    for (int i = 0; i < len; i++) order[i]->id = i;
}

/* ---- scan bodies -------------------------------------------------------------------- */

/* What a body value depends on: carried state (or an op that cannot take a
 * time axis in front), step inputs and captures, or captures alone. */
enum { K_STATE, K_VARYING, K_INVARIANT };

typedef struct Body {
    Fuse *f;
    Node *scan;
    Graph *b;
    int n;                  /* body nodes when analysed; later ones are the pass's */
    int64_t steps;
    unsigned char *kind;
    bool *has_matmul;       /* a matmul in the value's cone, below any state */
    int *uses;              /* readers in the body, each output counted */
    Node **out;             /* its value outside, once made: a sequence over the steps if varying */
    Node **emitted;         /* the scan output that holds it at every step, once made */
} Body;

static bool is_unary(OpKind op) {
    switch (op) {
    case OP_NEG: case OP_TANH: case OP_SIGMOID: case OP_HARD_SIGMOID: case OP_RELU: case OP_EXP: case OP_LOG:
    case OP_RSQRT:
        return true;
    default:
        return false;
    }
}

static bool is_arith(OpKind op) { return op == OP_ADD || op == OP_SUB || op == OP_MUL || op == OP_DIV; }

/* A sequence `seq` whose steps are values of type `step`. */
static bool steps_of(const Type *seq, const Type *step) {
    if (seq->dtype != step->dtype || seq->batched != step->batched || seq->rank != step->rank + 1) return false;
    for (int i = 0; i < step->rank; i++)
        if (seq->dims[i + 1] != step->dims[i]) return false;
    return true;
}

static Node *seq_input(const Body *B, int index) { return B->scan->in[index]; }
static Node *capture_input(const Body *B, int index) {
    const Node *s = B->scan;
    return s->in[s->scan.nseq + s->scan.nstate + index];
}

static int classify(const Body *B, const Node *x) {
    const Node *s = B->scan;
    switch (x->op) {
    case OP_STATE_IN:
        return K_STATE;
    case OP_STEP_IN:
        return x->index >= 0 && x->index < s->scan.nseq && steps_of(&seq_input(B, x->index)->type, &x->type)
                   ? K_VARYING
                   : K_STATE;
    case OP_CAPTURE:
        return x->index >= 0 && x->index < s->scan.ncapture && type_equal(&capture_input(B, x->index)->type, &x->type)
                   ? K_INVARIANT
                   : K_STATE;
    case OP_CONST:
        return K_INVARIANT;
    default:
        break;
    }
    if (!is_unary(x->op) && !is_arith(x->op) && x->op != OP_MATMUL && x->op != OP_MATMUL_T && x->op != OP_SLICE)
        return K_STATE;
    bool varying = false;
    for (int k = 0; k < x->nin; k++) {
        int c = B->kind[x->in[k]->id];
        if (c == K_STATE) return K_STATE;
        varying |= c == K_VARYING;
    }
    if (!varying) return K_INVARIANT;
    if (x->type.rank + 1 > SEQC_MAX_RANK) return K_STATE;
    /* With a time axis in front, numpy's rules still line the axes up only
     * if every varying operand has the result's rank. */
    if (is_arith(x->op))
        for (int k = 0; k < 2; k++)
            if (B->kind[x->in[k]->id] == K_VARYING && x->in[k]->type.rank != x->type.rank) return K_STATE;
    /* The matrix of a matmul must be the same at every step. */
    if ((x->op == OP_MATMUL || x->op == OP_MATMUL_T) && B->kind[x->in[1]->id] != K_INVARIANT) return K_STATE;
    return K_VARYING;
}

static bool body_init(Body *B, Fuse *f, Node *scan) {
    memset(B, 0, sizeof *B);
    B->f = f;
    B->scan = scan;
    B->b = scan->scan.body;
    B->n = B->b->nodes.len;
    B->steps = scan->in[0]->type.dims[0];
    size_t n = (size_t)(B->n ? B->n : 1);
    B->kind = ARENA_ARRAY(f->arena, unsigned char, n);
    B->has_matmul = ARENA_ARRAY(f->arena, bool, n);
    B->uses = graph_uses(B->b, f->arena);
    B->out = ARENA_ARRAY(f->arena, Node *, n);
    B->emitted = ARENA_ARRAY(f->arena, Node *, n);
    for (int i = 0; i < B->n; i++) {
        Node *x = B->b->nodes.items[i];
        if (x->op == OP_SCAN) return false; /* a nested scan: left alone */
        B->kind[i] = (unsigned char)classify(B, x);
        B->has_matmul[i] = x->op == OP_MATMUL || x->op == OP_MATMUL_T;
        for (int k = 0; k < x->nin; k++)
            if (B->kind[i] != K_STATE) B->has_matmul[i] |= B->has_matmul[x->in[k]->id];
    }
    return true;
}

/* The value of body node x outside the loop: for a varying x the sequence of
 * its values at every step, placed before the scan. */
static Node *value_outside(Body *B, Node *x) {
    if (B->out[x->id]) return B->out[x->id];
    Node *r;
    if (x->op == OP_STEP_IN) {
        r = seq_input(B, x->index);
    } else if (x->op == OP_CAPTURE) {
        r = capture_input(B, x->index);
    } else {
        Node *in[3];
        for (int k = 0; k < x->nin; k++) in[k] = value_outside(B, x->in[k]);
        r = clone_outside(B->f, x, in, B->scan);
    }
    bool fits = B->kind[x->id] == K_VARYING ? steps_of(&r->type, &x->type) : type_equal(&r->type, &x->type);
    if (!fits) fail(B->f, x, "its value outside the loop has the wrong type");
    return B->out[x->id] = r;
}

/* The scan's inputs with `v` inserted at position `at`. */
static void insert_input(Body *B, int at, Node *v) {
    Node *s = B->scan;
    Node **in = ARENA_ARRAY(B->f->arena, Node *, s->nin + 1);
    memcpy(in, s->in, sizeof *in * (size_t)at);
    in[at] = v;
    memcpy(in + at + 1, s->in + at, sizeof *in * (size_t)(s->nin - at));
    s->in = in;
    s->nin++;
}

/* x, computed outside, enters the body as a step input or a capture. */
static void hoist_one(Body *B, Node *x) {
    Node *s = B->scan, *v = value_outside(B, x);
    if (B->f->error) return;
    if (B->kind[x->id] == K_VARYING) {
        insert_input(B, s->scan.nseq, v);
        x->op = OP_STEP_IN;
        x->index = s->scan.nseq++;
        B->f->stats.hoisted_steps++;
    } else {
        insert_input(B, s->nin, v);
        x->op = OP_CAPTURE;
        x->index = s->scan.ncapture++;
        B->f->stats.hoisted_captures++;
    }
    x->nin = 0;
}

/* A projection: a matmul, or sums and products of projections with values
 * that hold none (x_t @ W + h_t @ U + b). Outside the loop it is one large
 * matmul and an epilogue; the activations after it stay in the loop, where
 * their operands are small enough to stay in cache. */
static bool is_projection(const Body *B, const Node *x) {
    if (x->id >= B->n || B->kind[x->id] != K_VARYING || !B->has_matmul[x->id]) return false;
    if (x->op == OP_MATMUL || x->op == OP_MATMUL_T) return true;
    if (!is_arith(x->op)) return false;
    for (int k = 0; k < x->nin; k++)
        if (B->has_matmul[x->in[k]->id] && !is_projection(B, x->in[k])) return false;
    return true;
}

/* x is read by something that stays in the loop: mark what to compute
 * outside instead. */
static void want(Body *B, Node *x, bool *wanted) {
    if (x->id >= B->n || wanted[x->id]) return;
    if (B->kind[x->id] == K_VARYING && B->has_matmul[x->id]) {
        if (is_projection(B, x)) {
            wanted[x->id] = true;
            return;
        }
        /* An activation or a slice of a projection: hoist the projection. */
        for (int k = 0; k < x->nin; k++) want(B, x->in[k], wanted);
    } else if (B->kind[x->id] == K_INVARIANT && x->op != OP_CAPTURE && x->op != OP_CONST) {
        wanted[x->id] = true;
    }
}

static void hoist(Body *B) {
    bool *wanted = ARENA_ARRAY(B->f->arena, bool, B->n ? B->n : 1);
    for (int i = 0; i < B->n; i++) {
        Node *y = B->b->nodes.items[i];
        if (B->kind[i] != K_STATE) continue;
        for (int k = 0; k < y->nin; k++) want(B, y->in[k], wanted);
    }
    for (int i = 0; i < B->b->outputs.len; i++) want(B, B->b->outputs.items[i], wanted);
    for (int i = 0; i < B->n && !B->f->error; i++)
        if (wanted[i]) hoist_one(B, B->b->nodes.items[i]);
}

/* ---- running sums ------------------------------------------------------------------ */

/* Can the value of body node x at every step be had outside: computed there,
 * or emitted by the scan (a batched value: an unbatched one would be copied
 * into every example and counted `batch` times). */
static bool can_have_steps(const Body *B, const Node *x) {
    if (x->id >= B->n) return false;
    return B->kind[x->id] == K_VARYING || x->type.batched;
}

static Node *emit_steps(Body *B, Node *x) {
    if (B->emitted[x->id]) return B->emitted[x->id];
    Node *s = B->scan;
    int j = s->scan.nout;
    ptrvec_push(B->f->arena, &B->b->outputs, x);
    s->scan.nout++;
    Node *r;
    if (j == 0) {
        /* A scan without outputs: this becomes its own value. */
        s->scan.sequences = true;
        r = infer(B->f, s);
    } else {
        r = outside(B->f, OP_SCAN_OUT, s->span, 1, &s, s, true);
        r->index = j;
        r->name = x->name;
        infer(B->f, r);
    }
    return B->emitted[x->id] = r;
}

static Node *steps_outside(Body *B, Node *x) {
    return B->kind[x->id] == K_VARYING ? value_outside(B, x) : emit_steps(B, x);
}

static bool can_sum(const Body *B, const Node *t);

/* t = e * c, c * e or e / c with c the same at every step: the side of e, or -1. */
static int scaled_side(const Body *B, const Node *t) {
    for (int k = 0; k < (t->op == OP_DIV ? 1 : 2); k++) {
        const Node *e = t->in[k], *c = t->in[1 - k];
        if (c->id < B->n && B->kind[c->id] == K_INVARIANT && type_equal(&e->type, &t->type) && can_sum(B, e))
            return k;
    }
    return -1;
}

/* Is sum over the steps of t, an unbatched body value, one op (or a linear
 * map of ops) over whole sequences? */
static bool can_sum(const Body *B, const Node *t) {
    if (t->id >= B->n || t->type.batched || B->kind[t->id] != K_STATE) return false;
    switch (t->op) {
    case OP_MATMUL_W:
        return can_have_steps(B, t->in[0]) && can_have_steps(B, t->in[1]);
    case OP_SUM_TO:
        return B->f->bias_sums && can_have_steps(B, t->in[0]);
    case OP_SLICE_GRAD:
    case OP_NEG:
        return can_sum(B, t->in[0]);
    case OP_ADD:
        return type_equal(&t->in[0]->type, &t->type) && type_equal(&t->in[1]->type, &t->type) &&
               can_sum(B, t->in[0]) && can_sum(B, t->in[1]);
    case OP_MUL:
    case OP_DIV:
        return scaled_side(B, t) >= 0;
    default:
        return false;
    }
}

static Node *sum_outside(Body *B, Node *t) {
    Fuse *f = B->f;
    Node *s = B->scan, *in[2];
    Node *r;
    switch (t->op) {
    case OP_MATMUL_W:
        in[0] = steps_outside(B, t->in[0]);
        in[1] = steps_outside(B, t->in[1]);
        r = outside(f, OP_MATMUL_W, t->span, 2, in, s, true);
        break;
    case OP_SUM_TO:
    case OP_SLICE_GRAD:
        in[0] = t->op == OP_SUM_TO ? steps_outside(B, t->in[0]) : sum_outside(B, t->in[0]);
        r = outside(f, t->op, t->span, 1, in, s, true);
        r->type = t->type;
        r->slice = t->slice;
        break;
    case OP_NEG:
        in[0] = sum_outside(B, t->in[0]);
        r = outside(f, OP_NEG, t->span, 1, in, s, true);
        break;
    case OP_MUL:
    case OP_DIV: {
        int k = scaled_side(B, t);
        in[k] = sum_outside(B, t->in[k]);
        in[1 - k] = value_outside(B, t->in[1 - k]);
        r = outside(f, t->op, t->span, 2, in, s, true);
        break;
    }
    default: /* OP_ADD */
        in[0] = sum_outside(B, t->in[0]);
        in[1] = sum_outside(B, t->in[1]);
        r = outside(f, OP_ADD, t->span, 2, in, s, true);
        break;
    }
    return unique(f, infer(f, r));
}

/* The terms of a sum of values of t's type: the leaves of its tree of adds. */
static void terms_of(Node *t, const Type *type, Node **terms, int *n, int max) {
    if (t->op == OP_ADD && type_equal(&t->in[0]->type, type) && type_equal(&t->in[1]->type, type) && *n + 2 <= max) {
        terms_of(t->in[0], type, terms, n, max);
        terms_of(t->in[1], type, terms, n, max);
        return;
    }
    if (*n < max) terms[(*n)++] = t;
}

/* The model graph's readers of state i of scan s (SCAN_STATE nodes); false if
 * any reads it before the last step. */
static int state_readers(Fuse *f, Node *s, int i, Node **readers, int max) {
    int n = 0;
    for (int k = s->id + 1; k < f->g->nodes.len; k++) {
        Node *u = f->g->nodes.items[k];
        if (u->op != OP_SCAN_STATE || u->in[0] != s || u->scan_state.index != i) continue;
        if (u->scan_state.after != s->in[0]->type.dims[0] || n == max) return -1;
        readers[n++] = u;
    }
    return n;
}

static void drop_state(Body *B, int i) {
    Node *s = B->scan;
    Graph *b = B->b;
    int at = s->scan.nseq + i;
    memmove(s->in + at, s->in + at + 1, sizeof *s->in * (size_t)(s->nin - at - 1));
    s->nin--;
    memmove(b->outputs.items + i, b->outputs.items + i + 1, sizeof *b->outputs.items * (size_t)(b->outputs.len - i - 1));
    b->outputs.len--;
    for (int k = 0; k < b->nodes.len; k++) {
        Node *x = b->nodes.items[k];
        if (x->op == OP_STATE_IN && x->index > i) x->index--;
    }
    for (int k = s->id + 1; k < B->f->g->nodes.len; k++) {
        Node *u = B->f->g->nodes.items[k];
        if (u->op == OP_SCAN_STATE && u->in[0] == s && u->scan_state.index > i) u->scan_state.index--;
    }
    s->scan.nstate--;
    B->f->stats.dropped_states++;
}

#define MAX_TERMS 64
#define MAX_READERS 8

/* State i: next = acc + d, acc read by nothing else, the final value read
 * only after the last step. */
static bool sum_state(Body *B, int i) {
    Fuse *f = B->f;
    Node *s = B->scan, *next = B->b->outputs.items[i];
    if (next->id >= B->n || next->op != OP_ADD || next->type.batched || B->uses[next->id] != 1) return false;
    int side = -1;
    for (int k = 0; k < 2; k++)
        if (next->in[k]->op == OP_STATE_IN && next->in[k]->index == i) side = k;
    if (side < 0) return false;
    Node *acc = next->in[side], *d = next->in[1 - side];
    if (B->uses[acc->id] != 1 || !type_equal(&acc->type, &next->type) || !type_equal(&d->type, &next->type))
        return false;
    for (int k = 0; k < B->n; k++) {
        Node *x = B->b->nodes.items[k];
        if (x != acc && x->op == OP_STATE_IN && x->index == i && B->uses[k] > 0) return false;
    }
    Node *readers[MAX_READERS];
    int nreaders = state_readers(f, s, i, readers, MAX_READERS);
    if (nreaders <= 0) return false;
    Node *terms[MAX_TERMS], *moved = NULL, *rest = NULL;
    int nterms = 0;
    terms_of(d, &next->type, terms, &nterms, MAX_TERMS);
    for (int k = 0; k < nterms; k++) {
        if (can_sum(B, terms[k])) {
            Node *o = sum_outside(B, terms[k]);
            moved = moved ? infer(f, outside(f, OP_ADD, s->span, 2, (Node *[]){moved, o}, s, true)) : o;
            f->stats.moved_sums++;
        } else {
            rest = rest ? infer(f, graph_add(B->b, OP_ADD, next->span, 2, (Node *[]){rest, terms[k]})) : terms[k];
        }
    }
    if (!moved || f->error) return false;
    Node *init = s->in[s->scan.nseq + i];
    if (init->op != OP_ZEROS) moved = infer(f, outside(f, OP_ADD, s->span, 2, (Node *[]){init, moved}, s, true));
    if (rest) B->b->outputs.items[i] = infer(f, graph_add(B->b, OP_ADD, next->span, 2, (Node *[]){acc, rest}));
    for (int k = 0; k < nreaders; k++) {
        Node *u = readers[k], *total = moved;
        if (rest) total = infer(f, outside(f, OP_ADD, u->span, 2, (Node *[]){u, moved}, u, true));
        else ptrvec_push(f->arena, &f->dead, u);
        if (!total->name) total->name = u->name;
        replace_uses(f, u, total, total);
    }
    return !rest;
}

static void move_sums(Body *B) {
    Node *s = B->scan;
    if (s->scan.keep_begin != 0 || s->scan.keep_end != B->steps) return; /* emitted outputs keep every step */
    bool drop[256] = {false};
    int nstate = s->scan.nstate < 256 ? s->scan.nstate : 256;
    for (int i = 0; i < nstate && !B->f->error; i++) drop[i] = sum_state(B, i);
    for (int i = nstate - 1; i >= 0; i--)
        if (drop[i]) drop_state(B, i);
}

/* ---- dead body nodes --------------------------------------------------------------- */

static void sweep(Fuse *f, Graph *b) {
    int n = b->nodes.len;
    bool *live = ARENA_ARRAY(f->arena, bool, n ? n : 1);
    for (int i = 0; i < b->outputs.len; i++) live[((Node *)b->outputs.items[i])->id] = true;
    for (int i = n - 1; i >= 0; i--) {
        Node *x = b->nodes.items[i];
        if (!live[i]) continue;
        for (int k = 0; k < x->nin; k++) live[x->in[k]->id] = true;
    }
    int len = 0;
    for (int i = 0; i < n; i++)
        if (live[i]) b->nodes.items[len++] = b->nodes.items[i];
    b->nodes.len = len;
    for (int i = 0; i < len; i++) ((Node *)b->nodes.items[i])->id = i;
}

/* ---- products of the outputs ------------------------------------------------------ */

/* The scan's readers of output j (SCAN_OUT #j; for j = 0 the scan itself)
 * read `by` instead, and output j leaves the body; later outputs move down
 * one. Output 0's place goes to output 1, which becomes the scan's value. */
static void drop_output(Body *B, int j, Node *by) {
    Fuse *f = B->f;
    Node *s = B->scan;
    Graph *g = f->g;
    if (j == 0) {
        /* The scan's other readers (its outputs and states) keep reading it. */
        Node **keep = ARENA_ARRAY(f->arena, Node *, g->nodes.len ? g->nodes.len : 1);
        int nkeep = 0;
        for (int i = 0; i < g->nodes.len; i++) {
            Node *n = g->nodes.items[i];
            if ((n->op == OP_SCAN_OUT || n->op == OP_SCAN_STATE) && n->in[0] == s) keep[nkeep++] = n;
        }
        replace_uses(f, s, by, NULL);
        for (int k = 0; k < nkeep; k++) keep[k]->in[0] = s;
    }
    for (int i = 0; i < g->nodes.len; i++) {
        Node *n = g->nodes.items[i];
        if (n->op != OP_SCAN_OUT || n->in[0] != s || is_dead(f, n)) continue;
        if (n->index == j) {
            replace_uses(f, n, by, NULL);
            ptrvec_push(f->arena, &f->dead, n);
        } else if (n->index == 1 && j == 0) {
            replace_uses(f, n, s, NULL);
            ptrvec_push(f->arena, &f->dead, n);
        } else if (n->index > j) {
            n->index--;
        }
    }
    int at = s->scan.nstate + j;
    PtrVec *outs = &B->b->outputs;
    memmove(&outs->items[at], &outs->items[at + 1], sizeof(void *) * (size_t)(outs->len - at - 1));
    outs->len--;
    s->scan.nout--;
    for (int i = 0; i < B->n; i++) B->emitted[i] = NULL; /* indices moved */
    infer(f, s);
}

/* The scan's sequence of x when x is one of its outputs already (the scan
 * itself for output 0, else a SCAN_OUT of it, made if none reads it yet),
 * or NULL. */
static Node *emitted_already(Body *B, Node *x) {
    Node *s = B->scan;
    for (int j = 0; j < s->scan.nout; j++) {
        if (B->b->outputs.items[s->scan.nstate + j] != x) continue;
        if (j == 0) return s;
        for (int i = 0; i < B->f->g->nodes.len; i++) {
            Node *n = B->f->g->nodes.items[i];
            if (n->op == OP_SCAN_OUT && n->in[0] == s && n->index == j && !is_dead(B->f, n)) return n;
        }
        Node *r = outside(B->f, OP_SCAN_OUT, s->span, 1, &s, s, true);
        r->index = j;
        r->name = x->name;
        return infer(B->f, r);
    }
    return NULL;
}

/* An output that is, at every step, a product of a value the loop can emit
 * with a matrix it captures (a backward step's gradient of its input,
 * dx_t = dz_t W^T) becomes one product over all steps after the loop: a
 * large product instead of one of batch rows per step, and the same sums. */
static void move_products(Body *B) {
    Node *s = B->scan;
    if (s->scan.keep_begin != 0 || s->scan.keep_end != B->steps) return; /* emitted outputs keep every step */
    for (int j = 0; j < s->scan.nout && !B->f->error; j++) {
        Node *x = B->b->outputs.items[s->scan.nstate + j];
        if ((x->op != OP_MATMUL && x->op != OP_MATMUL_T) || x->id >= B->n || B->uses[x->id] != 1) continue;
        Node *a = x->in[0], *c = x->in[1];
        if (c->op != OP_CAPTURE || B->kind[c->id] != K_INVARIANT || !a->type.batched || !can_have_steps(B, a))
            continue;
        /* Output 0 is the scan's value: another must take its place. */
        if (j == 0 && s->scan.nout < 2) continue;
        Node *seq = emitted_already(B, a);
        if (!seq) seq = steps_outside(B, a);
        Node *r = infer(B->f, outside(B->f, x->op, x->span, 2, (Node *[]){seq, capture_input(B, c->index)}, s, true));
        r->name = x->name;
        drop_output(B, j, r);
        B->f->stats.moved_products++;
        j--;
    }
}

/* ---- transposed captures ------------------------------------------------------------ */

/* A product that stays in the loop and reads a captured matrix transposed
 * (matmul_t, dy @ W^T: the backward step's gradient of its state) would
 * repack W column by column at every step. The loop gets W^T as a capture
 * of its own instead, transposed once before it, and the product becomes a
 * plain matmul: the same terms in the same order. Returns whether it
 * changed the body (whose analysis is then stale). */
static bool transpose_captures(Body *B) {
    enum { MAX = 16 };
    Node *from[MAX], *to[MAX];
    int made = 0;
    Graph *b = B->b;
    for (int i = 0; i < B->n && !B->f->error; i++) {
        Node *x = b->nodes.items[i];
        if (x->op != OP_MATMUL_T || B->kind[i] != K_STATE) continue;
        Node *w = x->in[1];
        if (w->op != OP_CAPTURE || B->kind[w->id] != K_INVARIANT) continue;
        int k = 0;
        while (k < made && from[k] != w) k++;
        if (k == made) {
            if (made == MAX) continue;
            Node *src = capture_input(B, w->index);
            Node *t = infer(B->f, outside(B->f, OP_TRANSPOSE, x->span, 1, &src, B->scan, false));
            insert_input(B, B->scan->nin, t);
            Node *c = graph_add(b, OP_CAPTURE, x->span, 0, NULL);
            c->index = B->scan->scan.ncapture++;
            c->type = t->type;
            /* Captures read nothing: the new one goes first. */
            memmove(&b->nodes.items[1], &b->nodes.items[0], sizeof(void *) * (size_t)(b->nodes.len - 1));
            b->nodes.items[0] = c;
            from[made] = w;
            to[made++] = c;
        }
        x->op = OP_MATMUL;
        x->in[1] = to[k];
        B->f->stats.transposed++;
    }
    if (!made) return false;
    for (int i = 0; i < b->nodes.len; i++) ((Node *)b->nodes.items[i])->id = i;
    return true;
}

/* ---- gradients of slices ------------------------------------------------------------- */

/* Collects the slice_grads under an add tree rooted at n into leaf[], each
 * add below the root and each slice_grad read by nothing else (uses[]). */
static bool slice_leaves(Node *n, bool root, const int *uses, Node **leaf, int *nleaf, int cap) {
    if (!root && uses[n->id] != 1) return false;
    if (n->op == OP_SLICE_GRAD) {
        if (*nleaf == cap) return false;
        leaf[(*nleaf)++] = n;
        return true;
    }
    return n->op == OP_ADD && type_equal(&n->in[0]->type, &n->type) && type_equal(&n->in[1]->type, &n->type) &&
           slice_leaves(n->in[0], false, uses, leaf, nleaf, cap) && slice_leaves(n->in[1], false, uses, leaf, nleaf, cap);
}

static int by_start(const void *a, const void *b) {
    const Node *x = *(Node *const *)a, *y = *(Node *const *)b;
    return (x->slice.start > y->slice.start) - (x->slice.start < y->slice.start);
}

/* The gradient of a value sliced into parts is the sum of the parts'
 * slice_grads: zeros with each part's gradient in its columns. When the
 * parts cover the columns once (an LSTM's four gates), the sum is their
 * concatenation, which writes each element once instead of zeroing and
 * adding whole rows: the add at the top becomes a concat, and what was under
 * it is swept. Every element keeps its value (x + 0 = x, but for the sign
 * of a zero). */
static void concat_slice_grads(Fuse *f, Graph *b) {
    int n = b->nodes.len, *uses = graph_uses(b, f->arena);
    enum { MAX_LEAVES = 16 };
    for (int i = n - 1; i >= 0; i--) {
        Node *x = b->nodes.items[i], *leaf[MAX_LEAVES];
        int nleaf = 0;
        if (x->op != OP_ADD || x->type.rank < 1 || !slice_leaves(x, true, uses, leaf, &nleaf, MAX_LEAVES)) continue;
        qsort(leaf, (size_t)nleaf, sizeof *leaf, by_start);
        int64_t at = 0, C = x->type.dims[x->type.rank - 1];
        bool tiles = true;
        for (int k = 0; k < nleaf && tiles; k++) {
            tiles = leaf[k]->slice.start == at && leaf[k]->in[0]->type.batched == x->type.batched;
            at += leaf[k]->slice.len;
        }
        if (!tiles || at != C) continue;
        Node **in = ARENA_ARRAY(f->arena, Node *, nleaf);
        for (int k = 0; k < nleaf; k++) in[k] = leaf[k]->in[0];
        x->op = OP_CONCAT;
        x->in = in;
        x->nin = nleaf;
        infer(f, x);
        /* The adds and slice_grads under it are read by nothing now; the
         * sweep takes them. Their uses no longer count for trees above. */
        f->stats.concats++;
    }
}

static void fuse_scan(Fuse *f, Node *s, const FuseOptions *o) {
    Body B;
    /* The forward before a window of truncated BPTT (schedule_windows) keeps
     * no sequence of its steps: hoisting would make one. */
    if (s->scan.walk_end > 0) return;
    if (!body_init(&B, f, s)) return;
    if (!o->no_sums) {
        move_sums(&B);
        if (f->error) return;
        /* What only the moved sums read goes, so that it is not hoisted for nothing. */
        sweep(f, s->scan.body);
        body_init(&B, f, s);
    }
    if (!o->no_hoist) hoist(&B);
    if (f->error) return;
    sweep(f, s->scan.body);
    if (!o->no_products && body_init(&B, f, s)) {
        move_products(&B);
        if (f->error) return;
        sweep(f, s->scan.body);
    }
    /* After hoisting: a matrix computed from params (a scaled kernel) is a
     * capture now. */
    if (!o->no_transpose && body_init(&B, f, s)) transpose_captures(&B);
    if (f->error) return;
    if (!o->no_concat) {
        concat_slice_grads(f, s->scan.body);
        sweep(f, s->scan.body);
    }
    infer(f, s);
}

/* ---- embedding gradients ----------------------------------------------------------------- */

/* One table read by two embeddings (the two windows of a bidirectional
 * layer under truncated BPTT): the sum of their gradients is one
 * embedding_grad over both pairs of ids and dy, which scatters into one set
 * of accumulators instead of two tables' worth, added. */
static void merge_embed_grads(Fuse *f) {
    Graph *g = f->g;
    int *uses = graph_uses(g, f->arena);
    for (int i = 0; i < f->n0; i++) {
        Node *x = g->nodes.items[i];
        if (x->op != OP_ADD) continue;
        Node *a = x->in[0], *b = x->in[1];
        if (a->op != OP_EMBED_GRAD || b->op != OP_EMBED_GRAD || uses[a->id] != 1 || uses[b->id] != 1 ||
            !type_equal(&a->type, &b->type) || !type_equal(&a->type, &x->type))
            continue;
        Node **in = ARENA_ARRAY(f->arena, Node *, a->nin + b->nin);
        memcpy(in, a->in, sizeof *in * (size_t)a->nin);
        memcpy(in + a->nin, b->in, sizeof *in * (size_t)b->nin);
        x->op = OP_EMBED_GRAD;
        x->in = in;
        x->nin = a->nin + b->nin;
        ptrvec_push(f->arena, &f->dead, a);
        ptrvec_push(f->arena, &f->dead, b);
        f->stats.merged_embed_grads++;
    }
}

static void fuse_init(Fuse *f, Graph *g) {
    memset(f, 0, sizeof *f);
    f->g = g;
    f->arena = g->arena;
    f->n0 = g->nodes.len;
}

static void add_stats(FuseStats *to, const FuseStats *s) {
    if (!to) return;
    to->hoisted_steps += s->hoisted_steps;
    to->hoisted_captures += s->hoisted_captures;
    to->moved_sums += s->moved_sums;
    to->dropped_states += s->dropped_states;
    to->softmax_ce += s->softmax_ce;
    to->concats += s->concats;
    to->transposed += s->transposed;
    to->moved_products += s->moved_products;
    to->merged_embed_grads += s->merged_embed_grads;
}

bool fuse_graph(Graph *g, const FuseOptions *o, char **error) {
    static const FuseOptions all = {0};
    if (!o) o = &all;
    Fuse f;
    fuse_init(&f, g);
    f.bias_sums = o->bias_sums;
    for (int i = 0; i < f.n0 && !f.error; i++) {
        Node *n = g->nodes.items[i];
        if (n->op == OP_SCAN) fuse_scan(&f, n, o);
    }
    if (!f.error) merge_embed_grads(&f);
    if (!f.error) renumber(&f);
    if (!f.error && !graph_verify(g, stderr)) fail(&f, NULL, "the rewritten graph does not verify");
    if (f.error) {
        if (error) *error = f.error;
        else free(f.error);
        return false;
    }
    add_stats(o->stats, &f.stats);
    return true;
}

/* ---- softmax and cross-entropy ------------------------------------------------------- */

int fuse_softmax_ce(Graph *g) {
    Fuse f;
    fuse_init(&f, g);
    for (int i = 0; i < f.n0; i++) {
        Node *n = g->nodes.items[i];
        if ((n->op != OP_SCE && n->op != OP_CCE && n->op != OP_BCE) || n->loss.from_logits) continue;
        OpKind act = n->op == OP_BCE ? OP_SIGMOID : OP_SOFTMAX;
        Node *p = n->in[0];
        if (p->op == act) {
            n->in[0] = p->in[0];
        } else if (p->op == OP_TIME_SLICE && p->in[0]->op == act) {
            /* The loss over the last steps of a window (schedule.c). */
            Node *z = p->in[0]->in[0];
            Node *cut = outside(&f, OP_TIME_SLICE, p->span, 1, &z, n, false);
            cut->slice = p->slice;
            n->in[0] = infer(&f, cut);
        } else {
            continue;
        }
        n->loss.from_logits = true;
        f.stats.softmax_ce++;
    }
    if (g->nodes.len > f.n0) renumber(&f);
    if (f.error) {
        fprintf(stderr, "%s\n", f.error);
        free(f.error);
        abort();
    }
    return f.stats.softmax_ce;
}
