/* In-memory execution of a lowered model through ORC's LLJIT.
 *
 * Ownership: cg_jit compiles the CgModule's LLVM module into object files
 * (the module stays with the CgModule, which must outlive nothing here) and
 * links them into a new LLJIT instance owned by the returned CgJit;
 * cg_jit_free disposes of the instance and with it the machine code, after
 * which the entry point must not be called. */
#ifndef SEQC_JIT_H
#define SEQC_JIT_H

#include "codegen.h"

typedef struct CgJit CgJit;

/* Optimizes the module for the host and compiles it, on as many threads as
 * kernels run on (rt_threads: cg_emit_objects), or takes its objects from
 * the object cache; links them and looks up its entry point (and the
 * update's, when added). Runtime functions (rt_dropout_mask_f32) and
 * the libm functions the code calls are bound to this process's copies; other
 * symbols are looked up in the process. Records the time in
 * cg_timing(m)->jit_ms. On failure returns NULL with *error malloc'd. */
CgJit *cg_jit(CgModule *m, char **error);
/* ... on `threads` threads: a caller on another thread than the kernels'
 * says how many, since rt_threads may change meanwhile (tiers.c). */
CgJit *cg_jit_on(CgModule *m, int threads, char **error);
/* The optimized code from the object cache, or NULL: with *error NULL when
 * the cache does not hold it. */
CgJit *cg_jit_cached(CgModule *m, char **error);
/* The quick tier (CG_QUICK), compiled now and never cached: the code for
 * the first steps while cg_jit compiles the optimized tier on a thread of
 * its own. Compile a module at one tier at a time (the
 * optimized tier of a small module changes it in place), and ask the cache
 * (cg_jit_cached) before either: its key is the module as lowered. Records
 * cg_timing(m)->quick_ms. Compiles on `threads` threads. */
CgJit *cg_jit_quick(CgModule *m, int threads, char **error);
CgStepFn cg_jit_entry(const CgJit *j);
/* The optimizer's update, or NULL when the module has none (cg_add_update). */
CgUpdateFn cg_jit_update(const CgJit *j);
/* The object files it linked: more than one when the module was compiled in parts. */
int cg_jit_objects(const CgJit *j);
void cg_jit_free(CgJit *j);

#endif
