/* exp and tanh in f32, and exp and log1p (on [0, 1]) in double, as IR on scalars or vectors of cg->lanes: mathf.c's
 * operations in mathf.c's order (that file is the specification), so the
 * generated code and the interpreter's f32 mode agree bit for bit, and a
 * vector of 16 lanes costs about what one libm call did. */
#define SEQC_CODEGEN_INTERNAL
#include "codegen.h"
#include "mathf.h"

static LLVMValueRef c(Cg *cg, float v) { return cg_f32(cg, (double)v); }

static LLVMValueRef ci(Cg *cg, int v) { return cg_splat(cg, LLVMConstInt(cg->t_i32, (unsigned long long)(long long)v, true)); }

static LLVMValueRef fma3(Cg *cg, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc) { return cg_fma(cg, a, b, acc); }
static LLVMValueRef lt(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFCmp(cg->b, LLVMRealOLT, a, b, ""); }
static LLVMValueRef sel(Cg *cg, LLVMValueRef k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(cg->b, k, a, b, ""); }

/* 2^n for i32 n in [-126, 127], as floats */
static LLVMValueRef pow2(Cg *cg, LLVMValueRef n) {
    LLVMValueRef bits = LLVMBuildShl(cg->b, LLVMBuildAdd(cg->b, n, ci(cg, 127), ""), ci(cg, 23), "");
    return LLVMBuildBitCast(cg->b, bits, cg_lanes_of(cg, cg->t_f32), "");
}

LLVMValueRef cg_fabsf(Cg *cg, LLVMValueRef x) {
    LLVMTypeRef it = cg_lanes_of(cg, cg->t_i32);
    LLVMValueRef bits = LLVMBuildAnd(cg->b, LLVMBuildBitCast(cg->b, x, it, ""), ci(cg, 0x7fffffff), "");
    return LLVMBuildBitCast(cg->b, bits, LLVMTypeOf(x), "");
}

LLVMValueRef cg_expf(Cg *cg, LLVMValueRef x) {
    LLVMBuilderRef b = cg->b;
    LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, x, x, "");
    LLVMValueRef xc = sel(cg, lt(cg, x, c(cg, SEQC_EXP_LO)), c(cg, SEQC_EXP_LO), x);
    xc = sel(cg, LLVMBuildFCmp(b, LLVMRealOGT, xc, c(cg, SEQC_EXP_HI), ""), c(cg, SEQC_EXP_HI), xc);
    LLVMValueRef n = LLVMBuildFSub(b, fma3(cg, xc, c(cg, SEQC_LOG2E), c(cg, SEQC_ROUNDER)), c(cg, SEQC_ROUNDER), "");
    LLVMValueRef neg = LLVMBuildFNeg(b, n, "");
    LLVMValueRef r = fma3(cg, neg, c(cg, SEQC_LN2_HI), xc);
    r = fma3(cg, neg, c(cg, SEQC_LN2_LO), r);
    LLVMValueRef p = fma3(cg, c(cg, SEQC_EXP_P0), r, c(cg, SEQC_EXP_P1));
    p = fma3(cg, p, r, c(cg, SEQC_EXP_P2));
    p = fma3(cg, p, r, c(cg, SEQC_EXP_P3));
    p = fma3(cg, p, r, c(cg, SEQC_EXP_P4));
    p = fma3(cg, p, r, c(cg, SEQC_EXP_P5));
    LLVMValueRef y = LLVMBuildFAdd(b, fma3(cg, p, LLVMBuildFMul(b, r, r, ""), r), c(cg, 1.0f), "");
    LLVMValueRef ni = LLVMBuildFPToSI(b, n, cg_lanes_of(cg, cg->t_i32), "");
    LLVMValueRef n1 = LLVMBuildSDiv(b, ni, ci(cg, 2), ""), n2 = LLVMBuildSub(b, ni, n1, "");
    LLVMValueRef out = LLVMBuildFMul(b, LLVMBuildFMul(b, y, pow2(cg, n1), ""), pow2(cg, n2), "");
    return sel(cg, nan, x, out);
}

LLVMValueRef cg_tanhf(Cg *cg, LLVMValueRef x) {
    LLVMBuilderRef b = cg->b;
    LLVMValueRef z = cg_fabsf(cg, x);
    LLVMValueRef e = cg_expf(cg, LLVMBuildFAdd(b, z, z, ""));
    LLVMValueRef big = LLVMBuildFSub(b, c(cg, 1.0f), LLVMBuildFDiv(b, c(cg, 2.0f), LLVMBuildFAdd(b, e, c(cg, 1.0f), ""), ""), "");
    big = sel(cg, lt(cg, x, c(cg, 0.0f)), LLVMBuildFNeg(b, big, ""), big);
    LLVMValueRef s = LLVMBuildFMul(b, x, x, "");
    LLVMValueRef p = fma3(cg, c(cg, SEQC_TANH_P0), s, c(cg, SEQC_TANH_P1));
    p = fma3(cg, p, s, c(cg, SEQC_TANH_P2));
    p = fma3(cg, p, s, c(cg, SEQC_TANH_P3));
    p = fma3(cg, p, s, c(cg, SEQC_TANH_P4));
    LLVMValueRef small = fma3(cg, LLVMBuildFMul(b, p, s, ""), x, x);
    small = sel(cg, LLVMBuildFCmp(b, LLVMRealOEQ, x, c(cg, 0.0f), ""), x, small);
    return sel(cg, lt(cg, z, c(cg, SEQC_TANH_SMALL)), small, big);
}

static LLVMValueRef ci64(Cg *cg, int64_t v) { return cg_splat(cg, LLVMConstInt(cg->t_i64, (unsigned long long)v, true)); }

static LLVMValueRef pow2d(Cg *cg, LLVMValueRef n) {
    LLVMValueRef bits = LLVMBuildShl(cg->b, LLVMBuildAdd(cg->b, n, ci64(cg, 1023), ""), ci64(cg, 52), "");
    return LLVMBuildBitCast(cg->b, bits, cg_lanes_of(cg, cg->t_f64), "");
}

LLVMValueRef cg_exp(Cg *cg, LLVMValueRef x) {
    LLVMBuilderRef b = cg->b;
    LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, x, x, "");
    LLVMValueRef xc = sel(cg, lt(cg, x, cg_f64(cg, SEQC_EXPD_LO)), cg_f64(cg, SEQC_EXPD_LO), x);
    xc = sel(cg, LLVMBuildFCmp(b, LLVMRealOGT, xc, cg_f64(cg, SEQC_EXPD_HI), ""), cg_f64(cg, SEQC_EXPD_HI), xc);
    LLVMValueRef n =
        LLVMBuildFSub(b, fma3(cg, xc, cg_f64(cg, SEQC_LOG2E_D), cg_f64(cg, SEQC_ROUNDER_D)), cg_f64(cg, SEQC_ROUNDER_D), "");
    LLVMValueRef neg = LLVMBuildFNeg(b, n, "");
    LLVMValueRef r = fma3(cg, neg, cg_f64(cg, SEQC_LN2_HI_D), xc);
    r = fma3(cg, neg, cg_f64(cg, SEQC_LN2_LO_D), r);
    LLVMValueRef p = cg_f64(cg, seqc_exp_coefficient(SEQC_EXPD_DEGREE));
    for (int k = SEQC_EXPD_DEGREE - 1; k >= 0; k--) p = fma3(cg, p, r, cg_f64(cg, seqc_exp_coefficient(k)));
    LLVMValueRef ni = LLVMBuildFPToSI(b, n, cg_lanes_of(cg, cg->t_i64), "");
    LLVMValueRef n1 = LLVMBuildSDiv(b, ni, ci64(cg, 2), ""), n2 = LLVMBuildSub(b, ni, n1, "");
    LLVMValueRef out = LLVMBuildFMul(b, LLVMBuildFMul(b, p, pow2d(cg, n1), ""), pow2d(cg, n2), "");
    return sel(cg, nan, x, out);
}

LLVMValueRef cg_log1p_unit(Cg *cg, LLVMValueRef x) {
    LLVMBuilderRef b = cg->b;
    LLVMValueRef one = cg_f64(cg, 1.0);
    LLVMValueRef u = LLVMBuildFAdd(b, one, x, "");
    LLVMValueRef c = LLVMBuildFDiv(b, LLVMBuildFSub(b, x, LLVMBuildFSub(b, u, one, ""), ""), u, "");
    LLVMValueRef big = LLVMBuildFCmp(b, LLVMRealOGT, u, cg_f64(cg, SEQC_SQRT2_D), "");
    LLVMValueRef m = sel(cg, big, LLVMBuildFMul(b, u, cg_f64(cg, 0.5), ""), u);
    LLVMValueRef k = sel(cg, big, one, cg_f64(cg, 0.0));
    LLVMValueRef f = LLVMBuildFSub(b, m, one, "");
    LLVMValueRef s = LLVMBuildFDiv(b, f, LLVMBuildFAdd(b, cg_f64(cg, 2.0), f, ""), "");
    LLVMValueRef z = LLVMBuildFMul(b, s, s, "");
    LLVMValueRef p = cg_f64(cg, seqc_atanh_coefficient(SEQC_ATANH_TERMS - 1));
    for (int i = SEQC_ATANH_TERMS - 2; i >= 1; i--) p = fma3(cg, p, z, cg_f64(cg, seqc_atanh_coefficient(i)));
    LLVMValueRef log_m = fma3(cg, LLVMBuildFMul(b, s, z, ""), p, LLVMBuildFMul(b, cg_f64(cg, 2.0), s, ""));
    LLVMValueRef small = LLVMBuildFAdd(b, log_m, c, "");
    return fma3(cg, k, cg_f64(cg, SEQC_LN2_HI_D), fma3(cg, k, cg_f64(cg, SEQC_LN2_LO_D), small));
}
