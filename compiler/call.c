#include "call.h"

#include <ffi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ffi_type *ffi_of(CgArgType t) {
    switch (t) {
    case CG_VOID: return &ffi_type_void;
    case CG_PTR: return &ffi_type_pointer;
    case CG_I32: return &ffi_type_sint32;
    case CG_U64: return &ffi_type_uint64;
    case CG_F64: return &ffi_type_double;
    }
    return NULL;
}

static char *message(const char *fmt, const char *name) {
    size_t n = strlen(fmt) + strlen(name) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, name);
    return s;
}

bool cg_ffi_call(const CgSignature *sig, void (*fn)(void), void **args, void *ret, char **error) {
    *error = NULL;
    ffi_type *types[CG_MAX_ARGS];
    if (sig->nargs < 0 || sig->nargs > CG_MAX_ARGS) {
        *error = message("seqc: entry point '%s' has an argument count libffi is not told about", sig->name);
        return false;
    }
    for (int i = 0; i < sig->nargs; i++) {
        types[i] = ffi_of(sig->args[i]);
        if (!types[i] || types[i] == &ffi_type_void) {
            *error = message("seqc: entry point '%s' has an argument of no known type", sig->name);
            return false;
        }
    }
    ffi_type *rtype = ffi_of(sig->ret);
    ffi_cif cif;
    if (!rtype || ffi_prep_cif(&cif, FFI_DEFAULT_ABI, (unsigned)sig->nargs, rtype, types) != FFI_OK) {
        *error = message("seqc: libffi cannot describe the signature of '%s'", sig->name);
        return false;
    }
    /* libffi widens small integer returns to a full register. */
    ffi_arg wide = 0;
    ffi_call(&cif, fn, sig->ret == CG_VOID ? NULL : (sig->ret == CG_I32 ? (void *)&wide : ret), args);
    if (sig->ret == CG_I32 && ret) *(int32_t *)ret = (int32_t)wide;
    return true;
}
