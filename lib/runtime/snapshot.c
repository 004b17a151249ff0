/* Snapshots of persistent sandboxes and sandboxes made from them.
 *
 * A snapshot is a read-only btrfs subvolume on the layers filesystem,
 * <data dir prefix>snap-<16 hex>, made by snapshotting a sandbox's layer
 * subvolume: nothing is copied, every extent stays shared with the
 * sandbox and, later, with the sandboxes made from it. Inside: upper/
 * (the sandbox's changes to its image), work/ (empty), image (the image
 * name it lies over) and owner.
 *
 * Ids. A sandbox's files are owned by its id range (base + 0..65535); a
 * snapshot keeps them at 0..65535, as an image does, and a sandbox made
 * from it gets them at its own range. Both shifts are one chown walk
 * (metadata only: btrfs copies no data for it). chown clears the set-id
 * bits, which the walk puts back; it also drops file capabilities (a
 * security.capability xattr), which are not carried over. Ids outside the
 * range (none a sandbox can make) become 65534 (nobody).
 *
 * Consistency: the source's layer is flushed first (syncfs), then its
 * processes are frozen only around the snapshot ioctl, which flushes what
 * was written since and commits. Overlayfs keeps no write cache of its
 * own: the upper layer's page cache is btrfs's.
 *
 * Threading: blocking; callers run it on a worker. The source sandbox's
 * lock is held until its layer has been captured, not during the walk. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/cgroup.h"
#include "runtime/internal.h"

#define SNAP_TAG "snap-"
#define RANGE 65536u
#define NOBODY 65534u
/* Each level holds an fd; a deeper tree is refused with a clear error. */
#define WALK_MAX_DEPTH 256
#define IMAGE_NAME_MAX 4096

struct shift {
    uint32_t from, to;
    int64_t bytes;
};

static bool snap_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n != 16)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

static char *snap_layer(const pe_runtime *rt, const char *id)
{
    char prefix[18];

    pe__layer_prefix(rt, prefix);
    return pe_xasprintf("%s" SNAP_TAG "%s", prefix, id);
}

static uint32_t shifted(uint32_t id, const struct shift *s)
{
    if (id >= s->from && id - s->from < RANGE)
        return s->to + (id - s->from);
    return s->to + NOBODY;
}

static int shift_entry(int dfd, const char *name, const struct stat *st, struct shift *s,
                       pe_err *err)
{
    uid_t u = shifted((uint32_t)st->st_uid, s);
    gid_t g = shifted((uint32_t)st->st_gid, s);

    if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode))
        s->bytes += (int64_t)st->st_blocks * 512;
    if (u == st->st_uid && g == st->st_gid)
        return 0;
    if (fchownat(dfd, name, u, g, AT_SYMLINK_NOFOLLOW) < 0)
        return pe_err_sys(err, "chown %s", name);
    /* chown cleared them; nothing here is mounted, so no one can swap
     * name for a symlink between the two calls. */
    if (!S_ISLNK(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) &&
        fchmodat(dfd, name, st->st_mode & 07777, 0) < 0)
        return pe_err_sys(err, "chmod %s", name);
    return 0;
}

/* Shift every entry under directory fd (taken), depth levels down. */
static int shift_dir(int fd, int depth, struct shift *s, pe_err *err)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    int r = 0;

    if (d == NULL) {
        close(fd);
        return pe_err_sys(err, "read a directory");
    }
    while (r == 0 && (errno = 0, de = readdir(d)) != NULL) {
        struct stat st;
        int sub;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            r = pe_err_sys(err, "stat %s", de->d_name);
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if (depth >= WALK_MAX_DEPTH) {
                r = pe_err_set(err, PE_EINVAL, 0, "directories nested deeper than %d levels",
                               WALK_MAX_DEPTH);
                break;
            }
            sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            r = sub < 0 ? pe_err_sys(err, "open %s", de->d_name)
                        : shift_dir(sub, depth + 1, s, err);
        }
        if (r == 0)
            r = shift_entry(dirfd(d), de->d_name, &st, s, err);
    }
    if (r == 0 && errno != 0)
        r = pe_err_sys(err, "read a directory");
    closedir(d);
    return r;
}

/* Make layer `name` hold ids at s->to: its top directory, upper/ and all
 * inside; work/ emptied (overlayfs's scratch space, never state); the
 * owner record replaced. */
static int rebase_layer(const char *name, struct shift *s, mode_t mode, const char *owner,
                        pe_err *err)
{
    cleanup_fd int top = pe__layer_open(name, err);
    cleanup_free char *root = pe__layers_dir();
    cleanup_free char *work = pe_xasprintf("%s/%s/work", root, name);
    struct stat st;
    int fd;

    if (top < 0)
        return -1;
    if (pe_fs_rm_rf(work, err) < 0 || mkdirat(top, "work", 0755) < 0 ||
        fchownat(top, "work", s->to, s->to, AT_SYMLINK_NOFOLLOW) < 0)
        return pe_err_prefix(err, "reset work/");
    if (fstatat(top, "upper", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
        return pe_err_set(err, PE_ESYS, errno, "layer %s has no upper/", name);
    fd = openat(top, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return pe_err_sys(err, "open upper/");
    if (shift_dir(fd, 0, s, err) < 0 || shift_entry(top, "upper", &st, s, err) < 0)
        return pe_err_prefix(err, "give the files to ids from %u", s->to);
    if (fchown(top, s->to, s->to) < 0 || fchmod(top, mode) < 0)
        return pe_err_sys(err, "chown layer");
    if ((unlinkat(top, "owner", 0) < 0 && errno != ENOENT) ||
        (fd = openat(top, "owner", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        return pe_err_sys(err, "replace the owner record");
    if (write(fd, owner, strlen(owner)) != (ssize_t)strlen(owner)) {
        close(fd);
        return pe_err_sys(err, "write the owner record");
    }
    close(fd);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Under the sandbox's lock: capture its layer as snapshot layer snap,
 * freezing it if it runs. */
static int capture(const pe_state *st, const char *snap, double *frozen_ms, pe_err *err)
{
    pe_cgroup *cg = NULL;
    double t0 = 0;
    int r;

    *frozen_ms = 0;
    {
        /* Most dirty data goes to disk before the freeze, not during. */
        cleanup_fd int fd = pe__layer_open(st->layer, err);
        if (fd < 0)
            return -1;
        syncfs(fd);
    }
    if (strcmp(st->status, "running") == 0) {
        if (pe_cgroup_open(st->id, &cg, err) < 0 || pe_cgroup_freeze(cg, true, err) < 0) {
            pe_cgroup_free(cg);
            return pe_err_prefix(err, "freeze");
        }
        t0 = now_ms();
    }
    r = pe__layer_snapshot(st->layer, snap, err);
    if (cg != NULL) {
        pe_err e2;
        if (pe_cgroup_freeze(cg, false, &e2) < 0)
            pe_log_warn("snapshot: thaw sandbox %s: %s", st->cfg.name, e2.msg);
        *frozen_ms = now_ms() - t0;
        pe_cgroup_free(cg);
    }
    return r;
}

static int finish(pe_runtime *rt, const char *snap, uint32_t base, const char *image,
                  pe_runtime_snapshot_info *out, pe_err *err)
{
    cleanup_free char *owner = pe_xasprintf("%s\nsnapshot\n%s\n", rt->data_dir, out->id);
    cleanup_free char *root = pe__layers_dir();
    cleanup_free char *img = pe_xasprintf("%s/%s/image", root, snap);
    struct shift s = {base, 0, 0};
    int64_t limit;

    /* 0700: its files are owned by host ids 0-65535 now, as an image's,
     * and no host user but root has any business in it. */
    if (rebase_layer(snap, &s, 0700, owner, err) < 0 ||
        pe_fs_write_new(img, image, strlen(image), 0600, err) < 0)
        return -1;
    /* No limit: read-only, it never grows. */
    if (pe__layer_set_readonly(snap, err) < 0)
        return -1;
    out->size_bytes = s.bytes;
    if (pe__layer_usage(snap, &out->exclusive_bytes, &limit, NULL) < 0)
        out->exclusive_bytes = -1;
    return 0;
}

int pe_runtime_snapshot(pe_runtime *rt, const char *name, pe_runtime_snapshot_info *out,
                        pe_err *err)
{
    cleanup_free char *dir = NULL;
    cleanup_free char *snap = NULL;
    pe_state st;
    int lock, r = -1;

    memset(out, 0, sizeof(*out));
    lock = pe__sandbox_lock(rt, name, &st, &dir, err);
    if (lock < 0)
        return pe_err_prefix(err, "snapshot sandbox %s", name);
    if (st.layer == NULL) {
        pe_err_set(err, PE_EUNSUP, 0,
                   "its writable layer is not on the layers filesystem (made without a disk "
                   "limit); snapshots need one");
        goto out;
    }
    if (pe__layers_ready(false, err) < 0)
        goto out;
    pe__random_hex(out->id, 8);
    snap = snap_layer(rt, out->id);
    out->image = pe_xstrdup(st.cfg.image ? st.cfg.image : PE_DEFAULT_IMAGE);
    r = capture(&st, snap, &out->frozen_ms, err);
    close(lock);
    lock = -1;
    if (r == 0 && (r = finish(rt, snap, st.id_base, out->image, out, err)) < 0)
        pe__layer_remove(snap, NULL);
out:
    if (lock >= 0)
        close(lock);
    pe__state_clear(&st);
    if (r < 0) {
        free(out->image);
        out->image = NULL;
        return pe_err_prefix(err, "snapshot sandbox %s", name);
    }
    return 0;
}

int pe_runtime_snapshot_remove(pe_runtime *rt, const char *id, pe_err *err)
{
    cleanup_free char *snap = NULL;
    cleanup_fd int fd = -1;

    if (!snap_id_ok(id))
        return pe_err_set(err, PE_EINVAL, 0, "invalid snapshot id");
    if (pe__layers_ready(false, err) < 0)
        return -1;
    snap = snap_layer(rt, id);
    fd = pe__layer_open(snap, err);
    if (fd < 0)
        return err->code == PE_ENOENT ? pe_err_set(err, PE_ENOENT, 0, "no snapshot %s", id) : -1;
    return pe__layer_remove(snap, err);
}

int pe_runtime_snapshot_usage(pe_runtime *rt, const char *id, int64_t *exclusive, pe_err *err)
{
    cleanup_free char *snap = NULL;
    int64_t limit;

    if (!snap_id_ok(id))
        return pe_err_set(err, PE_EINVAL, 0, "invalid snapshot id");
    if (pe__layers_ready(false, err) < 0)
        return -1;
    snap = snap_layer(rt, id);
    return pe__layer_usage(snap, exclusive, &limit, err);
}

int pe__layer_create_from(const char *name, const char *from, int64_t bytes, uint32_t base,
                          const char *owner, pe_err *err)
{
    struct shift s = {0, base, 0};

    if (pe__layer_snapshot(from, name, err) < 0)
        return pe_err_prefix(err, "layer %s", name);
    /* A snapshot of a read-only subvolume is writable. */
    if (pe__layer_limit(name, bytes, err) < 0 || rebase_layer(name, &s, 0755, owner, err) < 0) {
        pe__layer_remove(name, NULL);
        return pe_err_prefix(err, "layer %s from %s", name, from);
    }
    {
        cleanup_fd int top = pe__layer_open(name, NULL);
        if (top >= 0)
            unlinkat(top, "image", 0);
    }
    return 0;
}

int pe_runtime_create_from(pe_runtime *rt, const pe_sandbox_cfg *cfg, const char *id, pe_err *err)
{
    cleanup_free char *snap = NULL;
    cleanup_free char *root = NULL;
    cleanup_free char *img = NULL;
    char *image = NULL;
    pe_sandbox_cfg c = *cfg;
    int r;

    if (!snap_id_ok(id))
        return pe_err_set(err, PE_EINVAL, 0, "invalid snapshot id");
    if (pe__layers_ready(false, err) < 0)
        return -1;
    snap = snap_layer(rt, id);
    root = pe__layers_dir();
    img = pe_xasprintf("%s/%s/image", root, snap);
    if (pe_fs_read_file(img, IMAGE_NAME_MAX, &image, NULL, NULL) < 0)
        return pe_err_set(err, PE_ENOENT, 0, "no snapshot %s", id);
    c.image = image;
    r = pe__sandbox_create(rt, &c, snap, err);
    free(image);
    return r;
}
