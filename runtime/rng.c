#include "rng.h"

#include <math.h>

/* Round multipliers and key increments from the Random123 specification; the
 * increments are the golden ratio and sqrt(3) - 1 as 32-bit fractions. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define PHILOX_ROUNDS 10

static void philox_round(uint32_t ctr[4], const uint32_t key[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * ctr[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * ctr[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t c1 = ctr[1], c3 = ctr[3];
    ctr[0] = hi1 ^ c1 ^ key[0];
    ctr[1] = lo1;
    ctr[2] = hi0 ^ c3 ^ key[1];
    ctr[3] = lo0;
}

void rt_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t x[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        /* The key schedule advances between rounds, not before the first one. */
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(x, k);
    }
    for (int i = 0; i < 4; i++)
        out[i] = x[i];
}

/* rt_rng_uniform_bits' work, compiled below once per instruction set. */
static inline __attribute__((always_inline)) void uniform_bits(uint64_t seed, uint64_t stream, uint64_t first,
                                                                uint64_t bits[2 * RT_RNG_BATCH]) {
    /* One array per counter word, one lane per block: philox_round's steps
     * across the lanes become vector multiplies and xors. */
    uint32_t x0[RT_RNG_BATCH], x1[RT_RNG_BATCH], x2[RT_RNG_BATCH], x3[RT_RNG_BATCH];
    for (int j = 0; j < RT_RNG_BATCH; j++) {
        x0[j] = (uint32_t)(first + (uint64_t)j);
        x1[j] = (uint32_t)((first + (uint64_t)j) >> 32);
        x2[j] = (uint32_t)stream;
        x3[j] = (uint32_t)(stream >> 32);
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        for (int j = 0; j < RT_RNG_BATCH; j++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * x0[j];
            uint64_t p1 = (uint64_t)PHILOX_M1 * x2[j];
            x0[j] = (uint32_t)(p1 >> 32) ^ x1[j] ^ k0;
            x1[j] = (uint32_t)p1;
            x2[j] = (uint32_t)(p0 >> 32) ^ x3[j] ^ k1;
            x3[j] = (uint32_t)p0;
        }
    }
    for (int j = 0; j < RT_RNG_BATCH; j++) {
        bits[2 * j] = (uint64_t)x0[j] << 32 | x1[j];
        bits[2 * j + 1] = (uint64_t)x2[j] << 32 | x3[j];
    }
}

/* Built without -march, x86-64 code has SSE2 only, whose vectors spend much
 * of a round shuffling 32-bit halves apart and together; with AVX-512's
 * permutes a batch takes about half the time. 256-bit vectors suffice and
 * spare some Xeons the clock drop that 512-bit ones cost. (clang has no
 * prefer-vector-width attribute, so it keeps to SSE2.) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_AVX512_BITS 1
__attribute__((target("avx512f,avx512vl,prefer-vector-width=256"))) static void uniform_bits_avx512(
    uint64_t seed, uint64_t stream, uint64_t first, uint64_t bits[2 * RT_RNG_BATCH]) {
    uniform_bits(seed, stream, first, bits);
}
#endif

void rt_rng_uniform_bits(uint64_t seed, uint64_t stream, uint64_t first, uint64_t bits[2 * RT_RNG_BATCH]) {
#ifdef HAVE_AVX512_BITS
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
        uniform_bits_avx512(seed, stream, first, bits);
        return;
    }
#endif
    uniform_bits(seed, stream, first, bits);
}

void rt_rng_seed(RtRng *rng, uint64_t seed, uint64_t stream) {
    rng->seed = seed;
    rng->stream = stream;
    rng->position = 0;
    rng->cached_block = RT_RNG_NO_BLOCK;
}

static void rng_fill_block(RtRng *rng, uint64_t block) {
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)rng->stream,
                       (uint32_t)(rng->stream >> 32)};
    uint32_t key[2] = {(uint32_t)rng->seed, (uint32_t)(rng->seed >> 32)};
    rt_rng_philox4x32_10(ctr, key, rng->block);
    rng->cached_block = block;
}

uint32_t rt_rng_next_u32(RtRng *rng) {
    uint64_t block = rng->position / 4;
    if (rng->cached_block != block)
        rng_fill_block(rng, block);
    uint32_t word = rng->block[rng->position % 4];
    rng->position++;
    return word;
}

double rt_rng_uniform(RtRng *rng) {
    uint64_t a = rt_rng_next_u32(rng);
    uint64_t b = rt_rng_next_u32(rng);
    /* 53 bits fill a double's mantissa exactly, so every value is k * 2^-53. */
    return (double)(((a << 32) | b) >> 11) * 0x1.0p-53;
}

float rt_rng_uniform_f32(RtRng *rng) {
    return (float)(rt_rng_next_u32(rng) >> 8) * 0x1.0p-24f;
}

double rt_rng_normal(RtRng *rng) {
    /* 1 - u lies in (0, 1], which keeps log() finite. */
    double u1 = 1.0 - rt_rng_uniform(rng);
    double u2 = rt_rng_uniform(rng);
    const double two_pi = 6.283185307179586476925286766559;
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

double rt_rng_truncated_normal(RtRng *rng) {
    /* About 95.4% of draws are accepted, so the loop ends after ~1.05 tries. */
    for (;;) {
        double z = rt_rng_normal(rng);
        if (fabs(z) <= 2.0)
            return z;
    }
}

RtRngState rt_rng_get_state(const RtRng *rng) {
    RtRngState state = {rng->seed, rng->stream, rng->position};
    return state;
}

void rt_rng_set_state(RtRng *rng, RtRngState state) {
    rng->seed = state.seed;
    rng->stream = state.stream;
    rng->position = state.position;
    /* The cached block belonged to the old key and counter. */
    rng->cached_block = RT_RNG_NO_BLOCK;
}
