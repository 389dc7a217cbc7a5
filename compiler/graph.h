/* The graph IR: a static dataflow graph with a shape and dtype on every value.
 * Shapes are per example; a batched value has an implicit leading batch axis
 * of size graph->batch. Recurrence is a SCAN of a body graph over axis 0 (time)
 * of its sequence inputs. Nodes live in the graph's arena and are appended in
 * topological order: a node's inputs always come before it. */
#ifndef SEQC_GRAPH_H
#define SEQC_GRAPH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "diag.h"

typedef enum {
#define OP(e, name, nin) OP_##e,
#include "ops.def"
#undef OP
    OP_COUNT
} OpKind;

typedef enum { DT_F32, DT_I32 } DType;

/* Per-example rank: a sequence of feature vectors is [T, F]; a fifth axis has
 * no use in the models this language describes. */
#define SEQC_MAX_RANK 4
/* One dimension, and the element count of one tensor, stay below 2^31 so that
 * generated code may index with 32-bit integers. */
#define SEQC_MAX_ELEMENTS ((int64_t)1 << 31)

typedef struct Type {
    DType dtype;
    int rank;
    int64_t dims[SEQC_MAX_RANK];
    bool batched;
} Type;

typedef struct Graph Graph;
typedef struct Node Node;

/* A function `float name(float)` from a user's shared library (an `extern`
 * declaration), loaded by the elaborator: the interpreter calls `fn`, the
 * generated code calls the symbol `name`. The library stays loaded for the
 * life of the process. */
typedef struct ExternFn {
    const char *name;           /* the symbol, as the library exports it */
    const char *library;        /* the path or soname dlopen was given */
    float (*fn)(float);
    const struct ExternFn *grad;/* its derivative, float grad(float x) = d name/dx at x; NULL: none declared */
    Span decl;                  /* the declaration (for the derivative: its name after `grad`) */
} ExternFn;

typedef enum { ROLE_INPUT, ROLE_TARGET } InputRole;
typedef enum { ACC_BINARY, ACC_SPARSE, ACC_CATEGORICAL } AccuracyKind;

/* An initializer as data: the runtime fills the tensor from it. */
typedef struct InitSpec {
    const char *kind;   /* glorot_uniform, orthogonal, zeros, ones, uniform, constant, lstm_bias, ... */
    double args[2];     /* uniform: min, max; constant: value; lstm_bias: forget value; orthogonal: gain */
    int64_t units;      /* lstm_bias: units */
    /* An embedding's word-vector file (word2vec/GloVe text), or NULL. The
     * runtime overwrites the rows of the tokens the file has, after the fill
     * above; the interpreter uses the fill alone. */
    const char *vectors;
} InitSpec;

struct Node {
    OpKind op;
    int id;
    Type type;
    Span span;              /* the source that created it */
    const char *name;       /* the user's name for it, or NULL */
    Node **in;
    int nin;
    Node *mask;             /* f32 [T]: steps that are real (mask_zero), propagated like Keras */
    Graph *graph;
    union {
        struct { InputRole role; int index; } input;
        struct { InitSpec init; bool trainable; const char *layer; } param;
        double constant;                                  /* OP_CONST */
        double rate;                                      /* OP_DROPMASK */
        int index;                                        /* STEP_IN, STATE_IN, CAPTURE, SCAN_OUT, PLACE_STEP */
        struct { int index; int64_t after; } scan_state;  /* SCAN_STATE: state `index` after `after` steps */
        struct { int64_t start, len; } slice;             /* SLICE, SLICE_GRAD, TIME_SLICE, TIME_PAD */
        struct { double momentum, epsilon; } batchnorm;
        struct {
            Graph *body;        /* outputs: nstate next states, then nout per-step outputs */
            int nseq, nstate, ncapture, nout;
            bool reverse;       /* walk from the last step to the first */
            bool sequences;     /* output 0 at every step (else at the last step walked) */
            bool stateful;
            int64_t keep_begin, keep_end;   /* the steps (time indices) the extra outputs keep */
            int64_t walk_begin, walk_end;   /* the steps (time indices) walked; walk_end 0: all of them */
            const char *cell;
        } scan;
        struct { OpKind loss; bool from_logits; } loss;   /* BCE, SCE, CCE, MSE, LOSS_GRAD */
        AccuracyKind accuracy;
        OpKind act;                                       /* ACT_GRAD */
        const ExternFn *ext;                              /* EXTERN */
    };
};

/* A row of `seqc summary`: one statement of the model. */
typedef struct Layer {
    const char *name;
    const char *kind;       /* Keras' class name: LSTM, Dense, ... */
    Node *out;
    Span span;
    int64_t trainable, nontrainable;
} Layer;

/* A state value that must be written back after each batch (batchnorm moving
 * statistics, a stateful layer's last state). */
typedef struct Update {
    Node *var, *value;
} Update;

struct Graph {
    Arena *arena;           /* shared by a model graph and its scan bodies */
    Graph *parent;          /* a scan body's enclosing graph */
    const char *name;
    int64_t batch;          /* model graphs; a scan body uses its model's */
    PtrVec nodes;
    PtrVec outputs;         /* scan body: new states in order, then the step output */
    /* model graphs */
    PtrVec inputs, targets, params, layers, metrics, updates;
    PtrVec grads;           /* after autodiff: d(loss)/d(params[i]), NULL where none */
    int nforward;           /* after autodiff: nodes [0, nforward) are the forward pass */
    Node *loss;
    Node *output;           /* the last value the model computes */
};

const char *op_name(OpKind op);
int op_arity(OpKind op);        /* -1: variadic */

Graph *graph_new(Arena *arena, Graph *parent, const char *name);
/* Appends a node with the given inputs; its type is left for shape_infer. */
Node *graph_add(Graph *g, OpKind op, Span span, int nin, Node **in);
/* `to` takes everything of `from` but its place (id, graph), its inputs and
 * its mask: a copy of a node on other inputs, or in another graph. */
void node_copy_payload(Node *to, const Node *from);
/* A copy of `like` in g, on inputs in[0 .. nin). */
Node *graph_add_like(Graph *g, const Node *like, int nin, Node **in);

/* True when a scan of g carries its state from one batch to the next. */
bool graph_is_stateful(const Graph *g);

int64_t type_elements(const Type *t);   /* per example */
/* How many times each node of g (by id) is read: as an input of g's nodes,
 * as a body's output, and as the graph's loss, output, metric, gradient or
 * state update. In the arena. */
int *graph_uses(const Graph *g, Arena *a);
/* The steps a scan walks: how many, and the time index of the first (the
 * lowest, whichever way it walks). */
int64_t scan_walked(const Node *scan, int64_t *first);
/* The flops of g's matrix products at this batch, 2 M N K each, every step
 * of every scan. */
double graph_matmul_flops(const Graph *g, int64_t batch);
bool type_equal(const Type *a, const Type *b);
/* `f32[20, 8]` (per example), or with the batch axis as Keras shows it: `(None, 20, 8)`. */
char *type_str(Arena *a, const Type *t);
char *type_keras_str(Arena *a, const Type *t);

/* Checks the invariants every pass relies on; returns false and prints the first
 * violation (an internal error, not a user error). */
bool graph_verify(const Graph *g, FILE *err);

/* Text: one node per line (`%7 = matmul %3, %6 : f32[32, 8]  # h`), scan
 * bodies indented under their scan. */
void graph_print(const Graph *g, FILE *out);

/* Graphviz dot: values, ops and shapes; scan bodies as clusters. */
void graph_dot(const Graph *g, FILE *out);

#endif
