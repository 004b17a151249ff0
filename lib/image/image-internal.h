/* Internal interface of the image module, shared by image.c (the store),
 * image-build.c (builders) and image-import.c (tarball import). Nothing
 * outside lib/image includes it, except the module's unit test. */
#ifndef PE_IMAGE_INTERNAL_H
#define PE_IMAGE_INTERNAL_H

#include <stdint.h>

#include "pocketenv/err.h"

/* Limits on what an imported archive may make us write (STYLE rule 8). */
#define PE_IMAGE_MAX_BYTES (64LL << 30)  /* sum of member sizes */
#define PE_IMAGE_MAX_ENTRIES (4LL << 20) /* libarchive keeps a fixup per directory */
#define PE_IMAGE_JSON_MAX (64 * 1024)    /* image.json */

/* An image being made in DATA/images/.tmp-<name>-<pid>/. The directory is
 * held with an exclusive flock for the stage's lifetime, so pe_image_gc()
 * and a second build of the same name in this process (whose tmp name is
 * the same) can tell it is live. */
typedef struct pe__image_stage {
    char *name;
    char *tmp_dir;   /* absolute, symlink-free (realpath) */
    char *final_dir; /* DATA/images/<name> */
    char *rootfs;    /* tmp_dir/rootfs, created empty, mode 0755 */
    char *parent;    /* the image this one is a layer on, or NULL */
    char **env;      /* "K=V" for image.json, NULL-terminated, or NULL */
    int lock_fd;
} pe__image_stage;

/* Validate name, fail with PE_EEXIST if the image exists, and create the
 * staging directory with an empty rootfs/. On failure nothing is left. */
int pe__image_stage_open(pe__image_stage *st, const char *data_dir, const char *name, pe_err *err);

/* Measure rootfs, write image.json with source, flush the filesystem and
 * rename the staging directory to DATA/images/<name> (never replacing an
 * existing one: PE_EEXIST). */
int pe__image_stage_commit(pe__image_stage *st, const char *source, pe_err *err);

/* Remove the staging directory unless it was committed; free st. */
void pe__image_stage_close(pe__image_stage *st);

/* Turn an archive member name into a path relative to the image root:
 * "./" and empty or "." components are dropped, absolute names and any
 * ".." component are refused (-1). "" (the root itself) is a valid result.
 * *out is malloc'd. */
int pe__image_member_path(const char *name, char **out);

#endif
