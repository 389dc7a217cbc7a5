/* LLJIT: create, bind the runtime's symbols, add the module, look up the
 * entry. Every LLVMErrorRef is checked and its message disposed; the
 * instance is released in one place whatever stage failed. */
#define SEQC_CODEGEN_INTERNAL
#include "jit.h"

#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dropout.h"

struct CgJit {
    LLVMOrcLLJITRef jit;    /* owned: holds the module and its machine code */
    CgStepFn entry;
    CgUpdateFn update;      /* NULL without cg_add_update */
};

/* Takes err (consumed) and returns a malloc'd message. */
static char *error_text(const char *what, LLVMErrorRef err) {
    char *s = LLVMGetErrorMessage(err);
    char *msg = cg_format("seqc: jit: %s: %s", what, s);
    LLVMDisposeErrorMessage(s);
    return msg;
}

/* The functions generated code calls, taken from this binary: a statically
 * linked runtime is invisible to a dlsym-based lookup unless something
 * references it, and binding them here does both. */
typedef struct RuntimeSymbol {
    const char *name;
    void (*fn)(void);
} RuntimeSymbol;

#define SYM(f) {#f, (void (*)(void))f}
static const RuntimeSymbol runtime_symbols[] = {
    SYM(rt_dropout_mask_f32), SYM(expf), SYM(logf), SYM(tanhf), SYM(exp), SYM(log), SYM(log1p), SYM(pow),
};
#undef SYM

static LLVMErrorRef define_runtime(LLVMOrcLLJITRef jit, LLVMOrcJITDylibRef jd) {
    enum { N = sizeof runtime_symbols / sizeof runtime_symbols[0] };
    LLVMOrcCSymbolMapPair pairs[N];
    for (int i = 0; i < N; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, runtime_symbols[i].name);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)runtime_symbols[i].fn;
        pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    /* The unit owns the interned names from here on. */
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, N);
    LLVMErrorRef err = LLVMOrcJITDylibDefine(jd, mu);
    if (err) LLVMOrcDisposeMaterializationUnit(mu); /* still ours when the definition failed */
    return err;
}

/* The user's extern functions, at the addresses dlsym found: their libraries
 * were opened RTLD_LOCAL, so the process search below would not see them. A
 * symbol the runtime binds already (a user's own `expf`) would be defined
 * twice; unless it is the very same function, say so. NULL: no error. */
static char *define_externs(LLVMOrcLLJITRef jit, LLVMOrcJITDylibRef jd, const CgModule *m) {
    const CgExternSymbol *ext;
    int n = cg_extern_symbols(m, &ext), kept = 0;
    if (n == 0) return NULL;
    LLVMOrcCSymbolMapPair *pairs = calloc((size_t)n, sizeof *pairs);
    if (!pairs) return cg_format("seqc: jit: out of memory");
    for (int i = 0; i < n; i++) {
        bool runtime = false;
        for (size_t k = 0; k < sizeof runtime_symbols / sizeof runtime_symbols[0]; k++) {
            if (strcmp(runtime_symbols[k].name, ext[i].name) != 0) continue;
            if ((void *)runtime_symbols[k].fn != ext[i].address) {
                for (int j = 0; j < kept; j++) LLVMOrcReleaseSymbolStringPoolEntry(pairs[j].Name);
                free(pairs);
                return cg_format("seqc: jit: extern '%s' of %s has the name of a function the generated code calls "
                                 "itself; rename it in the library", ext[i].name, ext[i].library);
            }
            runtime = true;
        }
        if (runtime) continue;
        pairs[kept].Name = LLVMOrcLLJITMangleAndIntern(jit, ext[i].name);
        pairs[kept].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)ext[i].address;
        pairs[kept].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[kept].Sym.Flags.TargetFlags = 0;
        kept++;
    }
    char *msg = NULL;
    if (kept > 0) {
        LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)kept);
        LLVMErrorRef err = LLVMOrcJITDylibDefine(jd, mu);
        if (err) {
            LLVMOrcDisposeMaterializationUnit(mu);
            msg = error_text("cannot define the extern functions", err);
        }
    }
    free(pairs);
    return msg;
}

CgJit *cg_jit(CgModule *m, char **error) {
    *error = NULL;
    if (!cg_optimize(m, error)) return NULL;
    double t0 = cg_now_ms();
    cg_init_native();
    CgJit *j = calloc(1, sizeof *j);
    if (!j) {
        *error = cg_format("seqc: jit: out of memory");
        return NULL;
    }
    LLVMErrorRef err = LLVMOrcCreateLLJIT(&j->jit, NULL); /* a builder for the host */
    if (err) {
        *error = error_text("cannot create the JIT", err);
        j->jit = NULL;
        goto fail;
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
    err = define_runtime(j->jit, jd);
    if (err) {
        *error = error_text("cannot define the runtime's symbols", err);
        goto fail;
    }
    *error = define_externs(j->jit, jd, m);
    if (*error) goto fail;
    /* Anything else the code generator may call (memcpy, memset) from the process. */
    LLVMOrcDefinitionGeneratorRef gen;
    err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL);
    if (err) {
        *error = error_text("cannot search the process for symbols", err);
        goto fail;
    }
    LLVMOrcJITDylibAddGenerator(jd, gen); /* the dylib owns gen */
    LLVMOrcThreadSafeModuleRef tsm = cg_take_module(m);
    if (!tsm) {
        *error = cg_format("seqc: jit: the module was already handed on");
        goto fail;
    }
    err = LLVMOrcLLJITAddLLVMIRModule(j->jit, jd, tsm); /* takes tsm, failure or not */
    if (err) {
        *error = error_text("cannot add the module", err);
        goto fail;
    }
    LLVMOrcExecutorAddress addr = 0;
    err = LLVMOrcLLJITLookup(j->jit, &addr, cg_signature(m)->name); /* compiles the module */
    if (err) {
        *error = error_text("cannot compile the module", err);
        goto fail;
    }
    j->entry = (CgStepFn)(uintptr_t)addr;
    const CgSignature *update = cg_update_signature(m);
    if (update) {
        err = LLVMOrcLLJITLookup(j->jit, &addr, update->name);
        if (err) {
            *error = error_text("cannot find the update", err);
            goto fail;
        }
        j->update = (CgUpdateFn)(uintptr_t)addr;
    }
    cg_timing(m)->jit_ms = cg_now_ms() - t0;
    return j;
fail:
    cg_jit_free(j);
    return NULL;
}

CgStepFn cg_jit_entry(const CgJit *j) { return j->entry; }
CgUpdateFn cg_jit_update(const CgJit *j) { return j->update; }

void cg_jit_free(CgJit *j) {
    if (!j) return;
    if (j->jit) {
        LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
        if (err) {
            char *s = LLVMGetErrorMessage(err);
            fprintf(stderr, "seqc: jit: while releasing the JIT: %s\n", s);
            LLVMDisposeErrorMessage(s);
        }
    }
    free(j);
}
