/* A C program using the library `seqc compile --emit=lib` writes for the
 * alarm model: load a checkpoint, predict one sequence, print the outputs.
 * test_train.c builds it against alarm.h and libalarm.a and compares its
 * output with the executable's `predict`. */
#include <stdio.h>

#include "alarm.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: lib_client CHECKPOINT < one line of %d numbers\n", alarm_INPUT_SIZE);
        return 2;
    }
    SeqcModel *m = alarm_new();
    if (!m) {
        fprintf(stderr, "lib_client: cannot create the model\n");
        return 1;
    }
    if (alarm_load(m, argv[1]) != 0) {
        fprintf(stderr, "lib_client: %s\n", seqc_model_error(m));
        alarm_free(m);
        return 1;
    }
    float in[alarm_INPUT_SIZE], out[alarm_OUTPUT_SIZE];
    for (int i = 0; i < alarm_INPUT_SIZE; i++)
        if (scanf("%f", &in[i]) != 1) {
            fprintf(stderr, "lib_client: expected %d numbers\n", alarm_INPUT_SIZE);
            alarm_free(m);
            return 1;
        }
    if (alarm_predict(m, in, out) != 0) {
        fprintf(stderr, "lib_client: %s\n", seqc_model_error(m));
        alarm_free(m);
        return 1;
    }
    for (int i = 0; i < alarm_OUTPUT_SIZE; i++) printf(i ? " %.6g" : "%.6g", out[i]);
    putchar('\n');
    alarm_free(m);
    return 0;
}
