/* The built-in functions of the language: layers (with params), activations,
 * structural ops, losses and metrics. One table row per function; its
 * argument list is its documentation (docs/language.md mirrors it). */
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "elab_internal.h"

#define BI_FN(name) static Value name(Elab *E, const Builtin *b, Args *a, Span at)

static Value done(Node *n, Span at) { return n ? v_tensor(n, at) : v_error(); }

static Node *T(Args *a, int i) { return a->v[i].node; }

/* ---- activations and elementwise functions ---- */

BI_FN(fn_unary) {
    static const struct { const char *name; OpKind op; } ops[] = {
        {"tanh", OP_TANH}, {"sigmoid", OP_SIGMOID}, {"hard_sigmoid", OP_HARD_SIGMOID}, {"relu", OP_RELU},
        {"softmax", OP_SOFTMAX}, {"exp", OP_EXP}, {"log", OP_LOG},
    };
    Node *x = T(a, 0);
    if (strcmp(b->name, "linear") == 0) return v_tensor(x, at);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].name, b->name) == 0) return done(elab_node(E, ops[i].op, at, 1, &x), at);
    return v_error();
}

/* ---- layers ---- */

static Type vec(int64_t n) { return (Type){.dtype = DT_F32, .rank = 1, .dims = {n}}; }
static Type mat(int64_t r, int64_t c) { return (Type){.dtype = DT_F32, .rank = 2, .dims = {r, c}}; }
static InitSpec init_named(const char *kind) { return (InitSpec){.kind = kind}; }

static bool need_features(Elab *E, const char *fname, Node *x, Span at) {
    if (x->type.dtype == DT_F32 && x->type.rank >= 1) return true;
    diag_error(E->d, at, "%s needs f32 values with a feature axis, but %s is %s%s", fname,
               x->name ? arena_printf(E->arena, "'%s'", x->name) : "its input", type_str(E->arena, &x->type),
               x->type.dtype == DT_I32 ? " (token ids go through embedding first)" : "");
    return false;
}

BI_FN(fn_dense) {
    Node *x = T(a, 0);
    if (!need_features(E, b->name, x, a->at[0])) return v_error();
    int64_t in = x->type.dims[x->type.rank - 1], units = (int64_t)a->v[1].num.v;
    const char *name = elab_layer_name(E, at);
    E->row_kind = "Dense";
    Type wt = mat(in, units), bt = vec(units);
    Node *w = elab_param(E, arena_printf(E->arena, "%s.kernel", name), &wt, init_named("glorot_uniform"), true, at);
    Node *y = elab_node(E, OP_MATMUL, at, 2, (Node *[]){x, w});
    if (!y) return v_error();
    if (a->v[3].b) {
        Node *bias = elab_param(E, arena_printf(E->arena, "%s.bias", name), &bt, init_named("zeros"), true, at);
        y = elab_node(E, OP_ADD, at, 2, (Node *[]){y, bias});
        if (!y) return v_error();
    }
    return elab_call_func(E, a->v[2].fn, y, at);
}

BI_FN(fn_embedding) {
    (void)b;
    Node *ids = T(a, 0);
    if (ids->type.dtype != DT_I32) {
        diag_error(E->d, a->at[0], "embedding takes token ids (i32), but %s is %s",
                   ids->name ? arena_printf(E->arena, "'%s'", ids->name) : "its input", type_str(E->arena, &ids->type));
        return v_error();
    }
    int64_t vocab = (int64_t)a->v[1].num.v, dim = (int64_t)a->v[2].num.v;
    if (vocab * dim >= SEQC_MAX_ELEMENTS) {
        diag_error(E->d, at, "an embedding of %lld x %lld has more than 2^31 entries", (long long)vocab, (long long)dim);
        return v_error();
    }
    const char *name = elab_layer_name(E, at);
    E->row_kind = "Embedding";
    Type t = mat(vocab, dim);
    /* Keras' Embedding starts from RandomUniform(-0.05, 0.05). */
    InitSpec init = {.kind = "uniform", .args = {-0.05, 0.05}};
    /* Pretrained vectors replace the rows of the tokens they know, at run time. */
    if (a->v[4].str && a->v[4].str[0]) init.vectors = a->v[4].str;
    Node *table = elab_param(E, arena_printf(E->arena, "%s.embeddings", name), &t, init, a->v[5].b, at);
    Node *y = elab_node(E, OP_EMBED, at, 2, (Node *[]){ids, table});
    if (!y) return v_error();
    if (a->v[3].b) {
        if (ids->type.rank < 1) {
            diag_error(E->d, at, "mask_zero needs a sequence of ids, but this is %s", type_str(E->arena, &ids->type));
            return v_error();
        }
        Node *m = elab_node(E, OP_NONZERO, at, 1, &ids);
        if (!m) return v_error();
        y->mask = m;
    }
    return v_tensor(y, at);
}

BI_FN(fn_batchnorm) {
    Node *x = T(a, 0);
    if (!need_features(E, b->name, x, a->at[0])) return v_error();
    int64_t f = x->type.dims[x->type.rank - 1];
    const char *name = elab_layer_name(E, at);
    E->row_kind = "BatchNormalization";
    Type t = vec(f);
    Node *in[5] = {
        x,
        elab_param(E, arena_printf(E->arena, "%s.gamma", name), &t, init_named("ones"), true, at),
        elab_param(E, arena_printf(E->arena, "%s.beta", name), &t, init_named("zeros"), true, at),
        elab_param(E, arena_printf(E->arena, "%s.moving_mean", name), &t, init_named("zeros"), false, at),
        elab_param(E, arena_printf(E->arena, "%s.moving_variance", name), &t, init_named("ones"), false, at),
    };
    Node *y = elab_node(E, OP_BATCHNORM, at, 5, in);
    if (!y) return v_error();
    double m = a->v[1].num.v;
    y->batchnorm.momentum = m;
    y->batchnorm.epsilon = a->v[2].num.v;
    /* Training moves the statistics toward the batch's (biased) mean and
     * variance: moving = moving * momentum + batch * (1 - momentum). */
    Node *mean = elab_node(E, OP_MEAN_LEAD, at, 1, &x);
    Node *centred = elab_node(E, OP_SUB, at, 2, (Node *[]){x, mean});
    Node *var = elab_node(E, OP_MEAN_LEAD, at, 1, (Node *[]){elab_node(E, OP_MUL, at, 2, (Node *[]){centred, centred})});
    Node *stats[2] = {mean, var};
    for (int i = 0; i < 2; i++) {
        Node *old = in[3 + i];
        Node *kept = elab_node(E, OP_MUL, at, 2, (Node *[]){old, elab_const(E, m, at)});
        Node *moved = elab_node(E, OP_MUL, at, 2, (Node *[]){stats[i], elab_const(E, 1 - m, at)});
        Update *u = ARENA_NEW(E->arena, Update);
        u->var = old;
        u->value = elab_node(E, OP_ADD, at, 2, (Node *[]){kept, moved});
        ptrvec_push(E->arena, &E->model->updates, u);
    }
    return v_tensor(y, at);
}

BI_FN(fn_dropout) {
    if (E->cell) {
        diag_error(E->d, at, "%s inside a cell would draw a new mask at every step; use drop_input(x) or "
                   "drop_state(h), which the layer's dropout arguments control", b->name);
        return v_error();
    }
    Node *x = T(a, 0);
    E->row_kind = "Dropout";
    if (x->type.dtype != DT_F32) {
        diag_error(E->d, a->at[0], "dropout needs f32 values, but this is %s", type_str(E->arena, &x->type));
        return v_error();
    }
    /* The mask is a value of its own, so the gradient is the product rule's. */
    Node *mask = graph_add(E->g, OP_DROPMASK, at, 0, NULL);
    mask->type = x->type;
    mask->type.batched = true;
    mask->rate = a->v[1].num.v;
    return done(elab_node(E, OP_MUL, at, 2, (Node *[]){x, mask}), at);
}

BI_FN(fn_flatten) {
    (void)b;
    Node *x = T(a, 0);
    E->row_kind = "Flatten";
    Node *y = graph_add(E->g, OP_RESHAPE, at, 1, &x);
    y->type = x->type;
    y->type.rank = 1;
    y->type.dims[0] = type_elements(&x->type);
    for (int i = 1; i < SEQC_MAX_RANK; i++) y->type.dims[i] = 0;
    const char *why;
    if (!shape_infer(y, &why)) {
        diag_error(E->d, at, "%s", why);
        return v_error();
    }
    return v_tensor(y, at);
}

/* ---- structure ---- */

BI_FN(fn_split) {
    (void)b;
    Node *x = T(a, 0);
    int64_t parts = (int64_t)a->v[1].num.v;
    if (x->type.rank < 1) {
        diag_error(E->d, a->at[0], "cannot split %s: it has no axis", type_str(E->arena, &x->type));
        return v_error();
    }
    int64_t n = x->type.dims[x->type.rank - 1];
    if (n % parts != 0) {
        diag_error(E->d, at, "cannot split %s into %lld equal parts: %lld is not a multiple of %lld",
                   type_str(E->arena, &x->type), (long long)parts, (long long)n, (long long)parts);
        if (x->span.src) diag_note(E->d, x->span, "the value comes from here");
        return v_error();
    }
    if (parts > SEQC_MAX_ARGS) {
        diag_error(E->d, a->at[1], "split makes at most %d parts", SEQC_MAX_ARGS);
        return v_error();
    }
    Value v = {.kind = V_TUPLE, .span = at};
    v.tuple.items = ARENA_ARRAY(E->arena, Node *, parts);
    v.tuple.n = (int)parts;
    for (int64_t i = 0; i < parts; i++) {
        Node *s = graph_add(E->g, OP_SLICE, at, 1, &x);
        s->slice.start = i * (n / parts);
        s->slice.len = n / parts;
        const char *why;
        if (!shape_infer(s, &why)) {
            diag_error(E->d, at, "%s", why);
            return v_error();
        }
        s->mask = x->mask;
        v.tuple.items[i] = s;
    }
    return v;
}

BI_FN(fn_concat) {
    (void)b;
    Node *in[SEQC_MAX_ARGS + 1];
    int n = 0;
    in[n++] = T(a, 0);
    for (int i = 0; i < a->nextra; i++) {
        if (a->extra[i].kind == V_ERROR) return v_error();
        in[n++] = a->extra[i].node;
    }
    if (n < 2) {
        diag_error(E->d, at, "concat needs at least two values");
        return v_error();
    }
    E->row_kind = "Concatenate";
    return done(elab_node(E, OP_CONCAT, at, n, in), at);
}

static Value time_op(Elab *E, OpKind op, const char *kind, Args *a, Span at) {
    Node *x = T(a, 0);
    if (x->type.rank < 2 && op != OP_REVERSE && op != OP_LAST) {
        diag_error(E->d, a->at[0], "%s needs a sequence of feature vectors (f32[steps, features]), but this is %s",
                   op_name(op), type_str(E->arena, &x->type));
        return v_error();
    }
    E->row_kind = kind;
    Node *in[2] = {x, x->mask};
    bool masked = x->mask && (op == OP_MAX_TIME || op == OP_MEAN_TIME);
    Node *y = elab_node(E, op, at, masked ? 2 : 1, in);
    if (y && op == OP_REVERSE && x->mask) {
        Node *m = elab_node(E, OP_REVERSE, at, 1, &x->mask);
        y->mask = m;
    }
    return done(y, at);
}

BI_FN(fn_reverse) { (void)b; return time_op(E, OP_REVERSE, "Reverse", a, at); }
BI_FN(fn_last) { (void)b; return time_op(E, OP_LAST, "LastStep", a, at); }
BI_FN(fn_max_pool) { (void)b; return time_op(E, OP_MAX_TIME, "GlobalMaxPooling1D", a, at); }
BI_FN(fn_avg_pool) { (void)b; return time_op(E, OP_MEAN_TIME, "GlobalAveragePooling1D", a, at); }

BI_FN(fn_mean) {
    (void)b;
    Node *x = T(a, 0);
    return done(elab_node(E, OP_MEAN_ALL, at, 1, &x), at);
}

/* ---- inside cells: the layer's dropout, one mask per sequence ---- */

BI_FN(fn_step_dropout) {
    bool recurrent = strcmp(b->name, "drop_state") == 0;
    if (!E->cell) {
        diag_error(E->d, at, "%s belongs in a cell; in a model use dropout(x, rate)", b->name);
        return v_error();
    }
    Node *x = T(a, 0);
    if (recurrent) E->cell->used_drop_state = true; else E->cell->used_drop_input = true;
    double rate = recurrent ? E->cell->recurrent_dropout : E->cell->dropout;
    if (rate == 0) return v_tensor(x, at); /* no dropout asked for: the value itself */
    if (x->type.dtype != DT_F32 || !x->type.batched) {
        diag_error(E->d, a->at[0], "%s needs a value that differs per example, but this is %s", b->name,
                   type_str(E->arena, &x->type));
        return v_error();
    }
    /* One mask per sequence, drawn outside the scan and captured by every step. */
    Node *mask = cell_capture_dropmask(E, &x->type, rate, at);
    if (!mask) return v_error();
    return done(elab_node(E, OP_MUL, at, 2, (Node *[]){x, mask}), at);
}

/* ---- losses and metrics ---- */

static bool is_target(const Node *n) { return n->op == OP_INPUT && n->input.role == ROLE_TARGET; }

static Value loss_or_metric(Elab *E, const Builtin *b, OpKind op, Args *a, Span at) {
    Node *p = T(a, 0), *y = T(a, 1);
    if (is_target(p) && !is_target(y)) {
        diag_error(E->d, a->at[0], "%s takes the prediction first and the target second; '%s' is a target", b->name,
                   p->name);
        return v_error();
    }
    Node *n = elab_node(E, op, at, 2, (Node *[]){p, y});
    if (!n) return v_error();
    if (b->kind == BI_LOSS) { /* the accuracy kind shares the payload: set by its shape rule */
        n->loss.loss = op;
        n->loss.from_logits = op != OP_MSE && a->v[2].b;
    }
    return v_tensor(n, at);
}

BI_FN(fn_bce) { return loss_or_metric(E, b, OP_BCE, a, at); }
BI_FN(fn_sce) { return loss_or_metric(E, b, OP_SCE, a, at); }
BI_FN(fn_cce) { return loss_or_metric(E, b, OP_CCE, a, at); }
BI_FN(fn_mse) { return loss_or_metric(E, b, OP_MSE, a, at); }
BI_FN(fn_accuracy) { return loss_or_metric(E, b, OP_ACCURACY, a, at); }

#define X1 {"x", A_TENSOR, NULL, NULL, "the input", 0, 0, false}
#define LOSS_ARGS                                                                          \
    {{"prediction", A_TENSOR, NULL, NULL, "the model's output", 0, 0, false},              \
     {"target", A_TENSOR, NULL, NULL, "the target", 0, 0, false},                          \
     {"from_logits", A_BOOL, "false", NULL, NULL, 0, 0, false}}

static const Builtin builtins[] = {
    {"linear", BI_ACTIVATION, "Activation", false, {X1}, fn_unary},
    {"tanh", BI_ACTIVATION, "Activation", false, {X1}, fn_unary},
    {"sigmoid", BI_ACTIVATION, "Activation", false, {X1}, fn_unary},
    {"hard_sigmoid", BI_ACTIVATION, "Activation", false, {X1}, fn_unary},
    {"relu", BI_ACTIVATION, "Activation", false, {X1}, fn_unary},
    {"softmax", BI_ACTIVATION, "Activation", false, {X1}, fn_unary},
    {"exp", BI_OP, "Exp", false, {X1}, fn_unary},
    {"log", BI_OP, "Log", false, {X1}, fn_unary},
    {"dense", BI_LAYER, "Dense", false,
     {X1,
      {"units", A_INT, NULL, NULL, "the number of outputs", 1, 1e18, false},
      {"activation", A_FUNC, "linear", NULL, NULL, 0, 0, false},
      {"use_bias", A_BOOL, "true", NULL, NULL, 0, 0, false}},
     fn_dense},
    {"embedding", BI_LAYER, "Embedding", false,
     {{"ids", A_TENSOR, NULL, NULL, "the token ids", 0, 0, false},
      {"vocab", A_INT, NULL, NULL, "the number of distinct tokens, the largest id + 1", 1, 1e18, false},
      {"dim", A_INT, NULL, NULL, "the size of each token's vector", 1, 1e18, false},
      {"mask_zero", A_BOOL, "false", NULL, NULL, 0, 0, false},
      {"vectors", A_STRING, "", NULL, NULL, 0, 0, false},
      {"trainable", A_BOOL, "true", NULL, NULL, 0, 0, false}},
     fn_embedding},
    {"batchnorm", BI_LAYER, "BatchNormalization", false,
     {X1,
      {"momentum", A_NUM, "0.99", NULL, NULL, 0, 1, false},
      {"epsilon", A_NUM, "0.001", NULL, NULL, 1e-12, 1, false}},
     fn_batchnorm},
    {"dropout", BI_OP, "Dropout", false,
     {X1, {"rate", A_NUM, NULL, NULL, "the fraction of values to drop", 0, 1, true}}, fn_dropout},
    {"flatten", BI_OP, "Flatten", false, {X1}, fn_flatten},
    {"split", BI_OP, "Split", false,
     {X1, {"parts", A_INT, NULL, NULL, "how many equal parts", 1, 1e18, false}}, fn_split},
    {"concat", BI_OP, "Concatenate", true, {X1}, fn_concat},
    {"reverse", BI_OP, "Reverse", false, {X1}, fn_reverse},
    {"last", BI_OP, "LastStep", false, {X1}, fn_last},
    {"global_max_pool", BI_OP, "GlobalMaxPooling1D", false, {X1}, fn_max_pool},
    {"global_avg_pool", BI_OP, "GlobalAveragePooling1D", false, {X1}, fn_avg_pool},
    {"mean", BI_OP, "Mean", false, {X1}, fn_mean},
    {"drop_input", BI_CELL_ONLY, NULL, false, {X1}, fn_step_dropout},
    {"drop_state", BI_CELL_ONLY, NULL, false, {X1}, fn_step_dropout},
    {"binary_crossentropy", BI_LOSS, NULL, false, LOSS_ARGS, fn_bce},
    {"sparse_categorical_crossentropy", BI_LOSS, NULL, false, LOSS_ARGS, fn_sce},
    {"categorical_crossentropy", BI_LOSS, NULL, false, LOSS_ARGS, fn_cce},
    /* mse has no from_logits: there is no squashing function it could undo. */
    {"mse", BI_LOSS, NULL, false,
     {{"prediction", A_TENSOR, NULL, NULL, "the model's output", 0, 0, false},
      {"target", A_TENSOR, NULL, NULL, "the target", 0, 0, false}},
     fn_mse},
    {"accuracy", BI_METRIC, NULL, false,
     {{"prediction", A_TENSOR, NULL, NULL, "the model's output", 0, 0, false},
      {"target", A_TENSOR, NULL, NULL, "the target", 0, 0, false}},
     fn_accuracy},
};

enum { NBUILTINS = sizeof builtins / sizeof builtins[0] };

const Builtin *builtin_find(const char *name) {
    for (int i = 0; i < NBUILTINS; i++)
        if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
    return NULL;
}

int builtin_names(const char **names, int max) {
    int n = 0;
    for (int i = 0; i < NBUILTINS && n < max; i++) names[n++] = builtins[i].name;
    return n;
}

bool builtin_is_activation(const Builtin *b) { return b->kind == BI_ACTIVATION; }

static int nspecs(const Builtin *b) {
    int n = 0;
    while (n < 8 && b->args[n].name) n++;
    return n;
}

Value builtin_call(Elab *E, const Builtin *b, const Expr *call) {
    if (b->kind == BI_LAYER && E->cell) {
        diag_error(E->d, call->call.callee_span, "%s creates its own params and cannot be used inside a cell; "
                   "declare a param and use '@' instead", b->name);
        return v_error();
    }
    Args a;
    if (!elab_bind_args(E, b->name, b->args, nspecs(b), b->variadic, call, &a)) return v_error();
    if (b->kind == BI_ACTIVATION && !E->row_kind) E->row_kind = "Activation";
    return b->fn(E, b, &a, call->span);
}

/* ---- extern functions: float f(float) from a user's shared library ---- */

/* Elementwise, f32 only, in models and cells alike. */
BI_FN(fn_extern) {
    const Extern *x = (const Extern *)b;
    if (!x->fn.fn || (x->decl->grad && !x->grad.fn)) return v_error(); /* reported at the declaration */
    Node *in = T(a, 0);
    if (in->type.dtype != DT_F32) {
        diag_error(E->d, a->at[0], "extern '%s' takes f32 values (it is float %s(float)), but %s is %s%s", b->name,
                   b->name, in->name ? arena_printf(E->arena, "'%s'", in->name) : "its argument",
                   type_str(E->arena, &in->type), in->type.dtype == DT_I32 ? " (token ids go through embedding first)" : "");
        diag_note(E->d, x->decl->name_span, "'%s' is declared here", b->name);
        return v_error();
    }
    Node *n = graph_add(E->g, OP_EXTERN, at, 1, &in);
    n->ext = &x->fn;
    const char *why;
    if (!shape_infer(n, &why)) {
        diag_error(E->d, at, "%s", why);
        E->g->nodes.len--;
        return v_error();
    }
    n->mask = in->mask;
    return v_tensor(n, at);
}

/* The library as dlopen is to see it: a path with a slash is relative to the
 * file that declares it (unless absolute); a bare name is left to dlopen's
 * search (LD_LIBRARY_PATH, the cache, the system directories). */
static const char *library_path(Elab *E, const Decl *d) {
    const char *lib = d->path, *file = d->span.src ? d->span.src->path : NULL;
    if (!strchr(lib, '/') || lib[0] == '/' || !file || !strrchr(file, '/')) return lib;
    while (lib[0] == '.' && lib[1] == '/') lib += 2;
    int dir = (int)(strrchr(file, '/') - file);
    return arena_printf(E->arena, "%.*s/%s", dir, file, lib);
}

/* dlsym of a `float name(float)`, or NULL with an error at `at`. */
static float (*find_symbol(Elab *E, void *lib, const char *path, const char *sym, const char *what, Span at))(float) {
    dlerror(); /* clear: only a NULL with an error pending means "not found" */
    void *p = dlsym(lib, sym);
    const char *err = dlerror();
    if (!err && p) return (float (*)(float))p;
    diag_error(E->d, at, "library '%s' has no function '%s'%s: %s", path, sym, what,
               err ? err : "the symbol's address is 0");
    return NULL;
}

static int cmp_extern(const void *a, const void *b) {
    const Extern *x = *(const Extern *const *)a, *y = *(const Extern *const *)b;
    int c = strcmp(x->builtin.name, y->builtin.name);
    return c ? c : (x->decl->span.off > y->decl->span.off) - (x->decl->span.off < y->decl->span.off);
}

void elab_load_externs(Elab *E) {
    for (int m = 0; m < E->prog->modules.len; m++) {
        const Module *mod = E->prog->modules.items[m];
        for (int i = 0; i < mod->ndecls; i++) {
            const Decl *d = mod->decls[i];
            if (d->kind != DECL_EXTERN) continue;
            if (builtin_find(d->name)) {
                diag_error(E->d, d->name_span, "'%s' is a built-in function; an extern cannot take its name", d->name);
                continue;
            }
            const Decl *cell = elab_find_cell(E, d->name);
            if (cell) {
                diag_error(E->d, d->name_span, "'%s' is the name of a cell; an extern cannot take it too", d->name);
                diag_note(E->d, cell->name_span, "the cell is defined here");
                continue;
            }
            bool twice = false;
            for (int k = 0; k < E->externs.len && !twice; k++) {
                const Extern *o = E->externs.items[k];
                if (strcmp(o->builtin.name, d->name) != 0) continue;
                diag_error(E->d, d->name_span, "extern '%s' is declared twice", d->name);
                diag_note(E->d, o->decl->name_span, "first declared here");
                twice = true;
            }
            if (twice) continue;
            const char *path = d->path ? library_path(E, d) : "";
            Extern *x = ARENA_NEW(E->arena, Extern);
            x->decl = d;
            x->builtin = (Builtin){.name = d->name, .kind = BI_ACTIVATION, .keras = "Activation", .fn = fn_extern};
            x->builtin.args[0] = (ArgSpec){.name = d->ninputs ? d->inputs[0].name : "x", .type = A_TENSOR,
                                           .help = "the input"};
            x->fn = (ExternFn){.name = d->name, .library = path, .decl = d->name_span};
            ptrvec_push(E->arena, &E->externs, x); /* even when broken: its calls stay quiet */
            if (!d->path || d->ninputs != 1) continue; /* the parser has reported it */
            /* RTLD_NOW: a library whose own dependencies are missing fails here,
             * at the declaration, not at the first call. The handle is never
             * closed: nodes keep the function pointers for the graph's life. */
            void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (!lib) {
                const char *err = dlerror();
                diag_error(E->d, d->path_span, "cannot load library '%s' of extern '%s': %s", path, d->name,
                           err ? err : "dlopen failed");
                continue;
            }
            x->fn.fn = find_symbol(E, lib, path, d->name, "", d->name_span);
            if (!d->grad) continue;
            x->grad = (ExternFn){.name = d->grad, .library = path, .decl = d->grad_span};
            x->grad.fn = find_symbol(E, lib, path, d->grad,
                                     arena_printf(E->arena, " (the derivative of '%s')", d->name), d->grad_span);
            x->fn.grad = &x->grad;
        }
    }
    if (E->externs.len > 1) qsort(E->externs.items, (size_t)E->externs.len, sizeof(void *), cmp_extern);
}

const Extern *elab_find_extern(Elab *E, const char *name) {
    int lo = 0, hi = E->externs.len - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const Extern *x = E->externs.items[mid];
        int c = strcmp(x->builtin.name, name);
        if (c == 0) return x;
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

/* ---- initializers, after `init` in a param declaration ---- */

static const ArgSpec init_uniform[] = {{"min", A_NUM, "-0.05", NULL, NULL, 0, 0, false},
                                       {"max", A_NUM, "0.05", NULL, NULL, 0, 0, false}};
static const ArgSpec init_constant[] = {{"value", A_NUM, NULL, NULL, "the value", 0, 0, false}};
static const ArgSpec init_orthogonal[] = {{"gain", A_NUM, "1", NULL, NULL, 0, 0, false}};
static const ArgSpec init_lstm_bias[] = {{"forget", A_NUM, "1", NULL, NULL, 0, 0, false}};

static const struct {
    const char *name;
    const ArgSpec *args;
    int nargs;
} initializers[] = {
    {"zeros", NULL, 0},          {"ones", NULL, 0},
    {"glorot_uniform", NULL, 0}, {"glorot_normal", NULL, 0},
    {"orthogonal", init_orthogonal, 1},
    {"uniform", init_uniform, 2}, {"constant", init_constant, 1},
    {"lstm_bias", init_lstm_bias, 1},
};

bool builtin_init_spec(Elab *E, const Expr *e, const Type *t, InitSpec *out) {
    memset(out, 0, sizeof *out);
    const char *name = e->kind == EX_NAME ? e->name : e->kind == EX_CALL ? e->call.callee : NULL;
    int k = -1;
    for (size_t i = 0; name && i < sizeof initializers / sizeof initializers[0]; i++)
        if (strcmp(initializers[i].name, name) == 0) k = (int)i;
    if (k < 0) {
        const char *cands[16];
        int n = 0;
        for (size_t i = 0; i < sizeof initializers / sizeof initializers[0]; i++) cands[n++] = initializers[i].name;
        const char *hint = name ? elab_suggest(name, cands, n) : NULL;
        if (hint)
            diag_error(E->d, e->span, "unknown initializer '%s'; did you mean '%s'?", name, hint);
        else
            diag_error(E->d, e->span, "expected an initializer (zeros, ones, glorot_uniform, glorot_normal, orthogonal, "
                       "uniform(min, max), constant(value), lstm_bias(forget))");
        return false;
    }
    out->kind = initializers[k].name;
    if (initializers[k].nargs) {
        Args a;
        if (e->kind == EX_CALL) {
            if (!elab_bind_args(E, name, initializers[k].args, initializers[k].nargs, false, e, &a)) return false;
        } else {
            Expr call = {.kind = EX_CALL, .span = e->span};
            call.call.callee = name;
            if (!elab_bind_args(E, name, initializers[k].args, initializers[k].nargs, false, &call, &a)) return false;
        }
        for (int i = 0; i < initializers[k].nargs; i++) out->args[i] = a.v[i].num.v;
    } else if (e->kind == EX_CALL && e->call.nargs) {
        diag_error(E->d, e->span, "initializer '%s' takes no arguments", name);
        return false;
    }
    if (strcmp(out->kind, "orthogonal") == 0 && t->rank < 2) {
        diag_error(E->d, e->span, "orthogonal needs a matrix, but the param is %s", type_str(E->arena, t));
        return false;
    }
    if (strcmp(out->kind, "lstm_bias") == 0) {
        if (t->rank != 1 || t->dims[0] % 4 != 0) {
            diag_error(E->d, e->span, "lstm_bias is for a vector of 4 gates (i, f, c, o), but the param is %s",
                       type_str(E->arena, t));
            return false;
        }
        out->units = t->dims[0] / 4;
    }
    return true;
}
