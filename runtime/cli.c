/* The command line of a compiled model, shared by `seqc run MODEL.seq ...`
 * and the executables `seqc compile` writes. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plot.h"
#include "pool.h"
#include "session.h"

static const char usage[] =
    "usage: %s COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  train        train on the train block's data (or --data), with validation, checkpoints and history\n"
    "  eval         loss and metrics of the checkpoint on --data (default: the validation data)\n"
    "  predict      one line of outputs per input line of --data (default: standard input)\n"
    "  sample       generate text from --prime with --temperature and --top-k\n"
    "  embeddings   the embedding matrix as TSV, the token in the first column\n"
    "  info         the compiled model: variants, tensors, recipe\n"
    "  plot         draw a history CSV or a checkpoint's embeddings as SVG (plot --help)\n"
    "\n"
    "options (train):\n"
    "  --epochs N  --batch N  --bptt N  --lr X  --seed N  --data FILE  --validate X|FILE (0: none)\n"
    "  --resume              continue from the checkpoint\n"
    "  --weights FILE        start from the params in a safetensors file\n"
    "  --checkpoint FILE     where checkpoints go (default: MODEL.safetensors)\n"
    "  --history FILE        the per-epoch history CSV (default: MODEL.history.csv)\n"
    "  --quiet               no progress output\n"
    "options (sample): --prime TEXT  --length N  --temperature X  --top-k K  --seed N\n"
    "options (eval, predict, sample, embeddings): --checkpoint FILE or --weights FILE\n"
    "options (all): --threads N   threads the kernels split over (default: one per core; results do not\n"
    "                             depend on it)\n";

typedef struct CliOption {
    const char *name;
    enum { O_FLAG, O_INT, O_NUM, O_STR } kind;
    size_t field;
    double min, max;
} CliOption;

static const CliOption cli_options[] = {
    {"--epochs", O_INT, offsetof(RtOptions, epochs), 1, 1e9},
    {"--batch", O_INT, offsetof(RtOptions, batch), 1, 1 << 24},
    {"--bptt", O_INT, offsetof(RtOptions, bptt), 1, 1e9},
    {"--seed", O_INT, offsetof(RtOptions, seed), 0, 9.2e18},
    {"--lr", O_NUM, offsetof(RtOptions, lr), 1e-300, 1e300},
    {"--data", O_STR, offsetof(RtOptions, data), 0, 0},
    {"--checkpoint", O_STR, offsetof(RtOptions, checkpoint), 0, 0},
    {"--weights", O_STR, offsetof(RtOptions, weights), 0, 0},
    {"--history", O_STR, offsetof(RtOptions, history), 0, 0},
    {"--resume", O_FLAG, offsetof(RtOptions, resume), 0, 0},
    {"--quiet", O_FLAG, offsetof(RtOptions, quiet), 0, 0},
    {"--prime", O_STR, offsetof(RtOptions, prime), 0, 0},
    {"--length", O_INT, offsetof(RtOptions, length), 1, 1e9},
    {"--top-k", O_INT, offsetof(RtOptions, top_k), 1, 1e9},
    {"--temperature", O_NUM, offsetof(RtOptions, temperature), 1e-6, 1e6},
    {"--threads", O_INT, offsetof(RtOptions, threads), 1, RT_MAX_THREADS},
};

/* `--validate` takes a fraction or a file. */
static int parse(RtSession *s, int argc, char **argv) {
    RtOptions *o = &s->o;
    memset(o, 0, sizeof *o);
    o->seed = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t alen = eq ? (size_t)(eq - a) : strlen(a);
        const char *value = NULL;
        if (alen == 10 && strncmp(a, "--validate", 10) == 0) {
            value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (!value) {
                rt_fail(s, "--validate needs a fraction or a file");
                return 2;
            }
            char *end;
            double f = strtod(value, &end);
            if (*end == '\0' && end != value) {
                if (!(f >= 0 && f < 1)) {
                    rt_fail(s, "--validate takes a fraction from 0 (none) to below 1, or a file, not %s", value);
                    return 2;
                }
                o->validate = f;
                o->no_validation = f == 0;
            } else {
                o->validate_path = value;
            }
            continue;
        }
        const CliOption *spec = NULL;
        for (size_t k = 0; k < sizeof cli_options / sizeof cli_options[0]; k++)
            if (strlen(cli_options[k].name) == alen && strncmp(a, cli_options[k].name, alen) == 0) spec = &cli_options[k];
        if (!spec) {
            rt_fail(s, "unknown option or argument '%s' (see %s --help)", a, s->prog);
            return 2;
        }
        char *field = (char *)o + spec->field;
        if (spec->kind == O_FLAG) {
            if (eq) {
                rt_fail(s, "%.*s takes no value", (int)alen, a);
                return 2;
            }
            *(bool *)field = true;
            continue;
        }
        value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!value) {
            rt_fail(s, "%s needs a value", a);
            return 2;
        }
        if (spec->kind == O_STR) {
            *(const char **)field = value;
            continue;
        }
        char *end;
        errno = 0;
        double v = spec->kind == O_INT ? (double)strtoll(value, &end, 10) : strtod(value, &end);
        if (*value == '\0' || *end || errno || v < spec->min || v > spec->max) {
            rt_fail(s, "%.*s takes %s from %g to %g, not '%s'", (int)alen, a,
                    spec->kind == O_INT ? "a whole number" : "a number", spec->min, spec->max, value);
            return 2;
        }
        if (spec->kind == O_INT) *(int64_t *)field = strtoll(value, NULL, 10);
        else *(double *)field = v;
    }
    return 0;
}

static void print_tensor(const char *kind, const RtTensor *t) {
    printf("  %-7s %-24s %s[", kind, t->name, t->dtype == RT_DATA_I32 ? "i32" : "f32");
    for (int d = 0; d < t->rank; d++) printf("%s%lld", d ? ", " : "", (long long)t->dims[d]);
    printf("]%s\n", t->batched ? " per example" : "");
}

static int info(RtSession *s) {
    const RtModel *m = &s->m;
    printf("model %s (from %s)%s\n", m->name, m->source ? m->source : "?", m->stateful ? ", stateful" : "");
    const RtVariant *vs[2] = {&m->train, &m->infer};
    for (int k = 0; k < 2; k++) {
        const RtVariant *v = vs[k];
        printf("variant %s: batch %lld, slab %lld bytes\n", v->name, (long long)v->batch, (long long)v->slab_bytes);
        for (int i = 0; i < v->ninputs; i++) print_tensor("input", &v->inputs[i]);
        for (int i = 0; i < v->ntargets; i++) print_tensor("target", &v->targets[i]);
        if (k == 0)
            for (int i = 0; i < v->nparams; i++) print_tensor("param", &v->params[i].t);
        print_tensor("output", &v->output);
    }
    static const char *const opts[] = {"sgd", "rmsprop", "adam"};
    const RtRecipe *r = &m->recipe;
    printf("train: %s lr %g, batch %lld, epochs %lld, seed %lld", opts[r->opt], r->lr, (long long)r->batch,
           (long long)r->epochs, (long long)r->seed);
    if (r->bptt_window) printf(", bptt %lld/%lld", (long long)r->bptt_every, (long long)r->bptt_window);
    if (r->path) printf(", data %s%s%s", r->path, r->path2 ? " " : "", r->path2 ? r->path2 : "");
    putchar('\n');
    return 0;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* The weights an inference command uses: --weights, else the checkpoint. */
static bool load_for_inference(RtSession *s) {
    if (s->o.weights) return rt_checkpoint_load(s, s->o.weights, false);
    if (!exists(s->checkpoint)) {
        rt_fail(s, "no checkpoint %s: train first (%s train), or name one with --checkpoint FILE or --weights FILE",
                s->checkpoint, s->prog);
        return false;
    }
    return rt_checkpoint_load(s, s->checkpoint, false);
}

static char *default_path(const char *name, const char *suffix) {
    size_t n = strlen(name) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", name, suffix);
    return p;
}

int rt_main(const RtModelCode *code, const char *prog, int argc, char **argv) {
    RtSession s = {.prog = prog, .cmd = "run"};
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fprintf(argc < 1 ? stderr : stdout, usage, prog);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "plot") == 0) return rt_plot_main(argc, argv, prog);
    static const char *const commands[] = {"train", "eval", "predict", "sample", "embeddings", "info"};
    int cmd = -1;
    for (int k = 0; k < 6; k++)
        if (strcmp(argv[0], commands[k]) == 0) cmd = k;
    if (cmd < 0) {
        fprintf(stderr, "%s: unknown command '%s'\n\n", prog, argv[0]);
        fprintf(stderr, usage, prog);
        return 2;
    }
    s.cmd = commands[cmd];
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf(usage, prog);
            return 0;
        }
    int status = parse(&s, argc - 1, argv + 1);
    if (status) return status;
    rt_set_threads((int)s.o.threads);
    RtModelError me;
    if (!rt_model_parse(code, &s.m, &me)) {
        rt_fail(&s, "%s", me.msg);
        return 1;
    }
    status = 1;
    RtModel *m = &s.m;
    /* What is compiled in cannot change here. */
    if (s.o.batch && s.o.batch != m->train.batch) {
        rt_fail(&s, "this model is compiled for batch %lld; compile it again for batch %lld (seqc compile --batch "
                "%lld), or use seqc run, which compiles for the batch asked", (long long)m->train.batch,
                (long long)s.o.batch, (long long)s.o.batch);
        goto done;
    }
    int64_t window = m->stateful && m->train.ninputs && m->train.inputs[0].rank ? m->train.inputs[0].dims[0] : 0;
    if (s.o.bptt && s.o.bptt != (window ? window : m->recipe.bptt_window)) {
        rt_fail(&s, "this model is compiled for bptt %lld; compile it again (seqc compile --bptt %lld), or use seqc "
                "run, which compiles for the window asked", (long long)(window ? window : m->recipe.bptt_window),
                (long long)s.o.bptt);
        goto done;
    }
    if (cmd == 5) {
        status = info(&s);
        goto done;
    }
    s.seed = s.o.seed >= 0 ? (uint64_t)s.o.seed : (uint64_t)m->recipe.seed;
    s.lr = s.o.lr > 0 ? s.o.lr : m->recipe.lr;
    s.checkpoint = s.o.checkpoint ? strdup(s.o.checkpoint) : default_path(m->name, ".safetensors");
    char *history = s.o.history ? NULL : default_path(m->name, ".history.csv");
    if (!s.o.history) s.o.history = history;
    s.slab = rt_slab_new(&m->train);
    if (!s.slab || !s.checkpoint || !s.o.history) {
        rt_fail(&s, "out of memory");
        free(history);
        goto done;
    }
    switch (cmd) {
    case 0: {
        RtModelError ie;
        if (s.o.resume) {
            if (!exists(s.checkpoint)) {
                rt_fail(&s, "--resume: no checkpoint %s to continue from", s.checkpoint);
                break;
            }
            if (!rt_checkpoint_load(&s, s.checkpoint, true)) break;
            if (s.o.seed >= 0 && (uint64_t)s.o.seed != s.seed) {
                rt_fail(&s, "--resume continues the run of seed %llu; --seed %lld would start another",
                        (unsigned long long)s.seed, (long long)s.o.seed);
                break;
            }
        } else if (!rt_model_init_params(&m->train, s.slab, s.seed, &ie)) {
            rt_fail(&s, "%s", ie.msg);
            break;
        } else if (s.o.weights && !rt_checkpoint_load(&s, s.o.weights, false)) {
            break;
        }
        status = rt_train(&s);
        break;
    }
    case 1:
        if (load_for_inference(&s)) status = rt_eval(&s);
        break;
    case 2:
        if (load_for_inference(&s)) status = rt_predict(&s);
        break;
    case 3:
        if (load_for_inference(&s)) status = rt_sample(&s);
        break;
    case 4:
        if (load_for_inference(&s)) status = rt_embeddings(&s);
        break;
    }
    free(history);
done:
    rt_slab_free(s.slab);
    rt_slab_free(s.islab);
    free(s.checkpoint);
    if (s.has_vocab) rt_data_vocab_free(&s.vocab);
    rt_model_free(&s.m);
    return status;
}
