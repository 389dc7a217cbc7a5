/* The reference interpreter: evaluates a model graph (forward and gradient
 * nodes alike) with plain loops over doubles. It is the oracle every other back
 * end is tested against, so it stays slow and obvious: one function per op, in
 * the order of ops.def, and no shortcuts borrowed from the fast paths.
 *
 * Values: every node of the model graph (and of each scan body) owns a buffer
 * of doubles, row-major, the batch axis first when the node is batched
 * (graph->batch examples), else just the per-example elements. i32 values are
 * doubles holding integers. In PREC_F32 the result of every op is rounded to
 * the nearest float (reductions accumulate in double, then round, except the
 * matrix products: a float per output takes each term with a fused
 * multiply-add, in order, as the generated kernels do); the values
 * the caller writes (inputs, params, state variables) are used as written.
 *
 * Errors in the data (an id outside the vocabulary) and malformed graphs are
 * not recoverable here: they print a message naming the node and abort. */
#ifndef SEQC_INTERP_H
#define SEQC_INTERP_H

#include <stdbool.h>
#include <stdint.h>

#include "graph.h"
#include "train.h"

typedef enum { PREC_F64, PREC_F32 } Precision;

typedef struct Interp Interp;

/* Allocates storage for every node of `model` (nodes appended to it later are
 * not seen). The graph must outlive the interpreter. */
Interp *interp_new(const Graph *model, Precision prec);
void interp_free(Interp *it);

/* A node of the model graph: its values, interp_size(model, n) doubles. */
double *interp_data(Interp *it, const Node *n);
/* Doubles a node's value takes: batch * elements if batched, else elements. */
int64_t interp_size(const Graph *g, const Node *n);
Precision interp_precision(const Interp *it);

/* Each PARAM from its InitSpec through rt_init_fill, drawing from an RtRng
 * seeded (seed, stream = the param's index in model->params); rounded to float
 * in PREC_F32. */
void interp_init_params(Interp *it, uint64_t seed);
/* Every STATEVAR to zero (the start of a stateful layer's first sequence). */
void interp_zero_state(Interp *it);

/* Evaluates every node of the model graph in order. Training draws dropout
 * masks (the same dropout_seed gives the same masks) and normalizes batchnorm
 * with the batch's statistics. Inputs, targets, params and state variables are
 * whatever the caller wrote through interp_data. */
void interp_run(Interp *it, bool training, uint64_t dropout_seed);
/* Evaluates the first n nodes only: after autodiff, the forward pass alone is
 * the prefix graph->nforward. */
void interp_run_prefix(Interp *it, int n, bool training, uint64_t dropout_seed);
/* After a training run: each Update's value is copied into its var. */
void interp_apply_updates(Interp *it);

/* optim_ref.c: one step of Keras' update rule (TF2 tf.keras: SGD, RMSprop,
 * Adam) for each trainable params[i] from the values of grads[i] (NULL: no
 * gradient, left alone; the gradient values themselves are not modified).
 * Clipping as Keras: clipvalue per element, then clipnorm per tensor, then
 * global_clipnorm over all of them. `step` counts from 1 (Adam's bias
 * correction). In PREC_F32 the new weights and slots are rounded to float. */
void interp_optimizer_step(Interp *it, const Optimizer *opt, const Node *const *params, const Node *const *grads,
                           int n, int64_t step);
/* An optimizer's state `which` (0: SGD/RMSprop momentum or Adam m; 1: RMSprop
 * mean square or Adam v) for a param, zeros on first use. */
double *interp_slot(Interp *it, const Node *param, int which);

#endif
