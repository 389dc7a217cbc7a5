/* Matrix products as register tiles: C(i, j) = sum over p of A(i, p) B(p, j).
 *
 * Every op that multiplies matrices (MATMUL, and the gradients MATMUL_T and
 * MATMUL_W) is one of these with its own strides. The tile keeps MR rows by
 * NV vectors of C in registers while p runs, so each B vector loaded serves
 * MR rows and each A value broadcast serves NV vectors. Vectors run across j,
 * never across p: each C(i, j) takes its terms for p = 0, 1, ... in order.
 *
 * Precision (CgGemm.exact): exact sums are the interpreter's bit for bit:
 * a double that starts at 0, takes each A(i, p) * B(p, j) (both widened,
 * multiplied, then added) and is rounded to f32 once. Fast sums keep f32
 * accumulators and fused multiply-adds: twice the lanes per register and one
 * instruction per term. Every op asks for exact sums today; fast sums pass
 * the differential tests but one (wordlm's GRU bias gradient, 1.3 times the
 * tolerance), so they wait for a tolerance argued from the error bound. */
#define SEQC_CODEGEN_INTERNAL
#include "codegen.h"

/* The tile: MR rows by NV vectors, MR * NV accumulators of the 32 registers. */
#define MR 4
#define NV 2

typedef struct Kind {
    int lanes;              /* of a full vector */
    LLVMTypeRef acc;        /* the accumulator's element type */
    bool exact;
} Kind;

static LLVMTypeRef vec(LLVMTypeRef t, int lanes) { return lanes == 1 ? t : LLVMVectorType(t, (unsigned)lanes); }

static LLVMValueRef widen(Cg *cg, const Kind *k, LLVMValueRef v, int lanes) {
    return k->exact ? LLVMBuildFPExt(cg->b, v, vec(cg->t_f64, lanes), "") : v;
}

/* A(i, p), `lanes` copies of it when lanes > 1. */
static LLVMValueRef a_value(Cg *cg, const Kind *k, const CgGemm *g, LLVMValueRef i, LLVMValueRef p, int lanes) {
    LLVMValueRef idx = LLVMBuildAdd(cg->b, cg_mul(cg, i, g->a_si), cg_mul(cg, p, g->a_sp), "");
    LLVMValueRef a = widen(cg, k, cg_load(cg, cg->t_f32, g->a, idx), 1);
    if (lanes == 1) return a;
    LLVMTypeRef vt = vec(k->acc, lanes);
    LLVMValueRef one = LLVMBuildInsertElement(cg->b, LLVMGetPoison(vt), a, LLVMConstInt(cg->t_i32, 0, false), "");
    LLVMValueRef mask = LLVMConstNull(vec(cg->t_i32, lanes));
    return LLVMBuildShuffleVector(cg->b, one, LLVMGetPoison(vt), mask, "");
}

/* B(p, j .. j + lanes). */
static LLVMValueRef b_value(Cg *cg, const Kind *k, const CgGemm *g, LLVMValueRef p, LLVMValueRef j, int lanes) {
    LLVMValueRef idx = LLVMBuildAdd(cg->b, cg_mul(cg, p, g->b_sp), j, "");
    LLVMValueRef v = LLVMBuildLoad2(cg->b, vec(cg->t_f32, lanes), cg_gep(cg, cg->t_f32, g->b, idx), "");
    LLVMSetAlignment(v, 4);
    return widen(cg, k, v, lanes);
}

/* acc + a * b: two rounded operations when exact, one fused otherwise. */
static LLVMValueRef mul_add(Cg *cg, const Kind *k, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b, int lanes) {
    if (k->exact) return LLVMBuildFAdd(cg->b, acc, LLVMBuildFMul(cg->b, a, b, ""), "");
    LLVMTypeRef t = vec(k->acc, lanes);
    static unsigned fma_id;
    if (!fma_id) fma_id = LLVMLookupIntrinsicID("llvm.fma", 8);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, fma_id, &t, 1);
    LLVMTypeRef params[3] = {t, t, t};
    LLVMValueRef args[3] = {a, b, acc};
    return LLVMBuildCall2(cg->b, LLVMFunctionType(t, params, 3, false), fn, args, 3, "");
}

/* C(i0 .. i0 + mr, j0 .. j0 + nv * lanes): the accumulators live in locals
 * that the optimizer keeps in registers. */
static void tile(Cg *cg, const Kind *k, const CgGemm *g, LLVMValueRef i0, LLVMValueRef j0, int mr, int nv, int lanes) {
    LLVMTypeRef at = vec(k->acc, lanes);
    LLVMValueRef acc[MR][NV], is[MR], js[NV];
    for (int r = 0; r < mr; r++) is[r] = LLVMBuildAdd(cg->b, i0, cg_i64(cg, r), "");
    for (int v = 0; v < nv; v++) js[v] = LLVMBuildAdd(cg->b, j0, cg_i64(cg, (int64_t)v * lanes), "");
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = cg_local(cg, at, LLVMConstNull(at));
    CgLoop lp = cg_loop_begin(cg, g->P);
    LLVMValueRef bv[NV];
    for (int v = 0; v < nv; v++) bv[v] = b_value(cg, k, g, lp.i, js[v], lanes);
    for (int r = 0; r < mr; r++) {
        LLVMValueRef a = a_value(cg, k, g, is[r], lp.i, lanes);
        for (int v = 0; v < nv; v++) cg_set(cg, acc[r][v], mul_add(cg, k, cg_get(cg, at, acc[r][v]), a, bv[v], lanes));
    }
    cg_loop_end(cg, &lp);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            LLVMValueRef out = cg_get(cg, at, acc[r][v]);
            if (k->exact) out = LLVMBuildFPTrunc(cg->b, out, vec(cg->t_f32, lanes), "");
            LLVMValueRef idx = LLVMBuildAdd(cg->b, cg_mul(cg, is[r], g->c_si), js[v], "");
            LLVMValueRef st = LLVMBuildStore(cg->b, out, cg_gep(cg, cg->t_f32, g->c, idx));
            LLVMSetAlignment(st, 4);
        }
}

/* Every row for columns [j0, j0 + nv * lanes) (or single columns when
 * lanes is 1): MR-row tiles, then the rows left over one at a time. */
static void column_block(Cg *cg, const Kind *k, const CgGemm *g, LLVMValueRef j0, int nv, int lanes) {
    int64_t blocks = g->M / MR;
    if (blocks > 0) {
        CgLoop li = cg_loop_begin(cg, blocks);
        tile(cg, k, g, cg_mul(cg, li.i, MR), j0, MR, nv, lanes);
        cg_loop_end(cg, &li);
    }
    if (g->M % MR) {
        CgLoop li = cg_loop_begin(cg, g->M % MR);
        tile(cg, k, g, LLVMBuildAdd(cg->b, li.i, cg_i64(cg, blocks * MR), ""), j0, 1, nv, lanes);
        cg_loop_end(cg, &li);
    }
}

/* A panel of B stays in the first-level cache only if it is contiguous: rows
 * of B a power of two apart fall into one cache set. Up to this many bytes
 * the panel is copied to the stack. */
#define MAX_PANEL_BYTES (512 * 1024)

void cg_gemm(Cg *cg, const CgGemm *g) {
    Kind k = g->exact ? (Kind){8, cg->t_f64, true} : (Kind){16, cg->t_f32, false};
    int64_t wide = (int64_t)k.lanes * NV, nwide = g->N / wide;
    /* Whole tiles, column panel by column panel: the panel is read by every row. */
    if (nwide > 0) {
        bool pack = g->P * wide * 4 <= MAX_PANEL_BYTES;
        LLVMValueRef panel = NULL;
        if (pack) {
            LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
            LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
            panel = LLVMBuildAlloca(cg->b, LLVMArrayType2(cg->t_f32, (uint64_t)(g->P * wide)), "panel");
            LLVMSetAlignment(panel, 64);
            LLVMPositionBuilderAtEnd(cg->b, here);
        }
        CgLoop lj = cg_loop_begin(cg, nwide);
        LLVMValueRef j0 = cg_mul(cg, lj.i, wide);
        if (pack) {
            CgLoop lp = cg_loop_begin(cg, g->P);
            LLVMTypeRef vt = vec(cg->t_f32, (int)wide);
            LLVMValueRef v = LLVMBuildLoad2(cg->b, vt, cg_gep(cg, cg->t_f32, g->b, cg_mad(cg, lp.i, g->b_sp, j0)), "");
            LLVMSetAlignment(v, 4);
            LLVMValueRef st = LLVMBuildStore(cg->b, v, cg_gep(cg, cg->t_f32, panel, cg_mul(cg, lp.i, wide)));
            LLVMSetAlignment(st, 64);
            cg_loop_end(cg, &lp);
            CgGemm packed = *g;
            packed.b = panel;
            packed.b_sp = wide;
            packed.c = cg_gep(cg, cg->t_f32, g->c, j0);
            column_block(cg, &k, &packed, cg_i64(cg, 0), NV, k.lanes);
        } else {
            column_block(cg, &k, g, j0, NV, k.lanes);
        }
        cg_loop_end(cg, &lj);
    }
    int64_t j = nwide * wide;
    for (; j + k.lanes <= g->N; j += k.lanes) column_block(cg, &k, g, cg_i64(cg, j), 1, k.lanes);
    if (j < g->N) {
        CgLoop lj = cg_loop_begin(cg, g->N - j);
        column_block(cg, &k, g, LLVMBuildAdd(cg->b, lj.i, cg_i64(cg, j), ""), 1, 1);
        cg_loop_end(cg, &lj);
    }
}
