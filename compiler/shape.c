#include "shape.h"

#include <string.h>

static Type scalar_f32(void) { return (Type){.dtype = DT_F32, .rank = 0}; }

bool shape_broadcast(const Type *a, const Type *b, Type *out) {
    Type r = {.dtype = a->dtype, .batched = a->batched || b->batched};
    r.rank = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < r.rank; i++) {
        int ia = a->rank - r.rank + i, ib = b->rank - r.rank + i;
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1) return false;
        r.dims[i] = da == 1 ? db : da;
    }
    *out = r;
    return true;
}

#define FAIL(...)                                              \
    do {                                                       \
        *why = arena_printf(a, __VA_ARGS__);                   \
        return false;                                          \
    } while (0)

#define TS(t) type_str(a, (t))

static bool need_f32(Arena *a, const Node *n, const Node *x, const char **why) {
    if (x->type.dtype == DT_F32) return true;
    FAIL("%s needs f32 values, but this is %s", op_name(n->op), TS(&x->type));
}

static bool need_seq(Arena *a, const Node *n, const Node *x, const char **why) {
    if (x->type.rank >= 1) return true;
    FAIL("%s needs a sequence (a value with a time axis), but this is %s", op_name(n->op), TS(&x->type));
}

static bool loss_rule(Arena *a, Node *n, const char **why) {
    const Type *p = &n->in[0]->type, *y = &n->in[1]->type;
    if (p->dtype != DT_F32) FAIL("the prediction must be f32, but it is %s", TS(p));
    if (!p->batched) FAIL("the prediction %s does not depend on the input", TS(p));
    if (n->op == OP_SCE) {
        if (y->dtype != DT_I32)
            FAIL("sparse_categorical_crossentropy takes class ids (i32) as targets, but the target is %s; "
                 "with one-hot targets use categorical_crossentropy", TS(y));
        if (p->rank < 1) FAIL("the prediction %s has no class axis", TS(p));
        bool same = y->rank == p->rank - 1, trailing1 = y->rank == p->rank && y->dims[y->rank - 1] == 1;
        for (int i = 0; i < p->rank - 1 && (same || trailing1); i++)
            if (y->dims[i] != p->dims[i]) same = trailing1 = false;
        if (!same && !trailing1) {
            Type ids = *p;
            ids.dtype = DT_I32;
            ids.rank--;
            FAIL("a prediction %s needs class ids of shape %s, but the target is %s", TS(p), TS(&ids), TS(y));
        }
    } else if (n->op == OP_ACCURACY && y->dtype == DT_I32) {
        Node tmp = *n;
        tmp.op = OP_SCE;
        if (!loss_rule(a, &tmp, why)) return false;
        n->accuracy = ACC_SPARSE;
    } else {
        if (y->dtype != DT_F32) FAIL("%s takes f32 targets, but the target is %s", op_name(n->op), TS(y));
        if (p->rank != y->rank || memcmp(p->dims, y->dims, sizeof(int64_t) * (size_t)p->rank) != 0)
            FAIL("the prediction is %s but the target is %s; they must have the same shape", TS(p), TS(y));
        if (n->op == OP_ACCURACY)
            n->accuracy = p->rank >= 1 && p->dims[p->rank - 1] > 1 ? ACC_CATEGORICAL : ACC_BINARY;
    }
    n->type = scalar_f32();
    return true;
}

bool shape_infer(Node *n, const char **why) {
    Arena *a = n->graph->arena;
    Node **in = n->in;
    Type t = {0};
    switch (n->op) {
    case OP_INPUT:
    case OP_PARAM:
    case OP_ZEROS:
    case OP_STATEVAR:
    case OP_DROPMASK:
    case OP_STEP_IN:
    case OP_STATE_IN:
    case OP_CAPTURE:
        return true; /* declared by their creator */
    case OP_CONST:
        n->type = scalar_f32();
        return true;
    case OP_NEG:
    case OP_TANH:
    case OP_SIGMOID:
    case OP_HARD_SIGMOID:
    case OP_RELU:
    case OP_EXP:
    case OP_LOG:
    case OP_RSQRT:
        if (!need_f32(a, n, in[0], why)) return false;
        n->type = in[0]->type;
        return true;
    case OP_EXTERN:
        if (in[0]->type.dtype != DT_F32)
            FAIL("extern '%s' takes f32 values (it is float %s(float)), but this is %s", n->ext->name, n->ext->name,
                 TS(&in[0]->type));
        n->type = in[0]->type;
        return true;
    case OP_ADD:
    case OP_SUB:
    case OP_MUL:
    case OP_DIV: {
        static const char *const verb[] = {"add", "subtract", "multiply", "divide"};
        const char *v = verb[n->op - OP_ADD];
        if (in[0]->type.dtype != DT_F32 || in[1]->type.dtype != DT_F32)
            FAIL("cannot %s %s and %s: arithmetic needs f32 values (token ids go through embedding first)", v,
                 TS(&in[0]->type), TS(&in[1]->type));
        if (!shape_broadcast(&in[0]->type, &in[1]->type, &t))
            FAIL("cannot %s %s and %s: the shapes do not match (nor broadcast)", v, TS(&in[0]->type),
                 TS(&in[1]->type));
        n->type = t;
        return true;
    }
    case OP_SOFTMAX:
        if (!need_f32(a, n, in[0], why)) return false;
        if (in[0]->type.rank < 1) FAIL("softmax needs a vector, but this is %s", TS(&in[0]->type));
        n->type = in[0]->type;
        return true;
    case OP_MATMUL: {
        const Type *x = &in[0]->type, *w = &in[1]->type;
        if (x->dtype != DT_F32 || w->dtype != DT_F32) FAIL("cannot multiply %s @ %s: matmul needs f32 values", TS(x), TS(w));
        if (x->rank < 1) FAIL("the left side of @ must have at least one axis, but it is %s", TS(x));
        if (w->batched || w->rank != 2)
            FAIL("the right side of @ must be a weight matrix [K, N] (a param), but it is %s", TS(w));
        if (x->dims[x->rank - 1] != w->dims[0])
            FAIL("cannot multiply %s @ %s: the inner dimensions %lld and %lld differ", TS(x), TS(w),
                 (long long)x->dims[x->rank - 1], (long long)w->dims[0]);
        t = *x;
        t.dims[t.rank - 1] = w->dims[1];
        n->type = t;
        return true;
    }
    case OP_EMBED: {
        const Type *ids = &in[0]->type, *tab = &in[1]->type;
        if (ids->dtype != DT_I32) FAIL("embedding takes token ids (i32), but this is %s", TS(ids));
        if (ids->rank + 1 > SEQC_MAX_RANK) FAIL("embedding of %s would have too many axes", TS(ids));
        t = *ids;
        t.dtype = DT_F32;
        t.dims[t.rank++] = tab->dims[1];
        n->type = t;
        return true;
    }
    case OP_NONZERO:
        n->type = in[0]->type;
        n->type.dtype = DT_F32;
        return true;
    case OP_SLICE: {
        const Type *x = &in[0]->type;
        if (x->rank < 1) FAIL("cannot split %s: it has no axis", TS(x));
        if (n->slice.start < 0 || n->slice.len <= 0 || n->slice.start + n->slice.len > x->dims[x->rank - 1])
            FAIL("slice [%lld, %lld) is outside %s", (long long)n->slice.start,
                 (long long)(n->slice.start + n->slice.len), TS(x));
        t = *x;
        t.dims[t.rank - 1] = n->slice.len;
        n->type = t;
        return true;
    }
    case OP_CONCAT: {
        t = in[0]->type;
        if (t.rank < 1) FAIL("cannot concatenate %s: it has no axis", TS(&t));
        for (int i = 1; i < n->nin; i++) {
            const Type *u = &in[i]->type;
            bool ok = u->dtype == t.dtype && u->rank == t.rank;
            for (int k = 0; ok && k < t.rank - 1; k++) ok = u->dims[k] == t.dims[k];
            if (!ok)
                FAIL("cannot concatenate %s and %s: all but the last axis must match", TS(&in[0]->type), TS(u));
            t.dims[t.rank - 1] += u->dims[u->rank - 1];
            t.batched = t.batched || u->batched;
        }
        n->type = t;
        return true;
    }
    case OP_TRANSPOSE:
        t = in[0]->type;
        if (t.batched || t.rank != 2) FAIL("transpose takes an unbatched matrix, not %s", TS(&t));
        t.dims[0] = in[0]->type.dims[1];
        t.dims[1] = in[0]->type.dims[0];
        n->type = t;
        return true;
    case OP_REVERSE:
        if (!need_seq(a, n, in[0], why)) return false;
        n->type = in[0]->type;
        return true;
    case OP_LAST:
    case OP_MAX_TIME:
    case OP_MEAN_TIME:
        if (!need_seq(a, n, in[0], why)) return false;
        if (n->op != OP_LAST && !need_f32(a, n, in[0], why)) return false;
        t = in[0]->type;
        memmove(t.dims, t.dims + 1, sizeof(int64_t) * (size_t)(t.rank - 1));
        t.rank--;
        t.dims[t.rank] = 0;
        n->type = t;
        return true;
    case OP_RESHAPE:
        /* The target type is set by the creator; the element count must agree. */
        if (type_elements(&n->type) != type_elements(&in[0]->type))
            FAIL("cannot reshape %s to %s", TS(&in[0]->type), TS(&n->type));
        n->type.batched = in[0]->type.batched;
        n->type.dtype = in[0]->type.dtype;
        return true;
    case OP_BATCHNORM: {
        const Type *x = &in[0]->type;
        if (!need_f32(a, n, in[0], why)) return false;
        if (x->rank < 1) FAIL("batchnorm needs values with a feature axis, but this is %s", TS(x));
        for (int i = 1; i < 5; i++)
            if (in[i]->type.rank != 1 || in[i]->type.dims[0] != x->dims[x->rank - 1])
                FAIL("batchnorm statistics %s do not match the features of %s", TS(&in[i]->type), TS(x));
        n->type = *x;
        return true;
    }
    case OP_SCAN: {
        /* Body outputs: new states (in order), then the per-step outputs. */
        Graph *body = n->scan.body;
        if (n->scan.nout < 0 || body->outputs.len != n->scan.nstate + n->scan.nout)
            FAIL("internal: scan body has %d outputs for %d states and %d outputs", body->outputs.len,
                 n->scan.nstate, n->scan.nout);
        for (int i = 0; i < n->scan.nstate; i++) {
            Node *init = in[n->scan.nseq + i], *next = body->outputs.items[i];
            Type want = init->type;
            if (!type_equal(&want, &next->type))
                FAIL("state %d enters the step as %s but leaves it as %s", i + 1, TS(&want), TS(&next->type));
        }
        int64_t steps = in[0]->type.dims[0];
        for (int i = 1; i < n->scan.nseq; i++)
            if (in[i]->type.dims[0] != steps)
                FAIL("scanned inputs have different lengths: %lld and %lld steps", (long long)steps,
                     (long long)in[i]->type.dims[0]);
        if (n->scan.keep_begin < 0 || n->scan.keep_end > steps || n->scan.keep_begin > n->scan.keep_end)
            FAIL("internal: scan keeps steps [%lld, %lld) of %lld", (long long)n->scan.keep_begin,
                 (long long)n->scan.keep_end, (long long)steps);
        /* A scan that walks some of the steps leaves only its last state and output. */
        if (n->scan.walk_end > 0 &&
            (n->scan.walk_begin < 0 || n->scan.walk_begin >= n->scan.walk_end || n->scan.walk_end > steps ||
             n->scan.sequences || n->scan.keep_begin != n->scan.keep_end))
            FAIL("internal: scan walks steps [%lld, %lld) of %lld", (long long)n->scan.walk_begin,
                 (long long)n->scan.walk_end, (long long)steps);
        if (n->scan.nout == 0) { /* a backward scan whose inputs need no gradient: states only */
            n->type = scalar_f32();
            return true;
        }
        Node *out = body->outputs.items[n->scan.nstate];
        t = out->type;
        t.batched = true;
        if (n->scan.sequences) {
            if (t.rank + 1 > SEQC_MAX_RANK) FAIL("the output sequence would have too many axes");
            memmove(t.dims + 1, t.dims, sizeof(int64_t) * (size_t)t.rank);
            t.dims[0] = steps;
            t.rank++;
        }
        n->type = t;
        return true;
    }
    case OP_SCAN_STATE: {
        Node *scan = in[0];
        if (scan->op != OP_SCAN || n->scan_state.index < 0 || n->scan_state.index >= scan->scan.nstate)
            FAIL("internal: scan_state %d of a node with %d states", n->scan_state.index, scan->scan.nstate);
        int64_t first, walked = scan_walked(scan, &first);
        if (n->scan_state.after < 0 || n->scan_state.after > walked)
            FAIL("internal: state after %lld steps of %lld", (long long)n->scan_state.after, (long long)walked);
        n->type = scan->in[scan->scan.nseq + n->scan_state.index]->type;
        return true;
    }
    case OP_SCAN_OUT: {
        Node *scan = in[0];
        if (scan->op != OP_SCAN || n->index < 1 || n->index >= scan->scan.nout)
            FAIL("internal: scan_output %d of a node with %d outputs", n->index, scan->scan.nout);
        const Node *out = scan->scan.body->outputs.items[scan->scan.nstate + n->index];
        t = out->type;
        if (t.rank + 1 > SEQC_MAX_RANK) FAIL("the output sequence would have too many axes");
        memmove(t.dims + 1, t.dims, sizeof(int64_t) * (size_t)t.rank);
        t.dims[0] = scan->scan.keep_end - scan->scan.keep_begin;
        t.rank++;
        t.batched = true;
        n->type = t;
        return true;
    }
    case OP_MEAN_LEAD:
    case OP_SUM_LEAD:
        if (!need_f32(a, n, in[0], why)) return false;
        if (in[0]->type.rank < 1) FAIL("%s needs a feature axis, but this is %s", op_name(n->op), TS(&in[0]->type));
        n->type = (Type){.dtype = DT_F32, .rank = 1, .dims = {in[0]->type.dims[in[0]->type.rank - 1]}};
        return true;
    case OP_TIME_SLICE:
        if (!need_seq(a, n, in[0], why)) return false;
        if (n->slice.start < 0 || n->slice.len < 1 || n->slice.start + n->slice.len > in[0]->type.dims[0])
            FAIL("internal: steps [%lld, %lld) of %s", (long long)n->slice.start,
                 (long long)(n->slice.start + n->slice.len), TS(&in[0]->type));
        n->type = in[0]->type;
        n->type.dims[0] = n->slice.len;
        return true;
    case OP_TIME_PAD:
        if (!need_seq(a, n, in[0], why)) return false;
        if (n->slice.start < 0 || n->slice.start + in[0]->type.dims[0] > n->slice.len)
            FAIL("internal: padding %s from step %lld to %lld steps", TS(&in[0]->type), (long long)n->slice.start,
                 (long long)n->slice.len);
        n->type = in[0]->type;
        n->type.dims[0] = n->slice.len;
        return true;
    case OP_ACT_GRAD:
    case OP_SOFTMAX_GRAD:
    case OP_MAX_TIME_GRAD:
    case OP_MEAN_TIME_GRAD:
    case OP_LOSS_GRAD:
        n->type = in[0]->type;
        return true;
    case OP_MATMUL_T: {
        const Type *dy = &in[0]->type, *w = &in[1]->type;
        if (dy->rank < 1 || w->rank != 2 || dy->dims[dy->rank - 1] != w->dims[1])
            FAIL("internal: matmul_t of %s and %s", TS(dy), TS(w));
        t = *dy;
        t.dims[t.rank - 1] = w->dims[0];
        n->type = t;
        return true;
    }
    case OP_MATMUL_W: {
        const Type *x = &in[0]->type, *dy = &in[1]->type;
        bool ok = x->rank == dy->rank && x->rank >= 1;
        for (int i = 0; ok && i < x->rank - 1; i++) ok = x->dims[i] == dy->dims[i];
        if (!ok) FAIL("internal: matmul_w of %s and %s", TS(x), TS(dy));
        n->type = (Type){.dtype = DT_F32, .rank = 2, .dims = {x->dims[x->rank - 1], dy->dims[dy->rank - 1]}};
        return true;
    }
    case OP_SUM_TO: {
        Type b;
        if (!shape_broadcast(&n->type, &in[0]->type, &b) || !type_equal(&b, &in[0]->type) ||
            (n->type.batched && !in[0]->type.batched))
            FAIL("internal: cannot sum %s down to %s", TS(&in[0]->type), TS(&n->type));
        n->type.dtype = DT_F32;
        return true;
    }
    case OP_EMBED_GRAD:
    case OP_SLICE_GRAD:
    case OP_PLACE_STEP:
        return true; /* declared by their creator */
    case OP_BCE:
    case OP_SCE:
    case OP_CCE:
    case OP_MSE:
    case OP_ACCURACY:
        return loss_rule(a, n, why);
    case OP_MEAN_ALL:
        if (!need_f32(a, n, in[0], why)) return false;
        n->type = scalar_f32();
        return true;
    case OP_COUNT:
        break;
    }
    FAIL("internal: no shape rule for %s", op_name(n->op));
}
