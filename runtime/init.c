#include "init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Stddev of a unit normal truncated to [-2, 2]; dividing by it makes a
 * truncated draw have the stddev that was asked for. */
#define TRUNCATED_NORMAL_STDDEV 0.87962566103423978

static const char *const init_kind_names[RT_INIT_KIND_COUNT] = {
#define RT_INIT_KIND_NAME(suffix, name) name,
    RT_INIT_KINDS(RT_INIT_KIND_NAME)
#undef RT_INIT_KIND_NAME
};

const char *rt_init_kind_name(RtInitKind kind) {
    if ((unsigned)kind >= RT_INIT_KIND_COUNT)
        return NULL;
    return init_kind_names[kind];
}

bool rt_init_kind_from_name(const char *name, RtInitKind *kind) {
    for (int k = 0; k < RT_INIT_KIND_COUNT; k++) {
        if (strcmp(name, init_kind_names[k]) == 0) {
            *kind = (RtInitKind)k;
            return true;
        }
    }
    return false;
}

const char *rt_init_status_message(RtInitStatus status) {
    switch (status) {
    case RT_INIT_OK: return "ok";
    case RT_INIT_BAD_KIND: return "unknown initializer kind";
    case RT_INIT_BAD_SHAPE: return "initializer cannot fill a tensor of this shape";
    case RT_INIT_NO_MEMORY: return "out of memory while initializing weights";
    }
    return "unknown initializer status";
}

RtInitSpec rt_init_spec_default(RtInitKind kind) {
    RtInitSpec spec;
    memset(&spec, 0, sizeof spec);
    spec.kind = kind;
    switch (kind) {
    case RT_INIT_UNIFORM:
        spec.arg.uniform.minval = -0.05;
        spec.arg.uniform.maxval = 0.05;
        break;
    case RT_INIT_ORTHOGONAL: spec.arg.orthogonal.gain = 1.0; break;
    case RT_INIT_LSTM_BIAS: spec.arg.lstm_bias.forget = 1.0; break;
    default: break;
    }
    return spec;
}

bool rt_init_spec_from(const char *name, const double args[2], RtInitSpec *out) {
    RtInitKind kind;
    if (!name || !rt_init_kind_from_name(name, &kind))
        return false;
    *out = rt_init_spec_default(kind);
    switch (kind) {
    case RT_INIT_CONSTANT: out->arg.constant.value = args[0]; break;
    case RT_INIT_UNIFORM:
        out->arg.uniform.minval = args[0];
        out->arg.uniform.maxval = args[1];
        break;
    case RT_INIT_ORTHOGONAL: out->arg.orthogonal.gain = args[0]; break;
    case RT_INIT_LSTM_BIAS: out->arg.lstm_bias.forget = args[0]; break;
    default: break;
    }
    return true;
}

int64_t rt_init_numel(const int64_t *dims, int rank) {
    if (rank < 0 || rank > RT_INIT_MAX_RANK)
        return -1;
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return -1;
        if (dims[i] != 0 && n > INT64_MAX / dims[i])
            return -1;
        n *= dims[i];
    }
    return n;
}

RtFans rt_init_fans(const int64_t *dims, int rank) {
    RtFans fans = {1.0, 1.0};
    if (rank == 1) {
        fans.fan_in = fans.fan_out = (double)dims[0];
    } else if (rank == 2) {
        fans.fan_in = (double)dims[0];
        fans.fan_out = (double)dims[1];
    } else if (rank > 2) {
        double receptive_field = 1.0;
        for (int i = 0; i < rank - 2; i++)
            receptive_field *= (double)dims[i];
        fans.fan_in = (double)dims[rank - 2] * receptive_field;
        fans.fan_out = (double)dims[rank - 1] * receptive_field;
    }
    return fans;
}

void rt_init_constant(double *out, int64_t n, double value) {
    for (int64_t i = 0; i < n; i++)
        out[i] = value;
}

void rt_init_uniform(double *out, int64_t n, RtRng *rng, double minval, double maxval) {
    double range = maxval - minval;
    for (int64_t i = 0; i < n; i++)
        out[i] = minval + range * rt_rng_uniform(rng);
}

void rt_init_glorot_uniform(double *out, const int64_t *dims, int rank, RtRng *rng) {
    RtFans fans = rt_init_fans(dims, rank);
    double limit = sqrt(6.0 / (fans.fan_in + fans.fan_out));
    rt_init_uniform(out, rt_init_numel(dims, rank), rng, -limit, limit);
}

void rt_init_glorot_normal(double *out, const int64_t *dims, int rank, RtRng *rng) {
    RtFans fans = rt_init_fans(dims, rank);
    double stddev = sqrt(2.0 / (fans.fan_in + fans.fan_out)) / TRUNCATED_NORMAL_STDDEV;
    int64_t n = rt_init_numel(dims, rank);
    for (int64_t i = 0; i < n; i++)
        out[i] = stddev * rt_rng_truncated_normal(rng);
}

/* Householder QR of a (m x n, m >= n), returning the thin Q (m x n) with its
 * columns flipped so that diag(R) is non-negative. With that sign convention
 * Q is unique for a full-rank a, so it matches what any other QR routine
 * (LAPACK's, as Keras uses) would produce up to rounding.
 * All three matrices are column-major (column j at [j * m]), so that every
 * inner loop walks contiguous memory. a is overwritten with R; v holds the
 * unit reflector of column k in rows k..m-1 of its column k. */
/* Columns j0..j1-1 of the column-major x (m rows) times the reflector
 * I - 2 vk vk^T, whose rows below k are zero. Four columns at a time: their
 * dot products are independent chains (each still summed in row order, so
 * the result is that of one column at a time). */
static void reflect(const double *vk, double *x, int64_t m, int64_t k, int64_t j0, int64_t j1) {
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        double *c0 = x + j * m, *c1 = c0 + m, *c2 = c1 + m, *c3 = c2 + m;
        double d0 = 0.0, d1 = 0.0, d2 = 0.0, d3 = 0.0;
        for (int64_t i = k; i < m; i++) {
            d0 += vk[i] * c0[i];
            d1 += vk[i] * c1[i];
            d2 += vk[i] * c2[i];
            d3 += vk[i] * c3[i];
        }
        for (int64_t i = k; i < m; i++) {
            c0[i] -= 2.0 * d0 * vk[i];
            c1[i] -= 2.0 * d1 * vk[i];
            c2[i] -= 2.0 * d2 * vk[i];
            c3[i] -= 2.0 * d3 * vk[i];
        }
    }
    for (; j < j1; j++) {
        double *c = x + j * m, dot = 0.0;
        for (int64_t i = k; i < m; i++)
            dot += vk[i] * c[i];
        for (int64_t i = k; i < m; i++)
            c[i] -= 2.0 * dot * vk[i];
    }
}

static void householder_q(double *a, double *v, double *q, int64_t m, int64_t n) {
    memset(v, 0, (size_t)(m * n) * sizeof *v);
    for (int64_t k = 0; k < n; k++) {
        double *ak = a + k * m, *vk = v + k * m;
        double norm = 0.0;
        for (int64_t i = k; i < m; i++)
            norm += ak[i] * ak[i];
        norm = sqrt(norm);
        if (norm == 0.0)
            continue; /* column already zero below the diagonal: identity reflector */
        /* Reflect x onto -sign(x0) * |x| e1 so that x0 - alpha never cancels. */
        double alpha = ak[k] >= 0.0 ? -norm : norm;
        double vnorm = 0.0;
        for (int64_t i = k; i < m; i++) {
            vk[i] = ak[i] - (i == k ? alpha : 0.0);
            vnorm += vk[i] * vk[i];
        }
        vnorm = sqrt(vnorm);
        for (int64_t i = k; i < m; i++)
            vk[i] /= vnorm;
        reflect(vk, a, m, k, k, n);
    }
    /* Q = H_0 H_1 ... H_{n-1} applied to the first n columns of I, last reflector first. */
    memset(q, 0, (size_t)(m * n) * sizeof *q);
    for (int64_t i = 0; i < n; i++)
        q[i * m + i] = 1.0;
    /* Columns left of k are still e_j there (every reflector so far is zero
     * in their row), and H_k leaves them so: it need not touch them. */
    for (int64_t k = n - 1; k >= 0; k--)
        reflect(v + k * m, q, m, k, k, n);
    /* a now holds R. A zero diagonal keeps its column unflipped rather than
     * zeroed (numpy's sign(0) = 0), so the result stays orthogonal. */
    for (int64_t j = 0; j < n; j++) {
        if (a[j * m + j] < 0.0) {
            for (int64_t i = 0; i < m; i++)
                q[j * m + i] = -q[j * m + i];
        }
    }
}

RtInitStatus rt_init_orthogonal(double *out, const int64_t *dims, int rank, RtRng *rng,
                                double gain) {
    if (rank < 2 || rt_init_numel(dims, rank) < 0)
        return RT_INIT_BAD_SHAPE;
    int64_t rows = rt_init_numel(dims, rank - 1);
    int64_t cols = dims[rank - 1];
    if (rows == 0 || cols == 0)
        return RT_INIT_OK;
    /* Keras decomposes the tall orientation and transposes back for wide shapes. */
    int64_t m = rows > cols ? rows : cols;
    int64_t n = rows > cols ? cols : rows;
    size_t count = (size_t)(m * n);
    if (count > SIZE_MAX / sizeof(double) / 3)
        return RT_INIT_NO_MEMORY;
    double *scratch = malloc(3 * count * sizeof(double));
    if (!scratch)
        return RT_INIT_NO_MEMORY;
    double *a = scratch, *v = scratch + count, *q = scratch + 2 * count;

    /* The draws fill the m x n matrix row by row; a holds it by columns. */
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            a[j * m + i] = rt_rng_normal(rng);
    householder_q(a, v, q, m, n);

    /* Q(i, j) is q[j * m + i]; a wide shape takes Q transposed. */
    if (rows >= cols) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                out[i * n + j] = gain * q[j * m + i];
    } else {
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                out[i * cols + j] = gain * q[i * m + j];
    }
    free(scratch);
    return RT_INIT_OK;
}

void rt_init_lstm_bias(double *out, int64_t units, double forget) {
    rt_init_constant(out, 4 * units, 0.0);
    rt_init_constant(out + units, units, forget);
}

RtInitStatus rt_init_fill(const RtInitSpec *spec, double *out, const int64_t *dims, int rank,
                          RtRng *rng) {
    if ((unsigned)spec->kind >= RT_INIT_KIND_COUNT)
        return RT_INIT_BAD_KIND;
    int64_t n = rt_init_numel(dims, rank);
    if (n < 0)
        return RT_INIT_BAD_SHAPE;
    switch (spec->kind) {
    case RT_INIT_ZEROS: rt_init_constant(out, n, 0.0); break;
    case RT_INIT_ONES: rt_init_constant(out, n, 1.0); break;
    case RT_INIT_CONSTANT: rt_init_constant(out, n, spec->arg.constant.value); break;
    case RT_INIT_UNIFORM:
        rt_init_uniform(out, n, rng, spec->arg.uniform.minval, spec->arg.uniform.maxval);
        break;
    case RT_INIT_GLOROT_UNIFORM: rt_init_glorot_uniform(out, dims, rank, rng); break;
    case RT_INIT_GLOROT_NORMAL: rt_init_glorot_normal(out, dims, rank, rng); break;
    case RT_INIT_ORTHOGONAL:
        return rt_init_orthogonal(out, dims, rank, rng, spec->arg.orthogonal.gain);
    case RT_INIT_LSTM_BIAS:
        /* The gate layout only makes sense for the flat 4*units bias vector. */
        if (rank != 1 || dims[0] % 4 != 0)
            return RT_INIT_BAD_SHAPE;
        rt_init_lstm_bias(out, dims[0] / 4, spec->arg.lstm_bias.forget);
        break;
    case RT_INIT_KIND_COUNT: return RT_INIT_BAD_KIND;
    }
    return RT_INIT_OK;
}

void rt_init_round_f32(double *buf, int64_t n) {
    /* C requires a cast to discard any extra precision, so this rounds once,
     * to nearest even, on every conforming platform. */
    for (int64_t i = 0; i < n; i++)
        buf[i] = (double)(float)buf[i];
}
