/* A synthetic stand-in for the IMDB reviews, in the TSV the imdb_* examples
 * read (label, a tab, space-separated word ids):
 *
 *     imdb-data [--count N] [--length L] [--vocab V] [--seed S] TRAIN.tsv TEST.tsv
 *
 * Ids follow Keras' convention: 1 starts every review, words are 4..V-1 with
 * the small ids the frequent ones (a Zipf law: P(id = 3 + r) ~ 1/r). Each file
 * gets N reviews (default 25,000, as IMDB), about half of them positive, of
 * 10 to L words (default 200, uniformly). The label is learnable: one word in
 * ten is a sentiment word, drawn from ids 40..49 ("great") or 50..59 ("awful"),
 * four times in five from the label's own set. No single word gives a review
 * away; a model has to weigh them across the review. The best possible
 * accuracy (a majority vote of the sentiment words) is about 0.95 on whole
 * reviews of the default lengths, 0.93 on the last 80 words of each.
 * V defaults to 5000, the smallest vocabulary of the examples. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#define START_ID 1
#define FIRST_WORD 4
#define POSITIVE_IDS 40
#define NEGATIVE_IDS 50
#define SENTIMENT_WORDS 10
#define MIN_LENGTH 10
/* One word in SENTIMENT_RATE is a sentiment word; it agrees with the label
 * with probability AGREE. */
#define SENTIMENT_RATE 10
#define AGREE 0.8

static void usage(void) {
    fprintf(stderr, "usage: imdb-data [--count N] [--length L] [--vocab V] [--seed S] TRAIN.tsv TEST.tsv\n");
}

static uint32_t below(RtRng *rng, uint32_t n) {
    return (uint32_t)(rt_rng_uniform(rng) * n);
}

/* A common word: 3 + r with r in 1..vocab-4, log-uniform, so P(r) ~ 1/r. */
static int32_t common_word(RtRng *rng, int32_t vocab) {
    double r = floor(exp(rt_rng_uniform(rng) * log((double)(vocab - 3))));
    if (r < 1) r = 1;
    if (r > vocab - 4) r = vocab - 4;
    return (int32_t)(3 + r);
}

static int write_reviews(const char *path, long long count, int length, int32_t vocab, RtRng *rng) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "imdb-data: cannot write %s\n", path);
        return 1;
    }
    for (long long k = 0; k < count; k++) {
        int positive = (int)(rt_rng_next_u32(rng) & 1);
        int words = MIN_LENGTH + (int)below(rng, (uint32_t)(length - MIN_LENGTH + 1));
        fprintf(f, "%d\t%d", positive, START_ID);
        for (int w = 0; w < words; w++) {
            int32_t id;
            if (below(rng, SENTIMENT_RATE) == 0) {
                int agree = rt_rng_uniform(rng) < AGREE;
                int base = (positive == agree) ? POSITIVE_IDS : NEGATIVE_IDS;
                id = base + (int32_t)below(rng, SENTIMENT_WORDS);
            } else {
                id = common_word(rng, vocab);
            }
            fprintf(f, " %d", id);
        }
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "imdb-data: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    long long count = 25000, seed = 1, length = 200, vocab = 5000;
    const char *paths[2];
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) count = atoll(argv[++i]);
        else if (strcmp(argv[i], "--length") == 0 && i + 1 < argc) length = atoll(argv[++i]);
        else if (strcmp(argv[i], "--vocab") == 0 && i + 1 < argc) vocab = atoll(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = atoll(argv[++i]);
        else if (argv[i][0] != '-' && npaths < 2) paths[npaths++] = argv[i];
        else {
            usage();
            return 2;
        }
    }
    /* The sentiment ids must exist, with common words around them. */
    if (npaths != 2 || count < 1 || count > 100000000 || length < MIN_LENGTH || length > 100000 ||
        vocab < 2 * (NEGATIVE_IDS + SENTIMENT_WORDS) || vocab > INT32_MAX) {
        usage();
        return 2;
    }
    /* Train and test are independent draws: streams 0 and 1 of the seed. */
    RtRng rng;
    rt_rng_seed(&rng, (uint64_t)seed, 0);
    if (write_reviews(paths[0], count, (int)length, (int32_t)vocab, &rng)) return 1;
    rt_rng_seed(&rng, (uint64_t)seed, 1);
    return write_reviews(paths[1], count, (int)length, (int32_t)vocab, &rng);
}
