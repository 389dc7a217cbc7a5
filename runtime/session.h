/* A run of a compiled model: the model, its slabs, its vocabulary, its data,
 * and the command line's settings. One session per command; cli.c makes it,
 * fit.c trains and evaluates with it, checkpoint.c saves and restores it,
 * infer.c samples, predicts and prints embeddings.
 *
 * Messages: every failure is reported once, on stderr, as `PROG COMMAND: ...`
 * naming the file (and row) at fault, by the function that found it; callers
 * just return the failure. */
#ifndef SEQC_RUNTIME_SESSION_H
#define SEQC_RUNTIME_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "model.h"

typedef struct RtOptions {
    int64_t epochs, batch, bptt, seed;   /* 0 (seed: -1): the recipe's */
    double lr, validate;                 /* 0: the recipe's */
    const char *data, *validate_path;
    const char *checkpoint, *weights, *history;
    bool resume, quiet;
    bool no_validation;                  /* --validate 0 */
    /* sample */
    const char *prime;
    int64_t length, top_k;
    double temperature;
    int64_t threads;                     /* 0: one per core */
} RtOptions;

/* Where the examples of one pass come from: whole examples in a dataset, or
 * a stream cut into windows (stateful models). */
typedef struct RtFeed {
    bool stream;
    RtDataset ds;
    RtBatcher b;
    RtStream st;
    int32_t *ids;           /* the stream's tokens (owned) */
    int64_t nids;
    const char *name;       /* the file, for messages */
    bool ready;
} RtFeed;

typedef struct RtSession {
    const char *prog, *cmd;
    RtModel m;
    uint8_t *slab;          /* the training variant's */
    uint8_t *islab;         /* the batch-1 variant's, made on first use */
    RtVocab vocab;
    bool has_vocab;
    RtOptions o;
    uint64_t seed;
    int64_t step;           /* optimizer steps done */
    int64_t epoch;          /* epochs done */
    int64_t batch_in_epoch; /* batches of the current epoch done (an interrupted run) */
    double lr;
    char *checkpoint;       /* the path checkpoints go to */
} RtSession;

void rt_fail(const RtSession *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* fit.c */
bool rt_feed_open(RtSession *s, const char *path, bool training_split, bool validation_split, RtFeed *out);
void rt_feed_free(RtFeed *f);
int rt_train(RtSession *s);
int rt_eval(RtSession *s);
/* Mean loss and metrics over a feed, in inference mode; out[0] the loss,
 * out[1 + k] metric k. False when the feed holds no example. */
bool rt_evaluate(RtSession *s, RtFeed *f, double *out);
/* The batch-1 slab, made on first use, with the training slab's params. */
uint8_t *rt_infer_slab(RtSession *s);

/* checkpoint.c */
bool rt_checkpoint_save(RtSession *s, const char *path);
/* Restores params (and, when `training_state`, optimizer slots, states and
 * counters) and the vocabulary. */
bool rt_checkpoint_load(RtSession *s, const char *path, bool training_state);

/* infer.c */
int rt_sample(RtSession *s);
int rt_predict(RtSession *s);
int rt_embeddings(RtSession *s);

#endif
