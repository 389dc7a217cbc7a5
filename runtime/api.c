/* The C API of `seqc compile --emit=lib`: one model, one example at a time,
 * through the batch-1 variant. The header seqc writes (NAME.h) binds it to
 * the model's code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

typedef struct SeqcModel {
    RtSession s;
    char error[RT_MODEL_ERROR_BYTES];
} SeqcModel;

/* The API's functions report through the handle, not on stderr. */
SeqcModel *seqc_model_new(const RtModelCode *code);
int seqc_model_load(SeqcModel *m, const char *path);
int seqc_model_predict(SeqcModel *m, const void *input, float *output);
void seqc_model_reset(SeqcModel *m);
const char *seqc_model_error(const SeqcModel *m);
void seqc_model_free(SeqcModel *m);

SeqcModel *seqc_model_new(const RtModelCode *code) {
    SeqcModel *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->s.prog = "seqc_model";
    m->s.cmd = "new";
    RtModelError e;
    if (!rt_model_parse(code, &m->s.m, &e)) {
        free(m);
        return NULL;
    }
    m->s.slab = rt_slab_new(&m->s.m.train);
    if (!m->s.slab || !rt_model_init_params(&m->s.m.train, m->s.slab, (uint64_t)m->s.m.recipe.seed, &e) ||
        !rt_infer_slab(&m->s)) {
        seqc_model_free(m);
        return NULL;
    }
    return m;
}

int seqc_model_load(SeqcModel *m, const char *path) {
    /* The loader reports on stderr; the handle keeps a summary too. */
    m->s.cmd = "load";
    if (!rt_checkpoint_load(&m->s, path, false)) {
        snprintf(m->error, sizeof m->error, "cannot load %s (see the message on standard error)", path);
        return -1;
    }
    rt_infer_slab(&m->s);
    rt_model_reset_states(&m->s.m.infer, m->s.islab);
    return 0;
}

int seqc_model_predict(SeqcModel *m, const void *input, float *output) {
    const RtVariant *v = &m->s.m.infer;
    if (v->ninputs != 1) {
        snprintf(m->error, sizeof m->error, "the model has %d inputs; the API feeds one", v->ninputs);
        return -1;
    }
    const RtTensor *x = &v->inputs[0];
    if (x->dtype == RT_DATA_I32 && m->s.m.vocab) {
        const int32_t *ids = input;
        for (int64_t i = 0; i < x->elems; i++)
            if (ids[i] < 0 || ids[i] >= m->s.m.vocab) {
                snprintf(m->error, sizeof m->error, "input %lld is token id %d, outside the vocabulary [0, %lld)",
                         (long long)i, ids[i], (long long)m->s.m.vocab);
                return -1;
            }
    }
    memcpy(m->s.islab + x->at, input, (size_t)(4 * x->elems));
    v->step(m->s.islab, 0, 0, v->forward);
    rt_model_apply_updates(v, m->s.islab, false);
    memcpy(output, m->s.islab + v->output.at, (size_t)(4 * v->output.elems));
    return 0;
}

void seqc_model_reset(SeqcModel *m) { rt_model_reset_states(&m->s.m.infer, m->s.islab); }

const char *seqc_model_error(const SeqcModel *m) { return m->error; }

void seqc_model_free(SeqcModel *m) {
    if (!m) return;
    rt_slab_free(m->s.slab);
    rt_slab_free(m->s.islab);
    if (m->s.has_vocab) rt_data_vocab_free(&m->s.vocab);
    rt_model_free(&m->s.m);
    free(m);
}
