/* Graph -> LLVM module (see codegen.h). The memory plan, the IR helpers
 * (loops, conditionals, slab addressing), the module's functions (one per
 * node, one per scan, the entry point), and the host pass pipeline. The op
 * lowerings, one per op in the order of ops.def, are in codegen_ops.c. */
#define SEQC_CODEGEN_INTERNAL
#include "codegen.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Error.h>
#include <llvm-c/IRReader.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct CgModule {
    LLVMContextRef ctx;                 /* owned */
    LLVMModuleRef mod;                  /* in ctx; owned */
    bool optimized;
    CgPlan plan;                        /* arrays owned (malloc) */
    CgSignature sig;
    char *entry;                        /* owned: sig.name */
    CgSignature update_sig;             /* after cg_add_update */
    char *update;                       /* owned: update_sig.name, or NULL */
    CgTiming timing;
    CgStats stats;
    CgExternSymbol *externs;            /* owned: cg_collect_externs */
    int nexterns;
    char *name;                         /* owned: the LLVM module's, for cg_lower_module */
    CgBitcode bitcode;                  /* cg_bitcode's; buf owned */
};

double cg_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static char *vformat(const char *fmt, va_list ap) {
    if (!fmt) return NULL; /* every caller passes a literal; this keeps the compiler sure of it */
    va_list aq;
    va_copy(aq, ap);
    int len = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    char *s = malloc((size_t)(len < 0 ? 0 : len) + 1);
    if (!s) return NULL;
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    return s;
}

char *cg_format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

/* An internal error: the graph is not what the lowering of its op expects.
 * The first one is kept; lowering stops at the end of the node. */
void cg_fail(Cg *cg, const Node *n, const char *fmt, ...) {
    if (cg->error) return;
    va_list ap;
    va_start(ap, fmt);
    char *what = vformat(fmt, ap);
    va_end(ap);
    cg->error = cg_format("seqc: code generator: internal error at %s node %d%s%s%s: %s", n ? op_name(n->op) : "?",
                          n ? n->id : -1, n && n->name ? " '" : "", n && n->name ? n->name : "",
                          n && n->name ? "'" : "", what ? what : "(no memory for the message)");
    free(what);
}

/* ---- the memory plan ------------------------------------------------------- */

static int64_t align_up(int64_t x) { return (x + CG_ALIGN - 1) / CG_ALIGN * CG_ALIGN; }

int64_t cg_size(int64_t batch, const Node *n) { return type_elements(&n->type) * (n->type.batched ? batch : 1); }

/* Working storage beyond the node's value: a scan's carried states (each of
 * its initial value's type), f64 accumulators of a scatter-add. */
static int64_t extra_bytes(int64_t batch, const Node *n) {
    if (n->op == OP_SCAN) {
        int64_t bytes = 0;
        for (int i = 0; i < n->scan.nstate && n->scan.nseq + i < n->nin; i++)
            bytes += align_up(4 * cg_size(batch, n->in[n->scan.nseq + i]));
        return bytes;
    }
    if ((n->op == OP_SCE || n->op == OP_CCE) && n->type.rank == 0) {
        /* Per row of classes: its loss term, then its log-sum-exp, in f64
         * (codegen_ops.c emit_loss; the loss's gradient reads the second). */
        const Node *p = n->in[0], *grad = cg_loss_writes_grad(n);
        int64_t C = p->type.rank ? p->type.dims[p->type.rank - 1] : 1, R = cg_size(batch, p) / (C > 0 ? C : 1);
        /* With the bias gradient, a row of C doubles per block of rows after them. */
        int64_t blocks = grad && cg_loss_writes_bias(grad) ? (R + CG_SCE_BLOCK - 1) / CG_SCE_BLOCK : 0;
        return 2 * 8 * R + 8 * blocks * C;
    }
    if (n->op == OP_EMBED_GRAD) /* f64 accumulators, then a bit for each row the last call wrote */
        return 8 * type_elements(&n->type) + 8 * ((n->type.dims[0] + 63) / 64);
    return 0;
}

/* A capture of a scan's body reads the value it captures where that value
 * lives, when the two have one type: the scan copies nothing (a recurrent
 * matrix, at every call of an inference step). Returns the offset, or -1. */
static int64_t capture_alias(const CgPlan *p, const Node *scan, const Node *c) {
    if (!scan || c->op != OP_CAPTURE || c->index < 0 || c->index >= scan->scan.ncapture) return -1;
    const Node *from = scan->in[scan->scan.nseq + scan->scan.nstate + c->index];
    if (!type_equal(&from->type, &c->type)) return -1;
    return cg_plan_offset(p, from);
}

/* Where a scan keeps its carried state i: its working storage holds the
 * states one after another, each of its initial value's type. The slab
 * offset, or -1 when the scan has no working storage yet. */
static int64_t scan_state_offset(const CgPlan *p, const Node *scan, int i) {
    const CgGraphPlan *gp = cg_plan_graph(p, scan->graph);
    if (!gp || scan->id >= gp->nnodes || gp->extra[scan->id] < 0) return -1;
    int64_t off = gp->extra[scan->id];
    for (int k = 0; k < i; k++) off += align_up(4 * cg_size(p->batch, scan->in[scan->scan.nseq + k]));
    return off;
}

/* A state input of a scan's body reads the carried state where the scan
 * keeps it when the two have one type: no copy in at every step. The scan
 * writes the state after the step has run and its outputs are copied out.
 * Returns the offset, or -1. */
static int64_t state_alias(const CgPlan *p, const Node *scan, const Node *x) {
    if (!scan || x->op != OP_STATE_IN || x->index < 0 || x->index >= scan->scan.nstate) return -1;
    if (!type_equal(&scan->in[scan->scan.nseq + x->index]->type, &x->type)) return -1;
    return scan_state_offset(p, scan, x->index);
}

static void mark_unread(const Graph *g, bool *unread);

/* Whether the host reads model graph g's value x: the manifest's tensors
 * (manifest.c) that a step computes, the loss, the output, the metrics, the
 * gradients and the states' new values. */
static bool host_reads(const Graph *g, const Node *x) {
    if (x == g->loss || x == g->output) return true;
    const PtrVec *lists[3] = {&g->outputs, &g->metrics, &g->grads};
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < lists[l]->len; i++)
            if (lists[l]->items[i] == x) return true;
    for (int i = 0; i < g->updates.len; i++) {
        const Update *u = g->updates.items[i];
        if (u->value == x || u->var == x) return true;
    }
    return false;
}

/* The gradient a loss's row pass writes (cg_loss_writes_grad) goes over the
 * logits it is the gradient of when nothing else that runs reads them (the
 * softmax of a loss fused with it is the model's output, which training
 * does not compute: mark_unread), nor the host: the pass reads a row, then writes the
 * row's gradient over it, into cache lines it holds already, and the output
 * layer's working set is half as large (wordlm: 20 MB, not 40, in a 32 MB
 * cache). The offset, or -1. */
static int64_t logits_alias(const CgPlan *p, const Graph *g, const Node *x, const bool *unread, int gi) {
    if (x->op != OP_LOSS_GRAD || x->nin < 1 || g->parent || !unread) return -1;
    const Node *z = x->in[0];
    if (!type_equal(&z->type, &x->type) || host_reads(g, z)) return -1;
    const Node *loss = NULL;
    for (int k = z->id + 1; k < g->nodes.len; k++) {
        const Node *n = g->nodes.items[k];
        bool reads = false;
        for (int a = 0; a < n->nin; a++) reads |= n->in[a] == z;
        if (!reads || unread[k] || n == x) continue;
        if (loss || n->op != OP_SCE || cg_loss_writes_grad(n) != x) return -1;
        loss = n;
    }
    return loss ? p->graphs[gi].offset[z->id] : -1;
}

static bool keeps_between_calls(const Graph *g) {
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_EMBED_GRAD || (n->op == OP_SCAN && keeps_between_calls(n->scan.body))) return true;
    }
    return false;
}

/* Sequences stored time-major: step t's slice of every example one block,
 * which a scan's step reads and writes where it lies (CgGraphPlan.indirect)
 * or copies whole, instead of one row an example. A sequence qualifies
 * when everything that writes and reads it takes either layout:
 * - scans walking every step (a step input; an output kept at every step);
 * - an embedding writing it (row (b, t) from id (b, t)), an embedding's
 *   gradient reading it (row (b, t) into id (b, t)'s row, in (b, t) order);
 * - a step's gradient placed in a sequence of zeros (the last step's, where
 *   a recurrent layer returns that step alone);
 * - products taking a row to a row (x W, dy W^T), both sides time-major:
 *   a row's value does not depend on where the rows lie;
 * - elementwise nodes of time-major values of their own type alone (the
 *   two directions' input gradients added up);
 * - a weight gradient x^T dy with both operands time-major: it sums over
 *   the rows in the order they lie, every step's examples, then the next
 *   step's (the sum's order, so its last bits, differ from batch-major; no
 *   result depends on the threads either way).
 * Nothing else reads them, nor does the host. An LSTM then reads its input
 * projection, its states and its kept gates where they lie at every step,
 * and writes its gradient sequence there too. */
static bool walks_all(const Node *scan) {
    int64_t first, walked = scan_walked(scan, &first);
    return first == 0 && walked == scan->in[0]->type.dims[0];
}

/* Scan s writes its output j (0: the scan's own value), one slice a step,
 * at every step it walks. */
static bool writes_every_step(const Graph *g, const Node *s, int j) {
    if (s->op != OP_SCAN || !walks_all(s)) return false;
    if (j == 0) return s->scan.sequences && s->scan.nout > 0;
    int same = 0; /* one sequence of this output: the step writes one slice */
    for (int k = s->id + 1; k < g->nodes.len; k++) {
        const Node *v = g->nodes.items[k];
        same += v->op == OP_SCAN_OUT && v->in[0] == s && v->index == j;
    }
    return same == 1 && j < s->scan.nout && s->scan.keep_begin == 0 && s->scan.keep_end == s->in[0]->type.dims[0];
}

/* An elementwise node whose operands are all time-major values of its own
 * type (the sum of two directions' input gradients): element i of each
 * lies where element i of the others does, in either layout. */
static bool map_time_major(const Node *x, const bool *tm) {
    for (int k = 0; k < x->nin; k++)
        if (!tm[x->in[k]->id] || !type_equal(&x->in[k]->type, &x->type)) return false;
    return x->nin > 0;
}

/* Whether x's writer takes the time-major layout, given tm of the others. */
static bool tm_writer(const Graph *g, const Node *x, const bool *tm) {
    if (!x->type.batched || x->type.rank < 2 || x->type.dtype != DT_F32) return false;
    switch (x->op) {
    case OP_SCAN_OUT: return x->index >= 1 && writes_every_step(g, x->in[0], x->index);
    case OP_SCAN: return writes_every_step(g, x, 0);
    case OP_EMBED: return x->in[0]->type.batched && x->in[0]->type.rank == 1 && x->type.rank == 2;
    case OP_MATMUL: case OP_MATMUL_T: return tm[x->in[0]->id];
    case OP_PLACE_STEP: return x->in[0]->type.batched;
    default: return cg_is_map(x) && map_time_major(x, tm);
    }
}

/* Whether reader r of x (time-major) takes that layout, given tm. */
static bool tm_reader(const Node *r, const Node *x, const bool *tm) {
    switch (r->op) {
    case OP_SCAN:
        for (int k = r->scan.nseq; k < r->nin; k++)
            if (r->in[k] == x) return false; /* a state or a capture */
        return walks_all(r);
    case OP_SCAN_OUT: case OP_SCAN_STATE: return true; /* the scan's other values, not its sequence */
    case OP_MATMUL: case OP_MATMUL_T: return r->in[0] == x && r->in[1] != x && tm[r->id];
    case OP_MATMUL_W: return tm[r->in[0]->id] && tm[r->in[1]->id];
    case OP_EMBED_GRAD:
        for (int k = 0; k < r->nin; k++)
            if (r->in[k] == x && (k % 2 == 0 || r->in[k - 1]->type.rank != 1 || !r->in[k - 1]->type.batched))
                return false;
        return true;
    default: return cg_is_map(r) && tm[r->id] && map_time_major(r, tm);
    }
}

static bool *time_major_values(const Graph *g) {
    bool *tm = calloc((size_t)g->nodes.len + 1, sizeof *tm);
    if (!tm) return NULL;
    for (int i = 0; i < g->nodes.len; i++) tm[i] = !host_reads(g, g->nodes.items[i]);
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = 0; i < g->nodes.len; i++) {
            const Node *x = g->nodes.items[i];
            bool ok = tm[i] && tm_writer(g, x, tm);
            for (int j = i + 1; ok && j < g->nodes.len; j++) {
                const Node *r = g->nodes.items[j];
                for (int k = 0; ok && k < r->nin; k++)
                    if (r->in[k] == x) ok = tm_reader(r, x, tm);
            }
            changed |= ok != tm[i];
            tm[i] = ok;
        }
    }
    return tm;
}

/* Body value x is computed in the step for one output alone (not a state,
 * not the body's input, no other output): the step may write it where the
 * output's slice lies. */
static bool own_value(const Graph *body, const Node *x) {
    if (x->op == OP_STATE_IN || x->op == OP_STEP_IN || x->op == OP_CAPTURE) return false;
    int outputs = 0;
    for (int i = 0; i < body->outputs.len; i++) outputs += body->outputs.items[i] == x;
    return outputs == 1;
}

/* The sequence whose step slice body node x of scan is: the sequence a step
 * input reads, or the SCAN_OUT that keeps a body output; NULL for others. */
static const Node *step_sequence(const Node *scan, const Node *x) {
    const Graph *body = scan->scan.body;
    int nstate = scan->scan.nstate;
    if (x->op == OP_STEP_IN) return x->index >= 0 && x->index < scan->scan.nseq ? scan->in[x->index] : NULL;
    if (scan->scan.sequences && scan->scan.nout > 0 && body->outputs.len > nstate && body->outputs.items[nstate] == x &&
        own_value(body, x))
        return scan;
    int output = 0;
    for (int i = nstate + 1; i < body->outputs.len && !output; i++)
        if (body->outputs.items[i] == x) output = i - nstate;
    const Graph *g = scan->graph;
    for (int i = scan->id + 1; output && i < g->nodes.len; i++) {
        const Node *u = g->nodes.items[i];
        if (u->op == OP_SCAN_OUT && u->in[0] == scan && u->index == output) return u;
    }
    return NULL;
}

/* Whether body node x of scan is a step's slice of a time-major sequence:
 * a step input, or an output the step computes for it alone (a body output
 * kept twice, or also a state, is copied: own_value). */
static bool step_slice(const Node *scan, const bool *tm, const Node *x) {
    if (!scan || !tm || scan->graph->parent) return false;
    const Node *seq = step_sequence(scan, x);
    return seq && tm[seq->id] && (x->op == OP_STEP_IN || own_value(scan->scan.body, x));
}

/* The scan whose final states scan s starts from, read by s alone (the
 * steps before truncated BPTT's window, then the window): s carries its
 * states on in that scan's working storage, where it left them, and those
 * SCAN_STATEs are that storage. NULL when s starts otherwise. */
static const Node *continued(const Node *s, const int *uses) {
    if (s->op != OP_SCAN || s->scan.nstate < 1 || s->in[s->scan.nseq]->op != OP_SCAN_STATE) return NULL;
    const Node *prev = s->in[s->scan.nseq]->in[0];
    /* Nothing but those states reads prev: no one wants them once s runs. */
    if (prev->scan.nstate != s->scan.nstate || uses[prev->id] != prev->scan.nstate) return NULL;
    int64_t first, walked = scan_walked(prev, &first);
    for (int i = 0; i < s->scan.nstate; i++) {
        const Node *x = s->in[s->scan.nseq + i];
        if (x->op != OP_SCAN_STATE || x->in[0] != prev || x->scan_state.index != i ||
            x->scan_state.after != walked || uses[x->id] != 1 ||
            !type_equal(&x->type, &prev->in[prev->scan.nseq + i]->type))
            return NULL;
    }
    return prev;
}

/* A time slice of a model graph's value that embeddings and their
 * gradients alone read, as ids (CgGraphPlan.view). */
static bool ids_window(const Graph *g, const Node *x, const int *uses) {
    if (x->op != OP_TIME_SLICE || g->parent) return false;
    int ids = 0;
    for (int i = x->id + 1; i < g->nodes.len; i++) {
        const Node *r = g->nodes.items[i];
        for (int k = 0; k < r->nin; k++)
            ids += r->in[k] == x && ((r->op == OP_EMBED && k == 0) || (r->op == OP_EMBED_GRAD && k % 2 == 0));
    }
    return ids == uses[x->id];
}

/* A step's matrix products in FLOPs, the scans inside included. */
static double step_flops(const Graph *body, int64_t batch) {
    double f = 0;
    for (int i = 0; i < body->nodes.len; i++) {
        const Node *n = body->nodes.items[i];
        if (n->nin < 1) continue;
        double x = (double)cg_size(batch, n->in[0]);
        if (n->op == OP_MATMUL && n->in[1]->type.rank == 2) f += 2 * x * (double)n->in[1]->type.dims[1];
        else if (n->op == OP_MATMUL_T && n->in[1]->type.rank == 2) f += 2 * x * (double)n->in[1]->type.dims[0];
        else if (n->op == OP_MATMUL_W && n->in[1]->type.rank >= 1)
            f += 2 * x * (double)n->in[1]->type.dims[n->in[1]->type.rank - 1];
        else if (n->op == OP_SCAN) f += step_flops(n->scan.body, batch) * (double)n->in[0]->type.dims[0];
    }
    return f;
}

/* Scans whose steps are smaller than this run side by side (below). */
#define SIDE_BY_SIDE_FLOPS (16.0 * CG_PART_FLOPS)

/* The scan that runs beside model node i, or -1: i is a scan, and a later
 * scan reads nothing i writes (a bidirectional layer's two directions,
 * forward or backward), and the steps of both are small. The entry runs
 * the two as the two parts of one task, each on a thread of its own, their
 * kernels whole (rt_parallel from a part): a step of 32 rows split over
 * threads spends more on meeting than it saves. The nodes between them run
 * before the two when they read nothing i writes (an input projection),
 * after them otherwise (i's weight gradients): needs_i, when not NULL, gets
 * which (by node id; g->nodes.len entries). Their bodies get storage apart
 * (plan_graph). */
static int side_by_side(const Graph *g, int i, int64_t batch, bool *needs_i) {
    const Node *a = g->nodes.items[i];
    if (g->parent || a->op != OP_SCAN || step_flops(a->scan.body, batch) >= SIDE_BY_SIDE_FLOPS) return -1;
    bool *needs = needs_i ? needs_i : calloc((size_t)g->nodes.len, sizeof *needs);
    if (!needs) return -1;
    memset(needs, 0, sizeof *needs * (size_t)g->nodes.len);
    needs[i] = true;
    int found = -1;
    for (int j = i + 1; j < g->nodes.len && found < 0; j++) {
        const Node *x = g->nodes.items[j];
        for (int k = 0; k < x->nin; k++) needs[j] = needs[j] || needs[x->in[k]->id];
        if (!needs[j] && x->op == OP_SCAN && step_flops(x->scan.body, batch) < SIDE_BY_SIDE_FLOPS) found = j;
    }
    if (!needs_i) free(needs);
    return found;
}

/* The scans that run side by side: by node id, the other scan of its pair,
 * or -1. Pairs are taken in order, the nodes between a pair's two scans
 * in no pair (the entry moves them before or after the two). The plan and
 * the entry both ask this, so they agree. */
static int *scan_pairs(const Graph *g, int64_t batch) {
    int *partner = malloc(sizeof *partner * ((size_t)g->nodes.len + 1));
    bool *needs = calloc((size_t)g->nodes.len + 1, sizeof *needs);
    if (!partner || !needs) {
        free(partner);
        free(needs);
        return NULL;
    }
    for (int i = 0; i < g->nodes.len; i++) partner[i] = -1;
    for (int i = 0; i < g->nodes.len; i++) {
        int j = side_by_side(g, i, batch, needs);
        if (j < 0) continue;
        partner[i] = j;
        partner[j] = i;
        i = j;
    }
    free(needs);
    return partner;
}

static int chain_length(const Graph *g, int i, const bool *taken);

/* The kernels lower_graph makes of g, in order, each given to visit: the
 * epilogue e found at position i (its kernel runs at `last`), or else the
 * chain of len nodes from i (len 1: a node alone). taken says what is
 * computed already, by a kernel or by none (mark_unread); visit returns
 * false to stop. */
typedef bool (*KernelVisit)(void *ctx, const Graph *g, int i, const CgEpilogue *e, int last, int len);

static void walk_kernels(const Graph *g, bool *taken, KernelVisit visit, void *ctx) {
    for (int i = 0; i < g->nodes.len; i++) {
        if (taken[i]) continue;
        const Node *grad = cg_loss_writes_grad(g->nodes.items[i]), *bias = grad ? cg_loss_writes_bias(grad) : NULL;
        if (grad) taken[grad->id] = true;
        if (bias) taken[bias->id] = true;
        int last, len = 1;
        CgEpilogue *e = cg_epilogue_find(g, i, taken, &last);
        if (!e) len = chain_length(g, i, taken);
        bool go_on = visit(ctx, g, i, e, e ? last : i, len);
        cg_epilogue_free(e);
        if (!go_on) return;
        i += len - 1; /* the chain's other nodes have no function of their own */
    }
}

static bool mark_unstored(void *ctx, const Graph *g, int i, const CgEpilogue *e, int last, int len) {
    bool *unstored = ctx;
    (void)last;
    if (e) cg_epilogue_unstored(e, unstored);
    const Node *const *chain = (const Node *const *)&g->nodes.items[i];
    for (int m = 0; len > 1 && m < len; m++)
        unstored[chain[m]->id] = chain[m]->op != OP_CONCAT && !cg_read_outside(g, chain[m], chain, len);
    return true;
}

/* The nodes g's fused kernels compute and never store (members of an
 * epilogue or a chain that nothing outside reads), by node id: the plan
 * gives them no place. unread: mark_unread's, or NULL. NULL when out of
 * memory (then every node has one). */
static bool *unstored_members(const Graph *g, const bool *unread) {
    int n = g->nodes.len;
    bool *taken = calloc((size_t)n + 1, sizeof *taken), *unstored = calloc((size_t)n + 1, sizeof *unstored);
    if (taken && unstored) {
        if (unread) memcpy(taken, unread, sizeof *taken * (size_t)n);
        walk_kernels(g, taken, mark_unstored, unstored);
    } else {
        free(unstored);
        unstored = NULL;
    }
    free(taken);
    return unstored;
}

static bool plan_graph(CgPlan *p, const Graph *g, const Node *scan, const bool *tm, int64_t *cursor) {
    CgGraphPlan *grown = realloc(p->graphs, sizeof *grown * (size_t)(p->ngraphs + 1));
    if (!grown) return false;
    p->graphs = grown;
    int gi = p->ngraphs++;
    CgGraphPlan *gp = &p->graphs[gi];
    memset(gp, 0, sizeof *gp);
    gp->g = g;
    gp->nnodes = g->nodes.len;
    size_t n = (size_t)(gp->nnodes ? gp->nnodes : 1);
    gp->offset = malloc(sizeof(int64_t) * n);
    gp->bytes = malloc(sizeof(int64_t) * n);
    gp->extra = malloc(sizeof(int64_t) * n);
    gp->indirect = calloc(n, sizeof(bool));
    gp->view = calloc(n, sizeof(bool));
    const Node **from = calloc(n, sizeof *from); /* by scan id: the scan it goes on from (continued) */
    Arena a;
    arena_init(&a);
    int *uses = graph_uses(g, &a);
    bool ok = gp->offset && gp->bytes && gp->extra && gp->indirect && gp->view && from;
    for (int i = 0; ok && i < g->nodes.len; i++) from[i] = continued(g->nodes.items[i], uses);
    bool *unread = !g->parent && g->loss ? calloc(n, sizeof *unread) : NULL;
    if (unread) mark_unread(g, unread);
    /* Without mark_unread's answer (out of memory) the plan cannot walk the
     * kernels lower_graph will make: every node gets a place. */
    bool *unstored = g->parent || !g->loss || unread ? unstored_members(g, unread) : NULL;
    for (int i = 0; ok && i < g->nodes.len; i++) {
        const Node *node = g->nodes.items[i];
        int64_t bytes = 4 * cg_size(p->batch, node), alias = capture_alias(p, scan, node);
        if (alias < 0) alias = state_alias(p, scan, node);
        if (node->op == OP_SCAN_STATE) /* the final state of a scan another goes on from */
            for (int k = i + 1; k < g->nodes.len && alias < 0; k++)
                if (from[k] == node->in[0]) alias = scan_state_offset(p, node->in[0], node->scan_state.index);
        if (alias < 0) alias = logits_alias(p, g, node, unread, gi);
        if (ids_window(g, node, uses)) {
            const Node *x = node->in[0];
            alias = p->graphs[gi].offset[x->id] + 4 * node->slice.start * (type_elements(&x->type) / x->type.dims[0]);
            p->graphs[gi].view[i] = true;
        }
        p->graphs[gi].bytes[i] = bytes;
        if (node->op == OP_SCAN && node->scan.nout == 0) {
            p->graphs[gi].bytes[i] = 0; /* a scan that leaves only its states has no value */
            p->graphs[gi].offset[i] = *cursor;
        } else if (alias < 0 && step_slice(scan, tm, node)) {
            p->graphs[gi].indirect[i] = true;
            p->graphs[gi].bytes[i] = 8;
            p->graphs[gi].offset[i] = *cursor;
            *cursor += align_up(8);
        } else if (alias >= 0) {
            p->graphs[gi].offset[i] = alias;
        } else if (unstored && unstored[i]) {
            p->graphs[gi].bytes[i] = 0; /* lives in registers only */
            p->graphs[gi].offset[i] = *cursor;
        } else {
            p->graphs[gi].offset[i] = *cursor;
            *cursor += align_up(bytes > 0 ? bytes : 1);
        }
        int64_t extra = extra_bytes(p->batch, node);
        if (from[i]) {
            p->graphs[gi].extra[i] = p->graphs[gi].extra[from[i]->id];
            continue;
        }
        p->graphs[gi].extra[i] = extra > 0 ? *cursor : -1;
        *cursor += align_up(extra);
    }
    free(from);
    free(unread);
    free(unstored);
    arena_free(&a);
    if (!ok) return false;
    /* A scan's body holds values only while the scan runs (what a step
     * leaves is copied out), so the bodies of a graph's scans share one
     * region after its own storage, each from its start. A body that keeps
     * values from one call to the next (an embedding's gradient) has its own,
     * before that region. p->graphs may move in the calls: it is not held. */
    int64_t *body_end = calloc((size_t)g->nodes.len + 1, sizeof *body_end);
    int *partner = scan_pairs(g, p->batch);
    if (!body_end || !partner) {
        free(body_end);
        free(partner);
        return false;
    }
    for (int pass = 0; pass < 2 && ok; pass++) {
        int64_t shared = *cursor, end = *cursor;
        for (int i = 0; i < g->nodes.len && ok; i++) {
            const Node *node = g->nodes.items[i];
            if (node->op != OP_SCAN || keeps_between_calls(node->scan.body) != (pass == 0)) continue;
            /* The second of two scans side by side lays its body after the
             * first one's (a body of the first pass lies before `shared`). */
            int64_t at = pass == 0 ? *cursor : shared;
            if (pass == 1 && partner[i] >= 0 && partner[i] < i && body_end[partner[i]] > at) at = body_end[partner[i]];
            ok = plan_graph(p, node->scan.body, node, tm, &at);
            body_end[i] = at;
            if (pass == 0) *cursor = at;
            else if (at > end) end = at;
        }
        if (pass == 1) *cursor = end;
    }
    free(body_end);
    free(partner);
    return ok;
}

static void plan_free(CgPlan *p) {
    for (int i = 0; i < p->ngraphs; i++) {
        free(p->graphs[i].offset);
        free(p->graphs[i].bytes);
        free(p->graphs[i].extra);
        free(p->graphs[i].indirect);
        free(p->graphs[i].view);
        free(p->graphs[i].time_major);
    }
    free(p->graphs);
    for (int w = 0; w < CG_OPT_SLOTS; w++) free(p->slot[w]);
    memset(p, 0, sizeof *p);
}

const CgGraphPlan *cg_plan_graph(const CgPlan *p, const Graph *g) {
    for (int i = 0; i < p->ngraphs; i++)
        if (p->graphs[i].g == g) return &p->graphs[i];
    return NULL;
}

/* The plan of n's graph, when it holds n (NULL otherwise). */
static const CgGraphPlan *node_plan(const CgPlan *p, const Node *n) {
    const CgGraphPlan *gp = cg_plan_graph(p, n->graph);
    return gp && n->id >= 0 && n->id < gp->nnodes ? gp : NULL;
}

int64_t cg_plan_offset(const CgPlan *p, const Node *n) {
    const CgGraphPlan *gp = node_plan(p, n);
    return gp ? gp->offset[n->id] : -1;
}

/* ---- IR helpers -------------------------------------------------------------- */

LLVMValueRef cg_i64(Cg *cg, int64_t v) { return LLVMConstInt(cg->t_i64, (unsigned long long)v, true); }
LLVMValueRef cg_splat(Cg *cg, LLVMValueRef c) {
    if (cg->lanes <= 1) return c;
    LLVMValueRef e[64];
    for (int k = 0; k < cg->lanes; k++) e[k] = c;
    return LLVMConstVector(e, (unsigned)cg->lanes);
}

LLVMValueRef cg_f32(Cg *cg, double v) { return cg_splat(cg, LLVMConstReal(cg->t_f32, v)); }
LLVMValueRef cg_f64(Cg *cg, double v) { return cg_splat(cg, LLVMConstReal(cg->t_f64, v)); }

LLVMTypeRef cg_vec_type(LLVMTypeRef t, int lanes) { return lanes > 1 ? LLVMVectorType(t, (unsigned)lanes) : t; }

LLVMTypeRef cg_lanes_of(Cg *cg, LLVMTypeRef scalar) { return cg_vec_type(scalar, cg->lanes); }

LLVMValueRef cg_broadcast(Cg *cg, LLVMValueRef s, int lanes) {
    if (lanes <= 1) return s;
    LLVMTypeRef vt = cg_vec_type(LLVMTypeOf(s), lanes);
    LLVMValueRef one = LLVMBuildInsertElement(cg->b, LLVMGetPoison(vt), s, LLVMConstInt(cg->t_i32, 0, false), "");
    return LLVMBuildShuffleVector(cg->b, one, LLVMGetPoison(vt), LLVMConstNull(cg_vec_type(cg->t_i32, lanes)), "");
}

LLVMValueRef cg_load_vec(Cg *cg, LLVMValueRef p, LLVMValueRef idx, int lanes) {
    LLVMValueRef v = LLVMBuildLoad2(cg->b, cg_vec_type(cg->t_f32, lanes), cg_gep(cg, cg->t_f32, p, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

void cg_store_vec(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) {
    LLVMValueRef st = LLVMBuildStore(cg->b, v, cg_gep(cg, cg->t_f32, p, idx));
    LLVMSetAlignment(st, 4);
}

/* <lanes x i1>, the first `valid` set. */
static LLVMValueRef lane_mask(Cg *cg, int lanes, int valid) {
    LLVMValueRef bits[64];
    for (int l = 0; l < lanes; l++) bits[l] = LLVMConstInt(cg->t_i1, l < valid, false);
    return LLVMConstVector(bits, (unsigned)lanes);
}

static LLVMValueRef masked_intrinsic(Cg *cg, const char *name, LLVMTypeRef vt, LLVMTypeRef *fn_type,
                                     LLVMTypeRef *params, unsigned nparams, LLVMTypeRef ret) {
    LLVMTypeRef over[2] = {vt, cg->t_ptr};
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->mod, LLVMLookupIntrinsicID(name, strlen(name)), over, 2);
    *fn_type = LLVMFunctionType(ret, params, nparams, false);
    return fn;
}

LLVMValueRef cg_load_vec_masked(Cg *cg, LLVMValueRef p, LLVMValueRef idx, int lanes, int valid) {
    LLVMTypeRef vt = cg_vec_type(cg->t_f32, lanes), ft;
    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_i32, LLVMVectorType(cg->t_i1, (unsigned)lanes), vt};
    LLVMValueRef fn = masked_intrinsic(cg, "llvm.masked.load", vt, &ft, params, 4, vt);
    LLVMValueRef args[4] = {cg_gep(cg, cg->t_f32, p, idx), LLVMConstInt(cg->t_i32, 4, false), lane_mask(cg, lanes, valid),
                            LLVMConstNull(vt)};
    return LLVMBuildCall2(cg->b, ft, fn, args, 4, "");
}

void cg_store_vec_masked(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v, int valid) {
    LLVMTypeRef vt = LLVMTypeOf(v), ft;
    int lanes = (int)LLVMGetVectorSize(vt);
    LLVMTypeRef params[4] = {vt, cg->t_ptr, cg->t_i32, LLVMVectorType(cg->t_i1, (unsigned)lanes)};
    LLVMValueRef fn = masked_intrinsic(cg, "llvm.masked.store", vt, &ft, params, 4, cg->t_void);
    LLVMValueRef args[4] = {v, cg_gep(cg, cg->t_f32, p, idx), LLVMConstInt(cg->t_i32, 4, false),
                            lane_mask(cg, lanes, valid)};
    LLVMBuildCall2(cg->b, ft, fn, args, 4, "");
}

LLVMValueRef cg_stack_array(Cg *cg, LLVMTypeRef t, int64_t n) {
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
    LLVMValueRef a = LLVMBuildAlloca(cg->b, LLVMArrayType2(t, (uint64_t)n), "");
    LLVMSetAlignment(a, 64);
    LLVMPositionBuilderAtEnd(cg->b, here);
    return a;
}

LLVMTypeRef cg_elem(Cg *cg, const Node *n) { return n->type.dtype == DT_I32 ? cg->t_i32 : cg->t_f32; }

LLVMValueRef cg_gep(Cg *cg, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx) {
    return LLVMBuildInBoundsGEP2(cg->b, t, p, &idx, 1, "");
}

LLVMValueRef cg_base(Cg *cg, const Node *n) {
    int64_t off = cg_plan_offset(cg->plan, n);
    if (off < 0) {
        cg_fail(cg, n, "the memory plan has no buffer for it");
        off = 0;
    }
    LLVMValueRef at = cg_gep(cg, cg->t_i8, cg->slab, cg_i64(cg, off));
    return cg_indirect(cg->plan, n) ? LLVMBuildLoad2(cg->b, cg->t_ptr, at, "") : at;
}

bool cg_indirect(const CgPlan *p, const Node *n) {
    const CgGraphPlan *gp = node_plan(p, n);
    return gp && gp->indirect[n->id];
}

bool cg_time_major(const CgPlan *p, const Node *n) {
    const CgGraphPlan *gp = node_plan(p, n);
    return gp && gp->time_major && gp->time_major[n->id];
}

bool cg_view(const CgPlan *p, const Node *n) {
    const CgGraphPlan *gp = node_plan(p, n);
    return gp && gp->view[n->id];
}

LLVMValueRef cg_extra(Cg *cg, const Node *n) {
    const CgGraphPlan *gp = node_plan(cg->plan, n);
    int64_t off = gp ? gp->extra[n->id] : -1;
    if (off < 0) {
        cg_fail(cg, n, "the memory plan has no working storage for it");
        off = 0;
    }
    return cg_gep(cg, cg->t_i8, cg->slab, cg_i64(cg, off));
}

LLVMValueRef cg_ex(Cg *cg, const Node *n, LLVMValueRef b) {
    if (cg_view(cg->plan, n)) {
        const Node *x = n->in[0];
        int64_t step = type_elements(&x->type) / x->type.dims[0];
        return cg_gep(cg, cg_elem(cg, n), cg_ex(cg, x, b), cg_i64(cg, n->slice.start * step));
    }
    LLVMValueRef p = cg_base(cg, n);
    if (!n->type.batched) return p;
    return cg_gep(cg, cg_elem(cg, n), p, LLVMBuildMul(cg->b, b, cg_i64(cg, type_elements(&n->type)), ""));
}

LLVMValueRef cg_load(Cg *cg, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx) {
    return LLVMBuildLoad2(cg->b, t, cg_gep(cg, t, p, idx), "");
}

void cg_store(Cg *cg, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) {
    LLVMBuildStore(cg->b, v, cg_gep(cg, t, p, idx));
}

LLVMValueRef cg_loadf(Cg *cg, const Node *n, LLVMValueRef p, LLVMValueRef idx) {
    if (n->type.dtype == DT_I32) return LLVMBuildSIToFP(cg->b, cg_load(cg, cg->t_i32, p, idx), cg->t_f32, "");
    return cg_load(cg, cg->t_f32, p, idx);
}

LLVMValueRef cg_loadd(Cg *cg, const Node *n, LLVMValueRef p, LLVMValueRef idx) {
    if (n->type.dtype == DT_I32) return LLVMBuildSIToFP(cg->b, cg_load(cg, cg->t_i32, p, idx), cg->t_f64, "");
    return LLVMBuildFPExt(cg->b, cg_load(cg, cg->t_f32, p, idx), cg->t_f64, "");
}

void cg_storef(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v) { cg_store(cg, cg->t_f32, p, idx, v); }

void cg_stored_as_f32(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef d) {
    cg_store(cg, cg->t_f32, p, idx, LLVMBuildFPTrunc(cg->b, d, cg->t_f32, ""));
}

LLVMValueRef cg_add(Cg *cg, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(cg->b, a, b, ""); }
LLVMValueRef cg_mul(Cg *cg, LLVMValueRef a, int64_t m) { return LLVMBuildMul(cg->b, a, cg_i64(cg, m), ""); }
LLVMValueRef cg_mad(Cg *cg, LLVMValueRef a, int64_t m, LLVMValueRef b) { return cg_add(cg, cg_mul(cg, a, m), b); }

LLVMValueRef cg_call_lanes(Cg *cg, LLVMTypeRef fn_type, LLVMValueRef fn, LLVMValueRef *args, unsigned n) {
    if (n == 0 || LLVMGetTypeKind(LLVMTypeOf(args[0])) != LLVMVectorTypeKind)
        return LLVMBuildCall2(cg->b, fn_type, fn, args, n, "");
    LLVMTypeRef vt = LLVMVectorType(LLVMGetReturnType(fn_type), LLVMGetVectorSize(LLVMTypeOf(args[0])));
    LLVMValueRef out = LLVMGetPoison(vt), lane_args[CG_MAX_ARGS];
    for (unsigned k = 0; k < LLVMGetVectorSize(vt); k++) {
        LLVMValueRef at = LLVMConstInt(cg->t_i32, k, false);
        for (unsigned a = 0; a < n && a < CG_MAX_ARGS; a++) lane_args[a] = LLVMBuildExtractElement(cg->b, args[a], at, "");
        out = LLVMBuildInsertElement(cg->b, out, LLVMBuildCall2(cg->b, fn_type, fn, lane_args, n, ""), at, "");
    }
    return out;
}

LLVMValueRef cg_call(Cg *cg, CgFn f, LLVMValueRef *args, unsigned n) { return cg_call_lanes(cg, f.ty, f.fn, args, n); }
LLVMValueRef cg_call1(Cg *cg, CgFn f, LLVMValueRef x) { return cg_call(cg, f, &x, 1); }

LLVMValueRef cg_local(Cg *cg, LLVMTypeRef t, LLVMValueRef init) {
    LLVMBasicBlockRef here = LLVMGetInsertBlock(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
    LLVMValueRef a = LLVMBuildAlloca(cg->b, t, "");
    LLVMPositionBuilderAtEnd(cg->b, here);
    if (init) LLVMBuildStore(cg->b, init, a);
    return a;
}

LLVMValueRef cg_get(Cg *cg, LLVMTypeRef t, LLVMValueRef local) { return LLVMBuildLoad2(cg->b, t, local, ""); }
void cg_set(Cg *cg, LLVMValueRef local, LLVMValueRef v) { LLVMBuildStore(cg->b, v, local); }

static LLVMBasicBlockRef block(Cg *cg, const char *name) { return LLVMAppendBasicBlockInContext(cg->ctx, cg->fn, name); }

/* for (i = 0; i < n; i++): the body follows loop_begin, loop_end closes it. */
CgLoop cg_loop_begin(Cg *cg, int64_t n) { return cg_loop_begin_n(cg, cg_i64(cg, n)); }

CgLoop cg_loop_begin_n(Cg *cg, LLVMValueRef n) {
    CgLoop l;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(cg->b);
    l.header = block(cg, "loop");
    LLVMBasicBlockRef body = block(cg, "body");
    l.exit = block(cg, "done");
    LLVMBuildBr(cg->b, l.header);
    LLVMPositionBuilderAtEnd(cg->b, l.header);
    l.i = LLVMBuildPhi(cg->b, cg->t_i64, "i");
    LLVMValueRef zero = cg_i64(cg, 0);
    LLVMAddIncoming(l.i, &zero, &pre, 1);
    LLVMBuildCondBr(cg->b, LLVMBuildICmp(cg->b, LLVMIntSLT, l.i, n, ""), body, l.exit);
    LLVMPositionBuilderAtEnd(cg->b, body);
    return l;
}

static LLVMValueRef loop_back(Cg *cg, CgLoop *l) {
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(cg->b);
    LLVMValueRef next = LLVMBuildNSWAdd(cg->b, l->i, cg_i64(cg, 1), "");
    LLVMAddIncoming(l->i, &next, &latch, 1);
    LLVMValueRef br = LLVMBuildBr(cg->b, l->header);
    LLVMPositionBuilderAtEnd(cg->b, l->exit);
    return br;
}

void cg_loop_end(Cg *cg, CgLoop *l) { loop_back(cg, l); }

void cg_loop_end_rolled(Cg *cg, CgLoop *l) {
    LLVMValueRef br = loop_back(cg, l);
    /* !llvm.loop !{self, !{"llvm.loop.unroll.disable"}}: the node names
     * itself, made through a temporary. */
    LLVMMetadataRef self = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef what = LLVMMDStringInContext2(cg->ctx, "llvm.loop.unroll.disable", 24);
    LLVMMetadataRef hint = LLVMMDNodeInContext2(cg->ctx, &what, 1);
    LLVMMetadataRef ops[2] = {self, hint};
    LLVMMetadataRef loop = LLVMMDNodeInContext2(cg->ctx, ops, 2);
    LLVMMetadataReplaceAllUsesWith(self, loop);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), LLVMMetadataAsValue(cg->ctx, loop));
}

/* The context's access group: a distinct empty node, which the C API can
 * only make by parsing it. */
static LLVMMetadataRef access_group(Cg *cg) {
    if (cg->access_group) return cg->access_group;
    static const char text[] = "!g = !{!0}\n!0 = distinct !{}\n";
    LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(text, sizeof text - 1, "access group");
    LLVMModuleRef m = NULL;
    char *msg = NULL;
    if (LLVMParseIRInContext(cg->ctx, buf, &m, &msg)) { /* takes buf */
        LLVMDisposeMessage(msg);
        return NULL;
    }
    LLVMValueRef op;
    LLVMGetNamedMetadataOperands(m, "g", &op); /* !{!0} */
    LLVMGetMDNodeOperands(op, &op);
    cg->access_group = LLVMValueAsMetadata(op);
    LLVMDisposeModule(m); /* the node lives as long as the context */
    return cg->access_group;
}

void cg_loop_end_parallel(Cg *cg, CgLoop *l) {
    LLVMMetadataRef group = access_group(cg);
    if (!group) {
        cg_loop_end(cg, l);
        return;
    }
    /* The loop's blocks are the header and every block made after it. */
    unsigned kind = LLVMGetMDKindIDInContext(cg->ctx, "llvm.access.group", 17);
    LLVMValueRef tag = LLVMMetadataAsValue(cg->ctx, group);
    for (LLVMBasicBlockRef bb = l->header; bb; bb = LLVMGetNextBasicBlock(bb))
        for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i))
            if (LLVMIsALoadInst(i) || LLVMIsAStoreInst(i)) LLVMSetMetadata(i, kind, tag);
    LLVMValueRef br = loop_back(cg, l);
    LLVMMetadataRef self = LLVMTemporaryMDNode(cg->ctx, NULL, 0);
    LLVMMetadataRef what[2] = {LLVMMDStringInContext2(cg->ctx, "llvm.loop.parallel_accesses", 27), group};
    LLVMMetadataRef ops[2] = {self, LLVMMDNodeInContext2(cg->ctx, what, 2)};
    LLVMMetadataRef loop = LLVMMDNodeInContext2(cg->ctx, ops, 2);
    LLVMMetadataReplaceAllUsesWith(self, loop);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(cg->ctx, "llvm.loop", 9), LLVMMetadataAsValue(cg->ctx, loop));
}

CgIf cg_if(Cg *cg, LLVMValueRef cond) {
    CgIf f;
    f.then = block(cg, "then");
    f.els = block(cg, "else");
    f.end = NULL;
    LLVMBuildCondBr(cg->b, cond, f.then, f.els);
    LLVMPositionBuilderAtEnd(cg->b, f.then);
    return f;
}

void cg_else(Cg *cg, CgIf *f) {
    f->end = block(cg, "endif");
    LLVMBuildBr(cg->b, f->end);
    LLVMPositionBuilderAtEnd(cg->b, f->els);
}

void cg_endif(Cg *cg, CgIf *f) {
    if (!f->end) { /* no else: the else block is the join */
        LLVMBuildBr(cg->b, f->els);
        LLVMPositionBuilderAtEnd(cg->b, f->els);
        return;
    }
    LLVMBuildBr(cg->b, f->end);
    LLVMPositionBuilderAtEnd(cg->b, f->end);
}

/* Data the interpreter would refuse (an id outside the vocabulary, a class id
 * outside the classes): stop at once rather than read outside the slab. */
void cg_trap_if(Cg *cg, LLVMValueRef cond) {
    LLVMBasicBlockRef bad = block(cg, "bad_data"), ok = block(cg, "ok");
    LLVMBuildCondBr(cg->b, cond, bad, ok);
    LLVMPositionBuilderAtEnd(cg->b, bad);
    cg_call(cg, cg->trap, NULL, 0);
    LLVMBuildUnreachable(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, ok);
}

void cg_copy(Cg *cg, LLVMValueRef dst, LLVMValueRef src, int64_t elems) {
    if (elems <= 0) return;
    LLVMBuildMemCpy(cg->b, dst, 4, src, 4, cg_i64(cg, 4 * elems));
}

void cg_zero(Cg *cg, const Node *n) {
    int64_t bytes = 4 * cg_size(cg->batch, n);
    if (bytes > 0) LLVMBuildMemSet(cg->b, cg_base(cg, n), LLVMConstInt(cg->t_i8, 0, false), cg_i64(cg, bytes), 4);
}

/* The interpreter's copy_examples: `len` elements of every example, example b
 * of dst at dst_off from example b of src at src_off (offsets in elements,
 * possibly computed at run time). An unbatched source serves every example. */
void cg_copy_examples(Cg *cg, const Node *at, LLVMValueRef dst, const Type *dt, LLVMValueRef dst_off, LLVMValueRef src,
                      const Type *st, LLVMValueRef src_off, int64_t len) {
    int64_t de = type_elements(dt), se = type_elements(st);
    if (st->batched && !dt->batched) {
        cg_fail(cg, at, "a batched value cannot be stored in an unbatched one");
        return;
    }
    if (len > de || len > se) {
        cg_fail(cg, at, "%lld elements do not fit in %lld (from %lld)", (long long)len, (long long)de, (long long)se);
        return;
    }
    LLVMValueRef from = cg->copy_from, to = cg->copy_to;
    if (!dt->batched) {
        CgIf first = {0};
        if (from) first = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, from, cg_i64(cg, 0), ""));
        cg_copy(cg, cg_gep(cg, cg->t_i32, dst, dst_off), cg_gep(cg, cg->t_i32, src, src_off), len);
        if (from) cg_endif(cg, &first);
        return;
    }
    if (st->batched && len == de && len == se) {
        /* Whole examples on both sides: one copy of all of them. */
        if (!from) {
            cg_copy(cg, cg_gep(cg, cg->t_i32, dst, dst_off), cg_gep(cg, cg->t_i32, src, src_off), cg->batch * len);
            return;
        }
        LLVMValueRef d = cg_add(cg, cg_mul(cg, from, de), dst_off), s = cg_add(cg, cg_mul(cg, from, se), src_off);
        LLVMBuildMemCpy(cg->b, cg_gep(cg, cg->t_i32, dst, d), 4, cg_gep(cg, cg->t_i32, src, s), 4,
                        cg_mul(cg, LLVMBuildSub(cg->b, to, from, ""), 4 * len));
        return;
    }
    CgLoop lb = from ? cg_loop_begin_n(cg, LLVMBuildSub(cg->b, to, from, "")) : cg_loop_begin(cg, cg->batch);
    LLVMValueRef ex = from ? cg_add(cg, lb.i, from) : lb.i;
    LLVMValueRef d = cg_add(cg, cg_mul(cg, ex, de), dst_off);
    LLVMValueRef s = cg_add(cg, st->batched ? cg_mul(cg, ex, se) : cg_i64(cg, 0), src_off);
    cg_copy(cg, cg_gep(cg, cg->t_i32, dst, d), cg_gep(cg, cg->t_i32, src, s), len);
    /* Unrolled over the batch, the copies of a scan's step became thousands
     * of moves in one block, which the back end's scheduler takes seconds to
     * order; a loop of copies costs nothing at run time. */
    cg_loop_end_rolled(cg, &lb);
}

/* ---- functions ------------------------------------------------------------------ */

/* Every node function has the entry point's first three arguments. */
static void fn_begin(Cg *cg, const char *name, LLVMTypeRef ty, bool external) {
    cg->fn = LLVMAddFunction(cg->mod, name, ty);
    if (!external) LLVMSetLinkage(cg->fn, LLVMInternalLinkage);
    cg->slab = LLVMGetParam(cg->fn, 0);
    cg->training = LLVMGetParam(cg->fn, 1);
    cg->seed = LLVMGetParam(cg->fn, 2);
    cg->allocas = block(cg, "entry");
    LLVMBasicBlockRef start = block(cg, "start");
    LLVMPositionBuilderAtEnd(cg->b, start);
}

static void fn_end(Cg *cg) {
    LLVMBuildRetVoid(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
    LLVMBuildBr(cg->b, LLVMGetNextBasicBlock(cg->allocas));
}

static int graph_index(const Cg *cg, const Graph *g) {
    for (int i = 0; i < cg->plan->ngraphs; i++)
        if (cg->plan->graphs[i].g == g) return i;
    return -1;
}

/* Ops whose value someone else writes: the caller (inputs, params, state
 * variables), the scan (placeholders in its body, its extra outputs). */
bool cg_has_code(OpKind op) {
    switch (op) {
    case OP_INPUT: case OP_PARAM: case OP_STATEVAR: case OP_STEP_IN: case OP_STATE_IN: case OP_CAPTURE:
    case OP_SCAN_OUT: case OP_SCAN_STATE:
        return false;
    default:
        return true;
    }
}

/* Ops whose unbatched result may come from batched inputs (interp.c's list). */
static bool reduces_batch(OpKind op) {
    switch (op) {
    case OP_MEAN_LEAD: case OP_SUM_LEAD: case OP_SCAN: case OP_SCAN_STATE:
    case OP_BCE: case OP_SCE: case OP_CCE: case OP_MSE: case OP_ACCURACY: case OP_MEAN_ALL:
    case OP_MATMUL_W: case OP_SUM_TO: case OP_EMBED_GRAD: case OP_SLICE_GRAD: case OP_PLACE_STEP:
        return true;
    default:
        return false;
    }
}

static void lower_graph(Cg *cg, const Graph *g);

/* What a scan copies at every step: into the body's placeholders before
 * it (`out` false), out of the body after it (the sequence output, the kept
 * steps of its extra outputs, the next states: those last, since a kept
 * state input reads the carried state in place). */
typedef struct ScanCopies {
    const Node *scan;
    const Node *const *init;    /* the initial states, each the type of its carried state */
    const int64_t *state_offset;
    const Node *const *uses;    /* the scan's SCAN_OUT and SCAN_STATE readers */
    int nuse;
    int64_t T, kb, ke;
} ScanCopies;

/* A state input the plan put where the scan carries that state (state_alias). */
static bool state_in_place(Cg *cg, const ScanCopies *sc, const Node *b) {
    return b->op == OP_STATE_IN && b->index >= 0 && b->index < sc->scan->scan.nstate &&
           sc->state_offset[b->index] == cg_plan_offset(cg->plan, b);
}

/* The elements (of every example) the copies of one side move. */
static int64_t scan_copy_elements(Cg *cg, const ScanCopies *sc, bool out) {
    const Graph *body = sc->scan->scan.body;
    int64_t total = 0;
    if (!out) {
        for (int k = 0; k < body->nodes.len; k++) {
            const Node *b = body->nodes.items[k];
            if ((b->op == OP_STEP_IN || b->op == OP_STATE_IN) && !state_in_place(cg, sc, b) && !cg_indirect(cg->plan, b))
                total += cg_size(cg->batch, b);
        }
        return total;
    }
    for (int i = 0; i < body->outputs.len; i++)
        if (!cg_indirect(cg->plan, body->outputs.items[i])) total += cg_size(cg->batch, body->outputs.items[i]);
    return total;
}

/* Copies between body value x, `step` elements an example, and step t's
 * slice of sequence seq (into_seq: into the sequence). A time-major
 * sequence's slice is one block holding the examples one after another, as
 * x does; a batch-first one's, a row of each example. */
static void copy_step(Cg *cg, const Node *seq, LLVMValueRef t, const Node *x, int64_t step, bool into_seq) {
    LLVMValueRef zero = cg_i64(cg, 0), xp = cg_base(cg, x), sp = cg_base(cg, seq), at = cg_mul(cg, t, step);
    const Type *st = &seq->type;
    if (cg_time_major(cg->plan, seq)) {
        sp = cg_gep(cg, cg->t_f32, sp, cg_mul(cg, t, cg->batch * step));
        st = &x->type;
        at = zero;
    }
    if (into_seq) cg_copy_examples(cg, seq, sp, st, at, xp, &x->type, zero, step);
    else cg_copy_examples(cg, x, xp, &x->type, zero, sp, st, at, step);
}

static void scan_copies(Cg *cg, const ScanCopies *sc, bool out, LLVMValueRef t) {
    const Node *n = sc->scan;
    const Graph *body = n->scan.body;
    int nseq = n->scan.nseq, nstate = n->scan.nstate, nout = n->scan.nout;
    LLVMValueRef zero = cg_i64(cg, 0), state[CG_MAX_STATES];
    for (int i = 0; i < nstate; i++) state[i] = cg_gep(cg, cg->t_i8, cg->slab, cg_i64(cg, sc->state_offset[i]));
    if (!out) {
        for (int k = 0; k < body->nodes.len; k++) {
            const Node *b = body->nodes.items[k];
            if (b->op == OP_STEP_IN) {
                if (b->index < 0 || b->index >= nseq) {
                    cg_fail(cg, b, "sequence %d of %d", b->index, nseq);
                    return;
                }
                if (cg_indirect(cg->plan, b)) continue; /* read where it lies */
                const Node *seq = n->in[b->index];
                int64_t step = type_elements(&seq->type) / sc->T;
                if (step != type_elements(&b->type)) cg_fail(cg, b, "steps of %lld elements", (long long)step);
                copy_step(cg, seq, t, b, step, false);
            } else if (b->op == OP_STATE_IN) {
                if (b->index < 0 || b->index >= nstate) {
                    cg_fail(cg, b, "state %d of %d", b->index, nstate);
                    return;
                }
                const Node *st = sc->init[b->index];
                if (type_elements(&st->type) != type_elements(&b->type)) cg_fail(cg, b, "the state's size differs");
                if (state_in_place(cg, sc, b)) continue;
                cg_copy_examples(cg, b, cg_base(cg, b), &b->type, zero, state[b->index], &st->type, zero,
                                 type_elements(&b->type));
            }
        }
        return;
    }
    const Node *o0 = nout > 0 ? body->outputs.items[nstate] : NULL;
    if (o0 && n->scan.sequences && !(cg_indirect(cg->plan, o0) && step_sequence(n, o0) == n))
        copy_step(cg, n, t, o0, type_elements(&o0->type), true);
    for (int k = 0; k < sc->nuse; k++) {
        const Node *u = sc->uses[k];
        if (u->op != OP_SCAN_OUT) continue;
        const Node *o = body->outputs.items[nstate + u->index];
        if (cg_indirect(cg->plan, o) && step_sequence(n, o) == u) continue; /* written where it lies */
        int64_t e = type_elements(&o->type);
        if (type_elements(&u->type) != (sc->ke - sc->kb) * e) {
            cg_fail(cg, u, "the step output does not fit the kept steps");
            continue;
        }
        LLVMValueRef kept = LLVMBuildAnd(cg->b, LLVMBuildICmp(cg->b, LLVMIntSGE, t, cg_i64(cg, sc->kb), ""),
                                         LLVMBuildICmp(cg->b, LLVMIntSLT, t, cg_i64(cg, sc->ke), ""), "");
        CgIf f = cg_if(cg, kept);
        copy_step(cg, u, LLVMBuildSub(cg->b, t, cg_i64(cg, sc->kb), ""), o, e, true);
        cg_endif(cg, &f);
    }
    for (int i = 0; i < nstate; i++) {
        const Node *next = body->outputs.items[i];
        if (cg_plan_offset(cg->plan, next) == sc->state_offset[i]) continue; /* the state passes through */
        cg_copy_examples(cg, next, state[i], &sc->init[i]->type, zero, cg_base(cg, next), &next->type, zero,
                         type_elements(&next->type));
    }
}

/* One side's copies, split over threads by examples when they are large
 * enough: each example's copies stay in their order on one thread. */
static void scan_copies_split(Cg *cg, const ScanCopies *sc, bool out, LLVMValueRef t) {
    int64_t parts = cg_max_parts(cg, (double)scan_copy_elements(cg, sc, out), CG_PART_COPY, cg->batch);
    /* An unbatched state is written by one part: no other may read it as an
     * output of the step at the same time. */
    const Node *n = sc->scan;
    for (int i = n->scan.nstate; out && i < n->scan.body->outputs.len; i++) {
        const Node *o = n->scan.body->outputs.items[i];
        if (o->op == OP_STATE_IN && !o->type.batched) parts = 1;
    }
    if (parts < 2) {
        scan_copies(cg, sc, out, t);
        return;
    }
    CgPar par;
    LLVMValueRef t_val = LLVMBuildIntToPtr(cg->b, t, cg->t_ptr, "");
    cg_par_begin_node(cg, &par, &t_val, 1);
    cg->copy_from = cg_part_start(cg, &par, cg->batch);
    cg->copy_to = cg_part_end(cg, &par, cg->batch);
    scan_copies(cg, sc, out, LLVMBuildPtrToInt(cg->b, par.vals[1], cg->t_i64, ""));
    cg->copy_from = cg->copy_to = NULL;
    cg_par_end(cg, &par, parts, 0);
}

/* The body's step slices (CgGraphPlan.indirect) at step t: step t's block
 * of the time-major sequence, a step input's or a kept output's. */
static void step_slices(Cg *cg, const Node *n, LLVMValueRef t) {
    const Graph *body = n->scan.body;
    const CgGraphPlan *bp = cg_plan_graph(cg->plan, body);
    for (int k = 0; bp && k < body->nodes.len; k++) {
        if (!bp->indirect[k]) continue;
        const Node *x = body->nodes.items[k], *seq = step_sequence(n, x);
        if (!seq) {
            cg_fail(cg, x, "a step slice without its sequence");
            return;
        }
        LLVMValueRef at = cg_gep(cg, cg->t_i8, cg_base(cg, seq), cg_mul(cg, t, 4 * cg_size(cg->batch, x)));
        LLVMBuildStore(cg->b, at, cg_gep(cg, cg->t_i8, cg->slab, cg_i64(cg, bp->offset[k])));
    }
}

/* A SCAN_STATE the plan put where the scan carries that state (continued). */
static bool state_read_in_place(Cg *cg, const Node *u, const int64_t *state_offset) {
    return cg_plan_offset(cg->plan, u) == state_offset[u->scan_state.index];
}

/* SCAN: inputs nseq sequences [T, ...], nstate initial states, ncapture
 * captures; the interpreter's ev_scan, step for step. The body's nodes are
 * functions of their own, called in order at every step; the placeholders are
 * filled by copies, the carried states live in the scan's working storage. */
static void emit_scan(Cg *cg, const Node *n) {
    const Graph *body = n->scan.body;
    int nseq = n->scan.nseq, nstate = n->scan.nstate, ncap = n->scan.ncapture, nout = n->scan.nout;
    if (nseq < 1 || nout < 0 || n->nin != nseq + nstate + ncap || body->outputs.len != nstate + nout) {
        cg_fail(cg, n, "%d inputs and %d body outputs for %d sequences, %d states, %d captures, %d outputs", n->nin,
                body->outputs.len, nseq, nstate, ncap, nout);
        return;
    }
    int64_t T = n->in[0]->type.dims[0];
    if (T < 1) {
        cg_fail(cg, n, "a scan over %lld steps", (long long)T);
        return;
    }
    for (int i = 0; i < nseq; i++)
        if (n->in[i]->type.rank < 1 || n->in[i]->type.dims[0] != T) {
            cg_fail(cg, n, "sequence %d does not have %lld steps", i, (long long)T);
            return;
        }
    int64_t first, walked = scan_walked(n, &first);
    int bi = graph_index(cg, body);
    if (bi < 0) {
        cg_fail(cg, n, "the memory plan has no storage for the body");
        return;
    }
    LLVMValueRef *fns = cg->fns[bi];

    /* The carried states, each of its initial value's type. */
    LLVMValueRef state[CG_MAX_STATES];
    int64_t state_offset[CG_MAX_STATES]; /* in the slab (scan_state_offset) */
    const Node *init[CG_MAX_STATES];
    if (nstate > CG_MAX_STATES) {
        cg_fail(cg, n, "%d states (at most %d)", nstate, CG_MAX_STATES);
        return;
    }
    for (int i = 0; i < nstate; i++) {
        init[i] = n->in[nseq + i];
        const Node *next = body->outputs.items[i];
        if (type_elements(&next->type) != type_elements(&init[i]->type)) {
            cg_fail(cg, n, "state %d changes size in the step", i);
            return;
        }
        state_offset[i] = scan_state_offset(cg->plan, n, i);
        if (state_offset[i] < 0) {
            cg_fail(cg, n, "the memory plan has no working storage for it");
            return;
        }
        state[i] = cg_gep(cg, cg->t_i8, cg->slab, cg_i64(cg, state_offset[i]));
        if (cg_plan_offset(cg->plan, init[i]) == state_offset[i]) continue; /* left here by the scan before */
        cg_copy(cg, state[i], cg_base(cg, init[i]), cg_size(cg->batch, init[i]));
    }
    LLVMValueRef zero = cg_i64(cg, 0);
    for (int k = 0; k < body->nodes.len; k++) {
        const Node *c = body->nodes.items[k];
        if (c->op != OP_CAPTURE) continue;
        if (c->index < 0 || c->index >= ncap) {
            cg_fail(cg, c, "capture %d of %d", c->index, ncap);
            return;
        }
        const Node *from = n->in[nseq + nstate + c->index];
        if (type_elements(&from->type) != type_elements(&c->type)) {
            cg_fail(cg, c, "the captured value does not have the capture's size");
            return;
        }
        if (cg_plan_offset(cg->plan, c) == cg_plan_offset(cg->plan, from)) continue; /* read in place */
        cg_copy_examples(cg, c, cg_base(cg, c), &c->type, zero, cg_base(cg, from), &from->type, zero,
                         type_elements(&c->type));
    }
    /* The nodes that read this scan's extra outputs and intermediate states. */
    const Graph *g = n->graph;
    int nuse = 0;
    const Node **uses = calloc((size_t)g->nodes.len + 1, sizeof *uses);
    if (!uses) {
        cg_fail(cg, n, "out of memory");
        return;
    }
    for (int k = n->id + 1; k < g->nodes.len; k++) {
        const Node *u = g->nodes.items[k];
        if ((u->op != OP_SCAN_OUT && u->op != OP_SCAN_STATE) || u->in[0] != n) continue;
        if (u->op == OP_SCAN_OUT && (u->index < 1 || u->index >= nout)) cg_fail(cg, u, "output %d of %d", u->index, nout);
        if (u->op == OP_SCAN_STATE && (u->scan_state.index < 0 || u->scan_state.index >= nstate ||
                                       u->scan_state.after < 0 || u->scan_state.after > walked))
            cg_fail(cg, u, "state %d after %lld steps", u->scan_state.index, (long long)u->scan_state.after);
        uses[nuse++] = u;
    }
    int64_t kb = n->scan.keep_begin, ke = n->scan.keep_end;
    if (kb < 0 || ke > T || kb > ke) cg_fail(cg, n, "kept steps [%lld, %lld) of %lld", (long long)kb, (long long)ke, (long long)T);
    if (cg->error) goto done;

    for (int k = 0; k < nuse; k++) {
        const Node *u = uses[k];
        if (u->op == OP_SCAN_STATE && u->scan_state.after == 0 && !state_read_in_place(cg, u, state_offset))
            cg_copy_examples(cg, u, cg_base(cg, u), &u->type, zero, state[u->scan_state.index],
                             &init[u->scan_state.index]->type, zero, type_elements(&u->type));
    }
    const Node *out = nout > 0 ? body->outputs.items[nstate] : NULL;
    if (out && n->scan.sequences && type_elements(&n->type) != T * type_elements(&out->type))
        cg_fail(cg, n, "the step output does not fit the sequence");
    if (out && !n->scan.sequences && type_elements(&n->type) != type_elements(&out->type))
        cg_fail(cg, n, "the step output does not fit the result");

    CgLoop lw = cg_loop_begin(cg, walked);
    LLVMValueRef t = n->scan.reverse ? LLVMBuildSub(cg->b, cg_i64(cg, first + walked - 1), lw.i, "t")
                                     : cg_add(cg, lw.i, cg_i64(cg, first));
    ScanCopies sc = {n, init, state_offset, uses, nuse, T, kb, ke};
    scan_copies_split(cg, &sc, false, t);
    step_slices(cg, n, t);
    LLVMValueRef args[3] = {cg->slab, cg->training, cg->seed};
    for (int k = 0; k < body->nodes.len; k++) {
        const Node *b = body->nodes.items[k];
        if (b->op != OP_STEP_IN && b->op != OP_STATE_IN && fns[k]) LLVMBuildCall2(cg->b, cg->t_node, fns[k], args, 3, "");
    }
    scan_copies_split(cg, &sc, true, t);
    for (int k = 0; k < nuse; k++) {
        const Node *u = uses[k];
        if (u->op != OP_SCAN_STATE || u->scan_state.after == 0 || state_read_in_place(cg, u, state_offset)) continue;
        CgIf f = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, lw.i, cg_i64(cg, u->scan_state.after - 1), ""));
        cg_copy_examples(cg, u, cg_base(cg, u), &u->type, zero, state[u->scan_state.index],
                         &init[u->scan_state.index]->type, zero, type_elements(&u->type));
        cg_endif(cg, &f);
    }
    cg_loop_end(cg, &lw);
    /* Output 0 at the last step walked: the body still holds that step. */
    if (out && !n->scan.sequences)
        cg_copy_examples(cg, n, cg_base(cg, n), &n->type, zero, cg_base(cg, out), &out->type, zero,
                         type_elements(&out->type));
done:
    free(uses);
}

LLVMValueRef cg_helper_begin(Cg *cg, const char *name, LLVMTypeRef ty, CgSaved *s, bool *made) {
    LLVMValueRef fn = LLVMGetNamedFunction(cg->mod, name);
    *made = !fn;
    if (fn) return fn;
    *s = (CgSaved){cg->fn, cg->slab, cg->training, cg->seed, cg->allocas, LLVMGetInsertBlock(cg->b), NULL};
    fn = LLVMAddFunction(cg->mod, name, ty);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    cg_noinline(cg, fn);
    cg->fn = fn;
    cg->allocas = LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry");
    s->start = LLVMAppendBasicBlockInContext(cg->ctx, fn, "start");
    LLVMPositionBuilderAtEnd(cg->b, s->start);
    return fn;
}

void cg_helper_end(Cg *cg, const CgSaved *s) {
    LLVMBuildRetVoid(cg->b);
    LLVMPositionBuilderAtEnd(cg->b, cg->allocas);
    LLVMBuildBr(cg->b, s->start);
    cg->fn = s->fn;
    cg->slab = s->slab;
    cg->training = s->training;
    cg->seed = s->seed;
    cg->allocas = s->allocas;
    LLVMPositionBuilderAtEnd(cg->b, s->here);
}

/* The task type of runtime/pool.h: void (ptr ctx, i64 part, i64 nparts, ptr scratch). */
static LLVMTypeRef task_type(Cg *cg) {
    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_i64, cg->t_i64, cg->t_ptr};
    return LLVMFunctionType(cg->t_void, params, 4, false);
}

void cg_par_begin(Cg *cg, CgPar *p, const char *name, const LLVMValueRef *vals, int nvals) {
    /* The caller's values travel in an array of pointers in its frame,
     * which lives until rt_parallel returns. */
    p->nvals = nvals;
    p->flops = 0;
    p->ctx = cg_stack_array(cg, cg->t_ptr, nvals > 0 ? nvals : 1);
    for (int k = 0; k < nvals; k++)
        LLVMBuildStore(cg->b, vals[k], cg_gep(cg, cg->t_ptr, p->ctx, cg_i64(cg, k)));
    bool made;
    p->fn = cg_helper_begin(cg, name, task_type(cg), &p->saved, &made);
    if (!made) {
        cg_fail(cg, NULL, "kernel %s is built twice", name);
        return;
    }
    LLVMValueRef ctx = LLVMGetParam(p->fn, 0);
    for (int k = 0; k < nvals; k++) p->vals[k] = cg_load(cg, cg->t_ptr, ctx, cg_i64(cg, k));
    p->part = LLVMGetParam(p->fn, 1);
    p->nparts = LLVMGetParam(p->fn, 2);
    p->scratch = LLVMGetParam(p->fn, 3);
}

void cg_par_begin_node(Cg *cg, CgPar *p, const LLVMValueRef *extra, int nextra) {
    LLVMValueRef vals[CG_PAR_VALS];
    int nvals = 0;
    vals[nvals++] = cg->slab;
    for (int k = 0; k < nextra && nvals + 2 < CG_PAR_VALS; k++) vals[nvals++] = extra[k];
    /* The caller's training flag and dropout seed, as pointer-sized values
     * (an update's function has neither). */
    LLVMValueRef training = cg->training, seed = cg->seed;
    int at_training = nvals;
    if (training) vals[nvals++] = LLVMBuildIntToPtr(cg->b, training, cg->t_ptr, "");
    int at_seed = nvals;
    if (seed) vals[nvals++] = LLVMBuildIntToPtr(cg->b, seed, cg->t_ptr, "");
    /* <function>.part, numbered when the function has several. */
    size_t len;
    const char *fn = LLVMGetValueName2(cg->fn, &len);
    char *name = cg_format("%s.part", fn);
    for (int k = 1; name && LLVMGetNamedFunction(cg->mod, name); k++) {
        free(name);
        name = cg_format("%s.part%d", fn, k);
    }
    cg_par_begin(cg, p, name ? name : "part", vals, nvals);
    free(name);
    cg->slab = p->vals[0];
    if (training) cg->training = LLVMBuildPtrToInt(cg->b, p->vals[at_training], LLVMTypeOf(training), "");
    if (seed) cg->seed = LLVMBuildPtrToInt(cg->b, p->vals[at_seed], LLVMTypeOf(seed), "");
}

void cg_par_end(Cg *cg, CgPar *p, int64_t max_parts, int64_t scratch_bytes) {
    cg_helper_end(cg, &p->saved);
    if (p->flops > 0) {
        LLVMValueRef flops = cg_f64(cg, p->flops);
        cg_call(cg, cg->product_next, &flops, 1);
    }
    LLVMValueRef args[4] = {p->fn, p->ctx, cg_i64(cg, max_parts < 1 ? 1 : max_parts), cg_i64(cg, scratch_bytes)};
    cg_call(cg, cg->parallel, args, 4);
}

int64_t cg_max_parts(const Cg *cg, double work, double part_work, int64_t units) {
    if (units < 1) return 1;
    if (cg->split_small) return units;
    double parts = work / part_work;
    return parts < 1 ? 1 : parts > (double)units ? units : (int64_t)parts;
}

LLVMValueRef cg_part_start(Cg *cg, const CgPar *p, int64_t units) {
    /* part * units / nparts: units and nparts are far below 2^31. */
    return LLVMBuildUDiv(cg->b, cg_mul(cg, p->part, units), p->nparts, "");
}

LLVMValueRef cg_part_end(Cg *cg, const CgPar *p, int64_t units) {
    return LLVMBuildUDiv(cg->b, cg_mul(cg, LLVMBuildAdd(cg->b, p->part, cg_i64(cg, 1), ""), units), p->nparts, "");
}

void cg_noinline(Cg *cg, LLVMValueRef fn) {
    unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(cg->ctx, noinline, 0));
}

/* A node's (or a chain's) function. Out of line: O3 then works one function
 * at a time, linear in the graph. Inlining every node into the scans' step
 * loops tripled the pass time (a bidirectional LSTM: 1.7 s against 0.6 s)
 * for nothing the back end can use; fusion merges nodes deliberately. */
static void node_fn_begin(Cg *cg, const char *name) {
    fn_begin(cg, name, cg->t_node, false);
    cg_noinline(cg, cg->fn);
}

/* One node: a function `void (ptr slab, i32 training, i64 seed)` holding its
 * loop nest, or NULL when someone else writes its value. */
static LLVMValueRef lower_node(Cg *cg, int gi, const Node *n) {
    if (!cg_has_code(n->op)) return NULL;
    if (!n->type.batched && !reduces_batch(n->op))
        for (int k = 0; k < n->nin; k++)
            if (n->in[k]->type.batched) {
                cg_fail(cg, n, "input %d is batched but the result is not", k);
                return NULL;
            }
    /* A scan's body first: its functions exist before the scan calls them. */
    if (n->op == OP_SCAN) lower_graph(cg, n->scan.body);
    if (cg->error) return NULL;
    char name[96];
    snprintf(name, sizeof name, "g%d.n%d.%s", gi, n->id, op_name(n->op));
    node_fn_begin(cg, name);
    if (n->op == OP_SCAN) emit_scan(cg, n);
    else cg_emit_op(cg, n);
    fn_end(cg);
    return cg->fn;
}

bool cg_same_rows(const Type *a, const Type *t) {
    if (a->dtype != DT_F32 || t->dtype != DT_F32 || a->batched != t->batched || a->rank != t->rank || t->rank < 1)
        return false;
    for (int d = 0; d + 1 < t->rank; d++)
        if (a->dims[d] != t->dims[d]) return false;
    return true;
}

/* Can node n join a chain of type t whose members are chain[0 .. len)? An
 * elementwise node of type t; a slice of type t of a value with t's rows
 * (read through, in place); a concat of members with t's rows (written in
 * place). */
static bool chain_joins(const Node *n, const Type *t, const Node *const *chain, int len) {
    if (n->op == OP_SLICE) {
        /* Of a value outside the chain: a member's other columns may not be
         * written yet where the slice reads them. */
        for (int m = 0; m < len; m++)
            if (chain[m] == n->in[0]) return false;
        return type_equal(&n->type, t) && cg_same_rows(&n->in[0]->type, t);
    }
    if (n->op == OP_CONCAT) {
        if (!len || !cg_same_rows(&n->type, t)) return false;
        for (int k = 0; k < n->nin; k++) {
            bool in = false;
            for (int m = 0; m < len && !in; m++) in = chain[m] == n->in[k];
            if (!in || !type_equal(&n->in[k]->type, t)) return false;
        }
        return true;
    }
    return cg_is_map(n) && type_equal(&n->type, t);
}

/* Consecutive nodes of one type from node i (chain_joins): one loop for all
 * of them. A chain stops at the end of the forward pass, where a
 * forward-only call (upto) stops. */
static int chain_length(const Graph *g, int i, const bool *taken) {
    const Node *first = g->nodes.items[i];
    const Node *const *chain = (const Node *const *)&g->nodes.items[i];
    if (first->op == OP_CONCAT || !chain_joins(first, &first->type, chain, 0)) return 1;
    int len = 1;
    while (i + len < g->nodes.len && i + len != g->nforward && !taken[i + len] &&
           chain_joins(g->nodes.items[i + len], &first->type, chain, len))
        len++;
    return len;
}

/* A fused kernel stores a member's value only where something reads it:
 * a node of the graph outside the group, or the host. (Every member of a
 * model graph's groups was stored: wordlm's output layer wrote its 20 MB
 * product before the bias as well as the logits.) */
bool cg_read_outside(const Graph *g, const Node *x, const Node *const *members, int n) {
    if (!g->parent && host_reads(g, x)) return true;
    for (int k = 0; k < g->outputs.len; k++)
        if (g->outputs.items[k] == x) return true;
    for (int k = 0; k < g->nodes.len; k++) {
        const Node *y = g->nodes.items[k];
        bool member = false;
        for (int m = 0; m < n && !member; m++) member = members[m] == y;
        if (member) continue;
        for (int a = 0; a < y->nin; a++)
            if (y->in[a] == x) return true;
    }
    return false;
}

static LLVMValueRef lower_chain(Cg *cg, int gi, const Graph *g, int i, int len) {
    char name[96];
    const Node *first = g->nodes.items[i];
    snprintf(name, sizeof name, "g%d.n%d.chain%d", gi, first->id, len);
    node_fn_begin(cg, name);
    cg->stats.chains++;
    cg_emit_map_chain(cg, (const Node *const *)&g->nodes.items[i], len);
    fn_end(cg);
    return cg->fn;
}

static LLVMValueRef lower_epilogue(Cg *cg, int gi, const Node *product, const CgEpilogue *e) {
    char name[96];
    snprintf(name, sizeof name, "g%d.n%d.epilogue", gi, product->id);
    node_fn_begin(cg, name);
    int nodes = cg_emit_epilogue(cg, e);
    fn_end(cg);
    cg->stats.epilogues++;
    cg->stats.epilogue_nodes += nodes;
    if (nodes > cg->stats.largest_epilogue) cg->stats.largest_epilogue = nodes;
    return cg->fn;
}

/* A model graph with a loss computes what its loss, metrics, gradients and
 * state updates read; nothing else (a softmax output under a loss fused with
 * it, which only predictions read, and those run the inference variant).
 * The nodes nothing of those reads are marked. */
static void mark_unread(const Graph *g, bool *unread) {
    int n = g->nodes.len;
    bool *need = calloc((size_t)n + 1, sizeof *need);
    if (!need) return; /* then everything runs */
    const Node *roots[4096];
    int nroots = 0;
    roots[nroots++] = g->loss;
    for (int i = 0; i < g->metrics.len && nroots < 4096; i++) roots[nroots++] = g->metrics.items[i];
    for (int i = 0; i < g->grads.len && nroots < 4096; i++)
        if (g->grads.items[i]) roots[nroots++] = g->grads.items[i];
    for (int i = 0; i < g->updates.len && nroots < 4096; i++) roots[nroots++] = ((Update *)g->updates.items[i])->value;
    if (nroots == 4096) {
        free(need);
        return;
    }
    for (int i = 0; i < nroots; i++)
        if (roots[i]->graph == g) need[roots[i]->id] = true;
    for (int i = n - 1; i >= 0; i--) {
        const Node *x = g->nodes.items[i];
        /* A scan writes the extra outputs and states its readers take. */
        if ((x->op == OP_SCAN_OUT || x->op == OP_SCAN_STATE) && need[i]) need[x->in[0]->id] = true;
        if (!need[i]) continue;
        for (int k = 0; k < x->nin; k++) need[x->in[k]->id] = true;
    }
    for (int i = 0; i < n; i++) unread[i] = !need[i];
    free(need);
}

static bool lower_kernel(void *ctx, const Graph *g, int i, const CgEpilogue *e, int last, int len) {
    Cg *cg = ctx;
    int gi = graph_index(cg, g);
    const Node *first = g->nodes.items[i];
    if (e) cg->fns[gi][last] = lower_epilogue(cg, gi, first, e);
    else if (len > 1) cg->fns[gi][i] = lower_chain(cg, gi, g, i, len);
    else if (!cg_view(cg->plan, first)) cg->fns[gi][i] = lower_node(cg, gi, first);
    return !cg->error;
}

static void lower_graph(Cg *cg, const Graph *g) {
    int gi = graph_index(cg, g);
    if (gi < 0) {
        cg_fail(cg, NULL, "graph '%s' has no memory plan", g->name ? g->name : "?");
        return;
    }
    cg->fns[gi] = calloc((size_t)g->nodes.len + 1, sizeof(LLVMValueRef));
    if (!cg->fns[gi]) {
        cg_fail(cg, NULL, "out of memory");
        return;
    }
    /* Positions whose node a fused kernel computes: they get no function. */
    bool *taken = calloc((size_t)g->nodes.len + 1, sizeof *taken);
    if (!taken) {
        cg_fail(cg, NULL, "out of memory");
        return;
    }
    if (!g->parent && g->loss) {
        mark_unread(g, taken);
        for (int i = 0; i < g->nodes.len; i++) cg->stats.unread += taken[i] && cg_has_code(((Node *)g->nodes.items[i])->op);
    }
    walk_kernels(g, taken, lower_kernel, cg);
    free(taken);
}

/* Node k's function, when k < upto. */
static void call_below(Cg *cg, LLVMValueRef fn, int k, LLVMValueRef upto, LLVMValueRef *args) {
    CgIf f = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, cg_i64(cg, k), upto, ""));
    LLVMBuildCall2(cg->b, cg->t_node, fn, args, 3, "");
    cg_endif(cg, &f);
}

/* void <name>(ptr slab, i32 training, i64 dropout_seed, i32 upto): the model's
 * nodes [0, upto) in order. */
static void lower_entry(Cg *cg, const Graph *g, const char *name) {
    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_i32, cg->t_i64, cg->t_i32};
    LLVMTypeRef ty = LLVMFunctionType(cg->t_void, params, 4, false);
    fn_begin(cg, name, ty, true);
    LLVMValueRef upto = LLVMBuildSExt(cg->b, LLVMGetParam(cg->fn, 3), cg->t_i64, "upto");
    LLVMValueRef args[3] = {cg->slab, cg->training, cg->seed};
    bool *needs_i = calloc((size_t)g->nodes.len + 1, sizeof *needs_i);
    int *partner = scan_pairs(g, cg->batch);
    for (int i = 0; i < g->nodes.len; i++) {
        if (!cg->fns[0][i]) continue;
        int j = needs_i && partner && partner[i] > i ? side_by_side(g, i, cg->batch, needs_i) : -1;
        if (j >= 0 && cg->fns[0][j]) {
            /* When j runs: the nodes between that do not need i, i on part 0
             * and j on the last part (one part: both, in order), then the
             * nodes between that need i. Else as they stand. */
            CgIf both = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntSLT, cg_i64(cg, j), upto, ""));
            for (int k = i + 1; k < j; k++)
                if (cg->fns[0][k] && !needs_i[k]) LLVMBuildCall2(cg->b, cg->t_node, cg->fns[0][k], args, 3, "");
            CgPar par;
            cg_par_begin_node(cg, &par, NULL, 0);
            LLVMValueRef in_part[3] = {cg->slab, cg->training, cg->seed};
            CgIf first = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, par.part, cg_i64(cg, 0), ""));
            LLVMBuildCall2(cg->b, cg->t_node, cg->fns[0][i], in_part, 3, "");
            cg_endif(cg, &first);
            LLVMValueRef last_part = LLVMBuildSub(cg->b, par.nparts, cg_i64(cg, 1), "");
            CgIf last = cg_if(cg, LLVMBuildICmp(cg->b, LLVMIntEQ, par.part, last_part, ""));
            LLVMBuildCall2(cg->b, cg->t_node, cg->fns[0][j], in_part, 3, "");
            cg_endif(cg, &last);
            cg_par_end(cg, &par, 2, 0);
            for (int k = i + 1; k < j; k++)
                if (cg->fns[0][k] && needs_i[k]) LLVMBuildCall2(cg->b, cg->t_node, cg->fns[0][k], args, 3, "");
            cg_else(cg, &both);
            for (int k = i; k < j; k++)
                if (cg->fns[0][k]) call_below(cg, cg->fns[0][k], k, upto, args);
            cg_endif(cg, &both);
            i = j;
            continue;
        }
        call_below(cg, cg->fns[0][i], i, upto, args);
    }
    free(needs_i);
    free(partner);
    fn_end(cg);
}

/* A second lowering into the same module (cg_add_update) finds the first one's declarations. */
static CgFn declare(Cg *cg, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, unsigned n) {
    CgFn f;
    f.ty = LLVMFunctionType(ret, params, n, false);
    f.fn = LLVMGetNamedFunction(cg->mod, name);
    if (!f.fn) f.fn = LLVMAddFunction(cg->mod, name, f.ty);
    return f;
}

static void declare_runtime(Cg *cg) {
    LLVMTypeRef f32 = cg->t_f32, f64 = cg->t_f64;
    cg->logf = declare(cg, "logf", f32, &f32, 1);
    cg->log = declare(cg, "log", f64, &f64, 1);
    LLVMTypeRef f64x2[2] = {f64, f64};
    cg->pow = declare(cg, "pow", f64, f64x2, 2);
    cg->sqrtf = declare(cg, "llvm.sqrt.f32", f32, &f32, 1);
    cg->sqrt = declare(cg, "llvm.sqrt.f64", f64, &f64, 1);
    cg->fabs = declare(cg, "llvm.fabs.f64", f64, &f64, 1);
    cg->trap = declare(cg, "llvm.trap", cg->t_void, NULL, 0);
    LLVMTypeRef drop[5] = {cg->t_ptr, cg->t_i64, f64, cg->t_i64, cg->t_i64};
    cg->dropout = declare(cg, "rt_dropout_mask_f32", cg->t_void, drop, 5);
    LLVMTypeRef par[4] = {cg->t_ptr, cg->t_ptr, cg->t_i64, cg->t_i64};
    cg->parallel = declare(cg, "rt_parallel", cg->t_void, par, 4);
    cg->product_next = declare(cg, "rt_product_next", cg->t_void, &f64, 1);
}

/* `<name><suffix>`, the name made a C identifier. */
static char *entry_name(const char *name, const char *suffix) {
    if (!name || !*name) name = "seqc";
    size_t len = strlen(name), slen = strlen(suffix);
    char *s = malloc(len + slen + 1);
    if (!s) return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        s[i] = ok ? c : '_';
    }
    memcpy(s + len, suffix, slen + 1);
    return s;
}

/* The lowering's state for m's module: its context, types and runtime declarations. */
static void cg_start(Cg *cg, CgModule *m) {
    memset(cg, 0, sizeof *cg);
    cg->ctx = LLVMGetModuleContext(m->mod);
    cg->mod = m->mod;
    cg->b = LLVMCreateBuilderInContext(cg->ctx);
    cg->t_void = LLVMVoidTypeInContext(cg->ctx);
    cg->t_i1 = LLVMInt1TypeInContext(cg->ctx);
    cg->t_i8 = LLVMInt8TypeInContext(cg->ctx);
    cg->t_i32 = LLVMInt32TypeInContext(cg->ctx);
    cg->t_i64 = LLVMInt64TypeInContext(cg->ctx);
    cg->t_f32 = LLVMFloatTypeInContext(cg->ctx);
    cg->t_f64 = LLVMDoubleTypeInContext(cg->ctx);
    cg->t_ptr = LLVMPointerTypeInContext(cg->ctx, 0);
    LLVMTypeRef node_params[3] = {cg->t_ptr, cg->t_i32, cg->t_i64};
    cg->t_node = LLVMFunctionType(cg->t_void, node_params, 3, false);
    cg->plan = &m->plan;
    cg->batch = m->plan.batch;
    const char *small = getenv("SEQC_SPLIT_SMALL");
    cg->split_small = small && *small && strcmp(small, "0") != 0;
    declare_runtime(cg);
}

/* The module verifies. With `after`, only the functions defined after it
 * are checked, the rest having been verified already (cg_add_update's
 * verifying the whole training module again took 3-4 ms before the first
 * step), and the whole module only for the message when one fails. */
static bool verify(CgModule *m, const Graph *g, LLVMValueRef after, char **error) {
    if (after) {
        bool broken = false;
        for (LLVMValueRef f = LLVMGetNextFunction(after); f && !broken; f = LLVMGetNextFunction(f))
            broken = !LLVMIsDeclaration(f) && LLVMVerifyFunction(f, LLVMReturnStatusAction);
        if (!broken) return true;
    }
    char *msg = NULL;
    if (LLVMVerifyModule(m->mod, LLVMReturnStatusAction, &msg)) {
        *error = cg_format("seqc: code generator: internal error: the module for '%s' does not verify:\n%s",
                           g->name ? g->name : "?", msg ? msg : "");
        LLVMDisposeMessage(msg);
        return false;
    }
    LLVMDisposeMessage(msg);
    return true;
}

/* The kernels' own vectors are as wide as the machine's (codegen_gemm.c,
 * codegen_epilogue.c); LLVM's tuning for some AVX-512 CPUs gives the loops
 * it vectorizes itself (chains, losses, the update) half that, to spare the
 * clock, which measured 5-8% slower steps. Set before the module is hashed
 * for the object cache. */
static void prefer_wide_vectors(CgModule *m, LLVMValueRef after) {
    for (LLVMValueRef f = after ? LLVMGetNextFunction(after) : LLVMGetFirstFunction(m->mod); f;
         f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f))
            LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                                    LLVMCreateStringAttribute(m->ctx, "prefer-vector-width", 19, "512", 3));
}

/* Called by whatever is about to change m's module: its bitcode is stale. */
static void changing(CgModule *m) {
    if (m->bitcode.buf) LLVMDisposeMemoryBuffer(m->bitcode.buf);
    m->bitcode = (CgBitcode){0};
}

CgBitcode *cg_bitcode(CgModule *m) {
    if (!m->bitcode.buf && m->mod) m->bitcode.buf = LLVMWriteBitcodeToMemoryBuffer(m->mod);
    return m->bitcode.buf ? &m->bitcode : NULL;
}

CgModule *cg_plan_module(const Graph *g, const char *name, char **error) {
    double t0 = cg_now_ms();
    *error = NULL;
    if (g->parent || g->batch < 1) {
        *error = cg_format("seqc: code generator: '%s' is not a model graph with a batch size", g->name ? g->name : "?");
        return NULL;
    }
    CgModule *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->entry = entry_name(name, "_step");
    m->update = entry_name(name, "_update");
    m->name = cg_format("%s", name && *name ? name : "seqc");
    if (!m->entry || !m->update || !m->name) goto oom;
    m->plan.batch = g->batch;
    int64_t cursor = 0;
    bool *tm = time_major_values(g);
    bool planned = tm && plan_graph(&m->plan, g, NULL, tm, &cursor);
    if (planned) m->plan.graphs[0].time_major = tm;
    else free(tm);
    if (!planned) goto oom;
    m->plan.slab_bytes = align_up(cursor > 0 ? cursor : 1);
    m->plan.offset = m->plan.graphs[0].offset;
    m->sig = (CgSignature){.name = m->entry,
                           .ret = CG_VOID,
                           .nargs = 4,
                           .args = {CG_PTR, CG_I32, CG_U64, CG_I32},
                           .arg_names = {"slab", "training", "dropout_seed", "upto"}};
    if (!cg_collect_externs(g, &m->externs, &m->nexterns)) goto oom;
    m->timing.lower_ms = cg_now_ms() - t0;
    return m;
oom:
    *error = cg_format("seqc: code generator: out of memory");
    cg_free(m);
    return NULL;
}

bool cg_lower_module(CgModule *m, char **error) {
    *error = NULL;
    if (m->mod) return true;
    double t0 = cg_now_ms();
    const Graph *g = m->plan.graphs[0].g;
    m->ctx = LLVMContextCreate();
    m->mod = LLVMModuleCreateWithNameInContext(m->name, m->ctx);
    Cg cg;
    cg_start(&cg, m);
    cg.fns = calloc((size_t)m->plan.ngraphs, sizeof *cg.fns);
    if (!cg.fns) cg_fail(&cg, NULL, "out of memory");
    if (!cg.error) lower_graph(&cg, g);
    if (!cg.error) lower_entry(&cg, g, m->entry);
    m->stats = cg.stats;
    LLVMDisposeBuilder(cg.b);
    if (cg.fns)
        for (int i = 0; i < m->plan.ngraphs; i++) free(cg.fns[i]);
    free(cg.fns);
    bool ok = !cg.error;
    if (!ok) *error = cg.error;
    if (ok) prefer_wide_vectors(m, NULL);
    if (ok) ok = verify(m, g, NULL, error);
    if (!ok) { /* back to planned: the half-built module is of no use */
        LLVMDisposeModule(m->mod);
        LLVMContextDispose(m->ctx);
        m->mod = NULL;
        m->ctx = NULL;
    }
    m->timing.lower_ms += cg_now_ms() - t0;
    return ok;
}

CgModule *cg_lower(const Graph *g, const char *name, char **error) {
    CgModule *m = cg_plan_module(g, name, error);
    if (m && !cg_lower_module(m, error)) {
        cg_free(m);
        return NULL;
    }
    return m;
}

void cg_free(CgModule *m) {
    if (!m) return;
    changing(m);
    if (m->mod) LLVMDisposeModule(m->mod);
    if (m->ctx) LLVMContextDispose(m->ctx);
    plan_free(&m->plan);
    free(m->entry);
    free(m->update);
    free(m->name);
    free(m->externs);
    free(m);
}

int cg_extern_symbols(const CgModule *m, const CgExternSymbol **out) {
    *out = m->externs;
    return m->nexterns;
}

const CgPlan *cg_plan(const CgModule *m) { return &m->plan; }
const CgSignature *cg_signature(const CgModule *m) { return &m->sig; }
const CgSignature *cg_update_signature(const CgModule *m) { return m->update_sig.name ? &m->update_sig : NULL; }

/* Which slots the rule keeps (optim_ref.c): SGD its velocity unless momentum
 * is 0; RMSprop its mean square, and momentum when positive; Adam m and v. */
static bool uses_slot(const Optimizer *o, int which) {
    switch (o->kind) {
    case OPT_SGD: return which == 0 && o->momentum != 0;
    case OPT_RMSPROP: return which == 1 || o->momentum > 0;
    case OPT_ADAM: return true;
    }
    return false;
}

bool cg_add_update(CgModule *m, const Optimizer *opt, char **error) {
    double t0 = cg_now_ms();
    *error = NULL;
    if (!m->mod || m->optimized || m->plan.slot[0]) {
        *error = cg_format("seqc: code generator: the update must be added once, before optimizing the module");
        return false;
    }
    changing(m);
    const Graph *g = m->plan.graphs[0].g;
    CgPlan *p = &m->plan;
    p->nparams = g->params.len;
    /* The slots after everything the step uses. */
    int64_t cursor = p->slab_bytes;
    for (int w = 0; w < CG_OPT_SLOTS; w++) {
        p->slot[w] = malloc(sizeof(int64_t) * (size_t)(p->nparams > 0 ? p->nparams : 1));
        if (!p->slot[w]) {
            *error = cg_format("seqc: code generator: out of memory");
            return false;
        }
        for (int i = 0; i < p->nparams; i++) {
            const Node *n = g->params.items[i];
            const Node *dp = i < g->grads.len ? g->grads.items[i] : NULL;
            p->slot[w][i] = -1;
            if (!dp || n->op != OP_PARAM || !n->param.trainable || !uses_slot(opt, w)) continue;
            p->slot[w][i] = cursor;
            cursor += align_up(4 * type_elements(&n->type));
        }
    }
    p->slab_bytes = align_up(cursor > 0 ? cursor : 1);

    LLVMValueRef before = LLVMGetLastFunction(m->mod); /* the update's functions come after it */
    Cg cg;
    cg_start(&cg, m);
    LLVMTypeRef params[3] = {cg.t_ptr, cg.t_i64, cg.t_f64};
    cg.fn = LLVMAddFunction(cg.mod, m->update, LLVMFunctionType(cg.t_void, params, 3, false));
    cg.slab = LLVMGetParam(cg.fn, 0);
    cg.allocas = LLVMAppendBasicBlockInContext(cg.ctx, cg.fn, "entry");
    LLVMPositionBuilderAtEnd(cg.b, LLVMAppendBasicBlockInContext(cg.ctx, cg.fn, "start"));
    cg_emit_update(&cg, g, opt, p->slot, LLVMGetParam(cg.fn, 1), LLVMGetParam(cg.fn, 2));
    fn_end(&cg);
    LLVMDisposeBuilder(cg.b);
    if (cg.error) {
        *error = cg.error;
        return false;
    }
    prefer_wide_vectors(m, before);
    if (!verify(m, g, before, error)) return false;
    m->update_sig = (CgSignature){.name = m->update,
                                  .ret = CG_VOID,
                                  .nargs = 3,
                                  .args = {CG_PTR, CG_U64, CG_F64},
                                  .arg_names = {"slab", "step", "lr"}};
    m->timing.lower_ms += cg_now_ms() - t0;
    return true;
}
CgTiming *cg_timing(CgModule *m) { return &m->timing; }
const CgStats *cg_stats(const CgModule *m) { return &m->stats; }

LLVMTargetMachineRef cg_host_machine(LLVMModuleRef mod, CgTier tier, LLVMRelocMode reloc, LLVMCodeModel model,
                                     char **error) {
    cg_init_native();
    char *triple = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
    char *msg = NULL;
    LLVMTargetMachineRef tm = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        *error = cg_format("seqc: code generator: no target for %s: %s", triple, msg ? msg : "");
    } else if (!(tm = LLVMCreateTargetMachine(target, triple, cpu, features,
                                              tier == CG_QUICK ? LLVMCodeGenLevelNone : LLVMCodeGenLevelAggressive,
                                              reloc, model))) {
        *error = cg_format("seqc: code generator: cannot make a target machine for %s (%s)", triple, cpu);
    } else {
        LLVMSetTarget(mod, triple);
        LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
        LLVMSetModuleDataLayout(mod, layout);
        LLVMDisposeTargetData(layout);
    }
    if (msg) LLVMDisposeMessage(msg);
    LLVMDisposeMessage(features);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(triple);
    return tm;
}

bool cg_emit(CgModule *m, CgEmitKind kind, const char *path, char **error) {
    *error = NULL;
    char *msg = NULL;
    if (kind == CG_EMIT_LLVM) {
        if (LLVMPrintModuleToFile(m->mod, path, &msg)) {
            *error = cg_format("seqc: cannot write '%s': %s", path, msg ? msg : "");
            LLVMDisposeMessage(msg);
            return false;
        }
        return true;
    }
    /* Position-independent: the object is linked into executables and libraries. */
    changing(m); /* the target's triple and layout, and the code generator's own passes */
    LLVMTargetMachineRef tm = cg_host_machine(m->mod, CG_OPTIMIZED, LLVMRelocPIC, LLVMCodeModelDefault, error);
    if (!tm) return false;
    /* The emitter takes a non-const file name. */
    char *file = cg_format("%s", path);
    bool ok = !LLVMTargetMachineEmitToFile(tm, m->mod, file, kind == CG_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile,
                                           &msg);
    if (!ok) *error = cg_format("seqc: cannot write '%s': %s", path, msg ? msg : "");
    free(file);
    if (msg) LLVMDisposeMessage(msg);
    LLVMDisposeTargetMachine(tm);
    return ok;
}

LLVMModuleRef cg_module_ref(CgModule *m) { return m->mod; }

LLVMMemoryBufferRef cg_emit_object(CgModule *m, char **error) {
    if (!cg_optimize(m, error)) return NULL;
    changing(m); /* the code generator's passes work on the module itself */
    /* As an executable's objects: position-independent, so the JIT's linker
     * may place it anywhere and reach the process's functions through stubs. */
    LLVMTargetMachineRef tm = cg_host_machine(m->mod, CG_OPTIMIZED, LLVMRelocPIC, LLVMCodeModelDefault, error);
    if (!tm) return NULL;
    LLVMMemoryBufferRef obj = NULL;
    char *msg = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, m->mod, LLVMObjectFile, &msg, &obj)) {
        *error = cg_format("seqc: code generator: cannot compile the module: %s", msg ? msg : "");
        obj = NULL;
    }
    if (msg) LLVMDisposeMessage(msg);
    LLVMDisposeTargetMachine(tm);
    return obj;
}

void cg_dump_ir(const CgModule *m, FILE *out) {
    char *s = LLVMPrintModuleToString(m->mod);
    fputs(s, out);
    LLVMDisposeMessage(s);
}

void cg_init_native(void) {
    static bool done;
    if (done) return;
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    done = true;
}

bool cg_optimize(CgModule *m, char **error) {
    *error = NULL;
    if (m->optimized) return true;
    changing(m);
    double t0 = cg_now_ms();
    bool ok = false;
    LLVMPassBuilderOptionsRef opts = NULL;
    LLVMTargetMachineRef tm = cg_host_machine(m->mod, CG_OPTIMIZED, LLVMRelocDefault, LLVMCodeModelJITDefault, error);
    if (!tm) goto cleanup;
    opts = LLVMCreatePassBuilderOptions();
    LLVMErrorRef err = LLVMRunPasses(m->mod, "default<O3>", tm, opts);
    if (err) {
        char *s = LLVMGetErrorMessage(err); /* consumes err */
        *error = cg_format("seqc: code generator: the pass pipeline failed: %s", s);
        LLVMDisposeErrorMessage(s);
        goto cleanup;
    }
    m->optimized = true;
    ok = true;
cleanup:
    if (opts) LLVMDisposePassBuilderOptions(opts);
    if (tm) LLVMDisposeTargetMachine(tm);
    m->timing.passes_ms = cg_now_ms() - t0;
    return ok;
}
