/* The manifest writer; runtime/model.c is its reader. */
#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* Prints a percent-encoded string field. */
static void str(FILE *f, const char *s) {
    char *e = rt_model_encode(s);
    fprintf(f, " %s", e ? e : "-");
    free(e);
}

static int64_t bytes_of(const Graph *g, const Node *n) {
    return 4 * type_elements(&n->type) * (n->type.batched ? g->batch : 1);
}

static void tensor(FILE *f, const char *kind, const Graph *g, const CgPlan *p, const Node *n, bool batched_field) {
    fputs(kind, f);
    str(f, n->name ? n->name : op_name(n->op));
    fprintf(f, " %s", n->type.dtype == DT_I32 ? "i32" : "f32");
    if (batched_field) fprintf(f, " %d", n->type.batched ? 1 : 0);
    fprintf(f, " %d", n->type.rank);
    for (int d = 0; d < SEQC_MAX_RANK; d++) fprintf(f, " %lld", (long long)(d < n->type.rank ? n->type.dims[d] : 0));
    fprintf(f, " %lld", (long long)cg_plan_offset(p, n));
    (void)g;
}

static void path(FILE *f, const char *source, const char *p);

static void variant(FILE *f, const char *source, const char *name, ManifestVariant v) {
    const Graph *g = v.g;
    const CgPlan *p = v.plan;
    int nodes = g->nodes.len, forward = g->nforward ? g->nforward : nodes;
    fprintf(f, "variant %s %lld %lld %d %d %lld\n", name, (long long)g->batch, (long long)p->slab_bytes, nodes, forward,
            (long long)(g->loss ? cg_plan_offset(p, g->loss) : -1));
    for (int i = 0; i < g->inputs.len; i++) {
        tensor(f, "input", g, p, g->inputs.items[i], true);
        fputc('\n', f);
    }
    for (int i = 0; i < g->targets.len; i++) {
        tensor(f, "target", g, p, g->targets.items[i], true);
        fputc('\n', f);
    }
    for (int i = 0; i < g->params.len; i++) {
        const Node *n = g->params.items[i];
        const Node *dp = i < g->grads.len ? g->grads.items[i] : NULL;
        tensor(f, "param", g, p, n, false);
        fprintf(f, " %lld", (long long)(dp ? cg_plan_offset(p, dp) : -1));
        for (int w = 0; w < CG_OPT_SLOTS; w++)
            fprintf(f, " %lld", (long long)(p->slot[w] && i < p->nparams ? p->slot[w][i] : -1));
        bool trainable = n->op == OP_PARAM && n->param.trainable;
        fprintf(f, " %d", trainable ? 1 : 0);
        const InitSpec *init = n->op == OP_PARAM ? &n->param.init : NULL;
        str(f, init && init->kind ? init->kind : "zeros");
        fprintf(f, " %.17g %.17g %lld", init ? init->args[0] : 0.0, init ? init->args[1] : 0.0,
                (long long)(init ? init->units : 0));
        path(f, source, init ? init->vectors : NULL);
        fputc('\n', f);
    }
    for (int i = 0; i < g->updates.len; i++) {
        const Update *u = g->updates.items[i];
        fprintf(f, "update %lld %lld %lld %d\n", (long long)cg_plan_offset(p, u->var),
                (long long)cg_plan_offset(p, u->value), (long long)bytes_of(g, u->var),
                u->value->op == OP_SCAN_STATE ? 1 : 0);
    }
    for (int i = 0; i < g->metrics.len; i++) {
        const Node *m = g->metrics.items[i];
        fputs("metric", f);
        str(f, op_name(m->op));
        fprintf(f, " %lld\n", (long long)cg_plan_offset(p, m));
    }
    const Node *out = g->output;
    tensor(f, "output", g, p, out, true);
    fputs("\nend\n", f);
}

/* Rows of the embedding table the first input indexes, 0 when it feeds none. */
static int64_t input_vocab(const Graph *g) {
    if (g->inputs.len == 0) return 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_EMBED && n->in[0] == g->inputs.items[0]) return n->in[1]->type.dims[0];
    }
    return 0;
}

/* A relative path in the train block means relative to the model's file. */
static void path(FILE *f, const char *source, const char *p) {
    if (!p || p[0] == '/' || !source || !strchr(source, '/')) {
        str(f, p);
        return;
    }
    size_t dir = (size_t)(strrchr(source, '/') - source);
    char *full = malloc(dir + strlen(p) + 2);
    if (!full) {
        str(f, p);
        return;
    }
    memcpy(full, source, dir);
    full[dir] = '/';
    strcpy(full + dir + 1, p);
    str(f, full);
    free(full);
}

char *manifest_write(const char *source, const TrainRecipe *r, ManifestVariant train, ManifestVariant infer) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (!f) return NULL;
    static const char *const opts[] = {"sgd", "rmsprop", "adam"};
    static const char *const kinds[] = {"none", "text", "tsv", "csv", "npy"};
    fprintf(f, "seqc-model %d\nmodel", RT_MODEL_VERSION);
    str(f, train.g->name);
    str(f, source);
    fprintf(f, " %d %lld\n", graph_is_stateful(train.g) ? 1 : 0, (long long)input_vocab(train.g));
    fprintf(f, "recipe %s %.17g %lld %lld %lld %lld %lld %.17g", opts[r->opt.kind], r->opt.lr, (long long)train.g->batch,
            (long long)r->epochs, (long long)r->seed, (long long)r->bptt_every, (long long)r->bptt_window,
            r->validate_split);
    path(f, source, r->validate_path);
    fprintf(f, " %d\n", r->shuffle ? 1 : 0);
    const DataSpec *d = &r->data;
    fprintf(f, "data %s", kinds[d->kind]);
    path(f, source, d->path);
    path(f, source, d->path2);
    fprintf(f, " %d %d %d %d %d %lld %d\n", d->word_level, d->lower, d->letters_only, d->pad_post, d->truncate_post,
            (long long)d->column, d->header);
    variant(f, source, "train", train);
    variant(f, source, "infer", infer);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
