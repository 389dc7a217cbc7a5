/* Calling a compiled entry point through libffi, from its recorded signature,
 * gives exactly what a direct call gives. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "call.h"
#include "codegen.h"
#include "elab.h"
#include "interp.h"
#include "jit.h"
#include "schedule.h"

static const char model[] = "model m { input x: f32[4, 3]  target y: f32[1]\n"
                            "  h = lstm(x, units: 5, dropout: 0.3)  p = dense(h, units: 1, activation: sigmoid)\n"
                            "  loss binary_crossentropy(p, y) }";

START_TEST(ffi_call_equals_direct_call) {
    Diags d;
    diag_init(&d);
    Program *p = program_load_string("t.seq", model, &d);
    Arena arena;
    arena_init(&arena);
    ElabOptions o = {.batch = 3};
    Model m;
    GradOptions go;
    ck_assert(elab_model(p, NULL, &o, &arena, &m, &d) && schedule_tbptt(m.graph, &m.recipe, &go, &d) &&
              ad_backward(m.graph, &go, &d));
    char *err = NULL;
    CgModule *cm = cg_lower(m.graph, "m", &err);
    ck_assert_msg(cm && cg_optimize(cm, &err), "%s", err ? err : "");
    const CgPlan *plan = cg_plan(cm);
    const CgSignature *sig = cg_signature(cm);
    ck_assert_str_eq(sig->name, "m_step");
    ck_assert_int_eq(sig->nargs, 4);
    CgJit *j = cg_jit(cm, &err);
    ck_assert_msg(j != NULL, "%s", err ? err : "");
    CgStepFn step = cg_jit_entry(j);

    /* Two slabs with the same params and data. */
    uint8_t *a = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes), *b = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
    memset(a, 0, (size_t)plan->slab_bytes);
    Interp *it = interp_new(m.graph, PREC_F32);
    interp_init_params(it, 4);
    for (int i = 0; i < m.graph->params.len; i++) {
        const Node *n = m.graph->params.items[i];
        float *dst = (float *)(a + cg_plan_offset(plan, n));
        for (int64_t k = 0; k < interp_size(m.graph, n); k++) dst[k] = (float)interp_data(it, n)[k];
    }
    const Node *x = m.graph->inputs.items[0], *y = m.graph->targets.items[0];
    float *xv = (float *)(a + cg_plan_offset(plan, x));
    for (int64_t k = 0; k < interp_size(m.graph, x); k++) xv[k] = (float)((k * 37 % 11) - 5) / 7.0f;
    float *yv = (float *)(a + cg_plan_offset(plan, y));
    yv[0] = 1, yv[1] = 0, yv[2] = 1;
    memcpy(b, a, (size_t)plan->slab_bytes);

    step(a, 1, 9, m.graph->nodes.len);
    uint8_t *slab = b;
    int32_t training = 1, upto = m.graph->nodes.len;
    uint64_t seed = 9;
    void *args[4] = {&slab, &training, &seed, &upto};
    ck_assert_msg(cg_ffi_call(sig, (void (*)(void))step, args, NULL, &err), "%s", err ? err : "");
    /* The pointers a scan leaves to its steps' slices point into each slab. */
    for (int g = 0; g < plan->ngraphs; g++)
        for (int i = 0; i < plan->graphs[g].nnodes; i++)
            if (plan->graphs[g].indirect[i]) {
                memset(a + plan->graphs[g].offset[i], 0, 8);
                memset(b + plan->graphs[g].offset[i], 0, 8);
            }
    ck_assert_msg(memcmp(a, b, (size_t)plan->slab_bytes) == 0, "the two calls differ");
    /* and the call did something: the loss is a probability's cross-entropy */
    float loss = *(float *)(a + cg_plan_offset(plan, m.graph->loss));
    ck_assert(loss > 0.01f && loss < 10.0f);

    /* A signature libffi is not told about is refused with a message. */
    CgSignature bad = *sig;
    bad.nargs = CG_MAX_ARGS + 1;
    ck_assert(!cg_ffi_call(&bad, (void (*)(void))step, args, NULL, &err));
    ck_assert_ptr_nonnull(strstr(err, "m_step"));
    free(err);

    free(a);
    free(b);
    interp_free(it);
    cg_jit_free(j);
    cg_free(cm);
    arena_free(&arena);
    diag_free(&d);
    program_free(p);
}
END_TEST

int main(void) {
    Suite *s = suite_create("call");
    TCase *tc = tcase_create("libffi");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ffi_call_equals_direct_call);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
