/* Check suites for the data loaders. Every test runs in a fresh temporary
 * directory (the fixture chdirs there), writes its files by hand, and asserts
 * exact error messages, so a message names "imdb.tsv:17" as the user sees it. */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"

#include "tmpdir.h"

/* ---- TSV ---- */

static void tsv_load(const char *text, RtTsvOptions opt, RtDataset *ds) {
    RtDataError err;
    write_text("data.tsv", text);
    ck_assert_msg(rt_data_tsv_read("data.tsv", &opt, ds, &err), "%s", err.msg);
}

static void check_row(const RtDataset *ds, int64_t row, const int32_t *want, int64_t n) {
    const int32_t *got = (const int32_t *)ds->inputs + row * ds->in_size;
    ck_assert_int_eq(ds->in_size, n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "row %lld, position %lld: got %d, want %d", (long long)row,
                      (long long)i, got[i], want[i]);
}

START_TEST(test_tsv_pre) {
    RtDataset ds;
    tsv_load("1\t5 6 7\n0\t1 2 3 4 5 6\n0.5\t\n-2e1\t9  8\r\n3\t1 2 3 4", (RtTsvOptions){.maxlen = 4, .vocab = 10},
             &ds);
    ck_assert_int_eq(ds.count, 5);
    ck_assert_int_eq(ds.in_dtype, RT_DATA_I32);
    ck_assert_int_eq(ds.tgt_dtype, RT_DATA_F32);
    ck_assert_int_eq(ds.in_rank, 1);
    ck_assert_int_eq(ds.in_dims[0], 4);
    ck_assert_int_eq(ds.tgt_rank, 1);
    ck_assert_int_eq(ds.tgt_dims[0], 1);
    check_row(&ds, 0, (int32_t[]){0, 5, 6, 7}, 4);
    check_row(&ds, 1, (int32_t[]){3, 4, 5, 6}, 4);   /* the front is cut */
    check_row(&ds, 2, (int32_t[]){0, 0, 0, 0}, 4);   /* an empty field is all padding */
    check_row(&ds, 3, (int32_t[]){0, 0, 9, 8}, 4);
    check_row(&ds, 4, (int32_t[]){1, 2, 3, 4}, 4);   /* no final newline */
    const float *y = ds.targets;
    ck_assert(y[0] == 1.0f && y[1] == 0.0f && y[2] == 0.5f && y[3] == -20.0f && y[4] == 3.0f);
    rt_data_dataset_free(&ds);
}
END_TEST

START_TEST(test_tsv_post) {
    RtDataset ds;
    tsv_load("1\t5 6 7\n0\t1 2 3 4 5 6\n", (RtTsvOptions){.maxlen = 4, .vocab = 10, .pad_post = true,
                                                           .truncate_post = true}, &ds);
    check_row(&ds, 0, (int32_t[]){5, 6, 7, 0}, 4);
    check_row(&ds, 1, (int32_t[]){1, 2, 3, 4}, 4);
    rt_data_dataset_free(&ds);
    /* Padding and truncating are independent. */
    tsv_load("1\t5 6 7\n0\t1 2 3 4 5 6\n", (RtTsvOptions){.maxlen = 4, .vocab = 10, .pad_post = true}, &ds);
    check_row(&ds, 0, (int32_t[]){5, 6, 7, 0}, 4);
    check_row(&ds, 1, (int32_t[]){3, 4, 5, 6}, 4);
    rt_data_dataset_free(&ds);
    tsv_load("1\t5 6 7\n0\t1 2 3 4 5 6\n", (RtTsvOptions){.maxlen = 4, .vocab = 10, .truncate_post = true}, &ds);
    check_row(&ds, 0, (int32_t[]){0, 5, 6, 7}, 4);
    check_row(&ds, 1, (int32_t[]){1, 2, 3, 4}, 4);
    rt_data_dataset_free(&ds);
}
END_TEST

static void tsv_error(const char *name, const char *text, int64_t vocab, const char *want) {
    RtDataset ds;
    RtDataError err;
    write_text(name, text);
    RtTsvOptions opt = {.maxlen = 5, .vocab = vocab};
    ck_assert_msg(!rt_data_tsv_read(name, &opt, &ds, &err), "accepted: %s", text);
    ck_assert_str_eq(err.msg, want);
    ck_assert_ptr_null(ds.inputs);
}

START_TEST(test_tsv_errors) {
    char imdb[512] = "";
    for (int i = 0; i < 16; i++)
        strcat(imdb, "1\t1 19999 2\n");
    strcat(imdb, "0\t3 20001\n");
    tsv_error("imdb.tsv", imdb, 20000, "imdb.tsv:17: token id 20001 is not below the vocabulary size 20000");
    tsv_error("imdb.tsv", "0\t20000", 20000, "imdb.tsv:1: token id 20000 is not below the vocabulary size 20000");
    tsv_error("imdb.tsv", "0\t123456789012345678901234567890\n", 20000,
              "imdb.tsv:1: token id 123456789012345678901234567890 is not below the vocabulary size 20000");
    tsv_error("data.tsv", "", 10, "data.tsv: empty file");
    tsv_error("data.tsv", "1\t1 2\n0 1 2\n", 10, "data.tsv:2: no tab (a line is a label, a tab and token ids)");
    tsv_error("data.tsv", "1\t1\n\n0\t2\n", 10, "data.tsv:2: empty line (a line is a label, a tab and token ids)");
    tsv_error("data.tsv", "1\t1 x2\n", 10, "data.tsv:1: 'x2' is not a token id (a non-negative integer)");
    tsv_error("data.tsv", "1\t2.5\n", 10, "data.tsv:1: '2.5' is not a token id (a non-negative integer)");
    tsv_error("data.tsv", "1\t-\n", 10, "data.tsv:1: '-' is not a token id (a non-negative integer)");
    tsv_error("data.tsv", "1\t1\n1\t4 -3\n", 10, "data.tsv:2: token id -3 is negative");
    tsv_error("data.tsv", "yes\t1\n", 10, "data.tsv:1: label 'yes' is not a number");
    tsv_error("data.tsv", "\t1\n", 10, "data.tsv:1: label '' is not a number");
    tsv_error("data.tsv", "nan\t1\n", 10, "data.tsv:1: label 'nan' is not a finite number");
    tsv_error("data.tsv", "1e300\t1\n", 10, "data.tsv:1: label 1e300 does not fit in float32");

    RtDataset ds;
    RtDataError err;
    RtTsvOptions opt = {.maxlen = 5, .vocab = 10};
    ck_assert(!rt_data_tsv_read("nope.tsv", &opt, &ds, &err));
    ck_assert_str_eq(err.msg, "nope.tsv: cannot open: No such file or directory");
    opt.maxlen = 0;
    write_text("data.tsv", "1\t1\n");
    ck_assert(!rt_data_tsv_read("data.tsv", &opt, &ds, &err));
    ck_assert_str_eq(err.msg, "data.tsv: the sequence length 0 is not positive");

    size_t n = RT_DATA_MAX_LINE_BYTES + 10;
    char *big = malloc(n + 1);
    memcpy(big, "1\t1\n1\t", 6);
    for (size_t i = 6; i < n; i++)
        big[i] = i % 2 ? ' ' : '1';
    big[n] = '\0';
    tsv_error("data.tsv", big, 10, "data.tsv:2: line longer than the limit of 1048576 bytes");
    free(big);
}
END_TEST

/* ---- CSV ---- */

START_TEST(test_csv_good) {
    RtDataError err;
    float *v;
    int64_t n;
    write_text("series.csv", "month,\"sunspots, mean\"\n\"1749-01\",58\n1749-02, 62.6 \n1749-03,\"70\"\r\n1749-04,-1.5e1");
    RtCsvOptions opt = {.column = 1, .header = true};
    ck_assert_msg(rt_data_csv_read("series.csv", &opt, &v, &n, &err), "%s", err.msg);
    ck_assert_int_eq(n, 4);
    ck_assert(v[0] == 58.0f && v[1] == 62.6f && v[2] == 70.0f && v[3] == -15.0f);

    RtDataset ds;
    ck_assert_msg(rt_data_series_windows("series.csv", v, n, 2, 1, 1, &ds, &err), "%s", err.msg);
    ck_assert_int_eq(ds.count, 2);
    ck_assert_int_eq(ds.in_rank, 2);
    ck_assert_int_eq(ds.in_dims[0], 2);
    ck_assert_int_eq(ds.in_dims[1], 1);
    ck_assert_int_eq(ds.tgt_dims[0], 1);
    const float *x = ds.inputs, *y = ds.targets;
    ck_assert(x[0] == 58.0f && x[1] == 62.6f && y[0] == 70.0f);
    ck_assert(x[2] == 62.6f && x[3] == 70.0f && y[1] == -15.0f);
    rt_data_dataset_free(&ds);
    free(v);

    /* Several steps ahead, windows two apart: 1..9 -> [1 2 3]->[4 5], [3 4 5]->[6 7], [5 6 7]->[8 9]. */
    write_text("s.csv", "1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    opt = (RtCsvOptions){0};
    ck_assert_msg(rt_data_csv_read("s.csv", &opt, &v, &n, &err), "%s", err.msg);
    ck_assert_msg(rt_data_series_windows("s.csv", v, n, 3, 2, 2, &ds, &err), "%s", err.msg);
    ck_assert_int_eq(ds.count, 3);
    float want_x[] = {1, 2, 3, 3, 4, 5, 5, 6, 7}, want_y[] = {4, 5, 6, 7, 8, 9};
    for (int i = 0; i < 9; i++)
        ck_assert(((float *)ds.inputs)[i] == want_x[i]);
    for (int i = 0; i < 6; i++)
        ck_assert(((float *)ds.targets)[i] == want_y[i]);
    rt_data_dataset_free(&ds);
    ck_assert(!rt_data_series_windows("s.csv", v, 4, 3, 2, 1, &ds, &err));
    ck_assert_str_eq(err.msg, "s.csv: the series has 4 values; a window of 3 and 2 to predict need 5");
    free(v);
}
END_TEST

static void csv_error(const char *text, RtCsvOptions opt, const char *want) {
    RtDataError err;
    float *v;
    int64_t n;
    write_text("series.csv", text);
    ck_assert_msg(!rt_data_csv_read("series.csv", &opt, &v, &n, &err), "accepted: %s", text);
    ck_assert_str_eq(err.msg, want);
    ck_assert_ptr_null(v);
}

START_TEST(test_csv_errors) {
    csv_error("1,2,3\n4,5,6\n7\n", (RtCsvOptions){.column = 2}, "series.csv:3: column 2 is missing (the line has 1 column)");
    csv_error("1,2\n", (RtCsvOptions){.column = 2}, "series.csv:1: column 2 is missing (the line has 2 columns)");
    csv_error("x\n1\n2\n3\nabc\n", (RtCsvOptions){.header = true}, "series.csv:5: 'abc' is not a number");
    csv_error("1\n2x\n", (RtCsvOptions){0}, "series.csv:2: '2x' is not a number");
    csv_error("1\ninf\n", (RtCsvOptions){0}, "series.csv:2: 'inf' is not a finite number");
    csv_error("1\n1e40\n", (RtCsvOptions){0}, "series.csv:2: 1e40 does not fit in float32");
    csv_error("", (RtCsvOptions){0}, "series.csv: empty file");
    csv_error("value\n", (RtCsvOptions){.header = true}, "series.csv: no data after the header line");
    csv_error("1,,3\n", (RtCsvOptions){.column = 1}, "series.csv:1: column 1 is empty");
    csv_error("1\n\n2\n", (RtCsvOptions){0}, "series.csv:2: empty line");
    csv_error("\"1,2\n", (RtCsvOptions){0}, "series.csv:1: a quote is not closed");
    csv_error("1\n", (RtCsvOptions){.column = -1}, "series.csv: column -1 is negative");
}
END_TEST

/* ---- Text ---- */

static void text_parse(const char *s, RtTextOptions opt, RtText *t) {
    RtDataError err;
    ck_assert_msg(rt_data_text_parse("t.txt", s, strlen(s), &opt, t, &err), "%s", err.msg);
}

/* Tokens joined with '|'. */
static const char *joined(const RtText *t) {
    static char out[1024];
    size_t o = 0;
    for (int64_t i = 0; i < t->count; i++) {
        if (i)
            out[o++] = '|';
        memcpy(out + o, t->buf + t->start[i], (size_t)t->len[i]);
        o += (size_t)t->len[i];
    }
    out[o] = '\0';
    return out;
}

START_TEST(test_text_char) {
    RtText t;
    text_parse("Hi, Yo!\n", (RtTextOptions){0}, &t);
    ck_assert_str_eq(joined(&t), "H|i|,| |Y|o|!|\n");
    rt_data_text_free(&t);
    text_parse("Hi, Yo!\n", (RtTextOptions){.lower = true}, &t);
    ck_assert_str_eq(joined(&t), "h|i|,| |y|o|!|\n");
    rt_data_text_free(&t);
    /* The tutorial's char model: lower-cased, non-letters to one space. */
    text_parse("To be, or NOT to be:\n  that's it.", (RtTextOptions){.lower = true, .letters_only = true}, &t);
    ck_assert_str_eq(t.buf, "to be or not to be that s it ");
    ck_assert_int_eq(t.count, 29);
    rt_data_text_free(&t);
    /* A multi-byte character is one token; Latin-1 capitals are lower-cased. */
    text_parse("\xc3\x87" "a \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xf0\x9f\x98\x80", (RtTextOptions){.lower = true}, &t);
    ck_assert_str_eq(joined(&t), "\xc3\xa7|a| |\xc3\xa9|t|\xc3\xa9| |\xe6\x97\xa5|\xf0\x9f\x98\x80");
    rt_data_text_free(&t);
    /* Outside Latin-1 a code point is not a letter. */
    text_parse("\xc3\x89t\xc3\xa9 \xc3\x97 \xe6\x97\xa5x", (RtTextOptions){.letters_only = true}, &t);
    ck_assert_str_eq(t.buf, "\xc3\x89t\xc3\xa9 x");
    rt_data_text_free(&t);
}
END_TEST

START_TEST(test_text_word) {
    RtText t;
    text_parse("The cat, the DOG.\n\tthe  end", (RtTextOptions){.word_level = true}, &t);
    ck_assert_str_eq(joined(&t), "The|cat,|the|DOG.|the|end");
    rt_data_text_free(&t);
    text_parse("The cat, the DOG.\n\tthe  end", (RtTextOptions){.word_level = true, .lower = true}, &t);
    ck_assert_str_eq(joined(&t), "the|cat,|the|dog.|the|end");
    rt_data_text_free(&t);
    text_parse("The cat,the DOG.\n\tthe  end\n",
               (RtTextOptions){.word_level = true, .lower = true, .letters_only = true}, &t);
    ck_assert_str_eq(joined(&t), "the|cat|the|dog|the|end");
    rt_data_text_free(&t);
}
END_TEST

static void text_error(const char *s, size_t n, RtTextOptions opt, const char *want) {
    RtText t;
    RtDataError err;
    ck_assert(!rt_data_text_parse("t.txt", s, n, &opt, &t, &err));
    ck_assert_str_eq(err.msg, want);
    ck_assert_ptr_null(t.buf);
}

START_TEST(test_text_errors) {
    text_error("", 0, (RtTextOptions){0}, "t.txt: empty file");
    text_error("ab\ncd\xff", 6, (RtTextOptions){0}, "t.txt:2: invalid UTF-8 (byte 0xff at byte 3 of the line)");
    text_error("\xc3(", 2, (RtTextOptions){0}, "t.txt:1: invalid UTF-8 (byte 0xc3 at byte 1 of the line)");
    text_error("\xc0\xaf", 2, (RtTextOptions){0}, "t.txt:1: invalid UTF-8 (byte 0xc0 at byte 1 of the line)");
    text_error("\xed\xa0\x80", 3, (RtTextOptions){0}, "t.txt:1: invalid UTF-8 (byte 0xed at byte 1 of the line)");
    text_error("!?! ...\n", 8, (RtTextOptions){.word_level = true, .letters_only = true}, "t.txt: no tokens in the text");
    char word[RT_DATA_MAX_TOKEN_BYTES + 8] = "a\nb\n";
    memset(word + 4, 'w', RT_DATA_MAX_TOKEN_BYTES + 1);
    text_error(word, RT_DATA_MAX_TOKEN_BYTES + 5, (RtTextOptions){.word_level = true},
               "t.txt:3: a word longer than the limit of 1024 bytes");
    /* At the limit it is fine, and letters_only may cut a long run into words. */
    RtText t;
    RtDataError err;
    RtTextOptions opt = {.word_level = true};
    ck_assert(rt_data_text_parse("t.txt", word, RT_DATA_MAX_TOKEN_BYTES + 4, &opt, &t, &err));
    rt_data_text_free(&t);
    word[600] = ',';
    opt.letters_only = true;
    ck_assert(rt_data_text_parse("t.txt", word, RT_DATA_MAX_TOKEN_BYTES + 5, &opt, &t, &err));
    ck_assert_int_eq(t.count, 4);
    rt_data_text_free(&t);

    write_text("poems.txt", "Roses\n");
    opt = (RtTextOptions){.lower = true};
    ck_assert_msg(rt_data_text_read("poems.txt", &opt, &t, &err), "%s", err.msg);
    ck_assert_str_eq(t.buf, "roses\n");
    rt_data_text_free(&t);
    ck_assert(!rt_data_text_read("none.txt", &opt, &t, &err));
    ck_assert_str_eq(err.msg, "none.txt: cannot open: No such file or directory");
}
END_TEST

/* ---- Vocabulary ---- */

START_TEST(test_vocab_order) {
    RtText t;
    RtVocab v;
    RtDataError err;
    /* z and y appear twice, z first; b three times; a once. */
    text_parse("a z y b b y z b", (RtTextOptions){.word_level = true}, &t);
    ck_assert(rt_data_vocab_build(&t, &v, &err));
    ck_assert_int_eq(v.size, 5);
    ck_assert_str_eq(v.token[0], "");
    ck_assert_str_eq(v.token[1], "b");
    ck_assert_str_eq(v.token[2], "z");
    ck_assert_str_eq(v.token[3], "y");
    ck_assert_str_eq(v.token[4], "a");
    ck_assert_int_eq(v.count[1], 3);
    ck_assert_int_eq(v.count[4], 1);
    ck_assert_int_eq(rt_data_vocab_id(&v, "y", 1), 3);
    ck_assert_int_eq(rt_data_vocab_id(&v, "q", 1), 0);
    int32_t *ids;
    int64_t unknown;
    ck_assert(rt_data_vocab_encode(&v, &t, &ids, &unknown, &err));
    int32_t want[] = {4, 2, 3, 1, 1, 3, 2, 1};
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(ids[i], want[i]);
    ck_assert_int_eq(unknown, 0);
    free(ids);
    rt_data_text_free(&t);
    text_parse("a q b q", (RtTextOptions){.word_level = true}, &t);
    ck_assert(rt_data_vocab_encode(&v, &t, &ids, &unknown, &err));
    ck_assert(ids[0] == 4 && ids[1] == 0 && ids[2] == 1 && ids[3] == 0);
    ck_assert_int_eq(unknown, 2);
    free(ids);
    /* Keeping the two most frequent (Tokenizer(num_words=3)): z and y's rivals drop out. */
    rt_data_vocab_truncate(&v, 3);
    ck_assert_int_eq(v.size, 3);
    ck_assert_int_eq(rt_data_vocab_id(&v, "b", 1), 1);
    ck_assert_int_eq(rt_data_vocab_id(&v, "z", 1), 2);
    ck_assert_int_eq(rt_data_vocab_id(&v, "y", 1), 0);
    ck_assert_int_eq(rt_data_vocab_id(&v, "a", 1), 0);
    ck_assert(rt_data_vocab_encode(&v, &t, &ids, &unknown, &err));
    ck_assert(ids[0] == 0 && ids[2] == 1 && unknown == 3);
    free(ids);
    rt_data_text_free(&t);
    rt_data_vocab_free(&v);
}
END_TEST

static char *slurp(const char *name, size_t *n) {
    char *data;
    RtDataError err;
    ck_assert_msg(rt_data_read_file(name, &data, n, &err), "%s", err.msg);
    return data;
}

START_TEST(test_vocab_round_trip) {
    RtText t;
    RtVocab v, w;
    RtDataError err;
    /* Every escaped byte, a NUL inside the text, and a two-byte character. */
    static const char text[] = "aa  \n\\\t\r\x01\x7f" "\xc3\xa9" "a\0";
    RtTextOptions opt = {0};
    ck_assert(rt_data_text_parse("t.txt", text, sizeof text - 1, &opt, &t, &err));
    ck_assert(rt_data_vocab_build(&t, &v, &err));
    ck_assert_int_eq(v.size, 11);
    ck_assert_msg(rt_data_vocab_save(&v, "vocab.txt", &err), "%s", err.msg);
    size_t n;
    char *saved = slurp("vocab.txt", &n);
    static const char want[] = "seqc-vocab 1 11\na\n\\s\n\\n\n\\\\\n\\t\n\\r\n\\x01\n\\x7f\n\xc3\xa9\n\\x00\n";
    ck_assert_uint_eq(n, sizeof want - 1);
    ck_assert(memcmp(saved, want, n) == 0);
    free(saved);
    ck_assert_msg(rt_data_vocab_load("vocab.txt", &w, &err), "%s", err.msg);
    ck_assert_int_eq(w.size, v.size);
    for (int32_t id = 0; id < v.size; id++) {
        ck_assert_int_eq(w.len[id], v.len[id]);
        ck_assert(memcmp(w.token[id], v.token[id], (size_t)v.len[id]) == 0);
        ck_assert_int_eq(rt_data_vocab_id(&w, v.token[id], (size_t)v.len[id]), id);
    }
    rt_data_vocab_free(&w);
    rt_data_vocab_free(&v);
    rt_data_text_free(&t);
}
END_TEST

static void vocab_error(const char *text, const char *want) {
    RtVocab v;
    RtDataError err;
    write_text("vocab.txt", text);
    ck_assert_msg(!rt_data_vocab_load("vocab.txt", &v, &err), "accepted: %s", text);
    ck_assert_str_eq(err.msg, want);
    ck_assert_ptr_null(v.token);
}

START_TEST(test_vocab_errors) {
    vocab_error("", "vocab.txt: empty file");
    vocab_error("a\nb\n", "vocab.txt:1: not a seqc vocabulary (the first line must be 'seqc-vocab 1 <size>')");
    vocab_error("seqc-vocab 1 3x\na\nb\n", "vocab.txt:1: not a seqc vocabulary (the first line must be 'seqc-vocab 1 <size>')");
    vocab_error("seqc-vocab 1 4\na\nb\na\n", "vocab.txt:4: token 'a' appears twice (first on line 2)");
    vocab_error("seqc-vocab 1 3\na\n\n", "vocab.txt:3: empty token");
    vocab_error("seqc-vocab 1 3\na\n\\q\n", "vocab.txt:3: unknown escape '\\q'");
    vocab_error("seqc-vocab 1 3\na\n\\x4\n", "vocab.txt:3: \\x needs two hex digits");
    vocab_error("seqc-vocab 1 3\na\nb\\\n", "vocab.txt:3: a backslash ends the line");
    vocab_error("seqc-vocab 1 4\na\nb\n", "vocab.txt: the first line promises 3 tokens, the file holds 2");
    vocab_error("seqc-vocab 1 2\na\nb\n", "vocab.txt:3: more tokens than the 1 the first line promises");
}
END_TEST

/* ---- Windows and streams ---- */

START_TEST(test_windows) {
    int32_t ids[] = {1, 2, 3, 4, 5, 6, 7};
    RtDataset ds;
    RtDataError err;
    ck_assert(rt_data_windows("t.txt", ids, 7, 3, 1, &ds, &err));
    ck_assert_int_eq(ds.count, 4);
    ck_assert_int_eq(ds.tgt_rank, 0);
    ck_assert_int_eq(ds.tgt_size, 1);
    for (int k = 0; k < 4; k++) {
        check_row(&ds, k, (int32_t[]){k + 1, k + 2, k + 3}, 3);
        ck_assert_int_eq(((int32_t *)ds.targets)[k], k + 4);
    }
    rt_data_dataset_free(&ds);
    ck_assert(rt_data_windows("t.txt", ids, 7, 3, 2, &ds, &err));
    ck_assert_int_eq(ds.count, 2);
    check_row(&ds, 0, (int32_t[]){1, 2, 3}, 3);
    check_row(&ds, 1, (int32_t[]){3, 4, 5}, 3);
    ck_assert(((int32_t *)ds.targets)[0] == 4 && ((int32_t *)ds.targets)[1] == 6);
    rt_data_dataset_free(&ds);
    ck_assert(rt_data_windows("t.txt", ids, 7, 6, 5, &ds, &err));
    ck_assert_int_eq(ds.count, 1);
    rt_data_dataset_free(&ds);
    ck_assert(!rt_data_windows("t.txt", ids, 7, 7, 1, &ds, &err));
    ck_assert_str_eq(err.msg, "t.txt: 7 tokens are too few for a window of 7 and its target");
    ck_assert(!rt_data_windows("t.txt", ids, 7, 3, 0, &ds, &err));
    ck_assert_str_eq(err.msg, "t.txt: window 3 and step 0 must be positive");
}
END_TEST

/* Letters as ids: a = 1, b = 2, ... */
static int64_t letters(const char *s, int32_t *ids) {
    int64_t n = 0;
    for (; *s; s++)
        ids[n++] = *s - 'a' + 1;
    return n;
}

/* Compares a batch with rows written as letters. */
static void check_letters(const int32_t *got, const char *const *rows, int64_t batch, int64_t window) {
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < window; i++)
            ck_assert_msg(got[b * window + i] == rows[b][i] - 'a' + 1, "row %lld step %lld: got %c, want %c",
                          (long long)b, (long long)i, 'a' - 1 + got[b * window + i], rows[b][i]);
}

START_TEST(test_stream_tbptt) {
    int32_t ids[32], in[6], tgt[6];
    RtStream s;
    RtDataError err;
    /* abcdefghijk, 2 streams of 5 (k dropped): abcde and fghij. With window 3 and
     * every 2 the second window would start at 2 and need a target at 5, past
     * the stream: one window per epoch. */
    int64_t n = letters("abcdefghijk", ids);
    ck_assert(rt_data_stream_init(&s, "t.txt", ids, n, 2, 3, 2, &err));
    ck_assert_int_eq(s.length, 5);
    ck_assert_int_eq(s.dropped, 1);
    ck_assert_int_eq(s.windows, 1);
    ck_assert(rt_data_stream_next(&s, in, tgt));
    check_letters(in, (const char *const[]){"abc", "fgh"}, 2, 3);
    check_letters(tgt, (const char *const[]){"bcd", "ghi"}, 2, 3);
    ck_assert(!rt_data_stream_next(&s, in, tgt));

    /* abcdefghijklmnopq: streams abcdefgh and ijklmnop (q dropped); windows
     * start at 0, 2, 4 of each stream. */
    n = letters("abcdefghijklmnopq", ids);
    ck_assert(rt_data_stream_init(&s, "t.txt", ids, n, 2, 3, 2, &err));
    ck_assert_int_eq(s.windows, 3);
    ck_assert_int_eq(s.dropped, 1);
    const char *want_in[3][2] = {{"abc", "ijk"}, {"cde", "klm"}, {"efg", "mno"}};
    const char *want_tgt[3][2] = {{"bcd", "jkl"}, {"def", "lmn"}, {"fgh", "nop"}};
    for (int e = 0; e < 2; e++) {   /* the second epoch repeats the first */
        for (int i = 0; i < 3; i++) {
            ck_assert(rt_data_stream_next(&s, in, tgt));
            check_letters(in, want_in[i], 2, 3);
            check_letters(tgt, want_tgt[i], 2, 3);
        }
        ck_assert(!rt_data_stream_next(&s, in, tgt));
        rt_data_stream_rewind(&s);
    }

    /* Non-overlapping windows (every = window), three streams of 7: abcdefg hijklmn opqrstu. */
    n = letters("abcdefghijklmnopqrstuvw", ids);
    ck_assert(rt_data_stream_init(&s, "t.txt", ids, n, 3, 2, 2, &err));
    ck_assert_int_eq(s.windows, 3);
    ck_assert_int_eq(s.dropped, 2);
    const char *w3[3][3] = {{"ab", "hi", "op"}, {"cd", "jk", "qr"}, {"ef", "lm", "st"}};
    const char *t3[3][3] = {{"bc", "ij", "pq"}, {"de", "kl", "rs"}, {"fg", "mn", "tu"}};
    for (int i = 0; i < 3; i++) {
        ck_assert(rt_data_stream_next(&s, in, tgt));
        check_letters(in, w3[i], 3, 2);
        check_letters(tgt, t3[i], 3, 2);
    }
    ck_assert(!rt_data_stream_next(&s, in, tgt));

    ck_assert(!rt_data_stream_init(&s, "t.txt", ids, 7, 2, 3, 2, &err));
    ck_assert_str_eq(err.msg, "t.txt: 7 tokens make 2 streams of 3; a window of 3 and its targets need 4 per stream");
    ck_assert(!rt_data_stream_init(&s, "t.txt", ids, 17, 2, 3, 4, &err));
    ck_assert_str_eq(err.msg, "t.txt: every (4) must not exceed the window (3): the steps between windows would never be read");
}
END_TEST

/* ---- NumPy ---- */

/* A .npy file: magic, version, header length, the dict padded with spaces and
 * a newline to a multiple of 64 bytes (as NumPy writes it), then the body. */
static size_t make_npy(unsigned char *out, int major, const char *dict, const void *body, size_t body_n) {
    size_t pre = major == 1 ? 10 : 12, dn = strlen(dict), total = pre + dn + 1;
    total = (total + 63) / 64 * 64;
    size_t hlen = total - pre;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major;
    out[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        out[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(out + pre, dict, dn);
    memset(out + pre + dn, ' ', hlen - dn - 1);
    out[total - 1] = '\n';
    memcpy(out + total, body, body_n);
    return total + body_n;
}

static void npy_ok(const char *dict, const void *body, size_t n, RtDType want, RtNpy *a) {
    unsigned char buf[4096];
    RtDataError err;
    size_t size = make_npy(buf, 1, dict, body, n);
    ck_assert_msg(rt_data_npy_parse("x.npy", buf, size, want, a, &err), "%s", err.msg);
}

START_TEST(test_npy_dtypes) {
    RtNpy a;
    /* 1.0, -2.5, 0.5 as little-endian float32 */
    static const unsigned char f4[] = {0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0, 0, 0, 0, 0x3f};
    npy_ok("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", f4, sizeof f4, RT_DATA_F32, &a);
    ck_assert_int_eq(a.rank, 1);
    ck_assert_int_eq(a.dims[0], 3);
    ck_assert(((float *)a.data)[0] == 1.0f && ((float *)a.data)[1] == -2.5f && ((float *)a.data)[2] == 0.5f);
    rt_data_npy_free(&a);
    /* 1.5 and 3.0 as float64, shape (1, 2) */
    static const unsigned char f8[] = {0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0x08, 0x40};
    npy_ok("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }", f8, sizeof f8, RT_DATA_F32, &a);
    ck_assert_int_eq(a.rank, 2);
    ck_assert(a.dims[0] == 1 && a.dims[1] == 2);
    ck_assert(((float *)a.data)[0] == 1.5f && ((float *)a.data)[1] == 3.0f);
    rt_data_npy_free(&a);
}
END_TEST

START_TEST(test_npy_ints) {
    RtNpy a;
    /* -7 and 300 as int32 */
    static const unsigned char i4[] = {0xf9, 0xff, 0xff, 0xff, 0x2c, 0x01, 0, 0};
    npy_ok("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", i4, sizeof i4, RT_DATA_I32, &a);
    ck_assert(((int32_t *)a.data)[0] == -7 && ((int32_t *)a.data)[1] == 300);
    rt_data_npy_free(&a);
    npy_ok("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", i4, sizeof i4, RT_DATA_F32, &a);
    ck_assert(((float *)a.data)[0] == -7.0f && ((float *)a.data)[1] == 300.0f);
    rt_data_npy_free(&a);
    /* 5 and -1 as int64, shape (2, 1) */
    static const unsigned char i8[] = {5, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    npy_ok("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1), }", i8, sizeof i8, RT_DATA_I32, &a);
    ck_assert(((int32_t *)a.data)[0] == 5 && ((int32_t *)a.data)[1] == -1);
    rt_data_npy_free(&a);
    static const unsigned char u1[] = {0, 7, 255};
    npy_ok("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", u1, sizeof u1, RT_DATA_I32, &a);
    ck_assert(((int32_t *)a.data)[2] == 255 && ((int32_t *)a.data)[1] == 7);
    rt_data_npy_free(&a);
    /* A scalar, and a whole float read as int32, and double quotes in the header. */
    static const unsigned char f8[] = {0, 0, 0, 0, 0, 0, 0x08, 0x40};
    npy_ok("{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": ()}", f8, sizeof f8, RT_DATA_I32, &a);
    ck_assert_int_eq(a.rank, 0);
    ck_assert_int_eq(a.count, 1);
    ck_assert_int_eq(((int32_t *)a.data)[0], 3);
    rt_data_npy_free(&a);
    /* Version 2.0 with its four-byte header length; an empty array. */
    unsigned char buf[256];
    RtDataError err;
    size_t n = make_npy(buf, 2, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", i4, sizeof i4);
    ck_assert_msg(rt_data_npy_parse("x.npy", buf, n, RT_DATA_I32, &a, &err), "%s", err.msg);
    ck_assert(((int32_t *)a.data)[1] == 300);
    rt_data_npy_free(&a);
    npy_ok("{'descr': '<i4', 'fortran_order': False, 'shape': (0, 3), }", i4, 0, RT_DATA_I32, &a);
    ck_assert_int_eq(a.count, 0);
    rt_data_npy_free(&a);
}
END_TEST

static void npy_error(int major, const char *dict, const void *body, size_t n, RtDType want, const char *msg) {
    unsigned char *buf = malloc(8192);
    RtNpy a;
    RtDataError err;
    size_t size = make_npy(buf, major, dict, body, n);
    ck_assert_msg(!rt_data_npy_parse("x.npy", buf, size, want, &a, &err), "accepted: %s", dict);
    ck_assert_str_eq(err.msg, msg);
    ck_assert_ptr_null(a.data);
    free(buf);
}

START_TEST(test_npy_errors) {
    static unsigned char zeros[4000];
    npy_error(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", zeros, 16, RT_DATA_F32,
              "x.npy: fortran_order is True; only C order is read (save np.ascontiguousarray(a))");
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }", zeros, 3992, RT_DATA_F32,
              "x.npy: truncated: the header promises 1000 values, the file holds 998");
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", zeros, 41, RT_DATA_F32,
              "x.npy: 1 bytes after the 10 values the header promises");
    npy_error(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", zeros, 4, RT_DATA_F32,
              "x.npy: dtype '>f4' is not supported (use '<f4', '<f8', '<i4', '<i8' or '|u1'; this one is big-endian)");
    npy_error(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", zeros, 8, RT_DATA_F32,
              "x.npy: dtype '<c8' is not supported (use '<f4', '<f8', '<i4', '<i8' or '|u1')");
    npy_error(1, "{'descr': '<f4', 'shape': (1,), }", zeros, 4, RT_DATA_F32, "x.npy: header: 'fortran_order' is missing");
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", zeros, 4, RT_DATA_F32,
              "x.npy: header: unknown key 'x'");
    npy_error(1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", zeros, 4, RT_DATA_F32,
              "x.npy: header: fortran_order must be True or False");
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2)}", zeros, 4, RT_DATA_F32,
              "x.npy: header: the shape must be a tuple of non-negative integers");
    npy_error(1, "'descr': '<f4'", zeros, 4, RT_DATA_F32, "x.npy: header: expected '{' at byte 1 of the dict");
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk", zeros, 4, RT_DATA_F32,
              "x.npy: header: text after the dict");
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", zeros, 4, RT_DATA_F32,
              "x.npy: more than 8 dimensions");
    /* Values that do not fit what the caller asked for. */
    static const unsigned char big[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xd0, 0xb2, 0, 0, 0, 0}; /* 1, 3e9 */
    npy_error(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", big, sizeof big, RT_DATA_I32,
              "x.npy: value 3000000000 at index 1 does not fit in int32");
    static const unsigned char half[] = {0, 0, 0, 0, 0, 0, 0xf8, 0x3f};
    npy_error(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", half, sizeof half, RT_DATA_I32,
              "x.npy: value 1.5 at index 0 is not a whole number");
    static const unsigned char nan4[] = {0, 0, 0, 0, 0, 0, 0xc0, 0x7f};
    npy_error(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", nan4, sizeof nan4, RT_DATA_F32,
              "x.npy: the value at index 1 is not finite");
    static const unsigned char huge[] = {0, 0, 0, 0, 0, 0, 0xf0, 0x47}; /* 2^128 */
    npy_error(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", huge, sizeof huge, RT_DATA_F32,
              "x.npy: value 3.40282e+38 at index 0 does not fit in float32");

    RtNpy a;
    RtDataError err;
    unsigned char buf[256];
    ck_assert(!rt_data_npy_parse("x.npy", (const unsigned char *)"PK\3\4xxxxxxxx", 12, RT_DATA_F32, &a, &err));
    ck_assert_str_eq(err.msg, "x.npy: not a NumPy .npy file (no magic string)");
    ck_assert(!rt_data_npy_parse("x.npy", buf, 0, RT_DATA_F32, &a, &err));
    ck_assert_str_eq(err.msg, "x.npy: empty file");
    size_t n = make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", zeros, 4);
    buf[6] = 4;
    ck_assert(!rt_data_npy_parse("x.npy", buf, n, RT_DATA_F32, &a, &err));
    ck_assert_str_eq(err.msg, "x.npy: .npy version 4.0 is not supported (1.0, 2.0 and 3.0 are)");
    buf[6] = 1;
    ck_assert(!rt_data_npy_parse("x.npy", buf, 40, RT_DATA_F32, &a, &err));
    ck_assert_str_eq(err.msg, "x.npy: truncated inside the header");
}
END_TEST

START_TEST(test_npy_dataset) {
    unsigned char buf[512];
    /* x: (3, 2) float32 of 0..5; y: (3,) int32 of 7, 8, 9 */
    float xs[6] = {0, 1, 2, 3, 4, 5};
    unsigned char xb[24], yb[12] = {7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0};
    memcpy(xb, xs, sizeof xb); /* the test machine is little-endian, as the header says */
    write_bytes("x.npy", buf, make_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", xb, 24));
    write_bytes("y.npy", buf, make_npy(buf, 3, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", yb, 12));
    write_bytes("y2.npy", buf, make_npy(buf, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", yb, 8));
    RtDataset ds;
    RtDataError err;
    ck_assert_msg(rt_data_npy_dataset("x.npy", RT_DATA_F32, "y.npy", RT_DATA_I32, &ds, &err), "%s", err.msg);
    ck_assert_int_eq(ds.count, 3);
    ck_assert_int_eq(ds.in_rank, 1);
    ck_assert_int_eq(ds.in_size, 2);
    ck_assert_int_eq(ds.tgt_rank, 0);
    ck_assert_int_eq(ds.tgt_size, 1);
    ck_assert(((float *)ds.inputs)[5] == 5.0f && ((int32_t *)ds.targets)[2] == 9);
    rt_data_dataset_free(&ds);
    ck_assert(!rt_data_npy_dataset("x.npy", RT_DATA_F32, "y2.npy", RT_DATA_I32, &ds, &err));
    ck_assert_str_eq(err.msg, "x.npy has 3 examples but y2.npy has 2");
    RtNpy a;
    ck_assert(!rt_data_npy_read("nope.npy", RT_DATA_F32, &a, &err));
    ck_assert_str_eq(err.msg, "nope.npy: cannot open: No such file or directory");
}
END_TEST

/* ---- Validation split, batches, shuffling ---- */

/* ten examples: inputs [k, 10k], target k */
static void ten(RtDataset *ds) {
    static int32_t ids[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    RtDataError err;
    ck_assert(rt_data_windows("t", ids, 12, 2, 1, ds, &err));
    ck_assert_int_eq(ds->count, 10);
}

static int32_t first_of(const RtDataset *ds, int64_t row) { return ((int32_t *)ds->inputs)[row * ds->in_size]; }

START_TEST(test_split) {
    RtDataset all, train, val;
    RtDataError err;
    ten(&all);
    ck_assert(rt_data_split_tail(&all, 0.2, "t", &train, &val, &err));
    ck_assert_int_eq(train.count, 8);
    ck_assert_int_eq(val.count, 2);
    ck_assert_int_eq(first_of(&val, 0), 8);   /* the last examples validate */
    ck_assert_int_eq(((int32_t *)val.targets)[1], 11);
    ck_assert_int_eq(first_of(&train, 7), 7);
    rt_data_dataset_free(&val);               /* a view: frees nothing */
    ck_assert(rt_data_split_tail(&all, 0.25, "t", &train, &val, &err));
    ck_assert_int_eq(train.count, 7);         /* Keras: int(10 * 0.75) */
    ck_assert_int_eq(val.count, 3);
    ck_assert_int_eq(rt_data_split_point(25000, 0.2), 20000);
    ck_assert(!rt_data_split_tail(&all, 1.0, "t", &train, &val, &err));
    ck_assert_str_eq(err.msg, "t: validate 1 is not a fraction between 0 and 1");
    ck_assert(!rt_data_split_tail(&all, 1e-17, "t", &train, &val, &err));
    ck_assert_str_eq(err.msg, "t: validate 1e-17 of 10 examples leaves 10 to train and 0 to validate");
    ck_assert(!rt_data_split_tail(&all, 0.95, "t", &train, &val, &err));
    ck_assert_str_eq(err.msg, "t: validate 0.95 of 10 examples leaves 0 to train and 10 to validate");
    rt_data_dataset_free(&all);
}
END_TEST

START_TEST(test_batches_drop_and_pad) {
    RtDataset ds;
    RtBatcher b;
    RtDataError err;
    int32_t in[8], tgt[4];
    ten(&ds);
    ck_assert(rt_data_batcher_init(&b, &ds, 4, false, 0, RT_DATA_LAST_DROP, &err));
    ck_assert_int_eq(b.batches, 2);
    ck_assert_int_eq(b.dropped, 2);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 4);
    ck_assert(in[0] == 0 && in[1] == 1 && in[6] == 3 && tgt[3] == 5);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 4);
    ck_assert(in[0] == 4 && tgt[3] == 9);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 0);
    rt_data_batcher_free(&b);

    ck_assert(rt_data_batcher_init(&b, &ds, 4, false, 0, RT_DATA_LAST_PAD, &err));
    ck_assert_int_eq(b.batches, 3);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 4);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 4);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 2);
    ck_assert(in[0] == 8 && in[2] == 9 && tgt[0] == 10 && tgt[1] == 11);
    ck_assert(in[4] == 0 && in[7] == 0 && tgt[2] == 0 && tgt[3] == 0);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 0);
    rt_data_batcher_epoch(&b, 1);
    ck_assert_int_eq(rt_data_batcher_next(&b, in, tgt), 4);
    rt_data_batcher_free(&b);

    ck_assert(!rt_data_batcher_init(&b, &ds, 11, false, 0, RT_DATA_LAST_DROP, &err));
    ck_assert_str_eq(err.msg, "the dataset has 10 examples, fewer than one batch of 11");
    ck_assert(rt_data_batcher_init(&b, &ds, 11, false, 0, RT_DATA_LAST_PAD, &err));
    rt_data_batcher_free(&b);
    ck_assert(!rt_data_batcher_init(&b, &ds, 0, false, 0, RT_DATA_LAST_PAD, &err));
    ck_assert_str_eq(err.msg, "batch size 0 is not positive");
    rt_data_dataset_free(&ds);
}
END_TEST

/* Visits one epoch with batch 1 and records the first input of each example. */
static void epoch_order(RtBatcher *b, int64_t epoch, int32_t *order) {
    int32_t in[2], tgt[1];
    rt_data_batcher_epoch(b, epoch);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(rt_data_batcher_next(b, in, tgt), 1);
        ck_assert_int_eq(tgt[0], in[0] + 2);   /* rows stay whole */
        order[i] = in[0];
    }
    ck_assert_int_eq(rt_data_batcher_next(b, in, tgt), 0);
}

START_TEST(test_shuffle_deterministic) {
    RtDataset ds;
    RtBatcher a, b, c;
    RtDataError err;
    ten(&ds);
    ck_assert(rt_data_batcher_init(&a, &ds, 1, true, 42, RT_DATA_LAST_DROP, &err));
    ck_assert(rt_data_batcher_init(&b, &ds, 1, true, 42, RT_DATA_LAST_DROP, &err));
    ck_assert(rt_data_batcher_init(&c, &ds, 1, true, 43, RT_DATA_LAST_DROP, &err));
    int32_t e3a[10], e3b[10], e4[10], s43[10], tmp[10];
    epoch_order(&a, 3, e3a);
    epoch_order(&b, 0, tmp);   /* other epochs first: the order depends on (seed, epoch) only */
    epoch_order(&b, 7, tmp);
    epoch_order(&b, 3, e3b);
    epoch_order(&a, 4, e4);
    epoch_order(&c, 3, s43);
    ck_assert(memcmp(e3a, e3b, sizeof e3a) == 0);
    ck_assert(memcmp(e3a, e4, sizeof e3a) != 0);
    ck_assert(memcmp(e3a, s43, sizeof e3a) != 0);
    int seen[10] = {0};
    for (int i = 0; i < 10; i++)
        seen[e3a[i]]++;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(seen[i], 1);
    /* The training part of a split shuffles within itself. */
    RtDataset train, val;
    RtBatcher t;
    ck_assert(rt_data_split_tail(&ds, 0.2, "t", &train, &val, &err));
    ck_assert(rt_data_batcher_init(&t, &train, 8, true, 42, RT_DATA_LAST_DROP, &err));
    int32_t in[16], tgt[8];
    ck_assert_int_eq(rt_data_batcher_next(&t, in, tgt), 8);
    for (int i = 0; i < 8; i++)
        ck_assert_int_lt(in[2 * i], 8);
    rt_data_batcher_free(&t);
    rt_data_batcher_free(&a);
    rt_data_batcher_free(&b);
    rt_data_batcher_free(&c);
    rt_data_dataset_free(&ds);
}
END_TEST

static Suite *data_suite(void) {
    Suite *s = suite_create("data");
    struct {
        const char *name;
        const TTest *test;
    } tests[] = {
        {"tsv", test_tsv_pre},          {"tsv", test_tsv_post},         {"tsv", test_tsv_errors},
        {"csv", test_csv_good},         {"csv", test_csv_errors},       {"text", test_text_char},
        {"text", test_text_word},       {"text", test_text_errors},     {"vocab", test_vocab_order},
        {"vocab", test_vocab_round_trip}, {"vocab", test_vocab_errors}, {"windows", test_windows},
        {"windows", test_stream_tbptt}, {"npy", test_npy_dtypes},       {"npy", test_npy_ints},
        {"npy", test_npy_errors},       {"npy", test_npy_dataset},      {"batches", test_split},
        {"batches", test_batches_drop_and_pad}, {"batches", test_shuffle_deterministic},
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
    SRunner *sr = srunner_create(data_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
