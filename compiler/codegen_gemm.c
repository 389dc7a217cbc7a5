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

/* The tile: C(r, j) for r < mr, j < nv * lanes, kc terms of its sums,
 * A(r, p) and B(p, j) read for p = 0 .. kc (pointers and strides of a view
 * of a block): the accumulators live in locals that the optimizer keeps in
 * registers. They start at 0 when `first` and at C's value otherwise: a sum
 * split into blocks of p takes its terms in the same order, through an f32
 * that is stored and loaded unchanged. Only the first `cols` columns of C
 * are read and written (the last panel of a product whose width is not a
 * multiple of the panel's: B's panel is padded with zeros; unpacked, B's
 * columns past them are not read when mask_b). Built into the
 * function being built, whose arguments are a, b, c, kc and first. */
static void tile_body(Cg *cg, const CgGemm *g, int mr, int nv, int lanes, int cols, bool mask_b, LLVMValueRef kc,
                      LLVMValueRef first) {
    LLVMTypeRef at = cg_vec_type(cg->t_f32, lanes);
    LLVMValueRef acc[MR][NV_ROW], is[MR], js[NV_ROW], cidx[MR][NV_ROW];
    int valid[NV_ROW];
    for (int r = 0; r < mr; r++) is[r] = cg_i64(cg, r);
    for (int v = 0; v < nv; v++) {
        js[v] = cg_i64(cg, (int64_t)v * lanes);
        valid[v] = cols - v * lanes < lanes ? cols - v * lanes : lanes;
    }
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            cidx[r][v] = LLVMBuildAdd(cg->b, cg_mul(cg, is[r], g->c_si), js[v], "");
            LLVMValueRef old = valid[v] < lanes ? cg_load_vec_masked(cg, g->c, cidx[r][v], lanes, valid[v])
                                                : cg_load_vec(cg, g->c, cidx[r][v], lanes);
            acc[r][v] = cg_local(cg, at, NULL);
            cg_set(cg, acc[r][v], LLVMBuildSelect(cg->b, first, LLVMConstNull(at), old, ""));
        }
    CgLoop lp = cg_loop_begin_n(cg, kc);
    LLVMValueRef bv[NV_ROW];
    for (int v = 0; v < nv; v++)
        bv[v] = mask_b && valid[v] < lanes ? cg_load_vec_masked(cg, g->b, cg_mad(cg, lp.i, g->b_sp, js[v]), lanes, valid[v])
                                           : b_value(cg, g, lp.i, js[v], lanes);
    for (int r = 0; r < mr; r++) {
        LLVMValueRef a = a_value(cg, g, is[r], lp.i, lanes);
        for (int v = 0; v < nv; v++) cg_set(cg, acc[r][v], cg_fma(cg, a, bv[v], cg_get(cg, at, acc[r][v])));
    }
    cg_loop_end(cg, &lp);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            LLVMValueRef sum = cg_get(cg, at, acc[r][v]);
            if (valid[v] < lanes) cg_store_vec_masked(cg, g->c, cidx[r][v], sum, valid[v]);
            else cg_store_vec(cg, g->c, cidx[r][v], sum);
        }
}

/* One function per tile shape and layout, `void (ptr a, ptr b, ptr c, i64
 * kc, i1 first)` with a at A(i0, 0), b at B(0, j0), c at C(i0, j0): every
 * call site of a product, and every product with the same strides, shares
 * it, so O3 and the back end see the tile's code once. */
static void tile(Cg *cg, const CgGemm *g, LLVMValueRef i0, LLVMValueRef j0, int mr, int nv, int lanes, int cols,
                 bool mask_b, LLVMValueRef kc, LLVMValueRef first) {
    char name[160];
    snprintf(name, sizeof name, "gemm.tile.%dx%dx%d.%lld.%lld.%lld%s.%lld.%d%s", mr, nv, lanes, (long long)g->a_si,
             (long long)g->a_sp, (long long)g->b_sp, g->b_trans ? "t" : "", (long long)g->c_si, cols,
             mask_b ? "m" : "");
    LLVMTypeRef params[5] = {cg->t_ptr, cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i1};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 5, false);
    CgSaved saved;
    bool made;
    LLVMValueRef fn = cg_helper_begin(cg, name, ty, &saved, &made);
    if (made) {
        CgGemm inner = *g;
        inner.a = LLVMGetParam(fn, 0);
        inner.b = LLVMGetParam(fn, 1);
        inner.c = LLVMGetParam(fn, 2);
        tile_body(cg, &inner, mr, nv, lanes, cols, mask_b, LLVMGetParam(fn, 3), LLVMGetParam(fn, 4));
        cg_helper_end(cg, &saved);
    }
    /* Row i0 of A: of a packed block, sliver i0 / MR, row i0 % MR in it. */
    LLVMValueRef arow = g->a_ss ? cg_add(cg, cg_mul(cg, LLVMBuildUDiv(cg->b, i0, cg_i64(cg, MR), ""), g->a_ss),
                                         LLVMBuildURem(cg->b, i0, cg_i64(cg, MR), ""))
                                : cg_mul(cg, i0, g->a_si);
    LLVMValueRef a = cg_gep(cg, cg->t_f32, g->a, arow);
    LLVMValueRef b = cg_gep(cg, cg->t_f32, g->b, g->b_trans ? cg_mul(cg, j0, g->b_sp) : j0);
    LLVMValueRef c = cg_gep(cg, cg->t_f32, g->c, cg_add(cg, cg_mul(cg, i0, g->c_si), j0));
    LLVMValueRef args[5] = {a, b, c, kc, first};
    LLVMBuildCall2(cg->b, ty, fn, args, 5, "");
}

/* Rows r0 .. r0 + rows of the view g at columns [j0, j0 + cols), cols <=
 * nv * lanes (single columns when lanes is 1): MR-row tiles, then the rows
 * left over one at a time. */
static void column_block(Cg *cg, const CgGemm *g, LLVMValueRef r0, LLVMValueRef rows, LLVMValueRef j0, int nv, int lanes,
                         int cols, bool mask_b, LLVMValueRef kc, LLVMValueRef first) {
    LLVMValueRef blocks = LLVMBuildUDiv(cg->b, rows, cg_i64(cg, MR), "");
    CgLoop li = cg_loop_begin_n(cg, blocks);
    tile(cg, g, cg_mad(cg, li.i, MR, r0), j0, MR, nv, lanes, cols, mask_b, kc, first);
    cg_loop_end(cg, &li);
    LLVMValueRef done = cg_add(cg, r0, cg_mul(cg, blocks, MR));
    CgLoop lr = cg_loop_begin_n(cg, LLVMBuildURem(cg->b, rows, cg_i64(cg, MR), ""));
    tile(cg, g, cg_add(cg, done, lr.i), j0, 1, nv, lanes, cols, mask_b, kc, first);
    cg_loop_end(cg, &lr);
}

/* The blocking (as in Goto and van de Geijn's GEMM): for each block of KC
 * terms, B's rows of the block are packed once into panels of WIDE columns
 * (contiguous, so a panel stays in the first-level cache while the tiles of
 * a row block read it, and a transposed B becomes rows); then for each block
 * of MC rows, a transposed A's block is packed in slivers of MR rows
 * (p-major: a tile's MR values of one p are adjacent, and A is read once;
 * row_block says when A is read where it lies); then every panel, every
 * tile. The buffers are the part's scratch. */
#define KC 256
#define MC 64
#define WIDE (LANES * NV)
/* A helper of its own, `void (ptr src, ptr dst, i64 n, i64 kc)`, made once
 * per name: the packing loops are instantiated for every block shape of
 * every product otherwise, and O3 vectorizes each copy anew. */
typedef void (*PackBody)(Cg *cg, const CgGemm *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef n, LLVMValueRef kc);

static void call_pack(Cg *cg, const CgGemm *g, const char *name, PackBody body, LLVMValueRef src, LLVMValueRef dst,
                      LLVMValueRef n, LLVMValueRef kc) {
    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i64};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 4, false);
    CgSaved saved;
    bool made;
    LLVMValueRef fn = cg_helper_begin(cg, name, ty, &saved, &made);
    if (made) {
        body(cg, g, LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), LLVMGetParam(fn, 3));
        cg_helper_end(cg, &saved);
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

/* The last panel when N is not a multiple of WIDE: its N % WIDE columns
 * from src (B's row 0 of the block, at the panel's first column) into dst,
 * the rest of each row zero. n is the panel's width (here, in the helper's
 * third argument). */
static void pack_tail_body(Cg *cg, const CgGemm *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef n,
                           LLVMValueRef kc) {
    CgLoop lp = cg_loop_begin_n(cg, kc);
    CgLoop lc = cg_loop_begin(cg, WIDE);
    LLVMValueRef in = LLVMBuildICmp(cg->b, LLVMIntSLT, lc.i, n, "");
    LLVMValueRef at = g->b_trans ? cg_add(cg, cg_mul(cg, lc.i, g->b_sp), lp.i) : cg_add(cg, cg_mul(cg, lp.i, g->b_sp), lc.i);
    /* Columns past the last are not read: the load's address stays in B. */
    at = LLVMBuildSelect(cg->b, in, at, cg_i64(cg, 0), "");
    LLVMValueRef v = LLVMBuildSelect(cg->b, in, cg_load(cg, cg->t_f32, src, at), cg_f32(cg, 0), "");
    cg_store(cg, cg->t_f32, dst, cg_mad(cg, lp.i, WIDE, lc.i), v);
    cg_loop_end(cg, &lc);
    cg_loop_end(cg, &lp);
}

/* Panels [q0, q1) of the terms p0 .. p0 + kc into bp, the last panel's
 * padding included when the range holds it. */
static void pack_b(Cg *cg, const CgGemm *g, LLVMValueRef bp, LLVMValueRef q0, LLVMValueRef q1, LLVMValueRef p0,
                   int64_t kc) {
    int64_t full = g->N / WIDE, tail = g->N % WIDE;
    char name[96];
    snprintf(name, sizeof name, "gemm.pack_b.%lld%s", (long long)g->b_sp, g->b_trans ? "t" : "");
    LLVMValueRef j0 = cg_mul(cg, q0, WIDE);
    LLVMValueRef src = cg_gep(cg, cg->t_f32, g->b, g->b_trans ? cg_add(cg, cg_mul(cg, j0, g->b_sp), p0)
                                                         : cg_add(cg, cg_mul(cg, p0, g->b_sp), j0));
    LLVMValueRef end = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, q1, cg_i64(cg, full), ""), q1,
                                       cg_i64(cg, full), "");
    LLVMValueRef n = LLVMBuildSub(cg->b, end, q0, "");
    call_pack(cg, g, name, pack_b_body, src, bp, n, cg_i64(cg, kc));
    if (!tail) return;
    CgIf f = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSGT, q1, cg_i64(cg, full), ""));
    snprintf(name, sizeof name, "gemm.pack_tail.%lld%s", (long long)g->b_sp, g->b_trans ? "t" : "");
    LLVMValueRef j = cg_i64(cg, full * WIDE);
    LLVMValueRef tsrc = cg_gep(cg, cg->t_f32, g->b, g->b_trans ? cg_add(cg, cg_mul(cg, j, g->b_sp), p0)
                                                          : cg_add(cg, cg_mul(cg, p0, g->b_sp), j));
    LLVMValueRef tdst = cg_gep(cg, cg->t_f32, bp, cg_mul(cg, cg_mul(cg, LLVMBuildSub(cg->b, cg_i64(cg, full), q0, ""), kc), WIDE));
    call_pack(cg, g, name, pack_tail_body, tsrc, tdst, cg_i64(cg, tail), cg_i64(cg, kc));
    cg_endif(cg, &f);
}

/* A(r, p) for r < mc, p < kc from src (A's row 0, term 0 of the block) into
 * slivers of MR rows: dst[(r / MR) * kc * MR + p * MR + r % MR]. */
static void pack_a_body(Cg *cg, const CgGemm *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef mc, LLVMValueRef kc) {
    LLVMValueRef from = cg_i64(cg, 0);
    if (g->a_si == 1) {
        /* A transposed (a weight gradient's x^T): a sliver's MR values of
         * one p are adjacent in A too, one vector each. */
        LLVMValueRef slivers = LLVMBuildUDiv(cg->b, mc, cg_i64(cg, MR), "");
        CgLoop ls = cg_loop_begin_n(cg, slivers);
        LLVMValueRef to = cg_gep(cg, cg->t_f32, dst, cg_mul(cg, LLVMBuildMul(cg->b, ls.i, kc, ""), MR));
        LLVMValueRef col = cg_gep(cg, cg->t_f32, src, cg_mul(cg, ls.i, MR));
        CgLoop lp = cg_loop_begin_n(cg, kc);
        cg_store_vec(cg, to, cg_mul(cg, lp.i, MR), cg_load_vec(cg, col, cg_mul(cg, lp.i, g->a_sp), MR));
        cg_loop_end(cg, &lp);
        cg_loop_end(cg, &ls);
        from = cg_mul(cg, slivers, MR);
    }
    /* Row by row (the rows after the whole slivers of a transposed A). */
    CgLoop lr = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, mc, from, ""));
    LLVMValueRef r = cg_add(cg, lr.i, from);
    LLVMValueRef row = cg_gep(cg, cg->t_f32, src, cg_mul(cg, r, g->a_si));
    LLVMValueRef sliver = LLVMBuildUDiv(cg->b, r, cg_i64(cg, MR), "");
    LLVMValueRef to = cg_gep(cg, cg->t_f32, dst,
                             cg_add(cg, cg_mul(cg, LLVMBuildMul(cg->b, sliver, kc, ""), MR),
                                    LLVMBuildURem(cg->b, r, cg_i64(cg, MR), "")));
    CgLoop lp = cg_loop_begin_n(cg, kc);
    cg_store(cg, cg->t_f32, to, cg_mul(cg, lp.i, MR), cg_load(cg, cg->t_f32, row, cg_mul(cg, lp.i, g->a_sp)));
    cg_loop_end(cg, &lp);
    cg_loop_end(cg, &lr);
}

static void pack_a(Cg *cg, const CgGemm *g, LLVMValueRef ap, LLVMValueRef i0, LLVMValueRef mc, LLVMValueRef p0,
                   int64_t kc) {
    char name[96];
    snprintf(name, sizeof name, "gemm.pack_a.%lld.%lld", (long long)g->a_si, (long long)g->a_sp);
    LLVMValueRef src = cg_gep(cg, cg->t_f32, g->a, cg_add(cg, cg_mul(cg, i0, g->a_si), cg_mul(cg, p0, g->a_sp)));
    call_pack(cg, g, name, pack_a_body, src, ap, mc, cg_i64(cg, kc));
}

/* A part's share of the product: rows [r0, r1), panels [q0, q1) (the last
 * one partial when N is not a multiple of WIDE). */
typedef struct Share {
    LLVMValueRef r0, r1, q0, q1;
} Share;

/* Whether B's block is packed into panels. A product of at most MC rows
 * (a weight gradient: as many rows as the layer has inputs) has one row
 * block, which reads each panel once, straight after its first tile brought
 * it in: packing would read and write all of B to save nothing (wordlm's
 * output layer: 20 MB of logits' gradients, 6% of a step). A transposed B
 * is packed always: its panels become rows. */
static bool packs_b(const CgGemm *g) { return g->b_trans || g->M > MC; }

/* Floats of a part's scratch for B's packed panels of kc terms (none when
 * B is read where it lies); A's block follows them. */
static int64_t b_panels_floats(const CgGemm *g, int64_t kc) {
    return packs_b(g) ? kc * ((g->N + WIDE - 1) / WIDE) * WIDE : 0;
}

/* Rows i0 .. i0 + mc, the share's panels, the kc terms packed in ap and bp
 * (or B read where it lies: packs_b). */
static void row_block(Cg *cg, const CgGemm *g, const Share *s, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef i0,
                      LLVMValueRef mc, LLVMValueRef p0, int64_t kc) {
    int64_t full = g->N / WIDE, tail = g->N % WIDE;
    LLVMValueRef first = LLVMBuildICmp(cg->b, LLVMIntEQ, p0, cg_i64(cg, 0), "");
    CgGemm view = {.M = MC, .N = WIDE, .P = kc, .a = ap, .a_si = 1, .a_sp = MR, .a_ss = kc * MR, .b_sp = WIDE,
                   .c_si = g->c_si};
    if (full + (tail > 0) > 2 && g->a_sp != 1) {
        pack_a(cg, g, ap, i0, mc, p0, kc);
    } else {
        /* One or two panels read each row of A once or twice: packing it
         * would cost more than it saves. Nor is a row-major A packed: a
         * tile's MR rows are MR streams that the caches follow, and packing
         * them into slivers scatters every value (4-9% of an imdb_lstm or
         * charlm step, measured against it). */
        view.a = cg_gep(cg, cg->t_f32, g->a, cg_add(cg, cg_mul(cg, i0, g->a_si), cg_mul(cg, p0, g->a_sp)));
        view.a_si = g->a_si;
        view.a_sp = g->a_sp;
        view.a_ss = 0;
    }
    LLVMValueRef end = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, s->q1, cg_i64(cg, full), ""), s->q1,
                                       cg_i64(cg, full), "");
    bool packed = packs_b(g);
    LLVMValueRef brow = packed ? NULL : cg_gep(cg, cg->t_f32, g->b, cg_mul(cg, p0, g->b_sp));
    if (!packed) view.b_sp = g->b_sp;
    CgLoop lq = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, end, s->q0, ""));
    view.b = packed ? cg_gep(cg, cg->t_f32, bp, cg_mul(cg, lq.i, kc * WIDE))
                    : cg_gep(cg, cg->t_f32, brow, cg_mul(cg, cg_add(cg, s->q0, lq.i), WIDE));
    view.c = cg_gep(cg, cg->t_f32, g->c, cg_add(cg, cg_mul(cg, i0, g->c_si), cg_mul(cg, cg_add(cg, s->q0, lq.i), WIDE)));
    column_block(cg, &view, cg_i64(cg, 0), mc, cg_i64(cg, 0), NV, LANES, WIDE, false, cg_i64(cg, kc), first);
    cg_loop_end(cg, &lq);
    if (!tail) return;
    CgIf f = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSGT, s->q1, cg_i64(cg, full), ""));
    /* Packed, the last panel is padded with zeros; in place, its loads are masked. */
    view.b = packed ? cg_gep(cg, cg->t_f32, bp, cg_mul(cg, LLVMBuildSub(cg->b, cg_i64(cg, full), s->q0, ""), kc * WIDE))
                    : cg_gep(cg, cg->t_f32, brow, cg_i64(cg, full * WIDE));
    view.c = cg_gep(cg, cg->t_f32, g->c, cg_add(cg, cg_mul(cg, i0, g->c_si), cg_i64(cg, full * WIDE)));
    column_block(cg, &view, cg_i64(cg, 0), mc, cg_i64(cg, 0), (int)((tail + LANES - 1) / LANES), LANES, (int)tail,
                 !packed, cg_i64(cg, kc), first);
    cg_endif(cg, &f);
}

/* The share's rows, terms p0 .. p0 + kc, its panels. */
static void k_block(Cg *cg, const CgGemm *g, const Share *s, LLVMValueRef ap, LLVMValueRef bp, LLVMValueRef p0,
                    int64_t kc) {
    if (packs_b(g)) pack_b(cg, g, bp, s->q0, s->q1, p0, kc);
    LLVMValueRef rows = LLVMBuildSub(cg->b, s->r1, s->r0, "");
    LLVMValueRef blocks = LLVMBuildUDiv(cg->b, cg_add(cg, rows, cg_i64(cg, MC - 1)), cg_i64(cg, MC), "");
    CgLoop li = cg_loop_begin_n(cg, blocks);
    LLVMValueRef i0 = cg_mad(cg, li.i, MC, s->r0);
    LLVMValueRef left = LLVMBuildSub(cg->b, s->r1, i0, "");
    LLVMValueRef mc = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, left, cg_i64(cg, MC), ""), left,
                                      cg_i64(cg, MC), "");
    row_block(cg, g, s, ap, bp, i0, mc, p0, kc);
    cg_loop_end(cg, &li);
}

/* The columns right of the column blocks of a few-rows product, from
 * column j, with the whole sum at once: vectors, the last one masked. */
static void right_columns(Cg *cg, const CgGemm *g, int64_t j, LLVMValueRef rows) {
    LLVMValueRef yes = LLVMConstInt(cg->t_i1, 1, false), kc = cg_i64(cg, g->P), zero = cg_i64(cg, 0);
    int64_t left = g->N - j;
    if (left <= 0) return;
    while (left > 0) {
        int64_t cols = left < (int64_t)NV_ROW * LANES ? left : (int64_t)NV_ROW * LANES;
        column_block(cg, g, zero, rows, cg_i64(cg, j), (int)((cols + LANES - 1) / LANES), LANES, (int)cols, true, kc, yes);
        j += cols;
        left -= cols;
    }
}

/* How a product splits over threads: by panels when it has enough of them
 * (each part then packs its own panels and all of A, which is the smaller
 * cost), else by slivers of rows (each part packs all of B). */
typedef struct Split {
    bool by_panels;
    int64_t units, max_parts, scratch_bytes;
} Split;

static Split plan_split(const Cg *cg, const CgGemm *g) {
    int64_t panels = (g->N + WIDE - 1) / WIDE, slivers = (g->M + MR - 1) / MR, kc = g->P < KC ? g->P : KC;
    Split s = {.by_panels = panels >= 8 || panels >= slivers};
    s.units = s.by_panels ? panels : slivers;
    double flops = 2.0 * (double)g->M * (double)g->N * (double)g->P;
    s.max_parts = cg_max_parts(cg, flops, CG_PART_FLOPS, s.units);
    s.scratch_bytes = (b_panels_floats(g, kc) + (int64_t)MC * kc) * 4;
    return s;
}

/* One part of a product of more than FEW_ROWS rows. */
static void emit_part(Cg *cg, const CgGemm *g, const CgPar *par, const Split *sp) {
    int64_t panels = (g->N + WIDE - 1) / WIDE;
    Share s = {cg_i64(cg, 0), cg_i64(cg, g->M), cg_i64(cg, 0), cg_i64(cg, panels)};
    if (sp->by_panels) {
        s.q0 = cg_part_start(cg, par, sp->units);
        s.q1 = cg_part_end(cg, par, sp->units);
    } else {
        s.r0 = cg_mul(cg, cg_part_start(cg, par, sp->units), MR);
        LLVMValueRef r1 = cg_mul(cg, cg_part_end(cg, par, sp->units), MR);
        s.r1 = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, r1, s.r1, ""), r1, s.r1, "");
    }
    int64_t kc = g->P < KC ? g->P : KC;
    LLVMValueRef bp = par->scratch, ap = cg_gep(cg, cg->t_f32, par->scratch, cg_i64(cg, b_panels_floats(g, kc)));
    int64_t full = g->P / kc, rest = g->P % kc;
    CgLoop lk = cg_loop_begin(cg, full);
    k_block(cg, g, &s, ap, bp, cg_mul(cg, lk.i, kc), kc);
    cg_loop_end(cg, &lk);
    if (rest) k_block(cg, g, &s, ap, bp, cg_i64(cg, full * kc), rest);
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
    CgSaved saved;
    bool made;
    LLVMValueRef fn = cg_helper_begin(cg, name, ty, &saved, &made);
    if (made) {
        unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
        LLVMAddAttributeAtIndex(fn, 3, LLVMCreateEnumAttribute(cg->ctx, noalias, 0)); /* C is its own buffer */
        CgGemm inner = *g;
        inner.a = LLVMGetParam(fn, 0);
        inner.b = LLVMGetParam(fn, 1);
        inner.c = LLVMGetParam(fn, 2);
        if (g->M <= FEW_ROWS && !g->b_trans) {
            /* One thread: a batch-1 step's product is a few microseconds. */
            LLVMValueRef yes = LLVMConstInt(cg->t_i1, 1, false), zero = cg_i64(cg, 0), rows = cg_i64(cg, g->M);
            int64_t wide = (int64_t)NV_ROW * LANES, n = g->N / wide;
            CgLoop lj = cg_loop_begin(cg, n);
            column_block(cg, &inner, zero, rows, cg_mul(cg, lj.i, wide), NV_ROW, LANES, (int)wide, false, cg_i64(cg, g->P),
                         yes);
            cg_loop_end(cg, &lj);
            right_columns(cg, &inner, n * wide, rows);
        } else {
            Split sp = plan_split(cg, g);
            CgPar par;
            char part[208];
            snprintf(part, sizeof part, "%s.part", name);
            LLVMValueRef vals[3] = {inner.a, inner.b, inner.c};
            cg_par_begin(cg, &par, part, vals, 3);
            inner.a = par.vals[0];
            inner.b = par.vals[1];
            inner.c = par.vals[2];
            emit_part(cg, &inner, &par, &sp);
            par.flops = 2.0 * (double)g->M * (double)g->N * (double)g->P;
            cg_par_end(cg, &par, sp.max_parts, sp.scratch_bytes);
        }
        cg_helper_end(cg, &saved);
    }
    LLVMValueRef args[3] = {g->a, g->b, g->c};
    LLVMBuildCall2(cg->b, ty, fn, args, 3, "");
}
