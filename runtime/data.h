/* Data loaders for training: text, TSV token sequences, CSV series, NumPy .npy.
 *
 * Every loader returns false and fills an RtDataError instead of exiting. A
 * message names the file as the caller spelled it, then the 1-based line where
 * there is one, then what is wrong:
 *     imdb.tsv:17: token id 20001 is not below the vocabulary size 20000
 *     x.npy: truncated: the header promises 1000 values, the file holds 998
 * Nothing is clipped or skipped silently: a bad line is an error, not a gap.
 * Every limit below is a named constant with a message of its own.
 *
 * Ownership: a struct filled by a loader owns its buffers until its _free
 * function runs; _free accepts a zeroed struct and a struct whose load failed
 * (loaders leave *out zeroed on failure). Views (rt_data_split_tail) borrow.
 *
 * Layouts are row-major. Per-example shapes follow what the models declare:
 *     text windows   inputs i32[window]        targets i32[]         (next token)
 *     text stream    inputs i32[batch, window] targets i32[batch, window]
 *     tsv            inputs i32[maxlen]        targets f32[1]        (the label)
 *     csv windows    inputs f32[window, 1]     targets f32[horizon]
 *     npy            whatever the two files hold, the first axis counting examples */
#ifndef SEQC_RUNTIME_DATA_H
#define SEQC_RUNTIME_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Limits ---- */

/* Files are read whole into memory; 2 GiB is hundreds of times the largest
 * tutorial corpus, so a bigger file is far more likely a wrong path than data. */
#define RT_DATA_MAX_FILE_BYTES ((int64_t)1 << 31)
/* A TSV or CSV line: the longest IMDB review is ~2,500 ids (~15 KB); a line of
 * a megabyte means the file is not what it claims to be. */
#define RT_DATA_MAX_LINE_BYTES (1 << 20)
/* A word token: longer runs without whitespace are binary data or a file with
 * no spaces at all, which a word model cannot use. */
#define RT_DATA_MAX_TOKEN_BYTES 1024
/* .npy header length and rank: NumPy's own headers are < 200 bytes; its maximum rank is 64,
 * but no layer here takes more than 8 axes. */
#define RT_DATA_NPY_MAX_HEADER (1 << 16)
#define RT_DATA_MAX_RANK 8
/* Room for a message with a long path in it. */
#define RT_DATA_ERROR_BYTES 512

typedef struct RtDataError {
    char msg[RT_DATA_ERROR_BYTES];
} RtDataError;

typedef enum RtDType { RT_DATA_F32, RT_DATA_I32 } RtDType;

/* For the loaders (data.c, vectors.c, plot.c): formats the message into
 * *err (when err is not NULL) and returns false. */
bool rt_data_fail(RtDataError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* How much of a bad field a message quotes (%.*s): at most 60 bytes. */
int rt_data_quote_len(size_t n);

/* ---- Datasets: N examples of fixed-shape inputs and targets ---- */

typedef struct RtDataset {
    int64_t count;                         /* examples */
    RtDType in_dtype, tgt_dtype;
    int in_rank, tgt_rank;                 /* per-example shapes, without the example axis */
    int64_t in_dims[RT_DATA_MAX_RANK], tgt_dims[RT_DATA_MAX_RANK];
    int64_t in_size, tgt_size;             /* elements per example (1 for rank 0) */
    void *inputs;                          /* [count, in_dims...] of in_dtype */
    void *targets;                         /* [count, tgt_dims...] of tgt_dtype */
    bool owned;                            /* false for views */
} RtDataset;

void rt_data_dataset_free(RtDataset *ds);

/* Keras' validation_split: the first floor(n * (1 - fraction)) examples train,
 * the rest (the LAST examples, taken before any shuffling) validate. */
int64_t rt_data_split_point(int64_t n, double fraction);
/* Views into `all` (which must outlive them). Errors when fraction is outside
 * (0, 1) or either side would be empty. */
bool rt_data_split_tail(const RtDataset *all, double fraction, const char *name, RtDataset *train,
                        RtDataset *val, RtDataError *err);

/* ---- Batches ----
 *
 * The compiled model has a fixed batch size, so a batch always has `batch`
 * rows. What happens to the last count % batch examples is chosen per use:
 *   RT_DATA_LAST_DROP (training): they are left out of this epoch; shuffling
 *     changes which ones each epoch. `dropped` reports how many.
 *   RT_DATA_LAST_PAD (evaluation): the last batch is filled up with zero rows;
 *     rt_data_batcher_next returns how many rows are real, so metrics can count
 *     those only and every example is evaluated exactly once.
 * Shuffling: epoch e visits the examples in a Fisher-Yates permutation drawn
 * from RtRng(seed, stream RT_DATA_SHUFFLE_STREAM + e), so the order depends on
 * (seed, epoch) only, also after resuming from a checkpoint. */
#define RT_DATA_SHUFFLE_STREAM ((uint64_t)0x5348554600000000ull) /* "SHUF" */

typedef enum RtLastBatch { RT_DATA_LAST_DROP, RT_DATA_LAST_PAD } RtLastBatch;

typedef struct RtBatcher {
    const RtDataset *ds;        /* borrowed */
    int64_t batch;
    bool shuffle;
    uint64_t seed;
    RtLastBatch last;
    int64_t *order;             /* [ds->count], this epoch's visiting order */
    int64_t next;               /* position in `order` of the next batch's first row */
    int64_t batches;            /* batches per epoch */
    int64_t dropped;            /* examples left out per epoch (RT_DATA_LAST_DROP) */
} RtBatcher;

bool rt_data_batcher_init(RtBatcher *b, const RtDataset *ds, int64_t batch, bool shuffle,
                          uint64_t seed, RtLastBatch last, RtDataError *err);
/* Starts epoch `epoch` (0-based): draws its order when shuffling, rewinds. */
void rt_data_batcher_epoch(RtBatcher *b, int64_t epoch);
/* Copies the next batch into inputs [batch, in_dims...] and targets
 * [batch, tgt_dims...]; returns the number of real rows, 0 when the epoch is over. */
int64_t rt_data_batcher_next(RtBatcher *b, void *inputs, void *targets);
void rt_data_batcher_free(RtBatcher *b);

/* ---- Text ---- */

typedef struct RtTextOptions {
    bool word_level;    /* words (split on ASCII whitespace) instead of characters */
    bool lower;         /* A-Z and the Latin-1 capitals U+00C0..U+00DE lower-cased */
    bool letters_only;  /* every non-letter becomes a space, runs of spaces collapse to one */
} RtTextOptions;

/* Letters are A-Z, a-z and the Latin-1 letters U+00C0..U+00FF except the signs
 * U+00D7 and U+00F7; other code points count as non-letters for letters_only
 * and are kept as they are otherwise. Input must be UTF-8; a character (a code
 * point of 1 to 4 bytes) is one token at char level, and every character is a
 * token there, newlines included. Word level keeps punctuation attached to its
 * word unless letters_only removes it. */
typedef struct RtText {
    char *buf;          /* the text after lower/letters_only (owned) */
    int64_t bytes;
    int64_t count;      /* tokens */
    int64_t *start;     /* [count] byte offset of each token in buf */
    int32_t *len;       /* [count] its length in bytes */
} RtText;

bool rt_data_text_read(const char *path, const RtTextOptions *opt, RtText *out, RtDataError *err);
/* The same for text in memory; `name` stands for the file in messages. */
bool rt_data_text_parse(const char *name, const char *data, size_t size, const RtTextOptions *opt,
                        RtText *out, RtDataError *err);
void rt_data_text_free(RtText *t);

/* Vocabulary: id 0 is reserved (padding and unknown tokens); ids 1.. go to the
 * distinct tokens by descending frequency, ties by first appearance, so the
 * same text always gives the same ids. */
typedef struct RtVocab {
    int32_t size;       /* ids 0 .. size-1 */
    char **token;       /* [size] token bytes, NUL-terminated; token[0] is "" */
    int32_t *len;       /* [size] byte lengths (a token may hold a NUL byte) */
    int64_t *count;     /* [size] occurrences in the text it was built from (0 when loaded) */
    int32_t *slot;      /* hash table of ids, 0 = empty */
    int64_t cap;        /* slots, a power of two */
} RtVocab;

bool rt_data_vocab_build(const RtText *text, RtVocab *out, RtDataError *err);
/* Keeps ids 0 .. size-1, the size-1 most frequent tokens (Keras' Tokenizer
 * num_words); the others become unknown (id 0 when encoding). */
void rt_data_vocab_truncate(RtVocab *v, int32_t size);
/* 0 when the token is unknown. */
int32_t rt_data_vocab_id(const RtVocab *v, const char *tok, size_t len);
/* ids[i] = id of token i; unknown tokens become 0 and are counted in *unknown. */
bool rt_data_vocab_encode(const RtVocab *v, const RtText *text, int32_t **ids, int64_t *unknown,
                          RtDataError *err);
/* Saved form, stored beside the weights:
 *     seqc-vocab 1 <size>
 *     <token 1>
 *     ...
 *     <token size-1>
 * one token per line in id order, escaped: \\ \n \r \t, \s for a space (so no
 * line begins or ends in invisible whitespace), \xHH for other bytes below
 * 0x20 and 0x7f; other bytes (UTF-8 included) as they are. */
bool rt_data_vocab_save(const RtVocab *v, const char *path, RtDataError *err);
bool rt_data_vocab_load(const char *path, RtVocab *out, RtDataError *err);
/* The saved form in memory, as checkpoints store it (the safetensors metadata
 * value under RT_DATA_VOCAB_META_KEY): malloc'd, *size bytes plus a NUL after
 * them; escaping leaves no NUL inside. NULL (err set) when out of memory. */
#define RT_DATA_VOCAB_META_KEY "seqc.vocab"
char *rt_data_vocab_format(const RtVocab *v, size_t *size, RtDataError *err);
/* Parses the saved form from memory; `name` stands for the file in messages. */
bool rt_data_vocab_parse(const char *name, const char *text, size_t size, RtVocab *out, RtDataError *err);
void rt_data_vocab_free(RtVocab *v);

/* Sliding windows: example k has inputs ids[k*step .. k*step+window) and
 * target ids[k*step+window]; count = (n - window - 1) / step + 1. */
bool rt_data_windows(const char *name, const int32_t *ids, int64_t n, int64_t window, int64_t step,
                     RtDataset *out, RtDataError *err);

/* Streams for stateful truncated BPTT, TBPTT(k1 = every, k2 = window).
 * The n tokens are cut into `batch` streams of L = n / batch consecutive tokens
 * each; stream s is ids[s*L .. (s+1)*L). The last n % batch tokens are dropped
 * (reported in `dropped`): streams of unequal length would put padding into a
 * carried state. Window i of a stream covers its positions [i*every, i*every
 * + window) as inputs and the same positions + 1 as targets; there are
 * windows = (L - window - 1) / every + 1 of them. Batch i of the epoch holds
 * window i of every stream, row s being stream s, so the state of row s carries
 * from one batch to the next. When every < window consecutive windows overlap
 * by window - every steps: the state to carry into window i+1 is the state
 * after the first `every` steps of window i. */
typedef struct RtStream {
    const int32_t *ids;         /* borrowed */
    int64_t batch, window, every;
    int64_t length;             /* L, tokens per stream */
    int64_t windows;            /* batches per epoch */
    int64_t dropped;            /* tokens left over at the end */
    int64_t next;               /* index of the next window */
} RtStream;

bool rt_data_stream_init(RtStream *s, const char *name, const int32_t *ids, int64_t n,
                         int64_t batch, int64_t window, int64_t every, RtDataError *err);
void rt_data_stream_rewind(RtStream *s);
/* Fills inputs and targets, both i32[batch, window]; false when the epoch is over. */
bool rt_data_stream_next(RtStream *s, int32_t *inputs, int32_t *targets);

/* ---- TSV: label<TAB>ids ---- */

typedef struct RtTsvOptions {
    int64_t maxlen;         /* the input's length; shorter rows are padded with 0 */
    int64_t vocab;          /* every id must be below it (the Embedding's input_dim) */
    bool pad_post;          /* pad at the end instead of the front (Keras 'pre' default) */
    bool truncate_post;     /* cut the end instead of the front */
} RtTsvOptions;

/* Each line: a label (a number), a tab, then ids separated by spaces; an empty
 * ids field is an all-padding row. A final line without a newline is fine, as
 * is a CRLF ending. inputs i32[maxlen], targets f32[1]. */
bool rt_data_tsv_read(const char *path, const RtTsvOptions *opt, RtDataset *out, RtDataError *err);

/* ---- CSV: one numeric column ---- */

typedef struct RtCsvOptions {
    int64_t column;         /* 0-based */
    bool header;            /* skip the first line */
} RtCsvOptions;

/* Fields are separated by commas, surrounding spaces ignored; a field may be
 * double-quoted ("" inside for a quote). The column must hold a finite number on
 * every data line. *values is malloc'd; the caller frees it. */
bool rt_data_csv_read(const char *path, const RtCsvOptions *opt, float **values, int64_t *n,
                      RtDataError *err);
/* Forecasting windows: example k has inputs v[k*step .. k*step+window) as
 * f32[window, 1] and targets the next `horizon` values, f32[horizon];
 * count = (n - window - horizon) / step + 1. */
bool rt_data_series_windows(const char *name, const float *v, int64_t n, int64_t window,
                            int64_t horizon, int64_t step, RtDataset *out, RtDataError *err);

/* ---- NumPy .npy ---- */

/* Versions 1.0, 2.0 and 3.0; dtypes '<f4' '<f8' '<i4' '<i8' '|u1' ('|i1' too);
 * C order only. Values are converted to `want`: f32 from any dtype (f8 values
 * must fit in f32; NaN and infinities are errors), i32 from integers that fit and
 * from floats that hold whole numbers. A rank-0 array has count 1. */
typedef struct RtNpy {
    RtDType dtype;
    int rank;
    int64_t dims[RT_DATA_MAX_RANK];
    int64_t count;          /* values */
    void *data;             /* [count] of dtype (owned) */
} RtNpy;

bool rt_data_npy_read(const char *path, RtDType want, RtNpy *out, RtDataError *err);
/* Parses a file already in memory; `name` stands for the file in messages. */
bool rt_data_npy_parse(const char *name, const unsigned char *data, size_t size, RtDType want,
                       RtNpy *out, RtDataError *err);
void rt_data_npy_free(RtNpy *a);
/* Inputs and targets from two files whose first axes (the examples) agree. */
bool rt_data_npy_dataset(const char *inputs_path, RtDType in_dtype, const char *targets_path,
                         RtDType tgt_dtype, RtDataset *out, RtDataError *err);

/* ---- Files ---- */

/* Reads a whole file; *data is malloc'd with a NUL after the last byte. */
bool rt_data_read_file(const char *path, char **data, size_t *size, RtDataError *err);

#endif
