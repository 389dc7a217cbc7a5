/* The alarm tutorial's data: sequences of 20 integers in -1..19 where the
 * target is 0 until the first negative input and 1 from there on. Written as
 * NumPy .npy files (f32 [n, 20, 1] inputs and targets), for the alarm model.
 *
 *     alarm-data [--count N] [--seed S] INPUTS.npy TARGETS.npy
 *
 * Each input is drawn uniformly from the 21 integers -1..19, as the tutorial
 * does, so about 62% of sequences trip the alarm somewhere. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#define STEPS 20

static int write_npy(const char *path, const float *data, int64_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "alarm-data: cannot write %s\n", path);
        return 1;
    }
    char header[128];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d, 1), }",
                       (long long)n, STEPS);
    /* magic (6) + version (2) + length (2) + header + padding + newline: a multiple of 64 */
    int total = (10 + len + 1 + 63) / 64 * 64;
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    uint16_t hlen = (uint16_t)(total - 10);
    unsigned char hl[2] = {(unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    fwrite(hl, 1, 2, f);
    fwrite(header, 1, (size_t)len, f);
    for (int i = 10 + len; i < total - 1; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, sizeof(float), (size_t)(n * STEPS), f);
    if (fclose(f) != 0) {
        fprintf(stderr, "alarm-data: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    long long count = 10000, seed = 1;
    const char *paths[2];
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) count = atoll(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = atoll(argv[++i]);
        else if (argv[i][0] != '-' && npaths < 2) paths[npaths++] = argv[i];
        else {
            fprintf(stderr, "usage: alarm-data [--count N] [--seed S] INPUTS.npy TARGETS.npy\n");
            return 2;
        }
    }
    if (npaths != 2 || count < 1 || count > 100000000) {
        fprintf(stderr, "usage: alarm-data [--count N] [--seed S] INPUTS.npy TARGETS.npy\n");
        return 2;
    }
    float *x = malloc(sizeof(float) * (size_t)count * STEPS), *y = malloc(sizeof(float) * (size_t)count * STEPS);
    if (!x || !y) {
        fprintf(stderr, "alarm-data: out of memory\n");
        return 1;
    }
    RtRng rng;
    rt_rng_seed(&rng, (uint64_t)seed, 0);
    for (long long k = 0; k < count; k++) {
        float tripped = 0;
        for (int t = 0; t < STEPS; t++) {
            float v = (float)(rt_rng_next_u32(&rng) % 21) - 1.0f;
            if (v < 0) tripped = 1;
            x[k * STEPS + t] = v;
            y[k * STEPS + t] = tripped;
        }
    }
    int status = write_npy(paths[0], x, count) || write_npy(paths[1], y, count);
    free(x);
    free(y);
    return status;
}
