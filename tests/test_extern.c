/* extern functions: float f(float) from a user's shared library (tests/extern_lib.c,
 * built beside this test; SEQC_EXTERN_LIB is its path). The declaration's
 * syntax, the library and symbol lookups with their errors, elementwise calls
 * in a model and in a cell, the gradient through the declared derivative
 * (finite differences in the interpreter), the generated code against the
 * interpreter, and the command line on a file that declares externs. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autodiff.h"
#include "codegen.h"
#include "elab.h"
#include "gradcheck.h"
#include "interp.h"
#include "jit.h"
#include "program.h"
#include "rng.h"
#include "schedule.h"

static const char *lib_path(void) {
    const char *p = getenv("SEQC_EXTERN_LIB");
    ck_assert_msg(p != NULL, "SEQC_EXTERN_LIB is not set");
    return p;
}

/* The directory holding the library: .seq files written there name it as
 * "./libextern_lib.so", relative to themselves. */
static char *lib_dir(void) {
    char *d = strdup(lib_path());
    char *slash = strrchr(d, '/');
    ck_assert_ptr_nonnull(slash);
    *slash = '\0';
    return d;
}

static char *in_lib_dir(const char *file) {
    char *d = lib_dir(), *p = malloc(strlen(d) + strlen(file) + 2);
    sprintf(p, "%s/%s", d, file);
    free(d);
    return p;
}

/* A user cell with softsign inside, swish as the dense layer's activation, and
 * cube (no derivative) in a metric only, where no gradient needs it. */
#define MODEL                                                        \
    "extern swish(x) from \"./libextern_lib.so\" grad swish_grad\n"  \
    "extern softsign(v) from \"./libextern_lib.so\" grad softsign_grad\n" \
    "extern cube(x) from \"./libextern_lib.so\"\n"                   \
    "\n"                                                             \
    "cell srnn(x: [I]) -> h {\n"                                     \
    "  state h: [units]\n"                                           \
    "  param W: [I, units] init glorot_uniform\n"                    \
    "  param U: [units, units] init orthogonal\n"                    \
    "  param b: [units] init uniform(min: -0.5, max: 0.5)\n"         \
    "  h = softsign(x @ W + h @ U + b)\n"                            \
    "}\n"                                                            \
    "\n"                                                             \
    "model m {\n"                                                    \
    "  input  x: f32[5, 3]\n"                                        \
    "  target y: f32[5, 2]\n"                                        \
    "  h = srnn(x, units: 4, sequences: true)\n"                     \
    "  p = dense(h, units: 2, activation: swish)\n"                  \
    "  q = swish(p) + softsign(p)\n"                                 \
    "  loss mse(q, y)\n"                                             \
    "  metric mean(cube(q))\n"                                       \
    "}\n"                                                            \
    "train { optimizer adam(lr: 0.01)  batch 4  epochs 1 }\n"

/* ---- loading ------------------------------------------------------------------- */

typedef struct Loaded {
    Program *prog;
    Arena arena;
    Diags d;
    Model model;
    bool ok;
} Loaded;

/* Loads `text` as the file `path`, elaborates its model and, when `grad`,
 * differentiates it. Errors stay in l->d. */
static void load(Loaded *l, const char *path, const char *text, int64_t batch, bool grad) {
    diag_init(&l->d);
    arena_init(&l->arena);
    l->prog = program_load_string(path, text, &l->d);
    ElabOptions o = {.batch = batch};
    GradOptions go;
    l->ok = l->prog && l->d.errors == 0 && elab_model(l->prog, NULL, &o, &l->arena, &l->model, &l->d);
    if (l->ok && grad)
        l->ok = schedule_tbptt(l->model.graph, &l->model.recipe, &go, &l->d) && ad_backward(l->model.graph, &go, &l->d);
}

static void unload(Loaded *l) {
    arena_free(&l->arena);
    diag_free(&l->d);
    program_free(l->prog);
}

static char *render(const Diags *d) { return diag_render(d); }

/* `seqc check` on text: the rendered diagnostics (malloc'd), "" when clean. */
static char *check_text(const char *path, const char *text) {
    Diags d;
    diag_init(&d);
    Program *p = program_load_string(path, text, &d);
    ElabOptions o = {0};
    if (p) elab_check(p, &o, &d);
    char *s = d.len ? render(&d) : strdup("");
    diag_free(&d);
    program_free(p);
    return s;
}

static int count_op(const Graph *g, OpKind op) {
    int n = 0;
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *x = g->nodes.items[i];
        n += x->op == op;
        if (x->op == OP_SCAN) n += count_op(x->scan.body, op);
    }
    return n;
}

/* ---- syntax ---------------------------------------------------------------------- */

START_TEST(parse_declaration) {
    Diags d;
    diag_init(&d);
    Program *p = program_load_string("t.seq", "extern swish(x) from \"./lib.so\" grad swish_grad\n"
                                              "extern cube(y) from \"libcube.so.1\"\n", &d);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(d.errors, 0);
    ck_assert_int_eq(p->root->ndecls, 2);
    const Decl *a = p->root->decls[0], *b = p->root->decls[1];
    ck_assert_int_eq(a->kind, DECL_EXTERN);
    ck_assert_str_eq(a->name, "swish");
    ck_assert_str_eq(a->inputs[0].name, "x");
    ck_assert_str_eq(a->path, "./lib.so");
    ck_assert_str_eq(a->grad, "swish_grad");
    ck_assert_str_eq(b->name, "cube");
    ck_assert_ptr_null(b->grad);
    diag_free(&d);
    program_free(p);
}
END_TEST

static const struct {
    const char *text, *first_line;
} syntax_errors[] = {
    {"extern f(x, y) from \"a.so\"\n", "t.seq:1:11: error: extern 'f' takes one parameter: it is called as float f(float)"},
    {"extern f() from \"a.so\"\n", "t.seq:1:10: error: extern 'f' needs one parameter: it is called as float f(float)"},
    {"extern f(x: f32) from \"a.so\"\n",
     "t.seq:1:11: error: the parameter of an extern has no type: it is always one f32 value"},
    {"extern f(x) \"a.so\"\n",
     "t.seq:1:13: error: expected 'from' and the library of extern 'f' (for example: from \"./libf.so\"), found a string"},
    {"extern f(x) from liba\n", "t.seq:1:18: error: expected the library's file name in quotes after 'from', found 'liba'"},
    {"extern f(x) from \"a.so\" grad\nmodel m {}\n",
     "t.seq:1:29: error: expected the name of the derivative of 'f' after 'grad', found the end of the line"},
    {"extern f(x) from \"a.so\" derivative g\n",
     "t.seq:1:25: error: expected 'grad' or the end of the line after the library, found 'derivative'"},
};

START_TEST(syntax_error) {
    Diags d;
    diag_init(&d);
    Program *p = program_load_string("t.seq", syntax_errors[_i].text, &d);
    ck_assert_int_ge(d.errors, 1);
    char *s = render(&d);
    ck_assert_msg(strncmp(s, syntax_errors[_i].first_line, strlen(syntax_errors[_i].first_line)) == 0,
                  "got:\n%s\nwanted:\n%s", s, syntax_errors[_i].first_line);
    free(s);
    diag_free(&d);
    program_free(p);
}
END_TEST

/* ---- elaboration -------------------------------------------------------------------- */

START_TEST(check_clean) {
    char *path = in_lib_dir("extern_model.seq");
    char *s = check_text(path, MODEL);
    ck_assert_msg(strcmp(s, "") == 0, "%s", s);
    free(s);
    free(path);
}
END_TEST

/* An absolute path is used as written; the call is elementwise over any shape. */
START_TEST(absolute_path_any_shape) {
    char text[2048];
    snprintf(text, sizeof text,
             "extern softsign(x) from \"%s\"\n"
             "model m {\n  input x: f32[2, 3, 4]\n  y = softsign(x)\n}\n", lib_path());
    Loaded l;
    load(&l, "elsewhere/t.seq", text, 2, false);
    char *s = render(&l.d);
    ck_assert_msg(l.ok, "%s", s);
    free(s);
    const Node *y = l.model.graph->output;
    ck_assert_int_eq(y->op, OP_EXTERN);
    ck_assert_str_eq(y->ext->name, "softsign");
    ck_assert_str_eq(y->ext->library, lib_path());
    ck_assert_ptr_null(y->ext->grad);
    ck_assert_int_eq(y->type.rank, 3);
    Interp *it = interp_new(l.model.graph, PREC_F32);
    const Node *x = l.model.graph->inputs.items[0];
    double *xv = interp_data(it, x);
    for (int64_t i = 0; i < interp_size(l.model.graph, x); i++) xv[i] = (double)(i % 7) - 3.25;
    interp_run(it, false, 0);
    const double *yv = interp_data(it, y);
    for (int64_t i = 0; i < interp_size(l.model.graph, y); i++) {
        float v = (float)xv[i];
        ck_assert_double_eq(yv[i], (double)(v / (1.0f + fabsf(v))));
    }
    interp_free(it);
    unload(&l);
}
END_TEST

START_TEST(graph_has_externs_in_model_and_cell) {
    char *path = in_lib_dir("extern_model.seq");
    Loaded l;
    load(&l, path, MODEL, 4, true);
    char *s = render(&l.d);
    ck_assert_msg(l.ok, "%s", s);
    free(s);
    const Graph *g = l.model.graph;
    bool in_body = false;
    for (int i = 0; i < g->nforward; i++) {
        const Node *n = g->nodes.items[i];
        if (n->op == OP_SCAN && count_op(n->scan.body, OP_EXTERN) > 0) in_body = true;
    }
    ck_assert(in_body);
    /* forward: softsign in the step, swish twice, softsign, cube; backward: one derivative per call but cube's */
    ck_assert_int_ge(count_op(g, OP_EXTERN), 9);
    unload(&l);
    free(path);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------- */

/* Each: the file's text (LIB replaced by the library's path), the expected
 * start of the first error (after the file name), and text it must contain. */
static const struct {
    const char *text, *starts, *contains;
} bad[] = {
    {"extern swish(x) from \"./no_such_lib.so\" grad swish_grad\nmodel m {\n  input x: f32[3]\n  y = swish(x)\n}\n",
     ":1:22: error: cannot load library '", "/no_such_lib.so' of extern 'swish': "},
    {"extern nosuch(x) from \"LIB\"\nmodel m {\n  input x: f32[3]\n  y = nosuch(x)\n}\n",
     ":1:8: error: library '", "' has no function 'nosuch': "},
    {"extern swish(x) from \"LIB\" grad nosuch_grad\nmodel m {\n  input x: f32[3]\n  y = swish(x)\n}\n",
     ":1:", "' has no function 'nosuch_grad' (the derivative of 'swish'): "},
    {"extern swish(x) from \"LIB\"\nmodel m {\n  input ids: i32[3]\n  y = swish(ids)\n}\n",
     ":4:13: error: extern 'swish' takes f32 values (it is float swish(float)), but 'ids' is i32[3] "
     "(token ids go through embedding first)", NULL},
    {"extern swish(x) from \"LIB\"\nextern swish(x) from \"LIB\"\nmodel m {\n  input x: f32[3]\n  y = swish(x)\n}\n",
     ":2:8: error: extern 'swish' is declared twice", NULL},
    {"extern tanh(x) from \"LIB\"\nmodel m {\n  input x: f32[3]\n  y = tanh(x)\n}\n",
     ":1:8: error: 'tanh' is a built-in function; an extern cannot take its name", NULL},
    {"extern swish(x) from \"LIB\"\nmodel m {\n  input x: f32[3]\n  swish = x * 2\n}\n",
     ":4:3: error: 'swish' is the name of an extern function; choose another name", NULL},
};

static char *with_lib(const char *text) {
    const char *at = strstr(text, "LIB");
    char *s = malloc(strlen(text) + strlen(lib_path()) + 1);
    if (!at) return strcpy(s, text);
    sprintf(s, "%.*s%s%s", (int)(at - text), text, lib_path(), at + 3);
    return s;
}

START_TEST(bad_input) {
    char *path = in_lib_dir("extern_bad.seq");
    char *text = with_lib(bad[_i].text);
    char *s = check_text(path, text);
    size_t n = strlen(path);
    ck_assert_msg(strncmp(s, path, n) == 0 && strncmp(s + n, bad[_i].starts, strlen(bad[_i].starts)) == 0,
                  "got:\n%s\nwanted %s%s", s, path, bad[_i].starts);
    if (bad[_i].contains) ck_assert_msg(strstr(s, bad[_i].contains) != NULL, "got:\n%s\nwanted: %s", s, bad[_i].contains);
    int errors = 0;
    for (const char *e = strstr(s, ": error: "); e; e = strstr(e + 1, ": error: ")) errors++;
    ck_assert_msg(errors == 1, "one mistake, one error:\n%s", s);
    free(s);
    free(text);
    free(path);
}
END_TEST

/* Missing symbols name dlerror's words; a missing library, dlopen's. */
START_TEST(dlerror_text_is_shown) {
    char *path = in_lib_dir("extern_bad.seq");
    char *text = with_lib(bad[1].text);
    char *s = check_text(path, text);
    ck_assert_msg(strstr(s, "undefined symbol: nosuch") != NULL, "%s", s);
    free(s);
    free(text);
    s = check_text(path, bad[0].text);
    ck_assert_msg(strstr(s, "cannot open shared object file") != NULL, "%s", s);
    free(s);
    free(path);
}
END_TEST

/* Differentiating through an extern without `grad`: the call and the declaration. */
static const struct {
    const char *text, *error, *note;
} no_grad[] = {
    {"extern cube(x) from \"LIB\"\n"
     "model m {\n  input x: f32[3]\n  target y: f32[2]\n  p = dense(cube(x), units: 2)\n  q = cube(p)\n  loss mse(q, y)\n}\n",
     ":6:7: error: cannot differentiate through extern 'cube': it has no derivative",
     ":1:8: note: 'cube' is declared here; name its derivative, float NAME(float x), with 'grad NAME' after the library"},
    {"extern cube(x) from \"LIB\"\n"
     "cell c(x: [I]) -> h {\n  state h: [units]\n  param W: [I, units] init glorot_uniform\n  h = cube(x @ W) + h\n}\n"
     "model m {\n  input x: f32[4, 3]\n  target y: f32[2]\n  h = c(x, units: 2)\n  loss mse(h, y)\n}\n",
     ":5:7: error: cannot differentiate through extern 'cube': it has no derivative",
     ":1:8: note: 'cube' is declared here"},
};

START_TEST(missing_derivative_when_training) {
    char *path = in_lib_dir("extern_nograd.seq");
    char *text = with_lib(no_grad[_i].text);
    Loaded l;
    load(&l, path, text, 2, false);
    char *s = render(&l.d);
    ck_assert_msg(l.ok, "inference must work without a derivative:\n%s", s);
    free(s);
    GradOptions go = {0};
    ck_assert(!ad_backward(l.model.graph, &go, &l.d));
    s = render(&l.d);
    char want[512];
    snprintf(want, sizeof want, "%s%s", path, no_grad[_i].error);
    ck_assert_msg(strncmp(s, want, strlen(want)) == 0, "got:\n%s\nwanted:\n%s", s, want);
    snprintf(want, sizeof want, "%s%s", path, no_grad[_i].note);
    ck_assert_msg(strstr(s, want) != NULL, "got:\n%s\nwanted:\n%s", s, want);
    ck_assert_int_eq(l.d.errors, 1); /* the first call only: the gradient stops there */
    free(s);
    unload(&l);
    free(text);
    free(path);
}
END_TEST

/* ---- gradients and generated code ---------------------------------------------------- */

START_TEST(gradcheck_through_externs) {
    char *path = in_lib_dir("extern_model.seq");
    Loaded l;
    load(&l, path, MODEL, 2, true);
    ck_assert(l.ok);
    GradcheckOptions o;
    gradcheck_defaults(&o);
    GradcheckReport r;
    gradcheck_run(l.model.graph, l.model.graph->nforward, &o, &r);
    if (!r.ok) gradcheck_print(l.model.graph, &o, &r, stderr);
    ck_assert_int_eq(r.nrows, 5); /* W, U, b of the cell; the dense kernel and bias */
    ck_assert_msg(r.ok, "worst relative error %g", r.worst_rel);
    fprintf(stderr, "extern gradcheck: worst relative error %.3e\n", r.worst_rel);
    unload(&l);
    free(path);
}
END_TEST

/* The worst of |a - b| / (1e-5 max(|a|, |b|) + 1e-6 max |b|), as tests/test_codegen.c. */
static double tensor_error(const float *a, const double *b, int64_t n) {
    double top = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) top = fmax(top, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(a[i] - b[i]), tol = 1e-5 * fmax(fabs(a[i]), fabs(b[i])) + 1e-6 * top;
        double e = err == 0 ? 0 : tol == 0 ? INFINITY : err / tol;
        if (!isfinite(a[i]) || !isfinite(b[i])) e = INFINITY;
        worst = fmax(worst, e);
    }
    return worst;
}

START_TEST(generated_code_matches_interpreter) {
    char *path = in_lib_dir("extern_model.seq");
    Loaded l;
    load(&l, path, MODEL, 4, true);
    ck_assert(l.ok);
    Graph *g = l.model.graph;
    Interp *it = interp_new(g, PREC_F32);
    interp_init_params(it, 1);
    RtRng rng;
    rt_rng_seed(&rng, 1, 7);
    for (int k = 0; k < 2; k++) {
        const Node *x = k ? g->targets.items[0] : g->inputs.items[0];
        double *v = interp_data(it, x);
        for (int64_t i = 0; i < interp_size(g, x); i++) v[i] = (double)(float)(4 * rt_rng_uniform(&rng) - 2);
    }
    char *err = NULL;
    CgModule *m = cg_lower(g, g->name, &err);
    ck_assert_msg(m != NULL, "%s", err ? err : "?");

    /* What an AOT link needs: each symbol once, with its library. */
    const CgExternSymbol *ext;
    int n = cg_extern_symbols(m, &ext);
    ck_assert_int_eq(n, 5);
    const char *want[] = {"softsign", "swish", "cube", "swish_grad", "softsign_grad"};
    for (int w = 0; w < 5; w++) {
        int found = -1;
        for (int i = 0; i < n; i++)
            if (strcmp(ext[i].name, want[w]) == 0) found = i;
        ck_assert_msg(found >= 0, "%s is not listed", want[w]);
        ck_assert_ptr_nonnull(ext[found].address);
        ck_assert_msg(strstr(ext[found].library, "libextern_lib.so") != NULL, "%s", ext[found].library);
    }
    char ll[] = "/tmp/seqc_extern_XXXXXX";
    int fd = mkstemp(ll);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(cg_emit(m, CG_EMIT_LLVM, ll, &err), "%s", err ? err : "?");
    FILE *f = fopen(ll, "r");
    ck_assert_ptr_nonnull(f);
    static char ir[1 << 20];
    size_t len = fread(ir, 1, sizeof ir - 1, f);
    ir[len] = '\0';
    fclose(f);
    unlink(ll);
    ck_assert_msg(strstr(ir, "declare float @swish_grad(float)") != NULL, "the IR does not call swish_grad");

    CgJit *j = cg_jit(m, &err);
    ck_assert_msg(j != NULL, "%s", err ? err : "?");
    const CgPlan *plan = cg_plan(m);
    uint8_t *slab = aligned_alloc(CG_ALIGN, (size_t)plan->slab_bytes);
    memset(slab, 0, (size_t)plan->slab_bytes);
    for (int i = 0; i < g->nodes.len; i++) {
        const Node *x = g->nodes.items[i];
        if (x->op != OP_INPUT && x->op != OP_PARAM) continue;
        float *dst = (float *)(void *)(slab + plan->offset[x->id]);
        for (int64_t k = 0; k < interp_size(g, x); k++) dst[k] = (float)interp_data(it, x)[k];
    }
    interp_run(it, true, 2);
    cg_jit_entry(j)(slab, 1, 2, g->nodes.len);
    const Node *check[16];
    int nc = 0;
    check[nc++] = g->loss;
    check[nc++] = g->metrics.items[0];
    for (int i = 0; i < g->grads.len; i++)
        if (g->grads.items[i]) check[nc++] = g->grads.items[i];
    ck_assert_int_eq(nc, 7);
    for (int i = 0; i < nc; i++) {
        const float *a = (const float *)(const void *)(slab + plan->offset[check[i]->id]);
        double e = tensor_error(a, interp_data(it, check[i]), interp_size(g, check[i]));
        ck_assert_msg(e <= 1, "%s: error %.3g of the tolerance (%.9g vs %.9g)", check[i]->name ? check[i]->name : "loss",
                      e, a[0], interp_data(it, check[i])[0]);
    }
    free(slab);
    cg_jit_free(j);
    cg_free(m);
    interp_free(it);
    unload(&l);
    free(path);
}
END_TEST

/* ---- the command line ------------------------------------------------------------------ */

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(command_line) {
    const char *exe = getenv("SEQC_EXE");
    ck_assert_msg(exe != NULL, "SEQC_EXE is not set");
    char *path = in_lib_dir("extern_cli.seq"), *out = in_lib_dir("extern_cli.o");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(MODEL, f);
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' check '%s'", exe, path);
    ck_assert_int_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' gradcheck '%s' > /dev/null", exe, path);
    ck_assert_int_eq(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' compile --emit=obj -o '%s' '%s'", exe, out, path);
    ck_assert_int_eq(run(cmd), 0);
    ck_assert_int_eq(access(out, R_OK), 0);
    unlink(out);
    unlink(path);
    free(out);
    free(path);
}
END_TEST

int main(void) {
    Suite *s = suite_create("extern");
    TCase *tc = tcase_create("extern");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, parse_declaration);
    tcase_add_loop_test(tc, syntax_error, 0, (int)(sizeof syntax_errors / sizeof syntax_errors[0]));
    tcase_add_test(tc, check_clean);
    tcase_add_test(tc, absolute_path_any_shape);
    tcase_add_test(tc, graph_has_externs_in_model_and_cell);
    tcase_add_loop_test(tc, bad_input, 0, (int)(sizeof bad / sizeof bad[0]));
    tcase_add_test(tc, dlerror_text_is_shown);
    tcase_add_loop_test(tc, missing_derivative_when_training, 0, (int)(sizeof no_grad / sizeof no_grad[0]));
    tcase_add_test(tc, gradcheck_through_externs);
    tcase_add_test(tc, generated_code_matches_interpreter);
    tcase_add_test(tc, command_line);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
