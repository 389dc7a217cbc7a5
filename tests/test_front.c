/* Lexer and parser: tokens, the syntax tree, and recovery after errors. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "lex.h"
#include "parse.h"

typedef struct Fixture {
    Arena arena;
    Diags diags;
    Source *src;
} Fixture;

static Fixture fx;

static void setup(void) {
    arena_init(&fx.arena);
    diag_init(&fx.diags);
    fx.src = NULL;
}

static void teardown(void) {
    arena_free(&fx.arena);
    diag_free(&fx.diags);
    source_free(fx.src);
}

static TokenList lex(const char *text) {
    fx.src = source_from_string("t.seq", text, strlen(text));
    return lex_source(&fx.arena, fx.src, &fx.diags);
}

static Module *parse(const char *text) {
    fx.src = source_from_string("t.seq", text, strlen(text));
    return parse_source(&fx.arena, fx.src, &fx.diags);
}

/* The i-th diagnostic as "line:col: kind: message". */
static char *diag_line(int i) {
    static char buf[512];
    const Diag *g = &fx.diags.items[i];
    int line, col;
    source_line_col(g->span.src, g->span.off, &line, &col);
    static const char *const kinds[] = {"error", "warning", "note"};
    snprintf(buf, sizeof buf, "%d:%d: %s: %s", line, col, kinds[g->kind], g->msg);
    return buf;
}

START_TEST(lex_kinds) {
    TokenList t = lex("model m { h = x @ W + b -> }");
    TokenKind want[] = {TK_KW_MODEL, TK_IDENT, TK_LBRACE, TK_IDENT, TK_ASSIGN, TK_IDENT, TK_AT, TK_IDENT,
                        TK_PLUS, TK_IDENT, TK_ARROW, TK_RBRACE, TK_EOF};
    ck_assert_int_eq(t.len, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < t.len; i++) ck_assert_int_eq(t.items[i].kind, want[i]);
    ck_assert_int_eq(fx.diags.errors, 0);
}
END_TEST

START_TEST(lex_numbers) {
    TokenList t = lex("42 0.5 1e-3 2.5E2 7e 3");
    ck_assert_int_eq(t.items[0].kind, TK_INT);
    ck_assert_int_eq(t.items[0].ival, 42);
    ck_assert_int_eq(t.items[1].kind, TK_FLOAT);
    ck_assert_double_eq(t.items[1].fval, 0.5);
    ck_assert_int_eq(t.items[2].kind, TK_FLOAT);
    ck_assert_double_eq_tol(t.items[2].fval, 1e-3, 1e-18);
    ck_assert_double_eq(t.items[3].fval, 250.0);
    /* `7e` is the integer 7 followed by the name e, glued to it. */
    ck_assert_int_eq(t.items[4].kind, TK_INT);
    ck_assert_int_eq(t.items[5].kind, TK_IDENT);
    ck_assert_str_eq(t.items[5].text, "e");
    ck_assert(t.items[5].glued);
    ck_assert(!t.items[6].glued);
}
END_TEST

START_TEST(lex_integer_overflow) {
    lex("99999999999999999999");
    ck_assert_int_eq(fx.diags.errors, 1);
    ck_assert_str_eq(diag_line(0), "1:1: error: integer '99999999999999999999' is too large");
}
END_TEST

START_TEST(lex_strings) {
    TokenList t = lex("\"a\\tb\\\"c\\\\\" \"x\"");
    ck_assert_int_eq(t.items[0].kind, TK_STRING);
    ck_assert_str_eq(t.items[0].text, "a\tb\"c\\");
    ck_assert_str_eq(t.items[1].text, "x");
    ck_assert_int_eq(fx.diags.errors, 0);
}
END_TEST

START_TEST(lex_unterminated_string) {
    lex("data \"songs\nbatch 3");
    ck_assert_int_eq(fx.diags.errors, 1);
    ck_assert_str_eq(diag_line(0), "1:6: error: unterminated string (a string ends with '\"' on the same line)");
}
END_TEST

START_TEST(lex_comments_and_lines) {
    TokenList t = lex("a # comment @@@\n  b c\n");
    ck_assert_int_eq(t.len, 4);
    ck_assert(t.items[0].bol);
    ck_assert(t.items[1].bol);
    ck_assert(!t.items[2].bol);
    ck_assert_int_eq(fx.diags.errors, 0);
}
END_TEST

START_TEST(lex_garbage_runs) {
    /* A run of bad bytes is one error, and the lexer goes on after it. */
    TokenList t = lex("a \x01\x02\x03 b $$ c");
    ck_assert_int_eq(fx.diags.errors, 2);
    ck_assert_str_eq(diag_line(0), "1:3: error: unexpected byte 0x01 (is this a text file?)");
    ck_assert_str_eq(diag_line(1), "1:9: error: unexpected character '$'");
    ck_assert_int_eq(t.len, 4); /* a b c EOF */
}
END_TEST

START_TEST(lex_columns_count_characters) {
    lex("x = \"é\" $");
    ck_assert_int_eq(fx.diags.errors, 1);
    ck_assert_str_eq(diag_line(0), "1:9: error: unexpected character '$'");
}
END_TEST

START_TEST(parse_model) {
    Module *m = parse("model alarm {\n"
                      "  input  x: f32[20, 1]\n"
                      "  target y: f32[20, 1]\n"
                      "  h = rnn(x, units: 8, sequences: true)\n"
                      "  loss binary_crossentropy(h, y)\n"
                      "  metric accuracy(h, y)\n"
                      "}\n");
    ck_assert_int_eq(fx.diags.errors, 0);
    ck_assert_int_eq(m->ndecls, 1);
    Decl *d = m->decls[0];
    ck_assert_int_eq(d->kind, DECL_MODEL);
    ck_assert_str_eq(d->name, "alarm");
    ck_assert_int_eq(d->nbody, 5);
    ck_assert_int_eq(d->body[0]->kind, ST_INPUT);
    ck_assert_int_eq(d->body[0]->type->dtype, DTYPE_F32);
    ck_assert_int_eq(d->body[0]->type->ndims, 2);
    ck_assert_int_eq(d->body[0]->type->dims[0]->num.ival, 20);
    ck_assert_int_eq(d->body[1]->kind, ST_TARGET);
    Stmt *let = d->body[2];
    ck_assert_int_eq(let->kind, ST_LET);
    ck_assert_str_eq(let->names[0], "h");
    Expr *call = let->value;
    ck_assert_int_eq(call->kind, EX_CALL);
    ck_assert_str_eq(call->call.callee, "rnn");
    ck_assert_int_eq(call->call.nargs, 3);
    ck_assert_ptr_null(call->call.args[0].name);
    ck_assert_str_eq(call->call.args[1].name, "units");
    ck_assert_str_eq(call->call.args[2].name, "sequences");
    ck_assert_int_eq(d->body[3]->kind, ST_LOSS);
    ck_assert_int_eq(d->body[4]->kind, ST_METRIC);
}
END_TEST

START_TEST(parse_precedence) {
    /* a + b @ c * d - -e  parses as  (a + ((b @ c) * d)) - (-e) */
    Module *m = parse("model m { z = a + b @ c * d - -e }");
    ck_assert_int_eq(fx.diags.errors, 0);
    Expr *e = m->decls[0]->body[0]->value;
    ck_assert_int_eq(e->kind, EX_BINARY);
    ck_assert_int_eq(e->bin.op, '-');
    ck_assert_int_eq(e->bin.rhs->kind, EX_NEG);
    Expr *sum = e->bin.lhs;
    ck_assert_int_eq(sum->bin.op, '+');
    ck_assert_str_eq(sum->bin.lhs->name, "a");
    Expr *mul = sum->bin.rhs;
    ck_assert_int_eq(mul->bin.op, '*');
    ck_assert_int_eq(mul->bin.lhs->bin.op, '@');
    ck_assert_str_eq(mul->bin.rhs->name, "d");
}
END_TEST

START_TEST(parse_cell) {
    Module *m = parse("cell mgu(x: [I]) -> h {\n"
                      "  state h: [units]\n"
                      "  option activation = tanh\n"
                      "  param W: [I, 2units] init glorot_uniform\n"
                      "  f, c = split(x @ W, 2)\n"
                      "  h = f * h + c\n"
                      "}\n");
    ck_assert_int_eq(fx.diags.errors, 0);
    Decl *d = m->decls[0];
    ck_assert_int_eq(d->kind, DECL_CELL);
    ck_assert_int_eq(d->ninputs, 1);
    ck_assert_str_eq(d->inputs[0].name, "x");
    ck_assert_str_eq(d->output, "h");
    ck_assert_int_eq(d->body[0]->kind, ST_STATE);
    ck_assert_int_eq(d->body[1]->kind, ST_OPTION);
    Stmt *param = d->body[2];
    ck_assert_int_eq(param->kind, ST_PARAM);
    ck_assert_int_eq(param->type->dtype, DTYPE_NONE);
    /* `2units` is 2 * units */
    Expr *dim = param->type->dims[1];
    ck_assert_int_eq(dim->kind, EX_BINARY);
    ck_assert_int_eq(dim->bin.op, '*');
    ck_assert_int_eq(dim->bin.lhs->num.ival, 2);
    ck_assert_str_eq(dim->bin.rhs->name, "units");
    ck_assert_str_eq(param->value->name, "glorot_uniform");
    ck_assert_int_eq(d->body[3]->nnames, 2);
}
END_TEST

START_TEST(parse_train_and_import) {
    Module *m = parse("import \"cells.seq\"\n"
                      "train poet { optimizer adam(lr: 0.01,) batch 32 bptt(every: 20, window: 100) data text(\"p\") }");
    ck_assert_int_eq(fx.diags.errors, 0);
    ck_assert_int_eq(m->ndecls, 2);
    ck_assert_int_eq(m->decls[0]->kind, DECL_IMPORT);
    ck_assert_str_eq(m->decls[0]->path, "cells.seq");
    Decl *t = m->decls[1];
    ck_assert_str_eq(t->name, "poet");
    ck_assert_int_eq(t->nbody, 4);
    ck_assert_str_eq(t->body[0]->names[0], "optimizer");
    ck_assert_str_eq(t->body[0]->value->call.callee, "adam");
    ck_assert_int_eq(t->body[0]->value->call.nargs, 1);
    ck_assert_int_eq(t->body[1]->value->num.ival, 32);
    ck_assert_str_eq(t->body[2]->value->call.callee, "bptt");
    ck_assert_int_eq(t->body[2]->value->call.nargs, 2);
}
END_TEST

START_TEST(parse_recovers) {
    /* Three broken statements, three errors; the good ones around them survive. */
    Module *m = parse("model m {\n"
                      "  input x: f32[3]\n"
                      "  a = = 3\n"
                      "  b = dense(x, units: 2\n"
                      "  c = x + 1\n"
                      "  input : f32[2]\n"
                      "  d = c * 2\n"
                      "}\n");
    ck_assert_int_eq(fx.diags.errors, 3);
    ck_assert_str_eq(diag_line(0), "3:7: error: expected an expression, found '='");
    ck_assert_str_eq(diag_line(1), "4:24: error: expected ',' or ')' to close the '(' at line 4, found the end of the line");
    ck_assert_str_eq(diag_line(2), "6:9: error: expected a name after 'input', found ':'");
    /* Broken statements stay, without a value, so the names they define are known. */
    Decl *d = m->decls[0];
    ck_assert_int_eq(d->nbody, 6);
    ck_assert_str_eq(d->body[1]->names[0], "a");
    ck_assert_ptr_null(d->body[1]->value);
    ck_assert_str_eq(d->body[3]->names[0], "c");
    ck_assert_ptr_nonnull(d->body[3]->value);
    ck_assert_str_eq(d->body[5]->names[0], "d");
    ck_assert_ptr_nonnull(d->body[5]->value);
}
END_TEST

START_TEST(parse_unclosed_block) {
    parse("model m {\n  input x: f32[3]\n");
    ck_assert_int_eq(fx.diags.errors, 1);
    ck_assert_str_eq(diag_line(0), "3:1: error: expected '}' to close model 'm' (opened at line 1), found end of file");
}
END_TEST

START_TEST(parse_top_level_junk) {
    Module *m = parse("hello world\nmodel m { input x: f32[1] }\n");
    ck_assert_int_eq(fx.diags.errors, 1);
    ck_assert_str_eq(diag_line(0),
                     "1:1: error: expected 'model', 'cell', 'train', 'import' or 'extern' at the top level, found 'hello'");
    ck_assert_int_eq(m->ndecls, 1);
}
END_TEST

START_TEST(parse_nesting_limit) {
    size_t n = 50000;
    char *s = malloc(n * 2 + 64);
    strcpy(s, "model m { z = ");
    size_t o = strlen(s);
    for (size_t i = 0; i < n; i++) s[o++] = '(';
    s[o++] = '1';
    for (size_t i = 0; i < n; i++) s[o++] = ')';
    strcpy(s + o, " }");
    parse(s);
    free(s);
    ck_assert_int_eq(fx.diags.errors, 1);
    ck_assert_str_eq(diag_line(0), "1:216: error: expression nested too deeply (the limit is 200 levels)");
}
END_TEST

START_TEST(parse_statements_need_no_separators) {
    Module *m = parse("train { optimizer adam(lr: 0.001)  batch 100  epochs 100 }");
    ck_assert_int_eq(fx.diags.errors, 0);
    ck_assert_int_eq(m->decls[0]->nbody, 3);
}
END_TEST

START_TEST(diag_render_caret) {
    parse("model m {\n  h = dense(x,, units: 2)\n}\n");
    ck_assert_int_eq(fx.diags.errors, 1);
    char *s = diag_render(&fx.diags);
    ck_assert_str_eq(s, "t.seq:2:15: error: expected an expression, found ','\n"
                        "    2 |   h = dense(x,, units: 2)\n"
                        "      |               ^\n");
    free(s);
}
END_TEST

START_TEST(diag_long_line_window) {
    /* A 100,000-character line is shown as a window around the caret. */
    size_t n = 100000;
    char *s = malloc(n + 64);
    memset(s, ' ', n);
    memcpy(s + n - 3, "$ x", 3);
    s[n] = '\0';
    lex(s);
    free(s);
    ck_assert_int_eq(fx.diags.errors, 1);
    char *r = diag_render(&fx.diags);
    ck_assert_ptr_nonnull(strstr(r, "t.seq:1:99998: error: unexpected character '$'"));
    ck_assert_ptr_nonnull(strstr(r, "..."));
    ck_assert(strlen(r) < 600);
    free(r);
}
END_TEST

int main(void) {
    Suite *s = suite_create("front");
    TCase *lexer = tcase_create("lexer");
    tcase_add_checked_fixture(lexer, setup, teardown);
    tcase_add_test(lexer, lex_kinds);
    tcase_add_test(lexer, lex_numbers);
    tcase_add_test(lexer, lex_integer_overflow);
    tcase_add_test(lexer, lex_strings);
    tcase_add_test(lexer, lex_unterminated_string);
    tcase_add_test(lexer, lex_comments_and_lines);
    tcase_add_test(lexer, lex_garbage_runs);
    tcase_add_test(lexer, lex_columns_count_characters);
    suite_add_tcase(s, lexer);
    TCase *parser = tcase_create("parser");
    tcase_add_checked_fixture(parser, setup, teardown);
    tcase_add_test(parser, parse_model);
    tcase_add_test(parser, parse_precedence);
    tcase_add_test(parser, parse_cell);
    tcase_add_test(parser, parse_train_and_import);
    tcase_add_test(parser, parse_recovers);
    tcase_add_test(parser, parse_unclosed_block);
    tcase_add_test(parser, parse_top_level_junk);
    tcase_add_test(parser, parse_nesting_limit);
    tcase_add_test(parser, parse_statements_need_no_separators);
    tcase_add_test(parser, diag_render_caret);
    tcase_add_test(parser, diag_long_line_window);
    suite_add_tcase(s, parser);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
