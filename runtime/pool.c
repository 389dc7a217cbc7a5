/* The kernels' thread pool (pool.h). One task at a time: the caller hands
 * part i to worker i through the worker's own slot (the task, then a bumped
 * generation counter), runs part 0 itself and waits for the count of parts
 * left to reach zero. Workers without a part of this task are not touched,
 * so a sleeping one stays asleep. */
#define _GNU_SOURCE /* sched_getaffinity */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a worker spins for the next task before it sleeps: a step calls
 * its kernels back to back, a few microseconds to a millisecond apart, and
 * waking a sleeping thread costs tens of microseconds. */
#define SPIN_NS 2000000
/* When another process holds a core, a worker is often preempted in its
 * part and the caller waits milliseconds for the system to run it again:
 * two threads then train slower than one. A split kernel is late when the
 * caller waits for the others more than LATE_FACTOR times its own part's
 * time (and more than LATE_NS): parts are balanced, so on an idle machine
 * that wait is near zero. After LATE_OF_16 late kernels among the last 16
 * split ones the pool runs kernels on the caller alone for SOLO_CALLS
 * calls, then tries its threads again. Results do not depend on the
 * parts, so switching changes no bit. */
#define LATE_FACTOR 4
#define LATE_NS 50000
#define LATE_OF_16 8
#define SOLO_CALLS 4096
/* A worker's stack: a part keeps packed panels of up to 256 KB on it. */
#define STACK_BYTES (16u << 20)

/* A worker's task: written by the caller, then `gen` bumped; the caller
 * writes it again only after the worker has counted its part done. */
typedef struct Slot {
    _Alignas(64) atomic_uint gen;
    RtTask fn;
    void *ctx;
    int64_t nparts;
} Slot;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_int sleepers;        /* workers waiting on `wake` */
    atomic_int remaining;       /* parts of the current task not yet done */
    Slot slot[RT_MAX_THREADS];  /* by part: [0] unused, the caller runs part 0 */
    int threads;                /* wanted, the caller included; 0: not chosen yet */
    int started;                /* workers running */
    bool oversubscribed;        /* more threads than cores: spin politely */
    int64_t calls, split;       /* for rt_pool_counts */
    uint16_t late;              /* the last 16 split kernels: bit set when late */
    int64_t solo;               /* calls left to run on the caller alone */
    void *scratch[RT_MAX_THREADS];
    int64_t scratch_bytes[RT_MAX_THREADS];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static _Thread_local bool in_task;
static _Thread_local int64_t own_part; /* the part this thread runs, in a task */
static _Thread_local double next_flops; /* rt_product_next's, for the next kernel */
static struct {
    bool on;
    int64_t ns;
    double flops;
} products;

void rt_product_next(double flops) { next_flops = flops; }

void rt_products_count(bool on) {
    products.on = on;
    products.ns = 0;
    products.flops = 0;
}

void rt_products_counted(double *ms, double *flops) {
    *ms = (double)products.ns / 1e6;
    *flops = products.flops;
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int rt_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void rt_set_threads(int n) {
    if (n <= 0) n = rt_cores();
    pool.threads = n < RT_MAX_THREADS ? n : RT_MAX_THREADS;
    pool.oversubscribed = pool.threads > rt_cores();
}

int rt_threads(void) {
    if (!pool.threads) rt_set_threads(0);
    return pool.threads;
}

void rt_pool_counts(int64_t *calls, int64_t *split) {
    *calls = pool.calls;
    *split = pool.split;
}

static unsigned next_task(Slot *slot, unsigned seen) {
    int64_t start = 0;
    for (unsigned spins = 0;; spins++) {
        unsigned gen = atomic_load_explicit(&slot->gen, memory_order_acquire);
        if (gen != seen) return gen;
        if (pool.oversubscribed) sched_yield();
        else relax();
        if ((spins & 255) == 255) {
            int64_t t = now_ns();
            if (!start) start = t;
            else if (t - start > SPIN_NS) break;
        }
    }
    /* Sleep. The caller bumps `gen` and then reads `sleepers`; this thread
     * counts itself in `sleepers` and then reads `gen`: one of the two sees
     * the other's write, and the broadcast is sent under the lock. */
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.sleepers, 1);
    unsigned gen;
    while ((gen = atomic_load(&slot->gen)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
    atomic_fetch_sub(&pool.sleepers, 1);
    pthread_mutex_unlock(&pool.lock);
    return gen;
}

static void *worker(void *arg) {
    int64_t part = (int64_t)(intptr_t)arg;
    Slot *slot = &pool.slot[part];
    in_task = true; /* a worker runs nothing but parts */
    own_part = part;
    unsigned seen = 0; /* a slot is bumped only once its worker exists, and workers never stop */
    for (;;) {
        seen = next_task(slot, seen);
        slot->fn(slot->ctx, part, slot->nparts, pool.scratch[part]);
        atomic_fetch_sub_explicit(&pool.remaining, 1, memory_order_release);
    }
    return NULL;
}

/* Workers up to `want` (the caller not counted); fewer when the system
 * refuses threads, and then the pool keeps what it has. */
static void start_workers(int want) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return;
    pthread_attr_setstacksize(&attr, STACK_BYTES);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (pool.started < want) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker, (void *)(intptr_t)(pool.started + 1)) != 0) {
            pool.threads = pool.started + 1;
            break;
        }
        pool.started++;
    }
    pthread_attr_destroy(&attr);
}

static void grow_scratch(int64_t part, int64_t bytes) {
    if (pool.scratch_bytes[part] >= bytes) return;
    size_t size = ((size_t)bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, size);
    if (!p) {
        fprintf(stderr, "seqc: out of memory (%zu bytes of kernel scratch)\n", size);
        abort();
    }
    free(pool.scratch[part]);
    pool.scratch[part] = p;
    pool.scratch_bytes[part] = (int64_t)size;
}

static void run_task(RtTask fn, void *ctx, int64_t max_parts, int64_t scratch_bytes);

void rt_parallel(RtTask fn, void *ctx, int64_t max_parts, int64_t scratch_bytes) {
    double flops = next_flops;
    next_flops = 0;
    if (!products.on || flops <= 0 || in_task) {
        run_task(fn, ctx, max_parts, scratch_bytes);
        return;
    }
    int64_t t0 = now_ns();
    run_task(fn, ctx, max_parts, scratch_bytes);
    products.ns += now_ns() - t0;
    products.flops += flops;
}

static void run_task(RtTask fn, void *ctx, int64_t max_parts, int64_t scratch_bytes) {
    if (in_task) {
        /* A kernel of a part (a scan running beside another): whole, here.
         * Each thread grows only its own part's scratch, and the part that
         * called does not use it while its kernel runs. */
        grow_scratch(own_part, scratch_bytes > 0 ? scratch_bytes : 64);
        fn(ctx, 0, 1, pool.scratch[own_part]);
        return;
    }
    int64_t nparts = max_parts < rt_threads() ? max_parts : rt_threads();
    if (pool.solo > 0) {
        pool.solo--;
        nparts = 1;
    }
    if (nparts < 1) nparts = 1;
    if (nparts > 1 && pool.started < nparts - 1) {
        start_workers((int)nparts - 1);
        if (nparts > pool.started + 1) nparts = pool.started + 1;
    }
    for (int64_t p = 0; p < nparts; p++) grow_scratch(p, scratch_bytes > 0 ? scratch_bytes : 64);
    pool.calls++;
    pool.split += nparts > 1;
    in_task = true;
    own_part = 0;
    if (nparts == 1) {
        fn(ctx, 0, 1, pool.scratch[0]);
        in_task = false;
        return;
    }
    atomic_store_explicit(&pool.remaining, (int)nparts - 1, memory_order_relaxed);
    for (int64_t p = 1; p < nparts; p++) {
        Slot *slot = &pool.slot[p];
        slot->fn = fn;
        slot->ctx = ctx;
        slot->nparts = nparts;
        atomic_fetch_add(&slot->gen, 1);
    }
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    int64_t t0 = now_ns();
    fn(ctx, 0, nparts, pool.scratch[0]);
    int64_t t1 = now_ns();
    for (unsigned spins = 0; atomic_load_explicit(&pool.remaining, memory_order_acquire) > 0; spins++) {
        if (pool.oversubscribed || spins > 100000) sched_yield();
        else relax();
    }
    int64_t wait = now_ns() - t1;
    in_task = false;
    bool late = wait > LATE_NS && wait > LATE_FACTOR * (t1 - t0);
    pool.late = (uint16_t)(pool.late << 1 | late);
    if (__builtin_popcount(pool.late) >= LATE_OF_16) {
        pool.solo = SOLO_CALLS;
        pool.late = 0;
    }
}
