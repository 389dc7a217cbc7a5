/* The model descriptor's text (runtime/model.h has its grammar): what the
 * runtime needs to know of a compiled model, written from the graphs and
 * memory plans of its two variants.
 *
 * Requires: `train`, the model graph after schedule and autodiff with its
 * plan (cg_add_update done when it has a loss), and `infer`, the same model
 * elaborated for batch 1 (and one step, when stateful), forward only.
 * Guarantees: a manifest rt_model_parse reads back; relative data paths in
 * the recipe are resolved against the directory of `source`. */
#ifndef SEQC_MANIFEST_H
#define SEQC_MANIFEST_H

#include "codegen.h"
#include "graph.h"
#include "train.h"

typedef struct ManifestVariant {
    const Graph *g;
    const CgPlan *plan;
} ManifestVariant;

/* malloc'd, or NULL when out of memory. */
char *manifest_write(const char *source, const TrainRecipe *r, ManifestVariant train, ManifestVariant infer);

#endif
