/* Checkpoints: one safetensors file per model.
 *
 * Tensors: each param under its name in the model (`h.W`, `e.embeddings`),
 * f32 in its shape; the optimizer's state as `optimizer.0/NAME` and
 * `optimizer.1/NAME` (Adam's m and v; SGD's or RMSprop's momentum, RMSprop's
 * mean square); a stateful layer's carried state as `state/K` (K: its index
 * among the model's state updates), f32 [batch, units].
 * Metadata: `seqc.model`, `seqc.step` (optimizer steps), `seqc.epoch` (epochs
 * done), `seqc.batch` (batches of the next epoch done, when interrupted),
 * `seqc.seed` (shuffling and dropout are functions of it and of the epoch and
 * step: that is the generator's whole state), `seqc.vocab` (the vocabulary's
 * saved form, data.h). The writer goes through a temporary file and a rename,
 * so a crash leaves the previous checkpoint whole. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "session.h"

#define NAME_BYTES 512

static bool add(RtSession *s, RtStWriter *w, const char *name, const int64_t *shape, int rank, const void *data) {
    char *e = rt_st_writer_add(w, name, RT_ST_F32, shape, rank, data);
    if (!e) return true;
    rt_fail(s, "checkpoint: %s", e);
    rt_st_error_free(e);
    return false;
}

static bool meta(RtSession *s, RtStWriter *w, const char *key, const char *value) {
    char *e = rt_st_writer_set_meta(w, key, value);
    if (!e) return true;
    rt_fail(s, "checkpoint: %s", e);
    rt_st_error_free(e);
    return false;
}

static bool meta_int(RtSession *s, RtStWriter *w, const char *key, int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return meta(s, w, key, buf);
}

bool rt_checkpoint_save(RtSession *s, const char *path) {
    const RtVariant *v = &s->m.train;
    RtStWriter *w = rt_st_writer_new();
    if (!w) {
        rt_fail(s, "out of memory");
        return false;
    }
    bool ok = true;
    char name[NAME_BYTES];
    for (int i = 0; i < v->nparams && ok; i++) {
        const RtParam *p = &v->params[i];
        ok = add(s, w, p->t.name, p->t.dims, p->t.rank, s->slab + p->t.at);
        for (int k = 0; k < 2 && ok; k++) {
            if (p->slot[k] < 0) continue;
            snprintf(name, sizeof name, "optimizer.%d/%s", k, p->t.name);
            ok = add(s, w, name, p->t.dims, p->t.rank, s->slab + p->slot[k]);
        }
    }
    for (int i = 0; i < v->nupdates && ok; i++) {
        if (!v->updates[i].state) continue;
        snprintf(name, sizeof name, "state/%d", i);
        int64_t n = v->updates[i].bytes / 4;
        ok = add(s, w, name, &n, 1, s->slab + v->updates[i].var);
    }
    ok = ok && meta(s, w, "seqc.model", s->m.name) && meta_int(s, w, "seqc.step", s->step) &&
         meta_int(s, w, "seqc.epoch", s->epoch) && meta_int(s, w, "seqc.batch", s->batch_in_epoch) &&
         meta_int(s, w, "seqc.seed", (int64_t)s->seed);
    if (ok && s->has_vocab) {
        RtDataError e;
        size_t size;
        char *text = rt_data_vocab_format(&s->vocab, &size, &e);
        if (!text) {
            rt_fail(s, "%s", e.msg);
            ok = false;
        } else {
            ok = meta(s, w, "seqc.vocab", text);
            free(text);
        }
    }
    if (ok) {
        char *e = rt_st_writer_write(w, path);
        if (e) {
            rt_fail(s, "%s", e);
            rt_st_error_free(e);
            ok = false;
        }
    }
    rt_st_writer_free(w);
    return ok;
}

static bool read_tensor(RtSession *s, const RtStFile *f, const char *name, const int64_t *dims, int rank, void *out,
                        int64_t count) {
    const RtStTensor *t = rt_st_find(f, name);
    if (!t) {
        rt_fail(s, "%s has no tensor '%s'", rt_st_label(f), name);
        return false;
    }
    bool same = t->rank == rank && t->dtype == RT_ST_F32;
    for (int d = 0; same && d < rank; d++) same = t->shape[d] == dims[d];
    if (!same) {
        char want[128] = "", got[128] = "";
        for (int d = 0; d < rank; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, d ? ", " : "", dims[d]);
        for (int d = 0; d < t->rank; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, d ? ", " : "", t->shape[d]);
        rt_fail(s, "%s: tensor '%s' is %s[%s]; the model's is F32[%s]", rt_st_label(f), name,
                rt_st_dtype_name(t->dtype), got, want);
        return false;
    }
    char *e = rt_st_read_f32(f, name, out, count);
    if (!e) return true;
    rt_fail(s, "%s", e);
    rt_st_error_free(e);
    return false;
}

static bool meta_number(RtSession *s, const RtStFile *f, const char *key, int64_t *out) {
    const char *v = rt_st_meta_get(f, key);
    char *end;
    if (!v || (*out = strtoll(v, &end, 10), *end || end == v)) {
        rt_fail(s, "%s is not a training checkpoint: its metadata has no %s (load weights with --weights)",
                rt_st_label(f), key);
        return false;
    }
    return true;
}

bool rt_checkpoint_load(RtSession *s, const char *path, bool training_state) {
    RtStFile *f;
    char *e = rt_st_open(path, &f);
    if (e) {
        rt_fail(s, "%s", e);
        rt_st_error_free(e);
        return false;
    }
    const RtVariant *v = &s->m.train;
    bool ok = true;
    char name[NAME_BYTES];
    /* Every tensor of the file must be the model's: a stray one means the wrong file. */
    for (size_t i = 0; i < rt_st_tensor_count(f) && ok; i++) {
        const char *n = rt_st_tensor_at(f, i)->name;
        bool known = strncmp(n, "optimizer.", 10) == 0 || strncmp(n, "state/", 6) == 0;
        for (int k = 0; k < v->nparams && !known; k++) known = strcmp(v->params[k].t.name, n) == 0;
        if (!known) {
            rt_fail(s, "%s has a tensor '%s' that model '%s' does not have", path, n, s->m.name);
            ok = false;
        }
    }
    for (int i = 0; i < v->nparams && ok; i++) {
        const RtParam *p = &v->params[i];
        ok = read_tensor(s, f, p->t.name, p->t.dims, p->t.rank, s->slab + p->t.at, p->t.elems);
        for (int k = 0; k < 2 && ok && training_state; k++) {
            if (p->slot[k] < 0) continue;
            snprintf(name, sizeof name, "optimizer.%d/%s", k, p->t.name);
            ok = read_tensor(s, f, name, p->t.dims, p->t.rank, s->slab + p->slot[k], p->t.elems);
        }
    }
    for (int i = 0; i < v->nupdates && ok && training_state; i++) {
        if (!v->updates[i].state) continue;
        snprintf(name, sizeof name, "state/%d", i);
        int64_t n = v->updates[i].bytes / 4;
        ok = read_tensor(s, f, name, &n, 1, s->slab + v->updates[i].var, n);
    }
    if (ok && training_state) {
        int64_t seed;
        ok = meta_number(s, f, "seqc.step", &s->step) && meta_number(s, f, "seqc.epoch", &s->epoch) &&
             meta_number(s, f, "seqc.batch", &s->batch_in_epoch) && meta_number(s, f, "seqc.seed", &seed);
        if (ok) s->seed = (uint64_t)seed;
    }
    const char *vocab = rt_st_meta_get(f, "seqc.vocab");
    if (ok && vocab && !s->has_vocab) {
        RtDataError de;
        if (rt_data_vocab_parse(path, vocab, strlen(vocab), &s->vocab, &de)) {
            s->has_vocab = true;
        } else {
            rt_fail(s, "%s", de.msg);
            ok = false;
        }
    }
    rt_st_close(f);
    return ok;
}
