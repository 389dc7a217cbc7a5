#include "elab_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ------------------------------------------------------------ */
static unsigned hash_name(const char *s) {
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

Binding *elab_scope_find(Scope *s, const char *name) {
    if (!s || !s->nbuckets) return NULL;
    for (Binding *b = s->buckets[hash_name(name) & (s->nbuckets - 1)]; b; b = b->next)
        if (strcmp(b->name, name) == 0) return b;
    return NULL;
}

static void scope_insert(Scope *s, Binding *b) {
    unsigned h = hash_name(b->name) & (s->nbuckets - 1);
    b->next = s->buckets[h];
    s->buckets[h] = b;
}

Binding *elab_scope_add(Elab *E, const char *name, Span def, BindKind kind, Value v) {
    Scope *s = E->scope;
    if (s->count >= s->nbuckets) {
        /* Rehash in definition order, so a later binding of a name stays in front. */
        s->nbuckets = s->nbuckets ? s->nbuckets * 2 : 64;
        s->buckets = ARENA_ARRAY(E->arena, Binding *, s->nbuckets);
        for (Binding *b = s->first; b; b = b->order) scope_insert(s, b);
    }
    Binding *b = ARENA_NEW(E->arena, Binding);
    b->name = name;
    b->def = def;
    b->kind = kind;
    b->v = v;
    scope_insert(s, b);
    s->count++;
    if (s->last) s->last->order = b; else s->first = b;
    s->last = b;
    return b;
}

/* E->cells is sorted by name (collect_cells). */
const Decl *elab_find_cell(Elab *E, const char *name) {
    int lo = 0, hi = E->cells.len - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const Decl *c = E->cells.items[mid];
        int cmp = strcmp(c->name, name);
        if (cmp == 0) return c;
        if (cmp < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

/* Levenshtein distance, capped: for "did you mean" hints. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) return 99;
    int row[41], prev2[41], old[41];
    for (size_t j = 0; j <= lb; j++) row[j] = prev2[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        memcpy(old, row, sizeof row);
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int del = row[j] + 1, ins = row[j - 1] + 1;
            int best = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            /* A swap of two neighbours (lsmt for lstm) counts as one edit. */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            row[j] = best;
            prev = cur;
        }
        memcpy(prev2, old, sizeof old);
    }
    return row[lb];
}

const char *elab_suggest(const char *name, const char *const *cands, int n) {
    const char *best = NULL;
    int len = (int)strlen(name);
    int best_d = len <= 4 ? 1 : 2;
    for (int i = 0; i < n; i++) {
        int gap = len - (int)strlen(cands[i]);
        if (gap > best_d || -gap > best_d) continue; /* at least that many edits: no need to count */
        int dist = edit_distance(name, cands[i]);
        if (dist <= best_d && (!best || dist < best_d)) {
            best = cands[i];
            best_d = dist;
        }
    }
    return best;
}

/* Everything a name could have meant here, for hints. */
static const char *suggest_name(Elab *E, const char *name, bool functions) {
    if (E->d->dropping) return NULL; /* past the error limit: nobody reads the hint */
    const char *cands[512];
    int n = builtin_names(cands, 256);
    for (int i = 0; i < E->cells.len && n < 400; i++) cands[n++] = ((const Decl *)E->cells.items[i])->name;
    for (int i = 0; i < E->externs.len && n < 450; i++) cands[n++] = ((const Extern *)E->externs.items[i])->builtin.name;
    if (!functions && E->scope)
        for (Binding *b = E->scope->first; b && n < 512; b = b->order) cands[n++] = b->name;
    return elab_suggest(name, cands, n);
}

/* ---- values and nodes -------------------------------------------------- */

Value v_error(void) { return (Value){.kind = V_ERROR}; }
Value v_tensor(Node *n, Span at) { return (Value){.kind = V_TENSOR, .span = at, .node = n}; }
Value elab_number(double v, bool is_int, Span at) {
    return (Value){.kind = V_NUMBER, .span = at, .num = {v, is_int}};
}

const char *elab_describe_node(Elab *E, const Node *n) {
    const char *ty = type_str(E->arena, &n->type);
    if (n->name) return arena_printf(E->arena, "'%s' is %s", n->name, ty);
    return arena_printf(E->arena, "this is %s", ty);
}

static bool propagates_mask(OpKind op) {
    switch (op) {
    case OP_NEG: case OP_TANH: case OP_SIGMOID: case OP_HARD_SIGMOID: case OP_RELU: case OP_EXP: case OP_LOG:
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: case OP_SOFTMAX: case OP_MATMUL: case OP_SLICE:
    case OP_CONCAT: case OP_BATCHNORM: case OP_EXTERN:
        return true;
    default:
        return false;
    }
}

Node *elab_node(Elab *E, OpKind op, Span at, int nin, Node **in) {
    Graph *g = E->g;
    Node *n = graph_add(g, op, at, nin, in);
    const char *why = NULL;
    if (!shape_infer(n, &why)) {
        diag_error(E->d, at, "%s", why);
        for (int i = 0; i < nin; i++) {
            bool seen = false;
            for (int k = 0; k < i; k++) seen |= in[k] == in[i];
            if (!seen && in[i]->span.src && in[i]->op != OP_CONST)
                diag_note(E->d, in[i]->span, "%s, from here", elab_describe_node(E, in[i]));
        }
        g->nodes.len--; /* drop the ill-typed node */
        return NULL;
    }
    if (propagates_mask(op))
        for (int i = 0; i < nin && !n->mask; i++)
            if (in[i]->mask && in[i]->type.rank == n->type.rank) n->mask = in[i]->mask;
    return n;
}

Node *elab_const(Elab *E, double v, Span at) {
    Node *n = graph_add(E->g, OP_CONST, at, 0, NULL);
    n->constant = v;
    const char *why;
    shape_infer(n, &why);
    return n;
}

const char *elab_layer_name(Elab *E, Span at) {
    (void)at;
    const char *base = E->layer_name ? E->layer_name : "layer";
    const char *name = E->layers_in_stmt == 0 ? base : arena_printf(E->arena, "%s_%d", base, E->layers_in_stmt);
    E->layers_in_stmt++;
    return name;
}

Node *elab_param(Elab *E, const char *name, const Type *t, InitSpec init, bool trainable, Span at) {
    Graph *m = E->model;
    Node *n = graph_add(m, OP_PARAM, at, 0, NULL);
    n->type = *t;
    n->type.batched = false;
    n->name = name;
    n->param.init = init;
    n->param.trainable = trainable;
    n->param.layer = E->layer_name;
    ptrvec_push(E->arena, &m->params, n);
    return n;
}

static Value to_tensor(Elab *E, Value v, const char *what) {
    if (v.kind == V_TENSOR || v.kind == V_ERROR) return v;
    if (v.kind == V_NUMBER) return v_tensor(elab_const(E, v.num.v, v.span), v.span);
    static const char *const kind_name[] = {"", "", "a number", "a boolean", "a string", "a function", "a cell", "several values"};
    diag_error(E->d, v.span, "%s must be a value, but this is %s", what, kind_name[v.kind]);
    return v_error();
}

/* ---- expressions --------------------------------------------------------- */

static bool expr_uses(const Expr *e, const char *name) {
    switch (e->kind) {
    case EX_NAME: return strcmp(e->name, name) == 0;
    case EX_CALL:
        for (int i = 0; i < e->call.nargs; i++)
            if (expr_uses(e->call.args[i].value, name)) return true;
        return false;
    case EX_BINARY: return expr_uses(e->bin.lhs, name) || expr_uses(e->bin.rhs, name);
    case EX_NEG: return expr_uses(e->operand, name);
    default: return false;
    }
}

/* A block is elaborated top to bottom, so a name defined by this statement or
 * a later one is not known yet. Says so (rather than "unknown name") and
 * returns true when that is why `e` is unknown. */
static bool used_before_definition(Elab *E, const Expr *e) {
    const Scope *sc = E->scope;
    /* Past the error limit nobody reads the answer, and the search is linear. */
    if (!sc || !sc->block || !sc->current || E->d->dropping) return false;
    const Decl *blk = sc->block;
    int i = 0;
    while (i < blk->nbody && blk->body[i] != sc->current) i++;
    for (; i < blk->nbody; i++) {
        const Stmt *s = blk->body[i];
        for (int k = 0; k < s->nnames; k++) {
            if (strcmp(s->names[k], e->name) != 0) continue;
            if (s == sc->current) {
                diag_error(E->d, e->span, "'%s' is used in its own definition", e->name);
                return true;
            }
            const char *cycle = NULL;
            for (int j = 0; j < sc->current->nnames && !cycle && s->value; j++)
                if (expr_uses(s->value, sc->current->names[j])) cycle = sc->current->names[j];
            if (cycle)
                diag_error(E->d, e->span,
                           "'%s' is used before it is defined, and its definition uses '%s': the two form a cycle",
                           e->name, cycle);
            else
                diag_error(E->d, e->span, "'%s' is used before it is defined (statements run top to bottom)",
                           e->name);
            diag_note(E->d, s->name_spans[k], "'%s' is defined here", e->name);
            return true;
        }
    }
    return false;
}

static Value eval_name(Elab *E, const Expr *e) {
    Binding *b = elab_scope_find(E->scope, e->name);
    if (b) {
        b->used = true;
        Value v = b->v;
        v.span = e->span;
        return v;
    }
    if (strcmp(e->name, "true") == 0 || strcmp(e->name, "false") == 0)
        return (Value){.kind = V_BOOL, .span = e->span, .b = e->name[0] == 't'};
    const Builtin *fn = builtin_find(e->name);
    if (fn) return (Value){.kind = V_FUNC, .span = e->span, .fn = fn};
    const Extern *x = elab_find_extern(E, e->name);
    if (x) return (Value){.kind = V_FUNC, .span = e->span, .fn = &x->builtin};
    const Decl *cell = elab_find_cell(E, e->name);
    if (cell) return (Value){.kind = V_CELL, .span = e->span, .cell = cell};
    if (used_before_definition(E, e)) return v_error();
    const char *hint = suggest_name(E, e->name, false);
    if (hint)
        diag_error(E->d, e->span, "unknown name '%s'; did you mean '%s'?", e->name, hint);
    else
        diag_error(E->d, e->span, "unknown name '%s'", e->name);
    return v_error();
}


Value elab_call_func(Elab *E, const Builtin *fn, Node *x, Span at) {
    Args a = {0};
    a.v[0] = v_tensor(x, at);
    a.given[0] = true;
    a.at[0] = at;
    return fn->fn(E, fn, &a, at);
}

static Value eval_call(Elab *E, const Expr *e) {
    const char *name = e->call.callee;
    Binding *b = elab_scope_find(E->scope, name);
    if (b) {
        b->used = true;
        if (b->v.kind == V_FUNC) return builtin_call(E, b->v.fn, e); /* an option holding an activation */
        if (b->v.kind == V_ERROR) return v_error();
        diag_error(E->d, e->call.callee_span, "'%s' is a value, not a function", name);
        diag_note(E->d, b->def, "'%s' is defined here", name);
        return v_error();
    }
    const Decl *cell = elab_find_cell(E, name);
    if (cell) return elab_scan_layer(E, cell, e);
    const Builtin *fn = builtin_find(name);
    if (fn) return builtin_call(E, fn, e);
    const Extern *x = elab_find_extern(E, name);
    if (x) return builtin_call(E, &x->builtin, e);
    const char *hint = suggest_name(E, name, true);
    if (hint)
        diag_error(E->d, e->call.callee_span, "unknown function '%s'; did you mean '%s'?", name, hint);
    else
        diag_error(E->d, e->call.callee_span, "unknown function '%s'", name);
    /* Evaluate the arguments anyway: their own mistakes are worth reporting. */
    for (int i = 0; i < e->call.nargs; i++) (void)elab_expr(E, e->call.args[i].value);
    return v_error();
}

const char *elab_kind_word(ValueKind k) {
    switch (k) {
    case V_NUMBER: return "a number";
    case V_BOOL: return "a boolean";
    case V_STRING: return "a string";
    case V_FUNC: return "a function";
    case V_CELL: return "a cell";
    case V_TUPLE: return "several values";
    default: return "a value";
    }
}

static Value eval_binary(Elab *E, const Expr *e) {
    Value l = elab_expr(E, e->bin.lhs), r = elab_expr(E, e->bin.rhs);
    if (l.kind == V_ERROR || r.kind == V_ERROR) return v_error();
    char op = e->bin.op;
    const Value *bad = (l.kind != V_NUMBER && l.kind != V_TENSOR) ? &l : (r.kind != V_NUMBER && r.kind != V_TENSOR) ? &r : NULL;
    if (bad) {
        diag_error(E->d, bad->span, "cannot use %s with '%c'", elab_kind_word(bad->kind), op);
        return v_error();
    }
    if (l.kind == V_NUMBER && r.kind == V_NUMBER && op != '@') {
        double x = l.num.v, y = r.num.v, z;
        switch (op) {
        case '+': z = x + y; break;
        case '-': z = x - y; break;
        case '*': z = x * y; break;
        default:
            if (y == 0) {
                diag_error(E->d, e->span, "division by zero");
                return v_error();
            }
            z = x / y;
        }
        bool is_int = l.num.is_int && r.num.is_int && op != '/' && fabs(z) < 9e15;
        return elab_number(z, is_int, e->span);
    }
    if (op == '@' && (l.kind != V_TENSOR || r.kind != V_TENSOR)) {
        diag_error(E->d, (l.kind != V_TENSOR ? l : r).span, "'@' multiplies matrices; this is a number");
        return v_error();
    }
    l = to_tensor(E, l, "an operand");
    r = to_tensor(E, r, "an operand");
    OpKind k = op == '+' ? OP_ADD : op == '-' ? OP_SUB : op == '*' ? OP_MUL : op == '/' ? OP_DIV : OP_MATMUL;
    Node *in[2] = {l.node, r.node};
    Node *n = elab_node(E, k, e->span, 2, in);
    return n ? v_tensor(n, e->span) : v_error();
}

Value elab_expr(Elab *E, const Expr *e) {
    switch (e->kind) {
    case EX_NUMBER: return elab_number(e->num.value, e->num.is_int, e->span);
    case EX_STRING: return (Value){.kind = V_STRING, .span = e->span, .str = e->str};
    case EX_NAME: return eval_name(E, e);
    case EX_CALL: return eval_call(E, e);
    case EX_BINARY: return eval_binary(E, e);
    case EX_NEG: {
        Value v = elab_expr(E, e->operand);
        if (v.kind == V_ERROR) return v;
        if (v.kind == V_NUMBER) return elab_number(-v.num.v, v.num.is_int, e->span);
        if (v.kind != V_TENSOR) {
            diag_error(E->d, v.span, "cannot negate %s", elab_kind_word(v.kind));
            return v_error();
        }
        Node *n = elab_node(E, OP_NEG, e->span, 1, &v.node);
        return n ? v_tensor(n, e->span) : v_error();
    }
    }
    return v_error();
}

/* ---- arguments ------------------------------------------------------------ */

int elab_arg_index(const ArgSpec *specs, int nspecs, const char *name) {
    for (int i = 0; i < nspecs; i++)
        if (strcmp(specs[i].name, name) == 0) return i;
    return -1;
}

/* Keras spellings a user is likely to type, and what this language calls them. */
static const struct { const char *keras, *here; } keras_names[] = {
    {"return_sequences", "sequences: true"}, {"go_backwards", "direction: backward"},
    {"input_dim", "vocab"}, {"output_dim", "dim"}, {"learning_rate", "lr"},
    {"return_state", "a cell's states are not returned as values"},
};

static bool choice_ok(const char *choices, const char *w) {
    size_t n = strlen(w);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, w, n) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

/* "forward|backward|both" as "forward, backward or both". */
static const char *choices_text(Elab *E, const char *choices) {
    const char *last = strrchr(choices, '|');
    if (!last) return choices;
    char *out = arena_alloc(E->arena, strlen(choices) * 2 + 8);
    size_t o = 0;
    for (const char *p = choices; *p; p++) {
        if (*p != '|') {
            out[o++] = *p;
        } else {
            const char *sep = p == last ? " or " : ", ";
            memcpy(out + o, sep, strlen(sep));
            o += strlen(sep);
        }
    }
    return out;
}

static Value default_value(const ArgSpec *s, Span at) {
    const char *d = s->def;
    switch (s->type) {
    case A_INT:
    case A_NUM: return elab_number(strtod(d, NULL), s->type == A_INT, at);
    case A_BOOL: return (Value){.kind = V_BOOL, .span = at, .b = strcmp(d, "true") == 0};
    case A_FUNC: return (Value){.kind = V_FUNC, .span = at, .fn = builtin_find(d)};
    default: return (Value){.kind = V_STRING, .span = at, .str = d};
    }
}

/* What the user gave, for "must be X, not Y" messages. */
static const char *given(Elab *E, const Value *v) {
    switch (v->kind) {
    case V_NUMBER: return arena_printf(E->arena, "%g", v->num.v);
    case V_BOOL: return v->b ? "true" : "false";
    case V_STRING: return "a string";
    case V_FUNC:
        return arena_printf(E->arena, "%s '%s'", v->fn->kind == BI_LAYER ? "the layer" : "the function", v->fn->name);
    case V_CELL: return arena_printf(E->arena, "the recurrent layer '%s'", v->cell->name);
    case V_TENSOR: return "a value computed by the model";
    case V_TUPLE: return "several values";
    default: return "this";
    }
}

static Value check_arg(Elab *E, const char *fname, const ArgSpec *s, const Expr *x) {
    if (s->type == A_ENUM) {
        const char *w = x->kind == EX_NAME ? x->name : x->kind == EX_STRING ? x->str : NULL;
        if (!w || !choice_ok(s->choices, w)) {
            const char *cands[8];
            int n = 0;
            for (const char *p = s->choices; *p && n < 8; n++) {
                const char *bar = strchr(p, '|');
                size_t len = bar ? (size_t)(bar - p) : strlen(p);
                cands[n] = arena_strndup(E->arena, p, len);
                p += len + (bar != NULL);
            }
            const char *hint = w ? elab_suggest(w, cands, n) : NULL;
            if (hint)
                diag_error(E->d, x->span, "'%s' of %s must be %s; did you mean '%s'?", s->name, fname,
                           choices_text(E, s->choices), hint);
            else if (w)
                diag_error(E->d, x->span, "'%s' of %s must be %s, not '%s'", s->name, fname,
                           choices_text(E, s->choices), w);
            else
                diag_error(E->d, x->span, "'%s' of %s must be %s", s->name, fname, choices_text(E, s->choices));
            return v_error();
        }
        return (Value){.kind = V_STRING, .span = x->span, .str = w};
    }
    Value v = elab_expr(E, x);
    if (v.kind == V_ERROR) return v;
    switch (s->type) {
    case A_TENSOR:
        return to_tensor(E, v, arena_printf(E->arena, "'%s' of %s", s->name, fname));
    case A_INT:
    case A_NUM:
        if (v.kind != V_NUMBER || (s->type == A_INT && !v.num.is_int)) {
            diag_error(E->d, x->span, "'%s' of %s must be %s, not %s", s->name, fname,
                       s->type == A_INT ? "a whole number" : "a number", given(E, &v));
            return v_error();
        }
        if (s->max > s->min && (v.num.v < s->min || v.num.v > s->max || (s->max_open && v.num.v == s->max))) {
            if (s->max >= 1e15) /* no real upper bound */
                diag_error(E->d, x->span, "'%s' of %s must be at least %.15g, not %.15g", s->name, fname, s->min,
                           v.num.v);
            else
                diag_error(E->d, x->span, "'%s' of %s must be in [%.15g, %.15g%c, not %.15g", s->name, fname, s->min,
                           s->max, s->max_open ? ')' : ']', v.num.v);
            return v_error();
        }
        return v;
    case A_BOOL:
        if (v.kind != V_BOOL) {
            diag_error(E->d, x->span, "'%s' of %s must be true or false, not %s", s->name, fname, given(E, &v));
            return v_error();
        }
        return v;
    case A_FUNC:
        if (v.kind != V_FUNC || !builtin_is_activation(v.fn)) {
            diag_error(E->d, x->span,
                       "'%s' of %s must be an activation (linear, tanh, sigmoid, relu, softmax, hard_sigmoid), not %s",
                       s->name, fname, given(E, &v));
            return v_error();
        }
        return v;
    case A_STRING:
        if (v.kind != V_STRING) {
            diag_error(E->d, x->span, "'%s' of %s must be a string in quotes, not %s", s->name, fname, given(E, &v));
            return v_error();
        }
        return v;
    case A_ANY:
        if (v.kind == V_TENSOR || v.kind == V_TUPLE || v.kind == V_CELL || v.kind == V_STRING) {
            diag_error(E->d, x->span, "option '%s' of %s must be a number, true/false or an activation, not %s",
                       s->name, fname, given(E, &v));
            return v_error();
        }
        return v;
    case A_ENUM:
        break;
    }
    return v;
}

bool elab_bind_args(Elab *E, const char *fname, const ArgSpec *specs, int nspecs, bool variadic, const Expr *call,
                    Args *out) {
    memset(out, 0, sizeof *out);
    bool ok = true;
    int pos = 0;
    bool seen_named = false;
    for (int i = 0; i < call->call.nargs; i++) {
        const Arg *arg = &call->call.args[i];
        int k;
        if (arg->name) {
            seen_named = true;
            k = elab_arg_index(specs, nspecs, arg->name);
            if (k < 0) {
                const char *hint = NULL;
                for (size_t j = 0; j < sizeof keras_names / sizeof keras_names[0]; j++)
                    if (strcmp(keras_names[j].keras, arg->name) == 0) hint = keras_names[j].here;
                const char *cands[SEQC_MAX_ARGS];
                for (int j = 0; j < nspecs; j++) cands[j] = specs[j].name;
                const char *close = hint ? NULL : elab_suggest(arg->name, cands, nspecs);
                if (hint && strchr(hint, ':'))
                    diag_error(E->d, arg->name_span, "%s has no argument '%s'; write '%s'", fname, arg->name, hint);
                else if (hint && strchr(hint, ' '))
                    diag_error(E->d, arg->name_span, "%s has no argument '%s' (%s)", fname, arg->name, hint);
                else if (hint || close)
                    diag_error(E->d, arg->name_span, "%s has no argument '%s'; did you mean '%s'?", fname, arg->name,
                               hint ? hint : close);
                else
                    diag_error(E->d, arg->name_span, "%s has no argument '%s'", fname, arg->name);
                (void)elab_expr(E, arg->value);
                ok = false;
                /* The argument it most likely meant is not missing as well. */
                const char *meant = hint ? hint : close;
                int m = meant ? elab_arg_index(specs, nspecs, meant) : -1;
                if (m >= 0 && !out->given[m]) {
                    out->given[m] = true;
                    out->v[m] = v_error();
                }
                continue;
            }
        } else {
            if (seen_named) {
                diag_error(E->d, arg->value->span, "a positional argument cannot follow named ones in a call to %s",
                           fname);
                ok = false;
                continue;
            }
            /* Positional arguments fill the specs in order; tensors past them are extras (concat). */
            if (pos >= nspecs || (variadic && specs[pos].type != A_TENSOR)) {
                if (variadic && out->nextra < SEQC_MAX_ARGS) {
                    Value v = to_tensor(E, elab_expr(E, arg->value), arena_printf(E->arena, "an argument of %s", fname));
                    out->extra[out->nextra++] = v;
                    if (v.kind == V_ERROR) ok = false;
                    continue;
                }
                diag_error(E->d, arg->value->span, "%s takes at most %d positional argument%s", fname, pos,
                           pos == 1 ? "" : "s");
                ok = false;
                continue;
            }
            k = pos++;
        }
        if (out->given[k]) {
            diag_error(E->d, arg->name ? arg->name_span : arg->value->span, "argument '%s' of %s is given twice",
                       specs[k].name, fname);
            ok = false;
            continue;
        }
        out->given[k] = true;
        out->at[k] = arg->value->span;
        out->v[k] = check_arg(E, fname, &specs[k], arg->value);
        if (out->v[k].kind == V_ERROR) ok = false;
    }
    for (int k = 0; k < nspecs; k++) {
        if (out->given[k]) continue;
        out->at[k] = call->span;
        if (specs[k].def && specs[k].def[0]) {
            out->v[k] = default_value(&specs[k], call->span);
        } else if (!specs[k].def) {
            diag_error(E->d, call->span, "%s needs '%s'%s%s%s", fname, specs[k].name, specs[k].help ? " (" : "",
                       specs[k].help ? specs[k].help : "", specs[k].help ? ")" : "");
            ok = false;
        }
    }
    return ok;
}

/* ---- shapes written in the source --------------------------------------- */
Size *elab_size_find(SizeEnv *env, const char *name) {
    for (int i = 0; i < env->n; i++)
        if (strcmp(env->items[i].name, name) == 0) return &env->items[i];
    return NULL;
}

bool elab_eval_dim(Elab *E, const Expr *e, SizeEnv *env, int64_t *out) {
    switch (e->kind) {
    case EX_NUMBER:
        *out = e->num.ival;
        return true;
    case EX_NAME: {
        Size *s = env ? elab_size_find(env, e->name) : NULL;
        if (!s || !s->value) {
            if (env)
                diag_error(E->d, e->span, "size '%s' is not known here", e->name);
            else
                diag_error(E->d, e->span, "a model's shapes are numbers; '%s' is not known here", e->name);
            return false;
        }
        *out = s->value;
        return true;
    }
    case EX_BINARY: {
        int64_t a, b;
        if (!elab_eval_dim(E, e->bin.lhs, env, &a) || !elab_eval_dim(E, e->bin.rhs, env, &b)) return false;
        long long r;
        bool over = e->bin.op == '+' ? __builtin_add_overflow(a, b, &r)
                  : e->bin.op == '-' ? __builtin_sub_overflow(a, b, &r)
                                     : __builtin_mul_overflow(a, b, &r);
        if (over || r >= SEQC_MAX_ELEMENTS) {
            diag_error(E->d, e->span, "dimension is too large");
            return false;
        }
        *out = r;
        return true;
    }
    default:
        diag_error(E->d, e->span, "a dimension must be a whole number or a size name");
        return false;
    }
}

bool elab_type_from_ast(Elab *E, const TypeExpr *te, SizeEnv *env, bool batched, Type *out) {
    memset(out, 0, sizeof *out);
    out->dtype = te->dtype == DTYPE_I32 ? DT_I32 : DT_F32;
    out->batched = batched;
    if (te->ndims > SEQC_MAX_RANK) {
        diag_error(E->d, te->span, "a value may have at most %d axes per example; this shape has %d", SEQC_MAX_RANK,
                   te->ndims);
        return false;
    }
    out->rank = te->ndims;
    int64_t total = 1;
    for (int i = 0; i < te->ndims; i++) {
        int64_t v;
        if (!elab_eval_dim(E, te->dims[i], env, &v)) return false;
        if (v < 1) {
            diag_error(E->d, te->dims[i]->span, "a dimension must be at least 1, not %lld", (long long)v);
            return false;
        }
        total *= v;
        if (v >= SEQC_MAX_ELEMENTS || total >= SEQC_MAX_ELEMENTS) {
            diag_error(E->d, te->span, "this shape has more than 2^31 elements");
            return false;
        }
        out->dims[i] = v;
    }
    return true;
}

/* ---- models ---------------------------------------------------------------- */

static const char *row_kind_of(const Expr *e, const Node *n) {
    if (e->kind == EX_NAME) return "Alias";
    if (!n) return "";
    switch (n->op) {
    case OP_ADD: return "Add";
    case OP_SUB: return "Subtract";
    case OP_MUL: return "Multiply";
    case OP_DIV: return "Divide";
    case OP_NEG: return "Negate";
    case OP_MATMUL: return "MatMul";
    default: return op_name(n->op);
    }
}

/* Names a value may not take: the built-ins, cells, and the two booleans. */
bool elab_reserved_name(Elab *E, const char *name, Span at) {
    if (strcmp(name, "true") == 0 || strcmp(name, "false") == 0) {
        diag_error(E->d, at, "'%s' is a boolean constant; choose another name", name);
        return true;
    }
    if (builtin_find(name) || elab_find_cell(E, name)) {
        diag_error(E->d, at, "'%s' is the name of a built-in function or cell; choose another name", name);
        return true;
    }
    const Extern *x = elab_find_extern(E, name);
    if (x) {
        diag_error(E->d, at, "'%s' is the name of an extern function; choose another name", name);
        diag_note(E->d, x->decl->name_span, "'%s' is declared here", name);
        return true;
    }
    return false;
}

static void bind_model_name(Elab *E, const char *name, Span at, Value v) {
    Binding *b = elab_scope_find(E->scope, name);
    if (b) {
        diag_error(E->d, at, "'%s' is already defined", name);
        diag_note(E->d, b->def, "first defined here");
        return;
    }
    if (elab_reserved_name(E, name, at)) return;
    if (v.kind == V_TENSOR && !v.node->name) v.node->name = name;
    elab_scope_add(E, name, at, BK_VALUE, v);
}

/* The names of a statement that did not parse (an ST_LET without a value) mean
 * an error value: using them says nothing more. */
static void bind_unparsed(Elab *E, const Stmt *s) {
    for (int k = 0; k < s->nnames; k++) {
        if (elab_scope_find(E->scope, s->names[k])) continue;
        Binding *b = elab_scope_add(E, s->names[k], s->name_spans[k], BK_VALUE, v_error());
        b->used = true;
    }
}

static void model_input(Elab *E, const Stmt *s) {
    Type t;
    bool ok = elab_type_from_ast(E, s->type, NULL, true, &t);
    if (s->type->dtype == DTYPE_NONE) {
        diag_error(E->d, s->type->span, "write the element type of %s '%s': f32[...] or i32[...]",
                   s->kind == ST_INPUT ? "input" : "target", s->names[0]);
        ok = false;
    }
    if (!ok) {
        elab_scope_add(E, s->names[0], s->name_spans[0], s->kind == ST_INPUT ? BK_INPUT : BK_TARGET, v_error());
        return;
    }
    if (t.rank >= 1 && E->steps > 0) {
        if (E->declared_steps == 0 && s->kind == ST_INPUT) E->declared_steps = t.dims[0];
        if (t.dims[0] == E->declared_steps) t.dims[0] = E->steps;
    }
    Node *n = graph_add(E->model, OP_INPUT, s->span, 0, NULL);
    n->type = t;
    n->name = s->names[0];
    n->input.role = s->kind == ST_INPUT ? ROLE_INPUT : ROLE_TARGET;
    PtrVec *list = s->kind == ST_INPUT ? &E->model->inputs : &E->model->targets;
    n->input.index = list->len;
    ptrvec_push(E->arena, list, n);
    Binding *b = elab_scope_find(E->scope, s->names[0]);
    if (b) {
        diag_error(E->d, s->name_spans[0], "'%s' is already defined", s->names[0]);
        diag_note(E->d, b->def, "first defined here");
        return;
    }
    if (elab_reserved_name(E, s->names[0], s->name_spans[0])) return;
    elab_scope_add(E, s->names[0], s->name_spans[0], s->kind == ST_INPUT ? BK_INPUT : BK_TARGET, v_tensor(n, s->span));
}

static void model_let(Elab *E, const Stmt *s, bool last) {
    (void)last;
    E->layer_name = s->names[0];
    E->layers_in_stmt = 0;
    E->row_kind = NULL;
    int params_before = E->model->params.len;
    Value v = elab_expr(E, s->value);
    if (s->nnames > 1 && v.kind != V_ERROR && (v.kind != V_TUPLE || v.tuple.n != s->nnames)) {
        diag_error(E->d, s->span, "%d names on the left but the right side gives %d value%s", s->nnames,
                   v.kind == V_TUPLE ? v.tuple.n : 1, v.kind == V_TUPLE && v.tuple.n != 1 ? "s" : "");
        v = v_error();
    }
    if (s->nnames == 1 && v.kind == V_TUPLE) {
        diag_error(E->d, s->span, "the right side gives %d values; name each one (a, b = ...)", v.tuple.n);
        v = v_error();
    }
    if (v.kind != V_ERROR && v.kind != V_TENSOR && v.kind != V_TUPLE) {
        diag_error(E->d, s->value->span, "'%s' must be a value computed by the model, but this is %s", s->names[0],
                   elab_kind_word(v.kind));
        v = v_error();
    }
    for (int k = 0; k < s->nnames; k++)
        bind_model_name(E, s->names[k], s->name_spans[k],
                        v.kind == V_TUPLE ? v_tensor(v.tuple.items[k], s->name_spans[k]) : v);
    if (v.kind == V_ERROR) return;
    Node *out = v.kind == V_TUPLE ? v.tuple.items[0] : v.node;
    Layer *l = ARENA_NEW(E->arena, Layer);
    l->name = s->nnames > 1 ? arena_printf(E->arena, "%s, ...", s->names[0]) : s->names[0];
    l->kind = E->row_kind ? E->row_kind : row_kind_of(s->value, out);
    l->out = out;
    l->span = s->span;
    for (int i = params_before; i < E->model->params.len; i++) {
        const Node *p = E->model->params.items[i];
        if (p->param.trainable) l->trainable += type_elements(&p->type);
        else l->nontrainable += type_elements(&p->type);
    }
    ptrvec_push(E->arena, &E->model->layers, l);
    E->model->output = out;
}

static Node *scalar_stmt(Elab *E, const Stmt *s, const char *what) {
    E->layer_name = what;
    E->layers_in_stmt = 0;
    Value v = elab_expr(E, s->value);
    if (v.kind == V_ERROR) return NULL;
    if (v.kind != V_TENSOR || v.node->type.rank != 0 || v.node->type.batched) {
        diag_error(E->d, s->value->span,
                   "a %s must be one number for the whole batch (use a function such as %s), but this is %s", what,
                   what[0] == 'l' ? "binary_crossentropy(p, y)" : "accuracy(p, y)",
                   v.kind == V_TENSOR ? type_str(E->arena, &v.node->type) : elab_kind_word(v.kind));
        return NULL;
    }
    return v.node;
}

/* Declarations sorted by name (then order), for lookups that stay fast in a
 * file with many thousands of them. */
typedef struct NamedDecl {
    const Decl *decl;
    int order;          /* position in the program or file */
} NamedDecl;

static int cmp_named_decl(const void *a, const void *b) {
    const NamedDecl *x = a, *y = b;
    int c = strcmp(x->decl->name, y->decl->name);
    return c ? c : x->order - y->order;
}

/* The first declaration named `name` in `v` (sorted), or NULL. */
static const NamedDecl *first_named(const NamedDecl *v, int n, const char *name) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (strcmp(v[mid].decl->name, name) < 0) lo = mid + 1; else hi = mid;
    }
    return lo < n && strcmp(v[lo].decl->name, name) == 0 ? &v[lo] : NULL;
}

/* E->cells: every cell of the program, sorted by name for elab_find_cell(); of two
 * cells with one name the first is kept. Mistakes are reported in source order. */
static void collect_cells(Elab *E) {
    int n = 0;
    for (int m = 0; m < E->prog->modules.len; m++) {
        const Module *mod = E->prog->modules.items[m];
        for (int i = 0; i < mod->ndecls; i++) n += mod->decls[i]->kind == DECL_CELL;
    }
    NamedDecl *all = ARENA_ARRAY(E->arena, NamedDecl, n), *sorted = ARENA_ARRAY(E->arena, NamedDecl, n);
    bool *keep = ARENA_ARRAY(E->arena, bool, n);
    n = 0;
    for (int m = 0; m < E->prog->modules.len; m++) {
        const Module *mod = E->prog->modules.items[m];
        for (int i = 0; i < mod->ndecls; i++)
            if (mod->decls[i]->kind == DECL_CELL) all[n] = (NamedDecl){mod->decls[i], n}, n++;
    }
    memcpy(sorted, all, sizeof(NamedDecl) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(NamedDecl), cmp_named_decl);
    for (int i = 0; i < n; i++) {
        const Decl *d = all[i].decl;
        const Decl *first = first_named(sorted, n, d->name)->decl;
        if (first != d && first->span.src == E->prog->std->src && d->span.src != first->span.src) {
            diag_error(E->d, d->name_span, "'%s' is a standard cell (lib/std.seq); choose another name", d->name);
        } else if (first != d) {
            diag_error(E->d, d->name_span, "cell '%s' is defined twice", d->name);
            diag_note(E->d, first->name_span, "first defined here");
        } else if (builtin_find(d->name)) {
            diag_error(E->d, d->name_span, "'%s' is a built-in function; a cell cannot take its name", d->name);
        } else {
            keep[i] = true;
        }
    }
    for (int i = 0; i < n; i++)
        if (keep[sorted[i].order]) ptrvec_push(E->arena, &E->cells, (void *)sorted[i].decl);
}

static const Decl *train_for(const Program *p, const Decl *model, int nmodels) {
    for (int i = 0; i < p->root->ndecls; i++) {
        const Decl *d = p->root->decls[i];
        if (d->kind != DECL_TRAIN) continue;
        if (d->name ? strcmp(d->name, model->name ? model->name : "") == 0 : nmodels == 1) return d;
    }
    return NULL;
}

static int count_models(const Program *p) {
    int n = 0;
    for (int i = 0; i < p->root->ndecls; i++) n += p->root->decls[i]->kind == DECL_MODEL;
    return n;
}

/* `tb`: the model's train block, or NULL. */
static bool model_graph(Elab *E, const Decl *m, const Decl *tb, const ElabOptions *o, Model *out) {
    int errors = E->d->errors;
    memset(out, 0, sizeof *out);
    out->decl = m;
    train_defaults(&out->recipe);
    Graph *g = graph_new(E->arena, NULL, m->name);
    E->steps = o ? o->steps : 0;
    E->declared_steps = 0;
    E->model = g;
    E->g = g;
    E->cell = NULL;
    Scope scope = {.block = m};
    E->scope = &scope;
    int nlets = 0, last_let = -1;
    for (int i = 0; i < m->nbody; i++)
        if (m->body[i]->kind == ST_LET) nlets++, last_let = i;
    (void)nlets;
    bool incomplete = false; /* a statement did not parse; the parser has said so */
    const Stmt *first_loss = NULL;
    for (int i = 0; i < m->nbody; i++) {
        const Stmt *s = m->body[i];
        scope.current = s;
        switch (s->kind) {
        case ST_INPUT:
        case ST_TARGET: model_input(E, s); break;
        case ST_LET:
            if (s->value) {
                model_let(E, s, i == last_let);
            } else {
                bind_unparsed(E, s);
                incomplete = true;
            }
            break;
        case ST_LOSS: {
            Node *l = scalar_stmt(E, s, "loss");
            if (first_loss) {
                diag_error(E->d, s->span, "a model has one loss; add the terms in one statement (loss a + b)");
                diag_note(E->d, first_loss->value->span, "the first loss is here");
            } else {
                first_loss = s;
                g->loss = l;
            }
            break;
        }
        case ST_METRIC: {
            Node *l = scalar_stmt(E, s, "metric");
            if (l) ptrvec_push(E->arena, &g->metrics, l);
            break;
        }
        default: break; /* the parser keeps other statements out of models */
        }
    }
    if (E->d->errors == errors && !incomplete) {
        /* A name nobody reads is most often a mistake; the model's last value is its output. */
        Binding *last = NULL;
        for (Binding *b = scope.first; b; b = b->order)
            if (b->kind == BK_VALUE) last = b;
        for (Binding *b = scope.first; b; b = b->order) {
            if (b->used || (b == last && !g->loss)) continue;
            if (b->kind == BK_INPUT) diag_warning(E->d, b->def, "input '%s' is never used", b->name);
            else if (b->kind == BK_TARGET) diag_warning(E->d, b->def, "target '%s' is never used", b->name);
            else if (b != last || g->loss)
                if (!(b == last && !g->loss)) diag_warning(E->d, b->def, "'%s' is computed but never used", b->name);
        }
        if (g->inputs.len == 0) diag_error(E->d, m->name_span, "model '%s' has no input", m->name ? m->name : "?");
    }
    E->scope = NULL;
    if (tb) train_elab(E, tb, &out->recipe);
    g->batch = o && o->batch > 0 ? o->batch : out->recipe.batch;
    if (E->d->errors == errors && !graph_verify(g, stderr)) {
        diag_error(E->d, m->name_span, "internal error: the graph of model '%s' is malformed", m->name);
    }
    out->graph = g;
    return E->d->errors == errors && !incomplete;
}

static void elab_init(Elab *E, Program *p, Arena *arena, Diags *d) {
    memset(E, 0, sizeof *E);
    E->prog = p;
    E->d = d;
    E->arena = arena;
    collect_cells(E);
    elab_load_externs(E);
}

bool elab_model(Program *p, const char *name, const ElabOptions *o, Arena *arena, Model *out, Diags *d) {
    Elab E;
    int errors = d->errors;
    elab_init(&E, p, arena, d);
    const Decl *found = NULL;
    int nmodels = 0;
    for (int i = 0; i < p->root->ndecls; i++) {
        const Decl *m = p->root->decls[i];
        if (m->kind != DECL_MODEL || !m->name) continue;
        nmodels++;
        if (name ? strcmp(m->name, name) == 0 : !found) found = m;
    }
    Span none = {0};
    if (!found || (!name && nmodels > 1)) {
        const Source *src = p->root->src;
        if (name && !found)
            diag_error(d, none, "%s has no model named '%s'", src->path, name);
        else if (nmodels == 0)
            diag_error(d, none, "%s defines no model", src->path);
        else
            diag_error(d, none, "%s defines %d models; choose one with --model NAME", src->path, nmodels);
        return false;
    }
    return model_graph(&E, found, train_for(p, found, count_models(p)), o, out) && d->errors == errors;
}

/* The index of model m's train block in the root file, or -1: the first block
 * that names m or, when m is the only model, the first unnamed one (as train_for). */
static int train_block_of(const Decl *m, const NamedDecl *trains, int ntrains, int unnamed_train, int nmodels) {
    const NamedDecl *named = first_named(trains, ntrains, m->name);
    int tb = named ? named->order : -1;
    if (nmodels == 1 && unnamed_train >= 0 && (tb < 0 || unnamed_train < tb)) tb = unnamed_train;
    return tb;
}

bool elab_check(Program *p, const ElabOptions *o, Diags *d) {
    Elab E;
    int errors = d->errors;
    Arena arena;
    arena_init(&arena);
    elab_init(&E, p, &arena, d);
    const Module *root = p->root;
    for (int i = 0; i < root->ndecls; i++)
        if (root->decls[i]->kind == DECL_CELL) elab_check_cell(&E, root->decls[i]);
    /* Models and named train blocks by name; an unnamed block trains the only model. */
    int nmodels = count_models(p), nnamed = 0, ntrains = 0, unnamed_train = -1;
    NamedDecl *models = ARENA_ARRAY(&arena, NamedDecl, root->ndecls);
    NamedDecl *trains = ARENA_ARRAY(&arena, NamedDecl, root->ndecls);
    for (int i = 0; i < root->ndecls; i++) {
        const Decl *m = root->decls[i];
        if (m->kind == DECL_MODEL && m->name) models[nnamed++] = (NamedDecl){m, i};
        if (m->kind == DECL_TRAIN && m->name) trains[ntrains++] = (NamedDecl){m, i};
        if (m->kind == DECL_TRAIN && !m->name && unnamed_train < 0) unnamed_train = i;
    }
    qsort(models, (size_t)nnamed, sizeof(NamedDecl), cmp_named_decl);
    qsort(trains, (size_t)ntrains, sizeof(NamedDecl), cmp_named_decl);
    for (int i = 0; i < root->ndecls; i++) {
        const Decl *m = root->decls[i];
        if (m->kind == DECL_MODEL && m->name) {
            const NamedDecl *first = first_named(models, nnamed, m->name);
            if (first->decl != m) {
                diag_error(d, m->name_span, "model '%s' is defined twice", m->name);
                diag_note(d, first->decl->name_span, "first defined here");
            }
            int tb = train_block_of(m, trains, ntrains, unnamed_train, nmodels);
            Model model;
            model_graph(&E, m, tb >= 0 ? root->decls[tb] : NULL, o, &model);
        }
        if (m->kind == DECL_TRAIN) {
            const NamedDecl *target = m->name ? first_named(models, nnamed, m->name)
                                              : nmodels == 1 && nnamed == 1 ? &models[0] : NULL;
            const Decl *model = target ? target->decl : NULL;
            const Decl *first = model ? root->decls[train_block_of(model, trains, ntrains, unnamed_train, nmodels)] : NULL;
            if (first && first != m) {
                /* Only the first block trains the model; say so, and check this one too. */
                diag_error(d, m->span, "model '%s' already has a train block", model->name);
                diag_note(d, first->span, "the first one is here");
                TrainRecipe r;
                train_defaults(&r);
                train_elab(&E, m, &r);
            }
            if (!model) {
                if (m->name)
                    diag_error(d, m->name_span, "there is no model '%s' to train", m->name);
                else if (nmodels == 0)
                    diag_error(d, m->span, "there is no model in this file to train");
                else
                    diag_error(d, m->span, "this file has %d models; name the one to train (train NAME { ... })", nmodels);
                TrainRecipe r;
                train_defaults(&r);
                train_elab(&E, m, &r);
            }
        }
    }
    arena_free(&arena);
    return d->errors == errors;
}

int elab_model_names(const Program *p, const char **names, int max) {
    int n = 0;
    for (int i = 0; i < p->root->ndecls && n < max; i++)
        if (p->root->decls[i]->kind == DECL_MODEL && p->root->decls[i]->name) names[n++] = p->root->decls[i]->name;
    return n;
}
