/* A Check fixture for the loader suites: each test runs in a fresh temporary
 * directory (removed after it) and writes its input files there. */
#ifndef SEQC_TEST_TMPDIR_H
#define SEQC_TEST_TMPDIR_H

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];
static char olddir[4096];

static void setup(void) {
    ck_assert_ptr_nonnull(getcwd(olddir, sizeof olddir));
    strcpy(tmpdir, "/tmp/seqc-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    ck_assert_int_eq(chdir(tmpdir), 0);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void) {
    ck_assert_int_eq(chdir(olddir), 0);
    nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void write_bytes(const char *name, const void *data, size_t n) {
    FILE *f = fopen(name, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static void write_text(const char *name, const char *text) { write_bytes(name, text, strlen(text)); }

#endif
