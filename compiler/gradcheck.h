/* `seqc gradcheck`: the reverse-mode gradient of every param against central
 * finite differences, both computed by the reference interpreter in f64 on a
 * small random batch. Dropout masks are drawn from the same seed in every run,
 * so they are held fixed; batchnorm runs in training mode. */
#ifndef SEQC_GRADCHECK_H
#define SEQC_GRADCHECK_H

#include <stdio.h>

#include "graph.h"

struct Interp;

typedef struct GradcheckOptions {
    uint64_t seed;          /* params, data and dropout masks */
    int64_t full_below;     /* tensors with at most this many entries are checked entry by entry */
    int64_t samples;        /* entries checked in a larger tensor, chosen by the seed */
    double threshold;       /* the largest relative error allowed */
    /* Called after the random data is written, to replace some of it (tests
     * use it for edge cases such as fully masked sequences). */
    void (*adjust)(struct Interp *it, const Graph *g, void *ctx);
    void *ctx;
    /* Take the reverse-mode gradient from the generated code (f32, through
     * the LLVM JIT) instead of the interpreter; the finite differences stay
     * the interpreter's in f64. Its arithmetic is f32, so the default
     * threshold is GRADCHECK_GENERATED_THRESHOLD. */
    bool generated;
} GradcheckOptions;

/* f32 gradients against f64 finite differences: a gradient summed in f32
 * over hundreds of steps from terms much larger than itself (imdb_lstm_small's
 * recurrent bias: 400 steps, error 1.2e-4 of the entry) keeps about three
 * digits. A wrong rule misses by far more. */
#define GRADCHECK_GENERATED_THRESHOLD 1e-3

typedef struct GradcheckRow {
    const Node *param;
    int64_t checked, kinks;     /* kinks: entries near a relu/max kink, checked with a tiny step */
    double max_abs, max_rel;
} GradcheckRow;

typedef struct GradcheckReport {
    GradcheckRow *rows;     /* one per trainable param with a gradient */
    int nrows;
    double loss, worst_rel;
    bool ok;
    char *error;            /* malloc'd: the generated code could not be built (ok is false) */
} GradcheckReport;

void gradcheck_defaults(GradcheckOptions *o);

/* Random values that make sense for input (or target) x, by what reads it:
 * token ids below the embedding's vocabulary (some padding zeros when
 * masked), class ids below the class count, 0/1 targets for binary
 * cross-entropy, one-hot rows for categorical, else uniform in [-1, 1).
 * The check's own data; the differential tests use it too. */
struct RtRng;
void gradcheck_fill_input(struct Interp *it, const Graph *g, const Node *x, struct RtRng *rng);

/* The interpreter's values of node n into a compiled model's slab, at
 * offset[n->id] (codegen.h's plan), as f32 or int32; and of every node a
 * caller writes (inputs, targets, params, state variables), so that the
 * generated code starts where the interpreter does. */
void gradcheck_write_node(struct Interp *it, const Graph *g, const Node *n, const int64_t *offset, uint8_t *slab);
void gradcheck_write_slab(struct Interp *it, const Graph *g, const int64_t *offset, uint8_t *slab);

/* `g` has been through autodiff; `nforward` is its node count before that
 * (the forward pass alone, for the finite-difference runs). Rows are
 * allocated in g's arena. */
void gradcheck_run(Graph *g, int nforward, const GradcheckOptions *o, GradcheckReport *r);
void gradcheck_print(const Graph *g, const GradcheckOptions *o, const GradcheckReport *r, FILE *out);

#endif
