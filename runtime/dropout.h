/* Dropout masks for compiled models. Generated code calls this function, the
 * reference interpreter draws the same numbers itself: both follow one rule,
 * so a dropout seed gives the same mask everywhere.
 *
 * The rule (compiler/interp.c, ev_dropmask): an RtRng seeded
 * (seed, stream) -- the stream of a DROPMASK node is 1000003 + its node id, so
 * it never meets a param's init stream -- draws one rt_rng_uniform per element
 * in row-major order; the element is kept, with value 1 / (1 - rate), when the
 * draw is >= rate (as TF's dropout decides), else it is 0. Training only: in
 * inference the caller writes ones and does not call this. */
#ifndef SEQC_RUNTIME_DROPOUT_H
#define SEQC_RUNTIME_DROPOUT_H

#include <stdint.h>

/* Dropout streams start here (the first DROPMASK stream is this + node id). */
#define RT_DROPOUT_STREAM_BASE 1000003u

/* dst [n] f32. rate in [0, 1); anything else writes ones (no dropout) rather
 * than dividing by zero: the compiler refuses such rates before this runs. */
void rt_dropout_mask_f32(float *dst, int64_t n, double rate, uint64_t seed, uint64_t stream);

/* Elements [from, to) of that mask, on the calling thread alone: element i
 * draws the words at positions 2i and 2i + 1 of its stream, whoever draws
 * it. rate in [0, 1). */
void rt_dropout_mask_range_f32(float *dst, int64_t from, int64_t to, double rate, uint64_t seed, uint64_t stream);

#endif
