/* Plots as SVG 1.1 files, written by hand: the training history (loss and
 * metrics against the epoch) and a 2-D PCA projection of an embedding matrix
 * with the vocabulary's tokens as labels.
 *
 * The files need nothing but a browser: no scripts, no external fonts or style
 * sheets, every text XML-escaped, UTF-8 throughout. Each file starts with
 * "<svg" and ends with "</svg>\n".
 *
 * Errors are values (RtDataError, see data.h): a message names the file as the
 * caller spelled it, then the 1-based line and column where there are ones:
 *     history.csv:4: column 3 (accuracy): 'x' is not a number
 *
 * rt_plot_main is the `plot` command of both the seqc tool and the
 * executables seqc compiles, so both print the same help and messages. */
#ifndef SEQC_RUNTIME_PLOT_H
#define SEQC_RUNTIME_PLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data.h"

/* ---- Limits ---- */

/* Keras' history holds the loss, the metrics and their val_ twins: a dozen
 * columns is a lot; 64 leaves room and keeps the figure readable. */
#define RT_PLOT_MAX_COLUMNS 64
/* One row per epoch; a million epochs is a file of something else. */
#define RT_PLOT_MAX_EPOCHS 1000000
/* Points are marked with a circle up to this many epochs; past it the circles
 * would merge into a thick line, so only the line is drawn. */
#define RT_PLOT_MAX_MARKERS 200
/* Labels drawn by default in an embedding plot: 500 words fill a page; 20,000
 * would be an unreadable blot. --top may ask for up to RT_PLOT_MAX_TOP. */
#define RT_PLOT_DEFAULT_TOP 500
#define RT_PLOT_MAX_TOP 1000000
/* A label longer than this many characters is cut and ends in an ellipsis. */
#define RT_PLOT_MAX_LABEL_CHARS 24
/* Power iterations per principal component. Each costs D*D multiply-adds;
 * the iteration stops earlier once the vector moves by less than 1e-12. */
#define RT_PLOT_PCA_MAX_ITER 5000

/* ---- Training history ----
 *
 * The file: a header line `epoch,loss,<metric>...,val_loss,val_<metric>...`
 * (Keras' history keys; every column but epoch may be absent, the order is
 * free), then one line per epoch of comma-separated numbers. An empty field
 * means no value (no validation that epoch). The epoch must be there on every
 * line, finite and greater than the line before's. "nan" and "inf" are
 * accepted and drawn as gaps, since a loss that diverged is still worth
 * seeing. A final line without a newline and CRLF endings are fine. */
typedef struct RtHistory {
    int columns;        /* including epoch */
    char **name;        /* [columns] header names (owned) */
    int epoch;          /* index of the epoch column */
    int64_t rows;       /* epochs */
    double *value;      /* [rows, columns]; NAN for an empty field */
} RtHistory;

bool rt_plot_history_parse(const char *name, const char *text, size_t size, RtHistory *out,
                           RtDataError *err);
bool rt_plot_history_read(const char *path, RtHistory *out, RtDataError *err);
void rt_plot_history_free(RtHistory *h);

/* One panel for the loss and one per metric, each with the training line and,
 * when the file has it, the validation line (val_X goes with X), against the
 * epoch; up to two panels side by side. Returns the SVG, malloc'd with a NUL
 * after its *size bytes. */
char *rt_plot_history_svg(const RtHistory *h, size_t *size, RtDataError *err);
/* Reads csv_path and writes svg_path. */
bool rt_plot_history(const char *csv_path, const char *svg_path, RtDataError *err);

/* ---- Embeddings ---- */

/* Principal components of the n rows of x [n, d]: the rows are centred, the
 * covariance (d x d) is built in double, and its top two eigenvectors are
 * found by power iteration, the second after deflating the first. Each
 * component's sign makes its entry of largest magnitude (the first such)
 * positive, so the result does not depend on the start vector.
 * xy [n, 2] receives each row's coordinates on the two components;
 * explained[2] (may be NULL) the fraction of the variance each carries. A
 * component that carries no variance (d = 1, or all rows on a line) gives
 * coordinates 0. */
bool rt_plot_pca(const float *x, int64_t n, int64_t d, double *xy, double explained[2], RtDataError *err);

/* Projects the rows of an embedding emb [rows, dim] with rt_plot_pca, fitted on
 * every row but id 0 (padding), and draws ids 1 .. min(top, rows-1) (the most
 * frequent tokens, given how the vocabulary numbers them) as text labels at
 * their points. A token is labelled with vocab->token[id], or with its id when
 * vocab is NULL or too small. `title` heads the figure (XML-escaped here).
 * xy [rows, 2] (may be NULL) receives every row's coordinates; row 0's are NAN. */
bool rt_plot_embeddings(const float *emb, int64_t rows, int64_t dim, const RtVocab *vocab, int64_t top,
                        const char *title, const char *svg_path, double *xy, RtDataError *err);

/* ---- The plot command ----
 *
 *     PROG plot HISTORY.csv -o OUT.svg
 *     PROG plot --embeddings CHECKPOINT.safetensors [--tensor NAME] [--top N] -o OUT.svg
 *
 * argv[0] is the command's name ("plot"), its arguments follow. With
 * --embeddings the tensor is --tensor NAME or else the only one whose name
 * ends in ".embeddings"; the vocabulary is the checkpoint's "seqc.vocab"
 * metadata (tokens are labelled by id without one). Messages go to stderr as
 * "PROG plot: ...". Returns the exit status: 0 done, 1 a file could not be
 * read, parsed or written, 2 a usage error. --help prints the help to stdout. */
int rt_plot_main(int argc, char **argv, const char *prog);

#endif
