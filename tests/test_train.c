/* The runtime end to end, through the seqc executable: training learns,
 * JIT and AOT agree bit for bit, a resumed run (after an epoch or after
 * Ctrl-C) ends with the weights of an uninterrupted one, bad data and bad
 * checkpoints are refused with messages naming the file, a non-finite loss
 * stops training and keeps the checkpoint, sampling is deterministic, and the
 * --emit=lib C API predicts what the executable predicts.
 *
 * Environment: SEQC_EXE (seqc), SEQC_ALARM_DATA (the alarm data generator),
 * SEQC_SOURCE_ROOT (for examples/ and tests/lib_client.c). */
#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shell.h"

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void write_file(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/seqc-train-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* Alarm data: 2,000 sequences to train on, 500 held out. */
    ck_assert_int_eq(sh("'%s' --count 2000 --seed 1 x.npy y.npy && '%s' --count 500 --seed 2 tx.npy ty.npy",
                        env("SEQC_ALARM_DATA"), env("SEQC_ALARM_DATA")), 0);
    ck_assert_int_eq(sh("cp '%s/examples/alarm.seq' .", env("SEQC_SOURCE_ROOT")), 0);
}

static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

#define SEQC "'%s' run alarm.seq"
#define ALARM_DATA "--data x.npy,y.npy"

/* The tutorial's alarm reaches 0.98 per-step accuracy on held-out data. */
START_TEST(alarm_learns) {
    ck_assert_msg(sh(SEQC " train " ALARM_DATA " --validate tx.npy,ty.npy --epochs 40 --lr 0.01 --quiet",
                     env("SEQC_EXE")) == 0, "%.3000s", out);
    ck_assert_msg(sh(SEQC " eval --data tx.npy,ty.npy", env("SEQC_EXE")) == 0, "%.3000s", out);
    const char *acc = strstr(out, "accuracy: ");
    ck_assert_msg(acc != NULL, "%.3000s", out);
    double a = atof(acc + 10);
    ck_assert_msg(a >= 0.98, "held-out accuracy %.4f < 0.98", a);
    /* The history has one row per epoch, and the losses fell. */
    size_t n;
    char *h = slurp("alarm.history.csv", &n);
    ck_assert_ptr_nonnull(h);
    ck_assert(strncmp(h, "epoch,loss,accuracy,val_loss,val_accuracy\n", 42) == 0);
    int rows = 0;
    for (char *c = h; *c; c++) rows += *c == '\n';
    ck_assert_int_eq(rows, 41);
    double first = atof(strchr(strchr(h, '\n') + 1, ',') + 1);
    char *last = h + n - 2;
    while (*last != '\n') last--;
    double final = atof(strchr(last + 1, ',') + 1);
    ck_assert_msg(final < first / 10, "loss %g -> %g", first, final);
    free(h);
}
END_TEST

/* The executable and the JIT train the same weights, and a run resumed after
 * one epoch ends where an uninterrupted run does. */
START_TEST(jit_aot_resume_identical) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_msg(sh("'%s' compile alarm.seq -o alarm_exe", seqc) == 0, "%.3000s", out);
    ck_assert_msg(sh(SEQC " train " ALARM_DATA " --epochs 3 --quiet --checkpoint jit.safetensors", seqc) == 0, "%s",
                  out);
    ck_assert_msg(sh("./alarm_exe train " ALARM_DATA " --epochs 3 --quiet --checkpoint aot.safetensors") == 0, "%.3000s", out);
    ck_assert_msg(same_file("jit.safetensors", "aot.safetensors"), "JIT and AOT weights differ");
    ck_assert_msg(sh("./alarm_exe train " ALARM_DATA " --epochs 1 --quiet --checkpoint r.safetensors --history r.csv") == 0,
                  "%.3000s", out);
    ck_assert_msg(sh("./alarm_exe train " ALARM_DATA " --epochs 3 --resume --quiet --checkpoint r.safetensors "
                     "--history r.csv") == 0, "%.3000s", out);
    ck_assert_msg(same_file("jit.safetensors", "r.safetensors"), "a resumed run ends with other weights");
    /* Another seed is another run. */
    ck_assert_int_eq(sh(SEQC " train " ALARM_DATA " --epochs 1 --seed 7 --quiet --checkpoint s7.safetensors", seqc), 0);
    ck_assert(!same_file("r.safetensors", "s7.safetensors"));
    /* seqc run compiles for the batch asked, wherever the option stands. */
    ck_assert_msg(sh("'%s' run --batch 50 alarm.seq train " ALARM_DATA " --epochs 1 --checkpoint b50.safetensors", seqc) == 0,
                  "%.3000s", out);
    ck_assert_msg(strstr(out, "40/40 - ") != NULL, "%.3000s", out);
    /* A fixed setting of the executable cannot change. */
    ck_assert_int_eq(sh("./alarm_exe train " ALARM_DATA " --batch 50"), 1);
    ck_assert_msg(strstr(out, "compiled for batch 100") != NULL, "%.3000s", out);
}
END_TEST

/* The object cache: a second run finds the machine code the first compiled,
 * and trains the same weights as a run without the cache (the JIT compiling
 * the IR itself). A corrupt entry is no error: the model is compiled. */
START_TEST(object_cache) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_msg(sh("SEQC_CACHE=off " SEQC " train " ALARM_DATA " --epochs 2 --quiet --checkpoint off.safetensors",
                     seqc) == 0, "%.3000s", out);
    for (int run = 0; run < 2; run++) {
        ck_assert_msg(sh("SEQC_CACHE=cache '%s' run --time alarm.seq train " ALARM_DATA
                         " --epochs 2 --quiet --checkpoint c%d.safetensors", seqc, run) == 0, "%.3000s", out);
        ck_assert_msg((strstr(out, "(machine code from the cache)") != NULL) == (run == 1), "run %d: %.3000s", run, out);
    }
    ck_assert_msg(same_file("off.safetensors", "c0.safetensors"), "the compiled object trains other weights");
    ck_assert_msg(same_file("off.safetensors", "c1.safetensors"), "the cached object trains other weights");
    /* Entries truncated to nothing: compiled again, and right. */
    ck_assert_int_eq(sh("for f in cache/*.o; do : > \"$f\"; done"), 0);
    ck_assert_msg(sh("SEQC_CACHE=cache '%s' run --time alarm.seq train " ALARM_DATA
                     " --epochs 2 --quiet --checkpoint c2.safetensors", seqc) == 0, "%.3000s", out);
    ck_assert_msg(same_file("off.safetensors", "c2.safetensors"), "after a corrupt cache: other weights");
    /* One byte changed inside each entry (an object, or the lengths of a
     * module's objects): compiled again, and right. */
    ck_assert_int_eq(sh("for f in cache/*.o; do printf X | dd of=\"$f\" bs=1 seek=100 conv=notrunc 2>/dev/null; done"),
                     0);
    ck_assert_msg(sh("SEQC_CACHE=cache '%s' run --time alarm.seq train " ALARM_DATA
                     " --epochs 2 --quiet --checkpoint c3.safetensors", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "(machine code from the cache)") == NULL, "a damaged entry was used: %.3000s", out);
    ck_assert_msg(same_file("off.safetensors", "c3.safetensors"), "after a damaged cache: other weights");
}
END_TEST

/* The kernels split over threads (runtime/pool.h) and the weights do not
 * depend on how many: a character LSTM, big enough for its products and
 * gate kernels to split, trains the same bits on one thread and on three
 * (more than this machine's cores, which the pool must survive too). It is
 * bidirectional: its two directions' scans run side by side, forward and
 * backward, each on a thread of its own (codegen.c side_by_side). */
START_TEST(threads_same_bits) {
    const char *seqc = env("SEQC_EXE");
    write_file("lm.seq", "model lm {\n"
                         "  input  chars: i32[12]\n"
                         "  target next: i32[]\n"
                         "  e = embedding(chars, vocab: 28, dim: 16)\n"
                         "  h = lstm(e, units: 64, sequences: true, direction: both)\n"
                         "  g = gru(h, units: 48)\n"
                         "  n = batchnorm(g)\n"
                         "  d = dropout(n, 0.2)\n"
                         "  p = dense(d, units: 28, activation: softmax)\n"
                         "  loss sparse_categorical_crossentropy(p, next)\n"
                         "}\n"
                         "train {\n"
                         "  optimizer adam(lr: 0.01)\n"
                         "  batch 128\n"
                         "  data text(\"corpus.txt\", level: char, lower: true, letters_only: true)\n"
                         "}\n");
    /* A text of pseudo-random words. */
    static char text[40000];
    size_t n = 0;
    uint32_t x = 12345;
    for (int w = 0; w < 3000; w++) {
        int len = 2 + (int)((x >> 16) % 7);
        for (int c = 0; c < len; c++) {
            x = x * 1103515245u + 12345u;
            text[n++] = (char)('a' + (int)((x >> 16) % 26));
        }
        text[n++] = w % 12 == 11 ? '\n' : ' ';
    }
    text[n] = '\0';
    write_file("corpus.txt", text);
    for (int t = 1; t <= 3; t += 2) {
        /* Every kernel that can split does, however small (codegen.h cg_max_parts). */
        ck_assert_msg(sh("SEQC_SPLIT_SMALL=1 '%s' run --time lm.seq train --epochs 1 --validate 0 --quiet --threads %d "
                         "--checkpoint t%d.safetensors", seqc, t, t) == 0, "%.3000s", out);
        /* More than one thread took part, when there were more. */
        const char *k = strstr(out, "seqc: kernels: ");
        ck_assert_msg(k != NULL, "%.3000s", out);
        long long calls = 0, split = 0;
        int threads = 0;
        ck_assert_int_eq(sscanf(k, "seqc: kernels: %lld calls, %lld split over up to %d threads", &calls, &split,
                                &threads), 3);
        ck_assert_int_eq(threads, t);
        ck_assert_msg(calls > 0 && (t == 1 ? split == 0 : split > 0), "%.3000s", out);
    }
    ck_assert_msg(same_file("t1.safetensors", "t3.safetensors"), "one thread and three train other weights");
    /* And the kernels split as the sizes ask train the same as split small. */
    ck_assert_msg(sh("'%s' run lm.seq train --epochs 1 --validate 0 --quiet --threads 2 --checkpoint t2.safetensors",
                     seqc) == 0, "%.3000s", out);
    ck_assert_msg(same_file("t1.safetensors", "t2.safetensors"), "two threads train other weights");
}
END_TEST

/* `seqc graph --fused` shows the graph the code generator lowers: the input
 * projection hoisted out of the step, which then reads the projected inputs
 * as a second sequence; the plain graph projects inside the step. `--time`
 * says what the lowering fused, the loss run in a wide output layer's
 * kernel included. */
START_TEST(graph_fused_and_time) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_msg(sh("'%s' graph --grad --text alarm.seq", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "{ rnn, 1 sequences") != NULL && strstr(out, "{ rnn, 2 sequences") == NULL, "%.3000s", out);
    ck_assert_msg(sh("'%s' graph --fused --grad --text alarm.seq", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "{ rnn, 2 sequences") != NULL && strstr(out, "{ rnn, 1 sequences") == NULL, "%.3000s", out);
    ck_assert_msg(sh("SEQC_CACHE=off '%s' run --time alarm.seq info", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "matmuls with their elementwise epilogue (") != NULL, "%.3000s", out);
    ck_assert_msg(strstr(out, "the loss's rows in its logits' kernel") == NULL, "%.3000s", out);
    /* A wide output layer's loss runs in the layer's kernel. */
    write_file("wide.seq", "model wide { input x: f32[3]  target y: i32[]\n"
                           "  p = dense(x, units: 1100, activation: softmax)\n"
                           "  loss sparse_categorical_crossentropy(p, y) }\n"
                           "train { batch 64 }\n");
    ck_assert_msg(sh("SEQC_CACHE=off '%s' run --time wide.seq info", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "the loss's rows in its logits' kernel") != NULL, "%.3000s", out);
}
END_TEST

/* Ctrl-C finishes the step, writes a checkpoint and exits; --resume then
 * ends with the weights of an uninterrupted run. Twenty epochs: the signal
 * comes 50 ms after the first epoch's checkpoint, and alarm's epoch of 200
 * steps takes some 20 ms. */
START_TEST(interrupt_and_resume) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_int_eq(sh("'%s' --count 20000 --seed 3 bx.npy by.npy", env("SEQC_ALARM_DATA")), 0);
    ck_assert_msg(sh("'%s' compile alarm.seq -o alarm_exe", seqc) == 0, "%.3000s", out);
    ck_assert_msg(sh("./alarm_exe train --data bx.npy,by.npy --epochs 20 --quiet --checkpoint full.safetensors "
                     "--history full.csv") == 0, "%.3000s", out);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(127);
        if (!freopen("/dev/null", "w", stdout) || !freopen("int.log", "w", stderr)) _exit(127);
        execl("./alarm_exe", "./alarm_exe", "train", "--data", "bx.npy,by.npy", "--epochs", "20", "--quiet",
              "--checkpoint", "int.safetensors", "--history", "int.csv", (char *)NULL);
        _exit(127);
    }
    /* Wait for the first epoch's checkpoint, then interrupt the second. */
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/int.safetensors", dir);
    struct stat st;
    for (int i = 0; i < 3000 && stat(ckpt, &st) != 0; i++) sleep_ms(10);
    ck_assert_msg(stat(ckpt, &st) == 0, "no checkpoint after the first epoch");
    sleep_ms(50);
    kill(pid, SIGINT);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 130, "exit status %d", WEXITSTATUS(status));
    size_t n;
    char *log = slurp("int.log", &n);
    ck_assert_msg(log && strstr(log, "interrupted after step") && strstr(log, "--resume"), "%s", log ? log : "");
    free(log);
    ck_assert_msg(sh("./alarm_exe train --data bx.npy,by.npy --epochs 20 --quiet --resume --checkpoint int.safetensors "
                     "--history int.csv") == 0, "%.3000s", out);
    ck_assert_msg(same_file("full.safetensors", "int.safetensors"), "the interrupted run ends with other weights");
}
END_TEST

/* A loss that overflows stops training, names the step and keeps the checkpoint. */
START_TEST(non_finite_stops) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_int_eq(sh(SEQC " train " ALARM_DATA " --epochs 1 --quiet", seqc), 0);
    ck_assert_int_eq(sh("cp alarm.safetensors before.safetensors"), 0);
    ck_assert_int_eq(sh(SEQC " train " ALARM_DATA " --epochs 5 --resume --lr 1e39 --quiet", seqc), 1);
    ck_assert_msg(strstr(out, "not finite at step") != NULL, "%.3000s", out);
    ck_assert_msg(strstr(out, "last checkpoint written is kept") != NULL, "%.3000s", out);
    /* Epochs that ended before the blow-up were saved, none after it: the
     * file is whole and loads. */
    ck_assert_msg(sh(SEQC " eval --data tx.npy,ty.npy", seqc) == 0, "%.3000s", out);
}
END_TEST

/* Bad data and bad checkpoints: clear messages, nothing trained. */
START_TEST(bad_inputs) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_int_eq(sh(SEQC " train --data missing.npy,y.npy --quiet", seqc), 1);
    ck_assert_msg(strstr(out, "missing.npy") != NULL, "%.3000s", out);
    ck_assert_int_eq(sh(SEQC " train --data tx.npy,y.npy --quiet", seqc), 1); /* 500 inputs, 2000 targets */
    ck_assert_msg(strstr(out, "tx.npy") != NULL || strstr(out, "y.npy") != NULL, "%.3000s", out);
    ck_assert_int_eq(sh("test -f alarm.safetensors"), 1);
    ck_assert_int_eq(sh(SEQC " eval --data tx.npy,ty.npy", seqc), 1);
    ck_assert_msg(strstr(out, "no checkpoint alarm.safetensors") != NULL, "%.3000s", out);
    ck_assert_int_eq(sh(SEQC " train " ALARM_DATA " --epochs 1 --quiet", seqc), 0);
    /* Truncated: the reader says so, naming the file. */
    ck_assert_int_eq(sh("head -c 300 alarm.safetensors > cut.safetensors"), 0);
    ck_assert_int_eq(sh(SEQC " eval --data tx.npy,ty.npy --weights cut.safetensors", seqc), 1);
    ck_assert_msg(strstr(out, "cut.safetensors") != NULL, "%.3000s", out);
    /* Another model's weights: the differing tensor is named. */
    write_file("wide.seq", "model alarm {\n  input x: f32[20, 1]\n  target y: f32[20, 1]\n"
                           "  h = rnn(x, units: 9, sequences: true)\n  p = dense(h, units: 1, activation: sigmoid)\n"
                           "  loss binary_crossentropy(p, y)\n}\n");
    ck_assert_int_eq(sh("'%s' run wide.seq eval --data tx.npy,ty.npy", seqc), 1);
    ck_assert_msg(strstr(out, "'h.W'") != NULL && strstr(out, "[1, 8]") != NULL && strstr(out, "[1, 9]") != NULL, "%s",
                  out);
    /* Unknown options and commands are usage errors. */
    ck_assert_int_eq(sh(SEQC " train --epochz 3", seqc), 2);
    ck_assert_int_eq(sh(SEQC " fly", seqc), 2);
}
END_TEST

/* A character model on a small text: training, then sampling that depends
 * on --seed alone, predict and embeddings. */
START_TEST(text_model) {
    const char *seqc = env("SEQC_EXE");
    FILE *f;
    char path[512];
    snprintf(path, sizeof path, "%s/poem.txt", dir);
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    for (int i = 0; i < 60; i++) fputs("to be or not to be, that is the question.\n", f);
    fclose(f);
    write_file("tiny.seq", "model tiny {\n  input c: i32[16]\n  target n: i32[16]\n"
                           "  e = embedding(c, vocab: 24, dim: 8)\n  h = lstm(e, units: 16, sequences: true, stateful: true)\n"
                           "  p = dense(h, units: 24, activation: softmax)\n"
                           "  loss sparse_categorical_crossentropy(p, n)\n  metric accuracy(p, n)\n}\n"
                           "train {\n  optimizer adam(lr: 0.01)\n  batch 4\n  epochs 3\n  bptt 16\n"
                           "  data text(\"poem.txt\", level: char, lower: true)\n}\n");
    ck_assert_msg(sh("'%s' run tiny.seq train --quiet", seqc) == 0, "%.3000s", out);
    ck_assert_msg(sh("'%s' run tiny.seq sample --prime 'to be' --length 40 --seed 3", seqc) == 0, "%.3000s", out);
    static char first[OUT_BYTES];
    snprintf(first, sizeof first, "%.3000s", out);
    ck_assert(strncmp(first, "to be", 5) == 0);
    ck_assert_int_eq(sh("'%s' run tiny.seq sample --prime 'to be' --length 40 --seed 3", seqc), 0);
    ck_assert_str_eq(out, first);
    ck_assert_int_eq(sh("'%s' run tiny.seq sample --prime 'to be' --length 40 --seed 4 --temperature 2", seqc), 0);
    ck_assert_str_ne(out, first);
    /* The embeddings: one row per token but padding, the token first. */
    ck_assert_int_eq(sh("'%s' run tiny.seq embeddings | cut -f1 | tr '\\n' '|'", seqc), 0);
    ck_assert_msg(strstr(out, "|t|") != NULL || strncmp(out, "t|", 2) == 0, "%.3000s", out);
    /* A vocabulary larger than the embedding is refused with the fix. */
    write_file("small.seq", "model small {\n  input c: i32[16]\n  target n: i32[16]\n"
                            "  e = embedding(c, vocab: 8, dim: 8)\n  h = lstm(e, units: 16, sequences: true, stateful: true)\n"
                            "  p = dense(h, units: 8, activation: softmax)\n"
                            "  loss sparse_categorical_crossentropy(p, n)\n}\n"
                            "train {\n  batch 4\n  bptt 16\n  data text(\"poem.txt\")\n}\n");
    ck_assert_int_eq(sh("'%s' run small.seq train --quiet", seqc), 1);
    ck_assert_msg(strstr(out, "write vocab:") != NULL, "%.3000s", out);
}
END_TEST

/* Pretrained, frozen word vectors: the rows of known tokens start from the
 * file and stay; the summary counts the table as non-trainable. */
START_TEST(pretrained_vectors) {
    const char *seqc = env("SEQC_EXE");
    FILE *f;
    char path[512];
    snprintf(path, sizeof path, "%s/words.txt", dir);
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    for (int i = 0; i < 50; i++) fputs("the cat sat on the mat and the dog sat on the log\n", f);
    fclose(f);
    write_file("vec.txt", "2 3\ncat 0.5 -0.25 2\nzebra 9 9 9\n");
    write_file("w.seq", "model w {\n  input c: i32[4]\n  target n: i32[]\n"
                        "  e = embedding(c, vocab: 12, dim: 3, vectors: \"vec.txt\", trainable: false)\n"
                        "  h = rnn(e, units: 4)\n  p = dense(h, units: 12, activation: softmax)\n"
                        "  loss sparse_categorical_crossentropy(p, n)\n}\n"
                        "train {\n  batch 8\n  epochs 2\n  data text(\"words.txt\", level: word)\n}\n");
    ck_assert_msg(sh("'%s' summary w.seq", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "Non-trainable params: 36") != NULL, "%.3000s", out);
    ck_assert_msg(sh("'%s' run w.seq train", seqc) == 0, "%.3000s", out);
    ck_assert_msg(strstr(out, "e.embeddings: 1 of 8 tokens from") != NULL, "%.3000s", out);
    ck_assert_msg(sh("'%s' run w.seq embeddings | grep '^cat'", seqc) == 0, "%.3000s", out);
    ck_assert_str_eq(out, "cat\t0.5\t-0.25\t2\n");
    /* Vectors of another width: the file and line are named. */
    write_file("vec.txt", "cat 0.5 -0.25\n");
    ck_assert_int_eq(sh("'%s' run w.seq train --quiet", seqc), 1);
    ck_assert_msg(strstr(out, "vec.txt") != NULL, "%.3000s", out);
}
END_TEST

/* A model calling a function of the user's shared library: the executable
 * links the library and trains the JIT's weights. */
START_TEST(extern_in_executable) {
    const char *seqc = env("SEQC_EXE");
    char text[2048];
    snprintf(text, sizeof text,
             "extern swish(x) from \"%s\" grad swish_grad\n"
             "model alarm {\n  input x: f32[20, 1]\n  target y: f32[20, 1]\n"
             "  h = rnn(x, units: 8, sequences: true, activation: swish)\n"
             "  p = dense(h, units: 1, activation: sigmoid)\n  loss binary_crossentropy(p, y)\n}\n"
             "train {\n  batch 100\n}\n", env("SEQC_EXTERN_LIB"));
    write_file("ext.seq", text);
    ck_assert_msg(sh("'%s' compile ext.seq -o ext_exe", seqc) == 0, "%.3000s", out);
    ck_assert_msg(sh("./ext_exe train " ALARM_DATA " --epochs 2 --quiet --checkpoint aot.safetensors") == 0, "%.3000s", out);
    ck_assert_msg(sh("'%s' run ext.seq train " ALARM_DATA " --epochs 2 --quiet --checkpoint jit.safetensors", seqc) == 0,
                  "%.3000s", out);
    ck_assert(same_file("aot.safetensors", "jit.safetensors"));
}
END_TEST

/* --emit=lib: a C program predicts what the executable predicts. */
START_TEST(library_api) {
    const char *seqc = env("SEQC_EXE");
    ck_assert_int_eq(sh(SEQC " train " ALARM_DATA " --epochs 40 --lr 0.01 --quiet", seqc), 0);
    ck_assert_msg(sh("'%s' compile --emit=lib alarm.seq -o alarm", seqc) == 0, "%.3000s", out);
    ck_assert_int_eq(sh("test -f libalarm.a && test -f alarm.h"), 0);
    const char *cflags = getenv("SEQC_CLIENT_CFLAGS");
    ck_assert_msg(sh("cc -std=c11 %s -I. -o client '%s/tests/lib_client.c' libalarm.a -lm -pthread", cflags ? cflags : "",
                     env("SEQC_SOURCE_ROOT")) == 0,
                  "%.3000s", out);
    const char *line = "3 5 -1 7 0 2 19 4 4 -1 8 8 1 0 6 2 3 11 12 13";
    ck_assert_msg(sh("echo '%s' | ./client alarm.safetensors", line) == 0, "%.3000s", out);
    static char lib[OUT_BYTES];
    snprintf(lib, sizeof lib, "%.3000s", out);
    ck_assert_msg(sh("echo '%s' | " SEQC " predict", line, seqc) == 0, "%.3000s", out);
    ck_assert_str_eq(lib, out);
    /* The alarm has tripped from the third step on. */
    float o[20];
    char *p = lib;
    for (int i = 0; i < 20; i++) o[i] = strtof(p, &p);
    ck_assert_float_lt(o[0], 0.5f);
    ck_assert_float_gt(o[19], 0.5f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("train");
    TCase *t = tcase_create("train");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 600);
    tcase_add_test(t, alarm_learns);
    tcase_add_test(t, jit_aot_resume_identical);
    tcase_add_test(t, object_cache);
    tcase_add_test(t, threads_same_bits);
    tcase_add_test(t, graph_fused_and_time);
    tcase_add_test(t, interrupt_and_resume);
    tcase_add_test(t, non_finite_stops);
    tcase_add_test(t, bad_inputs);
    tcase_add_test(t, text_model);
    tcase_add_test(t, pretrained_vectors);
    tcase_add_test(t, extern_in_executable);
    tcase_add_test(t, library_api);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
