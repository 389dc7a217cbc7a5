/* The LLVM back end: every node of a model graph (forward and backward, scan
 * bodies included) lowered to loop nests in LLVM IR, in graph order, with
 * every size a compile-time constant. A matrix product and the elementwise
 * nodes that read it run as one kernel (codegen_epilogue.c: a cell's gate
 * arithmetic inside its recurrent matmul); other runs of elementwise nodes of
 * one shape as one loop; every other node as a loop nest of its own. The
 * reference interpreter (interp.c) is the specification of every op and the
 * differential tests (tests/test_codegen.c, tests/test_fuse.c) hold the two
 * together.
 *
 * Requires: a model graph that graph_verify accepts, after schedule and
 * autodiff (or before them: a forward graph lowers as well).
 * Guarantees: one LLVM module per model with one external entry point (below),
 * a second for the optimizer's update when cg_add_update is called, and a
 * memory plan recorded as data, so the runtime, a JIT and an AOT object
 * agree on where every value lives.
 *
 * Memory: one slab of bytes owned by the caller. Each node of the model graph
 * and of every scan body owns [offset, offset + bytes) of it, 64-byte aligned,
 * row-major, the batch axis first when batched (the interpreter's layout);
 * f32 values are floats, i32 values int32. A scan also owns its carried states
 * and the f64 accumulators of a few reductions (`extra`). The caller writes
 * inputs, targets, params and state variables at their offsets; the entry
 * point writes everything else. The slab starts zeroed: an embedding's
 * gradient writes only the rows its ids name and relies on the others
 * staying zero from one call to the next.
 *
 * Precision: elementwise math is f32 (exp and tanh from mathf.h, on vectors;
 * libm's logf; no fast-math, no FMA contraction). Matrix products sum in f32, one fused multiply-add
 * per term in order (codegen_gemm.c), as the interpreter's f32 mode does.
 * Other reductions (sums, means, softmax denominators, batchnorm statistics)
 * accumulate in double and round once, as the interpreter does (a row's sum
 * of exps in 8 partial sums, term c into partial c mod 8, added in order at
 * the end: one vector of double). Formulas that cancel are computed in double
 * and rounded once: activation gradients (1 - y*y near saturation), the
 * softmax gradient, batchnorm's normalization (x - mean), and the losses and
 * their gradients (Keras' epsilon 1e-7 is below f32's resolution near 1:
 * 1 - 1e-7 rounds to 1 - 1.19e-7). A single IEEE operation on f32 inputs
 * (add, mul, ...) is done in f32: its result equals the interpreter's.
 *
 * Ownership: cg_lower returns a CgModule owned by the caller (cg_free): its
 * LLVM context and module, plan and signature. */
#ifndef SEQC_CODEGEN_H
#define SEQC_CODEGEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "graph.h"
#include "train.h"

/* Every buffer starts on a cache line (and an AVX-512 vector). */
#define CG_ALIGN 64
/* Optimizer state per param: Adam's m and v, RMSprop's momentum and mean square. */
#define CG_OPT_SLOTS 2
/* Rows of a loss's kernel whose gradient's sums per class are added together
 * first, then the blocks' in order (codegen_ops.c emit_sce_rows). */
#define CG_SCE_BLOCK 64

/* The storage of one graph: the model graph, or one scan body. */
typedef struct CgGraphPlan {
    const Graph *g;
    int nnodes;
    int64_t *offset;        /* by node id: first byte of the node's value */
    int64_t *bytes;         /* by node id: its size */
    int64_t *extra;         /* by node id: first byte of its working storage, or -1 */
    /* By node id: the value is a step's slice of a sequence the scan walks
     * (a step input, or an output the scan keeps at every step), and the
     * slab holds at `offset` a pointer to it, which the scan sets before
     * each step (cg_base loads it). Such a sequence is stored time-major. */
    bool *indirect;
    /* By node id: a window of ids (a time slice only embeddings and their
     * gradients read, example by example) read where its operand holds
     * them: `offset` is its first example's, example b lies in the
     * operand's example b (cg_ex), and it has no code. */
    bool *view;
    /* By node id, the model graph's (NULL for a body): the sequence is
     * stored time-major, step t's slice of example b at (t * batch + b)
     * times a step's elements (codegen.c, time_major_values). */
    bool *time_major;
} CgGraphPlan;

typedef struct CgPlan {
    int64_t slab_bytes;     /* a multiple of CG_ALIGN */
    int64_t batch;
    const int64_t *offset;  /* by model node id: graphs[0].offset */
    int ngraphs;
    CgGraphPlan *graphs;    /* [0] the model graph, then every scan body */
    /* The optimizer's state, after cg_add_update (before: nparams 0, slot
     * NULL). By index in the model's params: the first byte of state `which`
     * of that param, f32 of the param's shape, or -1 when the optimizer keeps
     * none (frozen params, params without a gradient, SGD without momentum).
     * The numbering is interp_slot's: 0 is SGD's or RMSprop's momentum or
     * Adam's m; 1 is RMSprop's mean square or Adam's v. A host reads and
     * writes them for checkpoints; they start at zero. */
    int nparams;
    int64_t *slot[CG_OPT_SLOTS];
} CgPlan;

/* The plan of the graph a node belongs to (model or body), or NULL. */
const CgGraphPlan *cg_plan_graph(const CgPlan *p, const Graph *g);
/* Byte offset of any node's value in the slab; -1 for a node the plan does not know. */
int64_t cg_plan_offset(const CgPlan *p, const Node *n);
/* A body node whose value is a step's slice of a sequence (CgGraphPlan.indirect). */
bool cg_indirect(const CgPlan *p, const Node *n);
/* A node read where its operand holds it (CgGraphPlan.view). */
bool cg_view(const CgPlan *p, const Node *n);
/* A model graph's sequence stored time-major (CgGraphPlan.time_major). */
bool cg_time_major(const CgPlan *p, const Node *n);

/* An entry point's signature as data, for callers that build the call at run
 * time (libffi) or write a header (AOT). */
typedef enum { CG_VOID, CG_PTR, CG_I32, CG_U64, CG_F64 } CgArgType;
#define CG_MAX_ARGS 4
typedef struct CgSignature {
    const char *name;               /* the symbol */
    CgArgType ret;
    int nargs;
    CgArgType args[CG_MAX_ARGS];
    const char *arg_names[CG_MAX_ARGS];
} CgSignature;

/* Evaluates the model graph's nodes [0, upto) in order: upto = nodes.len for
 * forward and backward, graph->nforward for the forward pass alone. training
 * != 0 draws dropout masks (from dropout_seed, as the interpreter) and
 * normalizes batchnorm with the batch's statistics. */
typedef void (*CgStepFn)(uint8_t *slab, int32_t training, uint64_t dropout_seed, int32_t upto);

/* The optimizer's update (cg_add_update): one step of Keras' rule for every
 * trainable param with a gradient, from the gradients the step left in the
 * slab. `step` counts from 1 (Adam's bias correction); `lr` is the learning
 * rate (the recipe's, or the command line's: it is the one hyperparameter
 * that is not compiled in). */
typedef void (*CgUpdateFn)(uint8_t *slab, uint64_t step, double lr);

/* How hard LLVM works on a module. CG_OPTIMIZED: default<O3> and the back
 * end's full effort. CG_QUICK: no pass, and the back end's quickest (fast
 * instruction selection where it can, no scheduling): several times quicker
 * to compile, several times slower to run. The IR carries no fast-math
 * flags, so LLVM may not change a result at any level: both tiers compute
 * the same bits, and a run may change tiers between two calls. */
typedef enum { CG_OPTIMIZED, CG_QUICK } CgTier;

/* Milliseconds spent in each stage, filled as the stages run. */
typedef struct CgTiming {
    double lower_ms;        /* graph -> IR, and the verifier */
    double quick_ms;        /* the quick tier's machine code (cg_emit_objects at CG_QUICK; wall time) */
    double passes_ms;       /* default<O3>; with cg_emit_objects, the machine code too (wall time) */
    double jit_ms;          /* LLJIT: linking and symbol lookup */
    bool cached;            /* the machine code came from the object cache (jit.c): no passes ran */
} CgTiming;

/* What the lowering fused, for tests and reports. */
typedef struct CgStats {
    int epilogues;          /* matrix products with their elementwise epilogue (codegen_epilogue.c) */
    int epilogue_nodes;     /* the nodes those kernels computed, the products included */
    int largest_epilogue;   /* the nodes of the largest one */
    int chains;             /* runs of elementwise nodes as one loop */
    int unread;             /* nodes of a model with a loss that nothing the step must produce reads: not computed */
    int loss_rows;          /* losses whose row pass runs in the kernel of their logits' product */
} CgStats;

typedef struct CgModule CgModule;

/* Lowers g into a new module whose entry point is `<name>_step` (name: the
 * model's; NULL: "seqc"). The module is verified before it is returned. On
 * failure returns NULL and sets *error to a malloc'd message. */
CgModule *cg_lower(const Graph *g, const char *name, char **error);
void cg_free(CgModule *m);

/* cg_lower in two halves, so that the code may be lowered later, on another
 * thread (`seqc run` lowers the inference module on the tiers' thread,
 * after the first training step's code): cg_plan_module makes what a host
 * reads of a module (cg_plan, cg_signature, cg_extern_symbols: a manifest
 * and the symbols need no IR), cg_lower_module its IR. Until then only
 * those, cg_timing and cg_free may be used. cg_lower_module does nothing to
 * a module already lowered; on failure it sets *error (malloc'd) and leaves
 * the module planned only. Both read g, which must outlive the module. */
CgModule *cg_plan_module(const Graph *g, const char *name, char **error);
bool cg_lower_module(CgModule *m, char **error);

/* Adds the second entry point, `<name>_update` (CgUpdateFn), to a module
 * cg_lower made from a graph after autodiff, before cg_optimize and the JIT.
 * The rule is compiler/optim_ref.c's, the specification: clipvalue per
 * element, then clipnorm per tensor, then global_clipnorm over all tensors,
 * then SGD (momentum, nesterov), RMSprop (epsilon outside the root without
 * momentum, under it with momentum, as TF2's kernels) or Adam. Params that
 * are frozen or have no gradient are left alone.
 *
 * Every hyperparameter but lr is a compile-time constant of the module; lr is
 * an argument, so a command line or a schedule can change it.
 *
 * Precision: the reference's, operation for operation. Gradients, weights and
 * slots are read as f32 and widened; clipping, norms (summed in element
 * order), the rule and its square roots run in double, Adam's bias correction
 * with libm's pow; each new weight and slot is rounded to f32 once, as
 * interp_optimizer_step does in PREC_F32.
 *
 * Memory: the optimizer's slots are appended to the slab (CgPlan.slot), so
 * plan->slab_bytes grows: allocate the slab after this call. At most once
 * per module. On failure returns false with *error malloc'd; the module is
 * then fit only for cg_free. */
bool cg_add_update(CgModule *m, const Optimizer *opt, char **error);

/* A function of a user's shared library the module calls (an `extern` of the
 * .seq file). The JIT binds `name` to `address`; an AOT link must name
 * `library` (or a copy of it) so the loader finds the symbol at run time.
 * The strings belong to the graph the module was lowered from. */
typedef struct CgExternSymbol {
    const char *name;       /* the symbol the generated code calls: float name(float) */
    void *address;          /* where dlsym found it in this process */
    const char *library;    /* the path or soname the elaborator gave dlopen */
} CgExternSymbol;

/* The module's extern symbols, each once (derivatives included), in graph
 * order; *out stays valid while m lives. Returns their number. */
int cg_extern_symbols(const CgModule *m, const CgExternSymbol **out);

const CgPlan *cg_plan(const CgModule *m);
const CgSignature *cg_signature(const CgModule *m);
/* The update's signature: `<name>_update(ptr slab, u64 step, f64 lr)`; NULL before cg_add_update. */
const CgSignature *cg_update_signature(const CgModule *m);
CgTiming *cg_timing(CgModule *m);
const CgStats *cg_stats(const CgModule *m);

/* Runs the new pass manager's default<O3> for the host (its CPU and
 * features), after setting the module's triple and data layout. Idempotent. */
bool cg_optimize(CgModule *m, char **error);

/* The module compiled for the host as cg_emit_objects does, on up to
 * `threads` threads (0: one per core), written to the object files
 * `<prefix>.0.o`, `<prefix>.1.o`, ...: returns how many, or 0 with *error
 * malloc'd. */
int cg_write_objects(CgModule *m, int threads, const char *prefix, char **error);

/* Writes the module for the host CPU: LLVM IR text, assembly, or an object
 * file (position-independent). Emitting to a file leaves the module usable. */
typedef enum { CG_EMIT_LLVM, CG_EMIT_ASM, CG_EMIT_OBJ } CgEmitKind;
bool cg_emit(CgModule *m, CgEmitKind kind, const char *path, char **error);

/* codegen_aot.c: the object that makes compiled entry points a model the
 * runtime can run: the manifest (manifest.h) as data, `const RtModelCode
 * <name>_code` (runtime/model.h) pointing at it and at the entry points
 * (defined in the other objects; update may be NULL), and, when `with_main`,
 * `int main(argc, argv)` calling rt_main. Written as a PIC object file. */
bool cg_emit_stub(const char *name, const char *manifest, const char *train_step, const char *train_update,
                  const char *infer_step, bool with_main, const char *path, char **error);

/* The module's IR as text, for debugging. */
void cg_dump_ir(const CgModule *m, FILE *out);

/* ---- internal: shared by codegen.c and codegen_ops.c only ------------------- */
#ifdef SEQC_CODEGEN_INTERNAL
#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* A scan carries at most this many states (an LSTM's backward step carries
 * two states and one running sum per param: well below). */
#define CG_MAX_STATES 64

typedef struct CgFn {
    LLVMValueRef fn;
    LLVMTypeRef ty;
} CgFn;

/* The lowering's state. The LLVM objects belong to the CgModule being built. */
typedef struct Cg {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef t_void, t_i1, t_i8, t_i32, t_i64, t_f32, t_f64, t_ptr;
    LLVMTypeRef t_node;         /* void (ptr slab, i32 training, i64 seed) */
    CgFn logf, log, pow, sqrtf, sqrt, fabs, trap, dropout, parallel, product_next;
    const CgPlan *plan;
    int64_t batch;
    /* The width of the values an elementwise rule builds: 1 (scalars), or a
     * vector's lanes while an epilogue (codegen_epilogue.c) emits one. Float
     * constants are then splats, conversions vector casts, and calls of
     * scalar functions go lane by lane. */
    int lanes;
    bool split_small;           /* SEQC_SPLIT_SMALL: cg_max_parts */
    CgStats stats;
    LLVMValueRef **fns;         /* by graph plan index, by node id: the node's function or NULL */
    /* SCE losses whose row pass the epilogue of their logits' product ran
     * (cg_emit_epilogue): their own kernel only adds up. */
    const Node *sce_rows_done[8];
    int nsce_rows_done;
    /* the function being built */
    LLVMValueRef fn, slab, training, seed;
    /* cg_copy_examples copies examples [copy_from, copy_to) only (an
     * unbatched value: the part with example 0); NULL: every example. */
    LLVMValueRef copy_from, copy_to;
    LLVMBasicBlockRef allocas;  /* the entry block: locals only */
    LLVMMetadataRef access_group; /* cg_loop_end_parallel's, made on first use */
    char *error;                /* the first internal error, malloc'd */
} Cg;

typedef struct CgLoop {
    LLVMBasicBlockRef header, exit;
    LLVMValueRef i;             /* i64, 0 .. n - 1 */
} CgLoop;

typedef struct CgIf {
    LLVMBasicBlockRef then, els, end;
} CgIf;

/* A function of this module's own, internal and out of line, made on first
 * use: when it is new (*made), the builder is left at the start of its body,
 * cg->fn and cg->allocas switched to it, until cg_helper_end returns to
 * where the caller was (cg->slab too). */
typedef struct CgSaved {
    LLVMValueRef fn, slab, training, seed;
    LLVMBasicBlockRef allocas, here, start;
} CgSaved;
LLVMValueRef cg_helper_begin(Cg *cg, const char *name, LLVMTypeRef ty, CgSaved *s, bool *made);
void cg_helper_end(Cg *cg, const CgSaved *s);

/* A kernel split into parts over the runtime's threads (runtime/pool.h):
 * cg_par_begin starts the part function `name` (a new one), whose code
 * sees the caller's vals[k] as p->vals[k], its part and nparts (i64), and
 * scratch bytes of its own; cg_par_end closes it and, back in the caller,
 * calls rt_parallel with at most max_parts parts. The part function must
 * give each output element to one part and compute it there exactly as one
 * thread would: then no result depends on the number of threads. */
#define CG_PAR_VALS 6
/* A part is worth a thread's wake-up from this many flops of a product (some
 * 15 us), or this many elements of a pass over memory. */
#define CG_PART_FLOPS (1 << 19)
#define CG_PART_ELEMS (1 << 18)
#define CG_PART_CHAIN (1 << 15)     /* elements (of all its nodes) of an elementwise chain in one part */
#define CG_PART_COPY (1 << 13)      /* elements a scan's copies move in one part */
/* The parts a kernel of `work` (flops or elements) over `units` splittable
 * units asks for: one per part_work, at least 1, at most units; every unit
 * its own part when the environment sets SEQC_SPLIT_SMALL (tests: so that
 * small models run every kernel's split code). */
int64_t cg_max_parts(const Cg *cg, double work, double part_work, int64_t units);
typedef struct CgPar {
    CgSaved saved;
    LLVMValueRef fn, ctx;
    int nvals;
    LLVMValueRef vals[CG_PAR_VALS];
    LLVMValueRef part, nparts, scratch;
    double flops; /* a product's, for rt_product_next; 0 for other kernels */
} CgPar;
void cg_par_begin(Cg *cg, CgPar *p, const char *name, const LLVMValueRef *vals, int nvals);
/* The same for the node function being built: its slab is p->vals[0] (and
 * cg->slab) in the part function, extra[k] its p->vals[k + 1]; cg->training
 * and cg->seed are the caller's there too (they travel after the extras). */
void cg_par_begin_node(Cg *cg, CgPar *p, const LLVMValueRef *extra, int nextra);
void cg_par_end(Cg *cg, CgPar *p, int64_t max_parts, int64_t scratch_bytes);
/* The part's share [start, end) of units 0 .. units, in order: every unit
 * in exactly one part, the parts' sizes within one of each other. */
LLVMValueRef cg_part_start(Cg *cg, const CgPar *p, int64_t units);
LLVMValueRef cg_part_end(Cg *cg, const CgPar *p, int64_t units);

double cg_now_ms(void);
void cg_noinline(Cg *cg, LLVMValueRef fn);     /* keep fn out of line: O3 works one function at a time */
char *cg_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cg_fail(Cg *cg, const Node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void cg_init_native(void);
int64_t cg_size(int64_t batch, const Node *n);   /* elements, the batch included */
bool cg_has_code(OpKind op);     /* false for values the caller or a scan writes */
const Node *cg_loss_writes_grad(const Node *loss); /* the gradient a loss's kernel writes too, or NULL */
const Node *cg_loss_writes_bias(const Node *grad); /* and the bias gradient it sums, or NULL */
/* The row pass of SCE node n from f32 logits (with cg_loss_writes_grad) by
 * blocks of CG_SCE_BLOCK rows: cg_sce_block_begin zeroes the bias
 * gradient's row of the block (returned; NULL without one), cg_sce_rows
 * then takes the block's rows [r0, r1) in order. */
LLVMValueRef cg_sce_block_begin(Cg *cg, const Node *n, LLVMValueRef block);
void cg_sce_rows(Cg *cg, const Node *n, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef colsum);

LLVMValueRef cg_i64(Cg *cg, int64_t v);
LLVMValueRef cg_f32(Cg *cg, double v);
LLVMValueRef cg_f64(Cg *cg, double v);
LLVMTypeRef cg_elem(Cg *cg, const Node *n);
LLVMValueRef cg_gep(Cg *cg, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx);
LLVMValueRef cg_base(Cg *cg, const Node *n);             /* the node's buffer */
LLVMValueRef cg_extra(Cg *cg, const Node *n);            /* its working storage */
LLVMValueRef cg_ex(Cg *cg, const Node *n, LLVMValueRef b); /* example b (the buffer when unbatched) */
LLVMValueRef cg_load(Cg *cg, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx);
void cg_store(Cg *cg, LLVMTypeRef t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v);
LLVMValueRef cg_loadf(Cg *cg, const Node *n, LLVMValueRef p, LLVMValueRef idx); /* as f32 */
LLVMValueRef cg_loadd(Cg *cg, const Node *n, LLVMValueRef p, LLVMValueRef idx); /* as f64 */
void cg_storef(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v);
void cg_stored_as_f32(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef d);
LLVMValueRef cg_add(Cg *cg, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_mul(Cg *cg, LLVMValueRef a, int64_t m);
LLVMValueRef cg_mad(Cg *cg, LLVMValueRef a, int64_t m, LLVMValueRef b); /* a * m + b */
LLVMValueRef cg_call(Cg *cg, CgFn f, LLVMValueRef *args, unsigned n);
LLVMValueRef cg_call1(Cg *cg, CgFn f, LLVMValueRef x);
/* A call of a scalar function; with vector arguments, one call per lane. */
LLVMValueRef cg_call_lanes(Cg *cg, LLVMTypeRef fn_type, LLVMValueRef fn, LLVMValueRef *args, unsigned n);
LLVMTypeRef cg_lanes_of(Cg *cg, LLVMTypeRef scalar);     /* scalar, or a vector of cg->lanes */
LLVMValueRef cg_splat(Cg *cg, LLVMValueRef c);          /* a constant, as a vector of cg->lanes */
/* Vectors of `lanes` (1: the scalar): the type; a run-time value in every
 * lane; f32 loads and stores at p[idx ..] with the element's alignment. */
LLVMTypeRef cg_vec_type(LLVMTypeRef t, int lanes);
LLVMValueRef cg_broadcast(Cg *cg, LLVMValueRef s, int lanes);
LLVMValueRef cg_load_vec(Cg *cg, LLVMValueRef p, LLVMValueRef idx, int lanes);
void cg_store_vec(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v);
/* The same for the first `valid` lanes only (the others load as 0, and
 * stay as they are in memory): the end of a row that is not a whole vector. */
LLVMValueRef cg_load_vec_masked(Cg *cg, LLVMValueRef p, LLVMValueRef idx, int lanes, int valid);
void cg_store_vec_masked(Cg *cg, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v, int valid);
/* n elements of type t in the function's frame, 64-byte aligned. */
LLVMValueRef cg_stack_array(Cg *cg, LLVMTypeRef t, int64_t n);
LLVMValueRef cg_local(Cg *cg, LLVMTypeRef t, LLVMValueRef init);
LLVMValueRef cg_get(Cg *cg, LLVMTypeRef t, LLVMValueRef local);
void cg_set(Cg *cg, LLVMValueRef local, LLVMValueRef v);
CgLoop cg_loop_begin(Cg *cg, int64_t n);
CgLoop cg_loop_begin_n(Cg *cg, LLVMValueRef n);    /* an i64 trip count known at run time */
void cg_loop_end(Cg *cg, CgLoop *l);
/* ... and ask LLVM not to unroll the loop: for loops of copies, which
 * unrolled become blocks of thousands of moves that the back end's
 * scheduler takes seconds to order, and gain nothing at run time. */
void cg_loop_end_rolled(Cg *cg, CgLoop *l);
/* ... and tell LLVM no iteration reads or writes memory another one does
 * (llvm.loop.parallel_accesses on every load and store in it), so that it
 * vectorizes a loop over many buffers of one slab whose distances it cannot
 * prove. Only for loops where each iteration owns its elements. */
void cg_loop_end_parallel(Cg *cg, CgLoop *l);
CgIf cg_if(Cg *cg, LLVMValueRef cond);
void cg_else(Cg *cg, CgIf *f);
void cg_endif(Cg *cg, CgIf *f);
void cg_trap_if(Cg *cg, LLVMValueRef cond);
void cg_copy(Cg *cg, LLVMValueRef dst, LLVMValueRef src, int64_t elems);
void cg_zero(Cg *cg, const Node *n);
void cg_copy_examples(Cg *cg, const Node *at, LLVMValueRef dst, const Type *dt, LLVMValueRef dst_off, LLVMValueRef src,
                      const Type *st, LLVMValueRef src_off, int64_t len);

/* For jit.c: the module (to read: a change made through it would leave
 * cg_bitcode stale), and the module optimized and
 * compiled for the host into an object file in memory, which the JIT links
 * (the module stays: cg_free disposes it). NULL with *error set on failure. */
LLVMModuleRef cg_module_ref(CgModule *m);
LLVMMemoryBufferRef cg_emit_object(CgModule *m, char **error);

/* The module's bitcode as LLVMWriteBitcodeToMemoryBuffer writes it, and
 * jit.c's hash of it for the object cache's key (hashed false until jit.c
 * fills it). Written on the first call and kept while the module stays as
 * it is: whatever here changes the module (cg_add_update, cg_optimize, a
 * target machine's triple and layout) drops it. A cold `seqc run` would
 * otherwise write and hash the training module twice (the cache's key in
 * the foreground, again on the tiers' thread) and write it twice more for
 * the parts of the two tiers (codegen_split.c). NULL when the module could
 * not be written; m owns the buffer. */
typedef struct CgBitcode {
    LLVMMemoryBufferRef buf;
    bool hashed;
    uint64_t hash[2];
} CgBitcode;
CgBitcode *cg_bitcode(CgModule *m);

/* codegen_split.c: the module compiled for the host at `tier` into
 * position-independent object files on up to `threads` threads (0: one per
 * core), its kernels dealt out to parts by size; a small module is one
 * object. Returns how many objects, in *objs (malloc'd; the caller disposes
 * of each and frees the array), or 0 with *error malloc'd. In parts, every
 * node's kernel becomes an external symbol named `<entry>.<kernel>`. The
 * module is compiled through copies and stays as it was (but for the
 * optimized tier of a module in one part, which is optimized in place), so
 * it may be compiled again at the other tier. cg_timing's quick_ms or
 * passes_ms is the wall time of it all (passes and machine code). */
int cg_emit_objects(CgModule *m, int threads, CgTier tier, LLVMMemoryBufferRef **objs, char **error);

/* A target machine for this host's CPU and features, with the module's triple
 * and data layout set to match it. NULL with *error set on failure; the
 * caller disposes the machine. */
LLVMTargetMachineRef cg_host_machine(LLVMModuleRef mod, CgTier tier, LLVMRelocMode reloc, LLVMCodeModel model,
                                     char **error);

/* codegen_gemm.c: C(i, j) = sum over p of A(i, p) B(p, j) for i < M, j < N,
 * all f32 in memory: A(i, p) at a[i * a_si + p * a_sp], B(p, j) at
 * b[p * b_sp + j], C(i, j) written to c[i * c_si + j]. Each sum is a float
 * taking its terms over p in order, one fused multiply-add each. */
typedef struct CgGemm {
    int64_t M, N, P;
    LLVMValueRef a, b, c;
    int64_t a_si, a_sp, b_sp, c_si;
    bool b_trans;           /* B(p, j) at b[j * b_sp + p] instead */
    int64_t a_ss;           /* internal: > 0 when A is packed in slivers of 8 rows, row i at a[(i / 8) * a_ss + i % 8] */
} CgGemm;
void cg_gemm(Cg *cg, const CgGemm *g);
/* acc + a * b rounded once (llvm.fma), scalars or vectors of one float type. */
LLVMValueRef cg_fma(Cg *cg, LLVMValueRef a, LLVMValueRef b, LLVMValueRef acc);

/* codegen_math.c: mathf.h's functions on scalars or cg->lanes vectors. */
LLVMValueRef cg_expf(Cg *cg, LLVMValueRef x);
LLVMValueRef cg_exp(Cg *cg, LLVMValueRef x);      /* double */
LLVMValueRef cg_log1p_unit(Cg *cg, LLVMValueRef x);  /* double, x in [0, 1] */
LLVMValueRef cg_tanhf(Cg *cg, LLVMValueRef x);
LLVMValueRef cg_fabsf(Cg *cg, LLVMValueRef x);

/* codegen_ops.c: the body of a node's function, for every op but SCAN. */
void cg_emit_op(Cg *cg, const Node *n);
/* An f32 elementwise node (the ops of emit_map), which a chain may hold. */
bool cg_is_map(const Node *n);
/* Nodes of one type t in graph order, each elementwise (cg_is_map), a slice
 * of type t of a value with t's rows, or a concat of earlier members with
 * t's rows: one loop computing all. */
void cg_emit_map_chain(Cg *cg, const Node *const *chain, int len);
/* f32 types equal but for the last axis: their rows line up. */
bool cg_same_rows(const Type *a, const Type *t);
/* Is x, a node of g, read by a node of g that is not among members[0 .. n),
 * by the scan whose body g is (an output), or by the host (g the model
 * graph)? A fused kernel stores only the members that are. */
bool cg_read_outside(const Graph *g, const Node *x, const Node *const *members, int n);
/* codegen_epilogue.c: a matrix product (MATMUL) at position i of g.nodes and
 * the elementwise nodes after it that read it, through slices of its last
 * axis included (an LSTM's gates), as one kernel: the tile of the product
 * stays in registers while the elementwise rules run on it. Returns the
 * group (malloc'd) and in *last the position of its last member, where the
 * kernel must run (nodes in between that are not members read none, and run
 * before it); marks the members' positions in taken, and leaves out nodes
 * already taken. NULL when nothing after the product can join it. */
typedef struct CgEpilogue CgEpilogue;
CgEpilogue *cg_epilogue_find(const Graph *g, int i, bool *taken, int *last);
void cg_epilogue_free(CgEpilogue *e);
/* Marks, by node id, the members the group's kernel computes and never stores. */
void cg_epilogue_unstored(const CgEpilogue *e, bool *unstored);
/* The group's kernel; returns its member count. */
int cg_emit_epilogue(Cg *cg, const CgEpilogue *e);
/* codegen_ops.c: the rule of an elementwise node (cg_is_map) on values
 * loaded as f32, scalars or cg->lanes-wide vectors; its operands in ops. */
LLVMValueRef cg_map_value(Cg *cg, const Node *n, LLVMValueRef *v);
int cg_map_operands(const Node *n, const Node *ops[4]);
/* codegen_ops.c: the extern functions g calls (scan bodies included), each
 * symbol once, as a malloc'd array; false when out of memory. */
bool cg_collect_externs(const Graph *g, CgExternSymbol **out, int *n);

/* codegen_update.c: the body of `<name>_update(ptr slab, u64 step)`, built
 * into cg->fn with cg->slab its first argument and `step` its second.
 * slot[which][param index] as CgPlan.slot. */
void cg_emit_update(Cg *cg, const Graph *g, const Optimizer *opt, int64_t *const slot[CG_OPT_SLOTS], LLVMValueRef step,
                    LLVMValueRef lr);
#endif

#endif
