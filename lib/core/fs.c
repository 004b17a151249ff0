/* File helpers (see fs.h). rm_rf walks with openat/unlinkat relative to
 * directory fds so a concurrently planted symlink cannot redirect it. */
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

static int write_replace(const char *path, const void *data, size_t len, mode_t mode, bool durable,
                         pe_err *err)
{
    cleanup_free char *tmp = pe_xasprintf("%s.tmp.%d", path, (int)getpid());
    cleanup_free char *dir = pe_xstrdup(path);
    cleanup_fd int fd = -1;
    cleanup_fd int dfd = -1;
    const char *p = data;
    char *slash;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return pe_err_sys(err, "create %s", tmp);
    /* A leftover tmp file of a crashed writer keeps its old mode through
     * O_TRUNC; the file must never appear with looser bits than asked. */
    if (fchmod(fd, mode) < 0)
        goto fail;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            goto fail;
        p += w;
        len -= (size_t)w;
    }
    if (durable && fsync(fd) < 0)
        goto fail;
    if (rename(tmp, path) < 0)
        goto fail;
    slash = strrchr(dir, '/');
    if (durable && slash != NULL) {
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
    return write_replace(path, data, len, mode, true, err);
}

int pe_fs_write_replace(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    return write_replace(path, data, len, mode, false, err);
}

int pe_fs_write_new(const char *path, const void *data, size_t len, mode_t mode, pe_err *err)
{
    cleanup_fd int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    ssize_t w;

    if (fd < 0)
        return pe_err_sys(err, "create %s", path);
    w = write(fd, data, len);
    if (w < 0 || (size_t)w != len)
        return pe_err_sys(err, "write %s", path);
    return 0;
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

static int rm_rf_at(int dfd, const char *name, dev_t dev, int depth, pe_err *err)
{
    struct stat st;
    cleanup_fd int fd = -1;
    DIR *d;
    struct dirent *de;
    int ret = 0;

    if (depth > 4096)
        return pe_err_set(err, PE_ESYS, ELOOP, "remove %s", name);
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "stat %s", name);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
            return pe_err_sys(err, "unlink %s", name);
        return 0;
    }
    if (st.st_dev != dev)
        return pe_err_set(err, PE_ESYS, EXDEV, "remove %s: a mount is still there", name);
    fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return pe_err_sys(err, "open %s", name);
    d = fdopendir(fd);
    if (d == NULL)
        return pe_err_sys(err, "opendir %s", name);
    fd = -1; /* owned by d now */
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (rm_rf_at(dirfd(d), de->d_name, dev, depth + 1, err) < 0) {
            ret = -1;
            break;
        }
    }
    closedir(d);
    if (ret < 0)
        return pe_err_prefix(err, "%s", name);
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return pe_err_sys(err, "rmdir %s", name);
    return 0;
}

int pe_fs_rm_rf(const char *path, pe_err *err)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "stat %s", path);
    return rm_rf_at(AT_FDCWD, path, st.st_dev, 0, err);
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
