/* A module compiled on several threads: LLVM optimizes and compiles one
 * module on one thread, and a model's step is hundreds of kernels that do
 * not need each other's code. The kernels the entry points call (the
 * roots: every node's kernel, a scan body's too) are dealt out to parts by
 * size, each part is a copy of the module in its own context that keeps
 * only its roots and what they reach, and each part becomes an object file
 * on its own thread.
 *
 * A root becomes an external symbol, named after the module's entry so that
 * the train and infer modules of one executable do not clash; the parts
 * that call it but do not hold it declare it. The helpers a root reaches
 * stay internal and are copied into every part that reaches them (the small
 * GEMM packers, mostly). The arithmetic is the IR's, with no fast-math, so
 * where a function's code ends up does not change a result. */
#define SEQC_CODEGEN_INTERNAL
#include <llvm-c/BitReader.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "pool.h"

/* Parts are not worth a thread below this many instructions each: the copy
 * through bitcode and the code shared between parts would eat the gain. */
enum { PART_MIN_INSTRUCTIONS = 1500, MAX_PARTS = 8 };

typedef struct Fn {
    LLVMValueRef fn;
    int64_t size;           /* instructions */
    int *refs, nrefs;       /* functions defined here that its code names */
    bool entry, root;
    int part;               /* a root's (entry points: 0) */
    int64_t reach;          /* a root's size with the helpers it reaches */
} Fn;

typedef struct Split {
    Fn *fns;
    int nfns;
    int *order;             /* roots, the largest first */
    int nroots;
} Split;

static int fn_index(const Split *s, LLVMValueRef f) {
    for (int i = 0; i < s->nfns; i++)
        if (s->fns[i].fn == f) return i;
    return -1;
}

static void split_free(Split *s) {
    for (int i = 0; i < s->nfns; i++) free(s->fns[i].refs);
    free(s->fns);
    free(s->order);
}

/* The defined functions, their sizes and the functions each one names. */
static bool scan_module(LLVMModuleRef mod, Split *s) {
    int cap = 0;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f)) cap++;
    s->fns = calloc((size_t)cap + 1, sizeof *s->fns);
    s->order = calloc((size_t)cap + 1, sizeof *s->order);
    if (!s->fns || !s->order) return false;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f))
            s->fns[s->nfns++] = (Fn){.fn = f, .entry = LLVMGetLinkage(f) != LLVMInternalLinkage};
    for (int i = 0; i < s->nfns; i++) {
        Fn *fn = &s->fns[i];
        int cap_refs = 0;
        for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn->fn); bb; bb = LLVMGetNextBasicBlock(bb))
            for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) {
                fn->size++;
                int nops = LLVMGetNumOperands(in);
                for (int k = 0; k < nops; k++) {
                    LLVMValueRef op = LLVMGetOperand(in, (unsigned)k);
                    int j = op && LLVMIsAFunction(op) ? fn_index(s, op) : -1;
                    if (j < 0 || j == i) continue;
                    bool seen = false;
                    for (int r = 0; r < fn->nrefs && !seen; r++) seen = fn->refs[r] == j;
                    if (seen) continue;
                    if (fn->nrefs == cap_refs) {
                        cap_refs = cap_refs ? 2 * cap_refs : 8;
                        int *grown = realloc(fn->refs, sizeof *grown * (size_t)cap_refs);
                        if (!grown) return false;
                        fn->refs = grown;
                    }
                    fn->refs[fn->nrefs++] = j;
                }
            }
    }
    return true;
}

/* A root's size with the helpers it reaches (another root is its own). */
static int64_t reach(const Split *s, int i, unsigned char *seen) {
    if (seen[i]) return 0;
    seen[i] = 1;
    int64_t n = s->fns[i].size;
    for (int r = 0; r < s->fns[i].nrefs; r++)
        if (!s->fns[s->fns[i].refs[r]].root) n += reach(s, s->fns[i].refs[r], seen);
    return n;
}

/* A node's kernel, `void (ptr slab, i32 training, i64 seed)`: the entry
 * calls the model's, a scan's kernel calls its body's at every step. */
static bool node_kernel(LLVMValueRef f) {
    LLVMTypeRef t = LLVMGlobalGetValueType(f), params[3];
    if (LLVMGetTypeKind(LLVMGetReturnType(t)) != LLVMVoidTypeKind || LLVMCountParamTypes(t) != 3) return false;
    LLVMGetParamTypes(t, params);
    return LLVMGetTypeKind(params[0]) == LLVMPointerTypeKind && LLVMGetTypeKind(params[1]) == LLVMIntegerTypeKind &&
           LLVMGetIntTypeWidth(params[1]) == 32 && LLVMGetTypeKind(params[2]) == LLVMIntegerTypeKind &&
           LLVMGetIntTypeWidth(params[2]) == 64;
}

/* Deals the roots out to at most `want` parts, the largest first to the
 * lightest part (the first part starts with the entry points' own code).
 * Returns the parts used. */
static int deal_roots(Split *s, int want) {
    unsigned char *seen = calloc((size_t)s->nfns + 1, 1);
    if (!seen) return 1;
    int64_t total = 0, load[MAX_PARTS] = {0};
    /* The roots: every node's kernel, and whatever else an entry calls (the
     * update's parts). The helpers they call (tiles, packers, a kernel's
     * parts) stay internal to a part, where the optimizer may specialize
     * them for their constant arguments. */
    for (int i = 0; i < s->nfns; i++) {
        Fn *fn = &s->fns[i];
        for (int r = 0; fn->entry && r < fn->nrefs; r++) s->fns[fn->refs[r]].root = !s->fns[fn->refs[r]].entry;
        if (!fn->entry && node_kernel(fn->fn)) fn->root = true;
    }
    for (int i = 0; i < s->nfns; i++) {
        if (s->fns[i].entry) load[0] += s->fns[i].size;
        if (s->fns[i].root) s->order[s->nroots++] = i;
    }
    for (int k = 0; k < s->nroots; k++) {
        Fn *root = &s->fns[s->order[k]];
        memset(seen, 0, (size_t)s->nfns);
        root->reach = reach(s, s->order[k], seen);
        total += root->reach;
    }
    free(seen);
    int parts = (int)((total + load[0]) / PART_MIN_INSTRUCTIONS);
    if (parts > want) parts = want;
    if (parts > s->nroots) parts = s->nroots;
    if (parts <= 1) return 1;
    for (int k = 1; k < s->nroots; k++) /* by reach, descending; ties in module order */
        for (int j = k; j > 0 && s->fns[s->order[j]].reach > s->fns[s->order[j - 1]].reach; j--) {
            int t = s->order[j];
            s->order[j] = s->order[j - 1];
            s->order[j - 1] = t;
        }
    for (int k = 0; k < s->nroots; k++) {
        int lightest = 0;
        for (int p = 1; p < parts; p++)
            if (load[p] < load[lightest]) lightest = p;
        s->fns[s->order[k]].part = lightest;
        load[lightest] += s->fns[s->order[k]].reach;
    }
    return parts;
}

/* ---- one part, on its own thread ------------------------------------------- */

typedef struct Part {
    int index;
    CgTier tier;
    const char *bitcode;
    size_t bitcode_len;
    /* The functions that belong to a part, by their names in the module:
     * entry points (part 0) and roots, with their parts. A root is renamed
     * `<prefix>.<name>`, external in every part. */
    const char *const *names;
    const int *name_parts;
    const bool *name_roots;
    int nnames;
    const char *prefix;
    LLVMMemoryBufferRef object;
    char *error;
} Part;

static int name_index(const Part *p, const char *name, size_t len) {
    for (int i = 0; i < p->nnames; i++)
        if (strncmp(p->names[i], name, len) == 0 && p->names[i][len] == 0) return i;
    return -1;
}

/* Makes f a declaration for its uses (the definition is another part's). */
static void declare_only(LLVMModuleRef mod, LLVMValueRef f) {
    if (!LLVMGetFirstUse(f)) {
        LLVMDeleteFunction(f);
        return;
    }
    size_t len;
    const char *name = LLVMGetValueName2(f, &len);
    char *keep = cg_format("%.*s", (int)len, name);
    LLVMValueRef decl = LLVMAddFunction(mod, "", LLVMGlobalGetValueType(f));
    LLVMSetFunctionCallConv(decl, LLVMGetFunctionCallConv(f));
    LLVMReplaceAllUsesWith(f, decl);
    LLVMDeleteFunction(f);
    LLVMSetValueName2(decl, keep, strlen(keep));
    free(keep);
}

static void *compile_part(void *arg) {
    Part *p = arg;
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMMemoryBufferRef buf =
        LLVMCreateMemoryBufferWithMemoryRange(p->bitcode, p->bitcode_len, "seqc-part", false);
    LLVMModuleRef mod = NULL;
    LLVMTargetMachineRef tm = NULL;
    LLVMPassBuilderOptionsRef opts = NULL;
    if (LLVMParseBitcodeInContext2(ctx, buf, &mod)) {
        p->error = cg_format("seqc: code generator: cannot read back part %d of the module", p->index);
        goto done;
    }
    /* Roots are renamed and made external; another part's functions go:
     * what only they reached is internal and unreferenced, and globaldce
     * drops it. */
    LLVMValueRef next;
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = next) {
        next = LLVMGetNextFunction(f);
        if (LLVMIsDeclaration(f)) continue;
        size_t len;
        const char *name = LLVMGetValueName2(f, &len);
        int i = name_index(p, name, len);
        if (i < 0) continue;
        if (p->name_roots[i]) {
            char *global = cg_format("%s.%s", p->prefix, p->names[i]);
            if (!global) {
                p->error = cg_format("seqc: code generator: out of memory");
                goto done;
            }
            LLVMSetValueName2(f, global, strlen(global));
            free(global);
            LLVMSetLinkage(f, LLVMExternalLinkage);
            LLVMSetUnnamedAddress(f, LLVMNoUnnamedAddr);
        }
        if (p->name_parts[i] != p->index) declare_only(mod, f);
    }
    tm = cg_host_machine(mod, p->tier, LLVMRelocPIC, LLVMCodeModelDefault, &p->error);
    if (!tm) goto done;
    /* The quick tier of a whole module needs no pass; a part needs globaldce. */
    const char *passes = p->tier == CG_QUICK ? (p->nnames ? "globaldce" : NULL) : "globaldce,default<O3>";
    if (passes) {
        opts = LLVMCreatePassBuilderOptions();
        LLVMErrorRef err = LLVMRunPasses(mod, passes, tm, opts);
        if (err) {
            char *s = LLVMGetErrorMessage(err);
            p->error = cg_format("seqc: code generator: the pass pipeline failed: %s", s);
            LLVMDisposeErrorMessage(s);
            goto done;
        }
    }
    char *msg = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, &p->object)) {
        p->error = cg_format("seqc: code generator: cannot compile the module: %s", msg ? msg : "");
        p->object = NULL;
    }
    if (msg) LLVMDisposeMessage(msg);
done:
    if (opts) LLVMDisposePassBuilderOptions(opts);
    if (tm) LLVMDisposeTargetMachine(tm);
    if (mod) LLVMDisposeModule(mod);
    LLVMDisposeMemoryBuffer(buf);
    LLVMContextDispose(ctx);
    return NULL;
}

int cg_emit_objects(CgModule *m, int threads, CgTier tier, LLVMMemoryBufferRef **objs, char **error) {
    *error = NULL;
    *objs = NULL;
    LLVMModuleRef mod = cg_module_ref(m);
    if (threads <= 0) threads = rt_cores();
    if (threads > MAX_PARTS) threads = MAX_PARTS;
    double t0 = cg_now_ms();
    Split s = {0};
    int parts = 1, nobjs = 0;
    char **names = NULL;
    int *name_parts = NULL, nnames = 0;
    bool *name_roots = NULL;
    Part part[MAX_PARTS] = {0};
    pthread_t tid[MAX_PARTS];
    bool started[MAX_PARTS] = {0};
    if (threads > 1) {
        if (!scan_module(mod, &s)) goto oom;
        parts = deal_roots(&s, threads);
    }
    if (parts <= 1 && tier == CG_OPTIMIZED) {
        LLVMMemoryBufferRef one = cg_emit_object(m, error);
        if (!one) goto done;
        if (!(*objs = malloc(sizeof **objs))) {
            LLVMDisposeMemoryBuffer(one);
            goto oom;
        }
        (*objs)[0] = one;
        nobjs = 1;
        goto done;
    }
    if (parts > 1) {
        names = calloc((size_t)s.nfns, sizeof *names);
        name_parts = calloc((size_t)s.nfns, sizeof *name_parts);
        name_roots = calloc((size_t)s.nfns, sizeof *name_roots);
        if (!names || !name_parts || !name_roots) goto oom;
        for (int i = 0; i < s.nfns; i++) {
            Fn *fn = &s.fns[i];
            if (!fn->entry && !fn->root) continue;
            size_t len;
            const char *name = LLVMGetValueName2(fn->fn, &len);
            if (!(names[nnames] = cg_format("%.*s", (int)len, name))) goto oom;
            name_roots[nnames] = fn->root;
            name_parts[nnames++] = fn->part;
        }
    }
    /* The bytes the object cache's key was taken from, when it was (cg_bitcode). */
    const CgBitcode *bc = cg_bitcode(m);
    if (!bc) goto oom;
    cg_init_native();
    for (int p = 0; p < parts; p++) {
        part[p] = (Part){.index = p,
                         .tier = tier,
                         .bitcode = LLVMGetBufferStart(bc->buf),
                         .bitcode_len = LLVMGetBufferSize(bc->buf),
                         .names = (const char *const *)names,
                         .name_parts = name_parts,
                         .name_roots = name_roots,
                         .nnames = nnames,
                         .prefix = cg_signature(m)->name};
        /* Part 0 runs here; a thread that cannot start leaves its part here too. */
        if (p > 0) started[p] = pthread_create(&tid[p], NULL, compile_part, &part[p]) == 0;
    }
    for (int p = 0; p < parts; p++)
        if (!started[p]) compile_part(&part[p]);
    for (int p = 1; p < parts; p++)
        if (started[p]) pthread_join(tid[p], NULL);
    for (int p = 0; p < parts && !*error; p++)
        if (part[p].error) {
            *error = part[p].error;
            part[p].error = NULL;
        }
    if (!*error && !(*objs = malloc(sizeof **objs * (size_t)parts))) *error = cg_format("seqc: code generator: out of memory");
    for (int p = 0; p < parts; p++) {
        free(part[p].error);
        if (*error) {
            if (part[p].object) LLVMDisposeMemoryBuffer(part[p].object);
        } else {
            (*objs)[nobjs++] = part[p].object;
        }
    }
    goto done;
oom:
    *error = cg_format("seqc: code generator: out of memory");
done:
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    free(name_parts);
    free(name_roots);
    split_free(&s);
    *(tier == CG_QUICK ? &cg_timing(m)->quick_ms : &cg_timing(m)->passes_ms) = cg_now_ms() - t0;
    return *error ? 0 : nobjs;
}

int cg_write_objects(CgModule *m, int threads, const char *prefix, char **error) {
    LLVMMemoryBufferRef *objs;
    int n = cg_emit_objects(m, threads, CG_OPTIMIZED, &objs, error);
    for (int i = 0; i < n; i++) {
        char *path = cg_format("%s.%d.o", prefix, i);
        FILE *f = path ? fopen(path, "wb") : NULL;
        size_t len = LLVMGetBufferSize(objs[i]);
        bool ok = f && fwrite(LLVMGetBufferStart(objs[i]), 1, len, f) == len;
        if (f) ok = fclose(f) == 0 && ok;
        if (!ok && !*error) *error = cg_format("seqc: cannot write '%s'", path ? path : prefix);
        free(path);
    }
    for (int i = 0; i < n; i++) LLVMDisposeMemoryBuffer(objs[i]);
    free(objs);
    return *error ? 0 : n;
}
