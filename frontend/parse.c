#include "parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lex.h"

typedef struct Parser {
    Arena *arena;
    Diags *d;
    Token *toks;
    int pos;
    int depth;          /* expression nesting, bounded by SEQC_MAX_NESTING */
    bool too_deep;      /* report the nesting limit once */
    int lex_from, lex_to;   /* the lexer's diagnostics in d->items */
} Parser;

static int line_of(const Source *s, uint32_t off) {
    int lo = 0, hi = s->nlines - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->line_starts[mid] <= off) lo = mid; else hi = mid - 1;
    }
    return lo;
}

/* A syntax error, unless the lexer has reported a bad character on the same
 * line: the hole it left in the tokens would only explain itself again. */
static void syntax_error(Parser *p, Span at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void syntax_error(Parser *p, Span at, const char *fmt, ...) {
    int line = at.src ? line_of(at.src, at.off) : -1;
    for (int i = p->lex_from; i < p->lex_to && i < p->d->len; i++) {
        const Diag *g = &p->d->items[i];
        if (g->kind == DIAG_ERROR && g->span.src == at.src && line_of(g->span.src, g->span.off) == line) return;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    diag_error(p->d, at, "%s", buf);
}

static Token *peek(Parser *p) { return &p->toks[p->pos]; }
static Token *peek_at(Parser *p, int k) {
    Token *t = &p->toks[p->pos];
    for (int i = 0; i < k && t->kind != TK_EOF; i++) t++;
    return t;
}
static Token *next(Parser *p) {
    Token *t = &p->toks[p->pos];
    if (t->kind != TK_EOF) p->pos++;
    return t;
}
static bool at(Parser *p, TokenKind k) { return peek(p)->kind == k; }
static bool accept(Parser *p, TokenKind k) {
    if (!at(p, k)) return false;
    next(p);
    return true;
}
static bool at_word(Parser *p, const char *w) {
    return at(p, TK_IDENT) && strcmp(peek(p)->text, w) == 0;
}

/* How a token reads in a message: its text, shortened, or its kind. */
static const char *describe(Parser *p, const Token *t) {
    if (t->kind == TK_EOF) return "end of file";
    if (t->kind == TK_STRING) return "a string";
    const Source *s = t->span.src;
    uint32_t n = t->span.len > 24 ? 24 : t->span.len;
    return arena_printf(p->arena, "'%.*s%s'", (int)n, s->text + t->span.off, t->span.len > 24 ? "..." : "");
}

/* Where a missing token belongs. A statement ends with its line, so when the
 * next token is on a later line the caret goes just after the last token read
 * (where the user has to type), not onto the next statement. */
static Span missing_at(Parser *p) {
    Token *t = peek(p);
    if (t->kind == TK_EOF || !t->bol || p->pos == 0) return t->span;
    Span prev = p->toks[p->pos - 1].span;
    return (Span){prev.src, prev.off + prev.len, 0};
}

/* The token found where another was expected, as missing_at() points at it. */
static const char *describe_found(Parser *p) {
    Token *t = peek(p);
    if (t->kind != TK_EOF && t->bol && p->pos > 0) return "the end of the line";
    return describe(p, t);
}

static void error_here(Parser *p, const char *what) {
    syntax_error(p, missing_at(p), "expected %s, found %s", what, describe_found(p));
}

/* On failure reports `expected <what>` and leaves the token in place. */
static Token *expect(Parser *p, TokenKind k, const char *what) {
    if (at(p, k)) return next(p);
    error_here(p, what);
    return NULL;
}

/* The words that begin a top-level declaration. */
static bool is_top_keyword(TokenKind k) {
    return k == TK_KW_MODEL || k == TK_KW_CELL || k == TK_KW_TRAIN || k == TK_KW_IMPORT || k == TK_KW_EXTERN;
}

/* Error recovery after a statement that began at token `start` failed: skip
 * to the first token of a later line (or to a closing brace) at the current
 * bracket depth, where the next statement most likely starts. A statement that
 * failed at the first token of the next line has already arrived there. */
static void sync_stmt(Parser *p, int start) {
    int depth = 0;
    for (;;) {
        Token *t = peek(p);
        if (t->kind == TK_EOF) return;
        bool later_line = t->bol && p->pos > start;
        if (depth == 0 && (later_line || t->kind == TK_RBRACE)) return;
        if (later_line && is_top_keyword(t->kind)) return;
        if (t->kind == TK_LPAREN || t->kind == TK_LBRACKET || t->kind == TK_LBRACE) depth++;
        if ((t->kind == TK_RPAREN || t->kind == TK_RBRACKET || t->kind == TK_RBRACE) && depth > 0) depth--;
        next(p);
    }
}

static Expr *new_expr(Parser *p, ExprKind kind, Span span) {
    Expr *e = ARENA_NEW(p->arena, Expr);
    e->kind = kind;
    e->span = span;
    return e;
}

static Expr *expr(Parser *p);

static bool enter(Parser *p) {
    if (++p->depth <= SEQC_MAX_NESTING) return true;
    if (!p->too_deep)
        syntax_error(p, peek(p)->span, "expression nested too deeply (the limit is %d levels)", SEQC_MAX_NESTING);
    p->too_deep = true;
    return false;
}

/* Each operator of a chain such as `x + x + x ...` is one more level of the
 * tree the later stages walk recursively, so a chain counts against the same
 * limit. The caller restores p->depth when the chain ends. */
static bool enter_operator(Parser *p) {
    if (++p->depth <= SEQC_MAX_NESTING) return true;
    if (!p->too_deep)
        syntax_error(p, peek(p)->span, "expression has too many operators in a row (the limit is %d)",
                     SEQC_MAX_NESTING);
    p->too_deep = true;
    return false;
}

/* args = [ arg { "," arg } ]      arg = [ IDENT ":" ] expr     (after '(', up to ')') */
static bool call_args(Parser *p, Arg **out, int *nout, Token *open) {
    PtrVec args = {0};
    bool ok = true;
    if (!at(p, TK_RPAREN)) {
        do {
            if (at(p, TK_RPAREN)) break; /* a trailing comma is fine */
            Arg *a = ARENA_NEW(p->arena, Arg);
            if (at(p, TK_IDENT) && peek_at(p, 1)->kind == TK_COLON) {
                Token *n = next(p);
                a->name = n->text;
                a->name_span = n->span;
                next(p);
            }
            a->value = expr(p);
            if (!a->value) { ok = false; break; }
            ptrvec_push(p->arena, &args, a);
        } while (accept(p, TK_COMMA));
    }
    if (ok && !accept(p, TK_RPAREN)) {
        int line, col;
        source_line_col(open->span.src, open->span.off, &line, &col);
        syntax_error(p, missing_at(p), "expected ',' or ')' to close the '(' at line %d, found %s", line,
                     describe_found(p));
        ok = false;
    }
    *out = ARENA_ARRAY(p->arena, Arg, args.len);
    for (int i = 0; i < args.len; i++) (*out)[i] = *(Arg *)args.items[i];
    *nout = args.len;
    return ok;
}

/* primary = NUMBER | STRING | IDENT [ "(" args ")" ] | "(" expr ")" | "-" primary */
static Expr *primary(Parser *p) {
    Token *t = peek(p);
    switch (t->kind) {
    case TK_INT:
    case TK_FLOAT: {
        next(p);
        Expr *e = new_expr(p, EX_NUMBER, t->span);
        e->num.value = t->fval;
        e->num.ival = t->ival;
        e->num.is_int = t->kind == TK_INT;
        return e;
    }
    case TK_STRING: {
        next(p);
        Expr *e = new_expr(p, EX_STRING, t->span);
        e->str = t->text;
        return e;
    }
    case TK_IDENT: {
        next(p);
        if (at(p, TK_LPAREN)) {
            Token *open = next(p);
            Expr *e = new_expr(p, EX_CALL, t->span);
            e->call.callee = t->text;
            e->call.callee_span = t->span;
            if (!enter(p)) return NULL;
            bool ok = call_args(p, &e->call.args, &e->call.nargs, open);
            p->depth--;
            if (!ok) return NULL;
            e->span = span_join(t->span, p->toks[p->pos - 1].span);
            return e;
        }
        Expr *e = new_expr(p, EX_NAME, t->span);
        e->name = t->text;
        return e;
    }
    case TK_LPAREN: {
        Token *open = next(p);
        if (!enter(p)) return NULL;
        Expr *e = expr(p);
        p->depth--;
        if (!e) return NULL;
        if (!accept(p, TK_RPAREN)) {
            int line, col;
            source_line_col(open->span.src, open->span.off, &line, &col);
            syntax_error(p, missing_at(p), "expected ')' to close the '(' at line %d:%d, found %s", line, col,
                         describe_found(p));
            return NULL;
        }
        return e;
    }
    case TK_MINUS: {
        next(p);
        if (!enter(p)) return NULL;
        Expr *operand = primary(p);
        p->depth--;
        if (!operand) return NULL;
        Expr *e = new_expr(p, EX_NEG, span_join(t->span, operand->span));
        e->operand = operand;
        return e;
    }
    default:
        error_here(p, "an expression");
        return NULL;
    }
}

/* term = primary { ("*" | "/" | "@") primary }   (as in Python, @ binds like *) */
static Expr *term(Parser *p) {
    int depth = p->depth;
    Expr *lhs = primary(p);
    while (lhs && (at(p, TK_STAR) || at(p, TK_SLASH) || at(p, TK_AT))) {
        if (!enter_operator(p)) {
            lhs = NULL;
            break;
        }
        Token *op = next(p);
        Expr *rhs = primary(p);
        if (!rhs) {
            lhs = NULL;
            break;
        }
        Expr *e = new_expr(p, EX_BINARY, span_join(lhs->span, rhs->span));
        e->bin.op = op->kind == TK_STAR ? '*' : op->kind == TK_SLASH ? '/' : '@';
        e->bin.lhs = lhs;
        e->bin.rhs = rhs;
        lhs = e;
    }
    p->depth = depth;
    return lhs;
}

/* expr = term { ("+" | "-") term } */
static Expr *expr(Parser *p) {
    int depth = p->depth;
    Expr *lhs = term(p);
    while (lhs && (at(p, TK_PLUS) || at(p, TK_MINUS))) {
        if (!enter_operator(p)) {
            lhs = NULL;
            break;
        }
        Token *op = next(p);
        Expr *rhs = term(p);
        if (!rhs) {
            lhs = NULL;
            break;
        }
        Expr *e = new_expr(p, EX_BINARY, span_join(lhs->span, rhs->span));
        e->bin.op = op->kind == TK_PLUS ? '+' : '-';
        e->bin.lhs = lhs;
        e->bin.rhs = rhs;
        lhs = e;
    }
    p->depth = depth;
    return lhs;
}

/* dim_atom = INT | IDENT | "(" dim ")"
 * dim_term = dim_atom { "*" dim_atom | IDENT-glued-to-INT }     (`4H` is 4*H)
 * dim      = dim_term { ("+" | "-") dim_term } */
static Expr *dim(Parser *p);

static Expr *dim_atom(Parser *p) {
    Token *t = peek(p);
    if (t->kind == TK_INT || t->kind == TK_IDENT) {
        next(p);
        Expr *e = new_expr(p, t->kind == TK_INT ? EX_NUMBER : EX_NAME, t->span);
        if (t->kind == TK_INT) {
            e->num.value = t->fval;
            e->num.ival = t->ival;
            e->num.is_int = true;
        } else {
            e->name = t->text;
        }
        return e;
    }
    if (t->kind == TK_LPAREN) {
        next(p);
        if (!enter(p)) return NULL;
        Expr *e = dim(p);
        p->depth--;
        if (!e) return NULL;
        if (!expect(p, TK_RPAREN, "')' in a dimension")) return NULL;
        return e;
    }
    error_here(p, t->kind == TK_FLOAT ? "a whole number as a dimension" : "a dimension (a number or a size name)");
    return NULL;
}

static Expr *dim_term(Parser *p) {
    int depth = p->depth;
    Expr *lhs = dim_atom(p);
    while (lhs) {
        bool star = at(p, TK_STAR), glued = at(p, TK_IDENT) && peek(p)->glued && lhs->kind == EX_NUMBER;
        if (!star && !glued) break;
        if (!enter_operator(p)) {
            lhs = NULL;
            break;
        }
        if (star) next(p);
        Expr *rhs = dim_atom(p);
        if (!rhs) {
            lhs = NULL;
            break;
        }
        Expr *e = new_expr(p, EX_BINARY, span_join(lhs->span, rhs->span));
        e->bin.op = '*';
        e->bin.lhs = lhs;
        e->bin.rhs = rhs;
        lhs = e;
    }
    p->depth = depth;
    return lhs;
}

static Expr *dim(Parser *p) {
    int depth = p->depth;
    Expr *lhs = dim_term(p);
    while (lhs && (at(p, TK_PLUS) || at(p, TK_MINUS))) {
        if (!enter_operator(p)) {
            lhs = NULL;
            break;
        }
        Token *op = next(p);
        Expr *rhs = dim_term(p);
        if (!rhs) {
            lhs = NULL;
            break;
        }
        Expr *e = new_expr(p, EX_BINARY, span_join(lhs->span, rhs->span));
        e->bin.op = op->kind == TK_PLUS ? '+' : '-';
        e->bin.lhs = lhs;
        e->bin.rhs = rhs;
        lhs = e;
    }
    p->depth = depth;
    return lhs;
}

/* type = [ "f32" | "i32" ] "[" [ dim { "," dim } ] "]" */
static TypeExpr *type(Parser *p) {
    TypeExpr *ty = ARENA_NEW(p->arena, TypeExpr);
    Token *start = peek(p);
    ty->dtype = DTYPE_NONE;
    if (at(p, TK_IDENT)) {
        const char *n = peek(p)->text;
        if (strcmp(n, "f32") == 0) ty->dtype = DTYPE_F32;
        else if (strcmp(n, "i32") == 0) ty->dtype = DTYPE_I32;
        else {
            syntax_error(p, peek(p)->span, "unknown element type %s (use f32 or i32)", describe(p, peek(p)));
            ty->dtype = DTYPE_F32;
        }
        next(p);
    }
    if (!expect(p, TK_LBRACKET, ty->dtype == DTYPE_NONE ? "a type such as f32[20, 1]" : "'[' and the dimensions"))
        return NULL;
    PtrVec dims = {0};
    if (!at(p, TK_RBRACKET)) {
        do {
            Expr *e = dim(p);
            if (!e) return NULL;
            ptrvec_push(p->arena, &dims, e);
        } while (accept(p, TK_COMMA));
    }
    if (!expect(p, TK_RBRACKET, "',' or ']' in the shape")) return NULL;
    ty->dims = (Expr **)dims.items;
    ty->ndims = dims.len;
    ty->span = span_join(start->span, p->toks[p->pos - 1].span);
    return ty;
}

static Stmt *new_stmt(Parser *p, StmtKind kind, Token *start, Token *name) {
    Stmt *s = ARENA_NEW(p->arena, Stmt);
    s->kind = kind;
    s->span = start->span;
    if (name) {
        s->names = ARENA_ARRAY(p->arena, const char *, 1);
        s->name_spans = ARENA_ARRAY(p->arena, Span, 1);
        s->names[0] = name->text;
        s->name_spans[0] = name->span;
        s->nnames = 1;
    }
    return s;
}

static void finish_stmt(Parser *p, Stmt *s) { s->span = span_join(s->span, p->toks[p->pos - 1].span); }

/* A statement that did not parse is kept as ST_LET with no value, holding the
 * names it was about to define (maybe none). Later stages bind those names to
 * an error, so their uses stay quiet instead of reporting "unknown name", and
 * they know the block is incomplete (no "never used" warnings). */
static Stmt *broken(Stmt *s) {
    s->kind = ST_LET;
    s->type = NULL;
    s->value = NULL;
    return s;
}

static bool is_broken(const Stmt *s) { return s->kind == ST_LET && !s->value; }

/* True when `b` is `a` with one character changed, added or dropped, or two
 * neighbours swapped: the typos worth a "did you mean". */
static bool one_edit(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > lb) {
        const char *t = a;
        a = b, b = t;
        size_t n = la;
        la = lb, lb = n;
    }
    if (lb - la > 1) return false;
    size_t i = 0;
    while (i < la && a[i] == b[i]) i++;
    if (i == la) return true;
    if (la < lb) return strcmp(a + i, b + i + 1) == 0;
    if (strcmp(a + i + 1, b + i + 1) == 0) return true;
    return i + 1 < la && a[i] == b[i + 1] && a[i + 1] == b[i] && strcmp(a + i + 2, b + i + 2) == 0;
}

/* `inptu x: f32[3]`: the first word is a statement keyword with a typo.
 * Reports it and returns the statement (broken, keeping the name it declares),
 * or NULL when the word is not close to any of `words`. */
static Stmt *misspelt_keyword(Parser *p, const char *const *words, int n) {
    Token *t = peek(p);
    for (int i = 0; i < n; i++) {
        if (!one_edit(t->text, words[i])) continue;
        syntax_error(p, t->span, "unknown statement '%s'; did you mean '%s'?", t->text, words[i]);
        next(p);
        Token *name = at(p, TK_IDENT) && peek_at(p, 1)->kind == TK_COLON ? peek(p) : NULL;
        return broken(new_stmt(p, ST_LET, t, name));
    }
    return NULL;
}

/* decl_stmt = ("input" | "target" | "state") IDENT ":" type
 *           | "param" IDENT ":" type "init" expr */
static Stmt *typed_decl(Parser *p, StmtKind kind, const char *what) {
    Token *kw = next(p);
    Token *name = expect(p, TK_IDENT, arena_printf(p->arena, "a name after '%s'", what));
    if (!name) return NULL;
    Stmt *s = new_stmt(p, kind, kw, name);
    if (!expect(p, TK_COLON, arena_printf(p->arena, "':' and a type after %s '%s'", what, name->text)))
        return broken(s);
    s->type = type(p);
    if (!s->type) return broken(s);
    if (kind == ST_PARAM) {
        if (!at_word(p, "init")) {
            error_here(p, arena_printf(p->arena, "'init' and an initializer for param '%s' (for example: init glorot_uniform)",
                                       name->text));
            return broken(s);
        }
        next(p);
        s->value = expr(p);
        if (!s->value) return broken(s);
    }
    finish_stmt(p, s);
    return s;
}

/* let = IDENT { "," IDENT } "=" expr */
static Stmt *let(Parser *p) {
    Stmt *s = new_stmt(p, ST_LET, peek(p), NULL);
    PtrVec names = {0};
    bool ok = true;
    do {
        Token *n = expect(p, TK_IDENT, "a name");
        if (!n) {
            ok = false;
            break;
        }
        ptrvec_push(p->arena, &names, n);
    } while (accept(p, TK_COMMA));
    s->nnames = names.len;
    s->names = ARENA_ARRAY(p->arena, const char *, names.len);
    s->name_spans = ARENA_ARRAY(p->arena, Span, names.len);
    for (int i = 0; i < names.len; i++) {
        s->names[i] = ((Token *)names.items[i])->text;
        s->name_spans[i] = ((Token *)names.items[i])->span;
    }
    if (!ok) return s;
    if (!at(p, TK_ASSIGN)) {
        if (s->nnames == 1)
            syntax_error(p, missing_at(p), "expected '=' after '%s', found %s", s->names[0], describe_found(p));
        else
            error_here(p, "'=' after the names");
        return s;
    }
    next(p);
    s->value = expr(p);
    if (s->value) finish_stmt(p, s);
    return s;
}

static bool next_is_let(Parser *p) {
    TokenKind k = peek_at(p, 1)->kind;
    return k == TK_ASSIGN || k == TK_COMMA;
}

static Stmt *model_stmt(Parser *p) {
    static const char *const words[] = {"input", "target", "loss", "metric"};
    Token *t = peek(p);
    if (t->kind != TK_IDENT) {
        syntax_error(p, t->span,
                     "expected a statement (input, target, NAME = ..., loss or metric), found %s", describe(p, t));
        return NULL;
    }
    if (next_is_let(p)) return let(p);
    if (at_word(p, "input")) return typed_decl(p, ST_INPUT, "input");
    if (at_word(p, "target")) return typed_decl(p, ST_TARGET, "target");
    if (at_word(p, "loss") || at_word(p, "metric")) {
        Token *kw = next(p);
        Stmt *s = new_stmt(p, kw->text[0] == 'l' ? ST_LOSS : ST_METRIC, kw, NULL);
        s->value = expr(p);
        if (!s->value) return NULL;
        finish_stmt(p, s);
        return s;
    }
    if (at_word(p, "param") || at_word(p, "state") || at_word(p, "option")) {
        syntax_error(p, t->span, "'%s' declarations belong in a cell, not in a model", t->text);
        return NULL;
    }
    Stmt *typo = misspelt_keyword(p, words, 4);
    return typo ? typo : let(p); /* most likely `h rnn(x)`: a missing '=' */
}

static Stmt *cell_stmt(Parser *p) {
    static const char *const words[] = {"state", "param", "option"};
    Token *t = peek(p);
    if (t->kind != TK_IDENT) {
        syntax_error(p, t->span, "expected a cell statement (state, param, option or NAME = ...), found %s",
                     describe(p, t));
        return NULL;
    }
    if (next_is_let(p)) return let(p);
    if (at_word(p, "state")) return typed_decl(p, ST_STATE, "state");
    if (at_word(p, "param")) return typed_decl(p, ST_PARAM, "param");
    if (at_word(p, "option")) {
        Token *kw = next(p);
        Token *name = expect(p, TK_IDENT, "a name after 'option'");
        if (!name) return NULL;
        Stmt *s = new_stmt(p, ST_OPTION, kw, name);
        if (!expect(p, TK_ASSIGN, arena_printf(p->arena, "'=' and a default value for option '%s'", name->text)))
            return broken(s);
        s->value = expr(p);
        if (!s->value) return broken(s);
        finish_stmt(p, s);
        return s;
    }
    if (at_word(p, "input") || at_word(p, "target") || at_word(p, "loss") || at_word(p, "metric")) {
        syntax_error(p, t->span, "'%s' belongs in a model, not in a cell", t->text);
        return NULL;
    }
    Stmt *typo = misspelt_keyword(p, words, 3);
    return typo ? typo : let(p);
}

/* entry = IDENT ( "(" args ")" | expr ) */
static Stmt *train_stmt(Parser *p) {
    Token *name = peek(p);
    if (name->kind != TK_IDENT) {
        syntax_error(p, name->span, "expected a training setting (optimizer, batch, epochs, bptt, ...), found %s",
                     describe(p, name));
        return NULL;
    }
    Stmt *s = new_stmt(p, ST_ENTRY, name, name);
    if (peek_at(p, 1)->kind == TK_LPAREN && peek_at(p, 1)->glued) {
        s->value = primary(p); /* the call form: the entry's own arguments */
    } else {
        next(p);
        if (at(p, TK_ASSIGN) || at(p, TK_COLON)) {
            syntax_error(p, peek(p)->span, "write '%s VALUE' without '%s' in a train block", name->text,
                         at(p, TK_ASSIGN) ? "=" : ":");
            next(p);
        }
        s->value = expr(p);
    }
    if (!s->value) return NULL;
    finish_stmt(p, s);
    return s;
}

/* block = "{" { stmt } "}" */
static void block(Parser *p, Decl *decl, Stmt *(*stmt)(Parser *), const char *what) {
    Token *open = peek(p);
    if (!expect(p, TK_LBRACE, arena_printf(p->arena, "'{' to begin %s", what))) {
        sync_stmt(p, p->pos);
        if (!accept(p, TK_LBRACE)) return;
    }
    PtrVec body = {0};
    for (;;) {
        if (at(p, TK_RBRACE)) {
            decl->close = next(p)->span;
            break;
        }
        if (at(p, TK_EOF) || (is_top_keyword(peek(p)->kind) && peek(p)->bol)) {
            int line, col;
            source_line_col(open->span.src, open->span.off, &line, &col);
            syntax_error(p, peek(p)->span, "expected '}' to close %s (opened at line %d), found %s", what, line,
                         describe(p, peek(p)));
            break;
        }
        int before = p->pos;
        p->depth = 0;
        Stmt *s = stmt(p);
        if (!s) s = broken(new_stmt(p, ST_LET, &p->toks[before], NULL));
        ptrvec_push(p->arena, &body, s);
        if (is_broken(s)) {
            sync_stmt(p, before);
            if (p->pos == before) next(p);
        }
    }
    decl->body = (Stmt **)body.items;
    decl->nbody = body.len;
}

static Decl *new_decl(Parser *p, DeclKind kind, Token *kw) {
    Decl *d = ARENA_NEW(p->arena, Decl);
    d->kind = kind;
    d->span = kw->span;
    return d;
}

/* model = "model" IDENT block */
static Decl *model_decl(Parser *p) {
    Decl *d = new_decl(p, DECL_MODEL, next(p));
    Token *name = expect(p, TK_IDENT, "the model's name after 'model'");
    if (name) {
        d->name = name->text;
        d->name_span = name->span;
    } else if (!at(p, TK_LBRACE)) {
        return NULL; /* `model` alone: one error is enough */
    }
    block(p, d, model_stmt, arena_printf(p->arena, "model '%s'", d->name ? d->name : "?"));
    return d;
}

/* cell = "cell" IDENT "(" IDENT ":" type { "," IDENT ":" type } ")" "->" IDENT block */
static Decl *cell_decl(Parser *p) {
    Decl *d = new_decl(p, DECL_CELL, next(p));
    Token *name = expect(p, TK_IDENT, "the cell's name after 'cell'");
    if (!name) return NULL;
    d->name = name->text;
    d->name_span = name->span;
    if (!expect(p, TK_LPAREN, arena_printf(p->arena, "'(' and the per-step inputs of cell '%s'", d->name))) return NULL;
    PtrVec ins = {0};
    do {
        Token *in = expect(p, TK_IDENT, "the name of a per-step input");
        if (!in) return NULL;
        if (!expect(p, TK_COLON, arena_printf(p->arena, "':' and a shape after input '%s'", in->text))) return NULL;
        CellInput *ci = ARENA_NEW(p->arena, CellInput);
        ci->name = in->text;
        ci->span = in->span;
        ci->type = type(p);
        if (!ci->type) return NULL;
        ptrvec_push(p->arena, &ins, ci);
    } while (accept(p, TK_COMMA));
    if (!expect(p, TK_RPAREN, "',' or ')' after the cell's inputs")) return NULL;
    if (!expect(p, TK_ARROW, arena_printf(p->arena, "'->' and the state that cell '%s' outputs", d->name))) return NULL;
    Token *out = expect(p, TK_IDENT, "the name of the output state after '->'");
    if (!out) return NULL;
    d->output = out->text;
    d->output_span = out->span;
    d->inputs = ARENA_ARRAY(p->arena, CellInput, ins.len);
    for (int i = 0; i < ins.len; i++) d->inputs[i] = *(CellInput *)ins.items[i];
    d->ninputs = ins.len;
    block(p, d, cell_stmt, arena_printf(p->arena, "cell '%s'", d->name));
    return d;
}

/* train = "train" [ IDENT ] block */
static Decl *train_decl(Parser *p) {
    Decl *d = new_decl(p, DECL_TRAIN, next(p));
    if (at(p, TK_IDENT)) {
        Token *name = next(p);
        d->name = name->text;
        d->name_span = name->span;
    }
    block(p, d, train_stmt, "the train block");
    return d;
}

/* import = "import" STRING */
static Decl *import_decl(Parser *p) {
    Decl *d = new_decl(p, DECL_IMPORT, next(p));
    Token *path = expect(p, TK_STRING, "a file name in quotes after 'import' (for example: import \"cells.seq\")");
    if (!path) return NULL;
    d->path = path->text;
    d->name_span = path->span;
    return d;
}

/* extern = "extern" IDENT "(" IDENT ")" "from" STRING [ "grad" IDENT ]
 * `from` and `grad` are words, not keywords: only here do they mean anything.
 * After a mistake past the name the declaration is kept without a library
 * (the elaborator keeps the name quiet) and the rest of the line skipped. */
static Decl *extern_rest(Parser *p, Decl *d);

static Decl *extern_decl(Parser *p) {
    Decl *d = new_decl(p, DECL_EXTERN, next(p));
    Token *name = expect(p, TK_IDENT, "the function's name after 'extern' (for example: extern swish(x) from \"./libswish.so\")");
    if (!name) return NULL;
    d->name = name->text;
    d->name_span = name->span;
    if (extern_rest(p, d)) return d;
    d->path = NULL;
    d->ninputs = 0;
    d->grad = NULL;
    while (!at(p, TK_EOF) && !peek(p)->bol) next(p);
    return d;
}

static Decl *extern_rest(Parser *p, Decl *d) {
    if (!expect(p, TK_LPAREN, arena_printf(p->arena, "'(' and the parameter of extern '%s'", d->name))) return NULL;
    if (at(p, TK_RPAREN)) {
        syntax_error(p, peek(p)->span, "extern '%s' needs one parameter: it is called as float %s(float)", d->name,
                     d->name);
        return NULL;
    }
    Token *param = expect(p, TK_IDENT, "the name of the parameter");
    if (!param) return NULL;
    if (at(p, TK_COLON)) {
        syntax_error(p, peek(p)->span, "the parameter of an extern has no type: it is always one f32 value");
        return NULL;
    }
    if (at(p, TK_COMMA)) {
        syntax_error(p, peek(p)->span, "extern '%s' takes one parameter: it is called as float %s(float)", d->name,
                     d->name);
        return NULL;
    }
    if (!expect(p, TK_RPAREN, "')' after the parameter")) return NULL;
    d->inputs = ARENA_NEW(p->arena, CellInput);
    d->inputs[0] = (CellInput){.name = param->text, .span = param->span};
    d->ninputs = 1;
    if (!at_word(p, "from")) {
        error_here(p, arena_printf(p->arena, "'from' and the library of extern '%s' (for example: from \"./lib%s.so\")",
                                   d->name, d->name));
        return NULL;
    }
    next(p);
    Token *lib = expect(p, TK_STRING, "the library's file name in quotes after 'from'");
    if (!lib) return NULL;
    d->path = lib->text;
    d->path_span = lib->span;
    if (at_word(p, "grad") && !peek(p)->bol) {
        next(p);
        Token *g = expect(p, TK_IDENT, arena_printf(p->arena, "the name of the derivative of '%s' after 'grad'", d->name));
        if (!g) return NULL;
        d->grad = g->text;
        d->grad_span = g->span;
    }
    if (!at(p, TK_EOF) && !peek(p)->bol) {
        syntax_error(p, peek(p)->span, "expected 'grad' or the end of the line after the library, found %s",
                     describe(p, peek(p)));
        return NULL;
    }
    return d;
}

/* file = { import | extern | model | cell | train } EOF */
Module *parse_source(Arena *arena, const Source *src, Diags *d) {
    int lex_from = d->len;
    TokenList tl = lex_source(arena, src, d);
    Parser p = {.arena = arena, .d = d, .toks = tl.items, .lex_from = lex_from, .lex_to = d->len};
    Module *m = ARENA_NEW(arena, Module);
    m->src = src;
    PtrVec decls = {0};
    while (!at(&p, TK_EOF)) {
        Decl *decl = NULL;
        int before = p.pos;
        switch (peek(&p)->kind) {
        case TK_KW_MODEL: decl = model_decl(&p); break;
        case TK_KW_CELL: decl = cell_decl(&p); break;
        case TK_KW_TRAIN: decl = train_decl(&p); break;
        case TK_KW_IMPORT: decl = import_decl(&p); break;
        case TK_KW_EXTERN: decl = extern_decl(&p); break;
        default:
            syntax_error(&p, peek(&p)->span,
                         "expected 'model', 'cell', 'train', 'import' or 'extern' at the top level, found %s",
                         describe(&p, peek(&p)));
            /* Skip to the next top-level keyword. */
            while (!at(&p, TK_EOF) && !is_top_keyword(peek(&p)->kind)) next(&p);
            continue;
        }
        if (decl) ptrvec_push(arena, &decls, decl);
        else if (p.pos == before) next(&p);
        else {
            while (!at(&p, TK_EOF) && !(is_top_keyword(peek(&p)->kind) && peek(&p)->bol)) next(&p);
        }
    }
    m->decls = (Decl **)decls.items;
    m->ndecls = decls.len;
    return m;
}
