/* File helpers (see fs.h). rm_rf walks with openat/unlinkat relative to
 * directory fds so a planted symlink cannot redirect it (see its block). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "util.h"

/* How much of a replace survives a crash of the host. */
enum durability {
    DUR_NONE,    /* old file or new file, possibly neither's data */
    DUR_CONTENT, /* old complete file or new complete file */
    DUR_ALL,     /* the new complete file */
};

int pe_fs_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int write_replace(const char *path, const void *data, size_t len, mode_t mode,
                         enum durability durable, pe_err *err)
{
    cleanup_free char *tmp = pe_xasprintf("%s.tmp.%d", path, (int)getpid());
    cleanup_free char *dir = pe_xstrdup(path);
    cleanup_fd int fd = -1;
    cleanup_fd int dfd = -1;
    char *slash;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return pe_err_sys(err, "create %s", tmp);
    /* A leftover tmp file of a crashed writer keeps its old mode through
     * O_TRUNC; the file must never appear with looser bits than asked. */
    if (fchmod(fd, mode) < 0)
        goto fail;
    if (pe_fs_write_all(fd, data, len) < 0)
        goto fail;
    if (durable != DUR_NONE && fsync(fd) < 0)
        goto fail;
    if (rename(tmp, path) < 0)
        goto fail;
    slash = strrchr(dir, '/');
    if (durable == DUR_ALL && slash != NULL) {
        *slash = '\0';
        dfd = open(*dir ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
            fsync(dfd);
    }
    return 0;
fail:
    pe_err_sys(err, "write %s", path);
    unlink(tmp);
    return -1;
}

int pe_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    return write_replace(path, data, len, mode, DUR_ALL, err);
}

int pe_fs_write_whole(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    return write_replace(path, data, len, mode, DUR_CONTENT, err);
}

int pe_fs_write_replace(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    return write_replace(path, data, len, mode, DUR_NONE, err);
}

static int write_new(const char *path, const void *data, size_t len, mode_t mode, bool sync,
                     pe_err *err)
{
    cleanup_fd int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);

    if (fd < 0)
        return pe_err_sys(err, "create %s", path);
    if (pe_fs_write_all(fd, data, len) < 0)
        return pe_err_sys(err, "write %s", path);
    if (sync && fsync(fd) < 0)
        return pe_err_sys(err, "fsync %s", path);
    return 0;
}

int pe_fs_write_new(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    return write_new(path, data, len, mode, false, err);
}

int pe_fs_write_new_synced(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    return write_new(path, data, len, mode, true, err);
}

int pe_fs_read_file(const char *path, size_t max, char **out, size_t *out_len, pe_err *err)
{
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
    cleanup_free char *buf = NULL;
    size_t len = 0, cap = 4096;

    if (fd < 0)
        return pe_err_sys(err, "open %s", path);
    buf = pe_xmalloc(cap);
    for (;;) {
        ssize_t r;
        if (len + 1 >= cap) {
            if (cap > max + 1)
                return pe_err_set(err, PE_ESYS, E2BIG, "read %s", path);
            cap *= 2;
            buf = pe_xrealloc(buf, cap);
        }
        r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return pe_err_sys(err, "read %s", path);
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > max)
            return pe_err_set(err, PE_ESYS, E2BIG, "read %s", path);
    }
    buf[len] = '\0';
    *out = pe_steal_ptr(&buf);
    if (out_len != NULL)
        *out_len = len;
    return 0;
}

int pe_fs_mkdir_p(const char *path, mode_t mode, pe_err *err)
{
    cleanup_free char *p = pe_xstrdup(path);
    char *s;

    for (s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return pe_err_sys(err, "mkdir %s", p);
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return pe_err_sys(err, "mkdir %s", p);
    return 0;
}

/* ---- pe_fs_rm_rf ----
 * The tree may belong to a hostile sandbox: any depth (a chain of 5,000
 * directories made a recursive remover give up, and the sandbox's files
 * stayed on the host for good), symlinks and device nodes anywhere, names
 * of any length. So:
 *  - nothing is ever followed or opened but directories, each opened
 *    with O_NOFOLLOW relative to its parent's fd and checked to be the
 *    (dev, ino) that fstatat saw; ".." is never used: we keep the fds;
 *  - at most RM_MAX_OPEN directories are open at once. A directory
 *    deeper than that is renamed to the top of the tree (one rename moves
 *    a whole subtree) and removed by a later pass over the top, so depth
 *    costs passes, not fds or stack;
 *  - a directory on another device is a mount: an error, never entered. */
#define RM_MAX_OPEN 16
/* Passes and rescans allowed before giving up: only a writer racing us
 * (never a stopped sandbox) needs more than a few. */
#define RM_MAX_RETRIES 100000

struct rm_level {
    DIR *d;
    char name[NAME_MAX + 1]; /* in the level above */
};

struct rm_walk {
    struct rm_level lv[RM_MAX_OPEN];
    int depth; /* lv[0] is the top */
    dev_t dev;
    unsigned long moved; /* names given to subtrees moved to the top */
    unsigned long retries;
    bool seen; /* the current pass over the top found an entry */
};

/* Move subtree name (in dir dfd) to the top under a name of our own. */
static int rm_move_up(struct rm_walk *w, int dfd, const char *name, pe_err *err)
{
    int top = dirfd(w->lv[0].d);

    for (;;) {
        char to[64];
        snprintf(to, sizeof(to), ".pe-rm-%lu", w->moved++);
        if (renameat2(dfd, name, top, to, RENAME_NOREPLACE) == 0 || errno == ENOENT)
            return 0;
        if (errno != EEXIST)
            return pe_err_sys(err, "move %s up", name);
    }
}

/* Enter directory name of the current level. */
static int rm_push(struct rm_walk *w, const char *name, const struct stat *seen, pe_err *err)
{
    int dfd = dirfd(w->lv[w->depth].d);
    cleanup_fd int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    DIR *d;

    if (fd < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "open %s", name);
    if (fstat(fd, &st) < 0)
        return pe_err_sys(err, "stat %s", name);
    if (st.st_dev != seen->st_dev || st.st_ino != seen->st_ino)
        return pe_err_set(err, PE_ESYS, EAGAIN, "remove %s: it was replaced meanwhile", name);
    d = fdopendir(fd);
    if (d == NULL)
        return pe_err_sys(err, "opendir %s", name);
    fd = -1;
    w->depth++;
    w->lv[w->depth].d = d;
    snprintf(w->lv[w->depth].name, sizeof(w->lv[w->depth].name), "%s", name);
    return 0;
}

/* One entry of the current level: unlink it, or make way into it. */
static int rm_entry(struct rm_walk *w, const char *name, pe_err *err)
{
    int dfd = dirfd(w->lv[w->depth].d);
    struct stat st;

    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "stat %s", name);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
            return pe_err_sys(err, "unlink %s", name);
        return 0;
    }
    if (st.st_dev != w->dev)
        return pe_err_set(err, PE_ESYS, EXDEV, "remove %s: a mount is still there", name);
    if (unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
        return 0;
    if (errno != ENOTEMPTY && errno != EEXIST)
        return pe_err_sys(err, "rmdir %s", name);
    if (w->depth + 1 < RM_MAX_OPEN)
        return rm_push(w, name, &st, err);
    return rm_move_up(w, dfd, name, err);
}

/* The current level is read to its end: remove it (or read it again). */
static int rm_pop(struct rm_walk *w, pe_err *err)
{
    struct rm_level *lv = &w->lv[w->depth];
    int parent;

    if (w->depth == 0) {
        /* Subtrees moved up during the pass may have been missed. */
        if (!w->seen)
            return 1;
        w->seen = false;
        rewinddir(lv->d);
        return ++w->retries > RM_MAX_RETRIES
                   ? pe_err_set(err, PE_ESYS, EAGAIN, "tree keeps changing")
                   : 0;
    }
    parent = dirfd(w->lv[w->depth - 1].d);
    if (unlinkat(parent, lv->name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
        if (errno != ENOTEMPTY || ++w->retries > RM_MAX_RETRIES)
            return pe_err_sys(err, "rmdir %s", lv->name);
        rewinddir(lv->d); /* something was added meanwhile */
        return 0;
    }
    closedir(lv->d);
    lv->d = NULL;
    w->depth--;
    return 0;
}

/* Empty the directory open as top (which it takes). */
static int rm_tree(int top, dev_t dev, pe_err *err)
{
    struct rm_walk w;
    int r = 0;

    memset(&w, 0, sizeof(w));
    w.dev = dev;
    w.lv[0].d = fdopendir(top);
    if (w.lv[0].d == NULL) {
        close(top);
        return pe_err_sys(err, "opendir");
    }
    while (r == 0) {
        struct dirent *de;

        errno = 0;
        de = readdir(w.lv[w.depth].d);
        if (de == NULL) {
            r = errno != 0 ? pe_err_sys(err, "read directory") : rm_pop(&w, err);
            continue;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (w.depth == 0)
            w.seen = true;
        r = rm_entry(&w, de->d_name, err);
    }
    for (int i = 0; i <= w.depth; i++)
        if (w.lv[i].d != NULL)
            closedir(w.lv[i].d);
    return r < 0 ? -1 : 0;
}

int pe_fs_rm_rf(const char *path, pe_err *err)
{
    struct stat st, opened;
    int fd;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "stat %s", path);
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && errno != ENOENT)
            return pe_err_sys(err, "unlink %s", path);
        return 0;
    }
    fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "open %s", path);
    if (fstat(fd, &opened) < 0 || opened.st_dev != st.st_dev || opened.st_ino != st.st_ino) {
        close(fd);
        return pe_err_set(err, PE_ESYS, EAGAIN, "remove %s: it was replaced meanwhile", path);
    }
    if (rm_tree(fd, st.st_dev, err) < 0)
        return pe_err_prefix(err, "remove %s", path);
    if (rmdir(path) < 0 && errno != ENOENT)
        return pe_err_sys(err, "rmdir %s", path);
    return 0;
}

int pe_fs_write_str(const char *path, const char *s, pe_err *err)
{
    cleanup_fd int fd = open(path, O_WRONLY | O_CLOEXEC);
    size_t len = strlen(s);
    ssize_t w;

    if (fd < 0)
        return pe_err_sys(err, "open %s", path);
    w = write(fd, s, len);
    if (w < 0)
        return pe_err_sys(err, "write '%s' to %s", s, path);
    if ((size_t)w != len)
        return pe_err_set(err, PE_ESYS, EIO, "short write to %s", path);
    return 0;
}

int pe_parse_size(const char *s, long long *out)
{
    char *end = NULL;
    double v, mult = 1;

    if (s == NULL || *s == '\0' || !(isdigit((unsigned char)*s) || *s == '.'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || !isfinite(v) || v < 0)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        return -1;
    }
    if (*end == 'i' && mult > 1)
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0')
        return -1;
    v *= mult;
    if (v > (double)LLONG_MAX / 2)
        return -1;
    *out = (long long)v;
    return 0;
}

int pe_name_valid(const char *s)
{
    size_t n = 0;

    if (s == NULL || !isalnum((unsigned char)s[0]))
        return 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
            return 0;
        if (n >= 63)
            return 0;
    }
    return 1;
}
