/* Elaboration: a parsed program becomes a graph. Names are resolved, cells
 * from lib/std.seq and the user's files are instantiated at every layer call
 * that uses them (their params created, their step a scan body), and every
 * value's shape and dtype is inferred and checked. */
#ifndef SEQC_ELAB_H
#define SEQC_ELAB_H

#include "graph.h"
#include "program.h"
#include "train.h"

typedef struct ElabOptions {
    int64_t batch;          /* 0: the train block's, else Keras' default 32 */
    /* 0: as declared. Else the length of the time axis: every input and
     * target whose first axis has the first sequence input's declared length
     * gets `steps` instead. A stateful model reads its stream this many steps
     * at a time (bptt from the command line; 1 to generate token by token). */
    int64_t steps;
} ElabOptions;

typedef struct Model {
    Graph *graph;
    TrainRecipe recipe;
    const Decl *decl;
} Model;

/* Elaborates the model called `name` (NULL: the root file's only model).
 * Graph nodes go to `arena`. Returns false with diagnostics in d. */
bool elab_model(Program *p, const char *name, const ElabOptions *o, Arena *arena, Model *out, Diags *d);

/* `seqc check`: every model, cell and train block of the root file. */
bool elab_check(Program *p, const ElabOptions *o, Diags *d);

/* The names of the root file's models, in order (for --model and messages). */
int elab_model_names(const Program *p, const char **names, int max);

#endif
