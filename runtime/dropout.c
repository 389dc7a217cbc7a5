#include "dropout.h"

#include "pool.h"
#include "rng.h"

/* Elements [from, to) of the mask: element i draws the two words at
 * position 2i of its stream (rt_rng_uniform's), whichever thread draws it. */
static void mask_range(float *dst, int64_t from, int64_t to, double rate, uint64_t seed, uint64_t stream) {
    RtRng rng;
    rt_rng_seed(&rng, seed, stream);
    rt_rng_set_state(&rng, (RtRngState){.seed = seed, .stream = stream, .position = 2 * (uint64_t)from});
    /* The interpreter keeps 1 / (1 - rate) in double and rounds it to float. */
    float kept = (float)(1.0 / (1.0 - rate));
    for (int64_t i = from; i < to; i++) dst[i] = rt_rng_uniform(&rng) >= rate ? kept : 0.0f;
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
    mask_range(t->dst, t->n * part / nparts, t->n * (part + 1) / nparts, t->rate, t->seed, t->stream);
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
        mask_range(dst, 0, n, rate, seed, stream);
        return;
    }
    MaskTask t = {dst, n, rate, seed, stream};
    rt_parallel(mask_part, &t, n / MASK_PART, 0);
}
