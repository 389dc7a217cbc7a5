/* Truncated backpropagation through time, as the train recipe asks for it.
 *
 * Requires: an elaborated model graph and its recipe.
 * Guarantees: for a stateful model (a stream cut into windows) the graph reads
 * one window per batch; under TBPTT(k1, k2) with k1 < k2 the states carried to
 * the next window are those after k1 steps and the loss counts the last k1
 * steps only, so each step of the stream is trained once. For a model that is
 * not stateful, `bptt K` becomes the autodiff window: the backward pass runs
 * through the last K steps of each scan. */
#ifndef SEQC_SCHEDULE_H
#define SEQC_SCHEDULE_H

#include "autodiff.h"
#include "train.h"

bool schedule_tbptt(Graph *g, const TrainRecipe *r, GradOptions *out, Diags *d);

/* Truncated BPTT through whole sequences (`bptt K`, not stateful) keeps its
 * memory bounded by K, not by the sequence: a scan that leaves its last
 * output only, over more than K steps, becomes two. The first walks the steps
 * before the window (the first T - K it walks), keeps nothing and is not
 * differentiated: an embedding of a model input it reads is looked up step
 * by step inside it, and its input projection stays in the loop. The second
 * walks the window from the states the first leaves, reading the window's
 * steps of its sequences (an embedding of the window's ids only). The values
 * are those of the one scan, and so is the gradient: the window's, stopped at
 * the state entering it. Run between schedule_tbptt and ad_backward, with
 * the window schedule_tbptt returned; the graph is unchanged without one. */
bool schedule_windows(Graph *g, const GradOptions *o, Diags *d);

#endif
