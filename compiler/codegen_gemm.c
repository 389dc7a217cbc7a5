/* Matrix products as register tiles: C(i, j) = sum over p of A(i, p) B(p, j).
 *
 * Every op that multiplies matrices (MATMUL, and the gradients MATMUL_T and
 * MATMUL_W) is one of these with its own strides. The tile keeps MR rows by
 * NV vectors of C in registers while p runs, so each B vector loaded serves
 * MR rows and each A value broadcast serves NV vectors.
 *
 * Precision: each C(i, j) is a float that starts at 0 and takes A(i, p) *
 * B(p, j) for p = 0, 1, ... in order, each with one fused multiply-add (one
 * rounding). Vectors run across j, never across p, so no sum is reordered
 * and the interpreter's PREC_F32 rule (interp.c, `mac`) is matched bit for
 * bit. */
#define SEQC_CODEGEN_INTERNAL
#include "codegen.h"

/* Lanes of a vector: one AVX-512 register of floats. */
#define LANES 16
/* The tile: MR rows by NV vectors, MR * NV accumulators of the 32 registers. */
#define MR 4
#define NV 2

static LLVMTypeRef vec(LLVMTypeRef t, int lanes) { return lanes == 1 ? t : LLVMVectorType(t, (unsigned)lanes); }

LLVMValueRef cg_fma(Cg *cg, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc) {
    LLVMTypeRef t = LLVMTypeOf(acc);
    static unsigned fma_id;
    if (!fma_id) fma_id = LLVMLookupIntrinsicID("llvm.fma", 8);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, fma_id, &t, 1);
    LLVMTypeRef params[3] = {t, t, t};
    LLVMValueRef args[3] = {a, b, acc};
    return LLVMBuildCall2(cg->b, LLVMFunctionType(t, params, 3, false), fn, args, 3, "");
}

/* A(i, p), `lanes` copies of it when lanes > 1. */
static LLVMValueRef a_value(Cg *cg, const CgGemm *g, LLVMValueRef i, LLVMValueRef p, int lanes) {
    LLVMValueRef idx = LLVMBuildAdd(cg->b, cg_mul(cg, i, g->a_si), cg_mul(cg, p, g->a_sp), "");
    LLVMValueRef a = cg_load(cg, cg->t_f32, g->a, idx);
    if (lanes == 1) return a;
    LLVMTypeRef vt = vec(cg->t_f32, lanes);
    LLVMValueRef one = LLVMBuildInsertElement(cg->b, LLVMGetPoison(vt), a, LLVMConstInt(cg->t_i32, 0, false), "");
    LLVMValueRef mask = LLVMConstNull(vec(cg->t_i32, lanes));
    return LLVMBuildShuffleVector(cg->b, one, LLVMGetPoison(vt), mask, "");
}

/* B(p, j .. j + lanes); a transposed B one column at a time (lanes 1). */
static LLVMValueRef b_value(Cg *cg, const CgGemm *g, LLVMValueRef p, LLVMValueRef j, int lanes) {
    LLVMValueRef idx = g->b_trans ? LLVMBuildAdd(cg->b, cg_mul(cg, j, g->b_sp), p, "")
                                  : LLVMBuildAdd(cg->b, cg_mul(cg, p, g->b_sp), j, "");
    LLVMValueRef v = LLVMBuildLoad2(cg->b, vec(cg->t_f32, lanes), cg_gep(cg, cg->t_f32, g->b, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

/* C(i0 .. i0 + mr, j0 .. j0 + nv * lanes): the accumulators live in locals
 * that the optimizer keeps in registers. */
static void tile(Cg *cg, const CgGemm *g, LLVMValueRef i0, LLVMValueRef j0, int mr, int nv, int lanes) {
    LLVMTypeRef at = vec(cg->t_f32, lanes);
    LLVMValueRef acc[MR][NV], is[MR], js[NV];
    for (int r = 0; r < mr; r++) is[r] = LLVMBuildAdd(cg->b, i0, cg_i64(cg, r), "");
    for (int v = 0; v < nv; v++) js[v] = LLVMBuildAdd(cg->b, j0, cg_i64(cg, (int64_t)v * lanes), "");
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = cg_local(cg, at, LLVMConstNull(at));
    CgLoop lp = cg_loop_begin(cg, g->P);
    LLVMValueRef bv[NV];
    for (int v = 0; v < nv; v++) bv[v] = b_value(cg, g, lp.i, js[v], lanes);
    for (int r = 0; r < mr; r++) {
        LLVMValueRef a = a_value(cg, g, is[r], lp.i, lanes);
        for (int v = 0; v < nv; v++) cg_set(cg, acc[r][v], cg_fma(cg, a, bv[v], cg_get(cg, at, acc[r][v])));
    }
    cg_loop_end(cg, &lp);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            LLVMValueRef out = cg_get(cg, at, acc[r][v]);
            LLVMValueRef idx = LLVMBuildAdd(cg->b, cg_mul(cg, is[r], g->c_si), js[v], "");
            LLVMValueRef st = LLVMBuildStore(cg->b, out, cg_gep(cg, cg->t_f32, g->c, idx));
            LLVMSetAlignment(st, 4);
        }
}

/* Every row for columns [j0, j0 + nv * lanes) (or single columns when
 * lanes is 1): MR-row tiles, then the rows left over one at a time. */
static void column_block(Cg *cg, const CgGemm *g, LLVMValueRef j0, int nv, int lanes) {
    int64_t blocks = g->M / MR;
    if (blocks > 0) {
        CgLoop li = cg_loop_begin(cg, blocks);
        tile(cg, g, cg_mul(cg, li.i, MR), j0, MR, nv, lanes);
        cg_loop_end(cg, &li);
    }
    if (g->M % MR) {
        CgLoop li = cg_loop_begin(cg, g->M % MR);
        tile(cg, g, LLVMBuildAdd(cg->b, li.i, cg_i64(cg, blocks * MR), ""), j0, 1, nv, lanes);
        cg_loop_end(cg, &li);
    }
}

/* A panel of B stays in the first-level cache only if it is contiguous: rows
 * of B a power of two apart fall into one cache set. Up to this many bytes
 * the panel is copied to the stack. */
#define MAX_PANEL_BYTES (512 * 1024)

static void emit_gemm(Cg *cg, const CgGemm *g) {
    int64_t wide = (int64_t)LANES * NV, nwide = g->N / wide;
    bool pack = g->P * wide * 4 <= MAX_PANEL_BYTES;
    /* A transposed B is read in vectors only from a panel. */
    if (g->b_trans && !pack) nwide = 0;
    /* Whole tiles, column panel by column panel: the panel is read by every row. */
    if (nwide > 0) {
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
        if (pack && g->b_trans) {
            /* Column j0 + c of B is row j0 + c of the stored matrix: copied
             * along it, into column c of the panel. */
            CgLoop lc = cg_loop_begin(cg, wide);
            LLVMValueRef src = cg_gep(cg, cg->t_f32, g->b, cg_mul(cg, cg_add(cg, j0, lc.i), g->b_sp));
            CgLoop lp = cg_loop_begin(cg, g->P);
            cg_store(cg, cg->t_f32, panel, cg_mad(cg, lp.i, wide, lc.i), cg_load(cg, cg->t_f32, src, lp.i));
            cg_loop_end(cg, &lp);
            cg_loop_end(cg, &lc);
        } else if (pack) {
            CgLoop lp = cg_loop_begin(cg, g->P);
            LLVMTypeRef vt = vec(cg->t_f32, (int)wide);
            LLVMValueRef v = LLVMBuildLoad2(cg->b, vt, cg_gep(cg, cg->t_f32, g->b, cg_mad(cg, lp.i, g->b_sp, j0)), "");
            LLVMSetAlignment(v, 4);
            LLVMValueRef st = LLVMBuildStore(cg->b, v, cg_gep(cg, cg->t_f32, panel, cg_mul(cg, lp.i, wide)));
            LLVMSetAlignment(st, 64);
            cg_loop_end(cg, &lp);
        }
        if (pack) {
            CgGemm packed = *g;
            packed.b = panel;
            packed.b_sp = wide;
            packed.b_trans = false;
            packed.c = cg_gep(cg, cg->t_f32, g->c, j0);
            column_block(cg, &packed, cg_i64(cg, 0), NV, LANES);
        } else {
            column_block(cg, g, j0, NV, LANES);
        }
        cg_loop_end(cg, &lj);
    }
    int64_t j = nwide * wide;
    for (; !g->b_trans && j + LANES <= g->N; j += LANES) column_block(cg, g, cg_i64(cg, j), 1, LANES);
    if (j < g->N) {
        CgLoop lj = cg_loop_begin(cg, g->N - j);
        column_block(cg, g, LLVMBuildAdd(cg->b, lj.i, cg_i64(cg, j), ""), 1, 1);
        cg_loop_end(cg, &lj);
    }
}

/* One function per shape and layout, shared by every product of the module
 * that has them (a layer's forward, its recomputation in the backward scan,
 * stacked layers of one size): the tiles are the bulk of the code, and O3's
 * time grows with the code. */
void cg_gemm(Cg *cg, const CgGemm *g) {
    char name[192];
    snprintf(name, sizeof name, "gemm.%lldx%lldx%lld.%lld.%lld.%lld%s.%lld", (long long)g->M, (long long)g->N,
             (long long)g->P, (long long)g->a_si, (long long)g->a_sp, (long long)g->b_sp, g->b_trans ? "t" : "",
             (long long)g->c_si);
    LLVMTypeRef params[3] = {cg->t_ptr, cg->t_ptr, cg->t_ptr};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 3, false);
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
    if (!fn) {
        LLVMValueRef saved_fn = cg->fn;
        LLVMBasicBlockRef saved_allocas = cg->allocas, here = LLVMGetInsertBlock(cg->b);
        fn = LLVMAddFunction(cg->mod, name, ty);
        LLVMSetLinkage(fn, LLVMInternalLinkage);
        unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
        cg_noinline(cg, fn);
        LLVMAddAttributeAtIndex(fn, 3, LLVMCreateEnumAttribute(cg->ctx, noalias, 0)); /* C is its own buffer */
        cg->fn = fn;
        cg->allocas = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
        LLVMBasicBlockRef start = LLVMAppendBasicBlockInContext(cg->ctx, fn, "start");
        LLVMPositionBuilderAtEnd(cg->b, start);
        CgGemm inner = *g;
        inner.a = LLVMGetParam(fn, 0);
        inner.b = LLVMGetParam(fn, 1);
        inner.c = LLVMGetParam(fn, 2);
        emit_gemm(cg, &inner);
        LLVMBuildRetVoid(cg->b);
        LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
        LLVMBuildBr(cg->b, start);
        cg->fn = saved_fn;
        cg->allocas = saved_allocas;
        LLVMPositionBuilderAtEnd(cg->b, here);
    }
    LLVMValueRef args[3] = {g->a, g->b, g->c};
    LLVMBuildCall2(cg->b, ty, fn, args, 3, "");
}
