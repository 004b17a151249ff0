/* Tarball import: extract a root filesystem archive (tar, pax or GNU tar;
 * plain, gzip, bzip2, xz, lzma, zstd or lz4) into a
 * staging directory that image.c renames into place.
 *
 * Threat model: the tarball is hostile. It must not make us write, link or
 * chmod anything outside the staging rootfs, nor leave files a later
 * pocketenv image rm cannot delete. Defences, in order:
 *  - every member name and hard link target goes through
 *    pe__image_member_path(): absolute names and ".." components are
 *    refused here, before libarchive sees them; the result is prefixed with
 *    the rootfs path, which is canonical (no symlink in it);
 *  - libarchive then runs with SECURE_SYMLINKS (never extract *through* a
 *    symlink the archive made, for member names and hard link targets
 *    alike) and SECURE_NODOTDOT. SECURE_NOABSOLUTEPATHS cannot be set: our
 *    rewritten names are absolute on purpose, so that the process's cwd is
 *    never changed (chdir is process-wide and the daemon is threaded);
 *  - names of PATH_MAX or more are refused: libarchive would chdir() into
 *    the tree to create them;
 *  - device nodes, fifos and sockets are skipped; file flags (chattr +i)
 *    and ACLs are not restored; xattrs are, except those overlayfs or the
 *    kernel would interpret (trusted.*, user.overlay.*, security.* other
 *    than security.capability, system.*);
 *  - at most PE_IMAGE_MAX_ENTRIES members and PE_IMAGE_MAX_BYTES of data.
 * Symlinks themselves may point anywhere: they are resolved inside the
 * sandbox's root later.
 *
 * Owners are restored numerically (no name lookup in the host's passwd).
 * Caveat: archive_write_disk briefly sets the process umask to 0 for each
 * member to read it; other threads creating files meanwhile should pass
 * explicit modes (pocketenv's own code does). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image-internal.h"
#include "image/image.h"

#define EXTRACT_FLAGS                                                                              \
    (ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR | \
     ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT)

typedef struct import {
    const char *rootfs; /* canonical absolute path */
    /* pe_image_unpack: members must start with strip, which is replaced
     * by dest (relative to rootfs); owners become root. */
    const char *strip, *dest;
    struct archive *in;
    struct archive *out;
    int64_t entries;
    int64_t extracted;
    int64_t bytes;
} import;

static const char *archive_msg(struct archive *a)
{
    const char *s = archive_error_string(a);
    return s ? s : "unknown error";
}

/* libarchive's refusals (symlink in the way, bad header) carry no errno:
 * those are the archive's fault. A real errno is a failure on our side. */
static int archive_fail(struct archive *a, pe_err *err, const char *what, const char *member)
{
    int e = archive_errno(a);

    if (e > 0)
        return pe_err_set(err, PE_ESYS, e, "%s %s: %s", what, member, archive_msg(a));
    return pe_err_set(err, PE_EINVAL, 0, "%s %s: %s", what, member, archive_msg(a));
}

/* Path under the rootfs for a member name or hard link target. */
static char *target_path(const import *im, const char *name, const char *what, pe_err *err)
{
    cleanup_free char *rel = NULL;
    char *abs;

    if (pe__image_member_path(name, &rel) < 0) {
        pe_err_set(err, PE_EINVAL, 0, "refusing %s \"%s\": absolute or contains \"..\"", what,
                   name);
        return NULL;
    }
    abs = *rel ? pe_xasprintf("%s/%s", im->rootfs, rel) : pe_xstrdup(im->rootfs);
    if (strlen(abs) >= PATH_MAX) {
        pe_err_set(err, PE_EINVAL, ENAMETOOLONG, "refusing %s \"%.64s...\"", what, name);
        free(abs);
        return NULL;
    }
    return abs;
}

/* pe_image_unpack: name with strip replaced by dest (malloc'd); NULL for
 * a member outside strip (skipped). */
static char *moved_name(const import *im, const char *name)
{
    size_t n = strlen(im->strip);

    if (strncmp(name, im->strip, n) != 0 || name[n] == '\0')
        return NULL;
    return pe_xasprintf("%s/%s", im->dest, name + n);
}

static int rewrite_paths(const import *im, struct archive_entry *e, const char *member, pe_err *err)
{
    cleanup_free char *moved = im->strip ? moved_name(im, member) : NULL;
    cleanup_free char *path = target_path(im, moved ? moved : member, "member", err);
    cleanup_free char *link = NULL;
    cleanup_free char *moved_link = NULL;
    const char *hardlink = archive_entry_hardlink(e);

    if (path == NULL)
        return -1;
    /* "./" stands for the image root, which must stay a directory: as a
     * symlink it would lead every later member out of the tree. */
    if (strcmp(path, im->rootfs) == 0 &&
        (hardlink != NULL || archive_entry_filetype(e) != AE_IFDIR))
        return pe_err_set(err, PE_EINVAL, 0, "refusing member \"%s\": the root must be a directory",
                          member);
    if (hardlink != NULL && im->strip != NULL) {
        moved_link = moved_name(im, hardlink);
        if (moved_link == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "refusing hard link %s to %s, outside %s", member,
                              hardlink, im->strip);
        hardlink = moved_link;
    }
    if (hardlink != NULL) {
        link = target_path(im, hardlink, "hard link target", err);
        if (link == NULL)
            return pe_err_prefix(err, "%s", member);
        archive_entry_copy_hardlink(e, link);
    }
    archive_entry_copy_pathname(e, path);
    return 0;
}

static int xattr_allowed(const char *name)
{
    if (strncmp(name, "user.", 5) == 0)
        return strncmp(name, "user.overlay.", 13) != 0;
    return strcmp(name, "security.capability") == 0;
}

/* Keep only the xattrs a rootfs may carry (see the header comment). */
static void filter_xattrs(struct archive_entry *e, const char *member)
{
    struct archive_entry *keep;
    const char *name;
    const void *value;
    size_t size;

    if (archive_entry_xattr_reset(e) == 0)
        return;
    keep = archive_entry_new();
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        if (xattr_allowed(name))
            archive_entry_xattr_add_entry(keep, name, value, size);
        else
            pe_log_debug("import: %s: dropping xattr %s", member, name);
    }
    archive_entry_xattr_clear(e);
    archive_entry_xattr_reset(keep);
    while (archive_entry_xattr_next(keep, &name, &value, &size) == ARCHIVE_OK)
        archive_entry_xattr_add_entry(e, name, value, size);
    archive_entry_free(keep);
}

static int is_special(struct archive_entry *e)
{
    switch (archive_entry_filetype(e)) {
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
    case AE_IFSOCK:
        return 1;
    default:
        return 0;
    }
}

static int copy_data(import *im, const char *member, pe_err *err)
{
    for (;;) {
        const void *buf = NULL;
        size_t size = 0;
        la_int64_t off = 0;
        int r = archive_read_data_block(im->in, &buf, &size, &off);

        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN)
            return archive_fail(im->in, err, "read", member);
        if (archive_write_data_block(im->out, buf, size, off) < ARCHIVE_WARN)
            return archive_fail(im->out, err, "write", member);
    }
}

/* Checks that need the original member name, before anything is written. */
static int admit_entry(import *im, struct archive_entry *e, const char *member, pe_err *err)
{
    if (++im->entries > PE_IMAGE_MAX_ENTRIES)
        return pe_err_set(err, PE_EINVAL, 0, "archive has more than %lld members",
                          (long long)PE_IMAGE_MAX_ENTRIES);
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0)
        im->bytes += archive_entry_size(e);
    if (im->bytes > PE_IMAGE_MAX_BYTES)
        return pe_err_set(err, PE_EINVAL, 0, "archive expands to more than %lld GiB",
                          (long long)(PE_IMAGE_MAX_BYTES >> 30));
    return 0;
}

static int extract_entry(import *im, struct archive_entry *e, pe_err *err)
{
    const char *name = archive_entry_pathname(e);
    cleanup_free char *member = NULL;
    int r;

    if (name == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "member with an unreadable name");
    member = pe_xstrdup(name); /* the entry's own copy is replaced below */
    if (admit_entry(im, e, member, err) < 0)
        return -1;
    if (is_special(e)) {
        pe_log_debug("import: skipping device, fifo or socket %s", member);
        return 0;
    }
    if (im->strip != NULL) {
        cleanup_free char *moved = moved_name(im, member);
        if (moved == NULL) {
            pe_log_debug("unpack: skipping %s, outside %s", member, im->strip);
            return 0;
        }
        /* A package's owners are its publisher's: root's in an image. */
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        archive_entry_set_uname(e, NULL);
        archive_entry_set_gname(e, NULL);
    }
    if (rewrite_paths(im, e, member, err) < 0)
        return -1;
    filter_xattrs(e, member);
    r = archive_write_header(im->out, e);
    if (r < ARCHIVE_WARN)
        return archive_fail(im->out, err, "extract", member);
    if (r == ARCHIVE_WARN)
        pe_log_debug("import: %s: %s", member, archive_msg(im->out));
    if (archive_entry_size(e) > 0 && copy_data(im, member, err) < 0)
        return -1;
    if (archive_write_finish_entry(im->out) < ARCHIVE_WARN)
        return archive_fail(im->out, err, "finish", member);
    im->extracted++;
    return 0;
}

static int extract_all(import *im, pe_err *err)
{
    struct archive_entry *e;
    int r;

    while ((r = archive_read_next_header(im->in, &e)) != ARCHIVE_EOF) {
        if (r < ARCHIVE_WARN)
            return pe_err_set(err, PE_EINVAL, 0, "read archive: %s", archive_msg(im->in));
        if (extract_entry(im, e, err) < 0)
            return -1;
    }
    /* Applies directory modes and times deferred until every child exists. */
    if (archive_write_close(im->out) < ARCHIVE_WARN)
        return archive_fail(im->out, err, "finish", "extraction");
    if (im->extracted == 0)
        return pe_err_set(err, PE_EINVAL, 0, "archive contains nothing to import");
    return 0;
}

static int extract(int fd, const char *rootfs, const char *strip, const char *dest, pe_err *err)
{
import im = {.rootfs = rootfs, .strip = strip, .dest = dest };
    int r;

    im.in = archive_read_new();
    im.out = archive_write_disk_new();
    if (im.in == NULL || im.out == NULL) {
        r = pe_err_set(err, PE_ESYS, ENOMEM, "libarchive");
        goto out;
    }
    /* Not archive_read_support_filter_all(): for lrzip, grzip, lzop and
     * others it would fork and exec an external decompressor chosen by the
     * archive's first bytes. These are all linked in. */
    archive_read_support_filter_gzip(im.in);
    archive_read_support_filter_bzip2(im.in);
    archive_read_support_filter_xz(im.in);
    archive_read_support_filter_lzma(im.in);
    archive_read_support_filter_zstd(im.in);
    archive_read_support_filter_lz4(im.in);
    archive_read_support_format_tar(im.in); /* reads ustar, pax and GNU tar */
    /* No user/group lookup functions: owners stay numeric. */
    archive_write_disk_set_options(im.out, EXTRACT_FLAGS);
    if (archive_read_open_fd(im.in, fd, 64 * 1024) != ARCHIVE_OK)
        r = pe_err_set(err, PE_EINVAL, 0, "read archive: %s", archive_msg(im.in));
    else
        r = extract_all(&im, err);
out:
    if (im.in != NULL)
        archive_read_free(im.in);
    if (im.out != NULL)
        archive_write_free(im.out);
    return r;
}

int pe_image_import(const char *data_dir, const char *name, const char *tar_path, pe_err *err)
{
    return pe_image_import_layer(data_dir, name, NULL, tar_path, err);
}

int pe_image_import_layer(const char *data_dir, const char *name, const char *parent,
                          const char *tar_path, pe_err *err)
{
    pe__image_stage st;
    cleanup_fd int fd = -1;
    cleanup_free char *real = NULL;
    cleanup_free char *source = NULL;
    struct stat sb;
    int r;

    if (!pe_name_valid(name))
        return pe_err_set(err, PE_EINVAL, 0, "invalid image name \"%s\"", name ? name : "");
    fd = open(tar_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return pe_err_set(err, PE_ENOENT, 0, "tarball %s does not exist", tar_path);
    if (fd < 0)
        return pe_err_sys(err, "open %s", tar_path);
    if (fstat(fd, &sb) < 0)
        return pe_err_sys(err, "stat %s", tar_path);
    if (S_ISDIR(sb.st_mode))
        return pe_err_set(err, PE_EINVAL, 0, "%s is a directory, not a tarball", tar_path);
    real = realpath(tar_path, NULL);
    source = pe_xasprintf("import %s", real ? real : tar_path);
    if (parent != NULL && !pe_image_exists(data_dir, parent))
        return pe_err_set(err, PE_ENOENT, 0, "parent image %s does not exist", parent);
    if (pe__image_stage_open(&st, data_dir, name, err) < 0)
        return -1;
    st.parent = parent ? pe_xstrdup(parent) : NULL;
    r = extract(fd, st.rootfs, NULL, NULL, err);
    if (r < 0)
        pe_err_prefix(err, "import image %s from %s", name, tar_path);
    else
        r = pe__image_stage_commit(&st, source, err);
    pe__image_stage_close(&st);
    return r;
}

int pe_image_unpack(int fd, const char *rootfs, const char *strip, const char *dest, pe_err *err)
{
    cleanup_free char *real = realpath(rootfs, NULL);

    if (real == NULL)
        return pe_err_sys(err, "resolve %s", rootfs);
    if (strip == NULL || dest == NULL || dest[0] == '/' || strstr(dest, "..") != NULL)
        return pe_err_set(err, PE_EINVAL, 0, "unpack: bad strip or dest");
    return extract(fd, real, strip, dest, err);
}
