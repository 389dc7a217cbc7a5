/* Pretrained word vectors: see vectors.h for the format.
 *
 * The file is streamed line by line (GloVe's larger files are several GB, over
 * the whole-file limit of the data loaders). Every line's dimension is
 * checked; only the lines of vocabulary tokens have their numbers parsed,
 * which keeps a 400,000-word file with a 20,000-word vocabulary quick. */
#include "vectors.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>




typedef struct Reader {
    FILE *f;
    const char *path;
    char *buf;
    size_t cap;
    int64_t lineno;
} Reader;

/* Reads the next line into r->buf (NUL-terminated, without "\n"): 1 and its
 * length and whether a newline ended it, 0 at the end of the file, -1 with
 * err set on a read error, a line over the limit or no memory. */
static int read_line(Reader *r, size_t *len, bool *newline, RtDataError *err) {
    size_t n = 0;
    int c;
    *newline = false;
    while ((c = getc_unlocked(r->f)) != EOF) {
        if (c == '\n') {
            *newline = true;
            break;
        }
        if ((int64_t)n == RT_VECTORS_MAX_LINE_BYTES) {
            rt_data_fail(err, "%s:%lld: line longer than the limit of %lld bytes", r->path, (long long)r->lineno + 1,
                 (long long)RT_VECTORS_MAX_LINE_BYTES);
            return -1;
        }
        if (n + 1 >= r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 4096;
            char *b = realloc(r->buf, cap);
            if (!b) {
                rt_data_fail(err, "%s: out of memory", r->path);
                return -1;
            }
            r->buf = b;
            r->cap = cap;
        }
        r->buf[n++] = (char)c;
    }
    if (ferror(r->f)) {
        rt_data_fail(err, "%s: read error", r->path);
        return -1;
    }
    if (n == 0 && !*newline)
        return 0;
    if (!r->buf && !(r->buf = malloc(r->cap = 16))) {
        rt_data_fail(err, "%s: out of memory", r->path);
        return -1;
    }
    r->buf[n] = '\0';
    r->lineno++;
    *len = n;
    return 1;
}

static bool is_sep(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Fields of a line, at most `max` recorded; returns how many there are. */
static int64_t split(char *line, size_t len, char **f, size_t *flen, int64_t max) {
    int64_t n = 0;
    size_t i = 0;
    for (;;) {
        while (i < len && is_sep(line[i]))
            i++;
        if (i == len)
            return n;
        size_t j = i;
        while (j < len && !is_sep(line[j]))
            j++;
        if (n < max) {
            f[n] = line + i;
            flen[n] = j - i;
        }
        n++;
        i = j;
    }
}

static bool whole_number(const char *s, size_t n, long long *v) {
    if (n == 0 || n > 18)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *v = *v * 10 + (s[i] - '0');
    }
    return true;
}

/* Parses one value; the field is NUL-terminated in place (the separator after
 * it, or the line's end, is overwritten). */
static bool parse_value(const Reader *r, char *s, size_t n, int64_t k, float *out, RtDataError *err) {
    char keep = s[n];
    s[n] = '\0';
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    s[n] = keep;
    if (end != s + n)
        return rt_data_fail(err, "%s:%lld: value %lld '%.*s' is not a number", r->path, (long long)r->lineno,
                    (long long)k + 1, rt_data_quote_len(n), s);
    if (!isfinite(v) || fabs(v) > FLT_MAX)
        return rt_data_fail(err, "%s:%lld: value %lld '%.*s' is not a finite number that fits in f32", r->path,
                    (long long)r->lineno, (long long)k + 1, rt_data_quote_len(n), s);
    *out = (float)v;
    return true;
}

bool rt_vectors_fill(const char *path, const RtVocab *vocab, float *matrix, int64_t dim, int64_t *found,
                     RtDataError *err) {
    *found = 0;
    if (dim < 1 || dim > RT_VECTORS_MAX_DIM)
        return rt_data_fail(err, "%s: dimension %lld is outside 1..%d", path, (long long)dim, RT_VECTORS_MAX_DIM);
    Reader r = {fopen(path, "rb"), path, NULL, 0, 0};
    if (!r.f)
        return rt_data_fail(err, "%s: cannot open: %s", path, strerror(errno));
    char **f = malloc((size_t)(dim + 1) * sizeof *f);
    size_t *flen = malloc((size_t)(dim + 1) * sizeof *flen);
    int64_t *seen = calloc((size_t)(vocab->size > 0 ? vocab->size : 1), sizeof *seen); /* line of each id */
    bool ok = false;
    long long promised = -1, vectors = 0;
    size_t len;
    bool newline;
    int got;
    if (!f || !flen || !seen) {
        rt_data_fail(err, "%s: out of memory", path);
        goto done;
    }
    while ((got = read_line(&r, &len, &newline, err)) > 0) {
        int64_t n = split(r.buf, len, f, flen, dim + 1);
        if (n == 0) {
            rt_data_fail(err, "%s:%lld: empty line", path, (long long)r.lineno);
            goto done;
        }
        long long count, hdim;
        if (r.lineno == 1 && n == 2 && whole_number(f[0], flen[0], &count) && whole_number(f[1], flen[1], &hdim)) {
            if (hdim != dim) {
                rt_data_fail(err, "%s:1: the header gives dimension %lld, expected %lld", path, hdim, (long long)dim);
                goto done;
            }
            promised = count;
            continue;
        }
        if (n - 1 != dim) {
            if (!newline && n - 1 < dim)
                rt_data_fail(err, "%s:%lld: the file ends inside this line (%lld of %lld values)", path,
                     (long long)r.lineno, (long long)n - 1, (long long)dim);
            else
                rt_data_fail(err, "%s:%lld: %lld value%s, expected %lld", path, (long long)r.lineno, (long long)n - 1,
                     n - 1 == 1 ? "" : "s", (long long)dim);
            goto done;
        }
        if (promised >= 0 && vectors == promised) {
            rt_data_fail(err, "%s:%lld: more vectors than the %lld the header promises", path, (long long)r.lineno,
                 promised);
            goto done;
        }
        vectors++;
        int32_t id = rt_data_vocab_id(vocab, f[0], flen[0]);
        if (id == 0)
            continue;
        if (seen[id]) {
            rt_data_fail(err, "%s:%lld: token '%.*s' appears twice (first on line %lld)", path, (long long)r.lineno,
                 rt_data_quote_len(flen[0]), f[0], (long long)seen[id]);
            goto done;
        }
        seen[id] = r.lineno;
        float *row = matrix + (int64_t)id * dim;
        for (int64_t k = 0; k < dim; k++)
            if (!parse_value(&r, f[k + 1], flen[k + 1], k, &row[k], err))
                goto done;
        ++*found;
    }
    if (got < 0)
        goto done;
    if (r.lineno == 0) {
        rt_data_fail(err, "%s: empty file", path);
        goto done;
    }
    if (promised >= 0 && vectors < promised) {
        rt_data_fail(err, "%s: truncated: the header promises %lld vectors, the file holds %lld", path, promised, vectors);
        goto done;
    }
    ok = true;
done:
    fclose(r.f);
    free(r.buf);
    free(f);
    free(flen);
    free(seen);
    return ok;
}
