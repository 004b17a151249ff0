/* Image builders: make a root filesystem inside a staging directory
 * (image.c) that is renamed into place when the builder succeeds.
 *
 *   busybox  Debian's busybox-static copied in, one symlink per applet,
 *            a minimal /etc. Needs no network, takes milliseconds.
 *   debian   mmdebstrap --variant=minbase bookworm plus a few packages.
 *            Needs the package archive; its progress goes to our stderr.
 *
 * Helpers run with posix_spawnp from an argv array (no shell), stdin on
 * /dev/null, default signal dispositions and an empty signal mask whatever
 * the caller's event loop blocked. Each is waited for by pid, so a daemon
 * that reaps children must not waitpid(-1) while a build runs.
 *
 * Ownership: as root everything is chowned to 0:0 (a setgid DATA directory
 * must not leak its group into an image). Unprivileged, the tree stays
 * owned by the caller, which a rootless sandbox maps to its root. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image-internal.h"
#include "image/image.h"

extern char **environ;

#define BUSYBOX_PATH "/bin/busybox"
#define APPLET_LIST_MAX (256 * 1024)
#define DEBIAN_SUITE "bookworm"
#define DEBIAN_PACKAGES                                                                            \
    "bash,coreutils,ca-certificates,curl,git,procps,iproute2,less,locales,iputils-ping"

/* ---- small fd-relative file helpers ----------------------------------- */

static int chown_root(int dfd, const char *path, pe_err *err)
{
    if (geteuid() != 0)
        return 0;
    if (fchownat(dfd, path, 0, 0, AT_SYMLINK_NOFOLLOW) < 0)
        return pe_err_sys(err, "chown %s", path);
    return 0;
}

static int mkdir_at(int dfd, const char *path, mode_t mode, pe_err *err)
{
    if (mkdirat(dfd, path, mode) < 0 && errno != EEXIST)
        return pe_err_sys(err, "mkdir %s", path);
    /* mkdir applied the umask; tmp needs its sticky bit anyway. */
    if (fchmodat(dfd, path, mode, 0) < 0)
        return pe_err_sys(err, "chmod %s", path);
    return chown_root(dfd, path, err);
}

/* Create the missing parents of path (relative to dfd), mode 0755. */
static int mkdir_parents_at(int dfd, const char *path, pe_err *err)
{
    cleanup_free char *p = pe_xstrdup(path);

    for (char *s = strchr(p, '/'); s != NULL; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir_at(dfd, p, 0755, err) < 0)
            return -1;
        *s = '/';
    }
    return 0;
}

/* Create a small file at dfd/path, never through a symlink. An existing
 * entry (even a symlink) is left as it is. */
static int write_file_at(int dfd, const char *path, const char *content, mode_t mode, pe_err *err)
{
    cleanup_fd int fd =
        openat(dfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);

    if (fd < 0 && errno == EEXIST)
        return 0;
    if (fd < 0)
        return pe_err_sys(err, "create %s", path);
    if (pe_fs_write_all(fd, content, strlen(content)) < 0 || fchmod(fd, mode) < 0)
        return pe_err_sys(err, "write %s", path);
    if (geteuid() == 0 && fchown(fd, 0, 0) < 0)
        return pe_err_sys(err, "chown %s", path);
    return 0;
}

/* ---- running helpers -------------------------------------------------- */

/* Start argv (PATH lookup) with stdin on /dev/null and stdout on out_fd.
 * glibc's posix_spawn reports a failed exec as its return value. */
static int spawn(const char *const argv[], int out_fd, const char *hint, pid_t *pid, pe_err *err)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int r;

    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    r = posix_spawnp(pid, argv[0], &fa, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r == ENOENT)
        return pe_err_set(err, PE_EUNSUP, 0, "%s not found: %s", argv[0], hint);
    if (r != 0)
        return pe_err_set(err, PE_ESYS, r, "run %s", argv[0]);
    return 0;
}

static int wait_exit(pid_t pid, const char *what, pe_err *err)
{
    int status = 0;

    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return pe_err_sys(err, "wait for %s", what);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        return pe_err_set(err, PE_ESYS, 0, "%s failed with exit status %d", what,
                          WEXITSTATUS(status));
    return pe_err_set(err, PE_ESYS, 0, "%s was killed by signal %d", what,
                      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Run argv and collect at most max bytes of its stdout. */
static int run_capture(const char *const argv[], size_t max, char **out, size_t *out_len,
                       pe_err *err)
{
    cleanup_free char *buf = pe_xmalloc(max);
    cleanup_fd int rd = -1;
    cleanup_fd int wr = -1;
    size_t len = 0;
    pid_t pid = -1;
    int fds[2];
    int ret = 0;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return pe_err_sys(err, "pipe");
    rd = fds[0];
    wr = fds[1];
    if (spawn(argv, wr, "install it", &pid, err) < 0)
        return -1;
    close(pe_steal_fd(&wr));
    for (;;) {
        ssize_t r = read(rd, buf + len, max - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0)
                ret = pe_err_sys(err, "read output of %s", argv[0]);
            break;
        }
        len += (size_t)r;
        if (len == max) {
            ret = pe_err_set(err, PE_ESYS, E2BIG, "output of %s", argv[0]);
            break;
        }
    }
    close(pe_steal_fd(&rd)); /* a child still writing gets EPIPE, then exits */
    if (wait_exit(pid, argv[0], ret < 0 ? NULL : err) < 0 && ret == 0)
        ret = -1;
    if (ret == 0) {
        *out = pe_steal_ptr(&buf);
        *out_len = len;
    }
    return ret;
}

/* ---- busybox ---------------------------------------------------------- */

/* A dynamically linked busybox would need the host's libc inside the
 * image: refuse it (a PT_INTERP program header names the loader). */
static int check_static(int fd, pe_err *err)
{
    unsigned char ident[EI_NIDENT];
    uint64_t phoff;
    uint16_t phentsize, phnum;

    if (pread(fd, ident, sizeof(ident), 0) != (ssize_t)sizeof(ident) ||
        memcmp(ident, ELFMAG, SELFMAG) != 0)
        goto bad;
    if (ident[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh))
            goto bad;
        phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
    } else if (ident[EI_CLASS] == ELFCLASS32) {
        Elf32_Ehdr eh;
        if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh))
            goto bad;
        phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
    } else {
        goto bad;
    }
    for (uint16_t i = 0; i < phnum; i++) {
        uint32_t type; /* first field of Elf32_Phdr and Elf64_Phdr alike */
        if (pread(fd, &type, sizeof(type), (off_t)(phoff + (uint64_t)i * phentsize)) !=
            (ssize_t)sizeof(type))
            goto bad;
        if (type == PT_INTERP)
            return pe_err_set(err, PE_EUNSUP, 0,
                              BUSYBOX_PATH " is dynamically linked: install busybox-static");
    }
    return 0;
bad:
    return pe_err_set(err, PE_EUNSUP, 0,
                      BUSYBOX_PATH " is not an ELF executable: install busybox-static");
}

static int copy_busybox(int src, int rootfd, pe_err *err)
{
    cleanup_free char *buf = pe_xmalloc(64 * 1024);
    cleanup_fd int dst =
        openat(rootfd, "bin/busybox", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755);

    if (dst < 0)
        return pe_err_sys(err, "create bin/busybox");
    for (;;) {
        ssize_t r = read(src, buf, 64 * 1024);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return pe_err_sys(err, "read " BUSYBOX_PATH);
        if (r == 0)
            break;
        if (pe_fs_write_all(dst, buf, (size_t)r) < 0)
            return pe_err_sys(err, "write bin/busybox");
    }
    if (fchmod(dst, 0755) < 0)
        return pe_err_sys(err, "chmod bin/busybox");
    if (geteuid() == 0 && fchown(dst, 0, 0) < 0)
        return pe_err_sys(err, "chown bin/busybox");
    return 0;
}

static int link_applet(int rootfd, const char *line, pe_err *err)
{
    cleanup_free char *rel = NULL;

    if (pe__image_member_path(line, &rel) < 0 || *rel == '\0')
        return pe_err_set(err, PE_ESYS, 0, "unexpected applet path \"%s\"", line);
    if (strcmp(rel, "bin/busybox") == 0)
        return 0;
    if (symlinkat(BUSYBOX_PATH, rootfd, rel) == 0)
        return chown_root(rootfd, rel, err);
    if (errno == EEXIST) /* listed twice */
        return 0;
    if (errno != ENOENT)
        return pe_err_sys(err, "symlink %s", rel);
    if (mkdir_parents_at(rootfd, rel, err) < 0)
        return -1;
    if (symlinkat(BUSYBOX_PATH, rootfd, rel) < 0)
        return pe_err_sys(err, "symlink %s", rel);
    return chown_root(rootfd, rel, err);
}

/* One symlink per applet, from `busybox --list-full` ("usr/bin/awk"...). */
static int link_applets(int rootfd, pe_err *err)
{
    static const char *const argv[] = {BUSYBOX_PATH, "--list-full", NULL};
    cleanup_free char *out = NULL;
    size_t len = 0, n = 0;

    if (run_capture(argv, APPLET_LIST_MAX, &out, &len, err) < 0)
        return -1;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(out + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - out) : len;
        cleanup_free char *line = NULL;

        if (end > i) {
            line = pe_xasprintf("%.*s", (int)(end - i), out + i);
            if (link_applet(rootfd, line, err) < 0)
                return -1;
            n++;
        }
        i = end + 1;
    }
    if (n == 0)
        return pe_err_set(err, PE_ESYS, 0, BUSYBOX_PATH " --list-full listed no applets");
    return 0;
}

static const struct {
    const char *path;
    mode_t mode;
} busybox_dirs[] = {
    {"bin", 0755},  {"sbin", 0755}, {"usr", 0755},  {"usr/bin", 0755}, {"usr/sbin", 0755},
    {"etc", 0755},  {"dev", 0755},  {"proc", 0555}, {"sys", 0555},     {"tmp", 01777},
    {"root", 0700}, {"home", 0755}, {"run", 0755},  {"var", 0755},     {"var/tmp", 01777},
};

/* Written into every image. Files a Debian image already has are kept,
 * except the host-specific ones: mmdebstrap copies the build host's
 * resolv.conf and hostname in (for debootstrap compatibility), and an
 * image must not carry them. The runtime binds its own over these, which
 * needs them to exist. */
static const struct {
    const char *path;
    const char *content;
    int host_specific;
} etc_files[] = {
    {"etc/passwd",
     "root:x:0:0:root:/root:/bin/sh\n"
     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
     0},
    {"etc/group", "root:x:0:\nnogroup:x:65534:\n", 0},
    {"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0},
    {"etc/hostname", "pocketenv\n", 1},
    {"etc/resolv.conf", "", 1},
};

static int write_etc(int rootfd, pe_err *err)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(etc_files); i++) {
        const char *path = etc_files[i].path;
        if (etc_files[i].host_specific && unlinkat(rootfd, path, 0) < 0 && errno != ENOENT)
            return pe_err_sys(err, "remove %s", path);
        if (write_file_at(rootfd, path, etc_files[i].content, 0644, err) < 0)
            return -1;
    }
    return 0;
}

static int build_busybox(const char *name, const char *rootfs, const char *mirror, char **source,
                         pe_err *err)
{
    cleanup_fd int src = open(BUSYBOX_PATH, O_RDONLY | O_CLOEXEC);
    cleanup_fd int rootfd = -1;

    if (src < 0 && errno == ENOENT)
        return pe_err_set(err, PE_EUNSUP, 0,
                          "the busybox image needs " BUSYBOX_PATH ": install busybox-static");
    if (src < 0)
        return pe_err_sys(err, "open " BUSYBOX_PATH);
    if (check_static(src, err) < 0)
        return -1;
    if (mirror != NULL)
        pe_log_debug("image %s: the busybox builder has no use for mirror %s", name, mirror);
    rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        return pe_err_sys(err, "open %s", rootfs);
    for (size_t i = 0; i < PE_ARRAY_LEN(busybox_dirs); i++)
        if (mkdir_at(rootfd, busybox_dirs[i].path, busybox_dirs[i].mode, err) < 0)
            return -1;
    if (copy_busybox(src, rootfd, err) < 0 || link_applets(rootfd, err) < 0 ||
        write_etc(rootfd, err) < 0 || chown_root(rootfd, ".", err) < 0)
        return -1;
    *source = pe_xstrdup("busybox (" BUSYBOX_PATH ")");
    return 0;
}

/* ---- debian ----------------------------------------------------------- */

/* The mirror may come from an API caller and lands in mmdebstrap's argv,
 * run as root: only a URL (mmdebstrap would read an existing file as a
 * sources.list, take "-" as stdin, and a space or line break would add
 * components or lines to the sources it writes). */
static int mirror_valid(const char *mirror)
{
    if (strncmp(mirror, "http://", 7) != 0 && strncmp(mirror, "https://", 8) != 0 &&
        strncmp(mirror, "file:///", 8) != 0)
        return 0;
    for (const char *p = mirror; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

static int build_debian(const char *name, const char *rootfs, const char *mirror, char **source,
                        pe_err *err)
{
    /* A NULL mirror ends argv there: mmdebstrap then uses the host's apt
     * sources. force-unsafe-io: dpkg's fsync of every unpacked file is
     * most of the build on a busy disk and buys nothing here (a failed
     * build leaves no image; the commit syncs the filesystem once). The
     * hook takes the option out again, so the image's own dpkg keeps its
     * fsyncs. */
    const char *argv[] = {"mmdebstrap",
                          "--variant=minbase",
                          "--dpkgopt=force-unsafe-io",
                          "--customize-hook=rm -f \"$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap\"",
                          "--include=" DEBIAN_PACKAGES,
                          DEBIAN_SUITE,
                          rootfs,
                          mirror,
                          NULL};
    cleanup_fd int rootfd = -1;
    pid_t pid = -1;

    fprintf(stderr, "building image %s with mmdebstrap (this takes a minute)...\n", name);
    fflush(stderr);
    /* mmdebstrap logs to stderr; its stdout joins it so ours stays clean
     * for the caller's machine-readable output. */
    if (spawn(argv, 2, "install mmdebstrap", &pid, err) < 0)
        return -1;
    if (wait_exit(pid, "mmdebstrap", err) < 0)
        return -1;
    rootfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        return pe_err_sys(err, "open %s", rootfs);
    if (write_etc(rootfd, err) < 0)
        return -1;
    *source = mirror ? pe_xasprintf("mmdebstrap %s minbase from %s", DEBIAN_SUITE, mirror)
                     : pe_xstrdup("mmdebstrap " DEBIAN_SUITE " minbase");
    return 0;
}

/* ---- entry point ------------------------------------------------------ */

static const struct {
    const char *name;
    int (*build)(const char *name, const char *rootfs, const char *mirror, char **source,
                 pe_err *err);
} builders[] = {
    {"busybox", build_busybox},
    {"debian", build_debian},
};

int pe_image_build(const char *data_dir, const char *builder, const char *name, const char *mirror,
                   pe_err *err)
{
    pe__image_stage st;
    cleanup_free char *source = NULL;
    size_t b;
    int r;

    for (b = 0; b < PE_ARRAY_LEN(builders); b++)
        if (builder != NULL && strcmp(builder, builders[b].name) == 0)
            break;
    if (b == PE_ARRAY_LEN(builders))
        return pe_err_set(err, PE_EINVAL, 0, "unknown image builder \"%s\" (busybox, debian)",
                          builder ? builder : "");
    if (mirror != NULL && !mirror_valid(mirror))
        return pe_err_set(err, PE_EINVAL, 0,
                          "invalid mirror \"%s\": give an http(s):// or file:/// URL", mirror);
    if (pe__image_stage_open(&st, data_dir, name, err) < 0)
        return -1;
    r = builders[b].build(name, st.rootfs, mirror, &source, err);
    if (r < 0)
        pe_err_prefix(err, "build image %s", name);
    else
        r = pe__image_stage_commit(&st, source, err);
    pe__image_stage_close(&st);
    return r;
}
