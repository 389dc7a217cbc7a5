/* Pretrained word vectors (word2vec, GloVe, fastText .vec) in their text form,
 * to start an embedding from.
 *
 * The file: an optional first line "COUNT DIM" (two whole numbers, as word2vec
 * and fastText write it), then one line per word, `token v1 v2 ... vD`, fields
 * separated by spaces or tabs (a trailing space, as word2vec leaves one, is
 * fine; CRLF too). A token is the first field: it holds no whitespace.
 *
 * Errors are values (RtDataError, see data.h), naming the file and the line:
 *     glove.txt:17: 99 values, expected 100
 *     glove.txt:3: value 7 'x1' is not a number */
#ifndef SEQC_RUNTIME_VECTORS_H
#define SEQC_RUNTIME_VECTORS_H

#include <stdbool.h>
#include <stdint.h>

#include "data.h"

/* The largest published vectors have 300 dimensions; 65,536 leaves room and
 * stops a column count read from a wrong file from allocating gigabytes. */
#define RT_VECTORS_MAX_DIM 65536
/* A line: token and dim numbers of up to ~16 characters each. 300 dimensions
 * take ~3 KB; the limit follows from the largest dimension allowed. */
#define RT_VECTORS_MAX_LINE_BYTES ((int64_t)RT_VECTORS_MAX_DIM * 32 + RT_DATA_MAX_TOKEN_BYTES)

/* For each token of the vocabulary (ids 1..size-1) that the file holds, writes
 * its vector to row id of matrix [vocab->size, dim]; other rows are left as
 * the caller set them. *found counts the rows written. Lines of tokens outside
 * the vocabulary are skipped once their dimension is checked (their numbers
 * are parsed only for vocabulary tokens).
 * Errors: a header or a line whose dimension is not `dim`, a value that is not
 * a finite number that fits in f32, a file that ends inside a line or holds
 * fewer vectors than its header promises, a vocabulary token that appears
 * twice, an empty line. The matrix may have been partly written on error. */
bool rt_vectors_fill(const char *path, const RtVocab *vocab, float *matrix, int64_t dim, int64_t *found,
                     RtDataError *err);

#endif
