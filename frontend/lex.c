#include "lex.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {
#define X(k, s) s,
    TOKEN_KINDS(X)
#undef X
};

const char *lex_kind_name(TokenKind k) { return kind_names[k]; }

static const struct { const char *word; TokenKind kind; } keywords[] = {
    {"model", TK_KW_MODEL}, {"cell", TK_KW_CELL}, {"train", TK_KW_TRAIN}, {"import", TK_KW_IMPORT},
    {"extern", TK_KW_EXTERN},
};

typedef struct Lexer {
    Arena *arena;
    const Source *src;
    Diags *d;
    const char *p, *end;
    Token *toks;
    int len, cap;
    int bol, glued;
} Lexer;

static Span span_at(Lexer *l, const char *start, const char *stop) {
    return (Span){l->src, (uint32_t)(start - l->src->text), (uint32_t)(stop - start)};
}

static Token *push(Lexer *l, TokenKind kind, const char *start) {
    if (l->len == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        Token *t = ARENA_ARRAY(l->arena, Token, cap);
        if (l->len) memcpy(t, l->toks, sizeof(Token) * (size_t)l->len);
        l->toks = t;
        l->cap = cap;
    }
    Token *t = &l->toks[l->len++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->span = span_at(l, start, l->p);
    t->bol = (unsigned)l->bol;
    t->glued = (unsigned)l->glued;
    l->bol = 0;
    l->glued = 1;
    return t;
}

static int is_ident_start(int c) { return isalpha(c) || c == '_'; }
static int is_ident_char(int c) { return isalnum(c) || c == '_'; }

static void lex_number(Lexer *l) {
    const char *start = l->p;
    int is_float = 0;
    while (l->p < l->end && isdigit((unsigned char)*l->p)) l->p++;
    if (l->p + 1 < l->end && *l->p == '.' && isdigit((unsigned char)l->p[1])) {
        is_float = 1;
        l->p++;
        while (l->p < l->end && isdigit((unsigned char)*l->p)) l->p++;
    }
    /* An exponent only when digits follow, so `2e` stays 2 followed by a name. */
    if (l->p < l->end && (*l->p == 'e' || *l->p == 'E')) {
        const char *q = l->p + 1;
        if (q < l->end && (*q == '+' || *q == '-')) q++;
        if (q < l->end && isdigit((unsigned char)*q)) {
            is_float = 1;
            l->p = q;
            while (l->p < l->end && isdigit((unsigned char)*l->p)) l->p++;
        }
    }
    char buf[64];
    size_t n = (size_t)(l->p - start);
    Token *t = push(l, is_float ? TK_FLOAT : TK_INT, start);
    if (n >= sizeof buf) {
        diag_error(l->d, t->span, "number is too long");
        t->kind = TK_FLOAT;
        t->fval = 0;
        return;
    }
    memcpy(buf, start, n);
    buf[n] = '\0';
    errno = 0;
    if (is_float) {
        t->fval = strtod(buf, NULL);
        if (errno == ERANGE && isinf(t->fval)) diag_error(l->d, t->span, "number '%s' is out of range", buf);
    } else {
        t->ival = strtoll(buf, NULL, 10);
        if (errno == ERANGE) diag_error(l->d, t->span, "integer '%s' is too large", buf);
        t->fval = (double)t->ival;
    }
}

static void lex_string(Lexer *l) {
    const char *start = l->p++;
    size_t cap = 32, n = 0;
    char *buf = arena_alloc(l->arena, cap);
    for (;;) {
        if (l->p >= l->end || *l->p == '\n') {
            Token *t = push(l, TK_STRING, start);
            t->text = buf;
            diag_error(l->d, (Span){l->src, t->span.off, 1}, "unterminated string (a string ends with '\"' on the same line)");
            return;
        }
        char c = *l->p++;
        if (c == '"') break;
        if (c == '\\' && l->p < l->end && *l->p != '\n') {
            const char *esc = l->p++;
            switch (*esc) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case '\\': c = '\\'; break;
            case '"': c = '"'; break;
            default:
                diag_error(l->d, span_at(l, esc - 1, esc + 1), "unknown escape '\\%c' in string (use \\n, \\t, \\\\ or \\\")",
                           isprint((unsigned char)*esc) ? *esc : '?');
                c = *esc;
            }
        }
        if (n + 2 > cap) {
            char *nb = arena_alloc(l->arena, cap * 2);
            memcpy(nb, buf, n);
            buf = nb;
            cap *= 2;
        }
        buf[n++] = c;
    }
    Token *t = push(l, TK_STRING, start);
    t->text = buf;
}

/* “text” pasted from a document: one error, then a string as if the quotes
 * were straight, so the rest of the line parses. */
#define LEFT_QUOTE "\xe2\x80\x9c"
#define RIGHT_QUOTE "\xe2\x80\x9d"

static void lex_curly_string(Lexer *l) {
    const char *start = l->p;
    l->p += 3;
    const char *from = l->p;
    while (l->p < l->end && *l->p != '\n' && *l->p != '"' && !(l->end - l->p >= 3 && memcmp(l->p, RIGHT_QUOTE, 3) == 0))
        l->p++;
    const char *to = l->p;
    if (l->p < l->end && *l->p == '"') l->p++;
    else if (l->p < l->end && *l->p != '\n') l->p += 3;
    Token *t = push(l, TK_STRING, start);
    t->text = arena_strndup(l->arena, from, (size_t)(to - from));
    diag_error(l->d, (Span){l->src, t->span.off, 3}, "unexpected character '%s' (write straight quotes: \")",
               LEFT_QUOTE);
}

/* The length of the UTF-8 character at p (2 to 4 bytes), or 0 when the bytes
 * there are not one: a pasted '×' or curly quote is shown as itself. */
static int utf8_len(const char *p, const char *end) {
    unsigned char c = (unsigned char)*p;
    int n = c >= 0xF5 ? 0 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (!n || end - p < n) return 0;
    for (int i = 1; i < n; i++)
        if (((unsigned char)p[i] & 0xC0) != 0x80) return 0;
    return n;
}

TokenList lex_source(Arena *arena, const Source *src, Diags *d) {
    Lexer l = {.arena = arena, .src = src, .d = d, .p = src->text, .end = src->text + src->len, .bol = 1};
    /* Past the error limit the rest of the file could only add messages nobody
     * sees; stopping there bounds the work and memory spent on garbage. */
    while (l.p < l.end && !d->dropping) {
        int c = (unsigned char)*l.p;
        if (c == '\n') { l.p++; l.bol = 1; l.glued = 0; continue; }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') { l.p++; l.glued = 0; continue; }
        if (c == '#') {
            while (l.p < l.end && *l.p != '\n') l.p++;
            l.glued = 0;
            continue;
        }
        const char *start = l.p;
        if (is_ident_start(c)) {
            while (l.p < l.end && is_ident_char((unsigned char)*l.p)) l.p++;
            size_t n = (size_t)(l.p - start);
            TokenKind kind = TK_IDENT;
            for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
                if (strlen(keywords[i].word) == n && memcmp(keywords[i].word, start, n) == 0) kind = keywords[i].kind;
            Token *t = push(&l, kind, start);
            t->text = arena_strndup(arena, start, n);
            continue;
        }
        if (isdigit(c)) { lex_number(&l); continue; }
        if (c == '"') { lex_string(&l); continue; }
        if (l.end - l.p >= 3 && memcmp(l.p, LEFT_QUOTE, 3) == 0) { lex_curly_string(&l); continue; }
        TokenKind kind;
        l.p++;
        switch (c) {
        case '(': kind = TK_LPAREN; break;
        case ')': kind = TK_RPAREN; break;
        case '{': kind = TK_LBRACE; break;
        case '}': kind = TK_RBRACE; break;
        case '[': kind = TK_LBRACKET; break;
        case ']': kind = TK_RBRACKET; break;
        case ',': kind = TK_COMMA; break;
        case ':': kind = TK_COLON; break;
        case '=': kind = TK_ASSIGN; break;
        case '+': kind = TK_PLUS; break;
        case '*': kind = TK_STAR; break;
        case '/': kind = TK_SLASH; break;
        case '@': kind = TK_AT; break;
        case '-':
            kind = TK_MINUS;
            if (l.p < l.end && *l.p == '>') { l.p++; kind = TK_ARROW; }
            break;
        default: {
            /* A run of bytes that cannot start a token is one error, not one per byte. */
            while (l.p < l.end) {
                int b = (unsigned char)*l.p;
                if (isspace(b) || is_ident_start(b) || isdigit(b) || (b && strchr("(){}[],:=+-*/@\"#", b))) break;
                l.p++;
            }
            Span sp = span_at(&l, start, l.p);
            int n = utf8_len(start, l.end);
            if (isprint(c))
                diag_error(d, sp, "unexpected character '%c'", c);
            else if (n == 3 && memcmp(start, "\xe2\x80", 2) == 0 && (unsigned char)start[2] >= 0x98 &&
                     (unsigned char)start[2] <= 0x9d) /* U+2018 to U+201D: curly quotes */
                diag_error(d, sp, "unexpected character '%.*s' (write straight quotes: \")", n, start);
            else if (n)
                diag_error(d, sp, "unexpected character '%.*s'", n, start);
            else
                diag_error(d, sp, "unexpected byte 0x%02x (is this a text file?)", c);
            l.glued = 0;
            continue;
        }
        }
        push(&l, kind, start);
    }
    l.glued = 0;
    push(&l, TK_EOF, l.p);
    return (TokenList){l.toks, l.len};
}
