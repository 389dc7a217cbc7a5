/* Fusion: graph-to-graph rewrites that take work out of the time loop, and
 * softmax with cross-entropy as one op. Nothing here knows a cell by name: a
 * cell written in the language gets the same treatment as lib/std.seq's.
 *
 * fuse_softmax_ce
 * Requires: a model graph after elaboration (and schedule_tbptt, if it ran),
 * before autodiff.
 * Guarantees: every sparse or categorical cross-entropy of softmax(z) that is
 * not from_logits reads z with from_logits instead: a log-sum-exp forward and
 * softmax(z) - target backward, with no softmax gradient in between. The
 * softmax stays where anything else reads it (a metric, the model's output).
 * Keras does the same (a softmax activation caches its logits for the loss);
 * the two forms differ only where Keras' clipping of probabilities to
 * [1e-7, 1 - 1e-7] would bite, and there the fused one is the exact one.
 * Likewise a binary cross-entropy of sigmoid(z) reads z from logits
 * (relu(z) - z y + log1p(exp(-|z|)), gradient sigmoid(z) - y), as Keras'
 * binary_crossentropy does when its input is a sigmoid's output.
 *
 * fuse_graph
 * Requires: a model graph after schedule_tbptt and ad_backward (a forward
 * graph without autodiff works too), before interp_new or cg_lower.
 * Guarantees: every node the graph had keeps its value (the loss, metrics,
 * gradients), up to the order in which sums add their terms; in each scan:
 *  - hoisting: a value of the body that depends only on its step inputs and
 *    captures, through elementwise ops, slices and matmuls, and holds a
 *    matmul (x_t @ W + b, in forward scans and in the forward step a backward
 *    scan recomputes), is computed for every step at once before the loop and
 *    enters the body as a new step input; one that depends on captures alone
 *    enters as a new capture;
 *  - weight sums: a carried state that is a running sum (a backward scan's
 *    gradient of a captured param), whose terms are matmul_w(a_t, b_t) (and,
 *    with bias_sums, sum_to(x_t)) or linear maps of them, becomes one
 *    matmul_w (sum_to) over all steps after the loop, added to the state's
 *    initial value; the scan emits the b_t (and the a_t not already available
 *    outside) as per-step outputs; a state left with no term inside is dropped;
 *  - products of outputs: a per-step output that is a product of a value
 *    the loop can emit with a captured matrix (dx_t = dz_t W^T) is one
 *    product over all steps after the loop;
 *  - transposed captures: a product in the loop that reads a captured
 *    matrix transposed (matmul_t, dy @ W^T) reads W^T, transposed once
 *    before the loop, as a plain matmul (the same terms in the same order);
 *  - concatenation: a sum of slice_grads of a value's parts that cover its
 *    last axis once (the gradient of sliced gates) becomes a concat of the
 *    parts' gradients (equal but for the sign of a zero);
 *  - bodies hold only the nodes their outputs need.
 * Node ids of the model graph change (the order is topological again), but
 * dropout masks keep theirs: their random streams are keyed by them. On
 * failure (an internal inconsistency) returns false with *error malloc'd; the
 * graph is then unusable. */
#ifndef SEQC_FUSE_H
#define SEQC_FUSE_H

#include <stdbool.h>

#include "graph.h"

/* What the rewrites did, for tests and reports. */
typedef struct FuseStats {
    int hoisted_steps;      /* body values made new step inputs */
    int hoisted_captures;   /* body values made new captures */
    int moved_sums;         /* running-sum terms moved after the loop */
    int dropped_states;     /* running sums left with nothing inside */
    int softmax_ce;         /* losses fused with their softmax */
    int concats;            /* sums of slice gradients made concatenations */
    int transposed;         /* products in a loop that read a transposed capture, made plain */
    int moved_products;     /* per-step outputs made one product after the loop */
    int merged_embed_grads; /* sums of two embedding gradients of one table made one scatter */
} FuseStats;

typedef struct FuseOptions {
    bool no_hoist;          /* leave time-invariant work inside the scans */
    bool no_sums;           /* leave running sums inside the backward scans */
    bool no_concat;         /* leave sums of slice gradients as they are */
    bool no_transpose;      /* leave products with transposed captures in the loops */
    bool no_products;       /* leave per-step products that are outputs in the loops */
    /* Move sum_to terms (bias gradients) too. Off by default: their running
     * sum is a vector, cheap to carry, while the code generator's sum_to over
     * a whole [B, T, N] sequence reads it with a stride of N and was measured
     * slower than the per-step sums (charlm at batch 1024). */
    bool bias_sums;
    FuseStats *stats;       /* added to, when not NULL */
} FuseOptions;

/* o may be NULL: every rewrite. */
bool fuse_graph(Graph *g, const FuseOptions *o, char **error);

/* Returns the number of losses fused. */
int fuse_softmax_ce(Graph *g);

#endif
