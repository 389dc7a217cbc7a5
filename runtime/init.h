/* Keras weight initializers, filling a row-major double buffer.
 *
 * Shapes are (dims, rank) with rank 0..RT_INIT_MAX_RANK; the buffer holds the
 * product of dims elements (1 for rank 0). Random initializers draw their
 * numbers in row-major order from the given RtRng, so a seed reproduces the
 * same weights. Models stored in f32 round the result with rt_init_round_f32. */
#ifndef SEQC_RUNTIME_INIT_H
#define SEQC_RUNTIME_INIT_H

#include <stdbool.h>
#include <stdint.h>

#include "rng.h"

/* Weights of the supported layers have rank 1 or 2; 4 leaves room for the
 * rank > 2 fan rule without a dynamic shape. */
#define RT_INIT_MAX_RANK 4

/* X(enum suffix, name used by the model language) */
#define RT_INIT_KINDS(X)                  \
    X(ZEROS, "zeros")                     \
    X(ONES, "ones")                       \
    X(CONSTANT, "constant")               \
    X(UNIFORM, "uniform")                 \
    X(GLOROT_UNIFORM, "glorot_uniform")   \
    X(GLOROT_NORMAL, "glorot_normal")     \
    X(ORTHOGONAL, "orthogonal")           \
    X(LSTM_BIAS, "lstm_bias")

typedef enum RtInitKind {
#define RT_INIT_KIND_ENUM(suffix, name) RT_INIT_##suffix,
    RT_INIT_KINDS(RT_INIT_KIND_ENUM)
#undef RT_INIT_KIND_ENUM
    RT_INIT_KIND_COUNT
} RtInitKind;

/* An initializer as data: the kind, and the arguments that kind reads. */
typedef struct RtInitSpec {
    RtInitKind kind;
    union {
        struct { double value; } constant;               /* RT_INIT_CONSTANT */
        struct { double minval, maxval; } uniform;       /* RT_INIT_UNIFORM */
        struct { double gain; } orthogonal;              /* RT_INIT_ORTHOGONAL */
        struct { double forget; } lstm_bias;             /* RT_INIT_LSTM_BIAS */
    } arg;
} RtInitSpec;

typedef enum RtInitStatus {
    RT_INIT_OK,
    RT_INIT_BAD_KIND,    /* kind outside RtInitKind */
    RT_INIT_BAD_SHAPE,   /* rank out of range, negative dim, or shape the kind cannot fill */
    RT_INIT_NO_MEMORY,   /* orthogonal could not allocate its scratch matrices */
} RtInitStatus;

typedef struct RtFans {
    double fan_in;
    double fan_out;
} RtFans;

/* Spec with Keras' default arguments: uniform(-0.05, 0.05) as Embedding's
 * "uniform", orthogonal gain 1, lstm_bias forget 1, constant 0. */
RtInitSpec rt_init_spec_default(RtInitKind kind);
/* The spec an initializer's name and its two numbers describe, as the model
 * language writes them (uniform: min, max; constant: value; orthogonal:
 * gain; lstm_bias: forget); false for an unknown name. */
bool rt_init_spec_from(const char *name, const double args[2], RtInitSpec *out);

const char *rt_init_kind_name(RtInitKind kind); /* NULL for an invalid kind */
bool rt_init_kind_from_name(const char *name, RtInitKind *kind);
const char *rt_init_status_message(RtInitStatus status);

/* Element count of a shape, or -1 when rank or a dim is invalid or the count overflows. */
int64_t rt_init_numel(const int64_t *dims, int rank);
/* Keras compute_fans: rank 0 -> (1,1); rank 1 -> (d0,d0); rank 2 -> (d0,d1);
 * rank > 2 -> receptive field rf = prod(dims[:-2]), (d[-2]*rf, d[-1]*rf). */
RtFans rt_init_fans(const int64_t *dims, int rank);

/* The one entry point for callers that keep the spec as data. */
RtInitStatus rt_init_fill(const RtInitSpec *spec, double *out, const int64_t *dims, int rank,
                          RtRng *rng);

void rt_init_constant(double *out, int64_t n, double value);
/* minval + (maxval - minval) * u with u = rt_rng_uniform. */
void rt_init_uniform(double *out, int64_t n, RtRng *rng, double minval, double maxval);
/* uniform in [-limit, limit), limit = sqrt(6 / (fan_in + fan_out)). */
void rt_init_glorot_uniform(double *out, const int64_t *dims, int rank, RtRng *rng);
/* truncated normal, stddev = sqrt(2 / (fan_in + fan_out)) / 0.87962566103423978,
 * the divisor being the stddev of a unit normal truncated to +-2. */
void rt_init_glorot_normal(double *out, const int64_t *dims, int rank, RtRng *rng);
/* Needs rank >= 2, as in Keras. */
RtInitStatus rt_init_orthogonal(double *out, const int64_t *dims, int rank, RtRng *rng,
                                double gain);
/* LSTM bias of length 4 * units, gates i, f, c, o: zero except f = forget. */
void rt_init_lstm_bias(double *out, int64_t units, double forget);

/* Round each value to the nearest float (ties to even), so f32 models start
 * from exactly representable weights. */
void rt_init_round_f32(double *buf, int64_t n);

#endif
