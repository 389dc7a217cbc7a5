/* The optimizer's update as IR (see cg_add_update in codegen.h): Keras' rules
 * of compiler/optim_ref.c, operation for operation in double, so that the
 * generated update and the reference round the same values to f32.
 *
 * Requires: cg->fn being built with cg->slab its slab argument; the plan
 * knows every gradient node; slot[which][i] >= 0 wherever the rule keeps
 * state `which` for params[i].
 * Guarantees: every trainable param with a gradient gets one step; nothing
 * else in the slab is written but its slots. */
#define SEQC_CODEGEN_INTERNAL
#include "codegen.h"

#include <stdlib.h>

/* The params the rule touches: trainable, with a gradient (optim_ref.c's test). */
static const Node *updated_grad(const Graph *g, int i) {
    const Node *p = g->params.items[i];
    const Node *dp = i < g->grads.len ? g->grads.items[i] : NULL;
    if (!dp || p->op != OP_PARAM || !p->param.trainable) return NULL;
    return dp;
}

static LLVMValueRef fadd(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(cg->b, a, b, ""); }
static LLVMValueRef fsub(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(cg->b, a, b, ""); }
static LLVMValueRef fmul(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(cg->b, a, b, ""); }
static LLVMValueRef fdiv(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(cg->b, a, b, ""); }
static LLVMValueRef sqrtd(Cg *cg, LLVMValueRef x) { return cg_call1(cg, cg->sqrt, x); }

static LLVMValueRef slot_base(Cg *cg, int64_t off) { return cg_gep(cg, cg->t_i8, cg->slab, cg_i64(cg, off)); }

/* Element k of a gradient as the rule sees it: widened, clipped by value,
 * scaled by its own norm's factor and by the joint norm's (each NULL when
 * off), in the reference's order. */
static LLVMValueRef clipped(Cg *cg, const Optimizer *o, LLVMValueRef grad, LLVMValueRef k, LLVMValueRef by_norm,
                            LLVMValueRef by_global) {
    LLVMValueRef g = LLVMBuildFPExt(cg->b, cg_load(cg, cg->t_f32, grad, k), cg->t_f64, "");
    if (o->clipvalue > 0) {
        LLVMValueRef hi = cg_f64(cg, o->clipvalue), lo = cg_f64(cg, -o->clipvalue);
        g = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOGT, g, hi, ""), hi, g, "");
        g = LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOLT, g, lo, ""), lo, g, "");
    }
    if (by_norm) g = fmul(cg, g, by_norm);
    if (by_global) g = fmul(cg, g, by_global);
    return g;
}

/* The sum of squares of a clipped gradient, in element order (optim_ref.c's
 * l2_squared): a double. */
static LLVMValueRef l2_squared(Cg *cg, const Optimizer *o, LLVMValueRef grad, int64_t n, LLVMValueRef by_norm) {
    LLVMValueRef acc = cg_local(cg, cg->t_f64, cg_f64(cg, 0));
    CgLoop l = cg_loop_begin(cg, n);
    LLVMValueRef g = clipped(cg, o, grad, l.i, by_norm, NULL);
    cg_set(cg, acc, fadd(cg, cg_get(cg, cg->t_f64, acc), fmul(cg, g, g)));
    cg_loop_end(cg, &l);
    return cg_get(cg, cg->t_f64, acc);
}

/* The factor that brings a norm down to `limit`: limit / norm above it, else
 * 1 (an exact multiplication; a NaN norm leaves the gradient alone, as in
 * the reference). */
static LLVMValueRef norm_factor(Cg *cg, LLVMValueRef sum, double limit) {
    LLVMValueRef norm = sqrtd(cg, sum), lim = cg_f64(cg, limit);
    return LLVMBuildSelect(cg->b, LLVMBuildFCmp(cg->b, LLVMRealOGT, norm, lim, ""), fdiv(cg, lim, norm),
                           cg_f64(cg, 1), "");
}

/* Elements [from, from + n) of one param: w f32, its gradient f32, slots s0,
 * s1 f32 (NULL when unused). lr_t: Adam's bias-corrected rate, a double. */
static void update_elements(Cg *cg, const Optimizer *o, LLVMValueRef from, LLVMValueRef n, LLVMValueRef w,
                            LLVMValueRef grad, LLVMValueRef s0, LLVMValueRef s1, LLVMValueRef by_norm,
                            LLVMValueRef by_global, LLVMValueRef lr, LLVMValueRef lr_t) {
    LLVMTypeRef f32 = cg->t_f32, f64 = cg->t_f64;
    CgLoop l = cg_loop_begin_n(cg, n);
    LLVMValueRef k = cg_add(cg, from, l.i);
    LLVMValueRef g = clipped(cg, o, grad, k, by_norm, by_global);
    LLVMValueRef wk = LLVMBuildFPExt(cg->b, cg_load(cg, f32, w, k), f64, "");
#define LOADD(p) LLVMBuildFPExt(cg->b, cg_load(cg, f32, (p), k), f64, "")
    switch (o->kind) {
    case OPT_SGD:
        /* v = momentum v - lr g; w += v (nesterov: w += momentum v - lr g). */
        if (o->momentum == 0) {
            wk = fsub(cg, wk, fmul(cg, lr, g));
        } else {
            LLVMValueRef mom = cg_f64(cg, o->momentum);
            LLVMValueRef v = fsub(cg, fmul(cg, mom, LOADD(s0)), fmul(cg, lr, g));
            cg_stored_as_f32(cg, s0, k, v);
            wk = fadd(cg, wk, o->nesterov ? fsub(cg, fmul(cg, mom, v), fmul(cg, lr, g)) : v);
        }
        break;
    case OPT_RMSPROP: {
        /* ms = rho ms + (1 - rho) g g; with momentum the epsilon under the root. */
        LLVMValueRef ms = fadd(cg, fmul(cg, cg_f64(cg, o->rho), LOADD(s1)),
                               fmul(cg, fmul(cg, cg_f64(cg, 1 - o->rho), g), g));
        cg_stored_as_f32(cg, s1, k, ms);
        if (o->momentum > 0) {
            LLVMValueRef step = fdiv(cg, fmul(cg, lr, g), sqrtd(cg, fadd(cg, ms, cg_f64(cg, o->epsilon))));
            LLVMValueRef mom = fadd(cg, fmul(cg, cg_f64(cg, o->momentum), LOADD(s0)), step);
            cg_stored_as_f32(cg, s0, k, mom);
            wk = fsub(cg, wk, mom);
        } else {
            wk = fsub(cg, wk, fdiv(cg, fmul(cg, lr, g), fadd(cg, sqrtd(cg, ms), cg_f64(cg, o->epsilon))));
        }
        break;
    }
    case OPT_ADAM: {
        LLVMValueRef m = fadd(cg, fmul(cg, cg_f64(cg, o->beta_1), LOADD(s0)), fmul(cg, cg_f64(cg, 1 - o->beta_1), g));
        LLVMValueRef v = fadd(cg, fmul(cg, cg_f64(cg, o->beta_2), LOADD(s1)),
                              fmul(cg, fmul(cg, cg_f64(cg, 1 - o->beta_2), g), g));
        cg_stored_as_f32(cg, s0, k, m);
        cg_stored_as_f32(cg, s1, k, v);
        wk = fsub(cg, wk, fdiv(cg, fmul(cg, lr_t, m), fadd(cg, sqrtd(cg, v), cg_f64(cg, o->epsilon))));
        break;
    }
    }
#undef LOADD
    cg_stored_as_f32(cg, w, k, wk);
    cg_loop_end(cg, &l);
}

/* Elements a part is worth a thread's wake-up from (some 15 us of Adam). */
#define UPDATE_PART 16384
#define UPDATE_BLOCK 1024

/* One param of n elements at these slab offsets (slots: -1 when unused),
 * split over threads by blocks of elements: each element's rule is its
 * own, so the split changes no bit. */
static void update_param(Cg *cg, const Optimizer *o, int64_t n, int64_t w, int64_t grad, int64_t s0, int64_t s1,
                         LLVMValueRef by_norm, LLVMValueRef by_global, LLVMValueRef lr, LLVMValueRef lr_t) {
    int64_t blocks = (n + UPDATE_BLOCK - 1) / UPDATE_BLOCK;
    int64_t parts = cg_max_parts(cg, (double)n, UPDATE_PART, blocks);
    /* The caller's doubles cross into the part function through its frame. */
    LLVMValueRef d[4] = {lr, lr_t, by_norm, by_global}, args = cg_stack_array(cg, cg->t_f64, 4);
    for (int k = 0; k < 4; k++)
        if (d[k]) cg_store(cg, cg->t_f64, args, cg_i64(cg, k), d[k]);
    CgPar par;
    cg_par_begin_node(cg, &par, &args, 1);
    for (int k = 0; k < 4; k++)
        if (d[k]) d[k] = cg_load(cg, cg->t_f64, par.vals[1], cg_i64(cg, k));
    LLVMValueRef b0 = cg_part_start(cg, &par, blocks), b1 = cg_part_end(cg, &par, blocks);
    LLVMValueRef from = cg_mul(cg, b0, UPDATE_BLOCK), to = cg_mul(cg, b1, UPDATE_BLOCK);
    to = LLVMBuildSelect(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, to, cg_i64(cg, n), ""), to, cg_i64(cg, n), "");
    update_elements(cg, o, from, LLVMBuildSub(cg->b, to, from, ""), slot_base(cg, w), slot_base(cg, grad),
                    s0 >= 0 ? slot_base(cg, s0) : NULL, s1 >= 0 ? slot_base(cg, s1) : NULL, d[2], d[3], d[0], d[1]);
    cg_par_end(cg, &par, parts, 0);
}

void cg_emit_update(Cg *cg, const Graph *g, const Optimizer *o, int64_t *const slot[CG_OPT_SLOTS], LLVMValueRef step,
                    LLVMValueRef lr) {
    int np = g->params.len;
    LLVMValueRef *by_norm = calloc((size_t)(np > 0 ? np : 1), sizeof *by_norm);
    if (!by_norm) {
        cg_fail(cg, NULL, "out of memory");
        return;
    }
    for (int i = 0; i < np; i++) {
        const Node *p = g->params.items[i], *dp = updated_grad(g, i);
        if (!dp) continue;
        if (dp->type.batched || cg_size(cg->batch, dp) != type_elements(&p->type))
            cg_fail(cg, dp, "the gradient of '%s' does not have its shape", p->name ? p->name : "?");
    }
    if (cg->error) goto done;

    /* Clipping: by value (inside `clipped`), by each tensor's norm, by the joint norm. */
    if (o->clipnorm > 0)
        for (int i = 0; i < np; i++) {
            const Node *dp = updated_grad(g, i);
            if (!dp) continue;
            LLVMValueRef sum = l2_squared(cg, o, cg_base(cg, dp), type_elements(&dp->type), NULL);
            by_norm[i] = norm_factor(cg, sum, o->clipnorm);
        }
    LLVMValueRef by_global = NULL;
    if (o->global_clipnorm > 0) {
        LLVMValueRef sum = cg_f64(cg, 0);
        for (int i = 0; i < np; i++) {
            const Node *dp = updated_grad(g, i);
            if (dp) sum = fadd(cg, sum, l2_squared(cg, o, cg_base(cg, dp), type_elements(&dp->type), by_norm[i]));
        }
        by_global = norm_factor(cg, sum, o->global_clipnorm);
    }

    /* Adam's lr sqrt(1 - b2^t) / (1 - b1^t), with libm's pow as the reference. */
    LLVMValueRef lr_t = NULL;
    if (o->kind == OPT_ADAM) {
        LLVMValueRef t = LLVMBuildUIToFP(cg->b, step, cg->t_f64, "");
        LLVMValueRef a[2] = {cg_f64(cg, o->beta_2), t};
        LLVMValueRef b2t = cg_call(cg, cg->pow, a, 2);
        a[0] = cg_f64(cg, o->beta_1);
        LLVMValueRef b1t = cg_call(cg, cg->pow, a, 2);
        LLVMValueRef one = cg_f64(cg, 1);
        lr_t = fdiv(cg, fmul(cg, lr, sqrtd(cg, fsub(cg, one, b2t))), fsub(cg, one, b1t));
    }

    for (int i = 0; i < np; i++) {
        const Node *p = g->params.items[i], *dp = updated_grad(g, i);
        if (!dp) continue;
        int64_t s[CG_OPT_SLOTS];
        for (int w = 0; w < CG_OPT_SLOTS; w++) s[w] = slot[w] && slot[w][i] >= 0 ? slot[w][i] : -1;
        bool need0 = o->kind == OPT_ADAM || o->momentum != 0, need1 = o->kind != OPT_SGD;
        if (o->kind == OPT_RMSPROP) need0 = o->momentum > 0;
        if ((need0 && s[0] < 0) || (need1 && s[1] < 0)) {
            cg_fail(cg, p, "the memory plan has no optimizer state for it");
            break;
        }
        update_param(cg, o, type_elements(&p->type), cg_plan_offset(cg->plan, p), cg_plan_offset(cg->plan, dp), s[0],
                     s[1], by_norm[i], by_global, lr, lr_t);
    }
done:
    free(by_norm);
}
