/* Writable layers with a disk limit: one host-wide btrfs filesystem in a
 * sparse image file, a subvolume per sandbox, a qgroup limit on each.
 *
 * Why btrfs (docs/design/runtime.md, "Disk limit"): the per-directory
 * limits of XFS (project quotas) need CONFIG_XFS_QUOTA, ext4's need
 * CONFIG_QFMT_V2, tmpfs's CONFIG_TMPFS_QUOTA: all three are off in the
 * kernel we run on, and btrfs qgroups need no option. They are enforced
 * whoever writes (no CAP_SYS_RESOURCE escape: overlayfs writes the upper
 * layer with the credentials of whoever mounted it, root of the host for
 * --userns host), count metadata too (so a flood of empty files ends at
 * the same limit), and a subvolume is deleted in one call however deep
 * the tree a sandbox left in it.
 *
 * Layout (every path host-wide, like the id ranges; $POCKETENV_LAYERS_DIR
 * moves them all):
 *   /var/lib/pocketenv/layers.img   sparse image, as large as the host
 *                                   filesystem that holds it
 *   /var/lib/pocketenv/layers.lock  flock'ed while the image is made or
 *                                   mounted
 *   /var/lib/pocketenv/layers/      its mount point (btrfs, discard=sync:
 *                                   freed blocks become holes in the image
 *                                   at the next commit)
 *   layers/<name>/                  a subvolume: upper/, work/ and owner
 *                                   (data directory, sandbox name, id)
 *
 * The image is made (mkfs.btrfs, simple quotas switched on) the first
 * time a sandbox asks for a disk limit, and mounted again on demand after
 * a reboot; per sandbox it costs one subvolume and one qgroup limit.
 * Nothing here runs between clone and exec. */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "runtime/internal.h"

#ifndef BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA
#define BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA 4 /* Linux 6.7 */
#endif

#define LAYERS_DIR "/var/lib/pocketenv/layers"
#define LAYERS_MIN_SIZE (1LL << 30)
#define LOOP_TRIES 16

extern char **environ;

char *pe__layers_dir(void)
{
    const char *env = getenv("POCKETENV_LAYERS_DIR");

    return pe_xstrdup(env && *env ? env : LAYERS_DIR);
}

/* Is dir the root of a mounted btrfs? (The root directory of a btrfs
 * tree is always inode 256, and a mount point has its parent's device
 * only when it is not one.) */
static bool is_mounted(const char *dir)
{
    cleanup_free char *parent = pe_xasprintf("%s/..", dir);
    struct statfs fs;
    struct stat st, pst;

    return statfs(dir, &fs) == 0 && fs.f_type == BTRFS_SUPER_MAGIC && stat(dir, &st) == 0 &&
           st.st_ino == BTRFS_FIRST_FREE_OBJECTID && stat(parent, &pst) == 0 &&
           pst.st_dev != st.st_dev;
}

/* Run argv (found in PATH, or in /usr/sbin and /sbin) and wait; its
 * stderr, bounded, goes into the error. */
static int run_tool(const char *const argv[], pe_err *err)
{
    static const char *const dirs[] = {"/usr/sbin/", "/sbin/", ""};
    posix_spawn_file_actions_t fa;
    char out[512];
    size_t got = 0;
    int pipefd[2], status = 0, rc = ENOENT;
    pid_t pid = -1;

    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return pe_err_sys(err, "pipe");
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    for (size_t i = 0; i < PE_ARRAY_LEN(dirs) && rc == ENOENT; i++) {
        cleanup_free char *path = pe_xasprintf("%s%s", dirs[i], argv[0]);
        rc = posix_spawnp(&pid, path, &fa, NULL, (char *const *)argv, environ);
    }
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    for (ssize_t n; rc == 0 && (n = read(pipefd[0], out + got, sizeof(out) - 1 - got)) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (got += (size_t)n) == sizeof(out) - 1)
            break;
    }
    out[got] = '\0';
    close(pipefd[0]);
    if (rc != 0)
        return pe_err_set(err, PE_EUNSUP, rc, "run %s (install btrfs-progs)", argv[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        out[strcspn(out, "\n")] = '\0';
        return pe_err_set(err, PE_ESYS, 0, "%s failed: %s", argv[0], got ? out : "(no output)");
    }
    return 0;
}

/* Make the image: sparse, as large as the filesystem holding it, so the
 * layers together can never be promised more than that disk; made under
 * a temporary name and renamed, so a half-made image is never used. */
static int make_image(const char *img, pe_err *err)
{
    cleanup_free char *tmp = pe_xasprintf("%s.new", img);
    cleanup_free char *dir = pe_xstrdup(img);
    cleanup_fd int fd = -1;
    struct statvfs vfs;
    long long size;

    *strrchr(dir, '/') = '\0';
    if (statvfs(*dir ? dir : "/", &vfs) < 0)
        return pe_err_sys(err, "statvfs %s", dir);
    size = (long long)vfs.f_blocks * (long long)vfs.f_frsize;
    if (size < LAYERS_MIN_SIZE)
        size = LAYERS_MIN_SIZE;
    unlink(tmp); /* a crashed attempt's */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return pe_err_sys(err, "create %s", tmp);
    if (ftruncate(fd, (off_t)size) < 0) {
        pe_err_sys(err, "size %s", tmp);
        goto fail;
    }
    {
        /* -K: a fresh sparse file has nothing to discard. Single copies
         * of metadata: the image lives on one disk anyway. */
        const char *argv[] = {"mkfs.btrfs", "-q", "-f",     "-K", "-m",
                              "single",     "-d", "single", "-L", "pocketenv-layers",
                              tmp,          NULL};
        if (run_tool(argv, err) < 0)
            goto fail;
    }
    if (fsync(fd) < 0 || rename(tmp, img) < 0) {
        pe_err_sys(err, "install %s", img);
        goto fail;
    }
    pe_log_info("made the layers filesystem %s (%lld GiB, sparse)", img, size >> 30);
    return 0;
fail:
    unlink(tmp);
    return -1;
}

/* The loop device already backing img (mounted in another mount
 * namespace, say): its number, or -1. Two loop devices over one btrfs
 * image would be two writers of one filesystem. */
static int find_loop(const char *img)
{
    DIR *d = opendir("/sys/block");
    struct dirent *de;
    int found = -1;

    if (d == NULL)
        return -1;
    while (found < 0 && (de = readdir(d)) != NULL) {
        cleanup_free char *p = NULL;
        char *text = NULL;
        int n;

        if (sscanf(de->d_name, "loop%d", &n) != 1)
            continue;
        p = pe_xasprintf("/sys/block/%s/loop/backing_file", de->d_name);
        if (pe_fs_read_file(p, 8192, &text, NULL, NULL) < 0)
            continue;
        text[strcspn(text, "\n")] = '\0';
        if (strcmp(text, img) == 0)
            found = n;
        free(text);
    }
    closedir(d);
    return found;
}

/* Attach img to a free loop device that goes away with its last mount
 * (autoclear), named in dev. Returns an fd of the device, to be closed
 * only once it is mounted: closing it before would clear it. */
static int attach_loop(const char *img, char *dev, size_t len, pe_err *err)
{
    cleanup_fd int ctl = -1;
    cleanup_fd int fd = open(img, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    int n = find_loop(img), lfd;

    if (fd < 0)
        return pe_err_sys(err, "open %s", img);
    if (n >= 0) {
        snprintf(dev, len, "/dev/loop%d", n);
        lfd = open(dev, O_RDWR | O_CLOEXEC);
        return lfd >= 0 ? lfd : pe_err_sys(err, "open %s", dev);
    }
    ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return pe_err_sys(err, "open /dev/loop-control");
    for (int i = 0; i < LOOP_TRIES; i++) {
        struct loop_config c;

        n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return pe_err_sys(err, "find a free loop device");
        snprintf(dev, len, "/dev/loop%d", n);
        lfd = open(dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0)
            return pe_err_sys(err, "open %s", dev);
        memset(&c, 0, sizeof(c));
        c.fd = (uint32_t)fd;
        /* Direct I/O: the image's pages are not cached twice (by btrfs
         * and by the filesystem holding the image). */
        c.info.lo_flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        snprintf((char *)c.info.lo_file_name, sizeof(c.info.lo_file_name), "%s", img);
        if (ioctl(lfd, LOOP_CONFIGURE, &c) == 0)
            return lfd;
        if (errno == EINVAL) {
            c.info.lo_flags &= ~(uint32_t)LO_FLAGS_DIRECT_IO;
            if (ioctl(lfd, LOOP_CONFIGURE, &c) == 0)
                return lfd;
        }
        n = errno;
        close(lfd);
        if (n != EBUSY) /* EBUSY: another process took it first */
            return pe_err_set(err, PE_ESYS, n, "attach %s to %s: %s", img, dev, strerror(n));
    }
    return pe_err_set(err, PE_ESYS, EBUSY, "no free loop device for %s", img);
}

static int enable_quota(const char *dir, pe_err *err)
{
    cleanup_fd int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct btrfs_ioctl_quota_ctl_args a;

    if (fd < 0)
        return pe_err_sys(err, "open %s", dir);
    /* Simple quotas account extents to the subvolume that made them, with
     * none of full qgroups' backref walks at every commit; kernels before
     * 6.7 only have full ones. Our subvolumes share no extents, so both
     * count the same. */
    memset(&a, 0, sizeof(a));
    a.cmd = BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA;
    if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &a) == 0)
        return 0;
    a.cmd = BTRFS_QUOTA_CTL_ENABLE;
    if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &a) < 0)
        return pe_err_sys(err, "enable quotas on %s", dir);
    return 0;
}

/* Under the lock: make the image if missing (and may_create), attach and
 * mount it. */
static int mount_locked(const char *dir, bool may_create, pe_err *err)
{
    cleanup_free char *img = pe_xasprintf("%s.img", dir);
    cleanup_fd int loop = -1;
    struct stat st;
    bool fresh = false;
    char dev[64];

    if (pe_fs_mkdir_p(dir, 0711, err) < 0)
        return -1;
    if (lstat(img, &st) < 0) {
        if (errno != ENOENT || !may_create)
            return pe_err_sys(err, "stat %s", img);
        if (make_image(img, err) < 0)
            return -1;
        fresh = true;
    }
    loop = attach_loop(img, dev, sizeof(dev), err);
    if (loop < 0)
        return -1;
    if (mount(dev, dir, "btrfs", MS_NOSUID | MS_NODEV, "discard=sync") < 0)
        return pe_err_sys(err, "mount %s on %s", dev, dir);
    /* Every mount, not only the first: a no-op when quotas are on, and
     * it mends an image whose first mount died before this. */
    if (enable_quota(dir, err) < 0)
        return -1;
    if (fresh && chmod(dir, 0711) < 0)
        return pe_err_sys(err, "chmod %s", dir);
    return 0;
}

int pe__layers_ready(bool may_create, pe_err *err)
{
    cleanup_free char *dir = pe__layers_dir();
    cleanup_free char *lockp = NULL;
    cleanup_fd int lock = -1;

    if (is_mounted(dir))
        return 0;
    lockp = pe_xasprintf("%s.lock", dir);
    if (pe_fs_mkdir_p(dir, 0711, err) < 0)
        goto fail;
    lock = pe__lock_file(lockp, LOCK_EX, err);
    if (lock < 0)
        goto fail;
    if (is_mounted(dir) || mount_locked(dir, may_create, err) == 0)
        return 0;
fail:
    return pe_err_prefix(err, "layers filesystem %s", dir);
}

int pe_runtime_disk_limits(pe_runtime *rt, pe_err *err)
{
    return pe__layers_ready(true, err);
}

bool pe__layers_mounted(void)
{
    cleanup_free char *dir = pe__layers_dir();
    return is_mounted(dir);
}

/* ---- one layer ---- */

static int open_root(pe_err *err)
{
    cleanup_free char *dir = pe__layers_dir();
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return pe_err_sys(err, "open %s", dir);
    return fd;
}

static int set_limit(int fd, int64_t bytes, pe_err *err)
{
    struct btrfs_ioctl_qgroup_limit_args a;

    memset(&a, 0, sizeof(a));
    a.qgroupid = 0; /* the subvolume fd is in */
    a.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
    a.lim.max_rfer = (uint64_t)bytes;
    if (ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, &a) < 0)
        return pe_err_set(err, PE_ESYS, errno, "set the disk limit%s: %s",
                          errno == ENOTCONN ? " (quotas are off on the layers filesystem)" : "",
                          strerror(errno));
    return 0;
}

static int make_inside(int sub, const char *owner, uint32_t base, pe_err *err)
{
    static const char *const dirs[] = {"upper", "work"};

    for (size_t i = 0; i < PE_ARRAY_LEN(dirs); i++)
        if (mkdirat(sub, dirs[i], 0755) < 0 ||
            (base && fchownat(sub, dirs[i], base, base, AT_SYMLINK_NOFOLLOW) < 0))
            return pe_err_sys(err, "create %s", dirs[i]);
    {
        cleanup_fd int fd =
            openat(sub, "owner", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || write(fd, owner, strlen(owner)) != (ssize_t)strlen(owner))
            return pe_err_sys(err, "write owner");
    }
    /* The sandbox's root must pass through on its way to upper/. */
    if (base && fchown(sub, base, base) < 0)
        return pe_err_sys(err, "chown layer");
    return 0;
}

int pe__layer_create(const char *name, int64_t bytes, uint32_t base, const char *owner, pe_err *err)
{
    cleanup_fd int root = open_root(err);
    cleanup_fd int sub = -1;
    struct btrfs_ioctl_vol_args va;

    if (root < 0)
        return -1;
    memset(&va, 0, sizeof(va));
    snprintf(va.name, sizeof(va.name), "%s", name);
    if (ioctl(root, BTRFS_IOC_SUBVOL_CREATE, &va) < 0)
        return pe_err_sys(err, "create layer %s", name);
    sub = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) {
        pe_err_sys(err, "open layer %s", name);
        goto fail;
    }
    if (set_limit(sub, bytes, err) < 0 || make_inside(sub, owner, base, err) < 0)
        goto fail;
    return 0;
fail:
    pe__layer_remove(name, NULL);
    return pe_err_prefix(err, "layer %s", name);
}

int pe__layer_remove(const char *name, pe_err *err)
{
    cleanup_fd int root = -1;
    struct btrfs_ioctl_vol_args va;
    uint64_t transid;

    if (!pe__layers_mounted())
        return pe_err_set(err, PE_ESYS, ENODEV,
                          "remove layer %s: the layers filesystem is "
                          "not mounted",
                          name);
    root = open_root(err);
    if (root < 0)
        return -1;
    memset(&va, 0, sizeof(va));
    snprintf(va.name, sizeof(va.name), "%s", name);
    /* One call, whatever the sandbox left inside: btrfs drops the tree in
     * the background. A sync started now lets its cleaner begin at once,
     * so the space (and the qgroup) goes back soon, not at the next
     * periodic commit. */
    if (ioctl(root, BTRFS_IOC_SNAP_DESTROY, &va) < 0 && errno != ENOENT)
        return pe_err_sys(err, "remove layer %s", name);
    ioctl(root, BTRFS_IOC_START_SYNC, &transid);
    return 0;
}

/* qgroup 0/<subvolume id> of layer `name`: its id. */
static int subvol_id(int root, const char *name, uint64_t *id, pe_err *err)
{
    cleanup_fd int sub = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct btrfs_ioctl_ino_lookup_args a;

    if (sub < 0)
        return pe_err_sys(err, "open layer %s", name);
    memset(&a, 0, sizeof(a));
    a.objectid = BTRFS_FIRST_FREE_OBJECTID;
    if (ioctl(sub, BTRFS_IOC_INO_LOOKUP, &a) < 0)
        return pe_err_sys(err, "look up layer %s", name);
    *id = a.treeid;
    return 0;
}

/* The quota tree's item (0, type, qgroup id) into item (len bytes);
 * 0 if found, 1 if not. The search asks for that one key: a key range is
 * compared as whole (objectid, type, offset) tuples, so a range from the
 * info item to the limit item would also hold every other qgroup's info
 * and limit items in between (other sandboxes', stale ones) and fill the
 * answer before this qgroup's limit item. */
static int qgroup_item(int root, uint8_t type, uint64_t id, void *item, size_t len, pe_err *err)
{
    struct btrfs_ioctl_search_args a;
    struct btrfs_ioctl_search_header h;

    memset(&a, 0, sizeof(a));
    a.key.tree_id = BTRFS_QUOTA_TREE_OBJECTID;
    a.key.min_type = a.key.max_type = type;
    a.key.min_offset = a.key.max_offset = id;
    a.key.max_transid = UINT64_MAX;
    a.key.nr_items = 1;
    if (ioctl(root, BTRFS_IOC_TREE_SEARCH, &a) < 0)
        return pe_err_sys(err, "read the quota tree");
    if (a.key.nr_items < 1)
        return 1;
    memcpy(&h, a.buf, sizeof(h));
    if (h.objectid != 0 || h.type != type || h.offset != id || h.len < len ||
        sizeof(h) + h.len > sizeof(a.buf))
        return 1;
    memcpy(item, a.buf + sizeof(h), len);
    return 0;
}

/* The qgroup's info and limit items, from the quota tree. Usage is what
 * the last transaction commit counted (btrfs commits every 30 s at most). */
int pe__layer_usage(const char *name, int64_t *used, int64_t *limit, pe_err *err)
{
    cleanup_fd int root = -1;
    struct btrfs_qgroup_info_item info;
    struct btrfs_qgroup_limit_item lim;
    uint64_t id = 0;
    int r;

    *used = *limit = -1;
    if (!pe__layers_mounted())
        return pe_err_set(err, PE_ESYS, ENODEV, "the layers filesystem is not mounted");
    root = open_root(err);
    if (root < 0 || subvol_id(root, name, &id, err) < 0)
        return -1;
    if ((r = qgroup_item(root, BTRFS_QGROUP_INFO_KEY, id, &info, sizeof(info), err)) < 0)
        return pe_err_prefix(err, "layer %s", name);
    if (r == 0)
        *used = (int64_t)le64toh(info.rfer);
    if ((r = qgroup_item(root, BTRFS_QGROUP_LIMIT_KEY, id, &lim, sizeof(lim), err)) < 0)
        return pe_err_prefix(err, "layer %s", name);
    if (r == 0 && (le64toh(lim.flags) & BTRFS_QGROUP_LIMIT_MAX_RFER))
        *limit = (int64_t)le64toh(lim.max_rfer);
    return 0;
}

/* ---- snapshots (lib/runtime/snapshot.c) ---- */

int pe__layer_open(const char *name, pe_err *err)
{
    cleanup_fd int root = open_root(err);
    int fd;

    if (root < 0)
        return -1;
    fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return pe_err_set(err, errno == ENOENT ? PE_ENOENT : PE_ESYS, errno, "open layer %s: %s",
                          name, strerror(errno));
    return fd;
}

int pe__layer_snapshot(const char *src, const char *dst, pe_err *err)
{
    cleanup_fd int root = open_root(err);
    cleanup_fd int from = -1;
    struct btrfs_ioctl_vol_args_v2 va;

    if (root < 0)
        return -1;
    from = openat(root, src, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (from < 0)
        return pe_err_sys(err, "open layer %s", src);
    memset(&va, 0, sizeof(va));
    va.fd = from;
    snprintf(va.name, sizeof(va.name), "%s", dst);
    /* The kernel flushes src's dirty data and commits: what the snapshot
     * holds is what src held at this call, written or not. */
    if (ioctl(root, BTRFS_IOC_SNAP_CREATE_V2, &va) < 0)
        return pe_err_sys(err, "snapshot layer %s as %s", src, dst);
    return 0;
}

int pe__layer_set_readonly(const char *name, pe_err *err)
{
    cleanup_fd int fd = pe__layer_open(name, err);
    uint64_t flags = 0;

    if (fd < 0)
        return -1;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
        return pe_err_sys(err, "read the flags of layer %s", name);
    flags |= BTRFS_SUBVOL_RDONLY;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) < 0)
        return pe_err_sys(err, "make layer %s read-only", name);
    return 0;
}

int pe__layer_limit(const char *name, int64_t bytes, pe_err *err)
{
    cleanup_fd int fd = pe__layer_open(name, err);

    if (fd < 0)
        return -1;
    return set_limit(fd, bytes, err);
}

/* ---- crash cleanup ---- */

/* Call fn for every layer whose name starts with prefix. */
int pe__layers_each(const char *prefix, void (*fn)(const char *name, void *arg), void *arg)
{
    cleanup_free char *dir = pe__layers_dir();
    size_t n = strlen(prefix);
    struct dirent *de;
    DIR *d;

    if (!is_mounted(dir) || (d = opendir(dir)) == NULL)
        return 0;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, n) == 0)
            fn(de->d_name, arg);
    closedir(d);
    return 0;
}

char *pe__layer_owner(const char *name)
{
    cleanup_free char *dir = pe__layers_dir();
    cleanup_free char *p = pe_xasprintf("%s/%s/owner", dir, name);
    char *text = NULL;

    if (pe_fs_read_file(p, 8192, &text, NULL, NULL) < 0)
        return NULL;
    return text;
}
