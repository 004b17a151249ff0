/* Base images: read-only root filesystems shared by every sandbox.
 *
 * An image lives in DATA/images/<name>/ ($POCKETENV_IMAGES/<name>/ when
 * that is set: one set of images shared by several data directories) as rootfs/ (the tree, owned by
 * host root, used as the read-only overlay lower layer) and image.json
 * ({"name", "created" (unix seconds), "source", "size" (bytes)}). An image
 * directory appears atomically: it is built or imported into
 * DATA/images/.tmp-<name>-<pid> and renamed into place, so a crash leaves
 * only a .tmp-* directory that pe_image_gc() removes.
 *
 * Builders:
 *   "busybox": a tiny image from Debian's busybox-static (/bin/busybox),
 *              with applet links, /etc/passwd, /etc/group; built in well
 *              under a second; what the test suite uses.
 *   "debian":  Debian 12 (bookworm) built with mmdebstrap from the
 *              package archive (bash, coreutils, ca-certificates, curl, git,
 *              procps, iproute2, less, locales); progress goes to stderr.
 *
 * Functions return < 0 and fill err on failure; nothing half-made remains. */
#ifndef PE_IMAGE_H
#define PE_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "pocketenv/err.h"

typedef struct pe_image_info {
    char *name;
    char *source;
    int64_t created;
    int64_t size; /* of this layer alone */
    char *parent; /* the image it is a layer on, or NULL */
    char **env;   /* "K=V" it adds to its sandboxes' environment, or NULL */
} pe_image_info;

/* An image may stand on a parent image (image.json "parent"): its rootfs
 * then holds only what it adds (with overlayfs whiteouts for what it
 * removes), and a sandbox's root is the overlay of the whole stack. */
#define PE_IMAGE_MAX_LAYERS 8

typedef struct pe_image_stack {
    char *dirs[PE_IMAGE_MAX_LAYERS]; /* rootfs dirs, the image's own first, the base last */
    size_t n;
    char **env; /* the layers' env, the base's first, NULL-terminated, or NULL */
} pe_image_stack;

/* Resolve image (a name or a directory, as pe_image_resolve) into the
 * rootfs directories of it and of every parent, building a missing
 * built-in one (debian) on the way. A missing parent is PE_ENOENT. */
int pe_image_resolve_stack(const char *data_dir, const char *image, pe_image_stack *out,
                           pe_err *err);
void pe_image_stack_clear(pe_image_stack *st);

/* True if image name exists (whole: images appear by rename). */
bool pe_image_exists(const char *data_dir, const char *name);

/* An exclusive lock for making image `name`, host-wide (flock on
 * IMAGES/.lock-<name>): the fd, to close to release it; blocks. */
int pe_image_lock(const char *data_dir, const char *name, pe_err *err);

/* Making a layer from outside this module (lib/template): begin creates
 * the staging directory, the caller fills pe_image_layer_rootfs(), commit
 * measures it, writes image.json (source, parent, env) and renames it
 * into place; free removes what was not committed. */
typedef struct pe_image_layer pe_image_layer;
int pe_image_layer_begin(const char *data_dir, const char *name, const char *parent,
                         pe_image_layer **out, pe_err *err);
const char *pe_image_layer_rootfs(const pe_image_layer *l);
int pe_image_layer_commit(pe_image_layer *l, const char *source, char *const *env, pe_err *err);
void pe_image_layer_free(pe_image_layer *l);

/* Build image `name` with builder `builder` ("busybox" or "debian").
 * mirror may be NULL (the default Debian mirror from apt's sources).
 * Fails with PE_EEXIST if the image exists. */
int pe_image_build(const char *data_dir, const char *builder, const char *name, const char *mirror,
                   pe_err *err);

/* Import a root filesystem tarball (.tar, .tar.gz, .tar.zst, .tar.xz) as
 * image `name`. Extraction is safe: absolute paths and ".." components are
 * rejected, links cannot point the extraction outside the tree, device
 * nodes and fifos are skipped, numeric owners are kept. */
int pe_image_import(const char *data_dir, const char *name, const char *tar_path, pe_err *err);
/* The same, as a layer on image parent (which must exist). */
int pe_image_import_layer(const char *data_dir, const char *name, const char *parent,
                          const char *tar_path, pe_err *err);

/* Unpack a package tarball (an npm .tgz, read from fd) into rootfs/dest
 * (dest relative, no ".."): members must start with strip ("package/"),
 * which dest replaces; others are skipped; owners become root. The same
 * defences as import hold (no absolute names, no "..", nothing through
 * a symlink, no device nodes). */
int pe_image_unpack(int fd, const char *rootfs, const char *strip, const char *dest, pe_err *err);

/* Resolve what a sandbox asked for into a rootfs directory (malloc'd):
 * - a value containing '/' is a directory path used as it is (must exist);
 * - otherwise the name of an image in DATA/images; if it is missing and the
 *   name is "debian" or "busybox", it is built on first use.
 * Unknown names give a PE_ENOENT error naming the image. */
int pe_image_resolve(const char *data_dir, const char *image, char **rootfs_out, pe_err *err);

/* Would pe_image_resolve take `word` as an image without building or
 * failing: an image in DATA/images, a name it builds on first use, or a
 * path (with a '/') of a directory? For `run IMAGE CMD...`, whose first
 * word is an image only when it names one. Never builds anything. */
bool pe_image_known(const char *data_dir, const char *word);

/* True if pe_image_list would list image name: its image.json reads
 * whole. One file read, for a caller that needs just that one. */
bool pe_image_listed(const char *data_dir, const char *name);

/* List images; *out is a malloc'd array of *n entries. */
int pe_image_list(const char *data_dir, pe_image_info **out, size_t *n, pe_err *err);
void pe_image_info_free(pe_image_info *v, size_t n);

/* Remove image `name`. PE_ENOENT if unknown, PE_ESTATE if another image
 * stands on it. */
int pe_image_remove(const char *data_dir, const char *name, pe_err *err);

/* Remove leftovers of interrupted builds/imports. */
int pe_image_gc(const char *data_dir, pe_err *err);

#endif
