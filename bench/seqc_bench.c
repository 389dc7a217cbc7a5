/* Times seqc's training step on a model file, the way bench/run compares it
 * with its peers:
 *
 *     seqc-bench [--steps N] [--warmup W] [--no-update] [--batch N] [--bptt N] [--since NS] [--threads T] MODEL.seq
 *     seqc-bench --infer [--steps N] [--threads T] MODEL.seq
 *     seqc-bench --peak
 *
 * The model is compiled as `seqc run` compiles it (build_model, ORC JIT),
 * its params initialized by their initializers and its inputs filled with
 * random values that make sense for them (gradcheck_fill_input). Then W
 * warm-up steps and N timed ones, each one call of the training step
 * (forward and backward) and one of the optimizer's update (--no-update: the
 * step alone, forward and backward, as oneDNN's primitive is timed). One
 * line on stdout:
 *
 *     model=NAME median_ms= min_ms= max_ms= ready_ms= first_step_ms= optimized_ms= quick_llvm_ms= llvm_ms=
 *     gflop= gflops= products_ms= products_gflops= slab_mb= act_mb= rss_mb= threads=
 *
 * --threads T: the kernels' threads (runtime/pool.h; default one per core).
 *
 * The code comes as `seqc run` has it (compiler/tiers.c): the optimized tier
 * from the object cache, else the quick tier at once and the optimized one
 * after the first step (here on this thread; `seqc run` compiles it on
 * another while the command goes on), unless a quick step would outlast
 * compiling the optimized code (tiers_quick_pays), which then comes first. Times run from the process's start:
 * ready_ms to the first code being ready to run (loading the program and its
 * libraries and compiling included), first_step_ms to the end of the first
 * step on it (params initialized, inputs filled, first touches of the slab),
 * optimized_ms to the optimized code being ready. quick_llvm_ms is LLVM's
 * part of ready_ms (0 from the cache), llvm_ms all of LLVM's time. The
 * start is --since (CLOCK_REALTIME in nanoseconds, taken by the caller just
 * before it starts this program, e.g. `--since $(date +%s%N)`), else the
 * kernel's record of it, which counts in 10 ms ticks. The timed steps run
 * the optimized code. gflop counts the matrix products of one step
 * (forward, backward, recomputation, every time step): 2 M N K each.
 * products_ms is the time a timed step spends in the product kernels (a
 * product with the elementwise epilogue fused into it included, gates and
 * all), as the thread pool counts them (rt_products_count), and
 * products_gflops their FLOPs over that time: the products' own rate. A
 * product of one or two rows, or one inside a scan that runs beside
 * another, is not counted.
 *
 * --infer times the inference variant instead (batch 1; one time step of a
 * stateful model, as `sample` runs it): N calls of 1,000 steps each, and
 * prints model= infer_us= (the median call's time per step) min_us= max_us=
 *
 * --peak measures the machine's FP32 FMA throughput with a kernel of
 * independent vector FMAs (the widest vectors the CPU has), on one thread and
 * on every core, the best of three tries of each, and prints: peak1_gflops=
 * peakall_gflops= cores= */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "build.h"
#include "gradcheck.h"
#include "interp.h"
#include "jit.h"
#include "model.h"
#include "tiers.h"
#include "pool.h"
#include "rng.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Milliseconds since `since` (CLOCK_REALTIME ns), or since this process
 * started by /proc (boot-relative clocks) when since is 0. */
static double since_start_ms(long long since) {
    if (since > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return ((double)ts.tv_sec * 1e9 + (double)ts.tv_nsec - (double)since) / 1e6;
    }
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Field 22, counted after the command name's closing parenthesis (field 2). */
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long start = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " "))
        if (++field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    double boot_ms = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
    return boot_ms - (double)start * 1e3 / (double)sysconf(_SC_CLK_TCK);
}

/* ---- the peak ------------------------------------------------------------------------------ */

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
#define CHAINS 12 /* independent accumulators: more than latency x FMA units */
#define PEAK_ITERS 20000000LL

/* 12 chains of FMAs on the widest vectors; returns FLOPs done. The volatile
 * seed keeps the compiler from folding the loop. */
#define FMA_KERNEL(name, vt, lanes, isa)                                                                  \
    __attribute__((target(isa), optimize("fp-contract=fast", "unroll-loops"), noinline)) static double name(void) {                                 \
        volatile float seed = 1.0f;                                                                       \
        vt acc[CHAINS], m, a;                                                                             \
        for (int k = 0; k < lanes; k++) m[k] = seed * 0.999999f, a[k] = seed * 1e-7f;                     \
        for (int c = 0; c < CHAINS; c++) acc[c] = m * (float)c;                                           \
        for (long long i = 0; i < PEAK_ITERS; i++)                                                        \
            for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * m + a;                                     \
        float sink = 0;                                                                                   \
        for (int c = 0; c < CHAINS; c++)                                                                  \
            for (int k = 0; k < lanes; k++) sink += acc[c][k];                                            \
        seed = sink;                                                                                      \
        return 2.0 * lanes * CHAINS * (double)PEAK_ITERS;                                                 \
    }
FMA_KERNEL(fma512, v16, 16, "avx512f,fma")
FMA_KERNEL(fma256, v8, 8, "avx2,fma")

static double run_fma(void) { return __builtin_cpu_supports("avx512f") ? fma512() : fma256(); }

static void *fma_thread(void *arg) {
    *(double *)arg = run_fma();
    return NULL;
}

/* The best of three tries each: a virtual machine's core taken by its host
 * for a moment makes one try read low (once, two cores read as one). */
static int peak(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    pthread_t *th = calloc((size_t)cores, sizeof *th);
    double *fl = calloc((size_t)cores, sizeof *fl), one = 0, all = 0;
    for (int t = 0; t < 3; t++) {
        double t0 = now_ms(), f1 = run_fma(), t1 = now_ms();
        if (f1 / (t1 - t0) / 1e6 > one) one = f1 / (t1 - t0) / 1e6;
        double t2 = now_ms(), total = 0;
        for (long c = 0; c < cores; c++) pthread_create(&th[c], NULL, fma_thread, &fl[c]);
        for (long c = 0; c < cores; c++) pthread_join(th[c], NULL), total += fl[c];
        double t3 = now_ms();
        if (total / (t3 - t2) / 1e6 > all) all = total / (t3 - t2) / 1e6;
    }
    printf("peak1_gflops=%.1f peakall_gflops=%.1f cores=%ld\n", one, all, cores);
    free(th);
    free(fl);
    return 0;
}

/* ---- one model ------------------------------------------------------------------------------ */

/* The slab less what does not grow with the sequence: inputs, params and
 * state variables, the params' gradients (an embedding's with its f64
 * accumulators) and the optimizer's slots. MB. */
static int64_t bytes_of(const Graph *g, const Node *n) {
    return 4 * type_elements(&n->type) * (n->type.batched ? g->batch : 1);
}

static double activation_mb(const Graph *g, const CgPlan *plan) {
    int64_t fixed = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_INPUT || n->op == OP_PARAM || n->op == OP_STATEVAR) fixed += bytes_of(g, n);
    }
    for (int i = 0; i < g->grads.len; i++) {
        const Node *d = g->grads.items[i];
        if (!d) continue;
        fixed += bytes_of(g, d);
        if (d->op == OP_EMBED_GRAD) fixed += 2 * bytes_of(g, d);
    }
    for (int i = 0; i < plan->nparams; i++)
        for (int w = 0; w < CG_OPT_SLOTS; w++)
            if (plan->slot[w] && plan->slot[w][i] >= 0) fixed += bytes_of(g, g->params.items[i]);
    return (double)(plan->slab_bytes - fixed) / 1048576.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Params (by their initializers) and inputs (random, sensible) into the slab. */
static bool fill_slab(const Graph *g, const CgPlan *plan, uint8_t *slab) {
    Interp *it = interp_new(g, PREC_F32);
    if (!it) return false;
    RtRng rng;
    rt_rng_seed(&rng, 1, 0);
    for (int i = 0; i < g->inputs.len; i++) gradcheck_fill_input(it, g, g->inputs.items[i], &rng);
    for (int i = 0; i < g->targets.len; i++) gradcheck_fill_input(it, g, g->targets.items[i], &rng);
    gradcheck_write_slab(it, g, plan->offset, slab);
    interp_free(it);
    return true;
}

static void usage(void) {
    fprintf(stderr, "usage: seqc-bench [--steps N] [--warmup W] [--no-update] [--batch N] [--bptt N] [--since NS] "
                    "[--threads T] MODEL.seq\n"
                    "       seqc-bench --peak\n");
}

int main(int argc, char **argv) {
    int steps = 10, warmup = 3;
    long long since = 0;
    bool update = true, infer = false;
    BuildOptions bo = {.jit = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "--peak") == 0) return peak();
        if (strcmp(a, "--steps") == 0 && more) steps = atoi(argv[++i]);
        else if (strcmp(a, "--warmup") == 0 && more) warmup = atoi(argv[++i]);
        else if (strcmp(a, "--batch") == 0 && more) bo.batch = atoll(argv[++i]);
        else if (strcmp(a, "--bptt") == 0 && more) bo.bptt = atoll(argv[++i]);
        else if (strcmp(a, "--since") == 0 && more) since = atoll(argv[++i]);
        else if (strcmp(a, "--threads") == 0 && more) rt_set_threads(atoi(argv[++i]));
        else if (strcmp(a, "--no-update") == 0) update = false;
        else if (strcmp(a, "--infer") == 0) infer = true;
        else if (a[0] != '-' && !bo.path) bo.path = a;
        else {
            usage();
            return 2;
        }
    }
    if (!bo.path || steps < 1 || warmup < 0) {
        usage();
        return 2;
    }
    /* As `seqc run`, which lowers the inference module on another thread
     * after the training step's code: here only --infer needs it. */
    bo.infer_later = !infer;
    Diags d;
    diag_init(&d);
    Build b;
    char *err = NULL;
    CgJit *j = NULL;
    uint8_t *slab = NULL;
    double *times = NULL;
    int status = 1;
    if (!build_model(&bo, &b, &d, &err)) {
        char *s = diag_render(&d);
        fprintf(stderr, "%s%s%s", s ? s : "", err ? err : "", err ? "\n" : "");
        free(s);
        goto done;
    }
    /* As `seqc run` starts (compiler/tiers.c): the optimized code from the
     * cache, else the quick tier; the optimized code then replaces it. */
    CgModule *code = infer ? b.infer_code : b.train_code;
    const Graph *g = infer ? b.infer.graph : b.train.graph;
    bool quick = false;
    if (!(j = cg_jit_cached(code, &err)) && !err) {
        j = cg_jit_quick(code, rt_threads(), &err);
        quick = true;
    }
    if (j && quick && !infer && !tiers_quick_pays(graph_matmul_flops(g, g->batch), cg_timing(code)->quick_ms)) {
        cg_jit_free(j);
        j = cg_jit(code, &err);
        quick = false;
    }
    if (!j) {
        fprintf(stderr, "%s\n", err);
        goto done;
    }
    double ready = since_start_ms(since);
    const CgPlan *plan = cg_plan(code);
    CgStepFn step = cg_jit_entry(j);
    CgUpdateFn upd = cg_jit_update(j);
    /* The runtime's slab, as `seqc run` has it: zeroed by the kernel as the
     * first step touches it, not by a memset before. */
    slab = rt_slab_new(&(RtVariant){.slab_bytes = plan->slab_bytes});
    times = calloc((size_t)steps, sizeof *times);
    if (!slab || !times) {
        fprintf(stderr, "seqc-bench: out of memory\n");
        goto done;
    }
    if (!fill_slab(g, plan, slab)) {
        fprintf(stderr, "seqc-bench: cannot initialize %s\n", bo.path);
        goto done;
    }
    double lr = b.train.recipe.opt.lr, first = 0;
    if (!infer) {
        step(slab, 1, 0, g->nodes.len);
        if (update && upd) upd(slab, 1, lr);
        first = since_start_ms(since);
    }
    if (quick) {
        CgJit *optimized = cg_jit(code, &err);
        if (!optimized) {
            fprintf(stderr, "%s\n", err);
            goto done;
        }
        cg_jit_free(j);
        j = optimized;
        step = cg_jit_entry(j);
        upd = cg_jit_update(j);
    }
    double optimized_ms = since_start_ms(since);
    if (infer) {
        enum { CALLS = 1000 };
        for (int s = 0; s < CALLS; s++) step(slab, 0, 0, g->nodes.len);
        for (int s = 0; s < steps; s++) {
            double t0 = now_ms();
            for (int c = 0; c < CALLS; c++) step(slab, 0, 0, g->nodes.len);
            times[s] = (now_ms() - t0) * 1e3 / CALLS;
        }
        qsort(times, (size_t)steps, sizeof *times, cmp_double);
        printf("model=%s infer_us=%.2f min_us=%.2f max_us=%.2f\n", g->name, times[steps / 2], times[0],
               times[steps - 1]);
        status = 0;
        goto done;
    }
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) rt_products_count(true);
        double t0 = now_ms();
        step(slab, 1, (uint64_t)s + 2, g->nodes.len);
        if (update && upd) upd(slab, (uint64_t)s + 2, lr);
        double t1 = now_ms();
        if (s >= warmup) times[s - warmup] = t1 - t0;
    }
    double products_ms, products_flops;
    rt_products_counted(&products_ms, &products_flops);
    rt_products_count(false);
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double median = steps % 2 ? times[steps / 2] : (times[steps / 2 - 1] + times[steps / 2]) / 2;
    const CgTiming *tt = cg_timing(b.train_code), *ti = cg_timing(b.infer_code);
    double gflop = graph_matmul_flops(g, g->batch) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model=%s median_ms=%.3f min_ms=%.3f max_ms=%.3f ready_ms=%.1f first_step_ms=%.1f optimized_ms=%.1f "
           "quick_llvm_ms=%.1f llvm_ms=%.1f gflop=%.4f gflops=%.1f products_ms=%.3f products_gflops=%.1f "
           "slab_mb=%.1f act_mb=%.2f rss_mb=%.1f threads=%d\n",
           g->name, median, times[0], times[steps - 1], ready, first, optimized_ms, tt->quick_ms,
           tt->quick_ms + tt->passes_ms + tt->jit_ms + ti->quick_ms + ti->passes_ms + ti->jit_ms, gflop,
           gflop / median * 1e3, products_ms / steps, products_ms > 0 ? products_flops / products_ms / 1e6 : 0.0,
           (double)plan->slab_bytes / 1048576.0, activation_mb(g, plan), (double)ru.ru_maxrss / 1024.0, rt_threads());
    status = 0;
done:
    free(times);
    rt_slab_free(slab);
    if (j) cg_jit_free(j);
    build_free(&b);
    free(err);
    diag_free(&d);
    return status;
}
