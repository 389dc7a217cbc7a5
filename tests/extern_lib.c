/* A user's library for the extern tests: elementwise float functions and
 * their derivatives, as a .seq file names them with
 *   extern swish(x) from "./libextern_lib.so" grad swish_grad
 * Written with float arithmetic throughout, as a user's C would be. */
#include <math.h>

/* swish(x) = x * sigmoid(x), as Keras' swish / SiLU */
float swish(float x);
float swish_grad(float x);
/* softsign(x) = x / (1 + |x|) */
float softsign(float x);
float softsign_grad(float x);
/* cube(x) = x^3, declared without a derivative in the tests */
float cube(float x);

static float sigmoidf(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }

float swish(float x) { return x * sigmoidf(x); }

/* d/dx x s(x) = s(x) + x s(x) (1 - s(x)) */
float swish_grad(float x) {
    float s = sigmoidf(x);
    return s + x * s * (1.0f - s);
}

float softsign(float x) { return x / (1.0f + fabsf(x)); }

float softsign_grad(float x) {
    float d = 1.0f + fabsf(x);
    return 1.0f / (d * d);
}

float cube(float x) { return x * x * x; }
