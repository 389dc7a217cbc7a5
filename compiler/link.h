/* Turning object files into an executable or a static library with the
 * system's tools: the C compiler driver (`cc`, or $SEQC_CC) links, `ar`
 * archives. The LLVM C API has no linker, and the driver knows where the C
 * library and its start files are on this system.
 *
 * The runtime library linked in: $SEQC_RUNTIME, else the path the build
 * recorded (SEQC_RUNTIME_LIB), else libseqcrt.a next to the seqc executable. */
#ifndef SEQC_LINK_H
#define SEQC_LINK_H

#include <stdbool.h>

/* The runtime archive, or NULL with *error set when there is none. */
const char *link_runtime_archive(char **error);

/* cc -o out objs... runtime -lm (and `libs`, NULL-terminated, may be NULL). */
bool link_executable(const char *out, const char *const *objs, int nobjs, const char *const *libs, char **error);

/* A static library holding objs and every member of the runtime archive. */
bool link_static_library(const char *out, const char *const *objs, int nobjs, char **error);

/* A fresh private directory for intermediate files, and its removal. */
char *link_temp_dir(char **error);
void link_remove_dir(const char *dir);

#endif
