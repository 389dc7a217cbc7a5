/* LLJIT: create, bind the runtime's symbols, add the module, look up the
 * entry. Every LLVMErrorRef is checked and its message disposed; the
 * instance is released in one place whatever stage failed. */
#define SEQC_CODEGEN_INTERNAL
#include "jit.h"

#include <errno.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dropout.h"
#include "pool.h"

struct CgJit {
    LLVMOrcLLJITRef jit;    /* owned: holds the module and its machine code */
    CgStepFn entry;
    CgUpdateFn update;      /* NULL without cg_add_update */
    int objects;
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
    SYM(rt_dropout_mask_f32), SYM(rt_parallel), SYM(rt_product_next), SYM(logf), SYM(log), SYM(pow),
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
 * symbol the runtime binds already (a user's own `logf`) would be defined
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

/* ---- the object cache ----------------------------------------------------------
 *
 * The machine code of a module is a function of its IR, of the CPU it is
 * compiled for and of the LLVM and seqc that compile it: all of them make
 * the key, two 64-bit hashes of them, and an object file compiled once is
 * reused by every later run of the same model (the same file, batch and
 * window) on the same machine, skipping O3 and code generation. The cache
 * lives in $SEQC_CACHE (a directory; "off" turns it off), else
 * $XDG_CACHE_HOME/seqc, else ~/.cache/seqc; deleting it is always safe. A
 * cache that cannot be read or written is no error: the module is compiled. */

#define CACHE_FORMAT "seqc-object-cache 3"

/* malloc'd, or NULL when the cache is off or has no home. */
static char *cache_dir(void) {
    const char *c = getenv("SEQC_CACHE");
    if (c && (strcmp(c, "off") == 0 || strcmp(c, "0") == 0)) return NULL;
    if (c && *c) return cg_format("%s", c);
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) return cg_format("%s/seqc", xdg);
    if (home && *home) return cg_format("%s/.cache/seqc", home);
    return NULL;
}

/* mkdir -p; true when the directory exists afterwards. */
static bool make_dirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        bool ok = mkdir(path, 0755) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok) return false;
    }
    return mkdir(path, 0755) == 0 || errno == EEXIST;
}

/* FNV-1a and a second, independently seeded multiply-xorshift hash. */
static void hash(uint64_t h[2], const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h[0] = (h[0] ^ p[i]) * 0x100000001b3ULL;
        h[1] = (h[1] + p[i]) * 0x9e3779b97f4a7c15ULL;
        h[1] ^= h[1] >> 29;
    }
}

static void hash_string(uint64_t h[2], const char *s) { hash(h, s, strlen(s) + 1); }

/* <dir>/<key>.o for the module as it is now (before the passes), malloc'd;
 * NULL when the cache is off. The bitcode's hash is kept with it
 * (cg_bitcode) while the module does not change: the tiers' thread asks
 * again for the key of the module the foreground asked for. */
static char *cache_path(CgModule *m) {
    char *dir = cache_dir();
    if (!dir) return NULL;
    CgBitcode *bc = cg_bitcode(m);
    char *path = NULL;
    if (bc) {
        if (!bc->hashed) {
            bc->hash[0] = 0xcbf29ce484222325ULL;
            bc->hash[1] = 0x243f6a8885a308d3ULL;
            hash(bc->hash, LLVMGetBufferStart(bc->buf), LLVMGetBufferSize(bc->buf));
            bc->hashed = true;
        }
        uint64_t h[2] = {bc->hash[0], bc->hash[1]};
        char *triple = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
        unsigned major, minor, patch;
        LLVMGetVersion(&major, &minor, &patch);
        char version[96];
        snprintf(version, sizeof version, "%s llvm %u.%u.%u seqc %s", CACHE_FORMAT, major, minor, patch, SEQC_VERSION);
        hash_string(h, triple);
        hash_string(h, cpu);
        hash_string(h, features);
        hash_string(h, version);
        LLVMDisposeMessage(triple);
        LLVMDisposeMessage(cpu);
        LLVMDisposeMessage(features);
        path = cg_format("%s/%016llx%016llx.o", dir, (unsigned long long)h[0], (unsigned long long)h[1]);
    }
    free(dir);
    return path;
}

/* An entry is the object files one after the other, their lengths, their
 * number, then the length of all that and two hashes of it (24 bytes; the
 * numbers in the host's byte order): a file cut short or damaged reads as
 * no entry. */
typedef struct Trailer {
    uint64_t length, h[2];
} Trailer;

static Trailer trailer_of(const void *data, size_t n) {
    Trailer t = {.length = n, .h = {0xcbf29ce484222325ULL, 0x243f6a8885a308d3ULL}};
    hash(t.h, data, n);
    return t;
}

/* The objects at path (how many; *objs malloc'd), or 0. */
static int cache_load(const char *path, LLVMMemoryBufferRef **objs) {
    LLVMMemoryBufferRef file = NULL;
    char *msg = NULL;
    int nobjs = 0;
    *objs = NULL;
    if (access(path, R_OK) == 0 && !LLVMCreateMemoryBufferWithContentsOfFile(path, &file, &msg)) {
        size_t n = LLVMGetBufferSize(file);
        const char *data = LLVMGetBufferStart(file);
        Trailer want, got;
        uint64_t count = 0;
        if (n > sizeof got + sizeof count) {
            n -= sizeof got;
            memcpy(&got, data + n, sizeof got);
            want = trailer_of(data, n);
            n -= sizeof count;
            memcpy(&count, data + n, sizeof count);
        }
        if (count > 0 && count <= n / sizeof(uint64_t) && memcmp(&got, &want, sizeof got) == 0 &&
            (*objs = calloc((size_t)count, sizeof **objs))) {
            const char *lengths = data + n - count * sizeof(uint64_t);
            uint64_t at = 0;
            for (uint64_t i = 0; i < count; i++) {
                uint64_t len;
                memcpy(&len, lengths + i * sizeof len, sizeof len);
                if (len > (uint64_t)(lengths - data) - at) break;
                (*objs)[nobjs++] = LLVMCreateMemoryBufferWithMemoryRangeCopy(data + at, len, "seqc-cached.o");
                at += len;
            }
            if (nobjs != (int)count || at != (uint64_t)(lengths - data)) {
                while (nobjs > 0) LLVMDisposeMemoryBuffer((*objs)[--nobjs]);
                free(*objs);
                *objs = NULL;
            }
        }
        LLVMDisposeMemoryBuffer(file);
    }
    if (msg) LLVMDisposeMessage(msg);
    return nobjs;
}

/* Written beside and renamed: a reader never sees half a file. */
static void cache_store(const char *path, LLVMMemoryBufferRef *objs, int nobjs) {
    char *dir = cg_format("%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    char *tmp = cg_format("%s.%ld.tmp", path, (long)getpid());
    FILE *f = slash && make_dirs(dir) ? fopen(tmp, "wb") : NULL;
    if (f) {
        Trailer t = trailer_of(NULL, 0);
        bool ok = true;
        for (int i = 0; i < nobjs; i++) {
            size_t n = LLVMGetBufferSize(objs[i]);
            hash(t.h, LLVMGetBufferStart(objs[i]), n);
            t.length += n;
            ok = ok && fwrite(LLVMGetBufferStart(objs[i]), 1, n, f) == n;
        }
        for (int i = 0; i < nobjs; i++) {
            uint64_t n = LLVMGetBufferSize(objs[i]);
            hash(t.h, &n, sizeof n);
            t.length += sizeof n;
            ok = ok && fwrite(&n, sizeof n, 1, f) == 1;
        }
        uint64_t count = (uint64_t)nobjs;
        hash(t.h, &count, sizeof count);
        t.length += sizeof count;
        ok = ok && fwrite(&count, sizeof count, 1, f) == 1 && fwrite(&t, sizeof t, 1, f) == 1;
        ok = fclose(f) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) remove(tmp);
    }
    free(tmp);
    free(dir);
}

/* The module's optimized objects from the cache (how many; 0 on a miss)
 * and where they are or go (malloc'd, or NULL when the cache is off). */
static int from_cache(CgModule *m, char **path, LLVMMemoryBufferRef **objs) {
    *path = cache_path(m);
    int nobjs = *path ? cache_load(*path, objs) : 0;
    cg_timing(m)->cached = nobjs > 0;
    return nobjs;
}

static CgJit *link_objects(CgModule *m, LLVMMemoryBufferRef *objs, int nobjs, char **error);

CgJit *cg_jit(CgModule *m, char **error) { return cg_jit_on(m, rt_threads(), error); }

CgJit *cg_jit_on(CgModule *m, int threads, char **error) {
    *error = NULL;
    char *cached_at;
    LLVMMemoryBufferRef *objs = NULL;
    int nobjs = from_cache(m, &cached_at, &objs);
    if (nobjs == 0) {
        nobjs = cg_emit_objects(m, threads, CG_OPTIMIZED, &objs, error);
        if (nobjs > 0 && cached_at) cache_store(cached_at, objs, nobjs);
    }
    free(cached_at);
    return nobjs ? link_objects(m, objs, nobjs, error) : NULL;
}

CgJit *cg_jit_cached(CgModule *m, char **error) {
    *error = NULL;
    char *cached_at;
    LLVMMemoryBufferRef *objs = NULL;
    int nobjs = from_cache(m, &cached_at, &objs);
    free(cached_at);
    return nobjs ? link_objects(m, objs, nobjs, error) : NULL;
}

CgJit *cg_jit_quick(CgModule *m, int threads, char **error) {
    LLVMMemoryBufferRef *objs = NULL;
    int nobjs = cg_emit_objects(m, threads, CG_QUICK, &objs, error);
    return nobjs ? link_objects(m, objs, nobjs, error) : NULL;
}

/* Takes the objects (and the array). */
static CgJit *link_objects(CgModule *m, LLVMMemoryBufferRef *objs, int nobjs, char **error) {
    /* jit_ms: linking and the lookups; the passes and machine code are passes_ms */
    double t0 = cg_now_ms();
    cg_init_native();
    CgJit *j = calloc(1, sizeof *j);
    if (!j) {
        *error = cg_format("seqc: jit: out of memory");
        goto fail;
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
    j->objects = nobjs;
    for (int i = 0; i < nobjs; i++) {
        err = LLVMOrcLLJITAddObjectFile(j->jit, jd, objs[i]); /* takes the object, failure or not */
        objs[i] = NULL;
        if (err) {
            *error = error_text("cannot add the object", err);
            goto fail;
        }
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
    free(objs);
    return j;
fail:
    for (int i = 0; i < nobjs; i++)
        if (objs[i]) LLVMDisposeMemoryBuffer(objs[i]);
    free(objs);
    cg_jit_free(j);
    return NULL;
}

CgStepFn cg_jit_entry(const CgJit *j) { return j->entry; }
CgUpdateFn cg_jit_update(const CgJit *j) { return j->update; }

int cg_jit_objects(const CgJit *j) { return j->objects; }

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
