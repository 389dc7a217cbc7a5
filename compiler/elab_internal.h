/* Shared by the elaborator's three files: elab.c (names, expressions, models,
 * cells), builtins.c (the built-in layers and functions), train.c (recipes). */
#ifndef SEQC_ELAB_INTERNAL_H
#define SEQC_ELAB_INTERNAL_H

#include "elab.h"
#include "shape.h"

typedef struct Builtin Builtin;

typedef enum { V_ERROR, V_TENSOR, V_NUMBER, V_BOOL, V_STRING, V_FUNC, V_CELL, V_TUPLE } ValueKind;

/* What an expression evaluates to while elaborating. V_ERROR has been reported
 * already and silences whatever consumes it, so one mistake gives one message. */
typedef struct Value {
    ValueKind kind;
    Span span;
    union {
        Node *node;
        struct { double v; bool is_int; } num;
        bool b;
        const char *str;
        const Builtin *fn;
        const Decl *cell;
        struct { Node **items; int n; } tuple;
    };
} Value;

typedef enum {
    A_TENSOR,   /* a value in the graph (a number becomes a constant) */
    A_INT,      /* a whole number >= the spec's minimum */
    A_NUM,      /* a number */
    A_BOOL,
    A_FUNC,     /* an activation: linear, tanh, relu, ... */
    A_ENUM,     /* one of the words in `choices` ("forward|backward|both") */
    A_STRING,
    A_ANY,      /* a cell option: a number, a bool or a function */
} ArgType;

typedef struct ArgSpec {
    const char *name;
    ArgType type;
    const char *def;        /* default as written in the language; NULL: required */
    const char *choices;    /* A_ENUM */
    const char *help;       /* a few words for "missing argument" messages */
    double min, max;        /* A_INT / A_NUM range, when max > min */
    bool max_open;          /* the range excludes max */
} ArgSpec;

#define SEQC_MAX_ARGS 24

typedef struct Args {
    Value v[SEQC_MAX_ARGS];
    bool given[SEQC_MAX_ARGS];
    Span at[SEQC_MAX_ARGS];     /* the argument's expression, or the call for a default */
    int nextra;                 /* variadic tensors after the specs (concat) */
    Value extra[SEQC_MAX_ARGS];
} Args;

typedef enum {
    BI_ACTIVATION,  /* unary, elementwise; can be passed as a value */
    BI_LAYER,       /* creates params: model level only */
    BI_OP,          /* pure */
    BI_LOSS,
    BI_METRIC,
    BI_CELL_ONLY,   /* drop_input, drop_state */
} BuiltinKind;

typedef struct Elab Elab;

struct Builtin {
    const char *name;
    BuiltinKind kind;
    const char *keras;          /* the Keras layer it corresponds to, for summary */
    bool variadic;              /* extra positional tensors (concat) */
    ArgSpec args[8];
    Value (*fn)(Elab *E, const Builtin *b, Args *a, Span at);
};

typedef struct Scope Scope;
typedef struct CellCtx CellCtx;

struct Elab {
    Program *prog;
    Diags *d;
    Arena *arena;           /* graph arena */
    Graph *model;           /* the model graph */
    Graph *g;               /* where nodes go now: the model or a scan body */
    Scope *scope;
    CellCtx *cell;          /* the cell instance being elaborated, or NULL */
    const char *layer_name; /* the statement's name, for naming params */
    const char *row_kind;   /* Keras class of the statement's layer */
    int layers_in_stmt;
    bool check_only;        /* sample instantiation of a cell: warn about unused names */
    PtrVec cells;           /* every cell of the program (const Decl*) */
    PtrVec broken_cells;    /* cells whose errors were reported already */
    PtrVec externs;         /* every loaded extern of the program (Extern*), sorted by name */
    int64_t steps;          /* ElabOptions.steps */
    int64_t declared_steps; /* the first sequence input's declared length */
};

/* Names: one table per block (a model's or a cell's); globals (cells,
 * built-ins) are looked up after it. */
/* BK_NEW_STATE: the new value of a state, assigned in a cell's step; it
 * shadows the BK_STATE binding of the same name. */
typedef enum { BK_VALUE, BK_INPUT, BK_TARGET, BK_STATE, BK_NEW_STATE, BK_PARAM, BK_OPTION, BK_SIZE } BindKind;

typedef struct Binding {
    const char *name;
    Span def;
    BindKind kind;
    Value v;
    bool used;
    int index;              /* BK_STATE, BK_NEW_STATE: which state */
    struct Binding *next;   /* hash chain */
    struct Binding *order;  /* definition order, for the unused-name pass */
} Binding;

/* A scope is one block's names (a model's or a cell's): blocks do not nest, so
 * there is no parent; globals (cells, built-ins) are looked up after it. The
 * table grows with the block: a generated file may define 100,000 names. */
struct Scope {
    Binding **buckets;
    unsigned nbuckets, count;   /* nbuckets: 0 or a power of two */
    Binding *first, *last;
    const Decl *block;          /* the statements, to explain a name used before its definition */
    const Stmt *current;        /* the statement being elaborated */
};

typedef struct Size {
    const char *name;
    int64_t value;      /* 0: not bound yet */
    Span from;
} Size;

typedef struct SizeEnv {
    Size items[32];
    int n;
} SizeEnv;

/* A cell with more size names than this is surely a mistake. */
#define SEQC_MAX_SIZES 32

/* elab.c */
Binding *elab_scope_find(Scope *s, const char *name);
Binding *elab_scope_add(Elab *E, const char *name, Span def, BindKind kind, Value v);
const Decl *elab_find_cell(Elab *E, const char *name);
Value elab_number(double v, bool is_int, Span at);
const char *elab_describe_node(Elab *E, const Node *n);
const char *elab_kind_word(ValueKind k);
bool elab_reserved_name(Elab *E, const char *name, Span at);
Size *elab_size_find(SizeEnv *env, const char *name);
bool elab_eval_dim(Elab *E, const Expr *e, SizeEnv *env, int64_t *out);
bool elab_type_from_ast(Elab *E, const TypeExpr *te, SizeEnv *env, bool batched, Type *out);

/* cells.c */
Value elab_scan_layer(Elab *E, const Decl *cell, const Expr *call);
void elab_check_cell(Elab *E, const Decl *c);
Value elab_expr(Elab *E, const Expr *e);
Value v_error(void);
Value v_tensor(Node *n, Span at);
Node *elab_node(Elab *E, OpKind op, Span at, int nin, Node **in);   /* NULL: reported */
Node *elab_const(Elab *E, double v, Span at);
Node *elab_param(Elab *E, const char *name, const Type *t, InitSpec init, bool trainable, Span at);
const char *elab_layer_name(Elab *E, Span at);
bool elab_bind_args(Elab *E, const char *fname, const ArgSpec *specs, int nspecs, bool variadic, const Expr *call,
                    Args *out);
int elab_arg_index(const ArgSpec *specs, int nspecs, const char *name);
const char *elab_suggest(const char *name, const char *const *cands, int n);
Value elab_call_func(Elab *E, const Builtin *fn, Node *x, Span at);   /* apply an activation */

/* builtins.c */
const Builtin *builtin_find(const char *name);
int builtin_names(const char **names, int max);
Value builtin_call(Elab *E, const Builtin *b, const Expr *call);
bool builtin_init_spec(Elab *E, const Expr *e, const Type *t, InitSpec *out);
bool builtin_is_activation(const Builtin *b);

/* An `extern` declaration whose library and symbols were found. It is called
 * like an activation: `builtin` is its row, so a name that refers to it is a
 * V_FUNC like `tanh` (dense(h, units: 4, activation: swish) works). */
typedef struct Extern {
    Builtin builtin;        /* first: builtin_call hands a Builtin* back to its function */
    const Decl *decl;
    ExternFn fn, grad;      /* grad.fn is NULL when the declaration has no `grad` */
} Extern;

/* Loads the library of every extern of the program (dlopen, then dlsym of the
 * function and its derivative), reporting what cannot be found at the
 * declaration, and fills E->externs. */
void elab_load_externs(Elab *E);
const Extern *elab_find_extern(Elab *E, const char *name);

/* train.c */
void train_elab(Elab *E, const Decl *block, TrainRecipe *r);

/* The cell instance being elaborated: the layer's dropout rates, for
 * drop_input/drop_state, and the masks they draw outside the scan. */
struct CellCtx {
    const Decl *decl;
    double dropout, recurrent_dropout;
    bool used_drop_input, used_drop_state;
    Span call;
    Node *masks[8];         /* DROPMASK nodes in the model graph, captured after the params */
    int nmasks, first_mask_capture;
};

/* A dropout mask of the step type `t`, drawn once per sequence in the model
 * graph; returns the body's CAPTURE of it. */
Node *cell_capture_dropmask(Elab *E, const Type *t, double rate, Span at);

#endif
