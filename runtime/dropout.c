#include "dropout.h"

#include <math.h>

#include "pool.h"
#include "rng.h"

void rt_dropout_mask_range_f32(float *dst, int64_t from, int64_t to, double rate, uint64_t seed, uint64_t stream) {
    /* The interpreter keeps 1 / (1 - rate) in double and rounds it to float.
     * Indexed, not branched on: a branch on random draws mispredicts. */
    const float value[2] = {0.0f, (float)(1.0 / (1.0 - rate))};
    /* The draw is u = k * 2^-53 with the integer k = bits >> 11 < 2^53, and
     * rate * 2^53 is exact too (a power-of-two scaling, below 2^53), so
     * u >= rate exactly when k >= rate * 2^53, that is k >= its ceiling. */
    uint64_t least_kept = (uint64_t)ceil(rate * 0x1.0p53);
    uint64_t bits[2 * RT_RNG_BATCH];
    /* Batches start at the block of element `from`, mid-block when `from` is
     * odd; draws before `from` or from `to` on are dropped. */
    for (int64_t start = from / 2 * 2; start < to; start += 2 * RT_RNG_BATCH) {
        rt_rng_uniform_bits(seed, stream, (uint64_t)start / 2, bits);
        int64_t end = start + 2 * RT_RNG_BATCH < to ? start + 2 * RT_RNG_BATCH : to;
        for (int64_t i = start > from ? start : from; i < end; i++)
            dst[i] = value[bits[i - start] >> 11 >= least_kept];
    }
}

typedef struct MaskTask {
    float *dst;
    int64_t n;
    double rate;
    uint64_t seed, stream;
} MaskTask;

static void mask_part(void *ctx, int64_t part, int64_t nparts, void *scratch) {
    (void)scratch;
    const MaskTask *t = ctx;
    rt_dropout_mask_range_f32(t->dst, t->n * part / nparts, t->n * (part + 1) / nparts, t->rate, t->seed,
                              t->stream);
}

/* Masks this large are drawn on the pool's threads (the generated code
 * calls this from a node's own function, never from a kernel's part). */
enum { MASK_PART = 1 << 15 };

void rt_dropout_mask_f32(float *dst, int64_t n, double rate, uint64_t seed, uint64_t stream) {
    if (!(rate >= 0 && rate < 1)) {
        for (int64_t i = 0; i < n; i++) dst[i] = 1.0f;
        return;
    }
    if (n < 2 * MASK_PART) {
        rt_dropout_mask_range_f32(dst, 0, n, rate, seed, stream);
        return;
    }
    MaskTask t = {dst, n, rate, seed, stream};
    rt_parallel(mask_part, &t, n / MASK_PART, 0);
}
