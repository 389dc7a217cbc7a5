/* A univariate series for the forecast example, written as CSV with a header,
 * the value in column 1:
 *
 *     series-data [--count N] [--seed S] [--window W] [--validate F] OUT.csv
 *     series-data --from IN.csv [--column C] [--window W] [--validate F] OUT.csv
 *
 * The first form generates one: a slow trend, a yearly cycle (period 12, as
 * monthly data has) with a weaker half-year harmonic, and seeded Gaussian
 * noise. The second reads a real one (column C of a CSV with a header line,
 * default 1: the yearly sunspot numbers of examples/get-sunspots) and scales
 * it to 0..1 as Keras' forecasting tutorials do with MinMaxScaler, since the
 * model has no normalization layer.
 *
 * It also prints the error of the naive forecast, "the next value is the last
 * one", on the windows that `validate F` holds out (Keras' validation_split:
 * the last windows). A forecaster has to beat that number to be worth its
 * weights. The defaults match examples/forecast.seq: 1,200 values, windows of
 * 24 predicting 1, validate 0.2. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "rng.h"

#define PERIOD 12
/* Noise of standard deviation 0.2 against a cycle of amplitude 1: the best
 * possible one-step forecast has an MSE of about 0.04, the naive one about 0.2. */
#define NOISE 0.2
#define AMPLITUDE 1.0
#define HARMONIC 0.3
/* The level rises by this much over the whole series. */
#define TREND 0.5

static void usage(void) {
    fprintf(stderr, "usage: series-data [--count N] [--seed S] [--window W] [--validate F] OUT.csv\n"
                    "       series-data --from IN.csv [--column C] [--window W] [--validate F] OUT.csv\n");
}

static double *generate(long long count, long long seed) {
    double *v = malloc(sizeof(double) * (size_t)count);
    if (!v) return NULL;
    RtRng rng;
    rt_rng_seed(&rng, (uint64_t)seed, 0);
    const double two_pi = 6.283185307179586;
    for (long long t = 0; t < count; t++) {
        double phase = two_pi * (double)(t % PERIOD) / PERIOD;
        v[t] = TREND * (double)t / (double)count + AMPLITUDE * sin(phase) + HARMONIC * sin(2 * phase + 1.0) +
               NOISE * rt_rng_normal(&rng);
    }
    return v;
}

/* min-max scaling to 0..1; a constant series stays as it is. */
static void scale(double *v, long long count, double *lo_out, double *hi_out) {
    double lo = v[0], hi = v[0];
    for (long long t = 1; t < count; t++) {
        if (v[t] < lo) lo = v[t];
        if (v[t] > hi) hi = v[t];
    }
    *lo_out = lo;
    *hi_out = hi;
    if (hi == lo) return;
    for (long long t = 0; t < count; t++) v[t] = (v[t] - lo) / (hi - lo);
}

int main(int argc, char **argv) {
    long long count = 1200, seed = 1, window = 24;
    double validate = 0.2;
    long long column = 1;
    const char *path = NULL, *from = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) count = atoll(argv[++i]);
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) from = argv[++i];
        else if (strcmp(argv[i], "--column") == 0 && i + 1 < argc) column = atoll(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = atoll(argv[++i]);
        else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc) window = atoll(argv[++i]);
        else if (strcmp(argv[i], "--validate") == 0 && i + 1 < argc) validate = atof(argv[++i]);
        else if (argv[i][0] != '-' && !path) path = argv[i];
        else {
            usage();
            return 2;
        }
    }
    if (!path || window < 1 || !(validate > 0 && validate < 1) ||
        (!from && (count < 2 || count > 100000000 || window >= count))) {
        usage();
        return 2;
    }
    double *v;
    if (from) {
        RtCsvOptions opt = {.column = column, .header = true};
        float *read;
        int64_t n;
        RtDataError err;
        if (!rt_data_csv_read(from, &opt, &read, &n, &err)) {
            fprintf(stderr, "series-data: %s\n", err.msg);
            return 1;
        }
        count = n;
        v = malloc(sizeof(double) * (size_t)count);
        if (v)
            for (long long t = 0; t < count; t++) v[t] = read[t];
        free(read);
        if (v && window >= count) {
            fprintf(stderr, "series-data: %s has %lld values, too few for windows of %lld\n", from, count, window);
            free(v);
            return 2;
        }
    } else {
        v = generate(count, seed);
    }
    if (!v) {
        fprintf(stderr, "series-data: out of memory\n");
        return 1;
    }
    double lo = 0, hi = 0;
    if (from) scale(v, count, &lo, &hi);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "series-data: cannot write %s\n", path);
        free(v);
        return 1;
    }
    fprintf(f, "t,value\n");
    for (long long t = 0; t < count; t++) {
        char field[32];
        snprintf(field, sizeof field, "%.5f", v[t]);
        /* The baseline below sees the values the loader will read. */
        v[t] = strtof(field, NULL);
        fprintf(f, "%lld,%s\n", t + 1, field);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "series-data: cannot write %s\n", path);
        free(v);
        return 1;
    }
    if (from) printf("%s: %lld values scaled to 0..1 (value - %g) / %g\n", from, count, lo, hi - lo);
    /* Window k holds v[k .. k+window) and predicts v[k+window]; the first
     * floor(windows * (1 - validate)) train, as the runtime splits them. */
    long long windows = count - window;
    long long at = (long long)floor((double)windows * (1.0 - validate));
    if (at < 1 || at >= windows) {
        fprintf(stderr, "series-data: validate %g of %lld windows leaves none to train or to validate\n", validate,
                windows);
        free(v);
        return 2;
    }
    double sum = 0;
    for (long long k = at; k < windows; k++) {
        double d = v[k + window] - v[k + window - 1];
        sum += d * d;
    }
    printf("naive last-value forecast: mse %.4f on the last %lld of %lld windows (validate %g)\n",
           sum / (double)(windows - at), windows - at, windows, validate);
    free(v);
    return 0;
}
