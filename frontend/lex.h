/* Lexer: the whole source becomes an array of tokens before parsing, so the
 * parser can look ahead freely. Newlines are whitespace; each token records
 * whether it starts a line, which the parser uses to resynchronise after an
 * error. */
#ifndef SEQC_LEX_H
#define SEQC_LEX_H

#include <stdint.h>

#include "arena.h"
#include "diag.h"

#define TOKEN_KINDS(X)            \
    X(TK_EOF, "end of file")       \
    X(TK_IDENT, "name")            \
    X(TK_INT, "integer")           \
    X(TK_FLOAT, "number")          \
    X(TK_STRING, "string")         \
    X(TK_LPAREN, "'('")            \
    X(TK_RPAREN, "')'")            \
    X(TK_LBRACE, "'{'")            \
    X(TK_RBRACE, "'}'")            \
    X(TK_LBRACKET, "'['")          \
    X(TK_RBRACKET, "']'")          \
    X(TK_COMMA, "','")             \
    X(TK_COLON, "':'")             \
    X(TK_ASSIGN, "'='")            \
    X(TK_PLUS, "'+'")              \
    X(TK_MINUS, "'-'")             \
    X(TK_STAR, "'*'")              \
    X(TK_SLASH, "'/'")             \
    X(TK_AT, "'@'")                \
    X(TK_ARROW, "'->'")            \
    X(TK_KW_MODEL, "'model'")      \
    X(TK_KW_CELL, "'cell'")        \
    X(TK_KW_TRAIN, "'train'")      \
    X(TK_KW_IMPORT, "'import'")    \
    X(TK_KW_EXTERN, "'extern'")

typedef enum {
#define X(k, s) k,
    TOKEN_KINDS(X)
#undef X
} TokenKind;

typedef struct Token {
    TokenKind kind;
    Span span;
    unsigned bol : 1;       /* first token on its line */
    unsigned glued : 1;     /* no whitespace before it (lets `4H` mean 4*H in shapes) */
    int64_t ival;           /* TK_INT */
    double fval;            /* TK_INT and TK_FLOAT */
    const char *text;       /* TK_IDENT: the name; TK_STRING: the decoded contents */
} Token;

typedef struct TokenList {
    Token *items;
    int len;
} TokenList;

/* Tokens are allocated in `arena`; errors go to `d`. Always ends with TK_EOF. */
TokenList lex_source(Arena *arena, const Source *src, Diags *d);
const char *lex_kind_name(TokenKind k);

#endif
