/* Base images: read-only root filesystems shared by every sandbox.
 *
 * An image lives in DATA/images/<name>/ as rootfs/ (the tree, owned by host
 * root, used as the read-only overlay lower layer) and image.json
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
    int64_t size;
} pe_image_info;

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

/* List images; *out is a malloc'd array of *n entries. */
int pe_image_list(const char *data_dir, pe_image_info **out, size_t *n, pe_err *err);
void pe_image_info_free(pe_image_info *v, size_t n);

/* Remove image `name`. PE_ENOENT if unknown. */
int pe_image_remove(const char *data_dir, const char *name, pe_err *err);

/* Remove leftovers of interrupted builds/imports. */
int pe_image_gc(const char *data_dir, pe_err *err);

#endif
