/* `seqc run`'s code in two tiers (CgTier): the command starts on code that
 * is quick to compile and moves to the optimized code as a thread finishes
 * it, between two calls. Both tiers compute the same bits, so where the
 * switch falls changes no result. */
#ifndef SEQC_TIERS_H
#define SEQC_TIERS_H

#include "codegen.h"
#include "model.h"

typedef struct TierTimes {
    double train_ready_ms;      /* from tiers_start: the first training step could run (0: it never could) */
    double train_optimized_ms;  /* ... and the optimized one (0: it never was) */
    bool train_from_cache;      /* the first training step was the optimized one, from the object cache */
    bool quick_unused;          /* it waited for the optimized one (tiers_quick_pays) */
} TierTimes;

/* Whether a step of step_flops (graph_matmul_flops) at the quick tier, its
 * code compiled in quick_ms, would end before the optimized code is ready. */
bool tiers_quick_pays(double step_flops, double quick_ms);

/* Makes the training step's code: the optimized tier from the object cache,
 * else the quick tier, compiled now. Then starts a thread that makes the rest
 * (the inference step's code, lowering its module first when it is only
 * planned, cg_plan_module; the optimized tiers; new optimized code goes
 * to the cache) and fills *code's entry points with functions that call the
 * best tier ready; a step's first call waits for its first tier. A training
 * step of many flops (graph_matmul_flops) waits for the optimized code when
 * the quick one would take longer. When the inference step cannot be made,
 * the next call of any step prints why and exits(1). One session at a time.
 * On failure returns false with *error malloc'd. */
bool tiers_start(CgModule *train, CgModule *infer, double step_flops, RtModelCode *code, char **error);

/* Waits for the thread and frees the code (the entry points must not be
 * called after). Returns false, having said why, when code the run needed
 * could not be compiled; an optimized tier that could not be is reported
 * too, the run having gone on with the quick one. */
bool tiers_finish(TierTimes *times);

#endif
