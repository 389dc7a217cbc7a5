/* Training and evaluation: Keras' fit and evaluate over a compiled step.
 *
 * A training step: write a batch into the slab, run forward and backward,
 * check the loss and gradients are finite, apply the optimizer's update, then
 * the graph's updates (moving statistics, carried states). The compiled batch
 * is fixed, so training leaves out the examples that do not fill a last batch
 * (different ones each epoch when shuffling); evaluation counts every example,
 * running the leftovers through the batch-1 variant. */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"
#include "session.h"
#include "vectors.h"

void rt_fail(const RtSession *s, const char *fmt, ...) {
    fprintf(stderr, "%s %s: ", s->prog, s->cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- data ---------------------------------------------------------------- */

static const RtTensor *only(const RtSession *s, const RtTensor *list, int n, const char *what) {
    if (n == 1) return list;
    rt_fail(s, "the runtime feeds models with one %s; '%s' has %d", what, s->m.name, n);
    return NULL;
}

/* The dataset's per-example shapes against the model's. */
static bool check_shapes(RtSession *s, const RtFeed *f) {
    const RtVariant *v = &s->m.train;
    const RtTensor *x = only(s, v->inputs, v->ninputs, "input"), *y = only(s, v->targets, v->ntargets, "target");
    if (!x || !y) return false;
    const RtDataset *d = &f->ds;
    if (d->in_dtype != x->dtype || d->in_size != x->elems) {
        rt_fail(s, "%s: each example has %lld %s input values; input '%s' takes %lld %s", f->name,
                (long long)d->in_size, d->in_dtype == RT_DATA_I32 ? "integer" : "real", x->name, (long long)x->elems,
                x->dtype == RT_DATA_I32 ? "integers" : "reals");
        return false;
    }
    if (d->tgt_dtype != y->dtype || d->tgt_size != y->elems) {
        rt_fail(s, "%s: each example has %lld %s target values; target '%s' takes %lld %s", f->name,
                (long long)d->tgt_size, d->tgt_dtype == RT_DATA_I32 ? "integer" : "real", y->name,
                (long long)y->elems, y->dtype == RT_DATA_I32 ? "integers" : "reals");
        return false;
    }
    return true;
}

static RtSourceKind kind_of(const RtSession *s, const char *path) {
    if (s->m.recipe.data != RT_SRC_NONE) return s->m.recipe.data;
    const char *dot = strrchr(path, '.');
    if (dot && strcmp(dot, ".tsv") == 0) return RT_SRC_TSV;
    if (dot && strcmp(dot, ".csv") == 0) return RT_SRC_CSV;
    if (strchr(path, ',')) return RT_SRC_NPY;
    if (dot && strcmp(dot, ".txt") == 0) return RT_SRC_TEXT;
    return RT_SRC_NONE;
}

/* Token ids of a text file, through the session's vocabulary (built from it
 * when the session has none yet). */
static bool text_ids(RtSession *s, const char *path, int32_t **ids, int64_t *n) {
    const RtRecipe *r = &s->m.recipe;
    RtTextOptions to = {.word_level = r->word_level, .lower = r->lower, .letters_only = r->letters_only};
    RtText text;
    RtDataError e;
    if (!rt_data_text_read(path, &to, &text, &e)) {
        rt_fail(s, "%s", e.msg);
        return false;
    }
    if (!s->has_vocab) {
        if (!rt_data_vocab_build(&text, &s->vocab, &e)) {
            rt_data_text_free(&text);
            rt_fail(s, "%s", e.msg);
            return false;
        }
        s->has_vocab = true;
        if (s->m.vocab && s->vocab.size > s->m.vocab && r->word_level) {
            /* Words: the most frequent that fit, as Keras' Tokenizer(num_words) does. */
            if (!s->o.quiet)
                printf("%s has %d distinct words; keeping the %lld most frequent (the embedding's vocab %lld, id 0 "
                       "for the others)\n", path, s->vocab.size - 1, (long long)s->m.vocab - 1, (long long)s->m.vocab);
            rt_data_vocab_truncate(&s->vocab, (int32_t)s->m.vocab);
        }
        if (s->m.vocab && s->vocab.size > s->m.vocab) {
            rt_fail(s, "%s has %d distinct %s (and id 0 is padding), but the model's embedding has vocab %lld: "
                    "write vocab: %d (or more) in %s", path, s->vocab.size - 1, r->word_level ? "words" : "characters",
                    (long long)s->m.vocab, s->vocab.size, s->m.source ? s->m.source : "the model");
            rt_data_text_free(&text);
            return false;
        }
    }
    int64_t unknown = 0;
    bool ok = rt_data_vocab_encode(&s->vocab, &text, ids, &unknown, &e);
    *n = text.count;
    rt_data_text_free(&text);
    if (!ok) rt_fail(s, "%s", e.msg);
    return ok;
}

/* Opens the data at `path` the way the recipe reads it. With a validation
 * fraction, training_split keeps the head and validation_split the tail. */
bool rt_feed_open(RtSession *s, const char *path, bool training_split, bool validation_split, RtFeed *out) {
    memset(out, 0, sizeof *out);
    out->name = path;
    const RtRecipe *r = &s->m.recipe;
    const RtVariant *v = &s->m.train;
    double fraction = s->o.validate > 0 ? s->o.validate : r->validate;
    if (s->o.validate_path || (!s->o.validate && r->validate_path) || s->o.no_validation) fraction = 0;
    const RtTensor *x = only(s, v->inputs, v->ninputs, "input");
    const RtTensor *y = only(s, v->targets, v->ntargets, "target");
    if (!x || !y) return false;
    RtDataError e;
    RtDataset all = {0};
    switch (kind_of(s, path)) {
    case RT_SRC_TEXT: {
        int32_t *ids;
        int64_t n;
        if (!text_ids(s, path, &ids, &n)) return false;
        int64_t lo = 0, hi = n;
        if (fraction > 0 && (training_split || validation_split)) {
            int64_t cut = rt_data_split_point(n, fraction);
            if (training_split) hi = cut;
            else lo = cut;
        }
        if (s->m.stateful) {
            out->stream = true;
            out->nids = hi - lo;
            out->ids = malloc(sizeof(int32_t) * (size_t)(out->nids > 0 ? out->nids : 1));
            if (!out->ids) {
                free(ids);
                rt_fail(s, "out of memory");
                return false;
            }
            memcpy(out->ids, ids + lo, sizeof(int32_t) * (size_t)out->nids);
            free(ids);
            int64_t window = x->rank ? x->dims[0] : 1;
            int64_t every = r->bptt_every > 0 && r->bptt_every < window ? r->bptt_every : window;
            if (!rt_data_stream_init(&out->st, path, out->ids, out->nids, v->batch, window, every, &e)) {
                rt_fail(s, "%s%s", e.msg, validation_split ? " (the validation part)" : "");
                rt_feed_free(out);
                return false;
            }
            out->ready = true;
            return true;
        }
        if (x->rank != 1 || y->elems != 1) {
            free(ids);
            rt_fail(s, "text data feeds windows of tokens (input i32[N]) and the next token (target i32[]); "
                    "input '%s' and target '%s' do not have those shapes", x->name, y->name);
            return false;
        }
        bool ok = rt_data_windows(path, ids + lo, hi - lo, x->dims[0], 1, &out->ds, &e);
        free(ids);
        if (!ok) {
            rt_fail(s, "%s", e.msg);
            return false;
        }
        break;
    }
    case RT_SRC_TSV: {
        RtTsvOptions to = {.maxlen = x->rank ? x->dims[0] : 1, .vocab = s->m.vocab ? s->m.vocab : INT32_MAX,
                           .pad_post = r->pad_post, .truncate_post = r->truncate_post};
        if (!rt_data_tsv_read(path, &to, &all, &e)) {
            rt_fail(s, "%s", e.msg);
            return false;
        }
        break;
    }
    case RT_SRC_CSV: {
        RtCsvOptions co = {.column = r->column, .header = r->header};
        float *vals;
        int64_t n;
        if (!rt_data_csv_read(path, &co, &vals, &n, &e)) {
            rt_fail(s, "%s", e.msg);
            return false;
        }
        bool ok = rt_data_series_windows(path, vals, n, x->rank ? x->dims[0] : 1, y->elems, 1, &all, &e);
        free(vals);
        if (!ok) {
            rt_fail(s, "%s", e.msg);
            return false;
        }
        break;
    }
    case RT_SRC_NPY: {
        /* inputs.npy,targets.npy on the command line; two paths in the recipe */
        char *in = strdup(path), *tg = NULL;
        if (!in) return false;
        char *comma = strchr(in, ',');
        if (comma) *comma = '\0', tg = comma + 1;
        else if (r->data == RT_SRC_NPY && strcmp(path, r->path ? r->path : "") == 0) tg = r->path2;
        if (!tg) {
            rt_fail(s, "%s: name the targets too: --data inputs.npy,targets.npy", path);
            free(in);
            return false;
        }
        bool ok = rt_data_npy_dataset(in, x->dtype, tg, y->dtype, &all, &e);
        free(in);
        if (!ok) {
            rt_fail(s, "%s", e.msg);
            return false;
        }
        break;
    }
    case RT_SRC_NONE:
        rt_fail(s, "%s: cannot tell how to read it; name the format in the train block "
                "(data: text(...), tsv(...), csv(...) or npy(...)) or use a .tsv, .csv or .txt file, or "
                "inputs.npy,targets.npy", path);
        return false;
    }
    if (all.count) {
        if (fraction > 0 && (training_split || validation_split)) {
            RtDataset tr, va;
            if (!rt_data_split_tail(&all, fraction, path, &tr, &va, &e)) {
                rt_data_dataset_free(&all);
                rt_fail(s, "%s", e.msg);
                return false;
            }
            /* A view of `all`: copy the part kept so the feed owns its data. */
            RtDataset *part = training_split ? &tr : &va;
            out->ds = *part;
            size_t in_b = 4 * (size_t)part->in_size, tg_b = 4 * (size_t)part->tgt_size;
            out->ds.inputs = malloc(in_b * (size_t)(part->count ? part->count : 1));
            out->ds.targets = malloc(tg_b * (size_t)(part->count ? part->count : 1));
            out->ds.owned = true;
            if (!out->ds.inputs || !out->ds.targets) {
                rt_data_dataset_free(&out->ds);
                rt_data_dataset_free(&all);
                rt_fail(s, "out of memory");
                return false;
            }
            memcpy(out->ds.inputs, part->inputs, in_b * (size_t)part->count);
            memcpy(out->ds.targets, part->targets, tg_b * (size_t)part->count);
            rt_data_dataset_free(&all);
        } else {
            out->ds = all;
        }
    }
    if (!check_shapes(s, out)) {
        rt_feed_free(out);
        return false;
    }
    if (out->ds.count == 0) {
        rt_fail(s, "%s: no examples%s", path, validation_split ? " in the validation part" : "");
        rt_feed_free(out);
        return false;
    }
    out->ready = true;
    return true;
}

void rt_feed_free(RtFeed *f) {
    if (f->b.order) rt_data_batcher_free(&f->b);
    rt_data_dataset_free(&f->ds);
    free(f->ids);
    memset(f, 0, sizeof *f);
}

/* ---- evaluation ---------------------------------------------------------- */

uint8_t *rt_infer_slab(RtSession *s) {
    if (!s->islab) {
        s->islab = rt_slab_new(&s->m.infer);
        if (!s->islab) {
            rt_fail(s, "out of memory");
            return NULL;
        }
    }
    rt_model_copy_params(&s->m.train, s->slab, &s->m.infer, s->islab);
    return s->islab;
}

static float read_f32(const uint8_t *slab, int64_t at) {
    float v;
    memcpy(&v, slab + at, sizeof v);
    return v;
}

/* Adds the loss and metrics of the step just run, weighted by `w` examples. */
static void accumulate(const RtVariant *v, const uint8_t *slab, double w, double *sum) {
    sum[0] += w * (v->loss >= 0 ? read_f32(slab, v->loss) : 0);
    for (int k = 0; k < v->nmetrics; k++) sum[1 + k] += w * read_f32(slab, v->metrics[k].at);
}

bool rt_evaluate(RtSession *s, RtFeed *f, double *out) {
    const RtVariant *v = &s->m.train;
    int nm = v->nmetrics;
    double *sum = calloc((size_t)nm + 1, sizeof *sum);
    if (!sum) return false;
    double count = 0;
    const RtTensor *x = &v->inputs[0], *y = &v->targets[0];
    if (f->stream) {
        /* The training state is put aside: validation streams start from zero. */
        rt_data_stream_rewind(&f->st);
        rt_model_reset_states(v, s->slab);
        while (rt_data_stream_next(&f->st, (int32_t *)(s->slab + x->at), (int32_t *)(s->slab + y->at))) {
            v->step(s->slab, 0, 0, v->forward);
            rt_model_apply_updates(v, s->slab, false);
            accumulate(v, s->slab, 1, sum);
            count += 1;
        }
        rt_model_reset_states(v, s->slab);
    } else {
        RtDataError e;
        if (!f->b.order && !rt_data_batcher_init(&f->b, &f->ds, v->batch, false, 0, RT_DATA_LAST_DROP, &e)) {
            rt_fail(s, "%s", e.msg);
            free(sum);
            return false;
        }
        rt_data_batcher_epoch(&f->b, 0);
        int64_t rows;
        while ((rows = rt_data_batcher_next(&f->b, s->slab + x->at, s->slab + y->at)) > 0) {
            v->step(s->slab, 0, 0, v->forward);
            accumulate(v, s->slab, (double)rows, sum);
            count += (double)rows;
        }
        /* The examples that do not fill a batch, one at a time. */
        const RtVariant *iv = &s->m.infer;
        int64_t first = f->b.batches * v->batch;
        uint8_t *islab = first < f->ds.count ? rt_infer_slab(s) : NULL;
        for (int64_t i = first; i < f->ds.count && islab; i++) {
            size_t xb = 4 * (size_t)f->ds.in_size, yb = 4 * (size_t)f->ds.tgt_size;
            memcpy(islab + iv->inputs[0].at, (uint8_t *)f->ds.inputs + (size_t)i * xb, xb);
            memcpy(islab + iv->targets[0].at, (uint8_t *)f->ds.targets + (size_t)i * yb, yb);
            iv->step(islab, 0, 0, iv->forward);
            accumulate(iv, islab, 1, sum);
            count += 1;
        }
    }
    for (int k = 0; k <= nm; k++) out[k] = count > 0 ? sum[k] / count : NAN;
    free(sum);
    return count > 0;
}

/* ---- progress ------------------------------------------------------------- */

#define BAR_WIDTH 30

static void print_values(FILE *f, const RtVariant *v, const double *vals, const char *prefix) {
    fprintf(f, " - %sloss: %.4f", prefix, vals[0]);
    for (int k = 0; k < v->nmetrics; k++) fprintf(f, " - %s%s: %.4f", prefix, v->metrics[k].name, vals[1 + k]);
}

static void format_time(char *buf, size_t n, double s) {
    if (s >= 3600) snprintf(buf, n, "%d:%02d:%02d", (int)(s / 3600), (int)(s / 60) % 60, (int)s % 60);
    else if (s >= 60) snprintf(buf, n, "%d:%02d", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%ds", (int)s);
}

/* Keras' progress bar: `12/50 [=====>....] - ETA: 3s - loss: 0.6931`. */
static void progress(const RtVariant *v, int64_t done, int64_t total, double elapsed, const double *running) {
    int filled = total > 0 ? (int)(BAR_WIDTH * done / total) : BAR_WIDTH;
    char bar[BAR_WIDTH + 1];
    for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < filled ? '=' : '.';
    if (filled > 0 && filled < BAR_WIDTH) bar[filled - 1] = '>';
    bar[BAR_WIDTH] = '\0';
    int w = snprintf(NULL, 0, "%lld", (long long)total);
    char eta[32];
    format_time(eta, sizeof eta, done > 0 ? elapsed / (double)done * (double)(total - done) : 0);
    printf("\r%*lld/%lld [%s] - ETA: %s", w, (long long)done, (long long)total, bar, eta);
    print_values(stdout, v, running, "");
    printf("\033[K");
    fflush(stdout);
}

/* ---- history -------------------------------------------------------------- */

static FILE *history_open(RtSession *s, const char *path, bool append, bool validation) {
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) {
        rt_fail(s, "cannot write the history %s", path);
        return NULL;
    }
    if (!append || ftell(f) == 0) {
        const RtVariant *v = &s->m.train;
        fputs("epoch,loss", f);
        for (int k = 0; k < v->nmetrics; k++) fprintf(f, ",%s", v->metrics[k].name);
        if (validation) {
            fputs(",val_loss", f);
            for (int k = 0; k < v->nmetrics; k++) fprintf(f, ",val_%s", v->metrics[k].name);
        }
        fputc('\n', f);
    }
    return f;
}

/* ---- training ------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
    (void)sig;
    interrupted = 1;
}

/* NaN or infinity anywhere in the gradients: an exponent of all ones. The
 * check is an OR over the elements in any order, in blocks the compiler
 * puts on vectors (a sum of x * 0 would be one chain of dependent adds),
 * a large gradient's elements split over the pool's threads. */
enum { FINITE_BLOCK = 16, FINITE_PART = 1 << 16, FINITE_MAX_PARTS = 64 };

static bool all_finite(const uint8_t *g, int64_t from, int64_t to) {
    const uint32_t EXP = 0x7f800000u;
    uint32_t bad[FINITE_BLOCK] = {0};
    int64_t k = from;
    for (; k + FINITE_BLOCK <= to; k += FINITE_BLOCK) {
        uint32_t u[FINITE_BLOCK];
        memcpy(u, g + 4 * k, sizeof u);
        for (int j = 0; j < FINITE_BLOCK; j++) bad[j] |= (u[j] & EXP) == EXP;
    }
    for (; k < to; k++) {
        uint32_t u;
        memcpy(&u, g + 4 * k, 4);
        bad[0] |= (u & EXP) == EXP;
    }
    for (int j = 0; j < FINITE_BLOCK; j++)
        if (bad[j]) return false;
    return true;
}

typedef struct FiniteTask {
    const uint8_t *g;
    int64_t n;
    bool ok[FINITE_MAX_PARTS];
} FiniteTask;

static void finite_part(void *ctx, int64_t part, int64_t nparts, void *scratch) {
    (void)scratch;
    FiniteTask *t = ctx;
    t->ok[part] = all_finite(t->g, t->n * part / nparts, t->n * (part + 1) / nparts);
}

static bool grads_finite(const RtVariant *v, const uint8_t *slab) {
    for (int i = 0; i < v->nparams; i++) {
        const RtParam *p = &v->params[i];
        if (p->grad < 0) continue;
        int64_t n = p->t.elems, parts = n / FINITE_PART;
        if (parts < 2) {
            if (!all_finite(slab + p->grad, 0, n)) return false;
            continue;
        }
        FiniteTask t = {.g = slab + p->grad, .n = n};
        for (int k = 0; k < FINITE_MAX_PARTS; k++) t.ok[k] = true;
        rt_parallel(finite_part, &t, parts < FINITE_MAX_PARTS ? parts : FINITE_MAX_PARTS, 0);
        for (int k = 0; k < FINITE_MAX_PARTS; k++)
            if (!t.ok[k]) return false;
    }
    return true;
}

static uint64_t dropout_seed(uint64_t seed, int64_t step) {
    return seed * 0x9E3779B97F4A7C15ull + (uint64_t)step + 1;
}

/* The next training batch into the slab; its row count, 0 at the epoch's end. */
static int64_t next_batch(RtSession *s, RtFeed *f) {
    const RtVariant *v = &s->m.train;
    uint8_t *x = s->slab + v->inputs[0].at, *y = s->slab + v->targets[0].at;
    if (f->stream) return rt_data_stream_next(&f->st, (int32_t *)x, (int32_t *)y) ? v->batch : 0;
    return rt_data_batcher_next(&f->b, x, y);
}

/* Pretrained embeddings: the rows of the tokens a word-vector file has, once
 * the vocabulary is known (a fresh run only: a resumed or --weights run has
 * its params already). */
static bool load_vectors(RtSession *s) {
    const RtVariant *v = &s->m.train;
    for (int i = 0; i < v->nparams; i++) {
        const RtParam *p = &v->params[i];
        if (!p->vectors) continue;
        if (!s->has_vocab) {
            rt_fail(s, "'%s' starts from the word vectors in %s, which are found by token: that needs text data "
                    "(data: text(...)), whose vocabulary maps tokens to rows", p->t.name, p->vectors);
            return false;
        }
        int64_t found = 0;
        RtDataError e;
        if (!rt_vectors_fill(p->vectors, &s->vocab, (float *)(s->slab + p->t.at), p->t.dims[1], &found, &e)) {
            rt_fail(s, "%s", e.msg);
            return false;
        }
        if (!s->o.quiet)
            printf("%s: %lld of %d tokens from %s\n", p->t.name, (long long)found, s->vocab.size - 1, p->vectors);
    }
    return true;
}

static int64_t batches_per_epoch(const RtFeed *f) { return f->stream ? f->st.windows : f->b.batches; }

int rt_train(RtSession *s) {
    RtModel *m = &s->m;
    RtVariant *v = &m->train;
    if (!v->update || v->loss < 0) {
        rt_fail(s, "model '%s' has no loss to train", m->name);
        return 1;
    }
    const char *path = s->o.data ? s->o.data : m->recipe.path;
    if (!path) {
        rt_fail(s, "no training data: the train block names none; pass --data FILE");
        return 2;
    }
    const char *vpath = s->o.validate_path ? s->o.validate_path : s->o.validate > 0 ? NULL : m->recipe.validate_path;
    RtFeed train = {0}, val = {0};
    int status = 1;
    FILE *hist = NULL;
    double *run = NULL, *mean = NULL, *vals = NULL;
    if (!rt_feed_open(s, path, true, false, &train)) goto done;
    if (!s->o.resume && !s->o.weights && !load_vectors(s)) goto done;
    if (s->o.no_validation) vpath = NULL;
    bool validation = !s->o.no_validation && (vpath || s->o.validate > 0 || (m->recipe.validate > 0 && !s->o.validate_path));
    if (validation && !rt_feed_open(s, vpath ? vpath : path, false, !vpath, &val)) goto done;
    if (!train.stream) {
        RtDataError e;
        if (!rt_data_batcher_init(&train.b, &train.ds, v->batch, m->recipe.shuffle, s->seed, RT_DATA_LAST_DROP, &e)) {
            rt_fail(s, "%s", e.msg);
            goto done;
        }
    }
    int64_t per_epoch = batches_per_epoch(&train);
    if (per_epoch == 0) {
        rt_fail(s, "%s holds fewer examples than one batch of %lld", path, (long long)v->batch);
        goto done;
    }
    int64_t epochs = s->o.epochs ? s->o.epochs : m->recipe.epochs;
    hist = history_open(s, s->o.history, s->o.resume, validation);
    if (!hist) goto done;
    int nv = 1 + v->nmetrics;
    run = calloc((size_t)nv, sizeof *run);
    mean = calloc((size_t)nv, sizeof *mean);
    vals = calloc((size_t)nv, sizeof *vals);
    if (!run || !mean || !vals) goto done;

    struct sigaction sa = {.sa_handler = on_interrupt}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    bool tty = isatty(fileno(stdout)) && !s->o.quiet;
    status = 0;
    for (int64_t epoch = s->epoch; epoch < epochs && status == 0; epoch++) {
        if (!s->o.quiet) printf("Epoch %lld/%lld\n", (long long)epoch + 1, (long long)epochs);
        if (train.stream) rt_data_stream_rewind(&train.st);
        else rt_data_batcher_epoch(&train.b, epoch);
        /* A stream starts from zero state each epoch, unless resuming mid-epoch. */
        if (s->batch_in_epoch == 0) rt_model_reset_states(v, s->slab);
        int64_t skip = s->batch_in_epoch;
        for (int64_t k = 0; k < skip; k++) next_batch(s, &train);
        memset(run, 0, sizeof *run * (size_t)nv);
        double t0 = now_s(), last_draw = 0;
        int64_t done = 0;
        while (next_batch(s, &train) > 0) {
            v->step(s->slab, 1, dropout_seed(s->seed, s->step), v->nodes);
            float loss = read_f32(s->slab, v->loss);
            if (!isfinite(loss) || !grads_finite(v, s->slab)) {
                if (tty) putchar('\n');
                rt_fail(s, "the %s is not finite at step %lld (epoch %lld, batch %lld); training stopped. %s",
                        isfinite(loss) ? "gradient" : "loss", (long long)s->step + 1, (long long)epoch + 1,
                        (long long)s->batch_in_epoch + 1,
                        s->epoch > 0 || s->step > 0 ? "The last checkpoint written is kept; try a lower --lr."
                                                    : "Try a lower --lr.");
                status = 1;
                break;
            }
            s->step++;
            v->update(s->slab, (uint64_t)s->step, s->lr);
            rt_model_apply_updates(v, s->slab, true);
            s->batch_in_epoch++;
            done++;
            accumulate(v, s->slab, 1, run);
            double t = now_s();
            if (tty && (t - last_draw > 0.05 || s->batch_in_epoch == per_epoch)) {
                for (int k = 0; k < nv; k++) mean[k] = run[k] / (double)done;
                progress(v, s->batch_in_epoch, per_epoch, t - t0, mean);
                last_draw = t;
            }
            if (interrupted) break;
        }
        if (status) break;
        if (interrupted) {
            if (tty) putchar('\n');
            bool saved = rt_checkpoint_save(s, s->checkpoint);
            fprintf(stderr, "%s train: interrupted after step %lld (epoch %lld, batch %lld)%s%s%s\n", s->prog,
                    (long long)s->step, (long long)epoch + 1, (long long)s->batch_in_epoch,
                    saved ? "; checkpoint written to " : "", saved ? s->checkpoint : "",
                    saved ? "; continue with --resume" : "");
            status = saved ? 130 : 1;
            break;
        }
        double elapsed = now_s() - t0;
        for (int k = 0; k < nv; k++) run[k] = done ? run[k] / (double)done : NAN;
        bool have_val = validation && rt_evaluate(s, &val, vals);
        s->epoch = epoch + 1;
        s->batch_in_epoch = 0;
        char took[32];
        format_time(took, sizeof took, elapsed);
        if (tty) printf("\r%lld/%lld [==============================] - %s %.0fms/step", (long long)per_epoch,
                        (long long)per_epoch, took, done ? 1e3 * elapsed / (double)done : 0.0);
        else if (!s->o.quiet) printf("%lld/%lld - %s - %.0fms/step", (long long)per_epoch, (long long)per_epoch, took,
                                     done ? 1e3 * elapsed / (double)done : 0.0);
        if (!s->o.quiet) {
            print_values(stdout, v, run, "");
            if (have_val) print_values(stdout, v, vals, "val_");
            printf("%s\n", tty ? "\033[K" : "");
            fflush(stdout);
        }
        fprintf(hist, "%lld", (long long)s->epoch);
        for (int k = 0; k < nv; k++) fprintf(hist, ",%.9g", run[k]);
        for (int k = 0; validation && k < nv; k++) {
            if (have_val) fprintf(hist, ",%.9g", vals[k]);
            else fputc(',', hist);
        }
        fputc('\n', hist);
        fflush(hist);
        if (!rt_checkpoint_save(s, s->checkpoint)) status = 1;
    }
    sigaction(SIGINT, &old, NULL);
done:
    if (hist && fclose(hist) != 0) {
        rt_fail(s, "cannot write the history %s", s->o.history);
        status = 1;
    }
    free(run);
    free(mean);
    free(vals);
    rt_feed_free(&train);
    rt_feed_free(&val);
    return status;
}

int rt_eval(RtSession *s) {
    const RtRecipe *r = &s->m.recipe;
    const char *path = s->o.data;
    bool split = false;
    if (!path && (s->o.validate_path || r->validate_path)) path = s->o.validate_path ? s->o.validate_path : r->validate_path;
    if (!path && r->path && (s->o.validate > 0 || r->validate > 0)) path = r->path, split = true;
    if (!path) {
        rt_fail(s, "no data to evaluate: pass --data FILE (the train block names no validation data)");
        return 2;
    }
    if (s->m.train.loss < 0) {
        rt_fail(s, "model '%s' has no loss to evaluate", s->m.name);
        return 1;
    }
    RtFeed f;
    if (!rt_feed_open(s, path, false, split, &f)) return 1;
    const RtVariant *v = &s->m.train;
    double *vals = calloc((size_t)v->nmetrics + 1, sizeof *vals);
    int status = 1;
    if (vals && rt_evaluate(s, &f, vals)) {
        printf("%s%s: loss: %.4f", path, split ? " (validation part)" : "", vals[0]);
        for (int k = 0; k < v->nmetrics; k++) printf(" - %s: %.4f", v->metrics[k].name, vals[1 + k]);
        putchar('\n');
        status = 0;
    }
    free(vals);
    rt_feed_free(&f);
    return status;
}
