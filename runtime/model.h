/* The model descriptor: the one contract between the compiler and the runtime.
 *
 * A compiled model is machine code for a few entry points plus a manifest, a
 * short text the compiler writes and the runtime reads: where every input,
 * target, param, gradient, optimizer slot, state and metric lives in the
 * memory slab, how each param starts, and the train block's recipe. The JIT
 * (`seqc run`) hands the runtime the manifest and the entry points it looked
 * up; an executable (`seqc compile`) carries them as data in its object file.
 * Both go through rt_model_parse, so the two behave the same.
 *
 * Variants: the training step is compiled for the recipe's batch; a second
 * variant for batch 1, forward only, generates text, predicts and evaluates
 * the examples that do not fill a whole batch. For a stateful model that
 * variant reads one step at a time, so it can carry its state token by token.
 *
 * Manifest grammar (one record per line, fields separated by one space;
 * strings percent-encoded, so a path may hold spaces; `-` is no string):
 *     seqc-model 1
 *     model NAME SOURCE stateful(0|1) vocab(N)
 *     recipe OPT lr batch epochs seed bptt_every bptt_window validate VALIDATE_PATH shuffle
 *     data KIND PATH PATH2 word lower letters pad_post truncate_post column header
 *     variant NAME batch slab nodes forward loss
 *     input|target NAME DTYPE batched rank d0 d1 d2 d3 at
 *     param NAME DTYPE rank d0 d1 d2 d3 at grad slot0 slot1 trainable INIT a0 a1 units VECTORS
 *     update var value bytes state(0|1)
 *     metric NAME at
 *     output NAME DTYPE batched rank d0 d1 d2 d3 at
 *     end
 * Offsets are bytes into the slab; -1 is none. Numbers are decimal (doubles
 * as %.17g, so they read back exactly). */
#ifndef SEQC_RUNTIME_MODEL_H
#define SEQC_RUNTIME_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "data.h"

#define RT_MODEL_VERSION 1
#define RT_MODEL_MAX_RANK 4
#define RT_MODEL_ERROR_BYTES 512

/* The entry points, as codegen.h describes them. */
typedef void (*RtStepFn)(uint8_t *slab, int32_t training, uint64_t dropout_seed, int32_t upto);
typedef void (*RtUpdateFn)(uint8_t *slab, uint64_t step, double lr);

/* What a compiled model hands the runtime. */
typedef struct RtModelCode {
    const char *manifest;
    RtStepFn train_step;
    RtUpdateFn train_update;    /* NULL for a model without a loss */
    RtStepFn infer_step;        /* the batch-1 variant */
} RtModelCode;

typedef struct RtTensor {
    char *name;
    RtDType dtype;
    bool batched;
    int rank;
    int64_t dims[RT_MODEL_MAX_RANK];    /* per example */
    int64_t elems;                      /* per example */
    int64_t at;                         /* byte offset in the slab */
} RtTensor;

typedef struct RtParam {
    RtTensor t;
    int64_t grad;           /* offset of its gradient, or -1 */
    int64_t slot[2];        /* optimizer state, or -1 */
    bool trainable;
    char *init;             /* an initializer's name (init.h) */
    double args[2];
    int64_t units;
    char *vectors;          /* a word-vector file for the rows the vocabulary knows, or NULL */
} RtParam;

typedef struct RtUpdate {
    int64_t var, value, bytes;
    bool state;             /* a stateful layer's carried state (else statistics, moved in training only) */
} RtUpdate;

typedef struct RtMetric {
    char *name;
    int64_t at;
} RtMetric;

typedef struct RtVariant {
    char *name;
    int64_t batch, slab_bytes;
    int32_t nodes, forward;         /* `upto` for a training step; for the forward pass */
    int64_t loss;                   /* offset of the f32 loss, or -1 */
    int ninputs, ntargets, nparams, nupdates, nmetrics;
    RtTensor *inputs, *targets, output;
    RtParam *params;
    RtUpdate *updates;
    RtMetric *metrics;
    RtStepFn step;
    RtUpdateFn update;
} RtVariant;

typedef enum { RT_OPT_SGD, RT_OPT_RMSPROP, RT_OPT_ADAM } RtOptKind;
typedef enum { RT_SRC_NONE, RT_SRC_TEXT, RT_SRC_TSV, RT_SRC_CSV, RT_SRC_NPY } RtSourceKind;

typedef struct RtRecipe {
    RtOptKind opt;
    double lr;
    int64_t batch, epochs, seed, bptt_every, bptt_window;
    double validate;            /* fraction held out, 0: none */
    char *validate_path;        /* or a file, NULL */
    bool shuffle;
    RtSourceKind data;
    char *path, *path2;         /* as resolved when compiling (NULL: none) */
    bool word_level, lower, letters_only, pad_post, truncate_post, header;
    int64_t column;
} RtRecipe;

typedef struct RtModel {
    char *name, *source;
    bool stateful;
    int64_t vocab;              /* rows of the embedding the first input feeds; 0: none */
    RtRecipe recipe;
    RtVariant train, infer;
} RtModel;

typedef struct RtModelError {
    char msg[RT_MODEL_ERROR_BYTES];
} RtModelError;

/* Reads the manifest and binds the entry points. Returns false with a
 * message when the manifest is malformed or of another version. */
bool rt_model_parse(const RtModelCode *code, RtModel *out, RtModelError *err);
void rt_model_free(RtModel *m);

/* A zeroed slab of v->slab_bytes, 64-byte aligned; NULL when out of memory. */
uint8_t *rt_slab_new(const RtVariant *v);
void rt_slab_free(uint8_t *slab);

/* Fills every param of the variant from its initializer: param i draws from
 * (seed, stream i), as the reference interpreter does. */
bool rt_model_init_params(const RtVariant *v, uint8_t *slab, uint64_t seed, RtModelError *err);
/* Copies every param (and, when `states`, every update variable) from one
 * variant's slab to another's; the variants come from one model. */
void rt_model_copy_params(const RtVariant *from, const uint8_t *src, const RtVariant *to, uint8_t *dst);
/* After a step: every update's value into its var (statistics only when training). */
void rt_model_apply_updates(const RtVariant *v, uint8_t *slab, bool training);
/* Every carried state to zero (the start of a stream). */
void rt_model_reset_states(const RtVariant *v, uint8_t *slab);
/* Bytes of one tensor for the whole batch. */
int64_t rt_tensor_bytes(const RtVariant *v, const RtTensor *t);

/* The manifest's string encoding: bytes other than printable ASCII, space
 * and % become %XX. The result is malloc'd. */
char *rt_model_encode(const char *s);

/* The command line shared by `seqc run` and compiled executables:
 * PROG train|eval|predict|sample|embeddings|plot|info [options]. `fixed`
 * names the settings compiled in that the command line may not change
 * (an executable's batch and bptt window); see cli.c. */
int rt_main(const RtModelCode *code, const char *prog, int argc, char **argv);

#endif
