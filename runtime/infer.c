/* Inference with the batch-1 variant: sample text, predict per line, print
 * the embedding matrix. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "session.h"

#define SAMPLE_STREAM ((uint64_t)0x534D504C00000000ull) /* "SMPL" */
#define LINE_BYTES (1 << 20)

/* The output's last row as probabilities: a softmax layer's output is used as
 * it is; anything else (logits) goes through a softmax first. */
static void last_probs(const RtVariant *v, const uint8_t *slab, int64_t vocab, double *p) {
    const float *out = (const float *)(slab + v->output.at) + (v->output.elems - vocab); /* the last step's row */
    double sum = 0, max = -INFINITY;
    bool probs = true;
    for (int64_t i = 0; i < vocab; i++) {
        sum += out[i];
        if (out[i] < 0) probs = false;
        if (out[i] > max) max = out[i];
    }
    if (probs && fabs(sum - 1) < 1e-3) {
        for (int64_t i = 0; i < vocab; i++) p[i] = out[i];
        return;
    }
    sum = 0;
    for (int64_t i = 0; i < vocab; i++) sum += p[i] = exp(out[i] - max);
    for (int64_t i = 0; i < vocab; i++) p[i] /= sum;
}

/* Draws an id from p with temperature and top-k; id 0 (padding) never. */
static int32_t draw(double *p, int64_t n, double temperature, int64_t top_k, RtRng *rng) {
    p[0] = 0;
    if (top_k > 0 && top_k < n) {
        /* The k-th largest: everything below it is dropped. */
        double *sorted = malloc(sizeof *sorted * (size_t)n);
        if (sorted) {
            memcpy(sorted, p, sizeof *sorted * (size_t)n);
            for (int64_t i = 0; i < top_k; i++) /* partial selection: k is small */
                for (int64_t j = i + 1; j < n; j++)
                    if (sorted[j] > sorted[i]) {
                        double t = sorted[i];
                        sorted[i] = sorted[j];
                        sorted[j] = t;
                    }
            double kth = sorted[top_k - 1];
            int64_t kept = 0;
            for (int64_t i = 0; i < n; i++)
                if (p[i] < kth || (p[i] == kth && kept >= top_k)) p[i] = 0;
                else kept++;
            free(sorted);
        }
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += p[i] = p[i] > 0 ? exp(log(p[i]) / temperature) : 0;
    if (!(sum > 0)) return 1;
    double u = rt_rng_uniform(rng) * sum, c = 0;
    for (int64_t i = 0; i < n; i++) {
        c += p[i];
        if (u < c && p[i] > 0) return (int32_t)i;
    }
    for (int64_t i = n - 1; i > 0; i--)
        if (p[i] > 0) return (int32_t)i;
    return 1;
}

static void put_token(const RtVocab *v, int32_t id, bool words, bool first) {
    if (id <= 0 || id >= v->size) return;
    if (words && !first) putchar(' ');
    fwrite(v->token[id], 1, (size_t)v->len[id], stdout);
}

/* Ids of a text through the saved vocabulary; unknown tokens are counted. */
static int32_t *encode(RtSession *s, const char *name, const char *text, int64_t *n, int64_t *unknown) {
    const RtRecipe *r = &s->m.recipe;
    RtTextOptions to = {.word_level = r->word_level, .lower = r->lower, .letters_only = r->letters_only};
    RtText t;
    RtDataError e;
    int32_t *ids = NULL;
    if (!rt_data_text_parse(name, text, strlen(text), &to, &t, &e)) {
        rt_fail(s, "%s", e.msg);
        return NULL;
    }
    if (!rt_data_vocab_encode(&s->vocab, &t, &ids, unknown, &e)) rt_fail(s, "%s", e.msg);
    *n = t.count;
    rt_data_text_free(&t);
    return ids;
}

int rt_sample(RtSession *s) {
    const RtVariant *v = &s->m.infer;
    if (!s->has_vocab) {
        rt_fail(s, "the checkpoint has no vocabulary: sampling needs a model trained on text");
        return 1;
    }
    if (v->ninputs != 1 || v->inputs[0].dtype != RT_DATA_I32 || v->inputs[0].rank != 1) {
        rt_fail(s, "sampling needs a model whose input is a sequence of token ids (i32[N])");
        return 1;
    }
    /* The output's last axis scores every id the model knows; the text's
     * vocabulary may be smaller. */
    const RtTensor *o = &v->output;
    int64_t vocab = o->rank ? o->dims[o->rank - 1] : 1;
    if (vocab < s->vocab.size || o->dtype != RT_DATA_F32) {
        rt_fail(s, "the model's output '%s' scores %lld tokens, fewer than the vocabulary's %d", o->name,
                (long long)vocab, s->vocab.size);
        return 1;
    }
    const char *prime = s->o.prime ? s->o.prime : "";
    int64_t n = 0, unknown = 0;
    int32_t *ids = encode(s, "--prime", prime, &n, &unknown);
    if (!ids && n > 0) return 1;
    if (unknown) fprintf(stderr, "%s sample: %lld token(s) of the prime text are not in the vocabulary\n", s->prog,
                         (long long)unknown);
    uint8_t *slab = rt_infer_slab(s);
    double *p = malloc(sizeof *p * (size_t)vocab);
    int64_t window = v->inputs[0].dims[0];
    int32_t *ctx = calloc((size_t)window, sizeof *ctx);
    if (!slab || !p || !ctx) {
        free(ids);
        free(p);
        free(ctx);
        rt_fail(s, "out of memory");
        return 1;
    }
    RtRng rng;
    rt_rng_seed(&rng, s->seed, SAMPLE_STREAM);
    int32_t *x = (int32_t *)(slab + v->inputs[0].at);
    bool words = s->m.recipe.word_level;
    fputs(prime, stdout);
    int64_t length = s->o.length > 0 ? s->o.length : 400;
    double temperature = s->o.temperature > 0 ? s->o.temperature : 1.0;
    if (s->m.stateful) {
        /* The state carries token by token; a prime sets it. */
        rt_model_reset_states(v, slab);
        int32_t next = n > 0 ? ids[n - 1] : 1;
        for (int64_t i = 0; i + 1 < n; i++) {
            x[0] = ids[i];
            v->step(slab, 0, 0, v->forward);
            rt_model_apply_updates(v, slab, false);
        }
        for (int64_t i = 0; i < length; i++) {
            x[0] = next;
            v->step(slab, 0, 0, v->forward);
            rt_model_apply_updates(v, slab, false);
            last_probs(v, slab, vocab, p);
            next = draw(p, s->vocab.size, temperature, s->o.top_k, &rng);
            put_token(&s->vocab, next, words, n == 0 && i == 0);
        }
    } else {
        /* A window model sees the last `window` tokens, padded in front. */
        for (int64_t i = 0; i < n; i++) {
            memmove(ctx, ctx + 1, sizeof *ctx * (size_t)(window - 1));
            ctx[window - 1] = ids[i];
        }
        for (int64_t i = 0; i < length; i++) {
            memcpy(x, ctx, sizeof *ctx * (size_t)window);
            v->step(slab, 0, 0, v->forward);
            last_probs(v, slab, vocab, p);
            int32_t next = draw(p, s->vocab.size, temperature, s->o.top_k, &rng);
            put_token(&s->vocab, next, words, n == 0 && i == 0);
            memmove(ctx, ctx + 1, sizeof *ctx * (size_t)(window - 1));
            ctx[window - 1] = next;
        }
    }
    putchar('\n');
    free(ids);
    free(p);
    free(ctx);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* One line of input: raw text through the vocabulary, `[label<TAB>]ids`, or
 * numbers; into x (the input, `elems` values). */
static bool parse_line(RtSession *s, const char *file, int64_t row, char *line, const RtTensor *t, uint8_t *x) {
    if (t->dtype == RT_DATA_I32 && s->has_vocab) {
        int64_t n = 0, unknown = 0;
        int32_t *ids = encode(s, file, line, &n, &unknown);
        if (!ids && n > 0) return false;
        int32_t *dst = (int32_t *)x;
        memset(dst, 0, sizeof *dst * (size_t)t->elems);
        int64_t keep = n < t->elems ? n : t->elems; /* pad and truncate in front, as pad_sequences */
        memcpy(dst + (t->elems - keep), ids + (n - keep), sizeof *dst * (size_t)keep);
        free(ids);
        return true;
    }
    char *p = strchr(line, '\t');
    p = p ? p + 1 : line;
    int64_t count = 0;
    int32_t *ids = (int32_t *)x;
    float *vals = (float *)x;
    int64_t *tmp = malloc(sizeof *tmp * (size_t)(t->elems + 1));
    double *tmpf = malloc(sizeof *tmpf * (size_t)(t->elems + 1));
    bool ok = tmp && tmpf;
    while (ok) {
        while (*p == ' ' || *p == ',' || *p == '\r' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        if (t->dtype == RT_DATA_I32) {
            long long v = strtoll(p, &end, 10);
            bool bad = end == p || (*end && !strchr(" ,\r\n", *end)) || v < 0 || (s->m.vocab && v >= s->m.vocab);
            if (bad) {
                rt_fail(s, "%s, line %lld: '%.*s' is not a token id%s", file, (long long)row, (int)strcspn(p, " ,\r\n"),
                        p, s->m.vocab ? " below the vocabulary size" : "");
                ok = false;
                break;
            }
            if (count < t->elems + 1) tmp[count] = v;
        } else {
            double v = strtod(p, &end);
            if (end == p || (*end && !strchr(" ,\r\n", *end))) {
                rt_fail(s, "%s, line %lld: '%.*s' is not a number", file, (long long)row, (int)strcspn(p, " ,\r\n"), p);
                ok = false;
                break;
            }
            if (count < t->elems + 1) tmpf[count] = v;
        }
        count++;
        p = end;
    }
    if (ok && t->dtype == RT_DATA_F32 && count != t->elems) {
        rt_fail(s, "%s, line %lld: %lld numbers; input '%s' takes %lld", file, (long long)row, (long long)count,
                t->name, (long long)t->elems);
        ok = false;
    }
    if (ok && t->dtype == RT_DATA_I32) {
        memset(ids, 0, sizeof *ids * (size_t)t->elems);
        int64_t keep = count < t->elems ? count : t->elems, skip = count - keep;
        for (int64_t i = 0; i < keep; i++) ids[t->elems - keep + i] = (int32_t)tmp[skip + i];
    } else if (ok) {
        for (int64_t i = 0; i < count; i++) vals[i] = (float)tmpf[i];
    }
    free(tmp);
    free(tmpf);
    return ok;
}

int rt_predict(RtSession *s) {
    const RtVariant *v = &s->m.infer;
    if (v->ninputs != 1) {
        rt_fail(s, "predict feeds models with one input");
        return 1;
    }
    const char *path = s->o.data;
    FILE *f = !path || strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    const char *name = f == stdin ? "standard input" : path;
    if (!f) {
        rt_fail(s, "cannot open %s", path);
        return 1;
    }
    uint8_t *slab = rt_infer_slab(s);
    char *line = malloc(LINE_BYTES);
    int status = slab && line ? 0 : 1;
    const RtTensor *t = &v->inputs[0];
    if (s->m.stateful) rt_model_reset_states(v, slab);
    for (int64_t row = 1; status == 0 && fgets(line, LINE_BYTES, f); row++) {
        if (!strchr(line, '\n') && !feof(f)) {
            rt_fail(s, "%s, line %lld: longer than %d bytes", name, (long long)row, LINE_BYTES);
            status = 1;
            break;
        }
        if (!parse_line(s, name, row, line, t, slab + t->at)) {
            status = 1;
            break;
        }
        v->step(slab, 0, 0, v->forward);
        if (s->m.stateful) rt_model_apply_updates(v, slab, false);
        const float *out = (const float *)(slab + v->output.at);
        for (int64_t k = 0; k < v->output.elems; k++) printf(k ? " %.6g" : "%.6g", out[k]);
        putchar('\n');
    }
    if (f != stdin) fclose(f);
    free(line);
    if (fflush(stdout) != 0) status = 1;
    return status;
}

int rt_embeddings(RtSession *s) {
    const RtVariant *v = &s->m.train;
    const RtParam *e = NULL;
    for (int i = 0; i < v->nparams; i++) {
        const char *n = v->params[i].t.name;
        size_t len = strlen(n);
        if (len >= 11 && strcmp(n + len - 11, ".embeddings") == 0 && v->params[i].t.rank == 2) {
            e = &v->params[i];
            break;
        }
    }
    if (!e) {
        rt_fail(s, "model '%s' has no embedding layer", s->m.name);
        return 1;
    }
    const float *w = (const float *)(s->slab + e->t.at);
    int64_t rows = e->t.dims[0], dim = e->t.dims[1];
    for (int64_t r = 1; r < rows; r++) {
        if (s->has_vocab && r < s->vocab.size) {
            /* Tabs and line breaks in a token would break the TSV. */
            for (int32_t k = 0; k < s->vocab.len[r]; k++) {
                unsigned char c = (unsigned char)s->vocab.token[r][k];
                if (c == '\t') fputs("\\t", stdout);
                else if (c == '\n') fputs("\\n", stdout);
                else if (c == '\\') fputs("\\\\", stdout);
                else if (c < 0x20) printf("\\x%02x", c);
                else putchar(c);
            }
        } else {
            printf("%lld", (long long)r);
        }
        for (int64_t k = 0; k < dim; k++) printf("\t%.6g", w[r * dim + k]);
        putchar('\n');
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
