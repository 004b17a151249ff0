/* docker cp's path rules, shared by the CLI (copies out of a sandbox) and
 * pocketenv-archive (copies into one), so both ends of `pocketenv cp`
 * decide alike. Pure: no I/O; the caller says what the destination is.
 *
 * A copy is an archive whose entries all lie under one top entry, the
 * source's base name ("T", "T/a", "T/a/b"): a file, a symlink or a
 * directory. Where it lands (docs/design/transfer.md has the table):
 *   source file or symlink:
 *     destination a directory          into it, under the source's name
 *     destination missing              a file at the destination, unless it
 *                                      ends with '/' (the directory must exist)
 *     destination another file         replaced, unless it ends with '/'
 *   source directory:
 *     destination missing              created, with the source's contents
 *     destination a directory          into it under the source's name; with
 *                                      "SRC/." (contents) its contents merge in
 *     destination a file               refused
 * The destination's parent must exist: nothing is created above it. */
#ifndef PE_CORE_CP_PATH_H
#define PE_CORE_CP_PATH_H

#include <stdbool.h>
#include <stddef.h>

#include "pocketenv/err.h"

enum pe_cp_dest { PE_CP_DEST_MISSING, PE_CP_DEST_DIR, PE_CP_DEST_OTHER };

typedef struct pe_cp_plan {
    char *dir;  /* unpack here (malloc'd; "." or "/" when that is it) */
    char *name; /* the top entry's name there; NULL: the top directory is
                 * dir itself (its contents go in, it is not written) */
} pe_cp_plan;

/* The plan for a copy of a top entry (a directory when src_dir) into dest,
 * as the user typed it (a trailing '/' says "a directory"), which is kind.
 * contents: the source was spelt "SRC/.". src_name: the top entry's name.
 * -1 with PE_EINVAL (or PE_ENOENT for a missing directory) and a message a
 * user can act on. Free with pe_cp_plan_free. */
int pe_cp_plan_make(const char *src_name, bool src_dir, bool contents, const char *dest,
                    enum pe_cp_dest kind, pe_cp_plan *out, pe_err *err);
void pe_cp_plan_free(pe_cp_plan *p);

/* dest without its trailing slashes (malloc'd; "/" stays "/"); *slash: it
 * had one. */
char *pe_cp_trim(const char *dest, bool *slash);

/* entry's name once the top entry top is renamed per plan: into out (n
 * bytes). 0, with out "" for the top entry itself when plan->name is NULL
 * (skip it); -1 when entry is neither top nor under "top/", or the name
 * is too long. The top "." (a copy of "/" or of ".") is always taken as
 * contents. */
int pe_cp_rebase(const char *entry, const char *top, const pe_cp_plan *plan, char *out, size_t n);

/* The top entry's name in the first entry of an archive: the name
 * without trailing slashes ("." for a copy of "/"). Into out (n bytes); -1
 * when it is empty, has a '/' inside, is "..", or does not fit. */
int pe_cp_top(const char *entry, char *out, size_t n);

#endif
