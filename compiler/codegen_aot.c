/* The stub object of a compiled model: its manifest and entry points as the
 * runtime's RtModelCode, and an executable's main. */
#define SEQC_CODEGEN_INTERNAL
#include <stdlib.h>
#include <string.h>

#include "codegen.h"

/* A declared function, or a null pointer when name is NULL. */
static LLVMValueRef fn_ref(LLVMModuleRef mod, LLVMTypeRef ptr, const char *name) {
    if (!name) return LLVMConstPointerNull(ptr);
    LLVMContextRef ctx = LLVMGetModuleContext(mod);
    LLVMValueRef f = LLVMAddFunction(mod, name, LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, false));
    return f;
}

bool cg_emit_stub(const char *name, const char *manifest, const char *train_step, const char *train_update,
                  const char *infer_step, bool with_main, const char *path, char **error) {
    *error = NULL;
    cg_init_native();
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, ctx);
    LLVMTypeRef ptr = LLVMPointerTypeInContext(ctx, 0), i32 = LLVMInt32TypeInContext(ctx);

    size_t len = strlen(manifest);
    LLVMValueRef text = LLVMConstStringInContext(ctx, manifest, (unsigned)len, false); /* NUL-terminated */
    LLVMValueRef mg = LLVMAddGlobal(mod, LLVMTypeOf(text), "seqc_manifest");
    LLVMSetInitializer(mg, text);
    LLVMSetGlobalConstant(mg, true);
    LLVMSetLinkage(mg, LLVMPrivateLinkage);

    LLVMTypeRef fields[4] = {ptr, ptr, ptr, ptr};
    LLVMTypeRef code_ty = LLVMStructTypeInContext(ctx, fields, 4, false);
    LLVMValueRef vals[4] = {mg, fn_ref(mod, ptr, train_step), fn_ref(mod, ptr, train_update),
                            fn_ref(mod, ptr, infer_step)};
    char *code_name = cg_format("%s_code", name);
    LLVMValueRef code = LLVMAddGlobal(mod, code_ty, code_name);
    LLVMSetInitializer(code, LLVMConstNamedStruct(code_ty, vals, 4));
    LLVMSetGlobalConstant(code, true);
    free(code_name);

    if (with_main) {
        /* int main(int argc, char **argv) { return rt_main(&code, argv[0], argc - 1, argv + 1); } */
        LLVMTypeRef main_params[2] = {i32, ptr};
        LLVMValueRef mainf = LLVMAddFunction(mod, "main", LLVMFunctionType(i32, main_params, 2, false));
        LLVMTypeRef rt_params[4] = {ptr, ptr, i32, ptr};
        LLVMTypeRef rt_ty = LLVMFunctionType(i32, rt_params, 4, false);
        LLVMValueRef rt_main = LLVMAddFunction(mod, "rt_main", rt_ty);
        LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
        LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, mainf, "entry"));
        LLVMValueRef argc = LLVMGetParam(mainf, 0), argv = LLVMGetParam(mainf, 1);
        LLVMValueRef prog = LLVMBuildLoad2(b, ptr, argv, "prog");
        LLVMValueRef one = LLVMConstInt(LLVMInt64TypeInContext(ctx), 1, false);
        LLVMValueRef rest = LLVMBuildGEP2(b, ptr, argv, &one, 1, "rest");
        LLVMValueRef n = LLVMBuildSub(b, argc, LLVMConstInt(i32, 1, false), "n");
        LLVMValueRef args[4] = {code, prog, n, rest};
        LLVMBuildRet(b, LLVMBuildCall2(b, rt_ty, rt_main, args, 4, "status"));
        LLVMDisposeBuilder(b);
    }

    bool ok = false;
    char *msg = NULL;
    LLVMTargetMachineRef tm = cg_host_machine(mod, CG_OPTIMIZED, LLVMRelocPIC, LLVMCodeModelDefault, error);
    if (tm) {
        char *file = cg_format("%s", path);
        ok = !LLVMTargetMachineEmitToFile(tm, mod, file, LLVMObjectFile, &msg);
        if (!ok) *error = cg_format("seqc: cannot write '%s': %s", path, msg ? msg : "");
        free(file);
        if (msg) LLVMDisposeMessage(msg);
        LLVMDisposeTargetMachine(tm);
    }
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return ok;
}
