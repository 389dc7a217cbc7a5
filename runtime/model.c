/* The manifest reader and the slab helpers every command shares. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "init.h"
#include "rng.h"

/* Fields on one manifest line: the longest, `param`, has 18. */
#define MAX_FIELDS 24

typedef struct Reader {
    const char *p;
    int line;
    char *field[MAX_FIELDS];
    int nfields;
    RtModelError *err;
    bool failed;
} Reader;

static void fail(Reader *r, const char *fmt, ...) {
    if (r->failed) return;
    r->failed = true;
    int n = snprintf(r->err->msg, sizeof r->err->msg, "model manifest, line %d: ", r->line);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof r->err->msg) vsnprintf(r->err->msg + n, sizeof r->err->msg - (size_t)n, fmt, ap);
    va_end(ap);
}

static void clear_fields(Reader *r) {
    for (int i = 0; i < r->nfields; i++) free(r->field[i]);
    r->nfields = 0;
}

/* Splits the next line into fields; false at the end of the text. */
static bool next_line(Reader *r) {
    clear_fields(r);
    if (!*r->p) return false;
    r->line++;
    const char *end = strchr(r->p, '\n');
    if (!end) end = r->p + strlen(r->p);
    const char *s = r->p;
    while (s < end) {
        const char *e = s;
        while (e < end && *e != ' ') e++;
        if (r->nfields == MAX_FIELDS) {
            fail(r, "too many fields");
            break;
        }
        char *f = malloc((size_t)(e - s) + 1);
        if (!f) {
            fail(r, "out of memory");
            break;
        }
        memcpy(f, s, (size_t)(e - s));
        f[e - s] = '\0';
        r->field[r->nfields++] = f;
        s = e < end ? e + 1 : e;
    }
    r->p = *end ? end + 1 : end;
    return true;
}

static bool expect(Reader *r, const char *kind, int n) {
    if (r->failed) return false;
    if (r->nfields == 0 || strcmp(r->field[0], kind) != 0) {
        fail(r, "expected '%s', found '%s'", kind, r->nfields ? r->field[0] : "");
        return false;
    }
    if (r->nfields != n) {
        fail(r, "'%s' has %d fields, not %d", kind, r->nfields, n);
        return false;
    }
    return true;
}

static int64_t int_at(Reader *r, int i) {
    char *end;
    errno = 0;
    long long v = strtoll(r->field[i], &end, 10);
    if (errno || *end || end == r->field[i]) fail(r, "field %d is not a whole number: '%s'", i, r->field[i]);
    return v;
}

static double num_at(Reader *r, int i) {
    char *end;
    double v = strtod(r->field[i], &end);
    if (*end || end == r->field[i]) fail(r, "field %d is not a number: '%s'", i, r->field[i]);
    return v;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A percent-encoded field; NULL for `-`. */
static char *str_at(Reader *r, int i) {
    const char *s = r->field[i];
    if (strcmp(s, "-") == 0) return NULL;
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out) {
        fail(r, "out of memory");
        return NULL;
    }
    for (; *s; s++) {
        if (*s == '%') {
            int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
            if (lo < 0) {
                fail(r, "bad escape in field %d", i);
                break;
            }
            *o++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

char *rt_model_encode(const char *s) {
    if (!s) return strdup("-");
    size_t n = strlen(s);
    char *out = malloc(3 * n + 4), *o = out;
    if (!out) return NULL;
    /* An empty field would vanish between two spaces; "%00" reads back as "". */
    if (n == 0) return strcpy(out, "%00");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        bool plain = *c > ' ' && *c < 0x7f && *c != '%' && !(n == 1 && *c == '-'); /* "-" alone means none */
        if (plain) *o++ = (char)*c;
        else o += sprintf(o, "%%%02X", *c);
    }
    *o = '\0';
    return out;
}

static RtDType dtype_at(Reader *r, int i) {
    if (strcmp(r->field[i], "f32") == 0) return RT_DATA_F32;
    if (strcmp(r->field[i], "i32") == 0) return RT_DATA_I32;
    fail(r, "unknown dtype '%s'", r->field[i]);
    return RT_DATA_F32;
}

/* NAME DTYPE batched rank d0 d1 d2 d3 at, from field `i`. */
static void tensor_at(Reader *r, int i, bool has_batched, RtTensor *t) {
    t->name = str_at(r, i);
    t->dtype = dtype_at(r, i + 1);
    int k = i + 2;
    t->batched = has_batched ? int_at(r, k++) != 0 : false;
    t->rank = (int)int_at(r, k++);
    if (t->rank < 0 || t->rank > RT_MODEL_MAX_RANK) fail(r, "rank %d", t->rank);
    t->elems = 1;
    for (int d = 0; d < RT_MODEL_MAX_RANK; d++) {
        t->dims[d] = int_at(r, k++);
        if (d < t->rank) t->elems *= t->dims[d];
    }
    t->at = int_at(r, k);
}

static void *grow(Reader *r, void *p, int n, size_t size) {
    void *q = realloc(p, (size_t)(n + 1) * size);
    if (!q) fail(r, "out of memory");
    return q ? q : p;
}

static void variant(Reader *r, RtVariant *v) {
    if (!expect(r, "variant", 7)) return;
    v->name = str_at(r, 1);
    v->batch = int_at(r, 2);
    v->slab_bytes = int_at(r, 3);
    v->nodes = (int32_t)int_at(r, 4);
    v->forward = (int32_t)int_at(r, 5);
    v->loss = int_at(r, 6);
    while (!r->failed && next_line(r)) {
        const char *k = r->field[0];
        if (r->nfields == 0) continue;
        if (strcmp(k, "end") == 0) return;
        if (strcmp(k, "input") == 0 || strcmp(k, "target") == 0) {
            if (!expect(r, k, 10)) return;
            bool in = k[0] == 'i';
            int *n = in ? &v->ninputs : &v->ntargets;
            RtTensor **list = in ? &v->inputs : &v->targets;
            *list = grow(r, *list, *n, sizeof **list);
            if (r->failed) return;
            memset(&(*list)[*n], 0, sizeof **list);
            tensor_at(r, 1, true, &(*list)[(*n)++]);
        } else if (strcmp(k, "param") == 0) {
            if (!expect(r, k, 18)) return;
            v->params = grow(r, v->params, v->nparams, sizeof *v->params);
            if (r->failed) return;
            RtParam *p = &v->params[v->nparams++];
            memset(p, 0, sizeof *p);
            tensor_at(r, 1, false, &p->t);
            p->grad = int_at(r, 9);
            p->slot[0] = int_at(r, 10);
            p->slot[1] = int_at(r, 11);
            p->trainable = int_at(r, 12) != 0;
            p->init = str_at(r, 13);
            p->args[0] = num_at(r, 14);
            p->args[1] = num_at(r, 15);
            p->units = int_at(r, 16);
            p->vectors = str_at(r, 17);
        } else if (strcmp(k, "update") == 0) {
            if (!expect(r, k, 5)) return;
            v->updates = grow(r, v->updates, v->nupdates, sizeof *v->updates);
            if (r->failed) return;
            v->updates[v->nupdates++] =
                (RtUpdate){.var = int_at(r, 1), .value = int_at(r, 2), .bytes = int_at(r, 3), .state = int_at(r, 4) != 0};
        } else if (strcmp(k, "metric") == 0) {
            if (!expect(r, k, 3)) return;
            v->metrics = grow(r, v->metrics, v->nmetrics, sizeof *v->metrics);
            if (r->failed) return;
            v->metrics[v->nmetrics++] = (RtMetric){.name = str_at(r, 1), .at = int_at(r, 2)};
        } else if (strcmp(k, "output") == 0) {
            if (!expect(r, k, 10)) return;
            tensor_at(r, 1, true, &v->output);
        } else {
            fail(r, "unknown record '%s'", k);
        }
    }
    fail(r, "variant '%s' has no end", v->name ? v->name : "?");
}

/* Every offset inside the slab, so a damaged manifest cannot send a step out of bounds. */
static void check_variant(Reader *r, const RtVariant *v) {
    int64_t max = v->slab_bytes;
#define IN_SLAB(off, bytes, what)                                                                   \
    if ((off) < 0 || (bytes) < 0 || (off) + (bytes) > max) fail(r, "variant %s: %s outside the slab", v->name, what)
    for (int i = 0; i < v->ninputs; i++) IN_SLAB(v->inputs[i].at, rt_tensor_bytes(v, &v->inputs[i]), "an input");
    for (int i = 0; i < v->ntargets; i++) IN_SLAB(v->targets[i].at, rt_tensor_bytes(v, &v->targets[i]), "a target");
    for (int i = 0; i < v->nparams; i++) {
        const RtParam *p = &v->params[i];
        int64_t b = 4 * p->t.elems;
        IN_SLAB(p->t.at, b, "a param");
        if (p->grad >= 0) IN_SLAB(p->grad, b, "a gradient");
        for (int s = 0; s < 2; s++)
            if (p->slot[s] >= 0) IN_SLAB(p->slot[s], b, "an optimizer slot");
    }
    for (int i = 0; i < v->nupdates; i++) {
        IN_SLAB(v->updates[i].var, v->updates[i].bytes, "a state");
        IN_SLAB(v->updates[i].value, v->updates[i].bytes, "a state's value");
    }
    for (int i = 0; i < v->nmetrics; i++) IN_SLAB(v->metrics[i].at, 4, "a metric");
    if (v->loss >= 0) IN_SLAB(v->loss, 4, "the loss");
    IN_SLAB(v->output.at, rt_tensor_bytes(v, &v->output), "the output");
#undef IN_SLAB
}

bool rt_model_parse(const RtModelCode *code, RtModel *out, RtModelError *err) {
    memset(out, 0, sizeof *out);
    Reader r = {.p = code->manifest, .err = err};
    if (!next_line(&r) || !expect(&r, "seqc-model", 2) || int_at(&r, 1) != RT_MODEL_VERSION) {
        fail(&r, "not a seqc model manifest of version %d", RT_MODEL_VERSION);
        clear_fields(&r);
        return false;
    }
    if (next_line(&r) && expect(&r, "model", 5)) {
        out->name = str_at(&r, 1);
        out->source = str_at(&r, 2);
        out->stateful = int_at(&r, 3) != 0;
        out->vocab = int_at(&r, 4);
    }
    RtRecipe *c = &out->recipe;
    if (next_line(&r) && expect(&r, "recipe", 11)) {
        const char *o = r.field[1];
        c->opt = strcmp(o, "sgd") == 0 ? RT_OPT_SGD : strcmp(o, "rmsprop") == 0 ? RT_OPT_RMSPROP : RT_OPT_ADAM;
        c->lr = num_at(&r, 2);
        c->batch = int_at(&r, 3);
        c->epochs = int_at(&r, 4);
        c->seed = int_at(&r, 5);
        c->bptt_every = int_at(&r, 6);
        c->bptt_window = int_at(&r, 7);
        c->validate = num_at(&r, 8);
        c->validate_path = str_at(&r, 9);
        c->shuffle = int_at(&r, 10) != 0;
    }
    if (next_line(&r) && expect(&r, "data", 11)) {
        static const char *const kinds[] = {"none", "text", "tsv", "csv", "npy"};
        c->data = RT_SRC_NONE;
        for (int k = 0; k < 5; k++)
            if (strcmp(r.field[1], kinds[k]) == 0) c->data = (RtSourceKind)k;
        c->path = str_at(&r, 2);
        c->path2 = str_at(&r, 3);
        c->word_level = int_at(&r, 4) != 0;
        c->lower = int_at(&r, 5) != 0;
        c->letters_only = int_at(&r, 6) != 0;
        c->pad_post = int_at(&r, 7) != 0;
        c->truncate_post = int_at(&r, 8) != 0;
        c->column = int_at(&r, 9);
        c->header = int_at(&r, 10) != 0;
    }
    if (next_line(&r)) variant(&r, &out->train);
    if (next_line(&r)) variant(&r, &out->infer);
    if (!r.failed && (!out->train.name || !out->infer.name)) fail(&r, "the manifest needs two variants");
    if (!r.failed) check_variant(&r, &out->train);
    if (!r.failed) check_variant(&r, &out->infer);
    if (!r.failed && out->infer.nparams != out->train.nparams) fail(&r, "the variants have different params");
    clear_fields(&r);
    out->train.step = code->train_step;
    out->train.update = code->train_update;
    out->infer.step = code->infer_step;
    if (!r.failed && (!out->train.step || !out->infer.step)) fail(&r, "a compiled step is missing");
    if (r.failed) rt_model_free(out);
    return !r.failed;
}

static void free_variant(RtVariant *v) {
    free(v->name);
    for (int i = 0; i < v->ninputs; i++) free(v->inputs[i].name);
    for (int i = 0; i < v->ntargets; i++) free(v->targets[i].name);
    for (int i = 0; i < v->nparams; i++) {
        free(v->params[i].t.name);
        free(v->params[i].init);
        free(v->params[i].vectors);
    }
    for (int i = 0; i < v->nmetrics; i++) free(v->metrics[i].name);
    free(v->output.name);
    free(v->inputs);
    free(v->targets);
    free(v->params);
    free(v->updates);
    free(v->metrics);
}

void rt_model_free(RtModel *m) {
    free(m->name);
    free(m->source);
    free(m->recipe.validate_path);
    free(m->recipe.path);
    free(m->recipe.path2);
    free_variant(&m->train);
    free_variant(&m->infer);
    memset(m, 0, sizeof *m);
}

int64_t rt_tensor_bytes(const RtVariant *v, const RtTensor *t) { return 4 * t->elems * (t->batched ? v->batch : 1); }

/* The slab comes zeroed from the kernel, page by page as a step first
 * touches it (aligned_alloc and memset wrote all of it once more before the
 * first step: wordlm's 146 MB, some 20 ms). A large one is mapped on its own
 * and asks for 2 MB pages: kernels walk it at strides of a row (a weight
 * gradient's product reads 256 rows of its B 19 KB apart), which on 4 KB
 * pages miss the TLB at every row. A small one comes from calloc, aligned by
 * hand. Either way the slab's header, just before it, says how to free it. */
typedef struct SlabHead {
    void *block;
    size_t mapped; /* bytes mapped, or 0: block is calloc's */
} SlabHead;

#define SLAB_HUGE ((size_t)2 << 20)

uint8_t *rt_slab_new(const RtVariant *v) {
    size_t n = (size_t)(v->slab_bytes + 63) / 64 * 64;
    if (n >= 2 * SLAB_HUGE) {
        /* A page for the header, then the slab from a 2 MB boundary. */
        size_t len = n + SLAB_HUGE + 4096;
        uint8_t *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return NULL;
        uint8_t *p = base + 4096 + (SLAB_HUGE - (uintptr_t)(base + 4096) % SLAB_HUGE) % SLAB_HUGE;
#ifdef MADV_HUGEPAGE
        madvise(p, n, MADV_HUGEPAGE); /* advice: a kernel without it keeps 4 KB pages */
#endif
        memcpy(p - sizeof(SlabHead), &(SlabHead){base, len}, sizeof(SlabHead));
        return p;
    }
    uint8_t *block = calloc(1, (n ? n : 64) + 128);
    if (!block) return NULL;
    uint8_t *p = block + 64 - (uintptr_t)block % 64;
    if ((size_t)(p - block) < sizeof(SlabHead)) p += 64;
    memcpy(p - sizeof(SlabHead), &(SlabHead){block, 0}, sizeof(SlabHead));
    return p;
}

void rt_slab_free(uint8_t *slab) {
    if (!slab) return;
    SlabHead h;
    memcpy(&h, slab - sizeof h, sizeof h);
    if (h.mapped) munmap(h.block, h.mapped);
    else free(h.block);
}

bool rt_model_init_params(const RtVariant *v, uint8_t *slab, uint64_t seed, RtModelError *err) {
    for (int i = 0; i < v->nparams; i++) {
        const RtParam *p = &v->params[i];
        RtInitSpec spec;
        if (!rt_init_spec_from(p->init, p->args, &spec)) {
            snprintf(err->msg, sizeof err->msg, "param '%s': unknown initializer '%s'", p->t.name,
                     p->init ? p->init : "-");
            return false;
        }
        double *tmp = malloc(sizeof(double) * (size_t)(p->t.elems > 0 ? p->t.elems : 1));
        if (!tmp) {
            snprintf(err->msg, sizeof err->msg, "out of memory initialising '%s'", p->t.name);
            return false;
        }
        RtRng rng;
        rt_rng_seed(&rng, seed, (uint64_t)i);
        RtInitStatus st = rt_init_fill(&spec, tmp, p->t.dims, p->t.rank, &rng);
        if (st != RT_INIT_OK) {
            snprintf(err->msg, sizeof err->msg, "param '%s': %s", p->t.name, rt_init_status_message(st));
            free(tmp);
            return false;
        }
        float *w = (float *)(slab + p->t.at);
        for (int64_t k = 0; k < p->t.elems; k++) w[k] = (float)tmp[k];
        free(tmp);
    }
    return true;
}

void rt_model_copy_params(const RtVariant *from, const uint8_t *src, const RtVariant *to, uint8_t *dst) {
    for (int i = 0; i < from->nparams && i < to->nparams; i++)
        memcpy(dst + to->params[i].t.at, src + from->params[i].t.at, (size_t)(4 * from->params[i].t.elems));
}

void rt_model_apply_updates(const RtVariant *v, uint8_t *slab, bool training) {
    for (int i = 0; i < v->nupdates; i++) {
        const RtUpdate *u = &v->updates[i];
        if (u->state || training) memmove(slab + u->var, slab + u->value, (size_t)u->bytes);
    }
}

void rt_model_reset_states(const RtVariant *v, uint8_t *slab) {
    for (int i = 0; i < v->nupdates; i++)
        if (v->updates[i].state) memset(slab + v->updates[i].var, 0, (size_t)v->updates[i].bytes);
}
