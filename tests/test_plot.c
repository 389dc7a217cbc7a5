/* Check suites for the plots, the word-vector loader and the vocabulary in
 * memory. Every test runs in a fresh temporary directory (the fixture chdirs
 * there), writes its files by hand and asserts exact error messages. */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "plot.h"
#include "safetensors.h"
#include "vectors.h"

#include "tmpdir.h"

static char *slurp(const char *name) {
    char *data;
    size_t n;
    RtDataError err;
    ck_assert_msg(rt_data_read_file(name, &data, &n, &err), "%s", err.msg);
    return data;
}

static int count(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Well-formed enough for a browser: <svg ...> first, </svg> last, every tag
 * closed in order, '&' only in the five predefined entities, no control
 * characters but newlines, and valid UTF-8 (checked loosely: continuation
 * bytes follow lead bytes). */
static void check_svg(const char *svg) {
    size_t n = strlen(svg);
    ck_assert_msg(strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\"", 53) == 0, "%.80s", svg);
    ck_assert(n > 7 && strcmp(svg + n - 7, "</svg>\n") == 0);
    char stack[16][32];
    int depth = 0;
    for (const char *p = svg; (p = strchr(p, '<')); p++) {
        bool closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t len = strspn(name, "abcdefghijklmnopqrstuvwxyz");
        ck_assert_msg(len > 0 && len < 32, "bad tag at %.40s", p);
        const char *end = strchr(p, '>');
        ck_assert_ptr_nonnull(end);
        ck_assert_msg(memchr(p + 1, '<', (size_t)(end - p - 1)) == NULL, "'<' inside a tag at %.40s", p);
        if (closing) {
            ck_assert_msg(depth > 0 && strlen(stack[depth - 1]) == len && memcmp(stack[depth - 1], name, len) == 0,
                          "</%.*s> closes the wrong element", (int)len, name);
            depth--;
        } else if (end[-1] != '/') {
            ck_assert_int_lt(depth, 16);
            memcpy(stack[depth], name, len);
            stack[depth++][len] = '\0';
        }
    }
    ck_assert_int_eq(depth, 0);
    static const char *const entities[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (const char *p = svg; (p = strchr(p, '&')); p++) {
        bool known = false;
        for (int i = 0; i < 5; i++)
            known |= strncmp(p, entities[i], strlen(entities[i])) == 0;
        ck_assert_msg(known, "bare '&' at %.20s", p);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)svg[i];
        ck_assert_msg(c >= 0x20 || c == '\n', "control byte 0x%02x at %zu", c, i);
        ck_assert(c != 0x7f);
        if (c >= 0xc0) {
            int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
            for (int k = 1; k <= more; k++)
                ck_assert_msg(((unsigned char)svg[i + k] & 0xc0) == 0x80, "bad UTF-8 at %zu", i);
            i += (size_t)more;
        } else {
            ck_assert_msg(c < 0x80, "stray continuation byte at %zu", i);
        }
    }
}

/* ---- Vocabulary as bytes ---- */

START_TEST(test_vocab_bytes) {
    RtText t;
    RtVocab v, w;
    RtDataError err;
    /* Char level: a space, a tab, a newline, a backslash, a two-byte and a
     * three-byte character, a NUL; 'a' is the most frequent. */
    static const char text[] = "aaa \t\n\\\xc3\xa9\xe2\x82\xac" "a\0";
    RtTextOptions opt = {0};
    ck_assert_msg(rt_data_text_parse("t.txt", text, sizeof text - 1, &opt, &t, &err), "%s", err.msg);
    ck_assert(rt_data_vocab_build(&t, &v, &err));
    ck_assert_int_eq(v.size, 9);
    size_t n;
    char *saved = rt_data_vocab_format(&v, &n, &err);
    ck_assert_ptr_nonnull(saved);
    static const char want[] = "seqc-vocab 1 9\na\n\\s\n\\t\n\\n\n\\\\\n\xc3\xa9\n\xe2\x82\xac\n\\x00\n";
    ck_assert_uint_eq(n, sizeof want - 1);
    ck_assert(memcmp(saved, want, n) == 0);
    ck_assert_uint_eq(strlen(saved), n); /* no NUL inside: it is a C string */

    /* Through a checkpoint's metadata, as training stores it. */
    RtStWriter *wr = rt_st_writer_new();
    float one = 1;
    int64_t shape[1] = {1};
    ck_assert_ptr_null(rt_st_writer_add(wr, "x", RT_ST_F32, shape, 1, &one));
    ck_assert_ptr_null(rt_st_writer_set_meta(wr, RT_DATA_VOCAB_META_KEY, saved));
    ck_assert_ptr_null(rt_st_writer_write(wr, "ck.safetensors"));
    rt_st_writer_free(wr);
    free(saved);
    RtStFile *f;
    ck_assert_ptr_null(rt_st_open("ck.safetensors", &f));
    const char *meta = rt_st_meta_get(f, "seqc.vocab");
    ck_assert_ptr_nonnull(meta);
    ck_assert_msg(rt_data_vocab_parse("ck.safetensors", meta, strlen(meta), &w, &err), "%s", err.msg);
    rt_st_close(f);
    ck_assert_int_eq(w.size, v.size);
    for (int32_t id = 0; id < v.size; id++) {
        ck_assert_int_eq(w.len[id], v.len[id]);
        ck_assert(memcmp(w.token[id], v.token[id], (size_t)v.len[id]) == 0);
        ck_assert_int_eq(rt_data_vocab_id(&w, v.token[id], (size_t)v.len[id]), id);
    }
    rt_data_vocab_free(&w);

    /* The file functions write and read the same bytes. */
    ck_assert_msg(rt_data_vocab_save(&v, "vocab.txt", &err), "%s", err.msg);
    char *file = slurp("vocab.txt");
    ck_assert(memcmp(file, want, sizeof want) == 0);
    free(file);
    ck_assert_msg(rt_data_vocab_load("vocab.txt", &w, &err), "%s", err.msg);
    ck_assert_int_eq(w.size, 9);
    ck_assert_int_eq(w.len[8], 1);
    ck_assert_int_eq(w.token[8][0], '\0');
    rt_data_vocab_free(&w);

    /* Errors name what the caller calls the text. */
    static const char bad[] = "seqc-vocab 1 3\na\n\\q\n";
    ck_assert(!rt_data_vocab_parse("ck.safetensors: seqc.vocab", bad, sizeof bad - 1, &w, &err));
    ck_assert_str_eq(err.msg, "ck.safetensors: seqc.vocab:3: unknown escape '\\q'");
    ck_assert_ptr_null(w.token);
    rt_data_vocab_free(&v);
    rt_data_text_free(&t);

    /* An empty vocabulary (only the padding id) is one line. */
    ck_assert(rt_data_vocab_parse("e", "seqc-vocab 1 1", 14, &v, &err));
    saved = rt_data_vocab_format(&v, &n, &err);
    ck_assert_str_eq(saved, "seqc-vocab 1 1\n");
    ck_assert(rt_data_vocab_parse("e", saved, n, &w, &err));
    ck_assert_int_eq(w.size, 1);
    free(saved);
    rt_data_vocab_free(&w);
    rt_data_vocab_free(&v);
}
END_TEST

/* ---- Training history ---- */

static char *plot_history(const char *csv) {
    RtDataError err;
    write_text("h.csv", csv);
    ck_assert_msg(rt_plot_history("h.csv", "h.svg", &err), "%s", err.msg);
    char *svg = slurp("h.svg");
    check_svg(svg);
    return svg;
}

START_TEST(test_history_good) {
    char *svg = plot_history("epoch,loss,accuracy,val_loss,val_accuracy\n"
                             "1,0.9,0.52,0.8,0.55\n"
                             "2,0.6,0.71,0.62,0.68\n"
                             "3,0.45,0.8,0.5,0.76\n"
                             "4,0.33,0.86,0.47,0.79\n"
                             "5,0.2,0.91,0.49,0.8\n");
    /* Two panels, each with a training and a validation line of 5 points. */
    ck_assert_int_eq(count(svg, "<g class=\"panel\">"), 2);
    ck_assert_int_eq(count(svg, "<polyline class=\"line\""), 4);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 20);
    ck_assert_int_eq(count(svg, "<circle class=\"key\""), 4);
    ck_assert_ptr_nonnull(strstr(svg, "width=\"960\" height=\"360\""));
    /* The loss comes first, then the metric; each has its legend. */
    char *loss = strstr(svg, ">Training and validation loss</text>");
    char *acc = strstr(svg, ">Training and validation accuracy</text>");
    ck_assert(loss && acc && loss < acc);
    ck_assert_ptr_nonnull(strstr(svg, ">Validation accuracy</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">Training loss</text>"));
    /* Round ticks: whole epochs 1..5, the loss in steps of 0.1. */
    for (int e = 1; e <= 5; e++) {
        char tick[64];
        snprintf(tick, sizeof tick, "text-anchor=\"middle\">%d</text>", e);
        ck_assert_int_eq(count(svg, tick), 2);
    }
    ck_assert_int_eq(count(svg, "text-anchor=\"middle\">6</text>"), 0);
    ck_assert_ptr_nonnull(strstr(svg, ">0.5</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">0.9</text>"));
    ck_assert_ptr_null(strstr(svg, ">0.55</text>"));
    /* The first training loss point: epoch 1 at the left, 0.9 at the top,
     * inside the plot area (x 85..460, y 62..308) with 5% to spare. */
    double x0, y0;
    char *pts = strstr(svg, "points=\"");
    ck_assert(sscanf(pts, "points=\"%lf,%lf", &x0, &y0) == 2);
    ck_assert_double_eq_tol(x0, 85 + 375 * 0.05 / 1.1, 0.01);
    ck_assert_double_eq_tol(y0, 62 + 246 * 0.05 / 1.1, 0.01);
    free(svg);
}
END_TEST

START_TEST(test_history_shapes) {
    /* Gaps: validation on every second epoch only. Runs of one value have a
     * point but no line; columns in any order. */
    char *svg = plot_history("val_loss,epoch,loss\n,1,1.0\n0.9,2,0.8\n,3,0.7\r\n0.7,4,0.6");
    ck_assert_int_eq(count(svg, "<g class=\"panel\">"), 1);
    ck_assert_int_eq(count(svg, "<polyline class=\"line\""), 1);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 6);
    ck_assert_ptr_nonnull(strstr(svg, "width=\"480\" height=\"360\""));
    free(svg);
    /* A diverged loss (nan) is a gap too; a metric without training column. */
    svg = plot_history("epoch,loss,val_accuracy,mae\n0,1,0.5,\n1,nan,0.6,\n2,0.5,0.7,\n");
    ck_assert_int_eq(count(svg, "<g class=\"panel\">"), 2); /* mae has no value: no panel */
    ck_assert_int_eq(count(svg, "<polyline class=\"line\""), 1);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 5);
    ck_assert_ptr_nonnull(strstr(svg, ">Validation accuracy</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">Training loss</text>"));
    free(svg);
    /* Four panels: two across, two down. Names are escaped. */
    svg = plot_history("epoch,loss,a<b,c&d,e\n1,1,2,3,4\n2,1,2,3,4\n");
    ck_assert_int_eq(count(svg, "<g class=\"panel\">"), 4);
    ck_assert_ptr_nonnull(strstr(svg, "width=\"960\" height=\"720\""));
    ck_assert_ptr_nonnull(strstr(svg, ">Training a&lt;b</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">Training c&amp;d</text>"));
    free(svg);
    /* A long name: the legend says only "Training" and "Validation". */
    svg = plot_history("epoch,sparse_categorical_accuracy,val_sparse_categorical_accuracy\n1,0.5,0.4\n");
    ck_assert_ptr_nonnull(strstr(svg, ">Training and validation sparse_categorical_accuracy</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">Training</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">Validation</text>"));
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 2);
    ck_assert_int_eq(count(svg, "<polyline"), 0);
    free(svg);
    /* Past RT_PLOT_MAX_MARKERS epochs only the lines are drawn. */
    size_t cap = 64 + 32 * (RT_PLOT_MAX_MARKERS + 1), n = 0;
    char *csv = malloc(cap);
    n += (size_t)snprintf(csv + n, cap - n, "epoch,loss\n");
    for (int e = 0; e <= RT_PLOT_MAX_MARKERS; e++)
        n += (size_t)snprintf(csv + n, cap - n, "%d,%g\n", e, 1.0 / (e + 1));
    svg = plot_history(csv);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 0);
    ck_assert_int_eq(count(svg, "<polyline class=\"line\""), 1);
    char *pts = strstr(svg, "points=\""), *end = strchr(pts + 8, '"');
    *end = '\0';
    ck_assert_int_eq(count(pts, ","), RT_PLOT_MAX_MARKERS + 1); /* one "x,y" per epoch */
    free(svg);
    free(csv);
}
END_TEST

static void history_error(const char *csv, const char *want) {
    RtDataError err;
    write_text("h.csv", csv);
    ck_assert_msg(!rt_plot_history("h.csv", "h.svg", &err), "accepted: %s", csv);
    ck_assert_str_eq(err.msg, want);
    ck_assert_int_ne(access("h.svg", F_OK), 0);
}

START_TEST(test_history_errors) {
    history_error("", "h.csv: empty file");
    history_error("loss,accuracy\n1,2\n",
                  "h.csv:1: no 'epoch' column (a history's header reads like 'epoch,loss,val_loss')");
    history_error("epoch,loss,,accuracy\n", "h.csv:1: column 3 has no name");
    history_error("epoch,loss,loss\n", "h.csv:1: columns 2 and 3 are both named 'loss'");
    history_error("epoch\n1\n", "h.csv:1: no column besides 'epoch'");
    history_error("epoch,loss\n", "h.csv: no epochs after the header");
    history_error("epoch,loss,accuracy\n1,0.5,0.6\n2,0.4\n", "h.csv:3: 2 fields, the header has 3");
    history_error("epoch,loss\n1,0.5,\n", "h.csv:2: 3 fields, the header has 2");
    history_error("epoch,loss,accuracy\n1,0.5,0.6\n2,0.4,abc\n", "h.csv:3: column 3 (accuracy): 'abc' is not a number");
    history_error("epoch,loss\n1,0.5\n,0.4\n", "h.csv:3: column 1 (epoch) is empty");
    history_error("loss,epoch\n0.5,1\n0.4,1\n", "h.csv:3: column 2 (epoch): 1 does not follow 1 on the line before");
    history_error("epoch,loss\nnan,1\n", "h.csv:2: column 1 (epoch): 'nan' is not a finite number");
    history_error("epoch,loss\n1,0.5\n\n2,0.4\n", "h.csv:3: empty line");
    history_error("epoch,loss\n1,\n2,\n", "h.csv: no column besides 'epoch' has a value");
    RtDataError err;
    ck_assert(!rt_plot_history("none.csv", "h.svg", &err));
    ck_assert_str_eq(err.msg, "none.csv: cannot open: No such file or directory");
    write_text("h.csv", "epoch,loss\n1,2\n");
    ck_assert(!rt_plot_history("h.csv", "no/such/dir.svg", &err));
    ck_assert_str_eq(err.msg, "no/such/dir.svg: cannot create: No such file or directory");
}
END_TEST

/* ---- PCA ---- */

START_TEST(test_pca_ellipse) {
    /* 36 points evenly around an ellipse with semi-axes 3 and 1 along the
     * orthonormal u1, u2 of R^3, centred at c. The covariance is then exactly
     * (9/2) u1 u1' + (1/2) u2 u2': the components are u1 and u2, carrying
     * 90% and 10% of the variance, and point k projects to (3 cos, sin). */
    enum { N = 36 };
    const double u1[3] = {2 / 7.0, 3 / 7.0, 6 / 7.0}, u2[3] = {3 / 7.0, -6 / 7.0, 2 / 7.0}, c[3] = {5, -2, 1};
    float x[N * 3];
    double xy[N * 2], explained[2];
    for (int k = 0; k < N; k++) {
        double t = 2 * M_PI * k / N;
        for (int j = 0; j < 3; j++)
            x[k * 3 + j] = (float)(c[j] + 3 * cos(t) * u1[j] + sin(t) * u2[j]);
    }
    RtDataError err;
    ck_assert_msg(rt_plot_pca(x, N, 3, xy, explained, &err), "%s", err.msg);
    ck_assert_double_eq_tol(explained[0], 0.9, 1e-5);
    ck_assert_double_eq_tol(explained[1], 0.1, 1e-5);
    /* Up to sign in general; here the sign convention fixes it: u1's entry
     * of largest magnitude (6/7) is positive, u2's (-6/7) is not, so the
     * second component is -u2. */
    for (int k = 0; k < N; k++) {
        double t = 2 * M_PI * k / N;
        ck_assert_double_eq_tol(xy[2 * k], 3 * cos(t), 1e-5);
        ck_assert_double_eq_tol(xy[2 * k + 1], -sin(t), 1e-5);
    }
    /* The same points with the axes' roles exchanged flip nothing but order. */
    for (int k = 0; k < N; k++) {
        double t = 2 * M_PI * k / N;
        for (int j = 0; j < 3; j++)
            x[k * 3 + j] = (float)(c[j] + 0.5 * cos(t) * u1[j] + 2 * sin(t) * u2[j]);
    }
    ck_assert(rt_plot_pca(x, N, 3, xy, explained, &err));
    ck_assert_double_eq_tol(explained[0], 16 / 17.0, 1e-5);
    for (int k = 0; k < N; k++) {
        double t = 2 * M_PI * k / N;
        ck_assert_double_eq_tol(fabs(xy[2 * k]), fabs(2 * sin(t)), 1e-5);
        ck_assert_double_eq_tol(fabs(xy[2 * k + 1]), fabs(0.5 * cos(t)), 1e-5);
    }
}
END_TEST

START_TEST(test_pca_line) {
    /* Points on a line in R^4: the first coordinate is the signed distance
     * from the mean along the line's direction, the second is 0. */
    enum { N = 7 };
    const double dir[4] = {-0.5, 0.5, 0.5, -0.5}; /* largest magnitude first at index 0, negative */
    float x[N * 4];
    double xy[N * 2], explained[2];
    for (int k = 0; k < N; k++)
        for (int j = 0; j < 4; j++)
            x[k * 4 + j] = (float)(1 + (k - 3) * 2 * dir[j]);
    RtDataError err;
    ck_assert(rt_plot_pca(x, N, 4, xy, explained, &err));
    ck_assert_double_eq_tol(explained[0], 1, 1e-9);
    ck_assert_double_eq_tol(explained[1], 0, 1e-9);
    for (int k = 0; k < N; k++) {
        /* The component is -dir (its entry of largest magnitude positive). */
        ck_assert_double_eq_tol(xy[2 * k], -(k - 3) * 2.0, 1e-5);
        ck_assert_double_eq_tol(xy[2 * k + 1], 0, 1e-9);
    }
    /* One column: the second coordinate is 0; one row: everything is 0. */
    float y[3] = {1, 2, 6};
    ck_assert(rt_plot_pca(y, 3, 1, xy, explained, &err));
    ck_assert_double_eq_tol(xy[0], -2, 1e-9);
    ck_assert_double_eq_tol(xy[4], 3, 1e-9);
    ck_assert(xy[1] == 0 && xy[3] == 0 && xy[5] == 0);
    ck_assert(rt_plot_pca(y, 1, 3, xy, explained, &err));
    ck_assert(xy[0] == 0 && xy[1] == 0 && explained[0] == 0);
    ck_assert(!rt_plot_pca(y, 0, 3, xy, explained, &err));
    ck_assert_str_eq(err.msg, "PCA of a [0, 3] matrix: it needs at least one row and one column");
}
END_TEST

/* ---- Embeddings ---- */

/* A vocabulary of the given tokens (id 0 is the padding). */
static void make_vocab(const char *text, RtVocab *v) {
    RtDataError err;
    ck_assert_msg(rt_data_vocab_parse("v", text, strlen(text), v, &err), "%s", err.msg);
}

START_TEST(test_embeddings_svg) {
    RtVocab v;
    make_vocab("seqc-vocab 1 6\nthe\n<b>&\n\\s\nlongwordlongwordlongwordlongword\n\\x01\n", &v);
    /* Row 0 (padding) is far away: it must not pull the fit. Rows 1..5 lie on
     * the first axis. */
    float emb[6 * 2] = {100, 100, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0};
    double xy[12];
    RtDataError err;
    ck_assert_msg(rt_plot_embeddings(emb, 6, 2, &v, 500, "e.embeddings", "e.svg", xy, &err), "%s", err.msg);
    ck_assert(isnan(xy[0]) && isnan(xy[1]));
    for (int id = 1; id < 6; id++) {
        ck_assert_double_eq_tol(xy[2 * id], id - 3, 1e-6);
        ck_assert_double_eq_tol(xy[2 * id + 1], 0, 1e-9);
    }
    char *svg = slurp("e.svg");
    check_svg(svg);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 5);
    ck_assert_ptr_nonnull(strstr(svg, ">the</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">&lt;b&gt;&amp;</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">\xe2\x90\xa3</text>"));                                  /* the space */
    ck_assert_ptr_nonnull(strstr(svg, ">longwordlongwordlongword\xe2\x80\xa6</text>"));         /* cut */
    ck_assert_ptr_nonnull(strstr(svg, ">\\x01</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">e.embeddings: the 5 most frequent tokens</text>"));
    ck_assert_ptr_nonnull(strstr(svg, "first principal component (100.0% of the variance)"));
    free(svg);
    /* --top 2; a vocabulary smaller than the matrix labels the rest by id. */
    rt_data_vocab_free(&v);
    make_vocab("seqc-vocab 1 2\nthe\n", &v);
    ck_assert(rt_plot_embeddings(emb, 6, 2, &v, 2, "t", "e.svg", NULL, &err));
    svg = slurp("e.svg");
    check_svg(svg);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 2);
    ck_assert_ptr_nonnull(strstr(svg, ">the</text>"));
    ck_assert_ptr_nonnull(strstr(svg, "\">2</text>\n"));
    free(svg);
    rt_data_vocab_free(&v);
    ck_assert(!rt_plot_embeddings(emb, 1, 2, NULL, 5, "t", "e.svg", NULL, &err));
    ck_assert_str_eq(err.msg, "t: an embedding of [1, 2] has no token besides the padding id 0");
    emb[7] = NAN;
    ck_assert(!rt_plot_embeddings(emb, 6, 2, NULL, 5, "t", "e.svg", NULL, &err));
    ck_assert_str_eq(err.msg, "t: entry [3, 1] is nan, not a finite number");
    ck_assert(!rt_plot_pca(emb, 6, 2, xy, NULL, &err));
    ck_assert_str_eq(err.msg, "PCA: entry [3, 1] is nan, not a finite number");
}
END_TEST

/* ---- The plot command ---- */

/* Runs rt_plot_main with stdout and stderr sent to files; returns the status. */
static int run_plot(char **out, char **errs, int argc, const char **argv) {
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fo = open("stdout.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open("stderr.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert(saved_out >= 0 && saved_err >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    int status = rt_plot_main(argc, (char **)argv, "seqc");
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    *out = slurp("stdout.txt");
    *errs = slurp("stderr.txt");
    return status;
}

static void expect_plot(int status, const char *want_err, int argc, const char **argv) {
    char *out, *errs;
    int got = run_plot(&out, &errs, argc, argv);
    ck_assert_msg(got == status, "status %d, want %d; stderr: %s", got, status, errs);
    ck_assert_str_eq(errs, want_err);
    free(out);
    free(errs);
}

#define PLOT(status, want, ...)                                                                           \
    do {                                                                                                  \
        const char *argv_[] = {"plot", __VA_ARGS__};                                                      \
        expect_plot(status, want, (int)(sizeof argv_ / sizeof argv_[0]), argv_);                          \
    } while (0)

static void write_checkpoint(const char *path, const char *const *names, int n, const char *vocab) {
    static const float emb[4 * 3] = {0, 0, 0, 1, 0, 0, 0, 2, 0, 3, 3, 1};
    static const int64_t shape[2] = {4, 3};
    RtStWriter *w = rt_st_writer_new();
    for (int i = 0; i < n; i++)
        ck_assert_ptr_null(rt_st_writer_add(w, names[i], RT_ST_F32, shape, strcmp(names[i], "flat") ? 2 : 1, emb));
    if (vocab)
        ck_assert_ptr_null(rt_st_writer_set_meta(w, RT_DATA_VOCAB_META_KEY, vocab));
    ck_assert_ptr_null(rt_st_writer_write(w, path));
    rt_st_writer_free(w);
}

START_TEST(test_plot_command) {
    write_text("h.csv", "epoch,loss,val_loss\n1,0.5,0.6\n2,0.4,0.5\n");
    PLOT(0, "", "h.csv", "-o", "h.svg");
    char *svg = slurp("h.svg");
    check_svg(svg);
    free(svg);

    char *out, *errs;
    const char *help[] = {"plot", "h.csv", "--frob", "--help"};
    ck_assert_int_eq(run_plot(&out, &errs, 4, help), 0);
    ck_assert(strncmp(out, "usage: seqc plot HISTORY.csv -o OUT.svg\n", 40) == 0);
    ck_assert_ptr_nonnull(strstr(out, "       seqc plot --embeddings CHECKPOINT.safetensors [--tensor NAME] [--top N]"));
    ck_assert_str_eq(errs, "");
    free(out);
    free(errs);

    /* Usage errors: status 2. */
    PLOT(2, "seqc plot: no input file (see seqc plot --help)\n", "-o", "h.svg");
    PLOT(2, "seqc plot: no output file; name it with -o OUT.svg\n", "h.csv");
    PLOT(2, "seqc plot: -o needs a value\n", "h.csv", "-o");
    PLOT(2, "seqc plot: unknown option '--top=5' (see seqc plot --help)\n", "h.csv", "--top=5");
    PLOT(2, "seqc plot: takes exactly one history file\n", "h.csv", "g.csv", "-o", "h.svg");
    PLOT(2, "seqc plot: -o is given twice\n", "h.csv", "-o", "a.svg", "-o", "b.svg");
    PLOT(2, "seqc plot: --tensor goes with --embeddings CHECKPOINT\n", "h.csv", "--tensor", "e", "-o", "h.svg");
    PLOT(2, "seqc plot: --top takes a whole number from 1 to 1000000, not '0'\n", "--embeddings", "c", "--top", "0",
         "-o", "h.svg");
    PLOT(2, "seqc plot: takes a history file or --embeddings CHECKPOINT, not both (see seqc plot --help)\n",
         "h.csv", "--embeddings", "c", "-o", "h.svg");

    /* Input errors: status 1. */
    write_text("bad.csv", "epoch,loss\n1,x\n");
    PLOT(1, "seqc plot: bad.csv:2: column 2 (loss): 'x' is not a number\n", "bad.csv", "-o", "h.svg");
    PLOT(1, "seqc plot: none.csv: cannot open: No such file or directory\n", "none.csv", "-o", "h.svg");

    /* Embeddings: the one tensor ending in .embeddings, the vocabulary from the metadata. */
    const char *one[] = {"e.embeddings", "h.kernel"};
    write_checkpoint("one.safetensors", one, 2, "seqc-vocab 1 4\nthe\nof\n<and>\n");
    PLOT(0, "", "--embeddings", "one.safetensors", "-o", "e.svg");
    svg = slurp("e.svg");
    check_svg(svg);
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 3);
    ck_assert_ptr_nonnull(strstr(svg, ">of</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">&lt;and&gt;</text>"));
    ck_assert_ptr_nonnull(strstr(svg, ">e.embeddings in one.safetensors: the 3 most frequent tokens</text>"));
    free(svg);
    PLOT(0, "", "--embeddings", "one.safetensors", "--tensor", "h.kernel", "--top", "2", "-o", "e.svg");
    svg = slurp("e.svg");
    ck_assert_int_eq(count(svg, "<circle class=\"point\""), 2);
    free(svg);

    /* No vocabulary: labels are ids. */
    write_checkpoint("novocab.safetensors", one, 1, NULL);
    PLOT(0, "", "--embeddings", "novocab.safetensors", "-o", "e.svg");
    svg = slurp("e.svg");
    ck_assert_ptr_nonnull(strstr(svg, "\">3</text>\n"));
    free(svg);

    const char *two[] = {"a.embeddings", "b.embeddings", "c"};
    write_checkpoint("two.safetensors", two, 3, NULL);
    PLOT(1,
         "seqc plot: two.safetensors: 2 tensors' names end in '.embeddings'; choose one with --tensor NAME: "
         "a.embeddings, b.embeddings\n",
         "--embeddings", "two.safetensors", "-o", "e.svg");
    const char *none[] = {"h.kernel", "flat"};
    write_checkpoint("none.safetensors", none, 2, NULL);
    PLOT(1,
         "seqc plot: none.safetensors: no tensor's name ends in '.embeddings'; choose one with --tensor NAME "
         "(the file holds flat, h.kernel)\n",
         "--embeddings", "none.safetensors", "-o", "e.svg");
    PLOT(1, "seqc plot: none.safetensors: no tensor named 'x'\n", "--embeddings", "none.safetensors", "--tensor",
         "x", "-o", "e.svg");
    PLOT(1,
         "seqc plot: none.safetensors: tensor 'flat' is F32 of rank 1; an embedding is a rank-2 F32 or F64 matrix\n",
         "--embeddings", "none.safetensors", "--tensor", "flat", "-o", "e.svg");
    write_checkpoint("badvocab.safetensors", one, 1, "seqc-vocab 1 3\nthe\n");
    PLOT(1,
         "seqc plot: badvocab.safetensors: seqc.vocab: the first line promises 2 tokens, the file holds 1\n",
         "--embeddings", "badvocab.safetensors", "-o", "e.svg");
}
END_TEST

/* ---- Word vectors ---- */

static void vectors_vocab(RtVocab *v) { make_vocab("seqc-vocab 1 5\nthe\nof\ncat\nnever\n", v); }

START_TEST(test_vectors_good) {
    RtVocab v;
    vectors_vocab(&v);
    float m[5 * 3];
    int64_t found;
    RtDataError err;
    /* word2vec: a header, a trailing space on each line; a token outside the
     * vocabulary (whose numbers are not even parsed); a CRLF line. */
    write_text("w2v.txt", "4 3\nthe 0.1 0.2 0.3 \nzebra x y z\ncat -1e-2 2 3\r\nof 4 5 6 \n");
    for (int i = 0; i < 15; i++)
        m[i] = -7;
    ck_assert_msg(rt_vectors_fill("w2v.txt", &v, m, 3, &found, &err), "%s", err.msg);
    ck_assert_int_eq(found, 3);
    const float want[15] = {-7, -7, -7, 0.1f, 0.2f, 0.3f, 4, 5, 6, -1e-2f, 2, 3, -7, -7, -7};
    for (int i = 0; i < 15; i++)
        ck_assert_msg(m[i] == want[i], "m[%d] = %g, want %g", i, m[i], want[i]);
    /* GloVe: no header, tabs too, no final newline. */
    write_text("glove.txt", "of 1 2 3\nnever\t7 8 9");
    ck_assert_msg(rt_vectors_fill("glove.txt", &v, m, 3, &found, &err), "%s", err.msg);
    ck_assert_int_eq(found, 2);
    ck_assert(m[6] == 1 && m[12] == 7 && m[14] == 9 && m[3] == 0.1f);
    /* Dimension 1 with a header. */
    write_text("one.txt", "2 1\nthe 5\ncat 6\n");
    float m1[5] = {0};
    ck_assert_msg(rt_vectors_fill("one.txt", &v, m1, 1, &found, &err), "%s", err.msg);
    ck_assert(found == 2 && m1[1] == 5 && m1[3] == 6);
    rt_data_vocab_free(&v);
}
END_TEST

static void vectors_error(const char *text, int64_t dim, const char *want) {
    RtVocab v;
    vectors_vocab(&v);
    float m[5 * 4];
    int64_t found;
    RtDataError err;
    write_text("v.txt", text);
    ck_assert_msg(!rt_vectors_fill("v.txt", &v, m, dim, &found, &err), "accepted: %s", text);
    ck_assert_str_eq(err.msg, want);
    rt_data_vocab_free(&v);
}

START_TEST(test_vectors_errors) {
    vectors_error("the 1 2 3\nof 1 2\n", 3, "v.txt:2: 2 values, expected 3");
    vectors_error("the 1 2 3\nzebra 1 2 3 4\n", 3, "v.txt:2: 4 values, expected 3");
    vectors_error("the\n", 3, "v.txt:1: 0 values, expected 3");
    vectors_error("2 4\nthe 1 2 3 4\n", 3, "v.txt:1: the header gives dimension 4, expected 3");
    vectors_error("the 1 x 3\n", 3, "v.txt:1: value 2 'x' is not a number");
    vectors_error("the 1 2 3x\n", 3, "v.txt:1: value 3 '3x' is not a number");
    vectors_error("cat 1e39 2 3\n", 3, "v.txt:1: value 1 '1e39' is not a finite number that fits in f32");
    vectors_error("cat nan 2 3\n", 3, "v.txt:1: value 1 'nan' is not a finite number that fits in f32");
    vectors_error("the 1 2 3\nof 1 2", 3, "v.txt:2: the file ends inside this line (2 of 3 values)");
    vectors_error("3 3\nthe 1 2 3\nof 4 5 6\n", 3, "v.txt: truncated: the header promises 3 vectors, the file holds 2");
    vectors_error("1 3\nthe 1 2 3\nof 4 5 6\n", 3, "v.txt:3: more vectors than the 1 the header promises");
    vectors_error("the 1 2 3\nof 1 2 3\nthe 1 2 3\n", 3, "v.txt:3: token 'the' appears twice (first on line 1)");
    vectors_error("the 1 2 3\n\nof 1 2 3\n", 3, "v.txt:2: empty line");
    vectors_error("", 3, "v.txt: empty file");
    vectors_error("the 1\n", 0, "v.txt: dimension 0 is outside 1..65536");
    /* A line over the limit (a binary file, say) stops at the limit. */
    size_t big = (size_t)RT_VECTORS_MAX_LINE_BYTES + 10;
    char *line = malloc(big + 1);
    memset(line, 'x', big);
    line[big] = '\0';
    vectors_error(line, 3, "v.txt:1: line longer than the limit of 2098176 bytes");
    free(line);
    RtVocab v;
    vectors_vocab(&v);
    float m[15];
    int64_t found;
    RtDataError err;
    ck_assert(!rt_vectors_fill("none.txt", &v, m, 3, &found, &err));
    ck_assert_str_eq(err.msg, "none.txt: cannot open: No such file or directory");
    rt_data_vocab_free(&v);
}
END_TEST

static Suite *plot_suite(void) {
    Suite *s = suite_create("plot");
    struct {
        const char *name;
        const TTest *test;
    } tests[] = {
        {"vocab", test_vocab_bytes},       {"history", test_history_good},   {"history", test_history_shapes},
        {"history", test_history_errors},  {"pca", test_pca_ellipse},        {"pca", test_pca_line},
        {"embeddings", test_embeddings_svg}, {"command", test_plot_command}, {"vectors", test_vectors_good},
        {"vectors", test_vectors_errors},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        TCase *tc = tcase_create(tests[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, tests[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(plot_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
