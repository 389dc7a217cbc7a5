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
#define MR 8
#define NV 2
/* A product of one or two rows (a batch-1 step) is a chain of FMAs per
 * accumulator: four vectors of columns keep four chains going, and B, read
 * once, is not worth packing. */
#define NV_ROW 4
#define FEW_ROWS 2

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
    return cg_broadcast(cg, cg_load(cg, cg->t_f32, g->a, idx), lanes);
}

/* B(p, j .. j + lanes); a transposed B one column at a time (lanes 1). */
static LLVMValueRef b_value(Cg *cg, const CgGemm *g, LLVMValueRef p, LLVMValueRef j, int lanes) {
    LLVMValueRef idx = g->b_trans ? LLVMBuildAdd(cg->b, cg_mul(cg, j, g->b_sp), p, "")
                                  : LLVMBuildAdd(cg->b, cg_mul(cg, p, g->b_sp), j, "");
    return cg_load_vec(cg, g->b, idx, lanes);
}

/* A function of this module's own, internal and out of line, made on first
 * use: when it is new (*made), the builder is left at the start of its body,
 * cg->fn and cg->allocas switched to it, until helper_end returns to where
 * the caller was. */
typedef struct Saved {
    LLVMValueRef fn;
    LLVMBasicBlockRef allocas, here, start;
} Saved;

static LLVMValueRef helper_begin(Cg *cg, const char *name, LLVMTypeRef ty, Saved *s, bool *made) {
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
    *made = !fn;
    if (fn) return fn;
    *s = (Saved){cg->fn, cg->allocas, LLVMGetInsertBlock(cg->b), NULL};
    fn = LLVMAddFunction(cg->mod, name, ty);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_noinline(cg, fn);
    cg->fn = fn;
    cg->allocas = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
    s->start = LLVMAppendBasicBlockInContext(cg->ctx, fn, "start");
    LLVMPositionBuilderAtEnd(cg->b, s->start);
    return fn;
}

static void helper_end(Cg *cg, const Saved *s) {
    LLVMBuildRetVoid(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
    LLVMBuildBr(cg->b, s->start);
    cg->fn = s->fn;
    cg->allocas = s->allocas;
    LLVMPositionBuilderAtEnd(cg->b, s->here);
}

/* The tile: C(r, j) for r < mr, j < nv * lanes, kc terms of its sums,
 * A(r, p) and B(p, j) read for p = 0 .. kc (pointers and strides of a view
 * of a block): the accumulators live in locals that the optimizer keeps in
 * registers. They start at 0 when `first` and at C's value otherwise: a sum
 * split into blocks of p takes its terms in the same order, through an f32
 * that is stored and loaded unchanged. Built into the function being built,
 * whose arguments are a, b, c, kc and first. */
static void tile_body(Cg *cg, const CgGemm *g, int mr, int nv, int lanes, LLVMValueRef kc, LLVMValueRef first) {
    LLVMTypeRef at = cg_vec_type(cg->t_f32, lanes);
    LLVMValueRef acc[MR][NV_ROW], is[MR], js[NV_ROW], cidx[MR][NV_ROW];
    for (int r = 0; r < mr; r++) is[r] = cg_i64(cg, r);
    for (int v = 0; v < nv; v++) js[v] = cg_i64(cg, (int64_t)v * lanes);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            cidx[r][v] = LLVMBuildAdd(cg->b, cg_mul(cg, is[r], g->c_si), js[v], "");
            LLVMValueRef old = cg_load_vec(cg, g->c, cidx[r][v], lanes);
            acc[r][v] = cg_local(cg, at, NULL);
            cg_set(cg, acc[r][v], LLVMBuildSelect(cg->b, first, LLVMConstNull(at), old, ""));
        }
    CgLoop lp = cg_loop_begin_n(cg, kc);
    LLVMValueRef bv[NV_ROW];
    for (int v = 0; v < nv; v++) bv[v] = b_value(cg, g, lp.i, js[v], lanes);
    for (int r = 0; r < mr; r++) {
        LLVMValueRef a = a_value(cg, g, is[r], lp.i, lanes);
        for (int v = 0; v < nv; v++) cg_set(cg, acc[r][v], cg_fma(cg, a, bv[v], cg_get(cg, at, acc[r][v])));
    }
    cg_loop_end(cg, &lp);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) cg_store_vec(cg, g->c, cidx[r][v], cg_get(cg, at, acc[r][v]));
}

/* One function per tile shape and layout, `void (ptr a, ptr b, ptr c, i64
 * kc, i1 first)` with a at A(i0, 0), b at B(0, j0), c at C(i0, j0): every
 * call site of a product, and every product with the same strides, shares
 * it, so O3 and the back end see the tile's code once. */
static void tile(Cg *cg, const CgGemm *g, LLVMValueRef i0, LLVMValueRef j0, int mr, int nv, int lanes, int64_t kc,
                 LLVMValueRef first) {
    char name[160];
    snprintf(name, sizeof name, "gemm.tile.%dx%dx%d.%lld.%lld.%lld%s.%lld", mr, nv, lanes, (long long)g->a_si,
             (long long)g->a_sp, (long long)g->b_sp, g->b_trans ? "t" : "", (long long)g->c_si);
    LLVMTypeRef params[5] = {cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i1};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 5, false);
    Saved saved;
    bool made;
    LLVMValueRef fn = helper_begin(cg, name, ty, &saved, &made);
    if (made) {
        CgGemm inner = *g;
        inner.a = LLVMGetParam(fn, 0);
        inner.b = LLVMGetParam(fn, 1);
        inner.c = LLVMGetParam(fn, 2);
        tile_body(cg, &inner, mr, nv, lanes, LLVMGetParam(fn, 3), LLVMGetParam(fn, 4));
        helper_end(cg, &saved);
    }
    LLVMValueRef a = cg_gep(cg, cg->t_f32, g->a, cg_mul(cg, i0, g->a_si));
    LLVMValueRef b = cg_gep(cg, cg->t_f32, g->b, g->b_trans ? cg_mul(cg, j0, g->b_sp) : j0);
    LLVMValueRef c = cg_gep(cg, cg->t_f32, g->c, cg_add(cg, cg_mul(cg, i0, g->c_si), j0));
    LLVMValueRef args[5] = {a, b, c, cg_i64(cg, kc), first};
    LLVMBuildCall2(cg->b, ty, fn, args, 5, "");
}

/* Rows 0 .. m of the view g at columns [j0, j0 + nv * lanes) (single
 * columns when lanes is 1): MR-row tiles, then the rows left over one at a
 * time. */
static void column_block(Cg *cg, const CgGemm *g, int64_t m, LLVMValueRef j0, int nv, int lanes, int64_t kc,
                         LLVMValueRef first) {
    int64_t blocks = m / MR;
    if (blocks > 0) {
        CgLoop li = cg_loop_begin(cg, blocks);
        tile(cg, g, cg_mul(cg, li.i, MR), j0, MR, nv, lanes, kc, first);
        cg_loop_end(cg, &li);
    }
    if (m % MR) {
        CgLoop li = cg_loop_begin(cg, m % MR);
        tile(cg, g, LLVMBuildAdd(cg->b, li.i, cg_i64(cg, blocks * MR), ""), j0, 1, nv, lanes, kc, first);
        cg_loop_end(cg, &li);
    }
}

/* The blocking (as in Goto and van de Geijn's GEMM): for each block of KC
 * terms, B's rows of the block are packed once into panels of WIDE columns
 * (contiguous, so a panel stays in the first-level cache while the tiles of
 * a row block read it, and a transposed B becomes rows); then for each block
 * of MC rows, A's block is packed (p-major: a tile's MR values of one p are
 * adjacent, and a transposed A is read once); then every panel, every tile. */
#define KC 256
#define MC 64
#define WIDE (LANES * NV)

static LLVMValueRef pack_buffer(Cg *cg, const char *what, int64_t floats) {
    char name[64];
    snprintf(name, sizeof name, "gemm.%s.%lld", what, (long long)floats);
    LLVMValueRef gv = LLVMGetNamedGlobal(cg->mod, name);
    if (gv) return gv;
    /* A module global (zero-initialized: .bss, no cost until touched): a
     * panel of a wide B does not fit on the stack. */
    LLVMTypeRef t = LLVMArrayType2(cg->t_f32, (uint64_t)floats);
    gv = LLVMAddGlobal(cg->mod, t, name);
    LLVMSetInitializer(gv, LLVMConstNull(t));
    LLVMSetLinkage(gv, LLVMInternalLinkage);
    LLVMSetAlignment(gv, 64);
    return gv;
}

/* A helper of its own, `void (ptr src, ptr dst, i64 n, i64 kc)`, made once
 * per name: the packing loops are instantiated for every block shape of
 * every product otherwise, and O3 vectorizes each copy anew. */
typedef void (*PackBody)(Cg *cg, const CgGemm *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef n, LLVMValueRef kc);

static void call_pack(Cg *cg, const CgGemm *g, const char *name, PackBody body, LLVMValueRef src, LLVMValueRef dst,
                      LLVMValueRef n, LLVMValueRef kc) {
    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i64};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 4, false);
    Saved saved;
    bool made;
    LLVMValueRef fn = helper_begin(cg, name, ty, &saved, &made);
    if (made) {
        body(cg, g, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), LLVMGetParam(fn, 3));
        helper_end(cg, &saved);
    }
    LLVMValueRef args[4] = {src, dst, n, kc};
    LLVMBuildCall2(cg->b, ty, fn, args, 4, "");
}

/* B(p, j) for p < kc and j < npanels * WIDE from src (B's row 0 of the
 * block) into dst: panel q holds columns q * WIDE .. at dst[(q * kc + p) *
 * WIDE + c]. */
static void pack_b_body(Cg *cg, const CgGemm *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef npanels,
                        LLVMValueRef kc) {
    CgLoop lq = cg_loop_begin_n(cg, npanels);
    LLVMValueRef j0 = cg_mul(cg, lq.i, WIDE);
    LLVMValueRef panel = cg_gep(cg, cg->t_f32, dst, cg_mul(cg, LLVMBuildMul(cg->b, lq.i, kc, ""), WIDE));
    if (g->b_trans) {
        /* Column j of B is row j of the stored matrix: copied along it. */
        CgLoop lc = cg_loop_begin(cg, WIDE);
        LLVMValueRef col = cg_gep(cg, cg->t_f32, src, cg_mul(cg, cg_add(cg, j0, lc.i), g->b_sp));
        CgLoop lp = cg_loop_begin_n(cg, kc);
        cg_store(cg, cg->t_f32, panel, cg_mad(cg, lp.i, WIDE, lc.i), cg_load(cg, cg->t_f32, col, lp.i));
        cg_loop_end(cg, &lp);
        cg_loop_end(cg, &lc);
    } else {
        CgLoop lp = cg_loop_begin_n(cg, kc);
        LLVMValueRef v = cg_load_vec(cg, src, cg_mad(cg, lp.i, g->b_sp, j0), WIDE);
        LLVMValueRef st = LLVMBuildStore(cg->b, v, cg_gep(cg, cg->t_f32, panel, cg_mul(cg, lp.i, WIDE)));
        LLVMSetAlignment(st, 64);
        cg_loop_end(cg, &lp);
    }
    cg_loop_end(cg, &lq);
}

static void pack_b(Cg *cg, const CgGemm *g, LLVMValueRef bp, int64_t npanels, LLVMValueRef p0, int64_t kc) {
    char name[96];
    snprintf(name, sizeof name, "gemm.pack_b.%lld%s", (long long)g->b_sp, g->b_trans ? "t" : "");
    LLVMValueRef src = cg_gep(cg, cg->t_f32, g->b, g->b_trans ? p0 : cg_mul(cg, p0, g->b_sp));
    call_pack(cg, g, name, pack_b_body, src, bp, cg_i64(cg, npanels), cg_i64(cg, kc));
}

/* A(r, p) for r < mc, p < kc from src (A's row 0, term 0 of the block) into dst[p * mc + r]. */
static void pack_a_body(Cg *cg, const CgGemm *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef mc, LLVMValueRef kc) {
    CgLoop lr = cg_loop_begin_n(cg, mc);
    LLVMValueRef row = cg_gep(cg, cg->t_f32, src, cg_mul(cg, lr.i, g->a_si));
    CgLoop lp = cg_loop_begin_n(cg, kc);
    LLVMValueRef to = LLVMBuildAdd(cg->b, LLVMBuildMul(cg->b, lp.i, mc, ""), lr.i, "");
    cg_store(cg, cg->t_f32, dst, to, cg_load(cg, cg->t_f32, row, cg_mul(cg, lp.i, g->a_sp)));
    cg_loop_end(cg, &lp);
    cg_loop_end(cg, &lr);
}

static void pack_a(Cg *cg, const CgGemm *g, LLVMValueRef ap, LLVMValueRef i0, int64_t mc, LLVMValueRef p0, int64_t kc) {
    char name[96];
    snprintf(name, sizeof name, "gemm.pack_a.%lld.%lld", (long long)g->a_si, (long long)g->a_sp);
    LLVMValueRef src = cg_gep(cg, cg->t_f32, g->a, cg_add(cg, cg_mul(cg, i0, g->a_si), cg_mul(cg, p0, g->a_sp)));
    call_pack(cg, g, name, pack_a_body, src, ap, cg_i64(cg, mc), cg_i64(cg, kc));
}

/* Rows i0 .. i0 + mc, every panel, the kc terms packed in ap and bp. */
static void row_block(Cg *cg, const CgGemm *g, LLVMValueRef ap, LLVMValueRef bp, int64_t npanels, LLVMValueRef i0,
                      int64_t mc, LLVMValueRef p0, int64_t kc) {
    pack_a(cg, g, ap, i0, mc, p0, kc);
    LLVMValueRef first = LLVMBuildICmp(cg->b, LLVMIntEQ, p0, cg_i64(cg, 0), "");
    CgLoop lq = cg_loop_begin(cg, npanels);
    CgGemm view = {.M = mc, .N = WIDE, .P = kc, .a = ap, .a_si = 1, .a_sp = mc,
                   .b = cg_gep(cg, cg->t_f32, bp, cg_mul(cg, lq.i, kc * WIDE)), .b_sp = WIDE,
                   .c = cg_gep(cg, cg->t_f32, g->c, cg_add(cg, cg_mul(cg, i0, g->c_si), cg_mul(cg, lq.i, WIDE))),
                   .c_si = g->c_si};
    column_block(cg, &view, mc, cg_i64(cg, 0), NV, LANES, kc, first);
    cg_loop_end(cg, &lq);
}

/* Every row, terms p0 .. p0 + kc, the whole panels. */
static void k_block(Cg *cg, const CgGemm *g, LLVMValueRef ap, LLVMValueRef bp, int64_t npanels, LLVMValueRef p0,
                    int64_t kc) {
    pack_b(cg, g, bp, npanels, p0, kc);
    int64_t mc = g->M < MC ? g->M : MC, full = g->M / mc, rest = g->M % mc;
    CgLoop li = cg_loop_begin(cg, full);
    row_block(cg, g, ap, bp, npanels, cg_mul(cg, li.i, mc), mc, p0, kc);
    cg_loop_end(cg, &li);
    if (rest) row_block(cg, g, ap, bp, npanels, cg_i64(cg, full * mc), rest, p0, kc);
}

static void emit_gemm(Cg *cg, const CgGemm *g) {
    LLVMValueRef yes = LLVMConstInt(cg->t_i1, 1, false);
    int64_t j;
    if (g->M <= FEW_ROWS && !g->b_trans) {
        int64_t wide = (int64_t)NV_ROW * LANES, n = g->N / wide;
        if (n > 0) {
            CgLoop lj = cg_loop_begin(cg, n);
            column_block(cg, g, g->M, cg_mul(cg, lj.i, wide), NV_ROW, LANES, g->P, yes);
            cg_loop_end(cg, &lj);
        }
        j = n * wide;
    } else {
        int64_t npanels = g->N / WIDE;
        if (npanels > 0) {
            int64_t kc = g->P < KC ? g->P : KC, mc = g->M < MC ? g->M : MC;
            LLVMValueRef bp = pack_buffer(cg, "b", kc * npanels * WIDE), ap = pack_buffer(cg, "a", mc * kc);
            int64_t full = g->P / kc, rest = g->P % kc;
            CgLoop lk = cg_loop_begin(cg, full);
            k_block(cg, g, ap, bp, npanels, cg_mul(cg, lk.i, kc), kc);
            cg_loop_end(cg, &lk);
            if (rest) k_block(cg, g, ap, bp, npanels, cg_i64(cg, full * kc), rest);
        }
        j = npanels * WIDE;
    }
    /* The columns right of the panels, with the whole sum at once. */
    for (; !g->b_trans && j + LANES <= g->N; j += LANES) column_block(cg, g, g->M, cg_i64(cg, j), 1, LANES, g->P, yes);
    if (j < g->N) {
        CgLoop lj = cg_loop_begin(cg, g->N - j);
        column_block(cg, g, g->M, LLVMBuildAdd(cg->b, lj.i, cg_i64(cg, j), ""), 1, 1, g->P, yes);
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
    Saved saved;
    bool made;
    LLVMValueRef fn = helper_begin(cg, name, ty, &saved, &made);
    if (made) {
        unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
        LLVMAddAttributeAtIndex(fn, 3, LLVMCreateEnumAttribute(cg->ctx, noalias, 0)); /* C is its own buffer */
        CgGemm inner = *g;
        inner.a = LLVMGetParam(fn, 0);
        inner.b = LLVMGetParam(fn, 1);
        inner.c = LLVMGetParam(fn, 2);
        emit_gemm(cg, &inner);
        helper_end(cg, &saved);
    }
    LLVMValueRef args[3] = {g->a, g->b, g->c};
    LLVMBuildCall2(cg->b, ty, fn, args, 3, "");
}
