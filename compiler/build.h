/* The whole pipeline for one model, as `seqc run` and `seqc compile` need
 * it: elaborate the training variant (the recipe's batch, or the command
 * line's) and the batch-1 inference variant, schedule truncated
 * backpropagation, differentiate, lower both through LLVM, and write the
 * manifest that tells the runtime where everything lives.
 *
 * Ownership: everything hangs off the Build; build_free releases it. */
#ifndef SEQC_BUILD_H
#define SEQC_BUILD_H

#include "codegen.h"
#include "elab.h"

typedef struct BuildOptions {
    const char *path;       /* the .seq file */
    const char *model;      /* --model, or NULL */
    int64_t batch;          /* 0: the recipe's */
    int64_t bptt;           /* 0: the recipe's */
    bool jit;               /* for cg_jit, which runs the passes: leave the modules unoptimized */
    /* With jit: plan the inference module but leave its IR to
     * cg_lower_module, which `seqc run` calls on the tiers' thread, off the
     * first training step's path. The manifest and the symbols need only
     * the plan. */
    bool infer_later;
} BuildOptions;

typedef struct Build {
    Program *program;
    Arena arena;
    Model train, infer;
    CgModule *train_code, *infer_code;
    char *manifest;
    char *train_step, *train_update, *infer_step;  /* symbols */
    double elab_ms, autodiff_ms;
} Build;

/* Returns false with the problem in d (the user's) or *error (malloc'd). The
 * modules are lowered and optimized, not yet compiled to machine code (the
 * inference module only planned, with infer_later). */
bool build_model(const BuildOptions *o, Build *b, Diags *d, char **error);
void build_free(Build *b);

#endif
