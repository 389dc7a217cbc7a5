/* exp and tanh in f32 as the generated code computes them: the same IEEE
 * operations in the same order, so that the interpreter's f32 mode and the
 * code generator (codegen_math.c builds these on vectors) agree bit for bit.
 * libm's expf and tanhf are called once per element and cannot run on
 * vectors; these can.
 *
 * Accuracy: within 2 ulp of the exact value (the polynomials are Cephes'
 * expf and tanhf, S. L. Moshier; tests/test_interp.c measures the error
 * against libm's double functions over the whole float range). exp
 * overflows to +inf above 88.72, reaches denormals below -87.34 and 0 below
 * -103.97; tanh is ±1 from |x| > 9.01; NaN gives NaN. */
#ifndef SEQC_MATHF_H
#define SEQC_MATHF_H

float seqc_expf(float x);
float seqc_tanhf(float x);
/* exp in double, for the losses (log-sum-exp, their gradients): within 2 ulp
 * of the exact value (a degree-13 polynomial on |r| <= ln2/2); +inf above
 * 709.78, denormals below -708.4, 0 below -745.1; NaN gives NaN. Inline in
 * the generated code instead of a call of libm's exp per class score. */
double seqc_exp(double x);
double seqc_exp_coefficient(int k);     /* 1/k!, the polynomial's coefficients */
/* log(1 + x) in double for x in [0, 1] (softplus of a loss from logits,
 * log1p(exp(-|z|))): within 2.5 ulp of the exact value there; NaN gives NaN.
 * 1 + x = 2^k m with m in [sqrt(1/2), sqrt(2)], log m = 2 atanh(s) with
 * s = (m - 1) / (m + 1), |s| <= 0.172, as its series to s^25; the rounding
 * of 1 + x is added back as (x - (u - 1)) / u. Inline in the generated code
 * instead of a call of libm's log1p per element. */
double seqc_log1p_unit(double x);
double seqc_atanh_coefficient(int k);   /* 2 / (2k + 1), the series' coefficients */

/* The constants both implementations use. */
#define SEQC_EXP_LO (-104.0f)   /* below: 0 (after two scalings by 2^-75) */
#define SEQC_EXP_HI 89.0f       /* above: +inf */
#define SEQC_LOG2E 1.44269504088896341f
#define SEQC_ROUNDER 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define SEQC_LN2_HI 0.693359375f
#define SEQC_LN2_LO (-2.12194440e-4f)
#define SEQC_EXP_P0 1.9875691500e-4f
#define SEQC_EXP_P1 1.3981999507e-3f
#define SEQC_EXP_P2 8.3334519073e-3f
#define SEQC_EXP_P3 4.1665795894e-2f
#define SEQC_EXP_P4 1.6666665459e-1f
#define SEQC_EXP_P5 5.0000001201e-1f
#define SEQC_EXPD_LO (-746.0)
#define SEQC_EXPD_HI 710.0
#define SEQC_LOG2E_D 1.4426950408889634074
#define SEQC_ROUNDER_D 6755399441055744.0       /* 1.5 * 2^52 */
#define SEQC_LN2_HI_D 6.93147180369123816490e-01 /* ln 2 in two parts, the first with trailing zeros */
#define SEQC_LN2_LO_D 1.90821492927058770002e-10
#define SEQC_EXPD_DEGREE 13                     /* terms r^k / k! for k <= 13 */
#define SEQC_SQRT2_D 1.41421356237309504880
#define SEQC_ATANH_TERMS 12                     /* 2 s^(2k+1) / (2k+1) for k < 12 */
#define SEQC_TANH_SMALL 0.625f  /* below: the odd polynomial; above: from exp(2|x|) */
#define SEQC_TANH_P0 (-5.70498872745e-3f)
#define SEQC_TANH_P1 2.06390887954e-2f
#define SEQC_TANH_P2 (-5.37397155531e-2f)
#define SEQC_TANH_P3 1.33314422036e-1f
#define SEQC_TANH_P4 (-3.33332819422e-1f)

#endif
