/* The specification of codegen_math.c: change one, change the other. */
#include "mathf.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static float pow2(int32_t n) {
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float seqc_expf(float x) {
    if (x != x) return x;
    float xc = x < SEQC_EXP_LO ? SEQC_EXP_LO : x;
    xc = xc > SEQC_EXP_HI ? SEQC_EXP_HI : xc;
    /* x = n ln2 + r, |r| <= ln2 / 2, ln2 in two parts so that r is exact */
    float n = fmaf(xc, SEQC_LOG2E, SEQC_ROUNDER) - SEQC_ROUNDER;
    float r = fmaf(-n, SEQC_LN2_HI, xc);
    r = fmaf(-n, SEQC_LN2_LO, r);
    float p = fmaf(SEQC_EXP_P0, r, SEQC_EXP_P1);
    p = fmaf(p, r, SEQC_EXP_P2);
    p = fmaf(p, r, SEQC_EXP_P3);
    p = fmaf(p, r, SEQC_EXP_P4);
    p = fmaf(p, r, SEQC_EXP_P5);
    float y = fmaf(p, r * r, r) + 1.0f;
    /* 2^n in two factors: n runs from -150 to 128, beyond one float's exponent */
    int32_t ni = (int32_t)n, n1 = ni / 2, n2 = ni - n1;
    return y * pow2(n1) * pow2(n2);
}

float seqc_tanhf(float x) {
    float z = fabsf(x);
    /* 1 - 2 / (e^2z + 1): e^2z overflows to inf from z = 44.4, giving 1 */
    float e = seqc_expf(z + z);
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0 ? -big : big;
    float s = x * x;
    float p = fmaf(SEQC_TANH_P0, s, SEQC_TANH_P1);
    p = fmaf(p, s, SEQC_TANH_P2);
    p = fmaf(p, s, SEQC_TANH_P3);
    p = fmaf(p, s, SEQC_TANH_P4);
    float small = fmaf(p * s, x, x);
    small = x == 0 ? x : small; /* tanh(-0) is -0 */
    return z < SEQC_TANH_SMALL ? small : big;
}

static double pow2d(int64_t n) {
    uint64_t bits = (uint64_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* The Taylor coefficient 1/k!, as a double (the generated code embeds the same). */
double seqc_exp_coefficient(int k) {
    double c = 1.0;
    for (int i = 2; i <= k; i++) c /= (double)i;
    return c;
}

double seqc_exp(double x) {
    if (x != x) return x;
    double xc = x < SEQC_EXPD_LO ? SEQC_EXPD_LO : x;
    xc = xc > SEQC_EXPD_HI ? SEQC_EXPD_HI : xc;
    double n = fma(xc, SEQC_LOG2E_D, SEQC_ROUNDER_D) - SEQC_ROUNDER_D;
    double r = fma(-n, SEQC_LN2_HI_D, xc);
    r = fma(-n, SEQC_LN2_LO_D, r);
    double p = seqc_exp_coefficient(SEQC_EXPD_DEGREE);
    for (int k = SEQC_EXPD_DEGREE - 1; k >= 0; k--) p = fma(p, r, seqc_exp_coefficient(k));
    int64_t ni = (int64_t)n, n1 = ni / 2, n2 = ni - n1;
    return p * pow2d(n1) * pow2d(n2);
}

double seqc_atanh_coefficient(int k) { return 2.0 / (double)(2 * k + 1); }

double seqc_log1p_unit(double x) {
    double u = 1.0 + x;
    double c = (x - (u - 1.0)) / u;    /* what rounding 1 + x lost, relative */
    int big = u > SEQC_SQRT2_D;
    double m = big ? u * 0.5 : u, k = big ? 1.0 : 0.0;
    double f = m - 1.0;
    double s = f / (2.0 + f), z = s * s;
    double p = seqc_atanh_coefficient(SEQC_ATANH_TERMS - 1);
    for (int i = SEQC_ATANH_TERMS - 2; i >= 1; i--) p = fma(p, z, seqc_atanh_coefficient(i));
    /* 2s + s z p, then k ln 2 in two parts, the small terms first */
    double log_m = fma(s * z, p, 2.0 * s);
    return fma(k, SEQC_LN2_HI_D, fma(k, SEQC_LN2_LO_D, log_m + c));
}
