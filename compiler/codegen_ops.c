/* The lowering of every op but SCAN (codegen.c): one function per op, in the
 * order of ops.def, each the loop nest of interp.c's function of the same
 * name with every size a constant. Each starts with the shapes it reads.
 *
 * Precision (codegen.h): one IEEE operation on f32 inputs is done in f32 (its
 * result is the rounded exact value, as the interpreter's double result
 * rounded to float); transcendentals call libm's f32 functions; sums
 * accumulate in double; formulas that cancel (activation and softmax
 * gradients, batchnorm, the losses) run in double and round once. */
#define SEQC_CODEGEN_INTERNAL
#include "codegen.h"

#include <stdlib.h>
#include <string.h>

#include "dropout.h"

static int64_t elems(const Node *n) { return type_elements(&n->type); }
static int64_t last_dim(const Node *n) { return n->type.dims[n->type.rank - 1]; }
static int64_t nex(const Cg *cg, const Node *n) { return n->type.batched ? cg->batch : 1; }

/* The examples a scatter into a declared type reads: the batch if any input is batched. */
static int64_t nex_any(const Cg *cg, const Node *n) {
    for (int k = 0; k < n->nin; k++)
        if (n->in[k]->type.batched) return cg->batch;
    return 1;
}

static LLVMValueRef fadd(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(cg->b, a, b, ""); }
static LLVMValueRef fsub(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(cg->b, a, b, ""); }
static LLVMValueRef fmul(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(cg->b, a, b, ""); }
static LLVMValueRef fdiv(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(cg->b, a, b, ""); }
static LLVMValueRef fcmp(Cg *cg, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
    return LLVMBuildFCmp(cg->b, p, a, b, "");
}
static LLVMValueRef sel(Cg *cg, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(cg->b, c, a, b, ""); }
static LLVMValueRef to_f64(Cg *cg, LLVMValueRef f) { return LLVMBuildFPExt(cg->b, f, cg_lanes_of(cg, cg->t_f64), ""); }
static LLVMValueRef to_f32(Cg *cg, LLVMValueRef d) { return LLVMBuildFPTrunc(cg->b, d, cg_lanes_of(cg, cg->t_f32), ""); }

/* acc += v, acc a local of type t */
static void accumulate(Cg *cg, LLVMTypeRef t, LLVMValueRef acc, LLVMValueRef v) {
    cg_set(cg, acc, fadd(cg, cg_get(cg, t, acc), v));
}

/* One term of a matrix product: acc = fma(a, b, acc) in f32, the rule of
 * codegen_gemm.c for the layouts it does not take. */
static void mac(Cg *cg, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
    cg_set(cg, acc, cg_fma(cg, a, b, cg_get(cg, cg->t_f32, acc)));
}

/* An id stored in an i32 (or f32) value, as i64; traps outside [0, bound). */
static LLVMValueRef checked_id(Cg *cg, const Node *ids, LLVMValueRef p, LLVMValueRef idx, int64_t bound) {
    LLVMValueRef id;
    if (ids->type.dtype == DT_I32) {
        id = LLVMBuildSExt(cg->b, cg_load(cg, cg->t_i32, p, idx), cg->t_i64, "id");
        cg_trap_if(cg, LLVMBuildICmp(cg->b, LLVMIntUGE, id, cg_i64(cg, bound), ""));
    } else {
        LLVMValueRef v = cg_load(cg, cg->t_f32, p, idx);
        /* the interpreter's class_id: a whole number in [0, bound) */
        LLVMValueRef ok = LLVMBuildAnd(cg->b, fcmp(cg, LLVMRealOGE, v, cg_f32(cg, 0)),
                                       fcmp(cg, LLVMRealOLT, v, cg_f32(cg, (double)bound)), "");
        cg_trap_if(cg, LLVMBuildNot(cg->b, ok, ""));
        id = LLVMBuildFPToSI(cg->b, v, cg->t_i64, "id");
        cg_trap_if(cg, fcmp(cg, LLVMRealUNE, LLVMBuildSIToFP(cg->b, id, cg->t_f32, ""), v));
    }
    return id;
}

/* Strides of `small` read at every element of `big` (numpy broadcasting,
 * shapes right-aligned, 0 along stretched or missing axes). */
static bool bcast_strides(const Type *big, const Type *small, int64_t stride[SEQC_MAX_RANK]) {
    if (small->rank > big->rank) return false;
    int64_t s = 1, own[SEQC_MAX_RANK];
    for (int k = small->rank - 1; k >= 0; k--) {
        own[k] = s;
        s *= small->dims[k];
    }
    for (int k = 0; k < big->rank; k++) {
        int j = k - (big->rank - small->rank);
        if (j < 0 || small->dims[j] == 1) {
            stride[k] = 0;
            continue;
        }
        if (small->dims[j] != big->dims[k]) return false;
        stride[k] = own[j];
    }
    return true;
}

/* ---- the elementwise skeleton ------------------------------------------------- */

typedef LLVMValueRef (*MapFn)(Cg *cg, const Node *n, LLVMValueRef *v);

/* n = f(ops...) at every element of n, operands broadcast to n's shape and
 * loaded as f32. */
static void emit_map(Cg *cg, const Node *n, int nops, const Node *const *ops, MapFn f) {
    int64_t stride[4][SEQC_MAX_RANK];
    int r = n->type.rank;
    for (int k = 0; k < nops; k++) {
        if (!bcast_strides(&n->type, &ops[k]->type, stride[k])) {
            cg_fail(cg, n, "input %d does not broadcast to the result", k);
            return;
        }
        if (ops[k]->type.batched && !n->type.batched) {
            cg_fail(cg, n, "input %d is batched but the result is not", k);
            return;
        }
    }
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef o = cg_ex(cg, n, lb.i), p[4];
    for (int k = 0; k < nops; k++) p[k] = cg_ex(cg, ops[k], lb.i);
    CgLoop l[SEQC_MAX_RANK];
    for (int d = 0; d < r; d++) l[d] = cg_loop_begin(cg, n->type.dims[d]);
    LLVMValueRef oi = cg_i64(cg, 0), v[4];
    for (int d = 0; d < r; d++) oi = cg_mad(cg, oi, n->type.dims[d], l[d].i);
    for (int k = 0; k < nops; k++) {
        LLVMValueRef idx = cg_i64(cg, 0);
        for (int d = 0; d < r; d++)
            if (stride[k][d]) idx = cg_add(cg, idx, cg_mul(cg, l[d].i, stride[k][d]));
        v[k] = cg_loadf(cg, ops[k], p[k], idx);
    }
    cg_storef(cg, o, oi, f(cg, n, v));
    for (int d = r - 1; d >= 0; d--) cg_loop_end(cg, &l[d]);
    cg_loop_end(cg, &lb);
}

/* ---- sources ------------------------------------------------------------------- */

/* DROPMASK: the declared (batched) type; the runtime draws it (dropout.h). */
static void emit_dropmask(Cg *cg, const Node *n) {
    if (!(n->rate >= 0 && n->rate < 1)) {
        cg_fail(cg, n, "dropout rate %g is outside [0, 1)", n->rate);
        return;
    }
    int64_t size = cg_size(cg->batch, n);
    CgIf f = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntNE, cg->training, LLVMConstInt(cg->t_i32, 0, false), ""));
    LLVMValueRef args[5] = {cg_base(cg, n), cg_i64(cg, size), cg_f64(cg, n->rate), cg->seed,
                            cg_i64(cg, (int64_t)RT_DROPOUT_STREAM_BASE + n->id)};
    cg_call(cg, cg->dropout, args, 5);
    cg_else(cg, &f);
    LLVMValueRef o = cg_base(cg, n);
    CgLoop l = cg_loop_begin(cg, size);
    cg_storef(cg, o, l.i, cg_f32(cg, 1.0));
    cg_loop_end(cg, &l);
    cg_endif(cg, &f);
}

/* ---- elementwise ------------------------------------------------------------------ */

static LLVMValueRef unary(Cg *cg, const Node *n, LLVMValueRef *v) {
    LLVMValueRef x = v[0], zero = cg_f32(cg, 0), one = cg_f32(cg, 1);
    switch (n->op) {
    case OP_NEG: return LLVMBuildFNeg(cg->b, x, "");
    case OP_TANH: return cg_tanhf(cg, x);
    case OP_SIGMOID: {
        /* 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below: e^-|x| never overflows */
        LLVMValueRef e = cg_expf(cg, LLVMBuildFNeg(cg->b, cg_fabsf(cg, x), ""));
        LLVMValueRef d = fadd(cg, one, e);
        return sel(cg, fcmp(cg, LLVMRealOGE, x, zero), fdiv(cg, one, d), fdiv(cg, e, d));
    }
    case OP_HARD_SIGMOID: {
        LLVMValueRef y = fadd(cg, fmul(cg, cg_f32(cg, 0.2), x), cg_f32(cg, 0.5));
        return sel(cg, fcmp(cg, LLVMRealOLT, y, zero), zero, sel(cg, fcmp(cg, LLVMRealOGT, y, one), one, y));
    }
    case OP_RELU: return sel(cg, fcmp(cg, LLVMRealOLT, x, zero), zero, x);
    case OP_EXP: return cg_expf(cg, x);
    case OP_LOG: return cg_call1(cg, cg->logf, x);
    case OP_RSQRT: return fdiv(cg, one, cg_call1(cg, cg->sqrtf, x));
    default: cg_fail(cg, n, "not an elementwise function"); return x;
    }
}

/* The user's float f(float), called by its symbol: the JIT binds the symbol
 * to the address dlsym found (cg_extern_symbols), an AOT link to the library. */
static LLVMValueRef call_extern(Cg *cg, const Node *n, LLVMValueRef *v) {
    LLVMTypeRef f32 = cg->t_f32, ty = LLVMFunctionType(f32, &f32, 1, false);
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, n->ext->name);
    if (!fn) {
        fn = LLVMAddFunction(cg->mod, n->ext->name, ty);
    } else if (LLVMGlobalGetValueType(fn) != ty || LLVMCountBasicBlocks(fn) > 0) {
        cg_fail(cg, n, "the symbol of extern '%s' is a function of the generated code", n->ext->name);
        return v[0];
    }
    return cg_call_lanes(cg, ty, fn, v, 1);
}

static LLVMValueRef binary(Cg *cg, const Node *n, LLVMValueRef *v) {
    switch (n->op) {
    case OP_ADD: return fadd(cg, v[0], v[1]);
    case OP_SUB: return fsub(cg, v[0], v[1]);
    case OP_MUL: return fmul(cg, v[0], v[1]);
    case OP_DIV: return fdiv(cg, v[0], v[1]);
    default: cg_fail(cg, n, "not an arithmetic op"); return v[0];
    }
}

/* ---- rows over threads ------------------------------------------------------------------ */

/* A kernel over R independent rows of C elements (softmax, a loss per row of
 * classes, its gradient), split over threads by rows: the part function
 * runs rows [from, to) of them, rp->row the current one (extra[k] its
 * rp->par.vals[k + 1]); the code between
 * rows_begin and rows_end is the body of that loop, in the part function. */
typedef struct RowPar {
    CgPar par;
    CgLoop loop;
    LLVMValueRef row;
    int64_t max_parts;
} RowPar;

static void rows_begin(Cg *cg, RowPar *rp, int64_t R, int64_t C, const LLVMValueRef *extra, int nextra) {
    rp->max_parts = cg_max_parts(cg, (double)R * (double)C, CG_PART_ELEMS, R);
    cg_par_begin_node(cg, &rp->par, extra, nextra);
    LLVMValueRef from = cg_part_start(cg, &rp->par, R);
    rp->loop = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, cg_part_end(cg, &rp->par, R), from, ""));
    rp->row = cg_add(cg, from, rp->loop.i);
}

static void rows_end(Cg *cg, RowPar *rp) {
    cg_loop_end(cg, &rp->loop);
    cg_par_end(cg, &rp->par, rp->max_parts, 0);
}

/* Row `row` of the rows [0, nex * rows) of x: x's example and the row's
 * first element in it. */
static LLVMValueRef row_example(Cg *cg, const Node *x, LLVMValueRef row, int64_t rows, LLVMValueRef *at) {
    LLVMValueRef b = LLVMBuildUDiv(cg->b, row, cg_i64(cg, rows), "");
    *at = LLVMBuildURem(cg->b, row, cg_i64(cg, rows), "");
    return cg_ex(cg, x, b);
}

/* ---- structure ----------------------------------------------------------------------- */

/* Rows of classes are summed in SUM_LANES partial sums, term c into partial
 * c mod SUM_LANES, the partials then added in order (interp.c's lane_total):
 * one vector of double, whatever the machine's vectors. */
#define SUM_LANES 8

/* The sum of the n floats or doubles (elem) at p[start ..]. */
static LLVMValueRef lane_sum(Cg *cg, LLVMTypeRef elem, LLVMValueRef p, LLVMValueRef start, int64_t n) {
    LLVMTypeRef vd = LLVMVectorType(cg->t_f64, SUM_LANES), ve = LLVMVectorType(elem, SUM_LANES);
    bool f32 = elem == cg->t_f32;
    LLVMValueRef acc = cg_local(cg, vd, LLVMConstNull(vd));
    CgLoop l = cg_loop_begin(cg, n / SUM_LANES);
    LLVMValueRef v = LLVMBuildLoad2(cg->b, ve, cg_gep(cg, elem, p, cg_add(cg, start, cg_mul(cg, l.i, SUM_LANES))), "");
    LLVMSetAlignment(v, 4);
    if (f32) v = LLVMBuildFPExt(cg->b, v, vd, "");
    cg_set(cg, acc, fadd(cg, cg_get(cg, vd, acc), v));
    cg_loop_end(cg, &l);
    LLVMValueRef a = cg_get(cg, vd, acc);
    for (int64_t j = 0; j < n % SUM_LANES; j++) {
        LLVMValueRef lane = LLVMConstInt(cg->t_i32, (unsigned long long)j, false);
        LLVMValueRef x = cg_load(cg, elem, p, cg_add(cg, start, cg_i64(cg, n / SUM_LANES * SUM_LANES + j)));
        if (f32) x = LLVMBuildFPExt(cg->b, x, cg->t_f64, "");
        a = LLVMBuildInsertElement(cg->b, a, fadd(cg, LLVMBuildExtractElement(cg->b, a, lane, ""), x), lane, "");
    }
    LLVMValueRef total = LLVMBuildExtractElement(cg->b, a, LLVMConstInt(cg->t_i32, 0, false), "");
    for (int j = 1; j < SUM_LANES; j++)
        total = fadd(cg, total, LLVMBuildExtractElement(cg->b, a, LLVMConstInt(cg->t_i32, (unsigned long long)j, false), ""));
    return total;
}

/* The largest of the n floats at p[start ..], on vectors: the value the
 * interpreter's scan in order finds, but for a row holding NaN, whose sum of
 * exps is NaN either way. */
static LLVMValueRef row_max_f32(Cg *cg, LLVMValueRef p, LLVMValueRef start, int64_t n) {
    LLVMTypeRef vf = LLVMVectorType(cg->t_f32, SUM_LANES);
    LLVMValueRef first = cg_load(cg, cg->t_f32, p, start);
    LLVMValueRef acc = cg_local(cg, vf, NULL);
    cg_set(cg, acc, cg_broadcast(cg, first, SUM_LANES));
    CgLoop l = cg_loop_begin(cg, n / SUM_LANES);
    LLVMValueRef v = LLVMBuildLoad2(cg->b, vf, cg_gep(cg, cg->t_f32, p, cg_add(cg, start, cg_mul(cg, l.i, SUM_LANES))), "");
    LLVMSetAlignment(v, 4);
    LLVMValueRef m = cg_get(cg, vf, acc);
    cg_set(cg, acc, sel(cg, fcmp(cg, LLVMRealOGT, v, m), v, m));
    cg_loop_end(cg, &l);
    LLVMValueRef a = cg_get(cg, vf, acc), best = first;
    for (int j = 0; j < SUM_LANES; j++) {
        LLVMValueRef x = LLVMBuildExtractElement(cg->b, a, LLVMConstInt(cg->t_i32, (unsigned long long)j, false), "");
        best = sel(cg, fcmp(cg, LLVMRealOGT, x, best), x, best);
    }
    for (int64_t j = n / SUM_LANES * SUM_LANES; j < n; j++) {
        LLVMValueRef x = cg_load(cg, cg->t_f32, p, cg_add(cg, start, cg_i64(cg, j)));
        best = sel(cg, fcmp(cg, LLVMRealOGT, x, best), x, best);
    }
    return best;
}

/* x [..., C] -> [..., C], each row exp(x - max) / sum */
static void emit_softmax(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t C = last_dim(n), rows = elems(n) / C;
    RowPar rp;
    rows_begin(cg, &rp, nex(cg, n) * rows, C, NULL, 0);
    LLVMValueRef mx = cg_local(cg, cg->t_f32, NULL), sum = cg_local(cg, cg->t_f64, NULL), r;
    LLVMValueRef xp = row_example(cg, x, rp.row, rows, &r), op = row_example(cg, n, rp.row, rows, &r);
    LLVMValueRef row = cg_mul(cg, r, C);
    if (x->type.dtype == DT_F32) {
        cg_set(cg, mx, row_max_f32(cg, xp, row, C));
    } else {
        cg_set(cg, mx, cg_loadf(cg, x, xp, row));
        CgLoop lm = cg_loop_begin(cg, C);
        LLVMValueRef v = cg_loadf(cg, x, xp, cg_add(cg, row, lm.i)), m = cg_get(cg, cg->t_f32, mx);
        cg_set(cg, mx, sel(cg, fcmp(cg, LLVMRealOGT, v, m), v, m));
        cg_loop_end(cg, &lm);
    }
    /* The exps in a loop of their own (it runs on vectors), then their sum. */
    CgLoop lc = cg_loop_begin(cg, C);
    LLVMValueRef i = cg_add(cg, row, lc.i);
    cg_storef(cg, op, i, cg_expf(cg, fsub(cg, cg_loadf(cg, x, xp, i), cg_get(cg, cg->t_f32, mx))));
    cg_loop_end(cg, &lc);
    cg_set(cg, sum, lane_sum(cg, cg->t_f32, op, row, C));
    lc = cg_loop_begin(cg, C);
    i = cg_add(cg, row, lc.i);
    cg_stored_as_f32(cg, op, i, fdiv(cg, to_f64(cg, cg_loadf(cg, n, op, i)), cg_get(cg, cg->t_f64, sum)));
    cg_loop_end(cg, &lc);
    rows_end(cg, &rp);
}

/* x [..., K] @ w [K, N] -> [..., N]; each output sums k = 0, 1, ... in double */
static void emit_matmul(Cg *cg, const Node *n) {
    const Node *x = n->in[0], *w = n->in[1];
    if (w->type.batched || w->type.rank != 2) {
        cg_fail(cg, n, "the right side is not a [K, N] matrix");
        return;
    }
    int64_t K = w->type.dims[0], N = w->type.dims[1], rows = elems(x) / K;
    if (x->type.batched == n->type.batched && x->type.dtype == DT_F32) {
        /* The batch and the leading axes are one run of rows. */
        CgGemm gm = {.M = nex(cg, n) * rows, .N = N, .P = K, .a = cg_base(cg, x), .b = cg_base(cg, w),
                     .c = cg_base(cg, n), .a_si = K, .a_sp = 1, .b_sp = N, .c_si = N};
        cg_gemm(cg, &gm);
        return;
    }
    LLVMValueRef acc = cg_local(cg, cg->t_f32, NULL), wp = cg_base(cg, w);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    CgLoop lj = cg_loop_begin(cg, N);
    cg_set(cg, acc, cg_f32(cg, 0));
    CgLoop lk = cg_loop_begin(cg, K);
    mac(cg, acc, cg_loadf(cg, x, xp, cg_mad(cg, lr.i, K, lk.i)), cg_loadf(cg, w, wp, cg_mad(cg, lk.i, N, lj.i)));
    cg_loop_end(cg, &lk);
    cg_storef(cg, op, cg_mad(cg, lr.i, N, lj.i), cg_get(cg, cg->t_f32, acc));
    cg_loop_end(cg, &lj);
    cg_loop_end(cg, &lr);
    cg_loop_end(cg, &lb);
}

/* Row p of example b of x, rows of D floats: where a time-major x holds it
 * (codegen.c, time_major_values: at p * batch + b), or else in b's example. */
static LLVMValueRef row_of(Cg *cg, const Node *x, LLVMValueRef b, LLVMValueRef p, int64_t D) {
    if (cg_time_major(cg->plan, x)) return cg_gep(cg, cg->t_f32, cg_base(cg, x), cg_mul(cg, cg_mad(cg, p, cg->batch, b), D));
    return cg_gep(cg, cg->t_f32, cg_ex(cg, x, b), cg_mul(cg, p, D));
}

/* ids i32 [...], table [V, D] -> [..., D] */
static void emit_embed(Cg *cg, const Node *n) {
    const Node *ids = n->in[0], *tab = n->in[1];
    if (tab->type.batched || tab->type.rank != 2) {
        cg_fail(cg, n, "the table is not a [V, D] matrix");
        return;
    }
    int64_t V = tab->type.dims[0], D = tab->type.dims[1], P = elems(ids);
    LLVMValueRef tp = cg_base(cg, tab);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef ip = cg_ex(cg, ids, lb.i);
    CgLoop lp = cg_loop_begin(cg, P);
    LLVMValueRef id = checked_id(cg, ids, ip, lp.i, V);
    cg_copy(cg, row_of(cg, n, lb.i, lp.i, D), cg_gep(cg, cg->t_f32, tp, cg_mul(cg, id, D)), D);
    cg_loop_end_rolled(cg, &lp);
    cg_loop_end_rolled(cg, &lb);
}

static LLVMValueRef nonzero(Cg *cg, const Node *n, LLVMValueRef *v) {
    (void)n;
    return sel(cg, fcmp(cg, LLVMRealUNE, v[0], cg_f32(cg, 0)), cg_f32(cg, 1), cg_f32(cg, 0));
}

/* x [..., C] -> [..., len]: last-axis entries [start, start + len) */
static void emit_slice(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t C = last_dim(x), len = n->slice.len, rows = elems(n) / len;
    if (n->slice.start < 0 || n->slice.start + len > C) {
        cg_fail(cg, n, "slice outside the last axis");
        return;
    }
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    cg_copy(cg, cg_gep(cg, cg_elem(cg, n), op, cg_mul(cg, lr.i, len)),
            cg_gep(cg, cg_elem(cg, n), xp, cg_mad(cg, lr.i, C, cg_i64(cg, n->slice.start))), len);
    cg_loop_end_rolled(cg, &lr);
    cg_loop_end_rolled(cg, &lb);
}

/* x_k [..., C_k] -> [..., sum C_k], in input order */
static void emit_concat(Cg *cg, const Node *n) {
    int64_t C = last_dim(n), rows = elems(n) / C, off = 0;
    for (int k = 0; k < n->nin; k++) {
        const Node *x = n->in[k];
        int64_t Ck = last_dim(x);
        if (Ck * rows != elems(x)) {
            cg_fail(cg, n, "input %d does not have the leading axes of the result", k);
            return;
        }
        CgLoop lb = cg_loop_begin(cg, nex(cg, n));
        LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i);
        CgLoop lr = cg_loop_begin(cg, rows);
        cg_copy(cg, cg_gep(cg, cg_elem(cg, n), op, cg_mad(cg, lr.i, C, cg_i64(cg, off))),
                cg_gep(cg, cg_elem(cg, n), xp, cg_mul(cg, lr.i, Ck)), Ck);
        cg_loop_end_rolled(cg, &lr);
        cg_loop_end_rolled(cg, &lb);
        off += Ck;
    }
    if (off != C) cg_fail(cg, n, "the inputs add up to %lld entries, not %lld", (long long)off, (long long)C);
}

/* w [K, N] -> [N, K], in blocks of 16 x 16 so that both sides are read and
 * written a cache line at a time. */
static void emit_transpose(Cg *cg, const Node *n) {
    const Node *w = n->in[0];
    int64_t K = w->type.dims[0], N = w->type.dims[1], B = 16;
    LLVMValueRef wp = cg_base(cg, w), op = cg_base(cg, n);
    CgLoop lk = cg_loop_begin(cg, (K + B - 1) / B);
    CgLoop lj = cg_loop_begin(cg, (N + B - 1) / B);
    CgLoop k = cg_loop_begin(cg, B);
    LLVMValueRef kk = cg_mad(cg, lk.i, B, k.i);
    CgIf in_k = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, kk, cg_i64(cg, K), ""));
    CgLoop j = cg_loop_begin(cg, B);
    LLVMValueRef jj = cg_mad(cg, lj.i, B, j.i);
    CgIf in_j = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, jj, cg_i64(cg, N), ""));
    cg_store(cg, cg->t_f32, op, cg_mad(cg, jj, K, kk), cg_load(cg, cg->t_f32, wp, cg_mad(cg, kk, N, jj)));
    cg_endif(cg, &in_j);
    cg_loop_end(cg, &j);
    cg_endif(cg, &in_k);
    cg_loop_end(cg, &k);
    cg_loop_end(cg, &lj);
    cg_loop_end(cg, &lk);
}

/* x [T, ...] -> [T, ...]: step t of the result is step T - 1 - t of x */
static void emit_reverse(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t T = x->type.dims[0], step = elems(x) / T;
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop lt = cg_loop_begin(cg, T);
    LLVMValueRef back = LLVMBuildSub(cg->b, cg_i64(cg, T - 1), lt.i, "");
    cg_copy(cg, cg_gep(cg, cg_elem(cg, n), op, cg_mul(cg, lt.i, step)), cg_gep(cg, cg_elem(cg, n), xp, cg_mul(cg, back, step)),
            step);
    cg_loop_end_rolled(cg, &lt);
    cg_loop_end_rolled(cg, &lb);
}

/* x [T, ...] -> [...]: step T - 1;  RESHAPE: x -> the declared type, same elements */
static void emit_copy_from(Cg *cg, const Node *n, int64_t from) {
    const Node *x = n->in[0];
    if (from + elems(n) > elems(x)) {
        cg_fail(cg, n, "reads past its input");
        return;
    }
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i);
    cg_copy(cg, op, cg_gep(cg, cg_elem(cg, n), xp, cg_i64(cg, from)), elems(n));
    cg_loop_end(cg, &lb);
}

/* Is step t of example b real? Without a mask every step is. */
static LLVMValueRef step_on(Cg *cg, const Node *mask, LLVMValueRef mp, LLVMValueRef t) {
    if (!mask) return LLVMConstInt(cg->t_i1, 1, false);
    return fcmp(cg, LLVMRealUNE, cg_loadf(cg, mask, mp, t), cg_f32(cg, 0));
}

/* x [T, ...] [, mask [T]] -> [...]: max or mean over the unmasked steps; 0 when all are masked */
static void emit_pool_time(Cg *cg, const Node *n) {
    const Node *x = n->in[0], *mask = n->nin > 1 ? n->in[1] : NULL;
    int64_t T = x->type.dims[0], step = elems(n);
    if (mask && elems(mask) != T) {
        cg_fail(cg, n, "the mask does not have a value per step");
        return;
    }
    bool mean = n->op == OP_MEAN_TIME;
    LLVMValueRef acc = cg_local(cg, cg->t_f64, NULL), count = cg_local(cg, cg->t_i64, NULL);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i), mp = mask ? cg_ex(cg, mask, lb.i) : NULL;
    CgLoop li = cg_loop_begin(cg, step);
    cg_set(cg, acc, cg_f64(cg, 0));
    cg_set(cg, count, cg_i64(cg, 0));
    CgLoop lt = cg_loop_begin(cg, T);
    CgIf on = cg_if(cg, step_on(cg, mask, mp, lt.i));
    LLVMValueRef v = cg_loadd(cg, x, xp, cg_mad(cg, lt.i, step, li.i)), a = cg_get(cg, cg->t_f64, acc);
    LLVMValueRef c = cg_get(cg, cg->t_i64, count);
    if (mean) {
        cg_set(cg, acc, fadd(cg, a, v));
    } else {
        LLVMValueRef first = LLVMBuildICmp(cg->b, LLVMIntEQ, c, cg_i64(cg, 0), "");
        cg_set(cg, acc, sel(cg, LLVMBuildOr(cg->b, first, fcmp(cg, LLVMRealOGT, v, a), ""), v, a));
    }
    cg_set(cg, count, cg_add(cg, c, cg_i64(cg, 1)));
    cg_endif(cg, &on);
    cg_loop_end(cg, &lt);
    LLVMValueRef c2 = cg_get(cg, cg->t_i64, count), a2 = cg_get(cg, cg->t_f64, acc);
    LLVMValueRef r = mean ? fdiv(cg, a2, LLVMBuildSIToFP(cg->b, c2, cg->t_f64, "")) : a2;
    r = sel(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, c2, cg_i64(cg, 0), ""), cg_f64(cg, 0), r);
    cg_stored_as_f32(cg, op, li.i, r);
    cg_loop_end(cg, &li);
    cg_loop_end(cg, &lb);
}

/* ---- column blocks: reductions over every axis but the last -------------------- */

/* The kernels that reduce x [..., F] over the batch and every axis but the
 * last (batchnorm's statistics, a bias gradient) walk x's rows in order, on
 * blocks of SUM_COLS columns (a cache line of each row) held in vectors of
 * SUM_VEC doubles, and split over threads by blocks. Each lane does a
 * column's scalar operations in the scalar order, so each column gets the
 * interpreter's bits whatever the thread count: vector IEEE operations round
 * lane by lane as the scalar ones do. */
#define SUM_COLS 32
#define SUM_VEC 8

/* Columns [j0, j0 + cols) of n from x at xp, R rows of F (every example's
 * rows in turn: the examples are contiguous); cols <= SUM_COLS. */
typedef void (*ColumnBlockFn)(Cg *cg, const Node *n, LLVMValueRef xp, LLVMValueRef op, int64_t F, int64_t R,
                              LLVMValueRef j0, int cols);

/* The lanes of vector v of a block of `cols` columns that are columns. */
static int lanes_valid(int cols, int v) { return cols - v * SUM_VEC < SUM_VEC ? cols - v * SUM_VEC : SUM_VEC; }

static LLVMValueRef splat_vd(Cg *cg, double c) {
    LLVMValueRef lanes[SUM_VEC];
    for (int l = 0; l < SUM_VEC; l++) lanes[l] = LLVMConstReal(cg->t_f64, c);
    return LLVMConstVector(lanes, SUM_VEC);
}

/* f32 p[idx ..] as SUM_VEC doubles; the lanes from `valid` on are not read (0). */
static LLVMValueRef load_vd(Cg *cg, LLVMValueRef p, LLVMValueRef idx, int valid) {
    LLVMValueRef x = valid < SUM_VEC ? cg_load_vec_masked(cg, p, idx, SUM_VEC, valid)
                                     : cg_load_vec(cg, p, idx, SUM_VEC);
    return LLVMBuildFPExt(cg->b, x, LLVMVectorType(cg->t_f64, SUM_VEC), "");
}

/* The first `valid` lanes of d rounded to f32 into p[idx ..]. */
static void store_vd(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef d, int valid) {
    LLVMValueRef f = LLVMBuildFPTrunc(cg->b, d, LLVMVectorType(cg->t_f32, SUM_VEC), "");
    if (valid < SUM_VEC) cg_store_vec_masked(cg, p, idx, f, valid);
    else cg_store_vec(cg, p, idx, f);
}

/* n from x [..., F] f32 by blocks of columns, the last maybe shorter;
 * `passes` over x per block tell the work. */
static void emit_column_blocks(Cg *cg, const Node *n, const Node *x, double passes, ColumnBlockFn block) {
    int64_t F = last_dim(x), R = nex(cg, x) * (elems(x) / F);
    int64_t full = F / SUM_COLS, tail = F % SUM_COLS, blocks = full + (tail > 0);
    int64_t max_parts = cg_max_parts(cg, passes * (double)R * (double)F, CG_PART_ELEMS, blocks);
    CgPar par;
    cg_par_begin_node(cg, &par, NULL, 0);
    LLVMValueRef xp = cg_base(cg, x), op = cg_base(cg, n);
    LLVMValueRef from = cg_part_start(cg, &par, blocks), to = cg_part_end(cg, &par, blocks);
    LLVMValueRef end = sel(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, to, cg_i64(cg, full), ""), to, cg_i64(cg, full));
    CgLoop lb = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, end, from, ""));
    block(cg, n, xp, op, F, R, cg_mul(cg, cg_add(cg, from, lb.i), SUM_COLS), SUM_COLS);
    cg_loop_end(cg, &lb);
    if (tail) {
        CgIf f = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSGT, to, cg_i64(cg, full), ""));
        block(cg, n, xp, op, F, R, cg_i64(cg, full * SUM_COLS), (int)tail);
        cg_endif(cg, &f);
    }
    cg_par_end(cg, &par, max_parts, 0);
}

/* Batchnorm of a block of features (ColumnBlockFn), the interpreter's
 * formulas in its order: the mean, then the variance around it, then each
 * output, three walks over the rows in training, one in inference. */
static void batchnorm_block(Cg *cg, const Node *n, LLVMValueRef xp, LLVMValueRef op, int64_t F, int64_t R,
                            LLVMValueRef j0, int cols) {
    LLVMTypeRef vd = LLVMVectorType(cg->t_f64, SUM_VEC);
    int nv = (cols + SUM_VEC - 1) / SUM_VEC;
    LLVMValueRef mean[SUM_COLS / SUM_VEC], var[SUM_COLS / SUM_VEC], col[SUM_COLS / SUM_VEC];
    LLVMValueRef count = splat_vd(cg, (double)R), zero = LLVMConstNull(vd);
    for (int v = 0; v < nv; v++) {
        mean[v] = cg_local(cg, vd, NULL);
        var[v] = cg_local(cg, vd, NULL);
        col[v] = cg_add(cg, j0, cg_i64(cg, v * SUM_VEC));
    }
    CgIf tr = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntNE, cg->training, LLVMConstInt(cg->t_i32, 0, false), ""));
    for (int v = 0; v < nv; v++) cg_set(cg, mean[v], zero);
    CgLoop lr = cg_loop_begin(cg, R);
    for (int v = 0; v < nv; v++)
        accumulate(cg, vd, mean[v], load_vd(cg, xp, cg_mad(cg, lr.i, F, col[v]), lanes_valid(cols, v)));
    cg_loop_end(cg, &lr);
    for (int v = 0; v < nv; v++) {
        cg_set(cg, mean[v], fdiv(cg, cg_get(cg, vd, mean[v]), count));
        cg_set(cg, var[v], zero);
    }
    lr = cg_loop_begin(cg, R);
    for (int v = 0; v < nv; v++) {
        LLVMValueRef x = load_vd(cg, xp, cg_mad(cg, lr.i, F, col[v]), lanes_valid(cols, v));
        LLVMValueRef d = fsub(cg, x, cg_get(cg, vd, mean[v]));
        accumulate(cg, vd, var[v], fmul(cg, d, d));
    }
    cg_loop_end(cg, &lr);
    for (int v = 0; v < nv; v++) cg_set(cg, var[v], fdiv(cg, cg_get(cg, vd, var[v]), count));
    cg_else(cg, &tr);
    for (int v = 0; v < nv; v++) {
        cg_set(cg, mean[v], load_vd(cg, cg_base(cg, n->in[3]), col[v], lanes_valid(cols, v)));
        cg_set(cg, var[v], load_vd(cg, cg_base(cg, n->in[4]), col[v], lanes_valid(cols, v)));
    }
    cg_endif(cg, &tr);
    LLVMValueRef g[SUM_COLS / SUM_VEC], beta[SUM_COLS / SUM_VEC], m[SUM_COLS / SUM_VEC], sd[SUM_COLS / SUM_VEC];
    for (int v = 0; v < nv; v++) {
        g[v] = load_vd(cg, cg_base(cg, n->in[1]), col[v], lanes_valid(cols, v));
        beta[v] = load_vd(cg, cg_base(cg, n->in[2]), col[v], lanes_valid(cols, v));
        m[v] = cg_get(cg, vd, mean[v]);
        sd[v] = cg_call1(cg, cg->sqrt, fadd(cg, cg_get(cg, vd, var[v]), splat_vd(cg, n->batchnorm.epsilon)));
    }
    lr = cg_loop_begin(cg, R);
    for (int v = 0; v < nv; v++) {
        LLVMValueRef i = cg_mad(cg, lr.i, F, col[v]);
        LLVMValueRef x = load_vd(cg, xp, i, lanes_valid(cols, v));
        /* a division, as the interpreter: a product by 1 / sd would round twice */
        LLVMValueRef y = fadd(cg, fdiv(cg, fmul(cg, g[v], fsub(cg, x, m[v])), sd[v]), beta[v]);
        store_vd(cg, op, i, y, lanes_valid(cols, v));
    }
    cg_loop_end(cg, &lr);
}

/* x [..., F], gamma, beta, moving mean, moving variance [F] -> [..., F].
 * Training normalizes with the batch's mean and biased variance over every
 * axis but the last, inference with the moving statistics; in double. */
static void emit_batchnorm(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t F = last_dim(x);
    for (int k = 1; k < 5; k++)
        if (n->in[k]->type.batched || elems(n->in[k]) != F) {
            cg_fail(cg, n, "statistic %d is not a vector of %lld", k, (long long)F);
            return;
        }
    emit_column_blocks(cg, n, x, 3.0, batchnorm_block);
}

/* The sums of x's columns into n [F] (ColumnBlockFn), each in double; a
 * mean (MEAN_LEAD) then divides by the row count. */
static void column_sums_block(Cg *cg, const Node *n, LLVMValueRef xp, LLVMValueRef op, int64_t F, int64_t R,
                              LLVMValueRef j0, int cols) {
    LLVMTypeRef vd = LLVMVectorType(cg->t_f64, SUM_VEC);
    int nv = (cols + SUM_VEC - 1) / SUM_VEC;
    LLVMValueRef acc[SUM_COLS / SUM_VEC];
    for (int v = 0; v < nv; v++) acc[v] = cg_local(cg, vd, LLVMConstNull(vd));
    CgLoop lr = cg_loop_begin(cg, R);
    for (int v = 0; v < nv; v++) {
        LLVMValueRef idx = cg_add(cg, cg_mad(cg, lr.i, F, j0), cg_i64(cg, v * SUM_VEC));
        accumulate(cg, vd, acc[v], load_vd(cg, xp, idx, lanes_valid(cols, v)));
    }
    cg_loop_end(cg, &lr);
    for (int v = 0; v < nv; v++) {
        LLVMValueRef sum = cg_get(cg, vd, acc[v]);
        if (n->op == OP_MEAN_LEAD) sum = fdiv(cg, sum, splat_vd(cg, (double)R));
        store_vd(cg, op, cg_add(cg, j0, cg_i64(cg, v * SUM_VEC)), sum, lanes_valid(cols, v));
    }
}

/* x [..., F] -> [F]: sum (or mean) over the batch and every axis but the last */
static void emit_lead(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    if (x->type.dtype == DT_F32) {
        emit_column_blocks(cg, n, x, 1.0, column_sums_block);
        return;
    }
    int64_t F = last_dim(x), rows = elems(x) / F, nb = nex(cg, x);
    LLVMValueRef acc = cg_local(cg, cg->t_f64, NULL), op = cg_base(cg, n);
    CgLoop lf = cg_loop_begin(cg, F);
    cg_set(cg, acc, cg_f64(cg, 0));
    CgLoop lb = cg_loop_begin(cg, nb);
    LLVMValueRef xp = cg_ex(cg, x, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    accumulate(cg, cg->t_f64, acc, cg_loadd(cg, x, xp, cg_mad(cg, lr.i, F, lf.i)));
    cg_loop_end(cg, &lr);
    cg_loop_end(cg, &lb);
    LLVMValueRef s = cg_get(cg, cg->t_f64, acc);
    if (n->op == OP_MEAN_LEAD) s = fdiv(cg, s, cg_f64(cg, (double)(nb * rows)));
    cg_stored_as_f32(cg, op, lf.i, s);
    cg_loop_end(cg, &lf);
}

/* TIME_SLICE x [T, ...] -> [len, ...]: steps [start, start + len) */
static void emit_time_slice(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t T = x->type.dims[0], step = elems(x) / T;
    if (n->slice.start < 0 || n->slice.start + n->slice.len > T) {
        cg_fail(cg, n, "steps outside the sequence");
        return;
    }
    emit_copy_from(cg, n, n->slice.start * step);
}

/* TIME_PAD x [len', ...] -> [slice.len, ...]: x at steps [start, start + len'), zeros elsewhere */
static void emit_time_pad(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t L = x->type.dims[0], step = elems(x) / L;
    if (n->slice.start < 0 || n->slice.start + L > n->type.dims[0]) {
        cg_fail(cg, n, "steps outside the result");
        return;
    }
    cg_zero(cg, n);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), op = cg_ex(cg, n, lb.i);
    cg_copy(cg, cg_gep(cg, cg_elem(cg, n), op, cg_i64(cg, n->slice.start * step)), xp, L * step);
    cg_loop_end(cg, &lb);
}

/* ---- losses and metrics ---------------------------------------------------------- */

#define KERAS_EPSILON 1e-7

static LLVMValueRef clip_probability(Cg *cg, LLVMValueRef p) {
    LLVMValueRef lo = cg_f64(cg, KERAS_EPSILON), hi = cg_f64(cg, 1 - KERAS_EPSILON);
    return sel(cg, fcmp(cg, LLVMRealOLT, p, lo), lo, sel(cg, fcmp(cg, LLVMRealOGT, p, hi), hi, p));
}

/* Where clip_by_value passes the gradient through (its bounds included). */
static LLVMValueRef unclipped(Cg *cg, LLVMValueRef p) {
    return LLVMBuildAnd(cg->b, fcmp(cg, LLVMRealOGE, p, cg_f64(cg, KERAS_EPSILON)),
                        fcmp(cg, LLVMRealOLE, p, cg_f64(cg, 1 - KERAS_EPSILON)), "");
}

static LLVMValueRef sigmoid_d(Cg *cg, LLVMValueRef x) {
    LLVMValueRef one = cg_f64(cg, 1);
    LLVMValueRef e = cg_exp(cg, LLVMBuildFNeg(cg->b, cg_call1(cg, cg->fabs, x), ""));
    LLVMValueRef d = fadd(cg, one, e);
    return sel(cg, fcmp(cg, LLVMRealOGE, x, cg_f64(cg, 0)), fdiv(cg, one, d), fdiv(cg, e, d));
}

static LLVMValueRef bce(Cg *cg, LLVMValueRef p, LLVMValueRef y, bool logits) {
    LLVMValueRef one = cg_f64(cg, 1), eps = cg_f64(cg, KERAS_EPSILON), zero = cg_f64(cg, 0);
    if (logits) {
        LLVMValueRef relu = sel(cg, fcmp(cg, LLVMRealOGT, p, zero), p, zero);
        LLVMValueRef soft = cg_log1p_unit(cg, cg_exp(cg, LLVMBuildFNeg(cg->b, cg_call1(cg, cg->fabs, p), "")));
        return fadd(cg, fsub(cg, relu, fmul(cg, p, y)), soft);
    }
    LLVMValueRef q = clip_probability(cg, p);
    LLVMValueRef a = fmul(cg, y, cg_call1(cg, cg->log, fadd(cg, q, eps)));
    LLVMValueRef b = fmul(cg, fsub(cg, one, y), cg_call1(cg, cg->log, fadd(cg, fsub(cg, one, q), eps)));
    return LLVMBuildFNeg(cg->b, fadd(cg, a, b), "");
}

static LLVMValueRef bce_grad(Cg *cg, LLVMValueRef p, LLVMValueRef y, bool logits) {
    if (logits) return fsub(cg, sigmoid_d(cg, p), y);
    LLVMValueRef one = cg_f64(cg, 1), eps = cg_f64(cg, KERAS_EPSILON);
    LLVMValueRef g = fadd(cg, fdiv(cg, LLVMBuildFNeg(cg->b, y, ""), fadd(cg, p, eps)),
                          fdiv(cg, fsub(cg, one, y), fadd(cg, fsub(cg, one, p), eps)));
    return sel(cg, unclipped(cg, p), g, cg_f64(cg, 0));
}

/* A row of class scores: log(clip(p)) for probabilities, the logits themselves otherwise. */
static LLVMValueRef class_score(Cg *cg, const Node *p, LLVMValueRef pp, LLVMValueRef i, bool logits) {
    LLVMValueRef v = cg_loadd(cg, p, pp, i);
    return logits ? v : cg_call1(cg, cg->log, clip_probability(cg, v));
}

/* log sum exp over the row [row, row + C) of scores (class_score, or the raw values) */
/* Classes up to this many keep their exps in a stack buffer (1 MB). */
#define MAX_ROW_SCRATCH (128 * 1024)

static LLVMValueRef logsumexp(Cg *cg, const Node *p, LLVMValueRef pp, LLVMValueRef row, int64_t C, bool logits) {
    LLVMValueRef m2;
    if (p->type.dtype == DT_F32) {
        /* log(clip(.)) rises with p: the largest score is that of the largest p. */
        LLVMValueRef top = LLVMBuildFPExt(cg->b, row_max_f32(cg, pp, row, C), cg->t_f64, "");
        m2 = logits ? top : cg_call1(cg, cg->log, clip_probability(cg, top));
    } else {
        LLVMValueRef mx = cg_local(cg, cg->t_f64, class_score(cg, p, pp, row, logits));
        CgLoop lm = cg_loop_begin(cg, C);
        LLVMValueRef q = class_score(cg, p, pp, cg_add(cg, row, lm.i), logits), m = cg_get(cg, cg->t_f64, mx);
        cg_set(cg, mx, sel(cg, fcmp(cg, LLVMRealOGT, q, m), q, m));
        cg_loop_end(cg, &lm);
        m2 = cg_get(cg, cg->t_f64, mx);
    }
    LLVMValueRef sum;
    if (C <= MAX_ROW_SCRATCH) {
        /* The exps in a loop of their own, which runs on vectors, then their sum. */
        LLVMValueRef buf = cg_stack_array(cg, cg->t_f64, C);
        CgLoop lc = cg_loop_begin(cg, C);
        cg_store(cg, cg->t_f64, buf, lc.i, cg_exp(cg, fsub(cg, class_score(cg, p, pp, cg_add(cg, row, lc.i), logits), m2)));
        cg_loop_end(cg, &lc);
        sum = lane_sum(cg, cg->t_f64, buf, cg_i64(cg, 0), C);
    } else {
        /* The same partial sums, term by term. */
        LLVMValueRef part = cg_stack_array(cg, cg->t_f64, SUM_LANES);
        for (int j = 0; j < SUM_LANES; j++) cg_store(cg, cg->t_f64, part, cg_i64(cg, j), cg_f64(cg, 0));
        CgLoop lc = cg_loop_begin(cg, C);
        LLVMValueRef at = LLVMBuildURem(cg->b, lc.i, cg_i64(cg, SUM_LANES), "");
        LLVMValueRef e = cg_exp(cg, fsub(cg, class_score(cg, p, pp, cg_add(cg, row, lc.i), logits), m2));
        cg_store(cg, cg->t_f64, part, at, fadd(cg, cg_load(cg, cg->t_f64, part, at), e));
        cg_loop_end(cg, &lc);
        sum = cg_load(cg, cg->t_f64, part, cg_i64(cg, 0));
        for (int j = 1; j < SUM_LANES; j++) sum = fadd(cg, sum, cg_load(cg, cg->t_f64, part, cg_i64(cg, j)));
    }
    return fadd(cg, m2, cg_call1(cg, cg->log, sum));
}

static LLVMValueRef row_sum(Cg *cg, const Node *p, LLVMValueRef pp, LLVMValueRef row, int64_t C) {
    LLVMValueRef sum = cg_local(cg, cg->t_f64, cg_f64(cg, 0));
    CgLoop lc = cg_loop_begin(cg, C);
    accumulate(cg, cg->t_f64, sum, cg_loadd(cg, p, pp, cg_add(cg, row, lc.i)));
    cg_loop_end(cg, &lc);
    return cg_get(cg, cg->t_f64, sum);
}

/* The positions a loss averages over: elements for BCE and MSE, rows of the
 * class axis for SCE and CCE; 0 when target and prediction do not match. */
static int64_t loss_width(Cg *cg, const Node *n, OpKind loss, const Node *p, const Node *y) {
    if (loss == OP_BCE || loss == OP_MSE) {
        if (elems(y) != elems(p)) cg_fail(cg, n, "target and prediction differ in size");
        return 1;
    }
    int64_t C = last_dim(p);
    if (loss == OP_SCE && elems(y) * C != elems(p)) cg_fail(cg, n, "the class ids do not match the positions");
    if (loss == OP_CCE && elems(y) != elems(p)) cg_fail(cg, n, "target and prediction differ in size");
    return C;
}

/* The loss_grad of SCE that loss node n's row pass writes as well, or NULL:
 * n takes f32 logits, and a later node of its graph is its derivative by the
 * same logits and target, scaled by a constant d(loss) (the backward pass's
 * seed). The pass then reads each row of logits once and takes its exps
 * once. A model graph's nodes each have storage of their own (plan_graph),
 * so writing the gradient before its place in the graph overwrites nothing
 * but, where logits_alias puts it, the logits, which nothing else that runs
 * reads. */
static const Node *forward_loss(const Node *n);

const Node *cg_loss_writes_grad(const Node *n) {
    const Graph *g = n->graph;
    const Node *p = n->in[0];
    if (n->op != OP_SCE || !n->loss.from_logits || g->parent || n->type.rank != 0 || p->type.dtype != DT_F32 ||
        p->type.rank < 1 || last_dim(p) > MAX_ROW_SCRATCH)
        return NULL;
    for (int k = n->id + 1; k < g->nodes.len; k++) {
        const Node *x = g->nodes.items[k], *dl = x->nin == 3 ? x->in[2] : NULL;
        if (x->op == OP_LOSS_GRAD && x->loss.loss == OP_SCE && x->loss.from_logits && x->in[0] == p &&
            x->in[1] == n->in[1] && dl && dl->op == OP_CONST && !dl->type.batched && elems(dl) == 1 &&
            type_equal(&x->type, &p->type) && forward_loss(x) == n)
            return x;
    }
    return NULL;
}

/* The bias gradient the loss's row pass (cg_loss_writes_grad) sums too, or
 * NULL: a sum_to of the gradient over every row to one value per class. */
const Node *cg_loss_writes_bias(const Node *grad) {
    const Graph *g = grad->graph;
    int64_t C = last_dim(grad);
    for (int k = grad->id + 1; k < g->nodes.len; k++) {
        const Node *x = g->nodes.items[k];
        if (x->op == OP_SUM_TO && x->in[0] == grad && !x->type.batched && x->type.rank == 1 &&
            x->type.dims[0] == C && x->type.dtype == DT_F32)
            return x;
    }
    return NULL;
}

/* A row of SCE from f32 logits: the row's loss term, its log-sum-exp in
 * *lse; with grad, the row of d(loss)/d(logits) times scale into grad's
 * row at gp. The exps are f32 (cg_expf, as softmax takes them), kept in a
 * stack buffer and summed in double: the gradient is exp / sum less the
 * target's one. */
static LLVMValueRef sce_logits_row(Cg *cg, const Node *p, const Node *y, const Node *grad, LLVMValueRef pp,
                                   LLVMValueRef yp, LLVMValueRef gp, LLVMValueRef li, int64_t C, double scale,
                                   LLVMValueRef colsum, LLVMValueRef *lse) {
    LLVMValueRef row = cg_mul(cg, li, C), k = checked_id(cg, y, yp, li, C);
    LLVMValueRef top = row_max_f32(cg, pp, row, C), buf = cg_stack_array(cg, cg->t_f32, C);
    CgLoop lc = cg_loop_begin(cg, C);
    cg_store(cg, cg->t_f32, buf, lc.i, cg_expf(cg, fsub(cg, cg_loadf(cg, p, pp, cg_add(cg, row, lc.i)), top)));
    cg_loop_end(cg, &lc);
    LLVMValueRef sum = lane_sum(cg, cg->t_f32, buf, cg_i64(cg, 0), C);
    *lse = fadd(cg, LLVMBuildFPExt(cg->b, top, cg->t_f64, ""), cg_call1(cg, cg->log, sum));
    /* Read before the gradient's row is written: it may go over the logits. */
    LLVMValueRef target = cg_loadd(cg, p, pp, cg_add(cg, row, k));
    if (grad) {
        LLVMValueRef inv = fdiv(cg, cg_f64(cg, 1), sum);
        lc = cg_loop_begin(cg, C);
        LLVMValueRef hit = sel(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, lc.i, k, ""), cg_f64(cg, 1), cg_f64(cg, 0));
        LLVMValueRef d = fsub(cg, fmul(cg, to_f64(cg, cg_load(cg, cg->t_f32, buf, lc.i)), inv), hit);
        LLVMValueRef gf = LLVMBuildFPTrunc(cg->b, fmul(cg, d, cg_f64(cg, scale)), cg->t_f32, "");
        cg_storef(cg, gp, cg_add(cg, row, lc.i), gf);
        /* The bias gradient's share: the value stored, in double. */
        if (colsum) cg_store(cg, cg->t_f64, colsum, lc.i, fadd(cg, cg_load(cg, cg->t_f64, colsum, lc.i), to_f64(cg, gf)));
        cg_loop_end(cg, &lc);
    }
    return fsub(cg, *lse, target);
}

/* A row of classes of SCE or CCE: the row's loss term; its log-sum-exp
 * (from logits) or sum of probabilities (CCE) in *lse. */
static LLVMValueRef class_loss(Cg *cg, OpKind loss, bool logits, const Node *p, const Node *y, LLVMValueRef pp,
                               LLVMValueRef yp, LLVMValueRef li, int64_t C, LLVMValueRef *lse) {
    LLVMValueRef row = cg_mul(cg, li, C);
    if (loss == OP_SCE) {
        LLVMValueRef k = checked_id(cg, y, yp, li, C);
        *lse = logsumexp(cg, p, pp, row, C, logits);
        return fadd(cg, LLVMBuildFNeg(cg->b, class_score(cg, p, pp, cg_add(cg, row, k), logits), ""), *lse);
    }
    LLVMValueRef l = cg_local(cg, cg->t_f64, cg_f64(cg, 0));
    *lse = logits ? logsumexp(cg, p, pp, row, C, true) : row_sum(cg, p, pp, row, C);
    CgLoop lc = cg_loop_begin(cg, C);
    LLVMValueRef i = cg_add(cg, row, lc.i), pc = cg_loadd(cg, p, pp, i), yc = cg_loadd(cg, y, yp, i);
    LLVMValueRef term = logits ? fsub(cg, pc, *lse) : cg_call1(cg, cg->log, clip_probability(cg, fdiv(cg, pc, *lse)));
    cg_set(cg, l, fsub(cg, cg_get(cg, cg->t_f64, l), fmul(cg, yc, term)));
    cg_loop_end(cg, &lc);
    return cg_get(cg, cg->t_f64, l);
}

/* p [...], y -> f32 []: Keras' loss, the mean over batch and positions. A
 * loss over rows of classes computes its rows on threads, each row's term
 * and log-sum-exp into the node's working storage, then sums the terms in
 * row order. */
/* The n doubles at buf added into the f64 local sum, in order. */
static void add_in_order(Cg *cg, LLVMValueRef sum, LLVMValueRef buf, int64_t n) {
    CgLoop l = cg_loop_begin(cg, n);
    accumulate(cg, cg->t_f64, sum, cg_load(cg, cg->t_f64, buf, l.i));
    cg_loop_end(cg, &l);
}

/* Whether the epilogue of n's logits ran its row pass (Cg.sce_rows_done). */
static bool sce_rows_done(const Cg *cg, const Node *n) {
    for (int i = 0; i < cg->nsce_rows_done; i++)
        if (cg->sce_rows_done[i] == n) return true;
    return false;
}

LLVMValueRef cg_sce_block_begin(Cg *cg, const Node *n, LLVMValueRef block) {
    const Node *p = n->in[0], *grad = cg_loss_writes_grad(n);
    if (!grad || !cg_loss_writes_bias(grad)) return NULL;
    int64_t C = last_dim(p), R = nex(cg, p) * (elems(p) / C);
    LLVMValueRef colsum = cg_gep(cg, cg->t_f64, cg_extra(cg, n), cg_add(cg, cg_i64(cg, 2 * R), cg_mul(cg, block, C)));
    CgLoop lz = cg_loop_begin(cg, C);
    cg_store(cg, cg->t_f64, colsum, lz.i, cg_f64(cg, 0));
    cg_loop_end(cg, &lz);
    return colsum;
}

void cg_sce_rows(Cg *cg, const Node *n, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef colsum) {
    const Node *p = n->in[0], *y = n->in[1], *grad = cg_loss_writes_grad(n);
    int64_t C = last_dim(p), P = elems(p) / C, R = nex(cg, p) * P;
    /* d(loss) is the constant the caller's load of it would find, over the positions. */
    double scale = grad ? (double)(float)grad->in[2]->constant / (double)R : 0;
    LLVMValueRef terms = cg_extra(cg, n);
    CgLoop lr = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, r1, r0, ""));
    LLVMValueRef row = cg_add(cg, r0, lr.i), li, lse;
    LLVMValueRef pp = row_example(cg, p, row, P, &li), yp = row_example(cg, y, row, P, &li);
    LLVMValueRef gp = grad ? row_example(cg, grad, row, P, &li) : NULL;
    LLVMValueRef v = sce_logits_row(cg, p, y, grad, pp, yp, gp, li, C, scale, colsum, &lse);
    cg_store(cg, cg->t_f64, terms, row, v);
    cg_store(cg, cg->t_f64, terms, cg_add(cg, row, cg_i64(cg, R)), lse);
    cg_loop_end(cg, &lr);
}

/* SCE from f32 logits over its R rows, on threads by blocks of
 * CG_SCE_BLOCK rows: each row's term and log-sum-exp into the node's working
 * storage, the gradient's row where cg_loss_writes_grad says, and, for
 * cg_loss_writes_bias, the block's sum of the gradient per class into a row
 * of C doubles after those; the blocks' rows are then added in block order,
 * per class. The blocks do not depend on the threads, nor does the order.
 * When the logits' product kernel ran the row pass, this one only adds up. */
static void emit_sce_rows(Cg *cg, const Node *n, int64_t R, int64_t C) {
    const Node *grad = cg_loss_writes_grad(n), *bias = grad ? cg_loss_writes_bias(grad) : NULL;
    int64_t blocks = (R + CG_SCE_BLOCK - 1) / CG_SCE_BLOCK;
    if (!sce_rows_done(cg, n)) {
        int64_t max_parts = cg_max_parts(cg, (double)R * (double)C, CG_PART_ELEMS, blocks);
        CgPar par;
        cg_par_begin_node(cg, &par, NULL, 0);
        LLVMValueRef from = cg_part_start(cg, &par, blocks);
        CgLoop lb = cg_loop_begin_n(cg, LLVMBuildSub(cg->b, cg_part_end(cg, &par, blocks), from, ""));
        LLVMValueRef block = cg_add(cg, from, lb.i), colsum = cg_sce_block_begin(cg, n, block);
        LLVMValueRef r0 = cg_mul(cg, block, CG_SCE_BLOCK), r1 = cg_add(cg, r0, cg_i64(cg, CG_SCE_BLOCK));
        r1 = sel(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, r1, cg_i64(cg, R), ""), r1, cg_i64(cg, R));
        cg_sce_rows(cg, n, r0, r1, colsum);
        cg_loop_end(cg, &lb);
        cg_par_end(cg, &par, max_parts, 0);
    }
    if (!bias) return;
    /* Back on the calling thread: block 0's row takes the others in order. */
    LLVMValueRef first = cg_gep(cg, cg->t_f64, cg_extra(cg, n), cg_i64(cg, 2 * R)), bp = cg_base(cg, bias);
    CgLoop lk = cg_loop_begin(cg, blocks - 1);
    LLVMValueRef other = cg_gep(cg, cg->t_f64, first, cg_mul(cg, cg_add(cg, lk.i, cg_i64(cg, 1)), C));
    CgLoop lc = cg_loop_begin(cg, C);
    cg_store(cg, cg->t_f64, first, lc.i, fadd(cg, cg_load(cg, cg->t_f64, first, lc.i), cg_load(cg, cg->t_f64, other, lc.i)));
    cg_loop_end(cg, &lc);
    cg_loop_end(cg, &lk);
    lc = cg_loop_begin(cg, C);
    cg_stored_as_f32(cg, bp, lc.i, cg_load(cg, cg->t_f64, first, lc.i));
    cg_loop_end(cg, &lc);
}

static void emit_loss(Cg *cg, const Node *n) {
    const Node *p = n->in[0], *y = n->in[1];
    OpKind loss = n->op;
    bool logits = n->loss.from_logits;
    int64_t C = loss_width(cg, n, loss, p, y), P = elems(p) / C, R = nex(cg, p) * P;
    if (cg->error) return;
    LLVMValueRef sum = cg_local(cg, cg->t_f64, cg_f64(cg, 0));
    if (loss == OP_SCE && logits && p->type.dtype == DT_F32 && C <= MAX_ROW_SCRATCH) {
        emit_sce_rows(cg, n, R, C);
        add_in_order(cg, sum, cg_extra(cg, n), R);
    } else if (loss == OP_SCE || loss == OP_CCE) {
        RowPar rp;
        rows_begin(cg, &rp, R, C, NULL, 0);
        LLVMValueRef li, pp = row_example(cg, p, rp.row, P, &li), yp = row_example(cg, y, rp.row, P, &li), lse;
        LLVMValueRef v = class_loss(cg, loss, logits, p, y, pp, yp, li, C, &lse), terms = cg_extra(cg, n);
        cg_store(cg, cg->t_f64, terms, rp.row, v);
        cg_store(cg, cg->t_f64, terms, cg_add(cg, rp.row, cg_i64(cg, R)), lse);
        rows_end(cg, &rp);
        /* Back on the calling thread: the terms in row order. */
        add_in_order(cg, sum, cg_extra(cg, n), R);
    } else {
        /* The terms in a loop of their own, which runs on vectors, then
         * their sum in order (a long one term by term, as it comes). */
        bool buffered = R <= MAX_ROW_SCRATCH;
        LLVMValueRef buf = buffered ? cg_stack_array(cg, cg->t_f64, R) : NULL;
        CgLoop lb = cg_loop_begin(cg, nex(cg, p));
        LLVMValueRef pp = cg_ex(cg, p, lb.i), yp = cg_ex(cg, y, lb.i);
        CgLoop li = cg_loop_begin(cg, P);
        LLVMValueRef v;
        if (loss == OP_BCE) {
            v = bce(cg, cg_loadd(cg, p, pp, li.i), cg_loadd(cg, y, yp, li.i), logits);
        } else {
            LLVMValueRef d = fsub(cg, cg_loadd(cg, p, pp, li.i), cg_loadd(cg, y, yp, li.i));
            v = fmul(cg, d, d);
        }
        if (buffered) cg_store(cg, cg->t_f64, buf, cg_mad(cg, lb.i, P, li.i), v);
        else accumulate(cg, cg->t_f64, sum, v);
        cg_loop_end(cg, &li);
        cg_loop_end(cg, &lb);
        if (buffered) add_in_order(cg, sum, buf, R);
    }
    cg_stored_as_f32(cg, cg_base(cg, n), cg_i64(cg, 0), fdiv(cg, cg_get(cg, cg->t_f64, sum), cg_f64(cg, (double)R)));
}

/* The first index of the largest value in the row [row, row + C). */
static LLVMValueRef argmax(Cg *cg, const Node *p, LLVMValueRef pp, LLVMValueRef row, int64_t C) {
    LLVMValueRef best = cg_local(cg, cg->t_i64, cg_i64(cg, 0));
    CgLoop lc = cg_loop_begin(cg, C);
    LLVMValueRef b = cg_get(cg, cg->t_i64, best);
    LLVMValueRef v = cg_loadf(cg, p, pp, cg_add(cg, row, lc.i)), bv = cg_loadf(cg, p, pp, cg_add(cg, row, b));
    cg_set(cg, best, sel(cg, fcmp(cg, LLVMRealOGT, v, bv), lc.i, b));
    cg_loop_end(cg, &lc);
    return cg_get(cg, cg->t_i64, best);
}

/* p [...], y -> f32 []: the fraction of positions predicted right */
static void emit_accuracy(Cg *cg, const Node *n) {
    const Node *p = n->in[0], *y = n->in[1];
    AccuracyKind kind = n->accuracy;
    int64_t C = kind == ACC_BINARY ? 1 : last_dim(p), P = elems(p) / C;
    if (elems(y) != (kind == ACC_SPARSE ? P : elems(p))) {
        cg_fail(cg, n, "target and prediction do not match");
        return;
    }
    LLVMValueRef right = cg_local(cg, cg->t_f64, cg_f64(cg, 0));
    CgLoop lb = cg_loop_begin(cg, nex(cg, p));
    LLVMValueRef pp = cg_ex(cg, p, lb.i), yp = cg_ex(cg, y, lb.i);
    CgLoop li = cg_loop_begin(cg, P);
    LLVMValueRef ok;
    if (kind == ACC_BINARY) {
        LLVMValueRef guess = sel(cg, fcmp(cg, LLVMRealOGT, cg_loadd(cg, p, pp, li.i), cg_f64(cg, 0.5)), cg_f64(cg, 1),
                                 cg_f64(cg, 0));
        ok = fcmp(cg, LLVMRealOEQ, guess, cg_loadd(cg, y, yp, li.i));
    } else if (kind == ACC_SPARSE) {
        LLVMValueRef a = argmax(cg, p, pp, cg_mul(cg, li.i, C), C);
        ok = fcmp(cg, LLVMRealOEQ, LLVMBuildSIToFP(cg->b, a, cg->t_f64, ""), cg_loadd(cg, y, yp, li.i));
    } else {
        ok = LLVMBuildICmp(cg->b, LLVMIntEQ, argmax(cg, p, pp, cg_mul(cg, li.i, C), C),
                           argmax(cg, y, yp, cg_mul(cg, li.i, C), C), "");
    }
    accumulate(cg, cg->t_f64, right, LLVMBuildUIToFP(cg->b, ok, cg->t_f64, ""));
    cg_loop_end(cg, &li);
    cg_loop_end(cg, &lb);
    cg_stored_as_f32(cg, cg_base(cg, n), cg_i64(cg, 0),
                     fdiv(cg, cg_get(cg, cg->t_f64, right), cg_f64(cg, (double)(nex(cg, p) * P))));
}

/* x -> f32 []: the mean of every element of every example */
static void emit_mean_all(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    int64_t size = cg_size(cg->batch, x);
    LLVMValueRef sum = cg_local(cg, cg->t_f64, cg_f64(cg, 0)), xp = cg_base(cg, x);
    CgLoop l = cg_loop_begin(cg, size);
    accumulate(cg, cg->t_f64, sum, cg_loadd(cg, x, xp, l.i));
    cg_loop_end(cg, &l);
    cg_stored_as_f32(cg, cg_base(cg, n), cg_i64(cg, 0), fdiv(cg, cg_get(cg, cg->t_f64, sum), cg_f64(cg, (double)size)));
}

/* ---- gradients ---------------------------------------------------------------------- */

/* x, y = f(x), dy -> dx, in double: 1 - y*y in f32 keeps no digits near
 * saturation (y = 0.9999 leaves 2e-4 with an error of 6e-8). */
static LLVMValueRef act_grad(Cg *cg, const Node *n, LLVMValueRef *v) {
    LLVMValueRef x = to_f64(cg, v[0]), y = to_f64(cg, v[1]), dy = to_f64(cg, v[2]);
    LLVMValueRef one = cg_f64(cg, 1), zero = cg_f64(cg, 0), r;
    switch (n->act) {
    case OP_TANH: r = fmul(cg, dy, fsub(cg, one, fmul(cg, y, y))); break;
    case OP_SIGMOID: r = fmul(cg, fmul(cg, dy, y), fsub(cg, one, y)); break;
    case OP_HARD_SIGMOID: {
        LLVMValueRef in = LLVMBuildAnd(cg->b, fcmp(cg, LLVMRealOGT, x, cg_f64(cg, -2.5)),
                                       fcmp(cg, LLVMRealOLT, x, cg_f64(cg, 2.5)), "");
        r = sel(cg, in, fmul(cg, cg_f64(cg, 0.2), dy), zero);
        break;
    }
    case OP_RELU: r = sel(cg, fcmp(cg, LLVMRealOGT, x, zero), dy, zero); break;
    case OP_EXP: r = fmul(cg, dy, y); break;
    case OP_LOG: r = fdiv(cg, dy, x); break;
    case OP_RSQRT: r = fmul(cg, fmul(cg, fmul(cg, fmul(cg, cg_f64(cg, -0.5), dy), y), y), y); break;
    case OP_NEG: r = LLVMBuildFNeg(cg->b, dy, ""); break;
    default: cg_fail(cg, n, "no derivative rule for %s", op_name(n->act)); r = dy;
    }
    return to_f32(cg, r);
}

/* dy [..., N], w [K, N] -> dy @ w^T [..., K] */
static void emit_matmul_t(Cg *cg, const Node *n) {
    const Node *dy = n->in[0], *w = n->in[1];
    if (w->type.batched || w->type.rank != 2) {
        cg_fail(cg, n, "the matrix is not [K, N]");
        return;
    }
    int64_t K = w->type.dims[0], N = w->type.dims[1], rows = elems(dy) / N;
    if (dy->type.batched == n->type.batched && dy->type.dtype == DT_F32) {
        /* B(p = j, k) = w[k, j]: w read transposed, through the tile's panel. */
        CgGemm gm = {.M = nex(cg, n) * rows, .N = K, .P = N, .a = cg_base(cg, dy), .b = cg_base(cg, w),
                     .c = cg_base(cg, n), .a_si = N, .a_sp = 1, .b_sp = N, .c_si = K, .b_trans = true};
        cg_gemm(cg, &gm);
        return;
    }
    LLVMValueRef acc = cg_local(cg, cg->t_f32, NULL), wp = cg_base(cg, w);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef dp = cg_ex(cg, dy, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    CgLoop lk = cg_loop_begin(cg, K);
    cg_set(cg, acc, cg_f32(cg, 0));
    CgLoop lj = cg_loop_begin(cg, N);
    mac(cg, acc, cg_loadf(cg, dy, dp, cg_mad(cg, lr.i, N, lj.i)), cg_loadf(cg, w, wp, cg_mad(cg, lk.i, N, lj.i)));
    cg_loop_end(cg, &lj);
    cg_storef(cg, op, cg_mad(cg, lr.i, K, lk.i), cg_get(cg, cg->t_f32, acc));
    cg_loop_end(cg, &lk);
    cg_loop_end(cg, &lr);
    cg_loop_end(cg, &lb);
}

/* x [..., K], dy [..., N] -> [K, N]: x^T dy summed over the batch and leading
 * positions, each sum in the order (b, r) = (0, 0), (0, 1), ... */
static void emit_matmul_w(Cg *cg, const Node *n) {
    const Node *x = n->in[0], *dy = n->in[1];
    int64_t K = last_dim(x), N = last_dim(dy), rows = elems(x) / K;
    if (rows * N != elems(dy) || n->type.batched) {
        cg_fail(cg, n, "x and dy have different leading axes");
        return;
    }
    int64_t nb = x->type.batched || dy->type.batched ? cg->batch : 1;
    if (x->type.batched == dy->type.batched && x->type.dtype == DT_F32 && dy->type.dtype == DT_F32) {
        /* The sum runs over every row of the batch in (b, r) order: one run of rows. */
        CgGemm gm = {.M = K, .N = N, .P = nb * rows, .a = cg_base(cg, x), .b = cg_base(cg, dy), .c = cg_base(cg, n),
                     .a_si = 1, .a_sp = K, .b_sp = N, .c_si = N};
        cg_gemm(cg, &gm);
        return;
    }
    LLVMValueRef acc = cg_local(cg, cg->t_f32, NULL), op = cg_base(cg, n);
    CgLoop lk = cg_loop_begin(cg, K);
    CgLoop lj = cg_loop_begin(cg, N);
    cg_set(cg, acc, cg_f32(cg, 0));
    CgLoop lb = cg_loop_begin(cg, nb);
    LLVMValueRef xp = cg_ex(cg, x, lb.i), dp = cg_ex(cg, dy, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    mac(cg, acc, cg_loadf(cg, x, xp, cg_mad(cg, lr.i, K, lk.i)), cg_loadf(cg, dy, dp, cg_mad(cg, lr.i, N, lj.i)));
    cg_loop_end(cg, &lr);
    cg_loop_end(cg, &lb);
    cg_storef(cg, op, cg_mad(cg, lk.i, N, lj.i), cg_get(cg, cg->t_f32, acc));
    cg_loop_end(cg, &lj);
    cg_loop_end(cg, &lk);
}

/* x -> the declared type: each element of x added to the element it was
 * broadcast from (and over the batch when the result is unbatched). Written
 * as a gather: the kept axes outside, the summed axes inside in axis order,
 * so each output sums its terms in x's order, as the interpreter does. */
static void emit_sum_to(Cg *cg, const Node *n) {
    const Node *x = n->in[0];
    const Type *xt = &x->type, *nt = &n->type;
    if (!nt->batched && nt->rank == 1 && xt->rank >= 1 && nt->dims[0] == xt->dims[xt->rank - 1] && nt->dims[0] > 1 &&
        xt->dtype == DT_F32) {
        emit_column_blocks(cg, n, x, 1.0, column_sums_block);
        return;
    }
    if ((nt->batched && !xt->batched) || nt->rank > xt->rank) {
        cg_fail(cg, n, "cannot sum %s to %s", xt->batched ? "a batched value" : "a value",
                nt->batched ? "a batched one" : "this type");
        return;
    }
    int64_t xs[SEQC_MAX_RANK], ns[SEQC_MAX_RANK], s = 1;
    for (int k = xt->rank - 1; k >= 0; k--) {
        xs[k] = s;
        s *= xt->dims[k];
    }
    s = 1;
    for (int k = nt->rank - 1; k >= 0; k--) {
        ns[k] = s;
        s *= nt->dims[k];
    }
    /* axes: 0 the batch, 1 + k axis k of x */
    int64_t count[1 + SEQC_MAX_RANK], xstride[1 + SEQC_MAX_RANK], nstride[1 + SEQC_MAX_RANK];
    bool kept[1 + SEQC_MAX_RANK];
    count[0] = nex(cg, x);
    xstride[0] = xt->batched ? elems(x) : 0;
    nstride[0] = nt->batched ? elems(n) : 0;
    kept[0] = nt->batched;
    for (int k = 0; k < xt->rank; k++) {
        int j = k - (xt->rank - nt->rank);
        count[1 + k] = xt->dims[k];
        xstride[1 + k] = xs[k];
        kept[1 + k] = j >= 0 && nt->dims[j] == xt->dims[k];
        nstride[1 + k] = kept[1 + k] ? ns[j] : 0;
        if (j >= 0 && !kept[1 + k] && nt->dims[j] != 1) {
            cg_fail(cg, n, "axis %d of size %lld does not broadcast to %lld", j, (long long)nt->dims[j],
                    (long long)xt->dims[k]);
            return;
        }
    }
    int naxes = 1 + xt->rank;
    LLVMValueRef acc = cg_local(cg, cg->t_f64, NULL), xp = cg_base(cg, x), op = cg_base(cg, n);
    CgLoop l[1 + SEQC_MAX_RANK];
    LLVMValueRef oi = cg_i64(cg, 0), xi = cg_i64(cg, 0);
    for (int a = 0; a < naxes; a++) {
        if (!kept[a]) continue;
        l[a] = cg_loop_begin(cg, count[a]);
        oi = cg_add(cg, oi, cg_mul(cg, l[a].i, nstride[a]));
        xi = cg_add(cg, xi, cg_mul(cg, l[a].i, xstride[a]));
    }
    cg_set(cg, acc, cg_f64(cg, 0));
    for (int a = 0; a < naxes; a++) {
        if (kept[a]) continue;
        l[a] = cg_loop_begin(cg, count[a]);
        xi = cg_add(cg, xi, cg_mul(cg, l[a].i, xstride[a]));
    }
    accumulate(cg, cg->t_f64, acc, cg_loadd(cg, x, xp, xi));
    for (int a = naxes - 1; a >= 0; a--)
        if (!kept[a]) cg_loop_end(cg, &l[a]);
    cg_stored_as_f32(cg, op, oi, cg_get(cg, cg->t_f64, acc));
    for (int a = naxes - 1; a >= 0; a--)
        if (kept[a]) cg_loop_end(cg, &l[a]);
}

/* y, dy [..., C] -> y * (dy - sum(dy * y)) per row, in double */
static void emit_softmax_grad(Cg *cg, const Node *n) {
    const Node *y = n->in[0], *dy = n->in[1];
    int64_t C = last_dim(n), rows = elems(n) / C;
    if (elems(dy) != elems(y)) {
        cg_fail(cg, n, "y and dy differ in size");
        return;
    }
    LLVMValueRef dot = cg_local(cg, cg->t_f64, NULL);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef yp = cg_ex(cg, y, lb.i), dp = cg_ex(cg, dy, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    LLVMValueRef row = cg_mul(cg, lr.i, C);
    cg_set(cg, dot, cg_f64(cg, 0));
    CgLoop lc = cg_loop_begin(cg, C);
    LLVMValueRef i = cg_add(cg, row, lc.i);
    accumulate(cg, cg->t_f64, dot, fmul(cg, cg_loadd(cg, dy, dp, i), cg_loadd(cg, y, yp, i)));
    cg_loop_end(cg, &lc);
    lc = cg_loop_begin(cg, C);
    i = cg_add(cg, row, lc.i);
    LLVMValueRef g = fmul(cg, cg_loadd(cg, y, yp, i), fsub(cg, cg_loadd(cg, dy, dp, i), cg_get(cg, cg->t_f64, dot)));
    cg_stored_as_f32(cg, op, i, g);
    cg_loop_end(cg, &lc);
    cg_loop_end(cg, &lr);
    cg_loop_end(cg, &lb);
}

/* ids [...], dy [..., D] -> [V, D]: row ids[p] gets dy[p], summed in an f64
 * copy of the table (the working storage), then rounded */
/* Id p of example b of the ids, checked by pass 1 of emit_embed_grad. */
static LLVMValueRef id_at(Cg *cg, const Node *ids, LLVMValueRef b, LLVMValueRef p) {
    LLVMValueRef at = cg_ex(cg, ids, b);
    if (ids->type.dtype == DT_I32) return LLVMBuildSExt(cg->b, cg_load(cg, cg->t_i32, at, p), cg->t_i64, "");
    return LLVMBuildFPToSI(cg->b, cg_load(cg, cg->t_f32, at, p), cg->t_i64, "");
}

/* Passes 2 to 4 of an embedding's gradient over columns [c0, c1) of every
 * named row: accumulators to zero, dy added in, rounded into the result. */
static void embed_grad_columns(Cg *cg, const Node *n, int64_t nb, LLVMValueRef c0, LLVMValueRef c1) {
    int64_t D = n->type.dims[1];
    LLVMValueRef acc = cg_extra(cg, n), op = cg_base(cg, n);
    LLVMValueRef width = LLVMBuildSub(cg->b, c1, c0, "");
    for (int pass = 2; pass <= 4; pass++)
        for (int q = 0; q < n->nin; q += 2) {
            /* Each pair's dy in (b, p) order, in double: every element of
             * the result takes its terms in that order, whoever owns its column. */
            const Node *ids = n->in[q], *dy = n->in[q + 1];
            CgLoop lb = cg_loop_begin(cg, nb);
            CgLoop lp = cg_loop_begin(cg, elems(ids));
            LLVMValueRef row = cg_mul(cg, id_at(cg, ids, lb.i, lp.i), D);
            if (pass == 2) {
                LLVMBuildMemSet(cg->b, cg_gep(cg, cg->t_f64, acc, cg_add(cg, row, c0)), LLVMConstInt(cg->t_i8, 0, false),
                                cg_mul(cg, width, 8), 8);
            } else {
                LLVMValueRef dp = pass == 3 ? row_of(cg, dy, lb.i, lp.i, D) : NULL;
                CgLoop lj = cg_loop_begin_n(cg, width);
                LLVMValueRef j = cg_add(cg, c0, lj.i);
                LLVMValueRef at = cg_gep(cg, cg->t_f64, acc, cg_add(cg, row, j));
                if (pass == 3)
                    LLVMBuildStore(cg->b, fadd(cg, LLVMBuildLoad2(cg->b, cg->t_f64, at, ""), cg_loadd(cg, dy, dp, j)), at);
                else
                    cg_stored_as_f32(cg, op, cg_add(cg, row, j), LLVMBuildLoad2(cg->b, cg->t_f64, at, ""));
                cg_loop_end(cg, &lj);
            }
            cg_loop_end(cg, &lp);
            cg_loop_end(cg, &lb);
        }
}

static void emit_embed_grad(Cg *cg, const Node *n) {
    if (n->type.rank != 2 || n->type.batched || n->nin < 2 || n->nin % 2) {
        cg_fail(cg, n, "not pairs of ids and dy into an unbatched [V, D]");
        return;
    }
    int64_t V = n->type.dims[0], D = n->type.dims[1], nb = nex_any(cg, n), P_all = 0;
    for (int q = 0; q < n->nin; q += 2) {
        int64_t P = elems(n->in[q]);
        if (P * D != elems(n->in[q + 1])) {
            cg_fail(cg, n, "%lld ids for dy of %lld elements", (long long)P, (long long)elems(n->in[q + 1]));
            return;
        }
        P_all += P;
    }
    /* Only the rows this batch's ids name are touched: the result's other
     * rows are zero, and stay zero between calls because the rows the last
     * call wrote are cleared first. Those are marked a bit a row after the
     * accumulators: V / 8 bytes, however many ids a call reads (truncated
     * BPTT's windows each read their own). */
    LLVMValueRef acc = cg_extra(cg, n), op = cg_base(cg, n);
    LLVMValueRef marks = cg_gep(cg, cg->t_i8, acc, cg_i64(cg, 8 * V * D)); /* i64 [(V + 63) / 64] */
    LLVMValueRef one = cg_i64(cg, 1), zero = cg_i64(cg, 0);
    CgLoop lw = cg_loop_begin(cg, (V + 63) / 64);
    LLVMValueRef word = cg_load(cg, cg->t_i64, marks, lw.i);
    CgIf any = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntNE, word, zero, ""));
    CgLoop lk = cg_loop_begin(cg, 64);
    LLVMValueRef bit = LLVMBuildAnd(cg->b, LLVMBuildLShr(cg->b, word, lk.i, ""), one, "");
    CgIf marked = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntNE, bit, zero, ""));
    LLVMValueRef old_row = cg_mul(cg, cg_mad(cg, lw.i, 64, lk.i), D);
    LLVMBuildMemSet(cg->b, cg_gep(cg, cg->t_f32, op, old_row), LLVMConstInt(cg->t_i8, 0, false), cg_i64(cg, 4 * D), 4);
    cg_endif(cg, &marked);
    cg_loop_end_rolled(cg, &lk);
    cg_store(cg, cg->t_i64, marks, lw.i, zero);
    cg_endif(cg, &any);
    cg_loop_end(cg, &lw);
    /* Pass 1: the ids checked, their rows marked. */
    for (int q = 0; q < n->nin; q += 2) {
        const Node *ids = n->in[q];
        CgLoop lz = cg_loop_begin(cg, nb);
        LLVMValueRef ipz = cg_ex(cg, ids, lz.i);
        CgLoop lpz = cg_loop_begin(cg, elems(ids));
        LLVMValueRef id = checked_id(cg, ids, ipz, lpz.i, V);
        LLVMValueRef w = LLVMBuildLShr(cg->b, id, cg_i64(cg, 6), "");
        LLVMValueRef m = LLVMBuildShl(cg->b, one, LLVMBuildAnd(cg->b, id, cg_i64(cg, 63), ""), "");
        cg_store(cg, cg->t_i64, marks, w, LLVMBuildOr(cg->b, cg_load(cg, cg->t_i64, marks, w), m, ""));
        cg_loop_end(cg, &lpz);
        cg_loop_end(cg, &lz);
    }
    /* The rest split over threads by blocks of 16 columns. */
    enum { COLUMNS = 16 };
    int64_t units = (D + COLUMNS - 1) / COLUMNS;
    int64_t parts = cg_max_parts(cg, (double)(nb * P_all * D), CG_PART_CHAIN, units);
    if (parts < 2) {
        embed_grad_columns(cg, n, nb, cg_i64(cg, 0), cg_i64(cg, D));
        return;
    }
    CgPar par;
    cg_par_begin_node(cg, &par, NULL, 0);
    LLVMValueRef c0 = cg_mul(cg, cg_part_start(cg, &par, units), COLUMNS);
    LLVMValueRef c1 = cg_mul(cg, cg_part_end(cg, &par, units), COLUMNS);
    c1 = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, c1, cg_i64(cg, D), ""), c1, cg_i64(cg, D), "");
    embed_grad_columns(cg, n, nb, c0, c1);
    cg_par_end(cg, &par, parts, 0);
}

/* SLICE_GRAD dy [..., len] -> [..., C] (dy at [start, start + len) of the last
 * axis) and PLACE_STEP dy [...] -> [T, ...] (dy at step `index`): zeros, then
 * dy added in, summed over the batch when the result is unbatched. `rows`
 * blocks of `len` elements go to offsets r * out_stride + at. */
static void emit_scatter(Cg *cg, const Node *n, int64_t rows, int64_t len, int64_t out_stride, int64_t at) {
    const Node *dy = n->in[0];
    cg_zero(cg, n);
    int64_t nb = nex_any(cg, n);
    if (!n->type.batched && nb > 1) {
        LLVMValueRef acc = cg_local(cg, cg->t_f64, NULL), op = cg_base(cg, n);
        CgLoop lr = cg_loop_begin(cg, rows);
        CgLoop lj = cg_loop_begin(cg, len);
        cg_set(cg, acc, cg_f64(cg, 0));
        CgLoop lb = cg_loop_begin(cg, nb);
        LLVMValueRef dp = cg_ex(cg, dy, lb.i);
        accumulate(cg, cg->t_f64, acc, cg_loadd(cg, dy, dp, cg_mad(cg, lr.i, len, lj.i)));
        cg_loop_end(cg, &lb);
        cg_stored_as_f32(cg, op, cg_add(cg, cg_mad(cg, lr.i, out_stride, lj.i), cg_i64(cg, at)),
                         cg_get(cg, cg->t_f64, acc));
        cg_loop_end(cg, &lj);
        cg_loop_end(cg, &lr);
        return;
    }
    CgLoop lb = cg_loop_begin(cg, nb);
    LLVMValueRef dp = cg_ex(cg, dy, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop lr = cg_loop_begin(cg, rows);
    cg_copy(cg, cg_gep(cg, cg->t_f32, op, cg_add(cg, cg_mul(cg, lr.i, out_stride), cg_i64(cg, at))),
            cg_gep(cg, cg->t_f32, dp, cg_mul(cg, lr.i, len)), len);
    cg_loop_end_rolled(cg, &lr);
    cg_loop_end_rolled(cg, &lb);
}

static void emit_slice_grad(Cg *cg, const Node *n) {
    const Node *dy = n->in[0];
    int64_t C = last_dim(n), len = n->slice.len, rows = elems(dy) / len;
    if (n->slice.start < 0 || n->slice.start + len > C || rows * C != elems(n)) {
        cg_fail(cg, n, "dy does not fit the slice");
        return;
    }
    emit_scatter(cg, n, rows, len, C, n->slice.start);
}

static void emit_place_step(Cg *cg, const Node *n) {
    const Node *dy = n->in[0];
    int64_t T = n->type.dims[0], step = elems(dy);
    if (n->index < 0 || n->index >= T || step * T != elems(n)) {
        cg_fail(cg, n, "step %d does not fit", n->index);
        return;
    }
    if (cg_time_major(cg->plan, n)) {
        /* Step index's block holds every example's dy, one after another. */
        int64_t block = step * nex(cg, n);
        cg_zero(cg, n);
        cg_copy(cg, cg_gep(cg, cg->t_f32, cg_base(cg, n), cg_i64(cg, n->index * block)), cg_base(cg, dy), block);
        return;
    }
    emit_scatter(cg, n, 1, step, 0, n->index * step);
}

/* x [T, ...], dy [...] [, mask [T]] -> [T, ...]. max: dy to the first
 * unmasked step attaining the maximum; mean: dy / count to every unmasked
 * step. All steps masked: zeros. */
static void emit_pool_time_grad(Cg *cg, const Node *n) {
    const Node *x = n->in[0], *dy = n->in[1], *mask = n->nin > 2 ? n->in[2] : NULL;
    int64_t T = x->type.dims[0], step = elems(x) / T;
    if (elems(dy) != step || (mask && elems(mask) != T)) {
        cg_fail(cg, n, "dy is not one step of x, or the mask not one value per step");
        return;
    }
    bool max = n->op == OP_MAX_TIME_GRAD;
    cg_zero(cg, n);
    LLVMValueRef best = cg_local(cg, cg->t_i64, NULL), count = cg_local(cg, cg->t_i64, NULL);
    CgLoop lb = cg_loop_begin(cg, nex(cg, n));
    LLVMValueRef xp = cg_ex(cg, x, lb.i), dp = cg_ex(cg, dy, lb.i), op = cg_ex(cg, n, lb.i);
    LLVMValueRef mp = mask ? cg_ex(cg, mask, lb.i) : NULL;
    CgLoop li = cg_loop_begin(cg, step);
    cg_set(cg, best, cg_i64(cg, -1));
    cg_set(cg, count, cg_i64(cg, 0));
    CgLoop lt = cg_loop_begin(cg, T);
    CgIf on = cg_if(cg, step_on(cg, mask, mp, lt.i));
    if (max) {
        LLVMValueRef bi = cg_get(cg, cg->t_i64, best);
        LLVMValueRef none = LLVMBuildICmp(cg->b, LLVMIntSLT, bi, cg_i64(cg, 0), "");
        /* index 0 stands in when there is no best yet: the select ignores its value */
        LLVMValueRef safe = sel(cg, none, cg_i64(cg, 0), bi);
        LLVMValueRef v = cg_loadf(cg, x, xp, cg_mad(cg, lt.i, step, li.i));
        LLVMValueRef bv = cg_loadf(cg, x, xp, cg_mad(cg, safe, step, li.i));
        cg_set(cg, best, sel(cg, LLVMBuildOr(cg->b, none, fcmp(cg, LLVMRealOGT, v, bv), ""), lt.i, bi));
    }
    cg_set(cg, count, cg_add(cg, cg_get(cg, cg->t_i64, count), cg_i64(cg, 1)));
    cg_endif(cg, &on);
    cg_loop_end(cg, &lt);
    LLVMValueRef c = cg_get(cg, cg->t_i64, count);
    CgIf any = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSGT, c, cg_i64(cg, 0), ""));
    LLVMValueRef g = cg_loadf(cg, dy, dp, li.i);
    if (max) {
        cg_storef(cg, op, cg_mad(cg, cg_get(cg, cg->t_i64, best), step, li.i), g);
    } else {
        LLVMValueRef share = to_f32(cg, fdiv(cg, to_f64(cg, g), LLVMBuildSIToFP(cg->b, c, cg->t_f64, "")));
        CgLoop lt2 = cg_loop_begin(cg, T);
        CgIf on2 = cg_if(cg, step_on(cg, mask, mp, lt2.i));
        cg_storef(cg, op, cg_mad(cg, lt2.i, step, li.i), share);
        cg_endif(cg, &on2);
        cg_loop_end(cg, &lt2);
    }
    cg_endif(cg, &any);
    cg_loop_end(cg, &li);
    cg_loop_end(cg, &lb);
}

/* The loss of n's kind on n's prediction and target, earlier in n's graph
 * (so it ran in the same call, and its working storage holds each row's
 * log-sum-exp), or NULL. */
static const Node *forward_loss(const Node *n) {
    const Graph *g = n->graph;
    for (int k = 0; k < g->nodes.len; k++) {
        const Node *x = g->nodes.items[k];
        if (x == n) break;
        if (x->op == n->loss.loss && x->in[0] == n->in[0] && x->in[1] == n->in[1] &&
            x->loss.from_logits == n->loss.from_logits && x->type.rank == 0)
            return x;
    }
    return NULL;
}

/* The gradient of SCE (from logits or not) and of CCE from logits, on
 * threads by rows: exp(score - lse) less the target, the log-sum-exp the
 * loss computed (forward_loss) or computed again. */
static void emit_class_loss_grad(Cg *cg, const Node *n, LLVMValueRef scale) {
    const Node *p = n->in[0], *y = n->in[1], *fwd = forward_loss(n);
    OpKind loss = n->loss.loss;
    bool logits = n->loss.from_logits;
    int64_t C = last_dim(p), P = elems(p) / C, R = nex(cg, p) * P;
    /* The scale is the caller's value: it crosses into the part function as a
     * double in a stack slot. */
    LLVMValueRef slot = cg_local(cg, cg->t_f64, scale);
    RowPar rp;
    rows_begin(cg, &rp, R, C, &slot, 1);
    scale = cg_load(cg, cg->t_f64, rp.par.vals[1], cg_i64(cg, 0));
    LLVMValueRef li, pp = row_example(cg, p, rp.row, P, &li), yp = row_example(cg, y, rp.row, P, &li);
    LLVMValueRef op = row_example(cg, n, rp.row, P, &li), row = cg_mul(cg, li, C);
    LLVMValueRef lse = fwd ? cg_load(cg, cg->t_f64, cg_extra(cg, fwd), cg_add(cg, rp.row, cg_i64(cg, R)))
                           : logsumexp(cg, p, pp, row, C, logits);
    LLVMValueRef k = loss == OP_SCE ? checked_id(cg, y, yp, li, C) : NULL, ysum = NULL;
    if (loss == OP_CCE) ysum = row_sum(cg, y, yp, row, C);
    CgLoop lc = cg_loop_begin(cg, C);
    LLVMValueRef i = cg_add(cg, row, lc.i), g;
    if (loss == OP_SCE) {
        LLVMValueRef hit = sel(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, lc.i, k, ""), cg_f64(cg, 1), cg_f64(cg, 0));
        LLVMValueRef d = fsub(cg, cg_exp(cg, fsub(cg, class_score(cg, p, pp, i, logits), lse)), hit);
        g = d;
        if (!logits) {
            LLVMValueRef pc = cg_loadd(cg, p, pp, i);
            g = sel(cg, unclipped(cg, pc), fdiv(cg, d, pc), cg_f64(cg, 0));
        }
    } else {
        LLVMValueRef e = cg_exp(cg, fsub(cg, cg_loadd(cg, p, pp, i), lse));
        g = fsub(cg, fmul(cg, e, ysum), cg_loadd(cg, y, yp, i));
    }
    cg_stored_as_f32(cg, op, i, fmul(cg, g, scale));
    cg_loop_end(cg, &lc);
    rows_end(cg, &rp);
}

/* p, y, dl [] -> d(loss)/dp * dl, p's shape: the derivative of emit_loss */
static void emit_loss_grad(Cg *cg, const Node *n) {
    const Node *p = n->in[0], *y = n->in[1], *dl = n->in[2];
    OpKind loss = n->loss.loss;
    if (loss != OP_BCE && loss != OP_SCE && loss != OP_CCE && loss != OP_MSE) {
        cg_fail(cg, n, "no gradient for %s", op_name(loss));
        return;
    }
    if (dl->type.batched || elems(dl) != 1) {
        cg_fail(cg, n, "d(loss) is not a scalar");
        return;
    }
    bool logits = n->loss.from_logits;
    int64_t C = loss_width(cg, n, loss, p, y), P = elems(p) / C;
    if (cg->error) return;
    LLVMValueRef scale = fdiv(cg, cg_loadd(cg, dl, cg_base(cg, dl), cg_i64(cg, 0)), cg_f64(cg, (double)(nex(cg, p) * P)));
    if (loss == OP_SCE || (loss == OP_CCE && logits)) {
        emit_class_loss_grad(cg, n, scale);
        return;
    }
    CgLoop lb = cg_loop_begin(cg, nex(cg, p));
    LLVMValueRef pp = cg_ex(cg, p, lb.i), yp = cg_ex(cg, y, lb.i), op = cg_ex(cg, n, lb.i);
    CgLoop li = cg_loop_begin(cg, P);
    if (loss == OP_BCE) {
        LLVMValueRef g = bce_grad(cg, cg_loadd(cg, p, pp, li.i), cg_loadd(cg, y, yp, li.i), logits);
        cg_stored_as_f32(cg, op, li.i, fmul(cg, g, scale));
    } else if (loss == OP_MSE) {
        LLVMValueRef d = fsub(cg, cg_loadd(cg, p, pp, li.i), cg_loadd(cg, y, yp, li.i));
        cg_stored_as_f32(cg, op, li.i, fmul(cg, fmul(cg, cg_f64(cg, 2), d), scale));
    } else {
        /* r = p / sum(p), q_c = -y_c / r_c where r_c is unclipped: d l / d p_j = (q_j - sum_c q_c r_c) / sum(p) */
        LLVMValueRef row = cg_mul(cg, li.i, C);
        LLVMValueRef sum = row_sum(cg, p, pp, row, C);
        LLVMValueRef dot = cg_local(cg, cg->t_f64, cg_f64(cg, 0));
        CgLoop lc = cg_loop_begin(cg, C);
        LLVMValueRef i = cg_add(cg, row, lc.i);
        LLVMValueRef r = fdiv(cg, cg_loadd(cg, p, pp, i), sum);
        LLVMValueRef q = sel(cg, unclipped(cg, r), fdiv(cg, LLVMBuildFNeg(cg->b, cg_loadd(cg, y, yp, i), ""), r),
                             cg_f64(cg, 0));
        accumulate(cg, cg->t_f64, dot, fmul(cg, q, r));
        cg_loop_end(cg, &lc);
        lc = cg_loop_begin(cg, C);
        i = cg_add(cg, row, lc.i);
        r = fdiv(cg, cg_loadd(cg, p, pp, i), sum);
        q = sel(cg, unclipped(cg, r), fdiv(cg, LLVMBuildFNeg(cg->b, cg_loadd(cg, y, yp, i), ""), r), cg_f64(cg, 0));
        LLVMValueRef g = fdiv(cg, fsub(cg, q, cg_get(cg, cg->t_f64, dot)), sum);
        cg_stored_as_f32(cg, op, i, fmul(cg, g, scale));
        cg_loop_end(cg, &lc);
    }
    cg_loop_end(cg, &li);
    cg_loop_end(cg, &lb);
}

/* ---- fused elementwise chains ----------------------------------------------------- */

/* The scalar rule of an elementwise op and its operands; NULL for other ops. */
static MapFn map_fn(const Node *n, int *nops, const Node *ops[4]) {
    switch (n->op) {
    case OP_NEG: case OP_TANH: case OP_SIGMOID: case OP_HARD_SIGMOID: case OP_RELU: case OP_EXP: case OP_LOG:
    case OP_RSQRT: *nops = 1; ops[0] = n->in[0]; return unary;
    case OP_EXTERN: *nops = 1; ops[0] = n->in[0]; return call_extern;
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV:
        *nops = 2;
        ops[0] = n->in[0];
        ops[1] = n->in[1];
        return binary;
    case OP_NONZERO: *nops = 1; ops[0] = n->in[0]; return nonzero;
    case OP_ACT_GRAD:
        if (!type_equal(&n->in[0]->type, &n->type)) return NULL;
        *nops = 3;
        for (int k = 0; k < 3; k++) ops[k] = n->in[k];
        return act_grad;
    default: return NULL;
    }
}

int cg_map_operands(const Node *n, const Node *ops[4]) {
    int nops = 0;
    return map_fn(n, &nops, ops) ? nops : 0;
}

LLVMValueRef cg_map_value(Cg *cg, const Node *n, LLVMValueRef *v) {
    int nops;
    const Node *ops[4];
    MapFn f = map_fn(n, &nops, ops);
    if (!f) {
        cg_fail(cg, n, "not an elementwise node");
        return v[0];
    }
    return f(cg, n, v);
}

bool cg_is_map(const Node *n) {
    int nops;
    const Node *ops[4];
    return n->type.dtype == DT_F32 && map_fn(n, &nops, ops) != NULL;
}

/* Nodes of one type t, in graph order, as one loop (codegen.c's chain):
 * each element of every node is computed from registers where its operand
 * is an earlier node of the chain. A slice is read through from its source;
 * a concat's inputs are written into their columns of it. A node's value is
 * stored only where something outside the chain reads it. The arithmetic is
 * each node's own, so results equal the unfused. */
void cg_emit_map_chain(Cg *cg, const Node *const *chain, int len) {
    const Node *first = chain[0];
    const Type *t = &first->type;
    int r = t->rank;
    enum { MAX_OPS = 4 };
    int64_t (*stride)[MAX_OPS][SEQC_MAX_RANK] = calloc((size_t)len, sizeof *stride);
    int (*inner)[MAX_OPS] = calloc((size_t)len, sizeof *inner); /* chain index + 1 of an operand, or 0 */
    LLVMValueRef *vals = calloc((size_t)len, sizeof *vals), *outs = calloc((size_t)len, sizeof *outs);
    LLVMValueRef (*base)[MAX_OPS] = calloc((size_t)len, sizeof *base);
    bool *store = calloc((size_t)len, sizeof *store);
    if (!stride || !inner || !vals || !outs || !base || !store) {
        cg_fail(cg, first, "out of memory");
        goto done;
    }
    for (int m = 0; m < len; m++) {
        const Node *n = chain[m], *ops[MAX_OPS];
        int nops = n->op == OP_CONCAT ? n->nin : n->op == OP_SLICE ? 1 : 0;
        bool ok = n->op == OP_CONCAT ? nops <= MAX_OPS : n->op == OP_SLICE || type_equal(&n->type, t);
        if (ok && n->op != OP_CONCAT && n->op != OP_SLICE) ok = map_fn(n, &nops, ops) != NULL;
        if (!ok) {
            cg_fail(cg, n, "not a node a chain of its type can hold");
            goto done;
        }
        store[m] = n->op == OP_CONCAT || cg_read_outside(first->graph, n, chain, len);
        if (n->op == OP_SLICE) continue;
        for (int k = 0; k < nops; k++) {
            const Node *x = n->op == OP_CONCAT ? n->in[k] : ops[k];
            for (int q = 0; q < m; q++)
                if (chain[q] == x) inner[m][k] = q + 1;
            if (inner[m][k]) continue;
            if (n->op == OP_CONCAT || !bcast_strides(t, &x->type, stride[m][k]) || (x->type.batched && !t->batched)) {
                cg_fail(cg, n, "input %d does not broadcast to the result", k);
                goto done;
            }
        }
    }
    /* Flat: one loop over every element of every example, when each operand
     * from outside has the chain's type or is one number (no slice, no
     * concat): the loop then runs on vectors however short the rows. */
    bool flat = true;
    for (int m = 0; m < len && flat; m++) {
        const Node *n = chain[m], *ops[MAX_OPS];
        int nops = 0;
        if (n->op == OP_SLICE || n->op == OP_CONCAT) flat = false;
        else map_fn(n, &nops, ops);
        for (int k = 0; k < nops && flat; k++) {
            if (inner[m][k] || type_equal(&ops[k]->type, t)) continue;
            bool scalar = !ops[k]->type.batched;
            for (int d = 0; d < r; d++) scalar = scalar && stride[m][k][d] == 0;
            flat = scalar;
        }
    }
    /* Split over threads by examples, or flat by blocks of elements, when
     * the chain's work (the elements of all its nodes) pays for it: every element is
     * computed as one thread would. A part runs the loops with their trip
     * counts, skipping what is not its own, so that the vectorizer still
     * sees every buffer's range. */
    int64_t total = nex(cg, first) * elems(first);
    enum { FLAT_BLOCK = 1024 };
    bool blocks = flat && total % FLAT_BLOCK == 0;
    int64_t units = flat ? (blocks ? total / FLAT_BLOCK : 1) : nex(cg, first);
    double work = 0;
    for (int m = 0; m < len; m++) work += (double)cg_size(cg->batch, chain[m]);
    int64_t max_parts = cg_max_parts(cg, work, CG_PART_CHAIN, units);
    CgPar par;
    LLVMValueRef from = NULL, to = NULL;
    if (max_parts > 1) {
        cg_par_begin_node(cg, &par, NULL, 0);
        from = cg_part_start(cg, &par, units);
        to = cg_part_end(cg, &par, units);
    }
    CgLoop lb = cg_loop_begin(cg, flat ? (max_parts > 1 ? units : 1) : nex(cg, first));
    CgIf mine = {0};
    if (max_parts > 1)
        mine = cg_if(cg, LLVMBuildAnd(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGE, lb.i, from, ""),
                                      LLVMBuildICmp(cg->b, LLVMIntSLT, lb.i, to, ""), ""));
    for (int m = 0; m < len; m++) {
        const Node *n = chain[m], *ops[MAX_OPS];
        int nops = 0;
        outs[m] = flat ? cg_base(cg, n) : cg_ex(cg, n, lb.i);
        if (n->op == OP_SLICE) base[m][0] = cg_ex(cg, n->in[0], lb.i);
        else if (n->op != OP_CONCAT) map_fn(n, &nops, ops);
        for (int k = 0; k < nops; k++)
            if (!inner[m][k]) base[m][k] = flat ? cg_base(cg, ops[k]) : cg_ex(cg, ops[k], lb.i);
    }
    CgLoop l[SEQC_MAX_RANK], lf = {0};
    LLVMValueRef oi = cg_i64(cg, 0), row = cg_i64(cg, 0), col = cg_i64(cg, 0);
    if (flat && max_parts > 1) {
        lf = cg_loop_begin(cg, FLAT_BLOCK);
        oi = cg_mad(cg, lb.i, FLAT_BLOCK, lf.i);
    } else if (flat) {
        lf = cg_loop_begin(cg, total);
        oi = lf.i;
    } else {
        for (int d = 0; d < r; d++) l[d] = cg_loop_begin(cg, t->dims[d]);
        for (int d = 0; d < r; d++) oi = cg_mad(cg, oi, t->dims[d], l[d].i);
        for (int d = 0; d + 1 < r; d++) row = cg_mad(cg, row, t->dims[d], l[d].i);
        if (r > 0) col = l[r - 1].i;
    }
    for (int m = 0; m < len; m++) {
        const Node *n = chain[m], *ops[MAX_OPS];
        if (n->op == OP_SLICE) {
            const Node *x = n->in[0];
            LLVMValueRef at = cg_add(cg, cg_mad(cg, row, last_dim(x), col), cg_i64(cg, n->slice.start));
            vals[m] = cg_loadf(cg, x, base[m][0], at);
        } else if (n->op == OP_CONCAT) {
            int64_t off = 0;
            for (int k = 0; k < n->nin; k++) {
                LLVMValueRef at = cg_add(cg, cg_mad(cg, row, last_dim(n), col), cg_i64(cg, off));
                cg_storef(cg, outs[m], at, vals[inner[m][k] - 1]);
                off += last_dim(n->in[k]);
            }
            continue;
        } else {
            int nops;
            MapFn f = map_fn(n, &nops, ops);
            LLVMValueRef v[MAX_OPS];
            for (int k = 0; k < nops; k++) {
                if (inner[m][k]) {
                    v[k] = vals[inner[m][k] - 1];
                    continue;
                }
                LLVMValueRef idx = cg_i64(cg, 0);
                /* Flat: an operand of the chain's type at the element, one number at 0. */
                if (flat && type_equal(&ops[k]->type, t)) idx = oi;
                for (int d = 0; d < r && !flat; d++)
                    if (stride[m][k][d]) idx = cg_add(cg, idx, cg_mul(cg, l[d].i, stride[m][k][d]));
                v[k] = cg_loadf(cg, ops[k], base[m][k], idx);
            }
            vals[m] = f(cg, n, v);
        }
        if (store[m]) cg_storef(cg, outs[m], oi, vals[m]);
    }
    /* Each iteration of the innermost loop owns its elements: LLVM cannot
     * tell, when the buffers are many and their offsets depend on the example. */
    if (flat) cg_loop_end_parallel(cg, &lf);
    else
        for (int d = r - 1; d >= 0; d--) {
            if (d == r - 1) cg_loop_end_parallel(cg, &l[d]);
            else cg_loop_end(cg, &l[d]);
        }
    if (max_parts > 1) cg_endif(cg, &mine);
    cg_loop_end(cg, &lb);
    if (max_parts > 1) cg_par_end(cg, &par, max_parts, 0);
done:
    free(stride);
    free(inner);
    free(vals);
    free(outs);
    free(base);
    free(store);
}

/* ---- dispatch ------------------------------------------------------------------------ */

void cg_emit_op(Cg *cg, const Node *n) {
    switch (n->op) {
    case OP_INPUT: case OP_PARAM: case OP_STATEVAR: case OP_STEP_IN: case OP_STATE_IN: case OP_CAPTURE:
    case OP_SCAN_OUT: case OP_SCAN_STATE:
        return; /* written by the caller or by the scan */
    case OP_CONST: cg_storef(cg, cg_base(cg, n), cg_i64(cg, 0), cg_f32(cg, n->constant)); return;
    case OP_ZEROS: cg_zero(cg, n); return;
    case OP_DROPMASK: emit_dropmask(cg, n); return;
    case OP_NEG: case OP_TANH: case OP_SIGMOID: case OP_HARD_SIGMOID: case OP_RELU: case OP_EXP: case OP_LOG:
    case OP_RSQRT: {
        const Node *ops[1] = {n->in[0]};
        emit_map(cg, n, 1, ops, unary);
        return;
    }
    case OP_EXTERN: {
        const Node *ops[1] = {n->in[0]};
        emit_map(cg, n, 1, ops, call_extern);
        return;
    }
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_DIV: {
        const Node *ops[2] = {n->in[0], n->in[1]};
        emit_map(cg, n, 2, ops, binary);
        return;
    }
    case OP_SOFTMAX: emit_softmax(cg, n); return;
    case OP_MATMUL: emit_matmul(cg, n); return;
    case OP_EMBED: emit_embed(cg, n); return;
    case OP_NONZERO: {
        const Node *ops[1] = {n->in[0]};
        emit_map(cg, n, 1, ops, nonzero);
        return;
    }
    case OP_SLICE: emit_slice(cg, n); return;
    case OP_CONCAT: emit_concat(cg, n); return;
    case OP_REVERSE: emit_reverse(cg, n); return;
    case OP_LAST: {
        const Node *x = n->in[0];
        emit_copy_from(cg, n, (x->type.dims[0] - 1) * elems(n));
        return;
    }
    case OP_RESHAPE:
        if (elems(n->in[0]) != elems(n)) cg_fail(cg, n, "reshape changes the element count");
        else emit_copy_from(cg, n, 0);
        return;
    case OP_TRANSPOSE: emit_transpose(cg, n); return;
    case OP_MAX_TIME: case OP_MEAN_TIME: emit_pool_time(cg, n); return;
    case OP_BATCHNORM: emit_batchnorm(cg, n); return;
    case OP_MEAN_LEAD: case OP_SUM_LEAD: emit_lead(cg, n); return;
    case OP_TIME_SLICE: emit_time_slice(cg, n); return;
    case OP_TIME_PAD: emit_time_pad(cg, n); return;
    case OP_SCAN: cg_fail(cg, n, "a scan reached the op lowering"); return;
    case OP_BCE: case OP_SCE: case OP_CCE: case OP_MSE: emit_loss(cg, n); return;
    case OP_ACCURACY: emit_accuracy(cg, n); return;
    case OP_MEAN_ALL: emit_mean_all(cg, n); return;
    case OP_ACT_GRAD: {
        const Node *ops[3] = {n->in[0], n->in[1], n->in[2]};
        if (!type_equal(&n->in[0]->type, &n->type)) {
            cg_fail(cg, n, "x does not have the result's type");
            return;
        }
        emit_map(cg, n, 3, ops, act_grad);
        return;
    }
    case OP_MATMUL_T: emit_matmul_t(cg, n); return;
    case OP_MATMUL_W: emit_matmul_w(cg, n); return;
    case OP_SUM_TO: emit_sum_to(cg, n); return;
    case OP_SOFTMAX_GRAD: emit_softmax_grad(cg, n); return;
    case OP_EMBED_GRAD: emit_embed_grad(cg, n); return;
    case OP_SLICE_GRAD: emit_slice_grad(cg, n); return;
    case OP_PLACE_STEP: emit_place_step(cg, n); return;
    case OP_MAX_TIME_GRAD: case OP_MEAN_TIME_GRAD: emit_pool_time_grad(cg, n); return;
    case OP_LOSS_GRAD: emit_loss_grad(cg, n); return;
    case OP_COUNT: break;
    }
    cg_fail(cg, n, "no such op");
}

/* ---- the user's functions the module calls ------------------------------------------ */

static bool collect_externs(const Graph *g, CgExternSymbol **out, int *n, int *cap) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *node = g->nodes.items[i];
        if (node->op == OP_SCAN && !collect_externs(node->scan.body, out, n, cap)) return false;
        if (node->op != OP_EXTERN) continue;
        bool seen = false;
        for (int k = 0; k < *n && !seen; k++) seen = strcmp((*out)[k].name, node->ext->name) == 0;
        if (seen) continue;
        if (*n == *cap) {
            int grown = *cap ? *cap * 2 : 8;
            CgExternSymbol *more = realloc(*out, sizeof *more * (size_t)grown);
            if (!more) return false;
            *out = more;
            *cap = grown;
        }
        (*out)[(*n)++] = (CgExternSymbol){node->ext->name, (void *)node->ext->fn, node->ext->library};
    }
    return true;
}

bool cg_collect_externs(const Graph *g, CgExternSymbol **out, int *n) {
    int cap = 0;
    *out = NULL;
    *n = 0;
    if (collect_externs(g, out, n, &cap)) return true;
    free(*out);
    *out = NULL;
    *n = 0;
    return false;
}
