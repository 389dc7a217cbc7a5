/* seqc: the command-line driver. Each command is the pipeline up to the stage
 * it needs: load (parse + imports) -> elaborate (graph, shapes) -> print. */
#include <errno.h>
#include <limits.h>
#include <llvm-c/Core.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build.h"
#include "codegen.h"
#include "elab.h"
#include "fuse.h"
#include "jit.h"
#include "link.h"
#include "model.h"
#include "plot.h"
#include "gradcheck.h"
#include "pool.h"
#include "schedule.h"
#include "program.h"
#include "summary.h"
#include "tiers.h"

static const char usage[] =
    "usage: seqc COMMAND [options] FILE...\n"
    "\n"
    "A compiler for recurrent neural networks described in .seq files.\n"
    "\n"
    "commands:\n"
    "  check FILE...    parse and check models, cells and train blocks; silent when all is well\n"
    "  summary FILE     print the model's layers, output shapes and parameter counts (as Keras does)\n"
    "  graph FILE       print the model's graph in Graphviz dot (--grad: with its backward pass)\n"
    "  gradcheck FILE   compare every param's gradient with finite differences\n"
    "  run FILE CMD     compile in memory and train, eval, predict, sample (seqc run FILE --help)\n"
    "  plot CSV|--embeddings CKPT  draw training curves or an embedding as SVG\n"
    "  compile FILE     compile to an executable (-o NAME), a library (--emit=lib) or llvm|asm|obj\n"
    "\n"
    "options:\n"
    "  --help           show help (also: seqc COMMAND --help)\n"
    "  --version        show the version\n";

static const char *const command_help[][2] = {
    {"check",
     "usage: seqc check [--batch N] FILE...\n"
     "\n"
     "Parses each file, elaborates every model and cell in it and checks every shape\n"
     "and train setting. Prints nothing and exits 0 when all is well; otherwise prints\n"
     "each problem as file:line:col with the source line, and exits 1.\n"
     "\n"
     "  --batch N        check with this batch size instead of the train block's\n"},
    {"summary",
     "usage: seqc summary [--model NAME] [--batch N] FILE\n"
     "\n"
     "Prints a table of the model's layers: name (type), output shape with None for\n"
     "the batch axis, and parameter count; then total, trainable and non-trainable\n"
     "parameters. The counts equal Keras' model.summary() for the same model.\n"
     "\n"
     "  --model NAME     the model to show when the file defines several\n"
     "  --batch N        batch size (does not change the table)\n"},
    {"graph",
     "usage: seqc graph [--grad] [--fused] [--text] [--model NAME] [--batch N] FILE\n"
     "\n"
     "Prints the elaborated graph in Graphviz dot: every value with its op and full\n"
     "shape (batch axis included), params as boxes, each recurrent step as a cluster.\n"
     "  seqc graph model.seq | dot -Tsvg > model.svg\n"
     "\n"
     "  --grad           include the backward pass (the gradient of the loss for every param)\n"
     "  --fused          after the fusion passes: the graph the code generator lowers\n"
     "  --text           print the graph as text, one node per line, instead of dot\n"
     "  --model NAME     the model to show when the file defines several\n"
     "  --batch N        batch size shown in the shapes (default: the train block's, else 32)\n"},
    {"compile",
     "usage: seqc compile [-o NAME] [--emit=exe|lib|obj|asm|llvm] [--time] [--model NAME] [--batch N]\n"
     "                    [--bptt N] FILE\n"
     "\n"
     "Compiles the model through LLVM for this machine's CPU, optimized at O3. By default\n"
     "(--emit=exe) it writes a standalone executable NAME that takes the same commands\n"
     "as `seqc run` (train, eval, predict, sample, embeddings, info); the batch and the\n"
     "bptt window are compiled in. --emit=lib writes NAME.h and libNAME.a, a static library\n"
     "with a small C API (see docs/cli.md). --emit=obj, asm or llvm write the training step\n"
     "alone (NAME_step(slab, training, dropout_seed, upto) over one memory slab) as an\n"
     "object file, assembly or LLVM IR.\n"
     "\n"
     "  -o NAME          the output (default: the model's name, plus .o, .s or .ll)\n"
     "  --emit=KIND      exe (default), lib, obj, asm or llvm\n"
     "  --time           print the time spent in each stage\n"
     "  --model NAME     the model to compile when the file defines several\n"
     "  --batch N        batch size compiled in (default: the train block's, else 32)\n"
     "  --bptt N         truncated backpropagation window compiled in (default: the train block's)\n"},
    {"run",
     "usage: seqc run [--time] [--model NAME] FILE COMMAND [options]\n"
     "\n"
     "Compiles the model in memory (LLVM ORC JIT) and runs COMMAND on it, exactly as the\n"
     "executable `seqc compile` would write:\n"
     "  train        train on the train block's data, with validation, checkpoints, history\n"
     "  eval         loss and metrics on --data (default: the validation data)\n"
     "  predict      one line of outputs per input line of --data (default: standard input)\n"
     "  sample       generate text from --prime\n"
     "  embeddings   the embedding matrix as TSV\n"
     "  info         the compiled model's tensors and recipe\n"
     "`seqc run FILE COMMAND --help` lists the options of the commands.\n"
     "\n"
     "  --time           print the compile time of each stage (parse, passes, LLVM, JIT)\n"
     "  --model NAME     the model to run when the file defines several\n"
     "  --batch N        compile for this batch size (also passed to the command)\n"
     "  --bptt N         compile for this truncated backpropagation window\n"},
    {"gradcheck",
     "usage: seqc gradcheck [--generated] [--model NAME] [--batch N] [--seed S] [--samples N] FILE\n"
     "\n"
     "Differentiates the model's loss (reverse mode, with the train block's truncated\n"
     "backpropagation) and compares the gradient of every trainable param with central\n"
     "finite differences, both computed by the reference interpreter in f64 on a random\n"
     "batch. Tensors of up to 64 entries are checked entry by entry, larger ones at\n"
     "sampled entries. Dropout masks are held fixed; batchnorm runs in training mode.\n"
     "Prints a table and exits 1 if a relative error exceeds 1e-6 (1e-2 when an extern\n"
     "function, computing in f32, is differentiated).\n"
     "\n"
     "  --generated      take the gradient from the generated code (LLVM JIT, f32) instead\n"
     "                   of the interpreter; the threshold is then 1e-3\n"
     "  --batch N        examples in the random batch (default 2)\n"
     "  --seed S         seed for the params, the data, the masks and the sampled entries (default 1)\n"
     "  --samples N      entries checked in each large tensor (default 16)\n"
     "  --model NAME     the model to check when the file defines several\n"},
};

typedef struct Options {
    bool grad, text, fused, time, generated;
    const char *model, *emit, *out;
    int64_t batch, bptt, seed, samples;
    const char *files[256];
    int nfiles;
} Options;

/* The options, which commands take them, and where their value goes: a
 * whole number in [min, max], a string, or a flag. */
typedef struct OptionSpec {
    const char *name, *commands;    /* commands: space-separated */
    enum { OPT_FLAG, OPT_INT, OPT_STRING } kind;
    size_t field;
    long long min, max;
} OptionSpec;

static const OptionSpec option_specs[] = {
    {"--model", "summary graph gradcheck compile", OPT_STRING, offsetof(Options, model), 0, 0},
    {"--batch", "check summary graph gradcheck compile", OPT_INT, offsetof(Options, batch), 1, 1 << 24},
    {"--bptt", "compile", OPT_INT, offsetof(Options, bptt), 1, 1 << 30},
    {"--grad", "graph", OPT_FLAG, offsetof(Options, grad), 0, 0},
    {"--text", "graph", OPT_FLAG, offsetof(Options, text), 0, 0},
    {"--fused", "graph", OPT_FLAG, offsetof(Options, fused), 0, 0},
    {"--seed", "gradcheck", OPT_INT, offsetof(Options, seed), 0, LLONG_MAX},
    {"--generated", "gradcheck", OPT_FLAG, offsetof(Options, generated), 0, 0},
    {"--samples", "gradcheck", OPT_INT, offsetof(Options, samples), 1, 1 << 30},
    {"--emit", "compile", OPT_STRING, offsetof(Options, emit), 0, 0},
    {"-o", "compile", OPT_STRING, offsetof(Options, out), 0, 0},
    {"--time", "compile", OPT_FLAG, offsetof(Options, time), 0, 0},
};

static bool takes(const char *commands, const char *cmd) {
    size_t n = strlen(cmd);
    for (const char *p = strstr(commands, cmd); p; p = strstr(p + 1, cmd))
        if ((p == commands || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return true;
    return false;
}

/* Returns 0 on success, else the exit status for a usage error. */
static int parse_options(int argc, char **argv, const char *cmd, Options *o) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const OptionSpec *spec = NULL;
        /* `--emit=obj` is `--emit obj` */
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t alen = eq ? (size_t)(eq - a) : strlen(a);
        for (size_t k = 0; k < sizeof option_specs / sizeof option_specs[0]; k++)
            if (strlen(option_specs[k].name) == alen && strncmp(a, option_specs[k].name, alen) == 0 &&
                takes(option_specs[k].commands, cmd) && (!eq || option_specs[k].kind != OPT_FLAG))
                spec = &option_specs[k];
        if (spec) {
            char *field = (char *)o + spec->field;
            if (spec->kind == OPT_FLAG) {
                *(bool *)field = true;
                continue;
            }
            if (!eq && i + 1 >= argc) {
                fprintf(stderr, "seqc %s: %s needs a value\n", cmd, a);
                return 2;
            }
            const char *v = eq ? eq + 1 : argv[++i];
            if (spec->kind == OPT_STRING) {
                *(const char **)field = v;
                continue;
            }
            char *end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            if (*v == '\0' || *end || errno || x < spec->min || x > spec->max) {
                fprintf(stderr, "seqc %s: %s takes a whole number from %lld to %lld, not '%s'\n", cmd, a, spec->min,
                        spec->max, v);
                return 2;
            }
            *(int64_t *)field = x;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "seqc %s: unknown option '%s' (see seqc %s --help)\n", cmd, a, cmd);
            return 2;
        } else if (o->nfiles < 256) {
            o->files[o->nfiles++] = a;
        } else {
            fprintf(stderr, "seqc %s: too many files (at most 256)\n", cmd);
            return 2;
        }
    }
    if (o->nfiles == 0) {
        fprintf(stderr, "seqc %s: no input file (see seqc %s --help)\n", cmd, cmd);
        return 2;
    }
    return 0;
}

static int finish(Diags *d, int status) {
    diag_print(d, stderr);
    if (d->errors) status = 1;
    diag_free(d);
    return status;
}

static int cmd_check(const Options *o) {
    Diags d;
    diag_init(&d);
    ElabOptions eo = {.batch = o->batch};
    int errors = 0;
    for (int i = 0; i < o->nfiles; i++) {
        Program *p = program_load(o->files[i], &d);
        if (p) elab_check(p, &eo, &d);
        /* Print each file's messages while its source is still loaded; each
         * file starts afresh, so one file's errors do not hide the next's. */
        diag_print(&d, stderr);
        errors += d.errors;
        diag_free(&d);
        diag_init(&d);
        program_free(p);
    }
    return errors ? 1 : 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static char *message(const char *fmt, const char *arg) {
    size_t n = strlen(fmt) + strlen(arg) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, arg);
    return s;
}

/* `note` ends the first line. */
static void print_timing(const Build *b, double emit_ms, const char *last, const char *note) {
    const CgTiming *t = cg_timing(b->train_code), *i = cg_timing(b->infer_code);
    /* LLVM: its passes, and its machine code where that was compiled in parts on threads */
    fprintf(stderr, "parse and elaborate %.1f ms, autodiff %.1f ms, lower %.1f ms, LLVM %.1f ms, %s %.1f ms%s%s\n",
            b->elab_ms, b->autodiff_ms, t->lower_ms + i->lower_ms,
            t->quick_ms + t->passes_ms + i->quick_ms + i->passes_ms, last, emit_ms,
            t->cached && i->cached ? " (machine code from the cache)" : "", note);
    const CgStats *s = cg_stats(b->train_code);
    fprintf(stderr, "training step: %d matmuls with their elementwise epilogue (%d nodes, at most %d in one), "
            "%d elementwise chains%s\n", s->epilogues, s->epilogue_nodes, s->largest_epilogue, s->chains,
            s->loss_rows ? ", the loss's rows in its logits' kernel" : "");
}

/* NAME.h for --emit=lib: the C API of runtime/api.c bound to this model. */
static bool write_header(const char *path, const Build *b, char **err) {
    FILE *f = fopen(path, "w");
    if (!f) {
        *err = message("seqc compile: cannot write %s", path);
        return false;
    }
    const Graph *g = b->infer.graph;
    const char *n = g->name;
    const Node *x = g->inputs.items[0], *y = g->output;
    fprintf(f, "/* %s: the model of %s, compiled by seqc. Link with lib%s.a, -lm and -pthread.\n"
               " * One example at a time: %s_predict reads the input (%s, %lld values) and\n"
               " * writes the output (f32, %lld values). */\n",
            n, b->program->root->src->path, n, n, x->type.dtype == DT_I32 ? "int32_t token ids" : "float",
            (long long)type_elements(&x->type), (long long)type_elements(&y->type));
    fprintf(f, "#ifndef %s_MODEL_H\n#define %s_MODEL_H\n\n#include <stdint.h>\n\n", n, n);
    fprintf(f, "typedef struct SeqcModel SeqcModel;\nstruct RtModelCode;\nextern const struct RtModelCode %s_code;\n\n", n);
    fputs("/* runtime/api.c */\n"
          "SeqcModel *seqc_model_new(const struct RtModelCode *code);\n"
          "int seqc_model_load(SeqcModel *m, const char *safetensors_path);\n"
          "int seqc_model_predict(SeqcModel *m, const void *input, float *output);\n"
          "void seqc_model_reset(SeqcModel *m);\n"
          "const char *seqc_model_error(const SeqcModel *m);\n"
          "void seqc_model_free(SeqcModel *m);\n\n", f);
    fprintf(f, "#define %s_INPUT_SIZE %lld\n#define %s_OUTPUT_SIZE %lld\n\n", n, (long long)type_elements(&x->type), n,
            (long long)type_elements(&y->type));
    fprintf(f, "/* NULL when out of memory. Params start from the model's initializers (seed 1). */\n"
               "static inline SeqcModel *%s_new(void) { return seqc_model_new(&%s_code); }\n", n, n);
    fprintf(f, "/* Weights from a checkpoint or a safetensors file; 0 on success, else see seqc_model_error. */\n"
               "static inline int %s_load(SeqcModel *m, const char *path) { return seqc_model_load(m, path); }\n", n);
    fprintf(f, "/* One forward step; a stateful model carries its state to the next call. 0 on success. */\n"
               "static inline int %s_predict(SeqcModel *m, const void *input, float *output) {\n"
               "    return seqc_model_predict(m, input, output);\n}\n", n);
    fprintf(f, "static inline void %s_reset(SeqcModel *m) { seqc_model_reset(m); }\n", n);
    fprintf(f, "static inline void %s_free(SeqcModel *m) { seqc_model_free(m); }\n\n#endif\n", n);
    if (fclose(f) != 0) {
        *err = message("seqc compile: cannot write %s", path);
        return false;
    }
    return true;
}

/* The linker arguments for the user libraries the model's externs live in:
 * a path as itself and its directory as a run path (so the executable finds
 * it where it was), a bare soname as -l:NAME. NULL-terminated, in `a`. */
static const char **extern_link_args(Build *b, Arena *a) {
    const CgExternSymbol *sym[2];
    int n[2] = {cg_extern_symbols(b->train_code, &sym[0]), cg_extern_symbols(b->infer_code, &sym[1])};
    const char **args = arena_alloc(a, sizeof *args * (size_t)(2 * (n[0] + n[1]) + 1));
    int k = 0;
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < n[m]; i++) {
            const char *lib = sym[m][i].library, *arg, *rpath = NULL;
            if (strchr(lib, '/')) {
                char *real = realpath(lib, NULL);
                arg = arena_printf(a, "%s", real ? real : lib);
                const char *slash = strrchr(arg, '/');
                rpath = arena_printf(a, "-Wl,-rpath,%.*s", (int)(slash - arg), arg);
                free(real);
            } else {
                arg = arena_printf(a, "-l:%s", lib);
            }
            bool seen = false;
            for (int j = 0; j < k; j++) seen = seen || strcmp(args[j], arg) == 0;
            if (seen) continue;
            args[k++] = arg;
            if (rpath) args[k++] = rpath;
        }
    args[k] = NULL;
    return args;
}

/* `seqc compile`: an executable (default), a static library, or the training
 * step as an object file, assembly or LLVM IR. */
static int cmd_compile(const Options *o) {
    static const struct { const char *name, *ext; CgEmitKind kind; } kinds[] = {
        {"llvm", "ll", CG_EMIT_LLVM}, {"asm", "s", CG_EMIT_ASM}, {"obj", "o", CG_EMIT_OBJ}};
    const char *emit = o->emit ? o->emit : "exe";
    int k = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(emit, kinds[i].name) == 0) k = i;
    bool exe = strcmp(emit, "exe") == 0, lib = strcmp(emit, "lib") == 0;
    if (k < 0 && !exe && !lib) {
        fprintf(stderr, "seqc compile: --emit takes exe, lib, obj, asm or llvm, not '%s'\n", emit);
        return 2;
    }
    if (o->nfiles != 1) {
        fprintf(stderr, "seqc compile: takes exactly one file\n");
        return 2;
    }
    Diags d;
    diag_init(&d);
    BuildOptions bo = {.path = o->files[0], .model = o->model, .batch = o->batch, .bptt = o->bptt};
    Build b;
    char *err = NULL, *dir = NULL;
    int status = 1;
    if (!build_model(&bo, &b, &d, &err)) goto done;
    const char *name = b.train.graph->name;
    double t0 = now_ms();
    if (k >= 0) {
        const char *out = o->out ? o->out : arena_printf(&b.arena, "%s.%s", name, kinds[k].ext);
        if (!cg_emit(b.train_code, kinds[k].kind, out, &err)) goto done;
    } else {
        /* The objects of the training step and of the inference step (each
         * compiled in parts on every core), then the stub. */
        if (!(dir = link_temp_dir(&err))) goto done;
        CgModule *const code[2] = {b.train_code, b.infer_code};
        const char *const which[2] = {"train", "infer"};
        int parts[2];
        for (int c = 0; c < 2; c++)
            if (!(parts[c] = cg_write_objects(code[c], 0, arena_printf(&b.arena, "%s/%s_%s", dir, name, which[c]),
                                              &err)))
                goto done;
        const char **objs = ARENA_ARRAY(&b.arena, const char *, parts[0] + parts[1] + 1);
        int nobjs = 0;
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < parts[c]; i++)
                objs[nobjs++] = arena_printf(&b.arena, "%s/%s_%s.%d.o", dir, name, which[c], i);
        objs[nobjs] = arena_printf(&b.arena, "%s/%s_model.o", dir, name);
        if (!cg_emit_stub(name, b.manifest, b.train_step, b.train_update, b.infer_step, exe, objs[nobjs++], &err))
            goto done;
        const char *out = o->out ? o->out : name;
        if (exe) {
            if (!link_executable(out, objs, nobjs, extern_link_args(&b, &b.arena), &err)) goto done;
        } else {
            const char *slash = strrchr(out, '/');
            const char *base = slash ? slash + 1 : out;
            const char *libpath = arena_printf(&b.arena, "%.*slib%s.a", (int)(base - out), out, base);
            const char *header = arena_printf(&b.arena, "%s.h", out);
            if (!link_static_library(libpath, objs, nobjs, &err) || !write_header(header, &b, &err)) goto done;
        }
    }
    if (o->time) print_timing(&b, now_ms() - t0, k >= 0 ? "emit" : "emit and link", "");
    status = 0;
done:
    if (err) {
        fprintf(stderr, "%s\n", err);
        free(err);
    }
    if (dir) {
        link_remove_dir(dir);
        free(dir);
    }
    status = finish(&d, status);
    build_free(&b);
    return status;
}

/* `seqc run [--time] [--model NAME] [--batch N] [--bptt N] FILE COMMAND [options]`:
 * the seqc options may stand anywhere; --batch and --bptt are also the
 * command's, so they are passed on. */
static int cmd_run(int argc, char **argv) {
    const char *file = NULL, *model = NULL;
    bool time = false;
    int64_t batch = 0, bptt = 0;
    char **rest = malloc(sizeof *rest * (size_t)(argc + 5));
    size_t nrest = 0; /* at most argc + 4: the arguments and two settings */
    if (!rest) return 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--time") == 0) {
            time = true;
        } else if (strcmp(a, "--model") == 0 && has_value) {
            model = argv[++i];
        } else if ((strcmp(a, "--batch") == 0 || strcmp(a, "--bptt") == 0) && has_value) {
            char *end;
            long long v = strtoll(argv[i + 1], &end, 10);
            if (*end || v < 1 || v > (1 << 24)) {
                fprintf(stderr, "seqc run: %s takes a whole number from 1 to %d, not '%s'\n", a, 1 << 24, argv[i + 1]);
                free(rest);
                return 2;
            }
            *(a[2] == 'b' && a[3] == 'a' ? &batch : &bptt) = v;
            i++; /* passed on after the command, below */
        } else if (!file && a[0] != '-') {
            file = a;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    /* The command comes first; the compiled-in settings follow it, so the
     * command's own check (an executable refuses other values) sees them. */
    char batch_arg[32], bptt_arg[32];
    if (nrest > 0 && batch) {
        snprintf(batch_arg, sizeof batch_arg, "%lld", (long long)batch);
        rest[nrest++] = "--batch";
        rest[nrest++] = batch_arg;
    }
    if (nrest > 0 && bptt) {
        snprintf(bptt_arg, sizeof bptt_arg, "%lld", (long long)bptt);
        rest[nrest++] = "--bptt";
        rest[nrest++] = bptt_arg;
    }
    rest[nrest] = NULL;
    if (!file) {
        fprintf(stderr, "seqc run: no model file (see seqc run --help)\n");
        free(rest);
        return 2;
    }
    if (nrest == 0) {
        fprintf(stderr, "seqc run: what to do with %s? train, eval, predict, sample, embeddings or info "
                        "(see seqc run --help)\n", file);
        free(rest);
        return 2;
    }
    Diags d;
    diag_init(&d);
    /* The inference module is lowered on the tiers' thread (tiers_start). */
    BuildOptions bo = {.path = file, .model = model, .batch = batch, .bptt = bptt, .jit = true, .infer_later = true};
    Build b;
    char *err = NULL;
    int status = 1;
    bool started = false;
    if (!build_model(&bo, &b, &d, &err)) goto done;
    RtModelCode code = {.manifest = b.manifest};
    if (!(started = tiers_start(b.train_code, b.infer_code, graph_matmul_flops(b.train.graph, b.train.graph->batch), &code, &err))) goto done;
    diag_print(&d, stderr); /* warnings, before the run's output */
    diag_free(&d);
    diag_init(&d);
    status = rt_main(&code, "seqc run", (int)nrest, rest);
done:
    if (err) {
        fprintf(stderr, "%s\n", err);
        free(err);
    }
    TierTimes tt = {0};
    if (started && !tiers_finish(&tt)) status = 1;
    if (started && time) {
        char note[96] = "";
        if (tt.quick_unused)
            snprintf(note, sizeof note, " (optimized; a quick step would have taken longer)");
        else if (!tt.train_from_cache)
            snprintf(note, sizeof note, " (quick tier, %.1f ms of LLVM), optimized after %.1f ms",
                     cg_timing(b.train_code)->quick_ms, tt.train_optimized_ms);
        print_timing(&b, tt.train_ready_ms, "training step ready after", note);
        int64_t calls, split;
        rt_pool_counts(&calls, &split);
        fprintf(stderr, "seqc: kernels: %lld calls, %lld split over up to %d threads\n", (long long)calls,
                (long long)split, rt_threads());
    }
    status = finish(&d, status);
    build_free(&b);
    free(rest);
    return status;
}

static int cmd_model(const Options *o, const char *cmd) {
    if (o->nfiles != 1) {
        fprintf(stderr, "seqc %s: takes exactly one file\n", cmd);
        return 2;
    }
    Diags d;
    diag_init(&d);
    Program *p = program_load(o->files[0], &d);
    if (!p) return finish(&d, 1);
    Arena arena;
    arena_init(&arena);
    /* A gradient check runs the interpreter many times: a small batch by default. */
    ElabOptions eo = {.batch = o->batch ? o->batch : strcmp(cmd, "gradcheck") == 0 ? 2 : 0};
    Model m;
    int status = 1;
    if (d.errors == 0 && elab_model(p, o->model, &eo, &arena, &m, &d)) {
        GradOptions go;
        if (strcmp(cmd, "gradcheck") == 0) {
            /* Finite differences see the whole sequence, so the check backpropagates
             * through every step; the window's own path has its tests. */
            bool scheduled = schedule_tbptt(m.graph, &m.recipe, &go, &d);
            go.window = 0;
            if (scheduled && ad_backward(m.graph, &go, &d)) {
                GradcheckOptions gc;
                gradcheck_defaults(&gc);
                if (o->seed) gc.seed = (uint64_t)o->seed; /* 0 keeps the default */
                if (o->samples) gc.samples = o->samples;
                gc.generated = o->generated;
                GradcheckReport rep;
                gradcheck_run(m.graph, m.graph->nforward, &gc, &rep);
                gradcheck_print(m.graph, &gc, &rep, stdout);
                free(rep.error);
                status = rep.ok ? 0 : 1;
            }
        } else if (strcmp(cmd, "summary") == 0) {
            summary_print(m.graph, stdout);
            status = 0;
        } else {
            if (o->fused) fuse_softmax_ce(m.graph);
            /* --fused shows the graph as compiled: the window's forward split too. */
            bool ok = !o->grad || (schedule_tbptt(m.graph, &m.recipe, &go, &d) &&
                                   (!o->fused || schedule_windows(m.graph, &go, &d)) && ad_backward(m.graph, &go, &d));
            char *error = NULL;
            if (ok && o->fused && !fuse_graph(m.graph, NULL, &error)) {
                fprintf(stderr, "%s\n", error);
                free(error);
                ok = false;
            }
            if (ok) {
                if (o->text) graph_print(m.graph, stdout);
                else graph_dot(m.graph, stdout);
                status = 0;
            }
        }
        if (fflush(stdout) != 0) status = 1;
    }
    status = finish(&d, status);
    arena_free(&arena);
    program_free(p);
    return status;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "plot") == 0) return rt_plot_main(argc - 1, argv + 1, "seqc");
    if (strcmp(cmd, "--version") == 0) {
        unsigned major, minor, patch;
        LLVMGetVersion(&major, &minor, &patch);
        printf("seqc %s (LLVM %u.%u.%u)\n", SEQC_VERSION, major, minor, patch);
        return 0;
    }
    for (size_t i = 0; i < sizeof command_help / sizeof command_help[0]; i++) {
        if (strcmp(cmd, command_help[i][0]) != 0) continue;
        /* `seqc run FILE COMMAND --help` is the command's help, not seqc's. */
        if (strcmp(cmd, "run") == 0 && !(argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)))
            return cmd_run(argc - 2, argv + 2);
        for (int k = 2; k < argc; k++)
            if (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0) {
                fputs(command_help[i][1], stdout);
                return 0;
            }
        Options o;
        int bad = parse_options(argc - 2, argv + 2, cmd, &o);
        if (bad) return bad;
        if (strcmp(cmd, "compile") == 0) return cmd_compile(&o);
        return strcmp(cmd, "check") == 0 ? cmd_check(&o) : cmd_model(&o, cmd);
    }
    fprintf(stderr, "seqc: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
