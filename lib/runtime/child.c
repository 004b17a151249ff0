/* The sandbox side of clone: everything between clone and exec.
 *
 * This code runs in the clone child, possibly of a multi-threaded parent,
 * so it only makes system calls and formats into stack buffers: every path
 * and string it needs was prepared before clone (child.h). It is the one
 * place allowed to die: a failure is reported to the parent as
 * {stage, errno, text} over the sync socket, then _exit (STYLE rule 7).
 *
 * Filesystem assembly (see docs/design/runtime.md):
 *   - the parent sends detached mounts (open_tree) of the image (idmapped
 *     to this sandbox's user namespace), of the persistent disk dir and of
 *     each volume; the child never resolves a host path that the sandbox's
 *     ids could not traverse, and never resolves a path inside the image
 *     without RESOLVE_IN_ROOT, so a symlink planted in an image cannot
 *     redirect a mount to the host;
 *   - a private tmpfs holds lower/, upper/, work/ (one-shot) and merged/;
 *   - overlay(lower, upper) becomes the root, with a fresh /proc (masked),
 *     a minimal /dev, a read-only /sys and the volumes, then pivot_root
 *     and a lazy unmount of the old root leave nothing of the host. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include "runtime/child.h"
#include "runtime/internal.h"
#include "runtime/proc-common.h"
#include "runtime/security.h"
#include "runtime/sync.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Per thread: exec's helper and process share their caller's memory
 * (CLONE_VM, spawn.c) and so its thread's TLS, while that thread is
 * suspended; helpers of execs started by other threads have their own. */
static __thread int g_sync_fd = -1;

__attribute__((format(printf, 2, 3))) _Noreturn static void die(int errnum, const char *fmt, ...)
{
    char text[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    pe__sync_send(g_sync_fd, PE_SYNC_ERROR, errnum, 0, text, NULL, 0);
    _exit(1);
}

#define DIE_SYS(...) die(errno, __VA_ARGS__)

static void fdpath(char *buf, size_t len, int fd)
{
    snprintf(buf, len, "/proc/self/fd/%d", fd);
}

static int mount_on_fd(const char *src, int fd, const char *type, unsigned long flags,
                       const char *data)
{
    char p[64];
    fdpath(p, sizeof(p), fd);
    return mount(src, p, type, flags, data);
}

static int open_in_root(int root, const char *path, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    int fd;
    do
        fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
    while (fd < 0 && errno == EAGAIN);
    return fd;
}

static int make_in_root_depth(int root, const char *path, bool dir, int depth);

/* path names an existing dangling symlink: create what it points to,
 * interpreted inside root (as the sandbox itself would resolve it). */
static int make_link_target(int root, const char *path, int parent, const char *name, bool dir,
                            int depth)
{
    char target[4096], next[4096];
    ssize_t n = readlinkat(parent, name, target, sizeof(target) - 1);
    size_t plen;

    if (n <= 0)
        return -ENOENT;
    target[n] = '\0';
    if (target[0] == '/') {
        memcpy(next, target, (size_t)n + 1);
    } else {
        plen = (size_t)(strrchr(path, '/') - path);
        if (plen + 1 + (size_t)n + 1 > sizeof(next))
            return -ENAMETOOLONG;
        memcpy(next, path, plen);
        next[plen] = '/';
        memcpy(next + plen + 1, target, (size_t)n + 1);
    }
    return make_in_root_depth(root, next, dir, depth + 1);
}

/* Return an O_PATH fd for path inside root, creating missing directories
 * (and, when !dir, the final file). Every component is resolved with
 * RESOLVE_IN_ROOT, so symlinks in the image stay inside the image; a
 * dangling symlink gets its target created, inside the image. */
static int make_in_root(int root, const char *path, bool dir)
{
    return make_in_root_depth(root, path, dir, 0);
}

static int make_in_root_depth(int root, const char *path, bool dir, int depth)
{
    char buf[4096];
    size_t len = strlen(path), i;
    int fd;

    if (len >= sizeof(buf))
        return -ENAMETOOLONG;
    if (depth > 8)
        return -ELOOP;
    memcpy(buf, path, len + 1);
    fd = open_in_root(root, buf, O_PATH);
    if (fd >= 0)
        return fd;
    if (errno != ENOENT)
        return -errno;
    for (i = 1; i <= len; i++) {
        char saved = buf[i];
        int parent, r;
        char *name;

        if (saved != '/' && saved != '\0')
            continue;
        buf[i] = '\0';
        fd = open_in_root(root, buf, O_PATH);
        if (fd >= 0) {
            if (saved == '\0')
                return fd;
            close(fd);
            buf[i] = saved;
            continue;
        }
        if (errno != ENOENT)
            return -errno;
        name = strrchr(buf, '/');
        if (name == NULL || name == buf) {
            parent = open_in_root(root, "/", O_PATH | O_DIRECTORY);
        } else {
            *name = '\0';
            parent = open_in_root(root, buf, O_PATH | O_DIRECTORY);
            *name = '/';
        }
        if (parent < 0)
            return -errno;
        name = name ? name + 1 : buf;
        if (saved == '\0' && !dir) {
            r = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (r >= 0)
                close(r);
        } else {
            r = mkdirat(parent, name, 0755);
        }
        if (r < 0 && errno != EEXIST) {
            r = -errno;
            close(parent);
            return r;
        }
        fd = open_in_root(root, buf, O_PATH);
        if (fd < 0 && errno == ENOENT && r < 0)
            fd = make_link_target(root, buf, parent, name, saved == '\0' ? dir : true, depth);
        else if (fd < 0)
            fd = -errno;
        close(parent);
        if (fd < 0)
            return fd;
        if (saved == '\0')
            return fd;
        close(fd);
        buf[i] = saved;
    }
    return -ENOENT;
}

static int move_mount_fd(int from, int to_dir, const char *to_path)
{
    unsigned int flags = MOVE_MOUNT_F_EMPTY_PATH;
    if (to_path == NULL || *to_path == '\0') {
        to_path = "";
        flags |= MOVE_MOUNT_T_EMPTY_PATH;
    }
    return (int)syscall(SYS_move_mount, from, "", to_dir, to_path, flags);
}

/* A private tmpfs for the staging directories, attached somewhere in our
 * own mount namespace (invisible to the host) so mounts can target it. */
static int make_stage(const struct pe_child_ctx *ctx)
{
    static const char *const spots[] = {"/tmp", "/mnt", "/"};
    char size[64];
    int fs, mnt;

    fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
    if (fs < 0)
        DIE_SYS("fsopen tmpfs");
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "mode", "0755", 0) < 0)
        DIE_SYS("tmpfs mode");
    if (ctx->disk_bytes > 0) {
        snprintf(size, sizeof(size), "%lld", (long long)ctx->disk_bytes);
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "size", size, 0) < 0)
            DIE_SYS("tmpfs size %s", size);
        /* Inodes too: empty files take no pages, so size alone does not
         * stop a flood of them, and each costs kernel memory. One per
         * 4 KiB of the limit. */
        snprintf(size, sizeof(size), "%lld",
                 (long long)(ctx->disk_bytes / PE_DISK_BYTES_PER_INODE));
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "nr_inodes", size, 0) < 0)
            DIE_SYS("tmpfs nr_inodes %s", size);
    }
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        DIE_SYS("create tmpfs");
    mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID);
    if (mnt < 0)
        DIE_SYS("fsmount tmpfs");
    close(fs);
    for (size_t i = 0; i < sizeof(spots) / sizeof(spots[0]); i++)
        if (move_mount_fd(mnt, AT_FDCWD, spots[i]) == 0)
            return mnt;
    DIE_SYS("attach staging tmpfs");
}

/* Bind the staging tmpfs's directory name, with the mount attributes
 * attrs added, onto the open mount point at. /dev, /dev/shm and the masked
 * /proc directories are such binds, not tmpfs mounts of their own: every
 * superblock on the host costs every memory cgroup a slot in the kernel's
 * shrinker table, so each one a sandbox mounts makes all sandboxes
 * dearer (bench/README.md, "5,000 idle sandboxes through the API"). */
static int bind_from_stage(int stage, const char *name, uint64_t attrs, int at)
{
    struct mount_attr attr;
    int mnt, r;

    memset(&attr, 0, sizeof(attr));
    attr.attr_set = attrs;
    mnt = (int)syscall(SYS_open_tree, stage, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (mnt < 0)
        return -1;
    r = (int)syscall(SYS_mount_setattr, mnt, "", AT_EMPTY_PATH, &attr, sizeof(attr));
    if (r == 0)
        r = move_mount_fd(mnt, at, NULL);
    if (r < 0) {
        int e = errno;
        close(mnt);
        errno = e;
        return -1;
    }
    close(mnt);
    return 0;
}

/* Attach the image's layers at stage/l0, l1, ... (top first) and write
 * overlayfs's lowerdir= value for them into buf. */
static void attach_lowers(const struct pe_child_ctx *ctx, int stage, const int *fds, char *buf,
                          size_t len)
{
    size_t used = 0;

    for (size_t i = 0; i < ctx->n_lowers; i++) {
        int fd = i == 0 ? fds[PE_FD_LOWER] : fds[PE_FD_BINDS + ctx->n_binds + i - 1];
        char name[32];
        int n;

        snprintf(name, sizeof(name), "l%zu", i);
        if (mkdirat(stage, name, 0755) < 0)
            DIE_SYS("mkdir in staging tmpfs");
        if (move_mount_fd(fd, stage, name) < 0)
            DIE_SYS("attach image layer %zu", i);
        n = snprintf(buf + used, len - used, "%s/proc/self/fd/%d/%s", i ? ":" : "", stage, name);
        if (n < 0 || (size_t)n >= len - used)
            die(ENAMETOOLONG, "overlay options");
        used += (size_t)n;
    }
}

static int mount_root(const struct pe_child_ctx *ctx, int stage, const int *fds)
{
    char opts[1024];
    char lower[512];
    char target[64];
    int merged;

    if (mkdirat(stage, "merged", 0755) < 0)
        DIE_SYS("mkdir in staging tmpfs");
    attach_lowers(ctx, stage, fds, lower, sizeof(lower));
    if (ctx->has_disk) {
        if (mkdirat(stage, "disk", 0755) < 0)
            DIE_SYS("mkdir disk");
        if (move_mount_fd(fds[PE_FD_DISK], stage, "disk") < 0)
            DIE_SYS("attach sandbox disk");
        snprintf(opts, sizeof(opts),
                 "lowerdir=%s,upperdir=/proc/self/fd/%d/disk/upper,"
                 "workdir=/proc/self/fd/%d/disk/work%s",
                 lower, stage, stage, ctx->userns ? ",userxattr" : "");
    } else {
        if (mkdirat(stage, "upper", 0755) < 0 || mkdirat(stage, "work", 0755) < 0)
            DIE_SYS("mkdir upper");
        snprintf(opts, sizeof(opts),
                 "lowerdir=%s,upperdir=/proc/self/fd/%d/upper,"
                 "workdir=/proc/self/fd/%d/work%s",
                 lower, stage, stage, ctx->userns ? ",userxattr" : "");
    }
    snprintf(target, sizeof(target), "/proc/self/fd/%d/merged", stage);
    if (mount("overlay", target, "overlay", MS_NODEV, opts) < 0)
        DIE_SYS("mount overlay root");
    merged = openat(stage, "merged", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (merged < 0)
        DIE_SYS("open overlay root");
    return merged;
}

/* Paths of /proc a sandbox must not read (host kernel memory, keys,
 * timers) or write (sysctls, sysrq), after Docker's masked and read-only
 * path lists. Missing entries are skipped. */
static void setup_proc(int root, int stage)
{
    static const char *const masked_files[] = {
        "kcore",         "keys",     "timer_list",    "sched_debug",
        "latency_stats", "kallsyms", "sysrq-trigger", "config.gz",
    };
    static const char *const masked_dirs[] = {"acpi", "scsi", "asound", "driver"};
    static const char *const readonly[] = {"sys", "irq", "bus", "fs"};
    int at, proc;

    at = make_in_root(root, "/proc", true);
    if (at < 0)
        die(-at, "create /proc");
    if (mount_on_fd("proc", at, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        DIE_SYS("mount /proc");
    close(at);
    proc = open_in_root(root, "/proc", O_PATH | O_DIRECTORY);
    if (proc < 0)
        DIE_SYS("open /proc");
    for (size_t i = 0; i < sizeof(masked_files) / sizeof(masked_files[0]); i++) {
        int fd = openat(proc, masked_files[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (mount_on_fd("/dev/null", fd, NULL, MS_BIND, NULL) < 0)
            DIE_SYS("mask /proc/%s", masked_files[i]);
        close(fd);
    }
    /* An empty read-only directory of the staging tmpfs over each. */
    if (mkdirat(stage, "empty", 0555) < 0)
        DIE_SYS("mkdir in staging tmpfs");
    for (size_t i = 0; i < sizeof(masked_dirs) / sizeof(masked_dirs[0]); i++) {
        int fd = openat(proc, masked_dirs[i], O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (bind_from_stage(stage, "empty", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC, fd) < 0)
            DIE_SYS("mask /proc/%s", masked_dirs[i]);
        close(fd);
    }
    for (size_t i = 0; i < sizeof(readonly) / sizeof(readonly[0]); i++) {
        char p[64];
        int fd = openat(proc, readonly[i], O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;
        fdpath(p, sizeof(p), fd);
        if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0)
            DIE_SYS("bind /proc/%s", readonly[i]);
        close(fd);
        fd = openat(proc, readonly[i], O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 ||
            mount_on_fd(NULL, fd, NULL,
                        MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        NULL) < 0)
            DIE_SYS("make /proc/%s read-only", readonly[i]);
        close(fd);
    }
    close(proc);
}

static void setup_dev(int root, int stage)
{
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    static const char *const links[][2] = {
        {"ptmx", "pts/ptmx"},          {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
    };
    int at, dev, fd;

    /* The device nodes are binds of the host's, which keep that mount's
     * flags; the directory itself takes no device nodes (nodev, from the
     * staging tmpfs). Its space, /dev/shm's included, is bounded by the
     * sandbox's disk size, as the staging tmpfs is. */
    at = make_in_root(root, "/dev", true);
    if (at < 0)
        die(-at, "create /dev");
    if (mkdirat(stage, "dev", 0755) < 0 || bind_from_stage(stage, "dev", MOUNT_ATTR_NOEXEC, at) < 0)
        DIE_SYS("mount /dev");
    close(at);
    dev = open_in_root(root, "/dev", O_PATH | O_DIRECTORY);
    if (dev < 0)
        DIE_SYS("open /dev");
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]) + 1; i++) {
        const char *name = i < sizeof(nodes) / sizeof(nodes[0]) ? nodes[i] : "console";
        char src[32];
        snprintf(src, sizeof(src), "/dev/%s", i < sizeof(nodes) / sizeof(nodes[0]) ? name : "null");
        fd = openat(dev, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0)
            DIE_SYS("create /dev/%s", name);
        close(fd);
        fd = openat(dev, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || mount_on_fd(src, fd, NULL, MS_BIND, NULL) < 0)
            DIE_SYS("bind /dev/%s", name);
        close(fd);
    }
    if (mkdirat(dev, "pts", 0755) < 0 || mkdirat(dev, "shm", 01777) < 0 ||
        fchmodat(dev, "shm", 01777, 0) < 0 || mkdirat(dev, "mqueue", 0755) < 0)
        DIE_SYS("mkdir in /dev");
    fd = openat(dev, "pts", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || mount_on_fd("devpts", fd, "devpts", MS_NOSUID | MS_NOEXEC,
                              "newinstance,ptmxmode=0666,mode=0620,gid=5") < 0)
        DIE_SYS("mount /dev/pts");
    close(fd);
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
        if (symlinkat(links[i][1], dev, links[i][0]) < 0)
            DIE_SYS("symlink /dev/%s", links[i][0]);
    close(dev);
}

static void setup_sys(int root)
{
    int at = make_in_root(root, "/sys", true);
    const unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;

    if (at < 0)
        die(-at, "create /sys");
    if (mount_on_fd("sysfs", at, "sysfs", ro, NULL) < 0) {
        /* No sysfs of our own (e.g. a network namespace we do not own):
         * fall back to a read-only view of the host's. */
        if (mount_on_fd("/sys", at, NULL, MS_BIND | MS_REC, NULL) < 0)
            DIE_SYS("mount /sys");
        close(at);
        at = open_in_root(root, "/sys", O_PATH | O_DIRECTORY);
        if (at < 0 || mount_on_fd(NULL, at, NULL, MS_BIND | MS_REMOUNT | ro, NULL) < 0)
            DIE_SYS("make /sys read-only");
    }
    close(at);
}

static void setup_binds(const struct pe_child_ctx *ctx, int root, const int *fds)
{
    for (size_t i = 0; i < ctx->n_binds; i++) {
        int at = make_in_root(root, ctx->bind_dests[i], ctx->bind_is_dir[i]);
        if (at < 0)
            die(-at, "create mount point %s", ctx->bind_dests[i]);
        if (move_mount_fd(fds[PE_FD_BINDS + i], at, NULL) < 0)
            DIE_SYS("mount volume on %s", ctx->bind_dests[i]);
        close(at);
    }
}

static void loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (s < 0)
        DIE_SYS("socket");
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        DIE_SYS("get lo flags");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        DIE_SYS("bring lo up");
    close(s);
}

static void set_inet(struct sockaddr *sa, uint32_t addr_be)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = addr_be;
    memcpy(sa, &sin, sizeof(sin));
}

/* --net nat: the runtime created our end of the veth as eth0 in this
 * namespace (down, no address); configure it as root of the namespace's
 * owning user namespace. ioctls: no allocation, no netlink parsing here. */
static void eth0_up(const struct pe_child_ctx *ctx)
{
    struct ifreq ifr;
    struct rtentry rt;
    uint32_t mask = ctx->net_prefix ? htonl(~0u << (32 - ctx->net_prefix)) : 0;
    int s;

    if (ctx->net_addr == 0)
        return;
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        DIE_SYS("socket");
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "eth0", 5);
    set_inet(&ifr.ifr_addr, ctx->net_addr);
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
        DIE_SYS("set eth0 address");
    set_inet(&ifr.ifr_netmask, mask);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
        DIE_SYS("set eth0 netmask");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        DIE_SYS("get eth0 flags");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        DIE_SYS("bring eth0 up");
    memset(&rt, 0, sizeof(rt));
    set_inet(&rt.rt_dst, 0);
    set_inet(&rt.rt_genmask, 0);
    set_inet(&rt.rt_gateway, ctx->net_gateway);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    if (ioctl(s, SIOCADDRT, &rt) < 0)
        DIE_SYS("add default route");
    close(s);
}

static void enter_root(int merged)
{
    if (fchdir(merged) < 0)
        DIE_SYS("chdir to new root");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        DIE_SYS("pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        DIE_SYS("detach old root");
    if (chdir("/") < 0)
        DIE_SYS("chdir /");
}

static void chdir_workdir(const char *dir)
{
    char buf[4096];
    size_t len;

    if (dir == NULL || chdir(dir) == 0)
        return;
    len = strlen(dir);
    if (errno != ENOENT || len >= sizeof(buf))
        DIE_SYS("working directory %s", dir);
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            DIE_SYS("create working directory %s", buf);
        buf[i] = saved;
    }
    if (chdir(dir) < 0)
        DIE_SYS("working directory %s", dir);
}

/* Text in a sandbox is UTF-8 (its locale, the terminals' encoding): with
 * IUTF8 the line discipline's erase in canonical mode (backspace at a
 * `read` or `cat`, a password prompt) removes a whole character; without
 * it, it removes the last byte only and leaves a broken character behind.
 * tcgetattr and tcsetattr are ioctls: async-signal-safe. */
static void set_iutf8(int fd)
{
    struct termios t;

    if (tcgetattr(fd, &t) < 0)
        DIE_SYS("get terminal attributes");
    t.c_iflag |= IUTF8;
    if (tcsetattr(fd, TCSANOW, &t) < 0)
        DIE_SYS("set terminal attributes");
}

/* Open a PTY in the sandbox's own devpts, hand the master to the parent
 * and make the peer our stdio. */
static void setup_tty(bool make_ctty, const struct winsize *ws)
{
    int master = pe__pty_open_master(), peer;

    if (master < 0)
        die(-master, "open /dev/ptmx");
    peer = pe__pty_open_peer(master);
    if (peer < 0)
        die(-peer, "open pty peer");
    /* The size is set before the command runs, so its first look at the
     * terminal (stty size, a full-screen program) is already right. */
    if (ws->ws_row > 0 && ws->ws_col > 0 && ioctl(master, TIOCSWINSZ, ws) < 0)
        DIE_SYS("set window size");
    set_iutf8(peer);
    if (pe__sync_send(g_sync_fd, PE_SYNC_PTY, 0, 0, NULL, &master, 1) < 0)
        DIE_SYS("send pty");
    close(master);
    if (make_ctty) {
        setsid();
        if (ioctl(peer, TIOCSCTTY, 0) < 0)
            DIE_SYS("set controlling terminal");
    }
    for (int i = 0; i < 3; i++)
        if (dup2(peer, i) < 0)
            DIE_SYS("dup2 pty");
    if (peer > 2)
        close(peer);
}

/* A one-shot sandbox dies with the command that runs it. The signal is
 * armed after the last change of our ids (a change disarms it), and a
 * parent that died before that shows as a hang-up on the sync socket. */
static void die_with_parent(int sync_fd)
{
    struct pollfd p = {.fd = sync_fd, .events = POLLIN};

    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        DIE_SYS("parent death signal");
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)))
        _exit(1);
}

/* Raw system calls for ids and groups here: glibc's setresuid/setgroups
 * wrappers apply the change to every thread of the process (a signal to
 * each, then a wait for each). We were cloned from a possibly
 * multi-threaded parent (the daemon's workers), so glibc's thread list
 * names threads that do not exist in this process, and that wait hangs
 * forever. The kernel calls act on this thread, all this process has. */
static int set_resgid(gid_t r, gid_t e, gid_t s)
{
    return (int)syscall(SYS_setresgid, r, e, s);
}

static int set_resuid(uid_t r, uid_t e, uid_t s)
{
    return (int)syscall(SYS_setresuid, r, e, s);
}

static int drop_groups(void)
{
    return (int)syscall(SYS_setgroups, 0, NULL);
}

static void become_root_in_userns(void)
{
    if (set_resgid(0, 0, 0) < 0 || set_resuid(0, 0, 0) < 0)
        DIE_SYS("become root in the user namespace");
}

/* Last steps before exec, common to sandbox start and exec: capabilities,
 * no_new_privs and the seccomp filter, in that order (the filter denies
 * what the steps before need). */
static void lock_down(const struct sock_fprog *prog, uint64_t caps, long uid, long gid)
{
    sigset_t none;
    int r;

    /* The signal mask and ignored signals survive exec. The daemon starts
     * sandboxes from worker threads that block every signal, and ignores
     * SIGPIPE; a daemon or CLI started as a background job of a shell
     * ignores SIGINT and SIGQUIT (so Ctrl-C in a sandbox's terminal did
     * nothing). A sandbox process starts with every signal at its default. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    r = pe_caps_apply(caps, 0);
    if (r < 0)
        die(-r, "drop capabilities");
    if (gid >= 0 && set_resgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0)
        DIE_SYS("setgid %ld", gid);
    if (uid >= 0 && set_resuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0)
        DIE_SYS("setuid %ld", uid);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        DIE_SYS("no_new_privs");
    r = pe_seccomp_load(prog);
    if (r < 0)
        die(-r, "load seccomp filter");
}

/* RLIMIT_NOFILE of the sandbox's processes, once every fd the setup
 * needed is placed (the mounts arrive as SCM_RIGHTS, counted against the
 * caller's limit). Lowering needs no privilege; where the limit is above
 * the caller's hard one, the parent has raised ours first (spawn.c). */
static void set_nofile(uint64_t soft, uint64_t hard)
{
    struct rlimit r = {.rlim_cur = soft, .rlim_max = hard};

    if (hard > 0 && setrlimit(RLIMIT_NOFILE, &r) < 0)
        DIE_SYS("open-files limit %llu:%llu", (unsigned long long)soft, (unsigned long long)hard);
}

static void raise_nofile_hard(uint64_t hard)
{
    struct rlimit r;

    if (hard == 0 || getrlimit(RLIMIT_NOFILE, &r) < 0 || hard <= r.rlim_max)
        return;
    r.rlim_max = hard;
    if (setrlimit(RLIMIT_NOFILE, &r) < 0)
        DIE_SYS("raise the open-files limit to %llu", (unsigned long long)hard);
}

_Noreturn void pe__child_main(const struct pe_child_ctx *ctx)
{
    pe_sync_msg m;
    int fds[PE_SYNC_MAX_FDS];
    int nfds = 0, stage, merged, r, init_fd, sync_fd, spawn_fd;

    g_sync_fd = ctx->sync_fd;
    r = pe__sync_recv(ctx->sync_fd, &m, fds, (int)(sizeof(fds) / sizeof(fds[0])), &nfds);
    if (r <= 0 || m.type != PE_SYNC_GO)
        _exit(1);
    if (nfds != PE_FD_BINDS + (int)ctx->n_binds + (int)ctx->n_lowers - 1)
        die(EINVAL, "expected %zu mounts from the runtime, got %d",
            ctx->n_binds + ctx->n_lowers + 1, nfds);
    /* Into the sandbox's cgroups first, before the cgroup namespace is
     * made (it is rooted where we are then) and before anything is
     * charged; the files were opened by the runtime (spawn.c). */
    for (int i = 0; i < ctx->n_cgroup_fds; i++)
        if (write(ctx->cgroup_fds[i], "0", 1) != 1)
            DIE_SYS("join the sandbox's cgroup");
    if (ctx->userns)
        become_root_in_userns();
    if (drop_groups() < 0)
        DIE_SYS("drop supplementary groups");
    if (!ctx->persist)
        die_with_parent(ctx->sync_fd);
    if (unshare(CLONE_NEWCGROUP) < 0)
        DIE_SYS("new cgroup namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        DIE_SYS("make mounts private");

    stage = make_stage(ctx);
    merged = mount_root(ctx, stage, fds);
    setup_proc(merged, stage);
    setup_dev(merged, stage);
    setup_sys(merged);
    setup_binds(ctx, merged, fds);
    if (ctx->hostname && sethostname(ctx->hostname, strlen(ctx->hostname)) < 0)
        DIE_SYS("set hostname");
    loopback_up();
    eth0_up(ctx);
    enter_root(merged);
    chdir_workdir(ctx->workdir);

    if (ctx->tty) {
        setup_tty(false, &ctx->winsize);
    } else {
        for (int i = 0; i < 3; i++)
            if (ctx->stdio[i] >= 0 && dup2(ctx->stdio[i], i) < 0)
                DIE_SYS("dup2 stdio");
    }
    /* init finds the sync socket at fd 3 and the spawn socket, if any, at
     * fd 4; nothing else crosses exec. */
    init_fd = fcntl(ctx->init_fd, F_DUPFD_CLOEXEC, 10);
    sync_fd = fcntl(ctx->sync_fd, F_DUPFD_CLOEXEC, 10);
    spawn_fd = ctx->spawn_fd >= 0 ? fcntl(ctx->spawn_fd, F_DUPFD_CLOEXEC, 10) : -1;
    if (init_fd < 0 || sync_fd < 0 || (ctx->spawn_fd >= 0 && spawn_fd < 0))
        DIE_SYS("dup");
    g_sync_fd = sync_fd;
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        DIE_SYS("close_range");
    if (dup2(sync_fd, 3) < 0)
        DIE_SYS("dup2 sync fd");
    if (spawn_fd >= 0 && dup2(spawn_fd, 4) < 0)
        DIE_SYS("dup2 spawn fd");
    set_nofile(ctx->nofile_soft, ctx->nofile_hard);
    lock_down(ctx->seccomp, ctx->caps, -1, -1);
    syscall(SYS_execveat, init_fd, "", ctx->init_argv, ctx->envp, AT_EMPTY_PATH);
    DIE_SYS("exec pocketenv-init");
}

/* ---- exec into a running sandbox ----
 *
 * Both functions below run in their caller's memory (CLONE_VM|CLONE_VFORK:
 * the caller's thread is suspended until they exec or exit), like the
 * child of posix_spawn. They change nothing outside their own stack and
 * this thread's TLS, allocate nothing and make system calls directly
 * where glibc would act on the whole process (set*id, setgroups). */

static int exec_process_main(void *arg)
{
    const struct pe_exec_ctx *ctx = arg;

    if (ctx->userns)
        become_root_in_userns();
    if (drop_groups() < 0)
        DIE_SYS("drop supplementary groups");
    chdir_workdir(ctx->workdir);
    if (ctx->tty) {
        setup_tty(true, &ctx->winsize);
    } else {
        setsid();
        for (int i = 0; i < 3; i++)
            if (ctx->stdio[i] >= 0 && dup2(ctx->stdio[i], i) < 0)
                DIE_SYS("dup2 stdio");
    }
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        DIE_SYS("close_range");
    set_nofile(ctx->nofile_soft, ctx->nofile_hard);
    lock_down(ctx->seccomp, ctx->caps, ctx->uid, ctx->gid);
    pe__exec_path(ctx->argv, ctx->envp);
    pe__sync_send(g_sync_fd, PE_SYNC_EXEC_FAILED, errno, 0, ctx->argv[0], NULL, 0);
    _exit(127);
}

int pe__exec_helper_main(void *arg)
{
    const struct pe_exec_ctx *ctx = arg;
    int ns;
    pid_t pid;

    g_sync_fd = ctx->sync_fd;
    /* Into the sandbox's cgroup first (what we start inherits it): "0" is
     * the writer, the caller opened the files. */
    for (int i = 0; i < ctx->n_cgroup_fds; i++)
        if (write(ctx->cgroup_fds[i], "0", 1) != 1)
            DIE_SYS("join the sandbox's cgroup");
    /* Still host root here: raise the hard open-files limit if the
     * process's is above ours (in the sandbox's user namespace it could
     * only lower it). */
    raise_nofile_hard(ctx->nofile_hard);
    ns = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP;
    if (ctx->userns)
        ns |= CLONE_NEWUSER;
    if (setns(ctx->target_pidfd, ns) < 0)
        DIE_SYS("enter sandbox namespaces");
    /* setns(CLONE_NEWPID) applies to children only: the process is cloned
     * from here, as our caller's child (CLONE_PARENT; its exit signal is
     * ours, SIGCHLD), on its own stack. CLONE_VFORK: we resume once it has
     * exec'd or died, so the pid we send is always of a process that no
     * longer runs in the caller's memory. (clone3 refuses CLONE_PARENT
     * with an exit signal; clone takes ours.) */
    pid = clone(exec_process_main, ctx->process_stack, CLONE_VM | CLONE_VFORK | CLONE_PARENT,
                (void *)ctx);
    if (pid < 0)
        DIE_SYS("start the process in the sandbox");
    /* Last message: the caller reaps the process, and this helper, now.
     * The raw exit: _exit is noreturn, and a sanitizer's hook before a
     * noreturn call looks at the stack, which is not one it knows here. */
    pe__sync_send(ctx->sync_fd, PE_SYNC_PID, 0, (int)pid, NULL, NULL, 0);
    syscall(SYS_exit_group, 0);
    return 0;
}
