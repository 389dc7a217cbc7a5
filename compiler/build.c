/* The pipeline from a .seq file to two optimized modules and a manifest. */
#include "build.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuse.h"
#include "manifest.h"
#include "schedule.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static char *symbol(const char *name, const char *suffix) {
    char *s = malloc(strlen(name) + strlen(suffix) + 1);
    if (s) strcat(strcpy(s, name), suffix);
    return s;
}

/* The recipe with the command line's window: for a stream the input's length
 * changes with it; for whole sequences it is the backward window. */
static void apply_bptt(TrainRecipe *r, int64_t bptt) {
    if (!bptt) return;
    if (r->bptt_every == 0 || r->bptt_every == r->bptt_window || r->bptt_every > bptt) r->bptt_every = bptt;
    r->bptt_window = bptt;
}

bool build_model(const BuildOptions *o, Build *b, Diags *d, char **error) {
    memset(b, 0, sizeof *b);
    *error = NULL;
    arena_init(&b->arena);
    double t0 = now_ms();
    b->program = program_load(o->path, d);
    if (!b->program || d->errors) return false;
    ElabOptions eo = {.batch = o->batch};
    if (!elab_model(b->program, o->model, &eo, &b->arena, &b->train, d)) return false;
    bool stateful = graph_is_stateful(b->train.graph);
    if (o->bptt && stateful) {
        /* A stream's window is the input's length: elaborate again for it. */
        eo.steps = o->bptt;
        if (!elab_model(b->program, o->model, &eo, &b->arena, &b->train, d)) return false;
    }
    apply_bptt(&b->train.recipe, o->bptt);
    /* Inference: one example; a stateful model one step at a time. */
    ElabOptions io = {.batch = 1, .steps = stateful ? 1 : 0};
    if (!elab_model(b->program, o->model, &io, &b->arena, &b->infer, d)) return false;
    double t1 = now_ms();
    Graph *g = b->train.graph;
    GradOptions go;
    fuse_softmax_ce(g);
    fuse_softmax_ce(b->infer.graph);
    if (g->loss && (!schedule_tbptt(g, &b->train.recipe, &go, d) || !schedule_windows(g, &go, d) ||
                    !ad_backward(g, &go, d)))
        return false;
    if (!fuse_graph(g, NULL, error) || !fuse_graph(b->infer.graph, NULL, error)) return false;
    double t2 = now_ms();
    b->elab_ms = t1 - t0;
    b->autodiff_ms = t2 - t1;
    const char *name = g->name;
    char *infer_name = symbol(name, "_infer");
    if (!infer_name) {
        *error = strdup("seqc: out of memory");
        return false;
    }
    b->train_code = cg_lower(g, name, error);
    b->infer_code = b->train_code ? cg_plan_module(b->infer.graph, infer_name, error) : NULL;
    free(infer_name);
    if (!b->infer_code || (!(o->jit && o->infer_later) && !cg_lower_module(b->infer_code, error))) return false;
    if (g->loss && !cg_add_update(b->train_code, &b->train.recipe.opt, error)) return false;
    /* The JIT optimizes (or finds the machine code in its cache) itself. */
    if (!o->jit && (!cg_optimize(b->train_code, error) || !cg_optimize(b->infer_code, error))) return false;
    /* The symbols as the code generator spelled them (a name may need mangling). */
    const CgSignature *us = cg_update_signature(b->train_code);
    b->train_step = strdup(cg_signature(b->train_code)->name);
    b->infer_step = strdup(cg_signature(b->infer_code)->name);
    b->train_update = us ? strdup(us->name) : NULL;
    ManifestVariant tv = {g, cg_plan(b->train_code)}, iv = {b->infer.graph, cg_plan(b->infer_code)};
    b->manifest = manifest_write(o->path, &b->train.recipe, tv, iv);
    if (!b->manifest || !b->train_step || !b->infer_step || (us && !b->train_update)) {
        *error = strdup("seqc: out of memory");
        return false;
    }
    return true;
}

void build_free(Build *b) {
    if (b->train_code) cg_free(b->train_code);
    if (b->infer_code) cg_free(b->infer_code);
    free(b->manifest);
    free(b->train_step);
    free(b->train_update);
    free(b->infer_step);
    arena_free(&b->arena);
    if (b->program) program_free(b->program);
    memset(b, 0, sizeof *b);
}
