#include "graph.h"

#include <string.h>

static const struct { const char *name; int nin; } op_info[] = {
#define OP(e, name, nin) {name, nin},
#include "ops.def"
#undef OP
};

const char *op_name(OpKind op) { return op_info[op].name; }
int op_arity(OpKind op) { return op_info[op].nin; }

Graph *graph_new(Arena *arena, Graph *parent, const char *name) {
    Graph *g = ARENA_NEW(arena, Graph);
    g->arena = arena;
    g->parent = parent;
    g->name = name;
    return g;
}

Node *graph_add(Graph *g, OpKind op, Span span, int nin, Node **in) {
    Node *n = ARENA_NEW(g->arena, Node);
    n->op = op;
    n->id = g->nodes.len;
    n->span = span;
    n->graph = g;
    n->nin = nin;
    n->in = ARENA_ARRAY(g->arena, Node *, nin > 0 ? nin : 1);
    for (int i = 0; i < nin; i++) n->in[i] = in[i];
    ptrvec_push(g->arena, &g->nodes, n);
    return n;
}

int64_t type_elements(const Type *t) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->dims[i];
    return n;
}

void node_copy_payload(Node *to, const Node *from) {
    Node keep = *to;
    *to = *from;
    to->id = keep.id;
    to->graph = keep.graph;
    to->in = keep.in;
    to->nin = keep.nin;
    to->mask = NULL;
}

Node *graph_add_like(Graph *g, const Node *like, int nin, Node **in) {
    Node *n = graph_add(g, like->op, like->span, nin, in);
    node_copy_payload(n, like);
    return n;
}

int *graph_uses(const Graph *g, Arena *a) {
    int *uses = ARENA_ARRAY(a, int, g->nodes.len ? g->nodes.len : 1);
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *x = g->nodes.items[i];
        for (int k = 0; k < x->nin; k++) uses[x->in[k]->id]++;
    }
    const Node *refs[2] = {g->loss, g->output};
    for (int i = 0; i < 2; i++)
        if (refs[i] && refs[i]->graph == g) uses[refs[i]->id]++;
    const PtrVec *lists[3] = {&g->outputs, &g->metrics, &g->grads};
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < lists[l]->len; i++) {
            const Node *x = lists[l]->items[i];
            if (x && x->graph == g) uses[x->id]++;
        }
    for (int i = 0; i < g->updates.len; i++) {
        const Node *v = ((Update *)g->updates.items[i])->value;
        if (v && v->graph == g) uses[v->id]++;
    }
    return uses;
}

int64_t scan_walked(const Node *scan, int64_t *first) {
    if (scan->scan.walk_end > 0) {
        *first = scan->scan.walk_begin;
        return scan->scan.walk_end - scan->scan.walk_begin;
    }
    *first = 0;
    return scan->in[0]->type.dims[0];
}

static int64_t rows_of(int64_t batch, const Node *x, int64_t inner) {
    return (x->type.batched ? batch : 1) * (type_elements(&x->type) / inner);
}

double graph_matmul_flops(const Graph *g, int64_t batch) {
    double flops = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        switch (n->op) {
        case OP_MATMUL: {
            const Node *w = n->in[1];
            int64_t K = w->type.dims[0], N = w->type.dims[1];
            flops += 2.0 * (double)rows_of(batch, n->in[0], K) * (double)K * (double)N;
            break;
        }
        case OP_MATMUL_T: {
            const Node *w = n->in[1];
            int64_t K = w->type.dims[0], N = w->type.dims[1];
            flops += 2.0 * (double)rows_of(batch, n->in[0], N) * (double)K * (double)N;
            break;
        }
        case OP_MATMUL_W: {
            int64_t K = n->type.dims[0], N = n->type.dims[1];
            flops += 2.0 * (double)rows_of(batch, n->in[0], K) * (double)K * (double)N;
            break;
        }
        case OP_SCAN: {
            int64_t first, walked = scan_walked(n, &first);
            flops += (double)walked * graph_matmul_flops(n->scan.body, batch);
            break;
        }
        default: break;
        }
    }
    return flops;
}

bool type_equal(const Type *a, const Type *b) {
    if (a->dtype != b->dtype || a->rank != b->rank || a->batched != b->batched) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

static char *dims_str(Arena *a, const Type *t, const char *open, const char *close, bool batch) {
    char buf[160];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s", open);
    bool first = true;
    if (batch) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "None");
        first = false;
    }
    for (int i = 0; i < t->rank; i++) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%lld", first ? "" : ", ", (long long)t->dims[i]);
        first = false;
    }
    /* Keras writes a one-element tuple as (None,) */
    if (batch && t->rank == 0) n += (size_t)snprintf(buf + n, sizeof buf - n, ",");
    snprintf(buf + n, sizeof buf - n, "%s", close);
    return arena_strdup(a, buf);
}

char *type_str(Arena *a, const Type *t) {
    char *d = dims_str(a, t, "[", "]", false);
    return arena_printf(a, "%s%s", t->dtype == DT_F32 ? "f32" : "i32", d);
}

char *type_keras_str(Arena *a, const Type *t) { return dims_str(a, t, "(", ")", t->batched); }

static bool verify_one(const Graph *g, FILE *err) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->graph != g || n->id != i) {
            fprintf(err, "verify: node %d (%s) has a wrong id or graph\n", i, op_name(n->op));
            return false;
        }
        if (op_arity(n->op) >= 0 && n->nin != op_arity(n->op)) {
            fprintf(err, "verify: %s node %d has %d inputs, expected %d\n", op_name(n->op), i, n->nin,
                    op_arity(n->op));
            return false;
        }
        for (int k = 0; k < n->nin; k++) {
            const Node *x = n->in[k];
            if (!x || x->graph != g || x->id >= n->id) {
                fprintf(err, "verify: input %d of %s node %d is not an earlier node of its graph\n", k,
                        op_name(n->op), i);
                return false;
            }
        }
        if (n->type.rank < 0 || n->type.rank > SEQC_MAX_RANK) {
            fprintf(err, "verify: node %d has rank %d\n", i, n->type.rank);
            return false;
        }
        if (n->op == OP_SCAN && !verify_one(n->scan.body, err)) return false;
    }
    return true;
}

bool graph_verify(const Graph *g, FILE *err) { return verify_one(g, err); }

static void print_shape(FILE *out, const Graph *g, const Type *t);

static void print_payload(FILE *out, const Node *n) {
    switch (n->op) {
    case OP_CONST: fprintf(out, " %g", n->constant); break;
    case OP_DROPMASK: fprintf(out, " rate=%g", n->rate); break;
    case OP_STEP_IN: case OP_STATE_IN: case OP_CAPTURE: case OP_SCAN_OUT: case OP_PLACE_STEP:
        fprintf(out, " #%d", n->index);
        break;
    case OP_SCAN_STATE: fprintf(out, " #%d after %lld", n->scan_state.index, (long long)n->scan_state.after); break;
    case OP_SCAN:
        if (n->scan.reverse) fputs(" reverse", out);
        if (n->scan.walk_end > 0)
            fprintf(out, " steps [%lld, %lld)", (long long)n->scan.walk_begin, (long long)n->scan.walk_end);
        break;
    case OP_SLICE: case OP_SLICE_GRAD: case OP_TIME_SLICE: case OP_TIME_PAD:
        fprintf(out, " [%lld, %lld]", (long long)n->slice.start, (long long)n->slice.len);
        break;
    case OP_PARAM: fprintf(out, " %s%s", n->param.init.kind, n->param.trainable ? "" : " non-trainable"); break;
    case OP_ACT_GRAD: fprintf(out, " of %s", op_name(n->act)); break;
    case OP_EXTERN: fprintf(out, " %s", n->ext->name); break;
    case OP_LOSS_GRAD: case OP_BCE: case OP_SCE: case OP_CCE:
        if (n->op == OP_LOSS_GRAD) fprintf(out, " of %s", op_name(n->loss.loss));
        if (n->loss.from_logits) fputs(" from_logits", out);
        break;
    default: break;
    }
}

static void print_graph(const Graph *g, FILE *out, int depth) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        fprintf(out, "%*s%%%d = %s", depth * 4, "", i, op_name(n->op));
        print_payload(out, n);
        for (int k = 0; k < n->nin; k++) fprintf(out, "%s%%%d", k ? ", " : " ", n->in[k]->id);
        fputs(" : ", out);
        print_shape(out, g, &n->type);
        if (n->name) fprintf(out, "  # %s", n->name);
        fputc('\n', out);
        if (n->op == OP_SCAN) {
            fprintf(out, "%*s{ %s%s, %d sequences, %d states, %d captures, %d outputs%s\n", depth * 4 + 2, "",
                    n->scan.cell ? n->scan.cell : "scan", n->scan.reverse ? " reversed" : "", n->scan.nseq,
                    n->scan.nstate, n->scan.ncapture, n->scan.nout, n->scan.sequences ? ", every step" : "");
            print_graph(n->scan.body, out, depth + 1);
            fprintf(out, "%*s  outputs", depth * 4, "");
            for (int k = 0; k < n->scan.body->outputs.len; k++)
                fprintf(out, "%s%%%d", k ? ", " : " ", ((const Node *)n->scan.body->outputs.items[k])->id);
            fprintf(out, " }\n");
        }
    }
}

void graph_print(const Graph *g, FILE *out) {
    fprintf(out, "model %s, batch %lld\n", g->name ? g->name : "", (long long)g->batch);
    print_graph(g, out, 0);
    if (g->loss) fprintf(out, "loss %%%d\n", g->loss->id);
    for (int i = 0; i < g->grads.len; i++) {
        const Node *p = g->params.items[i], *d = g->grads.items[i];
        if (d) fprintf(out, "grad %s = %%%d\n", p->name, d->id);
    }
}

/* dot: one record per node, labelled with its name, op and full shape. */
static void dot_escape(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\' || *s == '{' || *s == '}' || *s == '<' || *s == '>' || *s == '|') fputc('\\', out);
        fputc(*s, out);
    }
}

static void dot_shape(FILE *out, const Graph *g, const Type *t);
static void print_shape(FILE *out, const Graph *g, const Type *t) { dot_shape(out, g, t); }

static void dot_shape(FILE *out, const Graph *g, const Type *t) {
    while (g->parent) g = g->parent; /* the batch size is the model's */
    fprintf(out, "%s[", t->dtype == DT_F32 ? "f32" : "i32");
    bool first = true;
    if (t->batched) {
        fprintf(out, "%lld", (long long)g->batch);
        first = false;
    }
    for (int i = 0; i < t->rank; i++) {
        fprintf(out, "%s%lld", first ? "" : ", ", (long long)t->dims[i]);
        first = false;
    }
    fputc(']', out);
}

static void dot_graph(const Graph *g, FILE *out, const char *prefix, int depth) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        fprintf(out, "%*s%s%d [label=\"", depth * 2, "", prefix, i);
        if (n->name) {
            dot_escape(out, n->name);
            fputs(" = ", out);
        }
        fputs(op_name(n->op), out);
        if (n->op == OP_SCAN && n->scan.cell) fprintf(out, " %s%s", n->scan.cell, n->scan.reverse ? " (reverse)" : "");
        if (n->op == OP_ACT_GRAD) fprintf(out, " of %s", op_name(n->act));
        if (n->op == OP_EXTERN) fprintf(out, " %s", n->ext->name);
        if (n->op == OP_LOSS_GRAD) fprintf(out, " of %s", op_name(n->loss.loss));
        if (n->op == OP_CONST) fprintf(out, " %g", n->constant);
        if (n->op == OP_PARAM && !n->param.trainable) fputs(" (non-trainable)", out);
        fputs("\\n", out);
        dot_shape(out, g, &n->type);
        fprintf(out, "\"%s];\n", n->op == OP_PARAM ? ", shape=box" : n->op == OP_INPUT ? ", shape=invhouse" : "");
        for (int k = 0; k < n->nin; k++)
            fprintf(out, "%*s%s%d -> %s%d;\n", depth * 2, "", prefix, n->in[k]->id, prefix, i);
        if (n->op == OP_SCAN) {
            char sub[64];
            snprintf(sub, sizeof sub, "%ss%d_", prefix, i);
            fprintf(out, "%*ssubgraph cluster_%s {\n%*slabel=\"step of %s%d (%s)\"; style=dashed;\n", depth * 2, "",
                    sub, depth * 2 + 2, "", prefix, i, n->scan.cell ? n->scan.cell : "scan");
            dot_graph(n->scan.body, out, sub, depth + 1);
            fprintf(out, "%*s}\n", depth * 2, "");
            const Node *step_out = n->scan.body->outputs.items[n->scan.nstate];
            fprintf(out, "%*s%s%d -> %s%d [style=dashed, label=\"output\"];\n", depth * 2, "", sub, step_out->id,
                    prefix, i);
        }
    }
}

void graph_dot(const Graph *g, FILE *out) {
    fprintf(out, "digraph \"");
    dot_escape(out, g->name ? g->name : "model");
    fprintf(out, "\" {\n  label=\"model %s (batch %lld)\";\n  node [fontname=\"monospace\"];\n",
            g->name ? g->name : "", (long long)g->batch);
    dot_graph(g, out, "n", 1);
    fputs("}\n", out);
}

bool graph_is_stateful(const Graph *g) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_SCAN && n->scan.stateful) return true;
    }
    return false;
}
