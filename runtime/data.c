/* Data loaders: see data.h for the formats, the layouts and the choices made.
 *
 * Every file is read whole, then parsed from memory; parsers walk the buffer
 * line by line so each message can carry its 1-based line number. */
#include "data.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* Longest excerpt of a bad field quoted in a message. */
#define QUOTE_MAX 60



static size_t dtype_size(RtDType t) {
    (void)t;
    return 4; /* f32 and i32 */
}

bool rt_data_fail(RtDataError *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return false;
}

int rt_data_quote_len(size_t n) { return n > QUOTE_MAX ? QUOTE_MAX : (int)n; }

/* ---- Files and lines ---- */

bool rt_data_read_file(const char *path, char **data, size_t *size, RtDataError *err) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return rt_data_fail(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1), *nb;
    for (;;) {
        if (!buf) {
            rt_data_fail(err, "%s: out of memory", path);
            break;
        }
        if ((got = fread(buf + n, 1, cap - n, f)) == 0) {
            if (!ferror(f)) {
                fclose(f);
                buf[n] = '\0';
                *data = buf;
                *size = n;
                return true;
            }
            rt_data_fail(err, "%s: read error", path);
            break;
        }
        if ((n += got) < cap)
            continue;
        if ((int64_t)cap >= RT_DATA_MAX_FILE_BYTES) {
            rt_data_fail(err, "%s: larger than the limit of %lld bytes", path, (long long)RT_DATA_MAX_FILE_BYTES);
            break;
        }
        cap *= 2;
        if (!(nb = realloc(buf, cap + 1)))
            free(buf);
        buf = nb;
    }
    free(buf);
    fclose(f);
    return false;
}

typedef struct Lines {
    const char *name;
    const char *p, *end;
    int64_t lineno;     /* of the line last returned */
} Lines;

/* Next line without its "\n" or "\r\n": 1, or 0 at the end, or -1 (err set)
 * for a line over the limit. */
static int next_line(Lines *l, const char **line, size_t *len, RtDataError *err) {
    if (l->p >= l->end)
        return 0;
    l->lineno++;
    const char *nl = memchr(l->p, '\n', (size_t)(l->end - l->p));
    const char *stop = nl ? nl : l->end;
    size_t n = (size_t)(stop - l->p);
    if (n > RT_DATA_MAX_LINE_BYTES) {
        rt_data_fail(err, "%s:%lld: line longer than the limit of %d bytes", l->name, (long long)l->lineno,
             RT_DATA_MAX_LINE_BYTES);
        return -1;
    }
    *line = l->p;
    if (n > 0 && l->p[n - 1] == '\r')
        n--;
    *len = n;
    l->p = nl ? nl + 1 : l->end;
    return 1;
}

static int64_t count_lines(const char *data, size_t size) {
    int64_t n = 0;
    for (size_t i = 0; i < size; i++)
        n += data[i] == '\n';
    if (size > 0 && data[size - 1] != '\n')
        n++;
    return n;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

static void trim(const char **s, size_t *n) {
    while (*n > 0 && is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_space((*s)[*n - 1]))
        (*n)--;
}

/* 1 for a finite number filling the whole field, 0 for text that is not a
 * number, -1 for NaN or an infinity. */
static int parse_number(const char *s, size_t n, double *out) {
    char small[128], *buf = small;
    if (n == 0)
        return 0;
    if (n >= sizeof small && !(buf = malloc(n + 1)))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    int ok = end == buf + n && !is_space(buf[0]);
    if (buf != small)
        free(buf);
    if (!ok)
        return 0;
    if (!isfinite(d))
        return -1;
    *out = d;
    return 1;
}

/* ---- Datasets ---- */

void rt_data_dataset_free(RtDataset *ds) {
    if (ds->owned) {
        free(ds->inputs);
        free(ds->targets);
    }
    memset(ds, 0, sizeof *ds);
}

static int64_t shape_size(const int64_t *dims, int rank) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    return n;
}

/* Allocates an owned dataset of `count` examples with the given shapes. */
static bool dataset_alloc(RtDataset *ds, const char *name, int64_t count, RtDType in_dtype, int in_rank,
                          const int64_t *in_dims, RtDType tgt_dtype, int tgt_rank, const int64_t *tgt_dims,
                          RtDataError *err) {
    memset(ds, 0, sizeof *ds);
    ds->count = count;
    ds->in_dtype = in_dtype;
    ds->tgt_dtype = tgt_dtype;
    ds->in_rank = in_rank;
    ds->tgt_rank = tgt_rank;
    for (int i = 0; i < in_rank; i++)
        ds->in_dims[i] = in_dims[i];
    for (int i = 0; i < tgt_rank; i++)
        ds->tgt_dims[i] = tgt_dims[i];
    ds->in_size = shape_size(in_dims, in_rank);
    ds->tgt_size = shape_size(tgt_dims, tgt_rank);
    ds->owned = true;
    size_t in_bytes = (size_t)count * (size_t)ds->in_size * dtype_size(in_dtype);
    size_t tgt_bytes = (size_t)count * (size_t)ds->tgt_size * dtype_size(tgt_dtype);
    ds->inputs = calloc(1, in_bytes ? in_bytes : 1);
    ds->targets = calloc(1, tgt_bytes ? tgt_bytes : 1);
    if (!ds->inputs || !ds->targets) {
        rt_data_dataset_free(ds);
        return rt_data_fail(err, "%s: out of memory for %lld examples", name, (long long)count);
    }
    return true;
}

int64_t rt_data_split_point(int64_t n, double fraction) {
    return (int64_t)floor((double)n * (1.0 - fraction));
}

bool rt_data_split_tail(const RtDataset *all, double fraction, const char *name, RtDataset *train,
                        RtDataset *val, RtDataError *err) {
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (!(fraction > 0.0 && fraction < 1.0))
        return rt_data_fail(err, "%s: validate %g is not a fraction between 0 and 1", name, fraction);
    int64_t at = rt_data_split_point(all->count, fraction);
    if (at <= 0 || at >= all->count)
        return rt_data_fail(err, "%s: validate %g of %lld examples leaves %lld to train and %lld to validate",
                    name, fraction, (long long)all->count, (long long)at, (long long)(all->count - at));
    *train = *all;
    *val = *all;
    train->owned = val->owned = false;
    train->count = at;
    val->count = all->count - at;
    val->inputs = (char *)all->inputs + (size_t)at * (size_t)all->in_size * dtype_size(all->in_dtype);
    val->targets = (char *)all->targets + (size_t)at * (size_t)all->tgt_size * dtype_size(all->tgt_dtype);
    return true;
}

/* ---- Batches ---- */

/* Uniform in [0, bound), bound >= 1, without modulo bias: draws below the
 * threshold are rejected (2^32 mod bound of them, resp. 2^64 mod bound). */
static uint64_t uniform_below(RtRng *rng, uint64_t bound) {
    if (bound <= UINT32_MAX) {
        uint32_t b = (uint32_t)bound, threshold = (uint32_t)(-b) % b;
        for (;;) {
            uint32_t r = rt_rng_next_u32(rng);
            if (r >= threshold)
                return r % b;
        }
    }
    uint64_t threshold = (uint64_t)(-bound) % bound;
    for (;;) {
        uint64_t r = (uint64_t)rt_rng_next_u32(rng) << 32;
        r |= rt_rng_next_u32(rng);
        if (r >= threshold)
            return r % bound;
    }
}

bool rt_data_batcher_init(RtBatcher *b, const RtDataset *ds, int64_t batch, bool shuffle,
                          uint64_t seed, RtLastBatch last, RtDataError *err) {
    memset(b, 0, sizeof *b);
    if (batch < 1)
        return rt_data_fail(err, "batch size %lld is not positive", (long long)batch);
    if (ds->count < 1)
        return rt_data_fail(err, "the dataset has no examples");
    if (last == RT_DATA_LAST_DROP && ds->count < batch)
        return rt_data_fail(err, "the dataset has %lld examples, fewer than one batch of %lld",
                    (long long)ds->count, (long long)batch);
    b->order = malloc((size_t)ds->count * sizeof *b->order);
    if (!b->order)
        return rt_data_fail(err, "out of memory for the order of %lld examples", (long long)ds->count);
    b->ds = ds;
    b->batch = batch;
    b->shuffle = shuffle;
    b->seed = seed;
    b->last = last;
    if (last == RT_DATA_LAST_DROP) {
        b->batches = ds->count / batch;
        b->dropped = ds->count % batch;
    } else {
        b->batches = (ds->count + batch - 1) / batch;
    }
    rt_data_batcher_epoch(b, 0);
    return true;
}

void rt_data_batcher_epoch(RtBatcher *b, int64_t epoch) {
    int64_t n = b->ds->count;
    for (int64_t i = 0; i < n; i++)
        b->order[i] = i;
    if (b->shuffle) {
        RtRng rng;
        rt_rng_seed(&rng, b->seed, RT_DATA_SHUFFLE_STREAM + (uint64_t)epoch);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)uniform_below(&rng, (uint64_t)i + 1);
            int64_t t = b->order[i];
            b->order[i] = b->order[j];
            b->order[j] = t;
        }
    }
    b->next = 0;
}

int64_t rt_data_batcher_next(RtBatcher *b, void *inputs, void *targets) {
    const RtDataset *ds = b->ds;
    int64_t end = b->last == RT_DATA_LAST_DROP ? b->batches * b->batch : ds->count;
    if (b->next >= end)
        return 0;
    int64_t rows = end - b->next < b->batch ? end - b->next : b->batch;
    size_t in_row = (size_t)ds->in_size * dtype_size(ds->in_dtype);
    size_t tgt_row = (size_t)ds->tgt_size * dtype_size(ds->tgt_dtype);
    for (int64_t r = 0; r < rows; r++) {
        int64_t k = b->order[b->next + r];
        memcpy((char *)inputs + (size_t)r * in_row, (const char *)ds->inputs + (size_t)k * in_row, in_row);
        memcpy((char *)targets + (size_t)r * tgt_row, (const char *)ds->targets + (size_t)k * tgt_row,
               tgt_row);
    }
    if (rows < b->batch) {
        memset((char *)inputs + (size_t)rows * in_row, 0, (size_t)(b->batch - rows) * in_row);
        memset((char *)targets + (size_t)rows * tgt_row, 0, (size_t)(b->batch - rows) * tgt_row);
    }
    b->next += rows;
    return rows;
}

void rt_data_batcher_free(RtBatcher *b) {
    free(b->order);
    memset(b, 0, sizeof *b);
}

/* ---- Text ---- */

/* Length of the valid UTF-8 character at p (1..4) and its code point, or 0 for
 * an invalid sequence (bad lead byte, missing continuation, overlong form,
 * surrogate, or beyond U+10FFFF). */
static int utf8_decode(const unsigned char *p, size_t n, uint32_t *cp) {
    unsigned char c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)len > n)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

static bool is_letter(uint32_t cp) {
    return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           (cp >= 0xc0 && cp <= 0xff && cp != 0xd7 && cp != 0xf7);
}

static uint32_t to_lower(uint32_t cp) {
    if ((cp >= 'A' && cp <= 'Z') || (cp >= 0xc0 && cp <= 0xde && cp != 0xd7))
        return cp + 0x20;
    return cp;
}

static int utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    /* Code points up to U+00FF only: the others are copied, never re-encoded. */
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

void rt_data_text_free(RtText *t) {
    free(t->buf);
    free(t->start);
    free(t->len);
    memset(t, 0, sizeof *t);
}

bool rt_data_text_parse(const char *name, const char *data, size_t size, const RtTextOptions *opt,
                        RtText *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    if (size == 0)
        return rt_data_fail(err, "%s: empty file", name);
    /* Neither lower-casing (Latin-1 stays two bytes) nor letters_only (one
     * space for one or more bytes) makes the text longer. */
    char *buf = malloc(size + 1);
    if (!buf)
        return rt_data_fail(err, "%s: out of memory", name);
    const unsigned char *p = (const unsigned char *)data;
    size_t o = 0, i = 0, line_start = 0, word = 0;
    int64_t line = 1;
    while (i < size) {
        uint32_t cp;
        int n = utf8_decode(p + i, size - i, &cp);
        if (n == 0) {
            free(buf);
            return rt_data_fail(err, "%s:%lld: invalid UTF-8 (byte 0x%02x at byte %lld of the line)", name,
                        (long long)line, p[i], (long long)(i - line_start + 1));
        }
        if (opt->lower)
            cp = to_lower(cp);
        size_t before = o;
        if (opt->letters_only && !is_letter(cp)) {
            if (o == 0 || buf[o - 1] != ' ')
                buf[o++] = ' ';
        } else if (cp <= 0xff) { /* ASCII or Latin-1, possibly lower-cased */
            o += (size_t)utf8_encode(cp, buf + o);
        } else {
            memcpy(buf + o, p + i, (size_t)n);
            o += (size_t)n;
        }
        if (opt->word_level && o > before) {
            word = is_space(buf[o - 1]) ? 0 : word + (o - before);
            if (word > RT_DATA_MAX_TOKEN_BYTES) {
                free(buf);
                return rt_data_fail(err, "%s:%lld: a word longer than the limit of %d bytes", name,
                            (long long)line, RT_DATA_MAX_TOKEN_BYTES);
            }
        }
        if (cp == '\n') {
            line++;
            line_start = i + 1;
        }
        i += (size_t)n;
    }
    buf[o] = '\0';
    out->buf = buf;
    out->bytes = (int64_t)o;
    /* Upper bound: one token per byte. */
    out->start = malloc((o ? o : 1) * sizeof *out->start);
    out->len = malloc((o ? o : 1) * sizeof *out->len);
    if (!out->start || !out->len) {
        rt_data_text_free(out);
        return rt_data_fail(err, "%s: out of memory", name);
    }
    int64_t count = 0;
    for (size_t k = 0; k < o;) {
        if (opt->word_level) {
            if (is_space(buf[k])) {
                k++;
                continue;
            }
            size_t e = k;
            while (e < o && !is_space(buf[e]))
                e++;
            out->start[count] = (int64_t)k;
            out->len[count++] = (int32_t)(e - k);
            k = e;
        } else {
            uint32_t cp;
            int n = utf8_decode((const unsigned char *)buf + k, o - k, &cp);
            out->start[count] = (int64_t)k;
            out->len[count++] = n;
            k += (size_t)n;
        }
    }
    out->count = count;
    if (count == 0) {
        rt_data_text_free(out);
        return rt_data_fail(err, "%s: no tokens in the text", name);
    }
    return true;
}

bool rt_data_text_read(const char *path, const RtTextOptions *opt, RtText *out, RtDataError *err) {
    char *data;
    size_t size;
    memset(out, 0, sizeof *out);
    if (!rt_data_read_file(path, &data, &size, err))
        return false;
    bool ok = rt_data_text_parse(path, data, size, opt, out, err);
    free(data);
    return ok;
}

/* ---- Vocabulary ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void rt_data_vocab_free(RtVocab *v) {
    if (v->token)
        for (int32_t i = 0; i < v->size; i++)
            free(v->token[i]);
    free(v->token);
    free(v->len);
    free(v->count);
    free(v->slot);
    memset(v, 0, sizeof *v);
}

/* Room for `size` ids and a table at most half full. */
static bool vocab_alloc(RtVocab *v, int64_t size) {
    memset(v, 0, sizeof *v);
    int64_t cap = 16;
    while (cap < 2 * size)
        cap *= 2;
    v->token = calloc((size_t)size, sizeof *v->token);
    v->len = calloc((size_t)size, sizeof *v->len);
    v->count = calloc((size_t)size, sizeof *v->count);
    v->slot = calloc((size_t)cap, sizeof *v->slot);
    v->cap = cap;
    if (!v->token || !v->len || !v->count || !v->slot || !(v->token[0] = calloc(1, 1))) {
        v->size = (int32_t)size;
        rt_data_vocab_free(v);
        return false;
    }
    v->size = 1;
    return true;
}

/* The slot holding `tok`, or the empty slot where it would go. */
static int64_t vocab_find(const RtVocab *v, const char *tok, size_t len) {
    int64_t mask = v->cap - 1, i = (int64_t)(hash_bytes(tok, len) & (uint64_t)mask);
    for (;; i = (i + 1) & mask) {
        int32_t id = v->slot[i];
        if (id == 0 || ((size_t)v->len[id] == len && memcmp(v->token[id], tok, len) == 0))
            return i;
    }
}

/* Appends a token as the next id; false when out of memory. */
static bool vocab_add(RtVocab *v, const char *tok, size_t len, int64_t count) {
    int32_t id = v->size;
    if (!(v->token[id] = malloc(len + 1)))
        return false;
    memcpy(v->token[id], tok, len);
    v->token[id][len] = '\0';
    v->len[id] = (int32_t)len;
    v->count[id] = count;
    v->slot[vocab_find(v, tok, len)] = id;
    v->size++;
    return true;
}

int32_t rt_data_vocab_id(const RtVocab *v, const char *tok, size_t len) {
    return v->slot[vocab_find(v, tok, len)];
}

void rt_data_vocab_truncate(RtVocab *v, int32_t size) {
    if (size < 1 || size >= v->size) return;
    for (int32_t id = size; id < v->size; id++) free(v->token[id]);
    v->size = size;
    /* The table again, from the ids kept (removing from open addressing would break probe chains). */
    memset(v->slot, 0, sizeof *v->slot * (size_t)v->cap);
    for (int32_t id = 1; id < size; id++) v->slot[vocab_find(v, v->token[id], (size_t)v->len[id])] = id;
}

typedef struct Distinct {
    int64_t first;      /* token index of the first appearance */
    int64_t count;
} Distinct;

/* Descending count, then first appearance: a total order, as `first` is unique. */
static int by_frequency(const void *a, const void *b) {
    const Distinct *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->first < y->first ? -1 : x->first > y->first;
}

bool rt_data_vocab_build(const RtText *text, RtVocab *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    /* Count distinct tokens in a scratch table of indexes into d (+ 1; 0 = empty). */
    int64_t cap = 16;
    while (cap < 2 * text->count)
        cap *= 2;
    int64_t *table = calloc((size_t)cap, sizeof *table);
    Distinct *d = malloc((size_t)(text->count ? text->count : 1) * sizeof *d);
    int64_t nd = 0;
    bool ok = false;
    if (!table || !d)
        goto done;
    for (int64_t t = 0; t < text->count; t++) {
        const char *tok = text->buf + text->start[t];
        size_t len = (size_t)text->len[t];
        int64_t i = (int64_t)(hash_bytes(tok, len) & (uint64_t)(cap - 1));
        for (;; i = (i + 1) & (cap - 1)) {
            int64_t k = table[i];
            if (k == 0) {
                d[nd].first = t;
                d[nd].count = 1;
                table[i] = ++nd;
                break;
            }
            const Distinct *e = &d[k - 1];
            if ((size_t)text->len[e->first] == len && memcmp(text->buf + text->start[e->first], tok, len) == 0) {
                d[k - 1].count++;
                break;
            }
        }
    }
    if (nd + 1 > INT32_MAX) {
        free(table);
        free(d);
        return rt_data_fail(err, "%lld distinct tokens do not fit in int32 ids", (long long)nd);
    }
    qsort(d, (size_t)nd, sizeof *d, by_frequency);
    if (!vocab_alloc(out, nd + 1))
        goto done;
    for (int64_t k = 0; k < nd; k++) {
        if (!vocab_add(out, text->buf + text->start[d[k].first], (size_t)text->len[d[k].first], d[k].count)) {
            rt_data_vocab_free(out);
            goto done;
        }
    }
    ok = true;
done:
    free(table);
    free(d);
    return ok ? true : rt_data_fail(err, "out of memory building a vocabulary of %lld tokens", (long long)nd);
}

bool rt_data_vocab_encode(const RtVocab *v, const RtText *text, int32_t **ids, int64_t *unknown,
                          RtDataError *err) {
    *unknown = 0;
    *ids = malloc((size_t)(text->count ? text->count : 1) * sizeof **ids);
    if (!*ids)
        return rt_data_fail(err, "out of memory encoding %lld tokens", (long long)text->count);
    for (int64_t t = 0; t < text->count; t++) {
        int32_t id = rt_data_vocab_id(v, text->buf + text->start[t], (size_t)text->len[t]);
        *unknown += id == 0;
        (*ids)[t] = id;
    }
    return true;
}

/* Escaped bytes of one token: how many the saved form takes, and writing them. */
static size_t escaped_len(const char *tok, int32_t len) {
    size_t n = 0;
    for (int32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        if (c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == ' ')
            n += 2;
        else if (c < 0x20 || c == 0x7f)
            n += 4;
        else
            n += 1;
    }
    return n;
}

static char *escape(const char *tok, int32_t len, char *o) {
    static const char hex[] = "0123456789abcdef";
    for (int32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)tok[i];
        switch (c) {
        case '\\': *o++ = '\\', *o++ = '\\'; break;
        case '\n': *o++ = '\\', *o++ = 'n'; break;
        case '\r': *o++ = '\\', *o++ = 'r'; break;
        case '\t': *o++ = '\\', *o++ = 't'; break;
        case ' ': *o++ = '\\', *o++ = 's'; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                *o++ = '\\', *o++ = 'x', *o++ = hex[c >> 4], *o++ = hex[c & 15];
            } else {
                *o++ = (char)c;
            }
        }
    }
    return o;
}

char *rt_data_vocab_format(const RtVocab *v, size_t *size, RtDataError *err) {
    char head[40];
    int hn = snprintf(head, sizeof head, "seqc-vocab 1 %d\n", (int)v->size);
    size_t n = (size_t)hn;
    for (int32_t id = 1; id < v->size; id++)
        n += escaped_len(v->token[id], v->len[id]) + 1;
    char *text = malloc(n + 1), *o = text;
    if (!text) {
        rt_data_fail(err, "out of memory saving a vocabulary of %d tokens", (int)v->size);
        return NULL;
    }
    memcpy(o, head, (size_t)hn);
    o += hn;
    for (int32_t id = 1; id < v->size; id++) {
        o = escape(v->token[id], v->len[id], o);
        *o++ = '\n';
    }
    *o = '\0';
    *size = n;
    return text;
}

bool rt_data_vocab_save(const RtVocab *v, const char *path, RtDataError *err) {
    size_t n;
    char *text = rt_data_vocab_format(v, &n, err);
    if (!text)
        return false;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(text);
        return rt_data_fail(err, "%s: cannot create: %s", path, strerror(errno));
    }
    bool bad = fwrite(text, 1, n, f) != n;
    free(text);
    if (fclose(f) != 0 || bad)
        return rt_data_fail(err, "%s: write error", path);
    return true;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Undoes the escapes of one line into out (at least len bytes); returns the
 * length, or -1 with err set. */
static int64_t unescape(const char *name, int64_t lineno, const char *s, size_t len, char *out,
                        RtDataError *err) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
            continue;
        }
        if (++i == len) {
            rt_data_fail(err, "%s:%lld: a backslash ends the line", name, (long long)lineno);
            return -1;
        }
        switch (s[i]) {
        case '\\': out[o++] = '\\'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 's': out[o++] = ' '; break;
        case 'x': {
            int hi = i + 1 < len ? hex_digit(s[i + 1]) : -1, lo = i + 2 < len ? hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                rt_data_fail(err, "%s:%lld: \\x needs two hex digits", name, (long long)lineno);
                return -1;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
            break;
        }
        default:
            rt_data_fail(err, "%s:%lld: unknown escape '\\%c'", name, (long long)lineno, s[i]);
            return -1;
        }
    }
    return (int64_t)o;
}

bool rt_data_vocab_parse(const char *name, const char *text, size_t size, RtVocab *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    Lines l = {name, text, text + size, 0};
    const char *line;
    size_t len;
    int r = next_line(&l, &line, &len, err);
    long long promised = -1;
    char tail;
    bool ok = false;
    char *tok = NULL;
    if (r < 0)
        goto done;
    if (size == 0) {
        rt_data_fail(err, "%s: empty file", name);
        goto done;
    }
    {
        char head[64] = {0};
        memcpy(head, line, len < sizeof head - 1 ? len : sizeof head - 1);
        if (sscanf(head, "seqc-vocab 1 %lld%c", &promised, &tail) != 1 || promised < 1 ||
            promised > INT32_MAX) {
            rt_data_fail(err, "%s:1: not a seqc vocabulary (the first line must be 'seqc-vocab 1 <size>')", name);
            goto done;
        }
    }
    if (!vocab_alloc(out, promised)) {
        rt_data_fail(err, "%s: out of memory", name);
        goto done;
    }
    while ((r = next_line(&l, &line, &len, err)) > 0) {
        if (out->size == promised) {
            rt_data_fail(err, "%s:%lld: more tokens than the %lld the first line promises", name,
                 (long long)l.lineno, promised - 1);
            goto done;
        }
        free(tok);
        if (!(tok = malloc(len + 1))) {
            rt_data_fail(err, "%s: out of memory", name);
            goto done;
        }
        int64_t n = unescape(name, l.lineno, line, len, tok, err);
        if (n < 0)
            goto done;
        if (n == 0) {
            rt_data_fail(err, "%s:%lld: empty token", name, (long long)l.lineno);
            goto done;
        }
        int32_t seen = rt_data_vocab_id(out, tok, (size_t)n);
        if (seen != 0) {
            rt_data_fail(err, "%s:%lld: token '%.*s' appears twice (first on line %lld)", name, (long long)l.lineno,
                 rt_data_quote_len(len), line, (long long)seen + 1);
            goto done;
        }
        if (!vocab_add(out, tok, (size_t)n, 0)) {
            rt_data_fail(err, "%s: out of memory", name);
            goto done;
        }
    }
    if (r < 0)
        goto done;
    if (out->size != promised) {
        rt_data_fail(err, "%s: the first line promises %lld tokens, the file holds %lld", name, promised - 1,
             (long long)out->size - 1);
        goto done;
    }
    ok = true;
done:
    free(tok);
    if (!ok)
        rt_data_vocab_free(out);
    return ok;
}

bool rt_data_vocab_load(const char *path, RtVocab *out, RtDataError *err) {
    char *data;
    size_t size;
    memset(out, 0, sizeof *out);
    if (!rt_data_read_file(path, &data, &size, err))
        return false;
    bool ok = rt_data_vocab_parse(path, data, size, out, err);
    free(data);
    return ok;
}

/* ---- Windows and streams ---- */

bool rt_data_windows(const char *name, const int32_t *ids, int64_t n, int64_t window, int64_t step,
                     RtDataset *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    if (window < 1 || step < 1)
        return rt_data_fail(err, "%s: window %lld and step %lld must be positive", name, (long long)window,
                    (long long)step);
    if (n < window + 1)
        return rt_data_fail(err, "%s: %lld tokens are too few for a window of %lld and its target", name,
                    (long long)n, (long long)window);
    int64_t count = (n - window - 1) / step + 1;
    if (!dataset_alloc(out, name, count, RT_DATA_I32, 1, &window, RT_DATA_I32, 0, NULL, err))
        return false;
    int32_t *in = out->inputs, *tgt = out->targets;
    for (int64_t k = 0; k < count; k++) {
        memcpy(in + k * window, ids + k * step, (size_t)window * sizeof *ids);
        tgt[k] = ids[k * step + window];
    }
    return true;
}

bool rt_data_stream_init(RtStream *s, const char *name, const int32_t *ids, int64_t n, int64_t batch,
                         int64_t window, int64_t every, RtDataError *err) {
    memset(s, 0, sizeof *s);
    if (batch < 1 || window < 1 || every < 1)
        return rt_data_fail(err, "%s: batch %lld, window %lld and every %lld must be positive", name,
                    (long long)batch, (long long)window, (long long)every);
    if (every > window)
        return rt_data_fail(err, "%s: every (%lld) must not exceed the window (%lld): the steps between windows "
                    "would never be read", name, (long long)every, (long long)window);
    int64_t length = n / batch;
    if (length < window + 1)
        return rt_data_fail(err, "%s: %lld tokens make %lld streams of %lld; a window of %lld and its targets "
                    "need %lld per stream", name, (long long)n, (long long)batch, (long long)length,
                    (long long)window, (long long)window + 1);
    s->ids = ids;
    s->batch = batch;
    s->window = window;
    s->every = every;
    s->length = length;
    s->windows = (length - window - 1) / every + 1;
    s->dropped = n - batch * length;
    return true;
}

void rt_data_stream_rewind(RtStream *s) { s->next = 0; }

bool rt_data_stream_next(RtStream *s, int32_t *inputs, int32_t *targets) {
    if (s->next >= s->windows)
        return false;
    for (int64_t b = 0; b < s->batch; b++) {
        const int32_t *from = s->ids + b * s->length + s->next * s->every;
        memcpy(inputs + b * s->window, from, (size_t)s->window * sizeof *from);
        memcpy(targets + b * s->window, from + 1, (size_t)s->window * sizeof *from);
    }
    s->next++;
    return true;
}

/* ---- TSV ---- */

/* Parses the ids field of one line into ids (room for len / 2 + 1); returns
 * the count or -1 with err set. */
static int64_t parse_ids(const char *name, int64_t lineno, const char *s, size_t len, int64_t vocab,
                         int32_t *ids, RtDataError *err) {
    int64_t n = 0;
    size_t i = 0;
    while (i < len) {
        if (s[i] == ' ') {
            i++;
            continue;
        }
        size_t e = i;
        while (e < len && s[e] != ' ')
            e++;
        const char *t = s + i;
        size_t tl = e - i;
        size_t digits = t[0] == '-' ? 1 : 0;
        while (digits < tl && t[digits] >= '0' && t[digits] <= '9')
            digits++;
        bool numeric = digits == tl && tl > (size_t)(t[0] == '-');
        if (!numeric) {
            rt_data_fail(err, "%s:%lld: '%.*s' is not a token id (a non-negative integer)", name, (long long)lineno,
                 rt_data_quote_len(tl), t);
            return -1;
        }
        if (t[0] == '-') {
            rt_data_fail(err, "%s:%lld: token id %.*s is negative", name, (long long)lineno, rt_data_quote_len(tl), t);
            return -1;
        }
        int64_t v = 0;
        bool big = false;
        for (size_t k = 0; k < tl && !big; k++) {
            v = v * 10 + (t[k] - '0');
            big = v >= vocab;
        }
        if (big) {
            rt_data_fail(err, "%s:%lld: token id %.*s is not below the vocabulary size %lld", name, (long long)lineno,
                 rt_data_quote_len(tl), t, (long long)vocab);
            return -1;
        }
        ids[n++] = (int32_t)v;
        i = e;
    }
    return n;
}

bool rt_data_tsv_read(const char *path, const RtTsvOptions *opt, RtDataset *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    if (opt->maxlen < 1)
        return rt_data_fail(err, "%s: the sequence length %lld is not positive", path, (long long)opt->maxlen);
    if (opt->vocab < 1 || opt->vocab > (int64_t)INT32_MAX + 1)
        return rt_data_fail(err, "%s: vocabulary size %lld is outside 1..2^31", path, (long long)opt->vocab);
    char *data;
    size_t size;
    if (!rt_data_read_file(path, &data, &size, err))
        return false;
    if (size == 0) {
        free(data);
        return rt_data_fail(err, "%s: empty file", path);
    }
    int64_t maxlen = opt->maxlen, one = 1;
    int32_t *ids = malloc((RT_DATA_MAX_LINE_BYTES / 2 + 1) * sizeof *ids);
    if (!ids || !dataset_alloc(out, path, count_lines(data, size), RT_DATA_I32, 1, &maxlen, RT_DATA_F32, 1,
                               &one, err)) {
        free(ids);
        free(data);
        return ids ? false : rt_data_fail(err, "%s: out of memory", path);
    }
    int32_t *in = out->inputs;
    float *labels = out->targets;
    Lines l = {path, data, data + size, 0};
    const char *line;
    size_t len;
    int r;
    bool ok = true;
    while (ok && (r = next_line(&l, &line, &len, err)) > 0) {
        long long ln = (long long)l.lineno;
        const char *tab = memchr(line, '\t', len);
        if (len == 0) {
            ok = rt_data_fail(err, "%s:%lld: empty line (a line is a label, a tab and token ids)", path, ln);
            break;
        }
        if (!tab) {
            ok = rt_data_fail(err, "%s:%lld: no tab (a line is a label, a tab and token ids)", path, ln);
            break;
        }
        const char *lab = line;
        size_t lab_len = (size_t)(tab - line);
        trim(&lab, &lab_len);
        double label;
        int pn = parse_number(lab, lab_len, &label);
        if (pn <= 0) {
            ok = rt_data_fail(err, "%s:%lld: label '%.*s' is not a %snumber", path, ln, rt_data_quote_len(lab_len), lab,
                      pn < 0 ? "finite " : "");
            break;
        }
        if (fabs(label) > FLT_MAX) {
            ok = rt_data_fail(err, "%s:%lld: label %.*s does not fit in float32", path, ln, rt_data_quote_len(lab_len), lab);
            break;
        }
        const char *f = tab + 1;
        int64_t n = parse_ids(path, l.lineno, f, len - (size_t)(f - line), opt->vocab, ids, err);
        if (n < 0) {
            ok = false;
            break;
        }
        int64_t row = l.lineno - 1, keep = n < maxlen ? n : maxlen;
        const int32_t *src = ids + (n > maxlen && !opt->truncate_post ? n - maxlen : 0);
        int32_t *dst = in + row * maxlen + (keep < maxlen && !opt->pad_post ? maxlen - keep : 0);
        memcpy(dst, src, (size_t)keep * sizeof *ids);
        labels[row] = (float)label;
    }
    if (ok && r < 0)
        ok = false;
    free(ids);
    free(data);
    if (!ok)
        rt_data_dataset_free(out);
    return ok;
}

/* ---- CSV ---- */

/* Finds field `want` of a CSV line; returns the number of fields seen (all of
 * them when the field is missing), or -1 for an unclosed quote. The field is
 * trimmed and unquoted into *f / *flen, the quotes' "" left doubled (a number
 * never holds one). */
static int64_t csv_field(const char *s, size_t len, int64_t want, const char **f, size_t *flen) {
    int64_t k = 0;
    size_t i = 0;
    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        const char *start = s + i;
        size_t n;
        if (i < len && s[i] == '"') {
            size_t e = i + 1;
            for (;; e++) {
                if (e >= len)
                    return -1;
                if (s[e] == '"') {
                    if (e + 1 < len && s[e + 1] == '"')
                        e++;
                    else
                        break;
                }
            }
            start = s + i + 1;
            n = e - i - 1;
            i = e + 1;
            while (i < len && s[i] != ',')
                i++;
        } else {
            size_t e = i;
            while (e < len && s[e] != ',')
                e++;
            n = e - i;
            i = e;
        }
        if (k == want) {
            *f = start;
            *flen = n;
            trim(f, flen);
        }
        k++;
        if (i >= len)
            return k;
        i++; /* the comma */
    }
}

bool rt_data_csv_read(const char *path, const RtCsvOptions *opt, float **values, int64_t *n,
                      RtDataError *err) {
    *values = NULL;
    *n = 0;
    if (opt->column < 0)
        return rt_data_fail(err, "%s: column %lld is negative", path, (long long)opt->column);
    char *data;
    size_t size;
    if (!rt_data_read_file(path, &data, &size, err))
        return false;
    if (size == 0) {
        free(data);
        return rt_data_fail(err, "%s: empty file", path);
    }
    int64_t lines = count_lines(data, size);
    float *v = malloc((size_t)lines * sizeof *v);
    if (!v) {
        free(data);
        return rt_data_fail(err, "%s: out of memory", path);
    }
    Lines l = {path, data, data + size, 0};
    const char *line;
    size_t len;
    int r;
    int64_t count = 0;
    bool ok = true;
    while (ok && (r = next_line(&l, &line, &len, err)) > 0) {
        long long ln = (long long)l.lineno;
        if (opt->header && l.lineno == 1)
            continue;
        if (len == 0) {
            ok = rt_data_fail(err, "%s:%lld: empty line", path, ln);
            break;
        }
        const char *f = NULL;
        size_t flen = 0;
        int64_t fields = csv_field(line, len, opt->column, &f, &flen);
        if (fields < 0) {
            ok = rt_data_fail(err, "%s:%lld: a quote is not closed", path, ln);
            break;
        }
        if (fields <= opt->column) {
            ok = rt_data_fail(err, "%s:%lld: column %lld is missing (the line has %lld column%s)", path, ln,
                      (long long)opt->column, (long long)fields, fields == 1 ? "" : "s");
            break;
        }
        double d;
        int pn = parse_number(f, flen, &d);
        if (flen == 0)
            ok = rt_data_fail(err, "%s:%lld: column %lld is empty", path, ln, (long long)opt->column);
        else if (pn == 0)
            ok = rt_data_fail(err, "%s:%lld: '%.*s' is not a number", path, ln, rt_data_quote_len(flen), f);
        else if (pn < 0)
            ok = rt_data_fail(err, "%s:%lld: '%.*s' is not a finite number", path, ln, rt_data_quote_len(flen), f);
        else if (fabs(d) > FLT_MAX)
            ok = rt_data_fail(err, "%s:%lld: %.*s does not fit in float32", path, ln, rt_data_quote_len(flen), f);
        else
            v[count++] = (float)d;
    }
    if (ok && r < 0)
        ok = false;
    if (ok && count == 0)
        ok = rt_data_fail(err, "%s: no data after the header line", path);
    free(data);
    if (!ok) {
        free(v);
        return false;
    }
    *values = v;
    *n = count;
    return true;
}

bool rt_data_series_windows(const char *name, const float *v, int64_t n, int64_t window, int64_t horizon,
                            int64_t step, RtDataset *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    if (window < 1 || horizon < 1 || step < 1)
        return rt_data_fail(err, "%s: window %lld, horizon %lld and step %lld must be positive", name,
                    (long long)window, (long long)horizon, (long long)step);
    if (n < window + horizon)
        return rt_data_fail(err, "%s: the series has %lld values; a window of %lld and %lld to predict need %lld",
                    name, (long long)n, (long long)window, (long long)horizon, (long long)(window + horizon));
    int64_t count = (n - window - horizon) / step + 1, in_dims[2] = {window, 1};
    if (!dataset_alloc(out, name, count, RT_DATA_F32, 2, in_dims, RT_DATA_F32, 1, &horizon, err))
        return false;
    float *in = out->inputs, *tgt = out->targets;
    for (int64_t k = 0; k < count; k++) {
        memcpy(in + k * window, v + k * step, (size_t)window * sizeof *v);
        memcpy(tgt + k * horizon, v + k * step + window, (size_t)horizon * sizeof *v);
    }
    return true;
}

/* ---- NumPy .npy ---- */

typedef enum { NPY_F4, NPY_F8, NPY_I4, NPY_I8, NPY_U1, NPY_I1 } NpyType;

static const struct {
    const char *descr;
    NpyType type;
    int size;
} npy_types[] = {
    {"<f4", NPY_F4, 4}, {"<f8", NPY_F8, 8}, {"<i4", NPY_I4, 4},
    {"<i8", NPY_I8, 8}, {"|u1", NPY_U1, 1}, {"|i1", NPY_I1, 1},
};

/* The header dict: a Python literal with string keys and values that are
 * strings, True/False, or tuples of non-negative integers. */
typedef struct Hdr {
    const char *name;
    const char *start, *p, *end;
    char descr[16];
    bool have_descr, have_fortran, have_shape, fortran;
    int rank;
    int64_t dims[RT_DATA_MAX_RANK];
} Hdr;

static void hdr_space(Hdr *h) {
    while (h->p < h->end && is_space(*h->p))
        h->p++;
}

static bool hdr_char(Hdr *h, char c, RtDataError *err) {
    hdr_space(h);
    if (h->p >= h->end || *h->p != c)
        return rt_data_fail(err, "%s: header: expected '%c' at byte %lld of the dict", h->name, c,
                    (long long)(h->p - h->start) + 1);
    h->p++;
    return true;
}

/* A quoted string; *s points into the header. */
static bool hdr_string(Hdr *h, const char **s, size_t *n, RtDataError *err) {
    hdr_space(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return rt_data_fail(err, "%s: header: expected a quoted string", h->name);
    char q = *h->p++;
    const char *e = memchr(h->p, q, (size_t)(h->end - h->p));
    if (!e)
        return rt_data_fail(err, "%s: header: a string is not closed", h->name);
    *s = h->p;
    *n = (size_t)(e - h->p);
    h->p = e + 1;
    return true;
}

static bool hdr_shape(Hdr *h, RtDataError *err) {
    if (!hdr_char(h, '(', err))
        return false;
    h->rank = 0;
    for (;;) {
        hdr_space(h);
        if (h->p < h->end && *h->p == ')') {
            h->p++;
            return true;
        }
        if (h->p >= h->end || *h->p < '0' || *h->p > '9')
            return rt_data_fail(err, "%s: header: the shape must be a tuple of non-negative integers", h->name);
        int64_t v = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return rt_data_fail(err, "%s: header: a dimension is too large", h->name);
            v = v * 10 + (*h->p++ - '0');
        }
        if (h->p < h->end && *h->p == 'L') /* Python 2 long */
            h->p++;
        if (h->rank == RT_DATA_MAX_RANK)
            return rt_data_fail(err, "%s: more than %d dimensions", h->name, RT_DATA_MAX_RANK);
        h->dims[h->rank++] = v;
        hdr_space(h);
        if (h->p < h->end && *h->p == ',')
            h->p++;
        else if (h->p >= h->end || *h->p != ')')
            return rt_data_fail(err, "%s: header: the shape must be a tuple of non-negative integers", h->name);
    }
}

static bool hdr_parse(Hdr *h, RtDataError *err) {
    if (!hdr_char(h, '{', err))
        return false;
    for (;;) {
        hdr_space(h);
        if (h->p < h->end && *h->p == '}') {
            h->p++;
            break;
        }
        const char *key;
        size_t kn;
        if (!hdr_string(h, &key, &kn, err) || !hdr_char(h, ':', err))
            return false;
        if (kn == 5 && memcmp(key, "descr", 5) == 0) {
            const char *s;
            size_t n;
            if (!hdr_string(h, &s, &n, err))
                return false;
            if (n >= sizeof h->descr)
                return rt_data_fail(err, "%s: dtype '%.*s' is not supported", h->name, rt_data_quote_len(n), s);
            memcpy(h->descr, s, n);
            h->descr[n] = '\0';
            h->have_descr = true;
        } else if (kn == 13 && memcmp(key, "fortran_order", 13) == 0) {
            hdr_space(h);
            size_t left = (size_t)(h->end - h->p);
            if (left >= 4 && memcmp(h->p, "True", 4) == 0)
                h->fortran = true, h->p += 4;
            else if (left >= 5 && memcmp(h->p, "False", 5) == 0)
                h->fortran = false, h->p += 5;
            else
                return rt_data_fail(err, "%s: header: fortran_order must be True or False", h->name);
            h->have_fortran = true;
        } else if (kn == 5 && memcmp(key, "shape", 5) == 0) {
            if (!hdr_shape(h, err))
                return false;
            h->have_shape = true;
        } else {
            return rt_data_fail(err, "%s: header: unknown key '%.*s'", h->name, rt_data_quote_len(kn), key);
        }
        hdr_space(h);
        if (h->p < h->end && *h->p == ',')
            h->p++;
        else if (h->p >= h->end || *h->p != '}')
            return rt_data_fail(err, "%s: header: expected ',' or '}' after '%.*s'", h->name, rt_data_quote_len(kn), key);
    }
    hdr_space(h);
    if (h->p != h->end)
        return rt_data_fail(err, "%s: header: text after the dict", h->name);
    if (!h->have_descr || !h->have_fortran || !h->have_shape)
        return rt_data_fail(err, "%s: header: '%s' is missing", h->name,
                    !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order" : "shape");
    return true;
}

void rt_data_npy_free(RtNpy *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}

static uint64_t load_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Value k converted to `want`; false with err set when it does not fit. */
static bool npy_convert(const char *name, NpyType t, const unsigned char *p, int64_t k, RtDType want,
                        void *out, RtDataError *err) {
    double d = 0;
    int64_t i = 0;
    bool is_float = t == NPY_F4 || t == NPY_F8;
    switch (t) {
    case NPY_F4: {
        uint32_t u = (uint32_t)load_le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        d = f;
        break;
    }
    case NPY_F8: {
        uint64_t u = load_le(p, 8);
        memcpy(&d, &u, 8);
        break;
    }
    case NPY_I4: i = (int32_t)(uint32_t)load_le(p, 4); break;
    case NPY_I8: i = (int64_t)load_le(p, 8); break;
    case NPY_U1: i = p[0]; break;
    case NPY_I1: i = (int8_t)p[0]; break;
    }
    if (is_float && !isfinite(d))
        return rt_data_fail(err, "%s: the value at index %lld is not finite", name, (long long)k);
    if (want == RT_DATA_F32) {
        if (is_float && fabs(d) > FLT_MAX)
            return rt_data_fail(err, "%s: value %g at index %lld does not fit in float32", name, d, (long long)k);
        ((float *)out)[k] = is_float ? (float)d : (float)i;
        return true;
    }
    if (is_float) {
        if (d != floor(d))
            return rt_data_fail(err, "%s: value %g at index %lld is not a whole number", name, d, (long long)k);
        if (d < INT32_MIN || d > INT32_MAX)
            return rt_data_fail(err, "%s: value %.0f at index %lld does not fit in int32", name, d, (long long)k);
        i = (int64_t)d;
    } else if (i < INT32_MIN || i > INT32_MAX) {
        return rt_data_fail(err, "%s: value %lld at index %lld does not fit in int32", name, (long long)i, (long long)k);
    }
    ((int32_t *)out)[k] = (int32_t)i;
    return true;
}

bool rt_data_npy_parse(const char *name, const unsigned char *data, size_t size, RtDType want,
                       RtNpy *out, RtDataError *err) {
    memset(out, 0, sizeof *out);
    if (size == 0)
        return rt_data_fail(err, "%s: empty file", name);
    if (size < 8 || memcmp(data, "\x93NUMPY", 6) != 0)
        return rt_data_fail(err, "%s: not a NumPy .npy file (no magic string)", name);
    int major = data[6], minor = data[7];
    if (minor != 0 || major < 1 || major > 3)
        return rt_data_fail(err, "%s: .npy version %d.%d is not supported (1.0, 2.0 and 3.0 are)", name, major, minor);
    size_t pre = major == 1 ? 10 : 12;
    if (size < pre)
        return rt_data_fail(err, "%s: truncated inside the header", name);
    uint64_t hlen = load_le(data + 8, major == 1 ? 2 : 4);
    if (hlen > RT_DATA_NPY_MAX_HEADER)
        return rt_data_fail(err, "%s: a header of %llu bytes is longer than the limit of %d", name,
                    (unsigned long long)hlen, RT_DATA_NPY_MAX_HEADER);
    if (size - pre < hlen)
        return rt_data_fail(err, "%s: truncated inside the header", name);
    Hdr h = {.name = name, .start = (const char *)data + pre, .p = (const char *)data + pre, .end = (const char *)data + pre + hlen};
    if (!hdr_parse(&h, err))
        return false;
    int itemsize = 0;
    NpyType type = NPY_F4;
    for (size_t k = 0; k < sizeof npy_types / sizeof npy_types[0]; k++)
        if (strcmp(h.descr, npy_types[k].descr) == 0)
            type = npy_types[k].type, itemsize = npy_types[k].size;
    if (itemsize == 0)
        return rt_data_fail(err, "%s: dtype '%s' is not supported (use '<f4', '<f8', '<i4', '<i8' or '|u1'%s)", name,
                    h.descr, h.descr[0] == '>' ? "; this one is big-endian" : "");
    if (h.fortran)
        return rt_data_fail(err, "%s: fortran_order is True; only C order is read (save np.ascontiguousarray(a))",
                    name);
    int64_t count = 1;
    for (int k = 0; k < h.rank; k++) {
        if (h.dims[k] != 0 && count > INT64_MAX / 8 / h.dims[k])
            return rt_data_fail(err, "%s: the shape holds too many values", name);
        count *= h.dims[k];
    }
    uint64_t held = (uint64_t)(size - pre - hlen) / (uint64_t)itemsize;
    if (held < (uint64_t)count)
        return rt_data_fail(err, "%s: truncated: the header promises %lld values, the file holds %llu", name,
                    (long long)count, (unsigned long long)held);
    uint64_t extra = (uint64_t)(size - pre - hlen) - (uint64_t)count * (uint64_t)itemsize;
    if (extra)
        return rt_data_fail(err, "%s: %llu bytes after the %lld values the header promises", name,
                    (unsigned long long)extra, (long long)count);
    out->data = malloc((size_t)(count ? count : 1) * dtype_size(want));
    if (!out->data)
        return rt_data_fail(err, "%s: out of memory for %lld values", name, (long long)count);
    const unsigned char *body = data + pre + hlen;
    for (int64_t k = 0; k < count; k++) {
        if (!npy_convert(name, type, body + k * itemsize, k, want, out->data, err)) {
            rt_data_npy_free(out);
            return false;
        }
    }
    out->dtype = want;
    out->rank = h.rank;
    memcpy(out->dims, h.dims, sizeof h.dims);
    out->count = count;
    return true;
}

bool rt_data_npy_read(const char *path, RtDType want, RtNpy *out, RtDataError *err) {
    char *data;
    size_t size;
    memset(out, 0, sizeof *out);
    if (!rt_data_read_file(path, &data, &size, err))
        return false;
    bool ok = rt_data_npy_parse(path, (const unsigned char *)data, size, want, out, err);
    free(data);
    return ok;
}

bool rt_data_npy_dataset(const char *inputs_path, RtDType in_dtype, const char *targets_path,
                         RtDType tgt_dtype, RtDataset *out, RtDataError *err) {
    RtNpy x, y;
    memset(out, 0, sizeof *out);
    if (!rt_data_npy_read(inputs_path, in_dtype, &x, err))
        return false;
    if (!rt_data_npy_read(targets_path, tgt_dtype, &y, err)) {
        rt_data_npy_free(&x);
        return false;
    }
    bool ok = false;
    if (x.rank < 1 || y.rank < 1)
        rt_data_fail(err, "%s: a scalar array has no example axis", x.rank < 1 ? inputs_path : targets_path);
    else if (x.dims[0] != y.dims[0])
        rt_data_fail(err, "%s has %lld examples but %s has %lld", inputs_path, (long long)x.dims[0], targets_path,
             (long long)y.dims[0]);
    else if (x.dims[0] == 0)
        rt_data_fail(err, "%s: no examples (the first axis is 0)", inputs_path);
    else
        ok = true;
    if (!ok) {
        rt_data_npy_free(&x);
        rt_data_npy_free(&y);
        return false;
    }
    out->count = x.dims[0];
    out->in_dtype = in_dtype;
    out->tgt_dtype = tgt_dtype;
    out->in_rank = x.rank - 1;
    out->tgt_rank = y.rank - 1;
    memcpy(out->in_dims, x.dims + 1, (size_t)out->in_rank * sizeof x.dims[0]);
    memcpy(out->tgt_dims, y.dims + 1, (size_t)out->tgt_rank * sizeof y.dims[0]);
    out->in_size = shape_size(out->in_dims, out->in_rank);
    out->tgt_size = shape_size(out->tgt_dims, out->tgt_rank);
    out->inputs = x.data;
    out->targets = y.data;
    out->owned = true;
    return true;
}
