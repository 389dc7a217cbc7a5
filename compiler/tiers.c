/* Two tiers of code for `seqc run`. The optimized tier takes LLVM a second
 * or more on the larger models; the quick tier a tenth of that, and runs a
 * few times slower. The training step's quick tier is compiled first, the
 * command starts on it, and a thread lowers the inference module (which
 * build_model only planned: its IR is no part of the first training step)
 * and compiles its quick tier (the command may need it at once: sample,
 * predict), then the optimized tiers of both. The runtime calls the entry
 * points below, which call whatever tier is best at that moment. The
 * runtime calls steps from one thread; the tiers' functions are published
 * with atomic stores, and a step's first call waits for its first tier
 * under a lock (the inference step's, and a training step of large
 * products, which waits for the optimized code: tiers_quick_pays). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "jit.h"
#include "pool.h"
#include "tiers.h"

typedef struct Tier {
    CgModule *code;
    CgJit *quick, *optimized;
    _Atomic(CgStepFn) step;
    _Atomic(CgUpdateFn) update;
} Tier;

typedef struct Session {
    Tier train, infer;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t published;
    bool done;              /* the thread has finished (under the lock) */
    char *error;            /* the inference step could not be lowered or compiled at all */
    atomic_bool failed;     /* ... said once the thread has finished: the run stops */
    char *optimize_error;   /* an optimized tier could not be; the quick one ran */
    double t0;
    int threads;            /* what the compiles split over: rt_threads at tiers_start */
    int nice;               /* the calling thread's, at tiers_start */
    bool renice;            /* the quick tier may run at nice 19 and come back to it */
    TierTimes times;
} Session;

static Session S = {.lock = PTHREAD_MUTEX_INITIALIZER, .published = PTHREAD_COND_INITIALIZER};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void publish(Tier *t, CgJit *j) {
    atomic_store(&t->update, cg_jit_update(j));
    atomic_store(&t->step, cg_jit_entry(j));
    pthread_mutex_lock(&S.lock);
    pthread_cond_broadcast(&S.published);
    pthread_mutex_unlock(&S.lock);
}

/* While the optimized code compiles, the quick tier runs on one thread, at
 * the lowest priority when the thread may take its own back (root, or an
 * RLIMIT_NICE that allows it; decided once, by tiers_start): the compiler's
 * threads have the cores, and the optimized code, several times faster,
 * comes about as soon as it would alone. The results depend on neither. */
static int quiet_threads(void) {
    int threads = rt_threads();
    rt_set_threads(1);
    if (S.renice) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    return threads;
}

static void quiet_end(int threads) {
    if (S.renice) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), S.nice);
    rt_set_threads(threads);
}

static void call_step(const Tier *t, CgStepFn f, uint8_t *slab, int32_t training, uint64_t dropout_seed,
                      int32_t upto) {
    if (!t->quick || f != cg_jit_entry(t->quick)) {
        f(slab, training, dropout_seed, upto);
        return;
    }
    int threads = quiet_threads();
    f(slab, training, dropout_seed, upto);
    quiet_end(threads);
}

/* The inference step cannot be made: the run stops at its next step, as it
 * stopped before its first when the inference module was lowered up front.
 * The thread has finished, so no LLVM code runs while the process exits. */
static _Noreturn void stop_run(void) {
    fprintf(stderr, "%s\n", S.error);
    exit(1);
}

/* The tier's step, once it has one (the first call may wait for it). */
static CgStepFn ready_step(Tier *t) {
    if (atomic_load(&S.failed)) stop_run();
    CgStepFn f = atomic_load(&t->step);
    if (f) return f;
    pthread_mutex_lock(&S.lock);
    while (!(f = atomic_load(&t->step)) && !S.done) pthread_cond_wait(&S.published, &S.lock);
    pthread_mutex_unlock(&S.lock);
    if (!f) stop_run();
    return f;
}

static void train_step(uint8_t *slab, int32_t training, uint64_t dropout_seed, int32_t upto) {
    call_step(&S.train, ready_step(&S.train), slab, training, dropout_seed, upto);
}

static void train_update(uint8_t *slab, uint64_t step, double lr) {
    ready_step(&S.train); /* published with the update */
    CgUpdateFn f = atomic_load(&S.train.update);
    if (!S.train.quick || f != cg_jit_update(S.train.quick)) {
        f(slab, step, lr);
        return;
    }
    int threads = quiet_threads();
    f(slab, step, lr);
    quiet_end(threads);
}

static void infer_step(uint8_t *slab, int32_t training, uint64_t dropout_seed, int32_t upto) {
    call_step(&S.infer, ready_step(&S.infer), slab, training, dropout_seed, upto);
}

/* Keeps the first reason an optimized tier failed. */
static void optimize_failed(char *error) {
    if (S.optimize_error) free(error);
    else S.optimize_error = error;
}

static void *compile_rest(void *arg) {
    (void)arg;
    Tier *train = &S.train, *infer = &S.infer;
    char *err = NULL;
    if (cg_lower_module(infer->code, &err)) {
        infer->optimized = cg_jit_cached(infer->code, &err);
        if (!infer->optimized && !err) infer->quick = cg_jit_quick(infer->code, S.threads, &err);
    }
    if (err) {
        S.error = err;
        goto done;
    }
    publish(infer, infer->optimized ? infer->optimized : infer->quick);
    if (!train->optimized) {
        if ((train->optimized = cg_jit_on(train->code, S.threads, &err))) {
            S.times.train_optimized_ms = now_ms() - S.t0;
            if (!atomic_load(&train->step)) S.times.train_ready_ms = S.times.train_optimized_ms;
            publish(train, train->optimized);
        } else {
            optimize_failed(err);
            if (!atomic_load(&train->step)) publish(train, train->quick);
        }
    }
    if (!infer->optimized) {
        if ((infer->optimized = cg_jit_on(infer->code, S.threads, &err))) publish(infer, infer->optimized);
        else optimize_failed(err);
    }
done:
    pthread_mutex_lock(&S.lock);
    S.done = true;
    atomic_store(&S.failed, S.error != NULL);
    pthread_cond_broadcast(&S.published);
    pthread_mutex_unlock(&S.lock);
    return NULL;
}

/* The quick tier's products run at about QUICK_GFLOPS, and the optimized
 * code takes about OPTIMIZED_PER_QUICK times as long to compile as the quick
 * code (on the seed models and examples: 9-35 GFLOP/s, 8-13 times). When a
 * quick step would outlast the optimized compile, the first step waits for
 * the optimized code instead (lstm_big: a quick step of 2 s against the
 * optimized code 0.4 s away). */
enum { QUICK_GFLOPS = 20, OPTIMIZED_PER_QUICK = 10 };

bool tiers_quick_pays(double step_flops, double quick_ms) {
    return step_flops / (QUICK_GFLOPS * 1e9) <= OPTIMIZED_PER_QUICK * quick_ms / 1e3;
}

bool tiers_start(CgModule *train, CgModule *infer, double step_flops, RtModelCode *code, char **error) {
    S.t0 = now_ms();
    /* Read once: a quick step runs its kernels on one thread (quiet_threads)
     * while this thread's compiles go on, and they take the cores. */
    S.threads = rt_threads();
    S.train.code = train;
    S.infer.code = infer;
    if (!(S.train.optimized = cg_jit_cached(train, error)) && (*error || !(S.train.quick = cg_jit_quick(train, S.threads, error))))
        return false;
    S.times.train_from_cache = S.train.optimized != NULL;
    errno = 0;
    S.nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    struct rlimit r;
    S.renice = errno == 0 && S.nice < 19 &&
               (geteuid() == 0 || (getrlimit(RLIMIT_NICE, &r) == 0 &&
                                   (r.rlim_cur == RLIM_INFINITY || 20 - (long)r.rlim_cur <= S.nice)));
    S.times.quick_unused = S.train.quick && !tiers_quick_pays(step_flops, cg_timing(train)->quick_ms);
    if (!S.times.quick_unused) {
        CgJit *first = S.train.optimized ? S.train.optimized : S.train.quick;
        S.times.train_ready_ms = now_ms() - S.t0;
        if (S.train.optimized) S.times.train_optimized_ms = S.times.train_ready_ms;
        atomic_store(&S.train.update, cg_jit_update(first));
        atomic_store(&S.train.step, cg_jit_entry(first));
    }
    S.started = pthread_create(&S.thread, NULL, compile_rest, NULL) == 0;
    if (!S.started) compile_rest(NULL);
    code->train_step = train_step;
    code->train_update = cg_update_signature(train) ? train_update : NULL;
    code->infer_step = infer_step;
    return true;
}

bool tiers_finish(TierTimes *times) {
    if (S.started) pthread_join(S.thread, NULL);
    S.started = false;
    bool ok = !S.error;
    if (S.error) fprintf(stderr, "%s\n", S.error);
    if (S.optimize_error)
        fprintf(stderr, "seqc: the optimized code could not be compiled; the quick tier ran instead: %s\n",
                S.optimize_error);
    free(S.error);
    free(S.optimize_error);
    Tier *tiers[] = {&S.train, &S.infer};
    for (int i = 0; i < 2; i++) {
        cg_jit_free(tiers[i]->quick);
        cg_jit_free(tiers[i]->optimized);
    }
    if (times) *times = S.times;
    S.train = S.infer = (Tier){0};
    S.done = false;
    atomic_store(&S.failed, false);
    S.error = S.optimize_error = NULL;
    S.times = (TierTimes){0};
    return ok;
}
