/* Every example of examples/ that has a loss trains: on small data made by the
 * example generators (alarm-data, series-data, imdb-data) or written here (a
 * few KB of lines for the language models), for two epochs, once with
 * `seqc run` (JIT) and once with the executable `seqc compile` writes (AOT).
 * Each run's loss is finite and falls from the first epoch to the second, and
 * the two runs end with identical checkpoint files.
 *
 * The compiled batch is small (--batch on `seqc run` and on `seqc compile`) so
 * that an epoch is a handful of steps; LLVM's compile of the two programs is
 * most of the time, so it runs beside the JIT training.
 *
 * Environment: SEQC_EXE (seqc), SEQC_ALARM_DATA, SEQC_SERIES_DATA,
 * SEQC_IMDB_DATA (the generators), SEQC_SOURCE_ROOT (for examples/);
 * SEQC_QUICK_TESTS=1 keeps to the quick examples of tests/models.h. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "models.h"

#include "shell.h"

/* How each example trains here: its batch, and the data and validation
 * arguments of `train` (the train block's data otherwise, from this directory). */
typedef struct Recipe {
    const char *name;
    int batch;
    const char *args;
} Recipe;

static const Recipe recipes[] = {
    {"alarm", 20, "--data x.npy,y.npy --validate 0.2"},
    {"forecast", 16, ""},
    {"charlm", 64, "--data lines.txt"},
    {"wordlm", 16, "--data lines.txt"},
    {"imdb_flatten", 8, ""},
    {"imdb_rnn", 8, ""},
    {"imdb_lstm_small", 8, ""},
    /* One stream of 64-character windows: the two LSTM(256) layers cost
     * milliseconds a character, so the text is 400 characters. */
    {"poet", 1, "--data poem.txt --validate 0.2"},
    {"imdb_rnn32", 8, ""},
    {"imdb_lstm32", 8, ""},
    {"imdb_lstm", 8, ""},
    {"imdb_rnn64", 8, ""},
    {"imdb_birnn", 8, ""},
    {"imdb_bigru", 8, ""},
    /* 2,494 steps per review: four reviews, two steps an epoch, no validation. */
    {"imdb_bilstm", 2, "--data tiny.tsv --validate 0"},
};
#define NRECIPES ((int)(sizeof recipes / sizeof recipes[0]))

/* Lines of lower-case words in a fixed pseudo-random order: enough repetition
 * for a language model to learn from in two epochs, `bytes` long or a little
 * less (whole lines). */
static void write_lines(const char *name, size_t bytes) {
    static const char *const lines[] = {
        "the rain falls soft upon the hill",
        "and the river runs to meet the sea",
        "a candle burns beside the open door",
        "the night is long and the stars are bright",
        "she sings of summer and the golden corn",
        "we walk the road until the morning comes",
        "the wind is cold across the empty field",
        "and every bird is flying home again",
    };
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    uint32_t state = 12345;
    size_t written = 0;
    for (;;) {
        state = state * 1103515245u + 12345u;
        const char *line = lines[(state >> 16) % (sizeof lines / sizeof lines[0])];
        size_t len = strlen(line) + 1;
        if (written + len > bytes) break;
        fprintf(f, "%s\n", line);
        written += len;
    }
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static const Recipe *recipe_of(const char *name) {
    for (int i = 0; i < NRECIPES; i++)
        if (strcmp(recipes[i].name, name) == 0) return &recipes[i];
    return NULL;
}

/* The history's loss column: `rows` values, each finite. */
static void read_losses(const char *history, double *loss, int rows) {
    size_t n;
    char *h = slurp(history, &n);
    ck_assert_msg(h != NULL, "no history %s", history);
    ck_assert_msg(strncmp(h, "epoch,loss", 10) == 0, "%s: %.200s", history, h);
    char *line = strchr(h, '\n');
    for (int r = 0; r < rows; r++) {
        ck_assert_msg(line && line[1], "%s has %d rows, not %d", history, r, rows);
        char *comma = strchr(line + 1, ',');
        ck_assert_msg(comma != NULL, "%s: row %d: %.100s", history, r + 1, line + 1);
        loss[r] = strtod(comma + 1, NULL);
        ck_assert_msg(isfinite(loss[r]), "%s: epoch %d: loss %g", history, r + 1, loss[r]);
        line = strchr(line + 1, '\n');
    }
    free(h);
}

START_TEST(example_trains) {
    const char *name = example_names[_i];
    const Recipe *r = recipe_of(name);
    if (!r) {
        /* Only a model without a loss (imdb_stack, a summary) has no recipe. */
        ck_assert_msg(sh("grep -q '^ *loss' %s.seq", name) != 0, "%s has a loss but no recipe here", name);
        return;
    }
    const char *seqc = env("SEQC_EXE");
    /* The executable compiles and trains in the background while the JIT trains. */
    int status = sh("('%s' compile %s.seq -o %s_exe --batch %d >%s.aot.log 2>&1 && "
                    "./%s_exe train --epochs 2 --quiet %s --checkpoint %s.aot.safetensors --history %s.aot.csv "
                    ">>%s.aot.log 2>&1; echo $? >%s.aot.status) & "
                    "'%s' run %s.seq train --batch %d --epochs 2 --quiet %s --checkpoint %s.jit.safetensors "
                    "--history %s.jit.csv; s=$?; wait; exit $s",
                    seqc, name, name, r->batch, name, name, r->args, name, name, name, name, seqc, name, r->batch,
                    r->args, name, name);
    ck_assert_msg(status == 0, "%s: seqc run train exited %d:\n%.3000s", name, status, out);
    char file[128];
    snprintf(file, sizeof file, "%s.aot.status", name);
    size_t n;
    char *aot = slurp(file, &n);
    ck_assert_msg(aot != NULL, "%s: the executable did not finish", name);
    int aot_status = atoi(aot);
    free(aot);
    if (aot_status != 0) {
        snprintf(file, sizeof file, "%s.aot.log", name);
        char *log = slurp(file, &n);
        ck_assert_msg(0, "%s: compile or ./%s_exe train exited %d:\n%.3000s", name, name, aot_status,
                      log ? log : "");
    }
    const char *modes[] = {"jit", "aot"};
    for (int m = 0; m < 2; m++) {
        double loss[2];
        snprintf(file, sizeof file, "%s.%s.csv", name, modes[m]);
        read_losses(file, loss, 2);
        ck_assert_msg(loss[1] < loss[0], "%s (%s): the loss did not fall: %g -> %g", name, modes[m], loss[0], loss[1]);
    }
    char jit[128], aotc[128];
    snprintf(jit, sizeof jit, "%s.jit.safetensors", name);
    snprintf(aotc, sizeof aotc, "%s.aot.safetensors", name);
    ck_assert_msg(same_file(jit, aotc), "%s: the JIT and the executable trained different weights", name);
}
END_TEST

/* The data every example reads, made once in a fresh directory. */
static void make_data(void) {
    const char *root = env("SEQC_SOURCE_ROOT"), *alarm = env("SEQC_ALARM_DATA"),
               *series = env("SEQC_SERIES_DATA"), *imdb = env("SEQC_IMDB_DATA");
    env("SEQC_EXE");
    snprintf(dir, sizeof dir, "/tmp/seqc-examples-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    int st = sh("cp '%s'/examples/*.seq . && "
                "'%s' --count 400 --seed 1 x.npy y.npy && "
                /* forecast.seq reads sunspots.csv: a generated series
                 * stands in for it, scaled as examples/get-sunspots does. */
                "'%s' --count 300 --seed 1 series.csv && '%s' --from series.csv sunspots.csv && "
                "'%s' --count 32 --length 120 --seed 1 imdb_train.tsv imdb_test.tsv && "
                "'%s' --count 4 --length 40 --seed 2 tiny.tsv tiny_test.tsv",
                root, alarm, series, series, imdb, imdb);
    if (st != 0) {
        fprintf(stderr, "making the data failed (%d):\n%s", st, out);
        exit(1);
    }
    write_lines("lines.txt", 2500);
    write_lines("poem.txt", 420);
}

int main(void) {
    make_data();
    Suite *s = suite_create("examples_train");
    TCase *t = tcase_create("examples_train");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, example_trains, 0, examples_to_run());
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) failed++;
    return failed ? 1 : 0;
}
