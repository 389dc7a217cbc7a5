/* The thread pool generated code splits its kernels over.
 *
 * A kernel (a matrix product, a fused epilogue, a loss over many rows) is
 * emitted as a function of its part: `fn(ctx, part, nparts, scratch)` does
 * the part'th of nparts slices of the work, chosen so that every output
 * element belongs to exactly one part and is computed there in the same
 * order as by one thread. That is what makes results independent of the
 * number of threads, bit for bit: no sum is ever split between parts.
 *
 * The pool is made on first use and lives as long as the process: workers
 * wait spinning for a while after each kernel (steps call kernels hundreds
 * of times a second), then sleep. rt_parallel allocates nothing once every
 * buffer has reached the largest scratch asked for, so a training loop
 * allocates only in its first step. One thread of the process calls it at
 * a time: the runtime's training and inference are single-threaded callers. */
#ifndef SEQC_RUNTIME_POOL_H
#define SEQC_RUNTIME_POOL_H

#include <stdbool.h>
#include <stdint.h>

/* The most threads a pool runs (the caller included). */
#define RT_MAX_THREADS 64

typedef void (*RtTask)(void *ctx, int64_t part, int64_t nparts, void *scratch);

/* Runs fn on min(max_parts, the pool's threads) parts, part 0 on the calling
 * thread, and returns when all are done. Each part gets scratch_bytes of
 * its own (64-byte aligned, contents undefined). Called from a part (two
 * independent scans run side by side, one a part, and their kernels call
 * it), it runs fn whole on that part's thread, with that part's scratch. */
void rt_parallel(RtTask fn, void *ctx, int64_t max_parts, int64_t scratch_bytes);

/* The matrix products' rate (seqc-bench): a product's kernel calls
 * rt_product_next with its FLOPs just before its rt_parallel, and while
 * counting is on the pool adds up those calls' wall time and FLOPs. A
 * product run from a part (a scan beside another) is not counted. */
void rt_product_next(double flops);
void rt_products_count(bool on);
void rt_products_counted(double *ms, double *flops);

/* The threads kernels use from now on: n >= 1, or 0 for one per core this
 * process may run on. Capped at RT_MAX_THREADS. Call it between kernels,
 * not from a task. */
void rt_set_threads(int n);
int rt_threads(void);
/* The cores this process may run on (its CPU affinity). */
int rt_cores(void);
/* rt_parallel's calls so far, and how many of them ran on more than one thread. */
void rt_pool_counts(int64_t *calls, int64_t *split);

#endif
