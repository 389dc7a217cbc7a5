/* Check suites for the runtime library: the Philox generator, the Keras
 * initializers built on it and the slab they fill. Statistical tolerances are several standard errors
 * wide, and every test uses a fixed seed, so results never flake. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dropout.h"
#include "init.h"
#include "model.h"
#include "pool.h"
#include "rng.h"

/* ---- Philox and the generator ---- */

static void check_philox(const uint32_t ctr[4], const uint32_t key[2], const uint32_t want[4]) {
    uint32_t got[4];
    rt_rng_philox4x32_10(ctr, key, got);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(got[i] == want[i], "word %d: got 0x%08x, want 0x%08x", i, got[i], want[i]);
}

/* Known-answer vectors published with Random123 (kat_vectors). */
START_TEST(test_philox_kat_zeros) {
    uint32_t ctr[4] = {0, 0, 0, 0}, key[2] = {0, 0};
    uint32_t want[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    check_philox(ctr, key, want);
}
END_TEST

START_TEST(test_philox_kat_ones) {
    uint32_t ctr[4] = {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
    uint32_t key[2] = {0xffffffff, 0xffffffff};
    uint32_t want[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
    check_philox(ctr, key, want);
}
END_TEST

START_TEST(test_philox_kat_pi) {
    uint32_t ctr[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344};
    uint32_t key[2] = {0xa4093822, 0x299f31d0};
    uint32_t want[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    check_philox(ctr, key, want);
}
END_TEST

/* The documented layout: word p is block[p % 4] of counter {p/4, stream}, key seed. */
START_TEST(test_rng_counter_layout) {
    uint64_t seed = 0x0123456789abcdefULL, stream = 0xfedcba9876543210ULL;
    RtRng rng;
    rt_rng_seed(&rng, seed, stream);
    uint32_t key[2] = {0x89abcdef, 0x01234567};
    for (uint32_t block = 0; block < 3; block++) {
        uint32_t ctr[4] = {block, 0, 0x76543210, 0xfedcba98}, want[4];
        rt_rng_philox4x32_10(ctr, key, want);
        for (int i = 0; i < 4; i++)
            ck_assert_uint_eq(rt_rng_next_u32(&rng), want[i]);
    }
}
END_TEST

START_TEST(test_rng_reproducible) {
    RtRng a, b;
    rt_rng_seed(&a, 42, 7);
    rt_rng_seed(&b, 42, 7);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(rt_rng_next_u32(&a), rt_rng_next_u32(&b));
    for (int i = 0; i < 1000; i++) {
        double x = rt_rng_normal(&a), y = rt_rng_normal(&b);
        ck_assert_mem_eq(&x, &y, sizeof x);
    }
}
END_TEST

static int count_equal_words(uint64_t seed_a, uint64_t stream_a, uint64_t seed_b,
                             uint64_t stream_b) {
    RtRng a, b;
    rt_rng_seed(&a, seed_a, stream_a);
    rt_rng_seed(&b, seed_b, stream_b);
    int equal = 0;
    for (int i = 0; i < 1000; i++)
        equal += rt_rng_next_u32(&a) == rt_rng_next_u32(&b);
    return equal;
}

START_TEST(test_rng_streams_and_seeds_differ) {
    /* Independent 32-bit words coincide with probability 2^-32 each. */
    ck_assert_int_le(count_equal_words(42, 0, 42, 1), 1);
    ck_assert_int_le(count_equal_words(42, 0, 43, 0), 1);
    ck_assert_int_le(count_equal_words(0, 0, 0, 1ULL << 32), 1);
    ck_assert_int_le(count_equal_words(0, 0, 1ULL << 32, 0), 1);
}
END_TEST

START_TEST(test_rng_uniform_double) {
    RtRng rng;
    rt_rng_seed(&rng, 1, 0);
    const int n = 1000000;
    double sum = 0.0;
    int odd_mantissa = 0, out_of_range = 0;
    for (int i = 0; i < n; i++) {
        double u = rt_rng_uniform(&rng);
        out_of_range += !(u >= 0.0 && u < 1.0);
        sum += u;
        /* u * 2^53 is an integer; odd ones prove the low bits are random too. */
        odd_mantissa += fmod(u * 0x1.0p53, 2.0) == 1.0;
    }
    ck_assert_int_eq(out_of_range, 0);
    /* Standard error of the mean is 0.289 / 1000. */
    ck_assert_double_eq_tol(sum / n, 0.5, 0.002);
    ck_assert_int_gt(odd_mantissa, n / 3);
}
END_TEST

START_TEST(test_rng_uniform_float) {
    RtRng rng;
    rt_rng_seed(&rng, 2, 0);
    const int n = 1000000;
    double sum = 0.0;
    int out_of_range = 0;
    for (int i = 0; i < n; i++) {
        float u = rt_rng_uniform_f32(&rng);
        out_of_range += !(u >= 0.0f && u < 1.0f);
        sum += u;
    }
    ck_assert_int_eq(out_of_range, 0);
    ck_assert_double_eq_tol(sum / n, 0.5, 0.002);
}
END_TEST

START_TEST(test_rng_normal_moments) {
    RtRng rng;
    rt_rng_seed(&rng, 3, 0);
    const int n = 1000000;
    double sum = 0.0, sum2 = 0.0;
    int within_one = 0;
    for (int i = 0; i < n; i++) {
        double z = rt_rng_normal(&rng);
        sum += z;
        sum2 += z * z;
        within_one += fabs(z) < 1.0;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    ck_assert_double_eq_tol(mean, 0.0, 0.005);
    ck_assert_double_eq_tol(var, 1.0, 0.01);
    ck_assert_double_eq_tol((double)within_one / n, 0.682689, 0.003);
}
END_TEST

START_TEST(test_rng_truncated_normal) {
    RtRng rng;
    rt_rng_seed(&rng, 4, 0);
    const int n = 1000000;
    double sum = 0.0, sum2 = 0.0, peak = 0.0;
    for (int i = 0; i < n; i++) {
        double z = rt_rng_truncated_normal(&rng);
        peak = fmax(peak, fabs(z));
        sum += z;
        sum2 += z * z;
    }
    ck_assert(peak <= 2.0 && peak > 1.99);
    double mean = sum / n;
    ck_assert_double_eq_tol(mean, 0.0, 0.005);
    /* Variance of a unit normal truncated to +-2 is 0.87962566^2 = 0.773741. */
    ck_assert_double_eq_tol(sum2 / n - mean * mean, 0.773741, 0.008);
}
END_TEST

START_TEST(test_rng_state_round_trip) {
    RtRng rng;
    rt_rng_seed(&rng, 99, 5);
    for (int i = 0; i < 7; i++) /* stop in the middle of a block */
        rt_rng_next_u32(&rng);
    RtRngState saved = rt_rng_get_state(&rng);
    ck_assert_uint_eq(saved.seed, 99);
    ck_assert_uint_eq(saved.stream, 5);
    ck_assert_uint_eq(saved.position, 7);

    uint32_t first[10];
    for (int i = 0; i < 10; i++)
        first[i] = rt_rng_next_u32(&rng);

    RtRng restored;
    rt_rng_seed(&restored, 1, 1);
    /* Leave block 1 of another key cached: the saved position is also in block 1,
     * so a stale cache would leak the wrong words. */
    for (int i = 0; i < 5; i++)
        rt_rng_next_u32(&restored);
    rt_rng_set_state(&restored, saved);
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(rt_rng_next_u32(&restored), first[i]);

    rt_rng_set_state(&rng, saved); /* rewinding the same generator */
    for (int i = 0; i < 10; i++)
        ck_assert_uint_eq(rt_rng_next_u32(&rng), first[i]);
}
END_TEST

/* ---- initializers ---- */

/* A dropout mask large enough to be drawn on several threads: element i
 * from the stream's words 2i and 2i + 1, as one thread draws them in order,
 * whatever the threads. */
START_TEST(test_dropout_mask_threads) {
    enum { N = 300001 };
    float *one = malloc(sizeof(float) * N), *three = malloc(sizeof(float) * N);
    ck_assert(one && three);
    rt_set_threads(1);
    rt_dropout_mask_f32(one, N, 0.3, 42, 7);
    rt_set_threads(3);
    rt_dropout_mask_f32(three, N, 0.3, 42, 7);
    rt_set_threads(0);
    ck_assert_mem_eq(one, three, sizeof(float) * N);
    RtRng rng;
    rt_rng_seed(&rng, 42, 7);
    int64_t kept = 0;
    for (int64_t i = 0; i < N; i++) {
        float want = rt_rng_uniform(&rng) >= 0.3 ? (float)(1.0 / 0.7) : 0.0f;
        ck_assert_msg(one[i] == want, "element %lld", (long long)i);
        kept += one[i] != 0;
    }
    ck_assert(kept > N * 0.68 && kept < N * 0.72);
    free(one);
    free(three);
}
END_TEST

/* The mask as rt_rng_uniform draws it, one element at a time. */
static void reference_mask(float *dst, int64_t from, int64_t to, double rate, uint64_t seed, uint64_t stream) {
    RtRng rng;
    rt_rng_seed(&rng, seed, stream);
    rt_rng_set_state(&rng, (RtRngState){.seed = seed, .stream = stream, .position = 2 * (uint64_t)from});
    float kept = (float)(1.0 / (1.0 - rate));
    for (int64_t i = from; i < to; i++) dst[i] = rt_rng_uniform(&rng) >= rate ? kept : 0.0f;
}

/* Whole batches of blocks at a time, byte for byte the draws above: from
 * odd (mid-block) and even starts, ends inside a block and inside a batch,
 * rates at the edges of [0, 1) and right at a draw. */
START_TEST(test_dropout_mask_range) {
    enum { N = 8 * RT_RNG_BATCH }; /* past the largest from + size */
    const double rates[] = {0.0, 0x1.0p-53, 0.15, 0.3, 0.5, 0.999, 1.0 - 0x1.0p-53};
    const uint64_t seeds[] = {0, 42, 0x0123456789abcdefu, UINT64_MAX};
    const uint64_t streams[] = {0, RT_DROPOUT_STREAM_BASE + 7, 0xfffffffe00000003u};
    const int64_t froms[] = {0, 1, 2, 3, 2 * RT_RNG_BATCH - 1, 2 * RT_RNG_BATCH, 2 * RT_RNG_BATCH + 1,
                             3 * RT_RNG_BATCH + 5};
    const int64_t sizes[] = {0, 1, 2, 3, 2 * RT_RNG_BATCH - 1, 2 * RT_RNG_BATCH, 2 * RT_RNG_BATCH + 1,
                             4 * RT_RNG_BATCH + 3};
    float got[N], want[N];
    for (size_t r = 0; r < sizeof rates / sizeof *rates; r++)
        for (size_t s = 0; s < sizeof seeds / sizeof *seeds; s++)
            for (size_t t = 0; t < sizeof streams / sizeof *streams; t++)
                for (size_t f = 0; f < sizeof froms / sizeof *froms; f++)
                    for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
                        int64_t from = froms[f], to = froms[f] + sizes[z];
                        /* Elements outside [from, to) must keep this. */
                        memset(got, 0x5a, sizeof got);
                        memset(want, 0x5a, sizeof want);
                        rt_dropout_mask_range_f32(got, from, to, rates[r], seeds[s], streams[t]);
                        reference_mask(want, from, to, rates[r], seeds[s], streams[t]);
                        ck_assert_msg(memcmp(got, want, sizeof got) == 0,
                                      "rate %a seed %llx stream %llx elements [%lld, %lld)", rates[r],
                                      (unsigned long long)seeds[s], (unsigned long long)streams[t],
                                      (long long)from, (long long)to);
                    }
    /* Rates at a draw and the doubles either side of it: kept, kept, dropped.
     * Below 0.5 the neighbours fall between multiples of 2^-53. */
    RtRng rng;
    rt_rng_seed(&rng, 5, 11);
    for (int j = 0; j < 2 * RT_RNG_BATCH; j++) {
        double u = rt_rng_uniform(&rng);
        const double edges[] = {u, nextafter(u, 0.0), nextafter(u, 1.0)};
        for (int e = 0; e < 3; e++) {
            if (!(edges[e] >= 0 && edges[e] < 1)) continue;
            rt_dropout_mask_range_f32(got, 0, 2 * RT_RNG_BATCH, edges[e], 5, 11);
            reference_mask(want, 0, 2 * RT_RNG_BATCH, edges[e], 5, 11);
            ck_assert_msg(memcmp(got, want, sizeof(float) * 2 * RT_RNG_BATCH) == 0, "rate %a", edges[e]);
            ck_assert((got[j] != 0.0f) == (e < 2));
        }
    }
    /* Whole masks, one thread and three (whose parts start at odd elements). */
    static float mask[100003], ref[100003];
    for (int threads = 1; threads <= 3; threads += 2) {
        rt_set_threads(threads);
        rt_dropout_mask_f32(mask, 100003, 0.15, 7, RT_DROPOUT_STREAM_BASE);
        reference_mask(ref, 0, 100003, 0.15, 7, RT_DROPOUT_STREAM_BASE);
        ck_assert_mem_eq(mask, ref, sizeof mask);
    }
    rt_set_threads(0);
}
END_TEST

/* Counter words carry from the block's low word into its high one. */
START_TEST(test_rng_uniform_bits) {
    const uint64_t firsts[] = {0, 1, 0xffffffffu - 5, 0x3fffffffffffffffu - RT_RNG_BATCH};
    for (size_t f = 0; f < sizeof firsts / sizeof *firsts; f++) {
        uint64_t bits[2 * RT_RNG_BATCH];
        rt_rng_uniform_bits(42, 9, firsts[f], bits);
        RtRng rng;
        rt_rng_seed(&rng, 42, 9);
        rt_rng_set_state(&rng, (RtRngState){.seed = 42, .stream = 9, .position = 4 * firsts[f]});
        for (int p = 0; p < 2 * RT_RNG_BATCH; p++) {
            uint64_t a = rt_rng_next_u32(&rng);
            ck_assert_uint_eq(bits[p], a << 32 | rt_rng_next_u32(&rng));
        }
    }
}
END_TEST

START_TEST(test_init_fans) {
    int64_t d0[1] = {0};
    RtFans f = rt_init_fans(d0, 0);
    ck_assert(f.fan_in == 1.0 && f.fan_out == 1.0);
    int64_t d1[1] = {12};
    f = rt_init_fans(d1, 1);
    ck_assert(f.fan_in == 12.0 && f.fan_out == 12.0);
    int64_t d2[2] = {3, 5};
    f = rt_init_fans(d2, 2);
    ck_assert(f.fan_in == 3.0 && f.fan_out == 5.0);
    int64_t d3[3] = {4, 3, 5};
    f = rt_init_fans(d3, 3);
    ck_assert(f.fan_in == 12.0 && f.fan_out == 20.0);
}
END_TEST

START_TEST(test_init_numel) {
    int64_t dims[4] = {2, 3, 4, 5};
    ck_assert_int_eq(rt_init_numel(dims, 0), 1);
    ck_assert_int_eq(rt_init_numel(dims, 4), 120);
    ck_assert_int_eq(rt_init_numel(dims, 5), -1);
    int64_t negative[2] = {3, -1};
    ck_assert_int_eq(rt_init_numel(negative, 2), -1);
    int64_t huge[2] = {INT64_MAX / 2, 3};
    ck_assert_int_eq(rt_init_numel(huge, 2), -1);
}
END_TEST

START_TEST(test_init_kind_names) {
    const char *names[] = {"zeros",         "ones",          "constant",   "uniform",
                           "glorot_uniform", "glorot_normal", "orthogonal", "lstm_bias"};
    ck_assert_int_eq(sizeof names / sizeof names[0], RT_INIT_KIND_COUNT);
    for (int i = 0; i < RT_INIT_KIND_COUNT; i++) {
        RtInitKind kind;
        ck_assert(rt_init_kind_from_name(names[i], &kind));
        ck_assert_str_eq(rt_init_kind_name(kind), names[i]);
    }
    RtInitKind kind = RT_INIT_ZEROS;
    ck_assert(!rt_init_kind_from_name("he_normal", &kind));
    ck_assert(!rt_init_kind_from_name("Zeros", &kind));
    ck_assert_ptr_null(rt_init_kind_name(RT_INIT_KIND_COUNT));
}
END_TEST

START_TEST(test_init_constants) {
    double buf[6];
    int64_t dims[2] = {2, 3};
    RtInitSpec spec = rt_init_spec_default(RT_INIT_ONES);
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 2, NULL), RT_INIT_OK);
    for (int i = 0; i < 6; i++)
        ck_assert(buf[i] == 1.0);
    spec = rt_init_spec_default(RT_INIT_CONSTANT);
    spec.arg.constant.value = -2.5;
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 2, NULL), RT_INIT_OK);
    for (int i = 0; i < 6; i++)
        ck_assert(buf[i] == -2.5);
    spec = rt_init_spec_default(RT_INIT_ZEROS);
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 0, NULL), RT_INIT_OK);
    ck_assert(buf[0] == 0.0 && buf[1] == -2.5); /* rank 0 writes one element */
}
END_TEST

START_TEST(test_init_uniform_default) {
    enum { N = 100000 };
    double *buf = malloc(N * sizeof *buf);
    int64_t dims[2] = {1000, 100};
    RtRng rng;
    rt_rng_seed(&rng, 5, 0);
    RtInitSpec spec = rt_init_spec_default(RT_INIT_UNIFORM);
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 2, &rng), RT_INIT_OK);
    double sum = 0.0, lo = 1.0, hi = -1.0;
    for (int i = 0; i < N; i++) {
        sum += buf[i];
        lo = fmin(lo, buf[i]);
        hi = fmax(hi, buf[i]);
    }
    ck_assert(lo >= -0.05 && hi < 0.05);
    ck_assert(lo < -0.0499 && hi > 0.0499); /* the whole range is used */
    ck_assert_double_eq_tol(sum / N, 0.0, 0.0005);
    free(buf);
}
END_TEST

static void moments(const double *x, int64_t n, double *mean, double *var) {
    double sum = 0.0, sum2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += x[i];
        sum2 += x[i] * x[i];
    }
    *mean = sum / (double)n;
    *var = sum2 / (double)n - *mean * *mean;
}

START_TEST(test_init_glorot_uniform) {
    int64_t dims[2] = {200, 300};
    const int64_t n = 60000;
    double *w = malloc((size_t)n * sizeof *w);
    RtRng rng;
    rt_rng_seed(&rng, 6, 0);
    RtInitSpec spec = rt_init_spec_default(RT_INIT_GLOROT_UNIFORM);
    ck_assert_int_eq(rt_init_fill(&spec, w, dims, 2, &rng), RT_INIT_OK);
    double limit = sqrt(6.0 / 500.0), mean, var, peak = 0.0;
    for (int64_t i = 0; i < n; i++)
        peak = fmax(peak, fabs(w[i]));
    ck_assert(peak <= limit && peak > 0.999 * limit);
    moments(w, n, &mean, &var);
    ck_assert_double_eq_tol(mean, 0.0, 0.002);
    ck_assert_double_eq_tol(var / (limit * limit / 3.0), 1.0, 0.02);
    free(w);
}
END_TEST

START_TEST(test_init_glorot_normal) {
    int64_t dims[3] = {4, 50, 60}; /* rf 4: fan_in 200, fan_out 240 */
    const int64_t n = 12000;
    double *w = malloc((size_t)n * sizeof *w);
    RtRng rng;
    rt_rng_seed(&rng, 7, 0);
    RtInitSpec spec = rt_init_spec_default(RT_INIT_GLOROT_NORMAL);
    ck_assert_int_eq(rt_init_fill(&spec, w, dims, 3, &rng), RT_INIT_OK);
    double stddev = sqrt(2.0 / 440.0) / 0.87962566103423978, mean, var, peak = 0.0;
    for (int64_t i = 0; i < n; i++)
        peak = fmax(peak, fabs(w[i]));
    ck_assert(peak <= 2.0 * stddev);
    moments(w, n, &mean, &var);
    ck_assert_double_eq_tol(mean, 0.0, 0.002);
    /* The truncation correction makes the variance the untruncated 2/(in+out). */
    ck_assert_double_eq_tol(var / (2.0 / 440.0), 1.0, 0.05);
    free(w);
}
END_TEST

/* max |W^T W - I| for a tall or square W, max |W W^T - I| for a wide one. */
static double orthogonality_error(const double *w, int64_t rows, int64_t cols, double gain) {
    int tall = rows >= cols;
    int64_t k = tall ? cols : rows, len = tall ? rows : cols;
    double worst = 0.0;
    for (int64_t i = 0; i < k; i++) {
        for (int64_t j = 0; j < k; j++) {
            double dot = 0.0;
            for (int64_t t = 0; t < len; t++)
                dot += tall ? w[t * cols + i] * w[t * cols + j] : w[i * cols + t] * w[j * cols + t];
            worst = fmax(worst, fabs(dot / (gain * gain) - (i == j ? 1.0 : 0.0)));
        }
    }
    return worst;
}

static void check_orthogonal(const int64_t *dims, int rank, double gain) {
    int64_t rows = rt_init_numel(dims, rank - 1), cols = dims[rank - 1];
    double *w = malloc((size_t)(rows * cols) * sizeof *w);
    RtRng rng;
    rt_rng_seed(&rng, 8, 0);
    RtInitSpec spec = rt_init_spec_default(RT_INIT_ORTHOGONAL);
    spec.arg.orthogonal.gain = gain;
    ck_assert_int_eq(rt_init_fill(&spec, w, dims, rank, &rng), RT_INIT_OK);
    double err = orthogonality_error(w, rows, cols, gain);
    ck_assert_msg(err < 1e-10, "%lldx%lld: orthogonality error %g", (long long)rows,
                  (long long)cols, err);
    free(w);
}

START_TEST(test_init_orthogonal_shapes) {
    int64_t tall[2] = {7, 3}, square[2] = {5, 5}, wide[2] = {3, 7}, rank3[3] = {2, 3, 4};
    int64_t lstm_kernel[2] = {64, 256}; /* recurrent kernel of an LSTM with 64 units */
    check_orthogonal(tall, 2, 1.0);
    check_orthogonal(square, 2, 1.0);
    check_orthogonal(wide, 2, 1.0);
    check_orthogonal(rank3, 3, 1.0);
    check_orthogonal(lstm_kernel, 2, 1.0);
    check_orthogonal(square, 2, 2.0);
}
END_TEST

/* Q must be the Q of the QR of the drawn normal matrix A (m x n, m >= n) with
 * diag(R) > 0: R = Q^T A is upper triangular with a positive diagonal. For a
 * wide shape Keras draws A as (cols x rows) and returns Q^T. */
static void check_qr_convention(int64_t rows, int64_t cols) {
    int64_t m = rows > cols ? rows : cols, n = rows > cols ? cols : rows;
    double *w = malloc((size_t)(rows * cols) * sizeof *w);
    double *a = malloc((size_t)(m * n) * sizeof *a);
    RtRng rng, replay;
    rt_rng_seed(&rng, 9, 3);
    rt_rng_seed(&replay, 9, 3);
    int64_t dims[2] = {rows, cols};
    ck_assert_int_eq(rt_init_orthogonal(w, dims, 2, &rng, 1.0), RT_INIT_OK);
    for (int64_t i = 0; i < m * n; i++)
        a[i] = rt_rng_normal(&replay);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < n; j++) {
            double r = 0.0;
            for (int64_t t = 0; t < m; t++) {
                double q_ti = rows >= cols ? w[t * cols + i] : w[i * cols + t];
                r += q_ti * a[t * n + j];
            }
            if (i > j)
                ck_assert_double_eq_tol(r, 0.0, 1e-10);
            if (i == j)
                ck_assert_double_gt(r, 1e-6);
        }
    }
    free(a);
    free(w);
}

START_TEST(test_init_orthogonal_is_qr_of_draw) {
    check_qr_convention(6, 4);
    check_qr_convention(4, 4);
    check_qr_convention(3, 5);
}
END_TEST

START_TEST(test_init_orthogonal_bad_rank) {
    double buf[4];
    int64_t dims[1] = {4};
    RtRng rng;
    rt_rng_seed(&rng, 0, 0);
    RtInitSpec spec = rt_init_spec_default(RT_INIT_ORTHOGONAL);
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 1, &rng), RT_INIT_BAD_SHAPE);
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 0, &rng), RT_INIT_BAD_SHAPE);
}
END_TEST

START_TEST(test_init_lstm_bias) {
    double b[12];
    int64_t dims[1] = {12};
    RtInitSpec spec = rt_init_spec_default(RT_INIT_LSTM_BIAS);
    ck_assert_int_eq(rt_init_fill(&spec, b, dims, 1, NULL), RT_INIT_OK);
    for (int i = 0; i < 12; i++) /* gates i, f, c, o of 3 units each */
        ck_assert_msg(b[i] == (i >= 3 && i < 6 ? 1.0 : 0.0), "b[%d] = %g", i, b[i]);
    spec.arg.lstm_bias.forget = 2.0;
    ck_assert_int_eq(rt_init_fill(&spec, b, dims, 1, NULL), RT_INIT_OK);
    ck_assert(b[2] == 0.0 && b[3] == 2.0 && b[5] == 2.0 && b[6] == 0.0);

    int64_t odd[1] = {10}, matrix[2] = {3, 4};
    ck_assert_int_eq(rt_init_fill(&spec, b, odd, 1, NULL), RT_INIT_BAD_SHAPE);
    ck_assert_int_eq(rt_init_fill(&spec, b, matrix, 2, NULL), RT_INIT_BAD_SHAPE);
}
END_TEST

START_TEST(test_init_fill_rejects) {
    double buf[4];
    int64_t dims[2] = {2, 2}, negative[2] = {2, -2};
    RtInitSpec spec = rt_init_spec_default(RT_INIT_ZEROS);
    ck_assert_int_eq(rt_init_fill(&spec, buf, negative, 2, NULL), RT_INIT_BAD_SHAPE);
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, RT_INIT_MAX_RANK + 1, NULL),
                     RT_INIT_BAD_SHAPE);
    spec.kind = RT_INIT_KIND_COUNT;
    ck_assert_int_eq(rt_init_fill(&spec, buf, dims, 2, NULL), RT_INIT_BAD_KIND);
    ck_assert_str_eq(rt_init_status_message(RT_INIT_BAD_SHAPE),
                     "initializer cannot fill a tensor of this shape");
}
END_TEST

START_TEST(test_init_same_seed_same_weights) {
    double a[24], b[24];
    int64_t dims[2] = {4, 6};
    RtInitSpec spec = rt_init_spec_default(RT_INIT_ORTHOGONAL);
    RtRng r1, r2;
    rt_rng_seed(&r1, 11, 2);
    rt_rng_seed(&r2, 11, 2);
    ck_assert_int_eq(rt_init_fill(&spec, a, dims, 2, &r1), RT_INIT_OK);
    ck_assert_int_eq(rt_init_fill(&spec, b, dims, 2, &r2), RT_INIT_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    rt_rng_seed(&r2, 11, 3);
    ck_assert_int_eq(rt_init_fill(&spec, b, dims, 2, &r2), RT_INIT_OK);
    ck_assert(memcmp(a, b, sizeof a) != 0);
}
END_TEST

START_TEST(test_init_round_f32) {
    double buf[4] = {0.1, 1.0, 1.0 + 0x1.0p-24, 1.0 + 0x1.8p-24};
    rt_init_round_f32(buf, 4);
    ck_assert(buf[0] == 0.100000001490116119384765625); /* nearest float to 0.1 */
    ck_assert(buf[1] == 1.0);
    ck_assert(buf[2] == 1.0);               /* halfway: ties to the even neighbour */
    ck_assert(buf[3] == 1.0 + 0x1.0p-23);   /* above halfway: rounds up */
}
END_TEST

/* A slab is zeroed and 64-byte aligned at every size: a large one comes
 * from mmap (zeroed by the kernel, not by rt_slab_new), small ones from the
 * heap, the second time round from blocks freed dirty. */
START_TEST(test_slab_zeroed_aligned) {
    static const int64_t sizes[] = {0, 1, 100, 4096, 1 << 20, 48 << 20};
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            RtVariant v = {.slab_bytes = sizes[i]};
            uint8_t *p = rt_slab_new(&v);
            ck_assert_ptr_nonnull(p);
            ck_assert_uint_eq((uintptr_t)p % 64, 0);
            int64_t n = sizes[i] > 0 ? sizes[i] : 1, k = 0;
            while (k < n && p[k] == 0) k++;
            ck_assert_msg(k == n, "round %d, %lld bytes: byte %lld is not zero", round, (long long)n, (long long)k);
            memset(p, 0xa5, (size_t)n);
            rt_slab_free(p);
        }
    rt_slab_free(NULL);
}
END_TEST

/* The products' counter (seqc-bench's products_gflops): a kernel announced
 * by rt_product_next counts its FLOPs and time; one not announced, one run
 * from a part, or one run while counting is off does not. */
static void busy_part(void *ctx, int64_t part, int64_t nparts, void *scratch) {
    (void)part, (void)nparts, (void)scratch;
    volatile double x = 0;
    for (int i = 0; i < 200000; i++) x += 1.0;
    *(double *)ctx += x > 0;
}

static void nesting_part(void *ctx, int64_t part, int64_t nparts, void *scratch) {
    (void)part, (void)nparts, (void)scratch;
    rt_product_next(1e9);
    rt_parallel(busy_part, ctx, 1, 0);
}

START_TEST(test_products_counted) {
    double runs = 0, ms, flops;
    rt_product_next(1e6);
    rt_parallel(busy_part, &runs, 1, 0); /* counting is off */
    rt_products_count(true);
    rt_product_next(1e6);
    rt_parallel(busy_part, &runs, 1, 0);
    rt_parallel(busy_part, &runs, 1, 0); /* not announced */
    rt_parallel(nesting_part, &runs, 1, 0);
    rt_products_counted(&ms, &flops);
    rt_products_count(false);
    ck_assert(runs == 4);
    ck_assert_msg(flops == 1e6, "%g FLOPs counted", flops);
    ck_assert(ms > 0);
    rt_products_counted(&ms, &flops);
    ck_assert(flops == 0 && ms == 0);
}
END_TEST

static Suite *rng_suite(void) {
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_philox_kat_zeros);
    tcase_add_test(tc, test_philox_kat_ones);
    tcase_add_test(tc, test_philox_kat_pi);
    tcase_add_test(tc, test_rng_counter_layout);
    tcase_add_test(tc, test_rng_reproducible);
    tcase_add_test(tc, test_rng_streams_and_seeds_differ);
    tcase_add_test(tc, test_rng_uniform_double);
    tcase_add_test(tc, test_rng_uniform_float);
    tcase_add_test(tc, test_rng_normal_moments);
    tcase_add_test(tc, test_rng_truncated_normal);
    tcase_add_test(tc, test_rng_state_round_trip);
    tcase_add_test(tc, test_dropout_mask_threads);
    tcase_add_test(tc, test_dropout_mask_range);
    tcase_add_test(tc, test_rng_uniform_bits);
    /* The million-draw tests take a moment under sanitizers. */
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

static Suite *init_suite(void) {
    Suite *s = suite_create("init");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_init_fans);
    tcase_add_test(tc, test_init_numel);
    tcase_add_test(tc, test_init_kind_names);
    tcase_add_test(tc, test_init_constants);
    tcase_add_test(tc, test_init_uniform_default);
    tcase_add_test(tc, test_init_glorot_uniform);
    tcase_add_test(tc, test_init_glorot_normal);
    tcase_add_test(tc, test_init_orthogonal_shapes);
    tcase_add_test(tc, test_init_orthogonal_is_qr_of_draw);
    tcase_add_test(tc, test_init_orthogonal_bad_rank);
    tcase_add_test(tc, test_init_lstm_bias);
    tcase_add_test(tc, test_init_fill_rejects);
    tcase_add_test(tc, test_init_same_seed_same_weights);
    tcase_add_test(tc, test_init_round_f32);
    tcase_add_test(tc, test_slab_zeroed_aligned);
    tcase_add_test(tc, test_products_counted);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *runner = srunner_create(rng_suite());
    srunner_add_suite(runner, init_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
