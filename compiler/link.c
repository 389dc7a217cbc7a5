/* Running cc and ar for `seqc compile`. */
#include "link.h"

#include <dirent.h>
#include <errno.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_ARGS 256

static char *format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static bool readable(const char *path) { return path && access(path, R_OK) == 0; }

const char *link_runtime_archive(char **error) {
    static char beside[4096];
    const char *env = getenv("SEQC_RUNTIME");
    if (env && *env) {
        if (readable(env)) return env;
        *error = format("seqc: SEQC_RUNTIME names %s, which cannot be read", env);
        return NULL;
    }
#ifdef SEQC_RUNTIME_LIB
    if (readable(SEQC_RUNTIME_LIB)) return SEQC_RUNTIME_LIB;
#endif
    ssize_t n = readlink("/proc/self/exe", beside, sizeof beside - 32);
    if (n > 0) {
        beside[n] = '\0';
        char *slash = strrchr(beside, '/');
        if (slash) {
            strcpy(slash + 1, "libseqcrt.a");
            if (readable(beside)) return beside;
        }
    }
    *error = format("seqc: cannot find the runtime library libseqcrt.a (set SEQC_RUNTIME to its path)");
    return NULL;
}

/* Runs argv[0] from PATH in `dir` (NULL: here) and waits. */
static bool run(char *const *argv, const char *dir, char **error) {
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    char *cwd = NULL;
    if (dir) {
        cwd = getcwd(NULL, 0);
        if (!cwd || chdir(dir) != 0) {
            free(cwd);
            *error = format("seqc: cannot enter %s", dir);
            return false;
        }
    }
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (cwd) {
        if (chdir(cwd) != 0) rc = rc ? rc : errno;
        free(cwd);
    }
    if (rc != 0) {
        *error = format("seqc: cannot run '%s' (%s); linking needs a C compiler driver and ar on PATH "
                        "(Debian: apt-get install gcc binutils), or SEQC_CC naming one", argv[0], strerror(rc));
        return false;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            *error = format("seqc: lost track of '%s'", argv[0]);
            return false;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    *error = format("seqc: '%s' failed (%s %d)", argv[0], WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return false;
}

bool link_executable(const char *out, const char *const *objs, int nobjs, const char *const *libs, char **error) {
    const char *rt = link_runtime_archive(error);
    if (!rt) return false;
    const char *cc = getenv("SEQC_CC");
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)(cc && *cc ? cc : "cc");
    argv[n++] = "-o";
    argv[n++] = (char *)out;
    for (int i = 0; i < nobjs && n < MAX_ARGS - 8; i++) argv[n++] = (char *)objs[i];
    argv[n++] = (char *)rt;
    for (int i = 0; libs && libs[i] && n < MAX_ARGS - 4; i++) argv[n++] = (char *)libs[i];
    argv[n++] = "-lm";
    argv[n++] = "-pthread"; /* the kernels' thread pool (runtime/pool.c) */
#ifdef SEQC_RUNTIME_SANITIZE
    /* A runtime built with sanitizers needs their libraries at link time. */
    char *sanitize = NULL;
    if (SEQC_RUNTIME_SANITIZE[0] && strcmp(rt, SEQC_RUNTIME_LIB) == 0)
        argv[n++] = sanitize = format("-fsanitize=%s", SEQC_RUNTIME_SANITIZE);
#endif
    argv[n] = NULL;
    bool ok = run(argv, NULL, error);
#ifdef SEQC_RUNTIME_SANITIZE
    free(sanitize);
#endif
    return ok;
}

static bool is_object(const char *name) {
    size_t n = strlen(name);
    return n > 2 && strcmp(name + n - 2, ".o") == 0;
}

bool link_static_library(const char *out, const char *const *objs, int nobjs, char **error) {
    const char *rt = link_runtime_archive(error);
    if (!rt) return false;
    char *dir = link_temp_dir(error);
    if (!dir) return false;
    char *abs_rt = realpath(rt, NULL);
    char *argv[MAX_ARGS];
    bool ok = abs_rt != NULL;
    if (!ok) *error = format("seqc: cannot resolve %s", rt);
    if (ok) {
        char *x[] = {"ar", "x", abs_rt, NULL};
        ok = run(x, dir, error);
    }
    int n = 0;
    argv[n++] = "ar";
    argv[n++] = "rcs";
    argv[n++] = (char *)out;
    for (int i = 0; i < nobjs && n < MAX_ARGS - 2; i++) argv[n++] = (char *)objs[i];
    DIR *d = ok ? opendir(dir) : NULL;
    struct dirent *e;
    char *members[MAX_ARGS];
    int nm = 0;
    while (d && (e = readdir(d)) && n < MAX_ARGS - 1)
        if (is_object(e->d_name)) argv[n++] = members[nm++] = format("%s/%s", dir, e->d_name);
    if (d) closedir(d);
    argv[n] = NULL;
    if (ok) {
        unlink(out); /* ar adds to an existing archive: start afresh */
        ok = run(argv, NULL, error);
    }
    for (int i = 0; i < nm; i++) free(members[i]);
    free(abs_rt);
    link_remove_dir(dir);
    free(dir);
    return ok;
}

char *link_temp_dir(char **error) {
    const char *tmp = getenv("TMPDIR");
    char *path = format("%s/seqc-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!path || !mkdtemp(path)) {
        *error = format("seqc: cannot make a temporary directory: %s", strerror(errno));
        free(path);
        return NULL;
    }
    return path;
}

void link_remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *p = format("%s/%s", dir, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}
