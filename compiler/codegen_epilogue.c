/* Epilogue fusion: a matrix product and the elementwise work that reads it,
 * as one kernel.
 *
 * The pattern is generic: z = x @ w, then elementwise nodes of z's shape
 * (adding a per-step input, a bias), then slices of z's last axis into equal
 * parts, then elementwise nodes of a part's shape (the gate arithmetic of any
 * cell: an LSTM's four gates, a GRU's three, a SimpleRNN's one part, a Dense
 * layer's bias and activation). Nothing here knows a cell.
 *
 * The kernel walks the parts' columns in vectors: for columns j .. j + lanes
 * of a part it keeps the product's columns q*W + j .. for every part q and a
 * few rows in registers while the inner dimension runs, then evaluates every
 * node of the group for those rows and columns: a slice is no copy, just the
 * part it names. The group's nodes need not be consecutive: nodes between
 * them that read none of them run first, and the kernel where the last
 * member stood. The tile's sums pass through a small stack buffer (one tile:
 * 4 KB at most, in the first-level cache) so that the elementwise code is
 * emitted once per tile, not once per row of it. A node's value is stored
 * only where something outside the group reads it; in a recurrent step the
 * pre-activations and gates never reach memory.
 *
 * Precision: the product's sums are codegen_gemm.c's (one FMA per term, in
 * order), every elementwise node is its own rule (codegen_ops.c) on vectors:
 * the results equal the unfused code's bit for bit. */
#define SEQC_CODEGEN_INTERNAL
#include <stdlib.h>
#include <string.h>

#include "codegen.h"

#define LANES 16
/* Accumulators of a tile (rows x parts x vectors) the 32 registers hold,
 * with room for the loaded vectors of B; vectors of B per row of a tile. */
#define MAX_ACC 24
#define MAX_VECS 4
#define MAX_PARTS 8
#define MAX_ROWS 8
/* A panel of B up to this size is copied to the stack so that its rows, a
 * power of two apart in w, do not share cache sets (codegen_gemm.c packs for
 * the same reason). */
#define MAX_PANEL_BYTES (256 * 1024)
/* Epilogues of at most this many blocks of columns split over threads by
 * rows (emit below). */
#define ROW_SPLIT_BLOCKS 8
/* The group ends after this many nodes in a row that do not join it. */
#define MAX_OTHERS 16

typedef enum {
    M_PRODUCT,      /* the matmul */
    M_WIDE,         /* elementwise, the product's shape */
    M_SLICE,        /* part `start / W` of a wide member */
    M_OUT_SLICE,    /* columns [start, start + W) of a value outside the group */
    M_NARROW,       /* elementwise, a part's shape */
} Kind;

/* How an operand from outside the group is read at (row m, column c). */
typedef enum { F_FULL, F_ROW, F_SCALAR, F_EXAMPLE } Form;

typedef struct CgEpilogue {
    int n;                  /* members, in graph order; [0] the product */
    const Node **node;
    Kind *kind;
    bool *store;            /* read outside the group */
    int span;               /* positions of g->nodes from the product to the last member */
    Type wide, narrow;
    int64_t N, K, W, Q;     /* product columns, inner size, part width, parts (N / W) */
    int64_t rows;           /* rows of the product per example (the leading axes) */
    const Node *loss;       /* an SCE over a member whose row pass may join (loss_of_rows) */
} CgEpilogue;

static void group_free(CgEpilogue *G) {
    free(G->node);
    free(G->kind);
    free(G->store);
}

static int member(const CgEpilogue *G, const Node *x) {
    for (int k = 0; k < G->n; k++)
        if (G->node[k] == x) return k;
    return -1;
}

/* An f32 value from outside the group, read at every element of type t: the
 * same shape, a vector along the last axis, one number, or one number per
 * example (a mask's step). */
static bool outside_form(const Node *x, const Type *t, Form *form) {
    if (x->type.dtype != DT_F32) return false;
    if (type_equal(&x->type, t)) *form = F_FULL;
    else if (type_elements(&x->type) == 1) *form = x->type.batched ? F_EXAMPLE : F_SCALAR;
    else if (!x->type.batched && x->type.rank == 1 && x->type.dims[0] == t->dims[t->rank - 1]) *form = F_ROW;
    else return false;
    return true;
}

/* Can elementwise node n join as `kind` (M_WIDE or M_NARROW)? */
static bool map_joins(const CgEpilogue *G, const Node *n, Kind kind) {
    const Node *ops[4];
    int nops = cg_map_operands(n, ops);
    const Type *t = kind == M_WIDE ? &G->wide : &G->narrow;
    if (!nops || !type_equal(&n->type, t)) return false;
    for (int k = 0; k < nops; k++) {
        int m = member(G, ops[k]);
        Form f;
        if (m < 0 ? !outside_form(ops[k], t, &f)
                  : (kind == M_WIDE) != (G->kind[m] == M_PRODUCT || G->kind[m] == M_WIDE))
            return false;
    }
    return true;
}

/* Can slice n join? Sets the part width on the first one. */
static bool slice_joins(CgEpilogue *G, const Node *n, Kind *kind) {
    if (n->op != OP_SLICE || !cg_same_rows(&n->type, &G->wide)) return false;
    int64_t len = n->slice.len, start = n->slice.start;
    if (len <= 0 || len >= G->N || G->N % len != 0 || (G->W && G->W != len)) return false;
    const Node *x = n->in[0];
    int m = member(G, x);
    if (m >= 0) {
        if ((G->kind[m] != M_PRODUCT && G->kind[m] != M_WIDE) || start % len != 0) return false;
        *kind = M_SLICE;
    } else {
        if (!cg_same_rows(&x->type, &G->wide) || start < 0 || start + len > x->type.dims[x->type.rank - 1]) return false;
        *kind = M_OUT_SLICE;
    }
    G->W = len;
    G->narrow = G->wide;
    G->narrow.dims[G->narrow.rank - 1] = len;
    return true;
}

static bool reads_member(const CgEpilogue *G, const Node *n) {
    for (int a = 0; a < n->nin; a++)
        if (member(G, n->in[a]) >= 0) return true;
    return false;
}

/* An SCE from the logits a wide member makes, whose row pass (with the
 * gradient, cg_loss_writes_grad) can run in this kernel, each row tile's
 * rows while the tile has them in cache: its targets are there before the
 * product is. Nothing between reads or writes the gradient's storage: a
 * model graph's nodes each have their own, and where the gradient goes
 * over the logits (codegen.c, logits_alias), nothing else that runs reads
 * those. */
static const Node *loss_of_rows(const Graph *g, const CgEpilogue *G) {
    const Node *product = G->node[0];
    if (G->Q != 1 || g->parent) return NULL;
    for (int k = product->id + 1; k < g->nodes.len; k++) {
        const Node *n = g->nodes.items[k];
        if (n->op == OP_SCE && cg_loss_writes_grad(n) && member(G, n->in[0]) >= 0 &&
            type_equal(&n->in[0]->type, &G->wide) && n->in[1]->id < product->id)
            return n;
    }
    return NULL;
}

static bool find_group(const Graph *g, int i, const bool *taken, CgEpilogue *G) {
    memset(G, 0, sizeof *G);
    const Node *mm = g->nodes.items[i];
    if (mm->op != OP_MATMUL || mm->type.dtype != DT_F32 || mm->type.rank < 1) return false;
    const Node *x = mm->in[0], *w = mm->in[1];
    if (w->type.batched || w->type.rank != 2 || w->type.dtype != DT_F32 || x->type.dtype != DT_F32 ||
        x->type.batched != mm->type.batched)
        return false;
    G->wide = mm->type;
    G->K = w->type.dims[0];
    G->N = w->type.dims[1];
    if (G->wide.dims[G->wide.rank - 1] != G->N || type_elements(&x->type) / G->K != type_elements(&mm->type) / G->N)
        return false;
    G->rows = type_elements(&mm->type) / G->N;
    /* The kernel keeps a block of B's columns of the whole inner dimension
     * in a panel: with a longer one, the blocked product and a chain after
     * it are faster (a backward step's dh = dz U^T, K = 4 units). */
    if (G->K * MAX_VECS * LANES * 4 > MAX_PANEL_BYTES) return false;
    int cap = g->nodes.len - i;
    G->node = malloc(sizeof *G->node * (size_t)cap);
    G->kind = malloc(sizeof *G->kind * (size_t)cap);
    G->store = malloc(sizeof *G->store * (size_t)cap);
    if (!G->node || !G->kind || !G->store) return false;
    G->node[0] = mm;
    G->kind[0] = M_PRODUCT;
    G->n = 1;
    G->span = 1;
    /* Nodes that read no member (a slice of a param, work on another value)
     * run before the kernel, which runs where its last member stood. */
    int others = 0;
    for (int j = i + 1; j < g->nodes.len && j != g->nforward && others < MAX_OTHERS; j++) {
        const Node *n = g->nodes.items[j];
        if (!cg_has_code(n->op)) continue;
        /* Another group's node; or a sibling product, which makes a better
         * group of its own (x @ W + h @ U: the recurrent one is later). */
        if (taken[j] || (n->op == OP_MATMUL && type_equal(&n->type, &G->wide))) break;
        Kind kind;
        if (map_joins(G, n, M_WIDE)) kind = M_WIDE;
        else if (slice_joins(G, n, &kind)) {
        } else if (G->W && map_joins(G, n, M_NARROW)) kind = M_NARROW;
        else if (!reads_member(G, n)) {
            others++;
            continue;
        } else break;
        G->node[G->n] = n;
        G->kind[G->n++] = kind;
        G->span = j - i + 1;
        others = 0;
    }
    if (!G->W) {
        G->W = G->N;
        G->narrow = G->wide;
    }
    G->Q = G->N / G->W;
    /* A product narrower than half a vector would run its epilogue on
     * scalars, row by row: the product and then a chain over all its
     * elements are faster (a Dense layer of one unit). A cell's gates join
     * however narrow: they are not stored at all. */
    if (G->n < 2 || G->Q > MAX_PARTS || (G->Q == 1 && G->W < LANES / 2)) return false;
    for (int k = 0; k < G->n; k++) G->store[k] = cg_read_outside(g, G->node[k], G->node, G->n);
    G->loss = loss_of_rows(g, G);
    return true;
}

CgEpilogue *cg_epilogue_find(const Graph *g, int i, bool *taken, int *last) {
    CgEpilogue *G = malloc(sizeof *G);
    if (!G) return NULL;
    if (!find_group(g, i, taken, G)) {
        cg_epilogue_free(G);
        return NULL;
    }
    *last = i + G->span - 1;
    for (int j = i; j <= *last; j++)
        if (member(G, g->nodes.items[j]) >= 0) taken[j] = true;
    return G;
}

void cg_epilogue_unstored(const CgEpilogue *e, bool *unstored) {
    for (int k = 0; k < e->n; k++)
        if (!e->store[k]) unstored[e->node[k]->id] = true;
}

void cg_epilogue_free(CgEpilogue *e) {
    if (!e) return;
    group_free(e);
    free(e);
}

/* ---- emission ------------------------------------------------------------------ */

/* An outside operand at row m, columns c .. c + lanes of a value of type t. */
static LLVMValueRef load_outside(Cg *cg, const CgEpilogue *G, const Node *x, const Type *t, LLVMValueRef m, LLVMValueRef c,
                                 int lanes) {
    Form f;
    outside_form(x, t, &f);
    LLVMValueRef base = cg_base(cg, x);
    int64_t L = t->dims[t->rank - 1];
    switch (f) {
    case F_FULL: return cg_load_vec(cg, base, cg_mad(cg, m, L, c), lanes);
    case F_ROW: return cg_load_vec(cg, base, c, lanes);
    case F_EXAMPLE: {
        LLVMValueRef ex = G->rows == 1 ? m : LLVMBuildUDiv(cg->b, m, cg_i64(cg, G->rows), "");
        return cg_broadcast(cg, cg_load(cg, cg->t_f32, base, ex), lanes);
    }
    default: return cg_broadcast(cg, cg_load(cg, cg->t_f32, base, cg_i64(cg, 0)), lanes);
    }
}

/* Every member at row m, part columns j0 .. j0 + lanes; the product's parts
 * are in sums[q]. val[k * MAX_PARTS + q] holds member k's value in part q
 * (narrow members: q = 0). */
static void evaluate(Cg *cg, const CgEpilogue *G, LLVMValueRef m, LLVMValueRef j0, int lanes, LLVMValueRef *sums,
                     LLVMValueRef *val) {
    int saved = cg->lanes;
    cg->lanes = lanes;
    for (int k = 0; k < G->n; k++) {
        const Node *n = G->node[k];
        bool wide = G->kind[k] == M_PRODUCT || G->kind[k] == M_WIDE;
        int nparts = wide ? (int)G->Q : 1;
        for (int q = 0; q < nparts; q++) {
            LLVMValueRef col = wide ? cg_add(cg, j0, cg_i64(cg, q * G->W)) : j0, v;
            switch (G->kind[k]) {
            case M_PRODUCT: v = sums[q]; break;
            case M_SLICE: v = val[member(G, n->in[0]) * MAX_PARTS + n->slice.start / G->W]; break;
            case M_OUT_SLICE: {
                const Node *x = n->in[0];
                int64_t L = x->type.dims[x->type.rank - 1];
                v = cg_load_vec(cg, cg_base(cg, x), cg_mad(cg, m, L, cg_add(cg, j0, cg_i64(cg, n->slice.start))), lanes);
                break;
            }
            default: {
                const Node *ops[4];
                LLVMValueRef in[4];
                int nops = cg_map_operands(n, ops);
                for (int a = 0; a < nops; a++) {
                    int mi = member(G, ops[a]);
                    in[a] = mi >= 0 ? val[mi * MAX_PARTS + (wide ? q : 0)]
                                    : load_outside(cg, G, ops[a], wide ? &G->wide : &G->narrow, m, col, lanes);
                }
                v = cg_map_value(cg, n, in);
            }
            }
            val[k * MAX_PARTS + q] = v;
            if (G->store[k]) cg_store_vec(cg, cg_base(cg, n), cg_mad(cg, m, wide ? G->N : G->W, col), v);
        }
    }
    cg->lanes = saved;
}

/* Rows m0 .. m0 + mr at part columns j0 .. j0 + nv * lanes: the product's
 * sums over the inner dimension, then every member row by row, vector by
 * vector. B(p, q*W + j0 + c) is read at b[p * b_sp + q * b_sq + bj0 + c]
 * (bj0 is 0 in a panel). */
static void tile_at(Cg *cg, const CgEpilogue *G, LLVMValueRef m0, int mr, LLVMValueRef j0, LLVMValueRef bj0, int lanes,
                    int nv, LLVMValueRef b, int64_t b_sp, int64_t b_sq, LLVMValueRef buf, LLVMValueRef *val) {
    LLVMTypeRef vt = cg_vec_type(cg->t_f32, lanes);
    LLVMValueRef acc[MAX_ROWS][MAX_ACC], xb = cg_base(cg, G->node[0]->in[0]);
    int Q = (int)G->Q, QV = Q * nv;
    for (int r = 0; r < mr; r++)
        for (int k = 0; k < QV; k++) acc[r][k] = cg_local(cg, vt, LLVMConstNull(vt));
    CgLoop lp = cg_loop_begin(cg, G->K);
    LLVMValueRef bv[MAX_ACC];
    for (int q = 0; q < Q; q++)
        for (int v = 0; v < nv; v++)
            bv[q * nv + v] = cg_load_vec(cg, b, cg_add(cg, cg_mad(cg, lp.i, b_sp, bj0), cg_i64(cg, q * b_sq + v * lanes)),
                                         lanes);
    for (int r = 0; r < mr; r++) {
        LLVMValueRef row = cg_add(cg, m0, cg_i64(cg, r));
        LLVMValueRef a = cg_broadcast(cg, cg_load(cg, cg->t_f32, xb, cg_mad(cg, row, G->K, lp.i)), lanes);
        for (int k = 0; k < QV; k++) cg_set(cg, acc[r][k], cg_fma(cg, a, bv[k], cg_get(cg, vt, acc[r][k])));
    }
    cg_loop_end(cg, &lp);
    for (int r = 0; r < mr; r++)
        for (int k = 0; k < QV; k++)
            cg_store_vec(cg, buf, cg_i64(cg, ((int64_t)r * QV + k) * lanes), cg_get(cg, vt, acc[r][k]));
    CgLoop lr = cg_loop_begin(cg, mr);
    for (int v = 0; v < nv; v++) {
        LLVMValueRef sums[MAX_PARTS];
        for (int q = 0; q < Q; q++)
            sums[q] = cg_load_vec(cg, buf, cg_mul(cg, cg_add(cg, cg_mul(cg, lr.i, QV), cg_i64(cg, q * nv + v)), lanes),
                                  lanes);
        evaluate(cg, G, cg_add(cg, m0, lr.i), cg_add(cg, j0, cg_i64(cg, v * lanes)), lanes, sums, val);
    }
    cg_loop_end(cg, &lr);
}

/* Rows [rows[0], rows[1]) for part columns j0 .. j0 + nv * lanes. */
static void columns(Cg *cg, const CgEpilogue *G, LLVMValueRef j0, int lanes, int nv, LLVMValueRef buf, LLVMValueRef panel,
                    LLVMValueRef *val, const LLVMValueRef rows[2]) {
    LLVMValueRef b = cg_base(cg, G->node[0]->in[1]);
    int64_t b_sp = G->N, b_sq = G->W, Q = G->Q, width = (int64_t)nv * lanes;
    LLVMValueRef bj0 = j0;
    if (panel) {
        /* The columns this block reads, as rows of Q * width floats. */
        CgLoop lp = cg_loop_begin(cg, G->K);
        for (int64_t q = 0; q < Q; q++)
            for (int v = 0; v < nv; v++) {
                LLVMValueRef src = cg_add(cg, cg_mad(cg, lp.i, b_sp, j0), cg_i64(cg, q * b_sq + v * lanes));
                cg_store_vec(cg, panel, cg_mad(cg, lp.i, Q * width, cg_i64(cg, q * width + v * lanes)),
                             cg_load_vec(cg, b, src, lanes));
            }
        cg_loop_end(cg, &lp);
        b = panel;
        b_sp = Q * width;
        b_sq = width;
        bj0 = cg_i64(cg, 0);
    }
    int mr = MAX_ACC / (int)(Q * nv);
    if (mr > MAX_ROWS) mr = MAX_ROWS;
    if (mr < 1) mr = 1;
    LLVMValueRef n = LLVMBuildSub(cg->b, rows[1], rows[0], "");
    LLVMValueRef blocks = LLVMBuildUDiv(cg->b, n, cg_i64(cg, mr), "");
    CgLoop lm = cg_loop_begin_n(cg, blocks);
    tile_at(cg, G, cg_mad(cg, lm.i, mr, rows[0]), mr, j0, bj0, lanes, nv, b, b_sp, b_sq, buf, val);
    cg_loop_end(cg, &lm);
    LLVMValueRef done = cg_add(cg, rows[0], cg_mul(cg, blocks, mr));
    lm = cg_loop_begin_n(cg, LLVMBuildURem(cg->b, n, cg_i64(cg, mr), ""));
    tile_at(cg, G, cg_add(cg, lm.i, done), 1, j0, bj0, lanes, nv, b, b_sp, b_sq, buf, val);
    cg_loop_end(cg, &lm);
}

/* Every column of the mr rows from m0, in the blocks `columns` uses, B read
 * where it lies. */
static void row_tile(Cg *cg, const CgEpilogue *G, LLVMValueRef m0, int mr, int nv, LLVMValueRef buf, LLVMValueRef *val) {
    LLVMValueRef b = cg_base(cg, G->node[0]->in[1]);
    int64_t width = (int64_t)nv * LANES, wide = G->W / width, j = wide * width;
    if (wide > 0) {
        CgLoop lj = cg_loop_begin(cg, wide);
        LLVMValueRef j0 = cg_mul(cg, lj.i, width);
        tile_at(cg, G, m0, mr, j0, j0, LANES, nv, b, G->N, G->W, buf, val);
        cg_loop_end(cg, &lj);
    }
    for (; G->W - j >= LANES; j += LANES)
        tile_at(cg, G, m0, mr, cg_i64(cg, j), cg_i64(cg, j), LANES, 1, b, G->N, G->W, buf, val);
    if (G->W - j >= LANES / 2) {
        tile_at(cg, G, m0, mr, cg_i64(cg, j), cg_i64(cg, j), LANES / 2, 1, b, G->N, G->W, buf, val);
        j += LANES / 2;
    }
    if (j < G->W) {
        CgLoop lj = cg_loop_begin(cg, G->W - j);
        LLVMValueRef jj = cg_add(cg, lj.i, cg_i64(cg, j));
        tile_at(cg, G, m0, mr, jj, jj, 1, 1, b, G->N, G->W, buf, val);
        cg_loop_end(cg, &lj);
    }
}

/* A wide layer (a dense output over thousands of classes) row tile by row
 * tile, each across all its columns, the tiles split over threads: C's
 * rows are written front to back, where column blocks down all the rows
 * would leave each row a few lines at a time, pages apart. B is read where
 * it lies, small enough to stay in the second-level cache. */
static bool by_rows(const CgEpilogue *G, int64_t M) {
    return G->Q == 1 && G->W * 4 >= 4096 && G->K * G->N * 4 <= 512 * 1024 && M >= 4 * MAX_ROWS;
}

static void emit_by_rows(Cg *cg, const CgEpilogue *G, CgPar *par, int nv, LLVMValueRef buf, LLVMValueRef *val) {
    int mr = MAX_ACC / (int)(G->Q * nv);
    if (mr > MAX_ROWS) mr = MAX_ROWS;
    int64_t M = (G->wide.batched ? cg->batch : 1) * G->rows, tiles = M / mr;
    LLVMValueRef from = cg_part_start(cg, par, tiles);
    CgLoop lm = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, cg_part_end(cg, par, tiles), from, ""));
    row_tile(cg, G, cg_mul(cg, cg_add(cg, from, lm.i), mr), mr, nv, buf, val);
    cg_loop_end(cg, &lm);
    if (M % mr == 0) return;
    LLVMValueRef last = LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildAdd(cg->b, par->part, cg_i64(cg, 1), ""),
                                      par->nparts, "");
    CgIf f = cg_if(cg, last);
    CgLoop lr = cg_loop_begin(cg, M % mr);
    row_tile(cg, G, cg_add(cg, lr.i, cg_i64(cg, tiles * mr)), 1, nv, buf, val);
    cg_loop_end(cg, &lr);
    cg_endif(cg, &f);
}

/* By rows, with an SCE's row pass (cg_sce_rows) after each row tile, over
 * the tile's rows, which are still in the second-level cache: the loss's
 * own kernel would read them back from memory (wordlm: 20 MB of logits).
 * The parts take whole blocks of CG_SCE_BLOCK rows, as that kernel's do,
 * and each block's rows in order: its bias-gradient sums are the same. */
static void emit_by_blocks(Cg *cg, const CgEpilogue *G, CgPar *par, int nv, LLVMValueRef buf, LLVMValueRef *val) {
    int mr = MAX_ACC / (int)(G->Q * nv);
    if (mr > MAX_ROWS) mr = MAX_ROWS;
    int64_t M = (G->wide.batched ? cg->batch : 1) * G->rows, blocks = (M + CG_SCE_BLOCK - 1) / CG_SCE_BLOCK;
    LLVMValueRef from = cg_part_start(cg, par, blocks);
    CgLoop lb = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, cg_part_end(cg, par, blocks), from, ""));
    LLVMValueRef block = cg_add(cg, from, lb.i), colsum = cg_sce_block_begin(cg, G->loss, block);
    LLVMValueRef r0 = cg_mul(cg, block, CG_SCE_BLOCK), r1 = cg_add(cg, r0, cg_i64(cg, CG_SCE_BLOCK));
    r1 = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, r1, cg_i64(cg, M), ""), r1, cg_i64(cg, M), "");
    LLVMValueRef n = LLVMBuildSub(cg->b, r1, r0, ""), tiles = LLVMBuildUDiv(cg->b, n, cg_i64(cg, mr), "");
    CgLoop lt = cg_loop_begin_n(cg, tiles);
    LLVMValueRef m0 = cg_mad(cg, lt.i, mr, r0);
    row_tile(cg, G, m0, mr, nv, buf, val);
    cg_sce_rows(cg, G->loss, m0, cg_add(cg, m0, cg_i64(cg, mr)), colsum);
    cg_loop_end(cg, &lt);
    CgLoop lr = cg_loop_begin_n(cg, LLVMBuildURem(cg->b, n, cg_i64(cg, mr), ""));
    LLVMValueRef m = cg_add(cg, cg_mad(cg, tiles, mr, r0), lr.i);
    row_tile(cg, G, m, 1, nv, buf, val);
    cg_sce_rows(cg, G->loss, m, cg_add(cg, m, cg_i64(cg, 1)), colsum);
    cg_loop_end(cg, &lr);
    cg_loop_end(cg, &lb);
}

/* Part columns in blocks of 16 lanes, then 8, then one at a time. The
 * blocks of 16 are split over threads; the columns after them go to the
 * last part. (A wide layer goes by rows: emit_by_rows.) */
int cg_emit_epilogue(Cg *cg, const CgEpilogue *e) {
    const CgEpilogue G = *e;
    LLVMValueRef *val = calloc((size_t)G.n * MAX_PARTS, sizeof *val);
    if (!val) {
        cg_fail(cg, G.node[0], "out of memory");
        return 0;
    }
    /* Blocks of nv vectors of each part: with few parts, more columns per
     * part, so that the tile keeps enough sums going. */
    int nv = (int)(MAX_VECS / G.Q) > 0 ? (int)(MAX_VECS / G.Q) : 1;
    while (nv > 1 && G.W < (int64_t)nv * LANES) nv /= 2;
    int64_t M = (G.wide.batched ? cg->batch : 1) * G.rows, width = (int64_t)nv * LANES, wide = G.W / width;
    double flops = 2.0 * (double)M * (double)G.N * (double)G.K;
    bool rows_first = by_rows(&G, M);
    /* The loss's row pass joins a kernel by rows; its blocks of 64 rows are
     * tiles of 8 (3 vectors a row), a whole number of them. */
    bool with_loss = rows_first && G.loss && cg->nsce_rows_done < (int)(sizeof cg->sce_rows_done / sizeof *cg->sce_rows_done);
    if (with_loss) nv = MAX_ACC / MAX_ROWS;
    /* Few blocks of columns to share (a backward step's dh = dz U^T, 64
     * units wide, is one; an input projection of 192 is three, which two
     * threads split 1:2; a 128-unit LSTM's gates are eight): the parts take
     * rows instead, each every column; a row's values do not depend on the
     * rows beside it. A thread then makes the rows of h and c that it reads
     * again at the next step, where by columns each step's product read
     * the other thread's half of h: charlm's step 46 -> 41 ms. Each part
     * packs every panel, small next to its rows' products at these widths;
     * at lstm_big's 32 blocks, by rows was 2-3% slower. */
    bool split_rows = !rows_first && wide <= ROW_SPLIT_BLOCKS && M >= 4 * MAX_ROWS;
    int64_t max_parts = cg_max_parts(cg, flops, CG_PART_FLOPS,
                                     with_loss ? (M + CG_SCE_BLOCK - 1) / CG_SCE_BLOCK
                                               : rows_first || split_rows ? M / MAX_ROWS : wide);
    CgPar par;
    cg_par_begin_node(cg, &par, NULL, 0);
    LLVMValueRef buf = cg_stack_array(cg, cg->t_f32, (int64_t)MAX_ACC * LANES);
    if (rows_first) {
        if (with_loss) {
            emit_by_blocks(cg, &G, &par, nv, buf, val);
            cg->sce_rows_done[cg->nsce_rows_done++] = G.loss;
            cg->stats.loss_rows++;
        } else {
            emit_by_rows(cg, &G, &par, nv, buf, val);
        }
        /* The products' count (rt_products_count) leaves out a kernel
         * that is mostly the loss's exps. */
        par.flops = with_loss ? 0 : flops;
        cg_par_end(cg, &par, max_parts, 0);
        free(val);
        return G.n;
    }
    /* A panel pays for its copy when several row tiles read it: not for the
     * one row of a batch-1 step, which reads B once. */
    bool pack = G.K * G.Q * width * 4 <= MAX_PANEL_BYTES && M > 2 * MAX_ROWS;
    LLVMValueRef panel = pack ? cg_stack_array(cg, cg->t_f32, G.K * G.Q * width) : NULL;
    int64_t j = 0;
    LLVMValueRef rows[2] = {cg_i64(cg, 0), cg_i64(cg, M)};
    if (split_rows) {
        rows[0] = cg_part_start(cg, &par, M);
        rows[1] = cg_part_end(cg, &par, M);
    }
    if (wide > 0) {
        LLVMValueRef from = split_rows ? cg_i64(cg, 0) : cg_part_start(cg, &par, wide);
        LLVMValueRef to = split_rows ? cg_i64(cg, wide) : cg_part_end(cg, &par, wide);
        CgLoop lj = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, to, from, ""));
        columns(cg, &G, cg_mul(cg, cg_add(cg, from, lj.i), width), LANES, nv, buf, panel, val, rows);
        cg_loop_end(cg, &lj);
        j = wide * width;
    }
    if (j < G.W) {
        /* Split by columns, the last part takes these; by rows, every part its own rows of them. */
        LLVMValueRef last = split_rows ? LLVMConstInt(cg->t_i1, 1, false)
                                       : LLVMBuildICmp(cg->b, LLVMIntEQ, LLVMBuildAdd(cg->b, par.part, cg_i64(cg, 1), ""),
                                                       par.nparts, "");
        CgIf f = cg_if(cg, last);
        if (G.W - j >= LANES) {
            CgLoop lj = cg_loop_begin(cg, (G.W - j) / LANES);
            columns(cg, &G, cg_mad(cg, lj.i, LANES, cg_i64(cg, j)), LANES, 1, buf, panel, val, rows);
            cg_loop_end(cg, &lj);
            j += (G.W - j) / LANES * LANES;
        }
        if (G.W - j >= LANES / 2) {
            columns(cg, &G, cg_i64(cg, j), LANES / 2, 1, buf, panel, val, rows);
            j += LANES / 2;
        }
        if (j < G.W) {
            CgLoop lj = cg_loop_begin(cg, G.W - j);
            columns(cg, &G, cg_add(cg, lj.i, cg_i64(cg, j)), 1, 1, buf, NULL, val, rows);
            cg_loop_end(cg, &lj);
        }
        cg_endif(cg, &f);
    }
    par.flops = flops;
    cg_par_end(cg, &par, max_parts, 0);
    free(val);
    return G.n;
}
