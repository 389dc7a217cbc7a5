/* The syntax tree of a .seq file. Every node keeps its source span, so any
 * later stage can point at the user's text. Allocated in one arena. */
#ifndef SEQC_AST_H
#define SEQC_AST_H

#include <stdbool.h>
#include <stdint.h>

#include "diag.h"

typedef struct Expr Expr;

typedef enum { EX_NUMBER, EX_STRING, EX_NAME, EX_CALL, EX_BINARY, EX_NEG } ExprKind;

typedef struct Arg {
    const char *name;       /* NULL for a positional argument */
    Span name_span;
    Expr *value;
} Arg;

struct Expr {
    ExprKind kind;
    Span span;
    union {
        struct { double value; int64_t ival; bool is_int; } num;  /* EX_NUMBER */
        const char *str;                                          /* EX_STRING */
        const char *name;                                         /* EX_NAME */
        struct { const char *callee; Span callee_span; Arg *args; int nargs; } call;
        struct { char op; Expr *lhs, *rhs; } bin;                 /* op: + - * / @ */
        Expr *operand;                                            /* EX_NEG */
    };
};

/* `f32[20, 1]`, `i32[80]`, `[I, 4H]`. Dimensions are expressions over integers
 * and size names, evaluated when the model or cell is elaborated. */
typedef enum { DTYPE_NONE = -1, DTYPE_F32 = 0, DTYPE_I32 = 1 } AstDType;

typedef struct TypeExpr {
    Span span;
    AstDType dtype;
    Expr **dims;
    int ndims;
} TypeExpr;

typedef enum {
    ST_INPUT,   /* input x: f32[20, 1] */
    ST_TARGET,  /* target y: f32[20, 1] */
    ST_LET,     /* a, b = expr */
    ST_LOSS,    /* loss expr */
    ST_METRIC,  /* metric expr */
    ST_STATE,   /* state h: [units]          (cell) */
    ST_PARAM,   /* param W: [I, 4H] init e   (cell) */
    ST_OPTION,  /* option activation = tanh  (cell) */
    ST_ENTRY,   /* batch 100 / optimizer adam(lr: 0.01) / bptt(every: 20, window: 100)  (train) */
} StmtKind;

typedef struct Stmt {
    StmtKind kind;
    Span span;              /* the whole statement */
    const char **names;     /* ST_LET: one or more; others: names[0] */
    Span *name_spans;
    int nnames;
    TypeExpr *type;         /* ST_INPUT, ST_TARGET, ST_STATE, ST_PARAM */
    Expr *value;            /* ST_LET, ST_LOSS, ST_METRIC, ST_OPTION, ST_PARAM (initializer), ST_ENTRY */
} Stmt;

typedef enum { DECL_IMPORT, DECL_MODEL, DECL_CELL, DECL_TRAIN, DECL_EXTERN } DeclKind;

typedef struct CellInput {
    const char *name;
    Span span;
    TypeExpr *type;
} CellInput;

typedef struct Decl {
    DeclKind kind;
    Span span;              /* the keyword */
    const char *name;       /* model/cell name; train: the model it trains, or NULL */
    Span name_span;
    const char *path;       /* DECL_IMPORT; DECL_EXTERN: the library, as written */
    Span path_span;         /* DECL_EXTERN */
    Stmt **body;
    int nbody;
    CellInput *inputs;      /* DECL_CELL; DECL_EXTERN: its one parameter (no type) */
    int ninputs;
    const char *output;     /* DECL_CELL: the state it returns at each step */
    Span output_span;
    const char *grad;       /* DECL_EXTERN: the derivative's symbol, or NULL */
    Span grad_span;
    Span close;             /* the closing brace */
} Decl;

typedef struct Module {
    const Source *src;
    Decl **decls;
    int ndecls;
} Module;

#endif
