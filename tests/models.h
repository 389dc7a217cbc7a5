/* The small models the gradient and code-generation tests share: every op
 * (op_models) and every kind of recurrent layer (rnn_models), each a complete
 * .seq source. */
#ifndef SEQC_TEST_MODELS_H
#define SEQC_TEST_MODELS_H

#include <stdlib.h>

static const char *const op_models[] = {
    /* dense with each activation, on vectors and per step on sequences */
    "model m { input x: f32[3]  target y: f32[2]\n"
    "  a = dense(x, units: 4, activation: tanh)  b = dense(a, units: 4, activation: relu)\n"
    "  c = dense(b, units: 3, activation: sigmoid)  p = dense(c, units: 2)\n"
    "  loss mse(p, y) }",
    "model m { input x: f32[4, 3]  target y: f32[4, 1]\n"
    "  a = dense(x, units: 5, activation: hard_sigmoid)  p = dense(a, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    /* elementwise arithmetic, broadcasting, exp and log */
    "model m { input x: f32[3]  target y: f32[3]\n"
    "  a = dense(x, units: 3)  b = dense(x, units: 3, activation: sigmoid)\n"
    "  c = a * b - a / (b + 1) + exp(-a) * 0.5  d = log(b + 0.1) - -c\n"
    "  loss mse(d, y) }",
    /* softmax and the cross-entropies, from probabilities and from logits */
    "model m { input x: f32[3]  target y: i32[]\n"
    "  p = dense(x, units: 5, activation: softmax)\n"
    "  loss sparse_categorical_crossentropy(p, y) }",
    "model m { input x: f32[3]  target y: i32[1]\n"
    "  z = dense(x, units: 5)\n"
    "  loss sparse_categorical_crossentropy(z, y, from_logits: true) }",
    "model m { input x: f32[2, 3]  target y: f32[2, 4]\n"
    "  p = dense(x, units: 4, activation: softmax)\n"
    "  loss categorical_crossentropy(p, y) }",
    "model m { input x: f32[3]  target y: f32[4]\n"
    "  z = dense(x, units: 4)\n"
    "  loss categorical_crossentropy(z, y, from_logits: true) }",
    "model m { input x: f32[3]  target y: f32[1]\n"
    "  z = dense(x, units: 1)\n"
    "  loss binary_crossentropy(z, y, from_logits: true) }",
    /* softmax of large logits */
    "model m { input x: f32[3]  target y: i32[]\n"
    "  z = dense(x, units: 5)  p = softmax(z * 40)\n"
    "  loss sparse_categorical_crossentropy(p, y) }",
    /* saturated sigmoid and tanh */
    "model m { input x: f32[3]  target y: f32[2]\n"
    "  z = dense(x, units: 2)  p = sigmoid(z * 15) + tanh(z * 12)\n"
    "  loss mse(p, y) }",
    /* a probability far below f32's range, through log */
    "model m { input x: f32[3]  target y: f32[1]\n"
    "  z = dense(x, units: 1)  q = log(sigmoid(z - 120) + 1e-60)\n"
    "  loss mse(q * 0.01, y) }",
    /* embedding, flatten */
    "model m { input w: i32[5]  target y: f32[1]\n"
    "  e = embedding(w, vocab: 7, dim: 3)  f = flatten(e)\n"
    "  p = dense(f, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    /* split, concat, reverse, last, pooling */
    "model m { input x: f32[4, 6]  target y: f32[5]\n"
    "  a, b = split(dense(x, units: 6, activation: tanh), 2)\n"
    "  c = concat(reverse(a), b * a, x)\n"
    "  d = concat(last(c), global_max_pool(c), global_avg_pool(c))\n"
    "  p = dense(d, units: 5)\n"
    "  loss mse(p, y) }",
    /* batchnorm in training mode, on vectors and on sequences */
    "model m { input x: f32[3, 4]  target y: f32[3, 2]\n"
    "  n = batchnorm(dense(x, units: 5))  p = dense(batchnorm(n, momentum: 0.9, epsilon: 0.01), units: 2)\n"
    "  loss mse(p, y) }",
    /* dropout with its mask held fixed */
    "model m { input x: f32[6]  target y: f32[1]\n"
    "  h = dropout(dense(x, units: 8, activation: relu), 0.4)\n"
    "  p = dense(h, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    /* a loss written by hand */
    "model m { input x: f32[3]  target y: f32[2]\n"
    "  p = dense(x, units: 2)\n"
    "  loss mean((p - y) * (p - y)) + 0.5 * mse(p, y) }",
    /* a wide softmax at every position (1,100 classes): its product by row
     * tiles (6 rows whole, the rows left over; columns in blocks of 64, 8, 1) */
    "model m { input x: f32[20, 4]  target y: i32[20]\n"
    "  p = dense(x, units: 1100, activation: softmax)\n"
    "  loss sparse_categorical_crossentropy(p, y) }",
};

static const char *const rnn_models[] = {
    "model m { input x: f32[5, 3]  target y: f32[1]\n"
    "  h = rnn(x, units: 4)  p = dense(h, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    "model m { input x: f32[5, 3]  target y: f32[5, 2]\n"
    "  h = lstm(x, units: 4, sequences: true)  p = dense(h, units: 2)\n"
    "  loss mse(p, y) }",
    "model m { input x: f32[5, 3]  target y: f32[2]\n"
    "  h = gru(x, units: 4)  p = dense(h, units: 2)\n"
    "  loss mse(p, y) }",
    /* length-1 sequences */
    "model m { input x: f32[1, 3]  target y: f32[2]\n"
    "  h = lstm(x, units: 3)  p = dense(h, units: 2)\n"
    "  loss mse(p, y) }",
    /* activations changed, as the tutorials do */
    "model m { input x: f32[4, 2]  target y: f32[2]\n"
    "  h = gru(x, units: 3, activation: relu, recurrent_activation: hard_sigmoid)\n"
    "  g = lstm(x, units: 3, activation: relu)\n"
    "  p = dense(concat(h, g), units: 2)\n"
    "  loss mse(p, y) }",
    /* bidirectional, and backward alone with sequences (the reversed order) */
    "model m { input x: f32[4, 3]  target y: f32[1]\n"
    "  h = lstm(x, units: 3, direction: both, sequences: true)\n"
    "  g = gru(h, units: 2, direction: backward, sequences: true)\n"
    "  r = rnn(g, units: 2, direction: both)\n"
    "  p = dense(r, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    /* stacked */
    "model m { input x: f32[4, 2]  target y: f32[2]\n"
    "  h1 = rnn(x, units: 3, sequences: true)  h2 = lstm(h1, units: 3, sequences: true)\n"
    "  h3 = gru(h2, units: 3)  p = dense(h3, units: 2)\n"
    "  loss mse(p, y) }",
    /* masking: padded ids (zero) carry the state through */
    "model m { input w: i32[6]  target y: f32[1]\n"
    "  e = embedding(w, vocab: 9, dim: 3, mask_zero: true)\n"
    "  h = lstm(e, units: 3, direction: both, sequences: true)\n"
    "  g = global_avg_pool(h)  k = gru(h, units: 2)\n"
    "  p = dense(concat(g, k), units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    /* dropout and recurrent dropout, masks held fixed */
    "model m { input x: f32[4, 3]  target y: f32[1]\n"
    "  h = lstm(x, units: 4, dropout: 0.3, recurrent_dropout: 0.3)\n"
    "  g = gru(x, units: 3, dropout: 0.2, recurrent_dropout: 0.5)\n"
    "  p = dense(concat(h, g), units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }",
    /* a cell written by hand: peephole LSTM */
    "cell peephole(x: [I]) -> h {\n"
    "  state h: [units]  state c: [units]\n"
    "  param W: [I, 4 * units] init glorot_uniform  param U: [units, 4 * units] init orthogonal\n"
    "  param P: [3 * units] init uniform(min: -0.5, max: 0.5)  param b: [4 * units] init lstm_bias\n"
    "  i, f, g, o = split(x @ W + h @ U + b, 4)\n"
    "  pi, pf, po = split(P, 3)\n"
    "  c = sigmoid(f + pf * c) * c + sigmoid(i + pi * c) * tanh(g)\n"
    "  h = sigmoid(o + po * c) * tanh(c)\n"
    "}\n"
    "model m { input x: f32[4, 2]  target y: f32[2]\n"
    "  h = peephole(x, units: 3, sequences: true)  p = dense(last(h), units: 2)\n"
    "  loss mse(p, y) }",
    /* stateful truncated BPTT(k1, k2) on a stream */
    "model m { input x: i32[6]  target y: i32[6]\n"
    "  e = embedding(x, vocab: 5, dim: 3)\n"
    "  h = lstm(e, units: 3, sequences: true, stateful: true)\n"
    "  p = dense(h, units: 5, activation: softmax)\n"
    "  loss sparse_categorical_crossentropy(p, y) }\n"
    "train { bptt(every: 2, window: 6) }",
    /* a classifier that trains through its last steps only (checked untruncated) */
    "model m { input x: f32[9, 2]  target y: f32[1]\n"
    "  h = gru(x, units: 3, direction: both)  p = dense(h, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }\n"
    "train { bptt 4 }",
    /* the same over an embedding: each direction's window of ids (apart) */
    "model m { input w: i32[9]  target y: f32[1]\n"
    "  e = embedding(w, vocab: 11, dim: 3)\n"
    "  h = lstm(e, units: 3, direction: both)  p = dense(h, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }\n"
    "train { bptt 4 }",
    /* ... and with padding, the two windows overlapping */
    "model m { input w: i32[9]  target y: f32[1]\n"
    "  e = embedding(w, vocab: 11, dim: 3, mask_zero: true)\n"
    "  h = gru(e, units: 3, direction: both)  p = dense(h, units: 1, activation: sigmoid)\n"
    "  loss binary_crossentropy(p, y) }\n"
    "train { bptt 5 }",
    /* wide enough for the products' packed panels (80 columns: two and a
     * tail), with a transposed A of a whole sliver and 5 rows (13 inputs) */
    "model m { input x: f32[3, 13]  target y: f32[1]\n"
    "  h = lstm(x, units: 20)  p = dense(h, units: 1)\n"
    "  loss mse(p, y) }",
};

/* Every example of examples/, the costliest last. */
static const char *const example_names[] = {
    "alarm", "forecast", "charlm", "wordlm", "imdb_flatten", "imdb_rnn", "imdb_lstm_small", "imdb_stack", "poet",
    "imdb_rnn32", "imdb_lstm32", "imdb_lstm", "imdb_rnn64", "imdb_birnn", "imdb_bigru", "imdb_bilstm",
};
#define NEXAMPLE_NAMES ((int)(sizeof example_names / sizeof example_names[0]))
/* Under the sanitizers (SEQC_QUICK_TESTS=1) the suites run the first nine:
 * every layer, cell and option of the examples is in them (bidirectional
 * layers in the recurrent test models); the rest repeat them at sizes that
 * cost minutes in an instrumented interpreter. */
#define NQUICK_EXAMPLES 9

static inline int examples_to_run(void) {
    const char *q = getenv("SEQC_QUICK_TESTS");
    return q && q[0] == '1' ? NQUICK_EXAMPLES : NEXAMPLE_NAMES;
}

#endif
