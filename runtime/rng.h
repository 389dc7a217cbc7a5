/* Seeded random numbers for weight initialization, dropout and sampling.
 *
 * Why counter-based: the generator is Philox4x32-10 (Salmon et al., "Parallel
 * random numbers: as easy as 1, 2, 3", SC 2011). Each block of four 32-bit
 * words is a pure function of (key, counter), so the word at position p of
 * (seed, stream) is the same on every machine, in every thread order, and after
 * any checkpoint restore. Threads take distinct streams instead of sharing
 * state, and the whole state is three integers.
 *
 * Layout: key = {seed low 32 bits, seed high 32 bits};
 *         counter = {block low, block high, stream low, stream high},
 *         where block = position / 4 and the word returned is block[position % 4].
 *
 * Derived draws (fixed word counts, so positions stay predictable):
 *   uniform     2 words: ((a << 32 | b) >> 11) * 2^-53, in [0, 1).
 *   uniform_f32 1 word:  (a >> 8) * 2^-24, in [0, 1).
 *   normal      4 words: Box-Muller, sqrt(-2 ln(1 - u1)) * cos(2 pi u2) with
 *               u1, u2 from uniform(); the sine partner is discarded so that no
 *               spare value has to live in the state.
 *   truncated_normal: normal() redrawn until |z| <= 2 (Keras TruncatedNormal).
 * The 32-bit words are bit-exact everywhere; normal draws additionally depend
 * on the C library's log/cos/sqrt. */
#ifndef SEQC_RUNTIME_RNG_H
#define SEQC_RUNTIME_RNG_H

#include <stdint.h>

typedef struct RtRng {
    uint64_t seed;
    uint64_t stream;
    uint64_t position;     /* number of 32-bit words drawn so far */
    uint64_t cached_block; /* block index held in `block`, or RT_RNG_NO_BLOCK */
    uint32_t block[4];
} RtRng;

/* Everything a checkpoint needs to resume the exact sequence. */
typedef struct RtRngState {
    uint64_t seed;
    uint64_t stream;
    uint64_t position;
} RtRngState;

/* A 64-bit position reaches blocks below 2^62 only, so this never names a real block. */
#define RT_RNG_NO_BLOCK UINT64_MAX

/* One Philox4x32-10 block; exposed so tests can check the published vectors. */
void rt_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Blocks per rt_rng_uniform_bits call: enough lanes to keep 256-bit vectors
 * busy while the multiplies of a round are in flight. */
#define RT_RNG_BATCH 32

/* Bulk rt_rng_uniform draws (dropout masks): bits[p] = a << 32 | b for the
 * words a, b at positions 4 * first + 2p and 4 * first + 2p + 1 of
 * (seed, stream), i.e. from blocks first .. first + RT_RNG_BATCH - 1, so the
 * rt_rng_uniform drawn there is (bits[p] >> 11) * 2^-53. The blocks are
 * computed side by side, which vectorizes. */
void rt_rng_uniform_bits(uint64_t seed, uint64_t stream, uint64_t first, uint64_t bits[2 * RT_RNG_BATCH]);

void rt_rng_seed(RtRng *rng, uint64_t seed, uint64_t stream);
uint32_t rt_rng_next_u32(RtRng *rng);
double rt_rng_uniform(RtRng *rng);
float rt_rng_uniform_f32(RtRng *rng);
double rt_rng_normal(RtRng *rng);
double rt_rng_truncated_normal(RtRng *rng);

RtRngState rt_rng_get_state(const RtRng *rng);
void rt_rng_set_state(RtRng *rng, RtRngState state);

#endif
