/* What a sandbox's resources do to it: its environment (PID 1 at start,
 * every exec), its files, its volumes at start.
 *
 * Runs on worker threads (a job's work), with the thread's store.
 *
 * Secrets are opened only here, at the point of use, and their plaintext
 * goes only into the environment handed to the runtime (never into its
 * state file: pe_runtime_start_with) and is wiped after. No log line or
 * error message quotes a value.
 *
 * Files: a file is written into the sandbox's root as the sandbox sees it,
 * /proc/<init pid>/root: that is the root of the sandbox's mount
 * namespace, so the overlay, its volumes and its read-only mounts are
 * what they are for the sandbox's own processes (writing to the overlay's
 * upper directory instead would miss volumes and would resolve symlinks
 * against the image alone). Every path is resolved from that directory
 * fd with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): a symlink
 * planted by the sandbox (/etc/x -> /host/path, ../../..) resolves inside
 * the sandbox's root, never the host's. The file is written to a fresh
 * temporary name (O_EXCL | O_NOFOLLOW) and renamed over the target, so a
 * symlink or device node at the final name is replaced, never followed or
 * opened. The worker thread does all of it with its fsuid/fsgid set to
 * the sandbox's root (setfsuid is per thread): the sandbox's overlay only
 * takes ids its user namespace maps, and the write has none of host root's
 * file capabilities. Pseudo filesystems (proc, sysfs, cgroup, ...) are
 * refused anyway: their files are kernel interfaces. New files are 0600
 * and new directories 0755, owned by the sandbox's root; an existing
 * regular file keeps its mode (and its owner when it is the sandbox's
 * root; another owner's file becomes root's, owner bits only). The
 * init is identified by pid and start time, checked after the root is
 * opened, so a recycled pid cannot redirect the write. */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "sandbox-env.h"
#include "runtime/internal.h"

#define NAME_MAX_LEN 128
#define PATH_MAX_LEN 1024

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* ---- names ---- */

int pe_daemon_check_env_name(const char *what, const char *name, pe_err *err)
{
    size_t n = strlen(name);

    if (n == 0 || n > NAME_MAX_LEN)
        return pe_err_set(err, PE_EINVAL, 0, "%s name must be 1 to %d characters", what,
                          NAME_MAX_LEN);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return pe_err_set(err, PE_EINVAL, 0,
                              "%s name must be letters, digits and '_', not starting with a "
                              "digit",
                              what);
    }
    return 0;
}

int pe_daemon_check_sandbox_path(const char *what, const char *path, pe_err *err)
{
    size_t n = strlen(path), comp = 0;

    if (n < 2 || path[0] != '/' || n > PATH_MAX_LEN)
        return pe_err_set(err, PE_EINVAL, 0,
                          "%s must be an absolute path other than / (at most %d characters)", what,
                          PATH_MAX_LEN);
    for (size_t i = 1; i <= n; i++) {
        if (i < n && path[i] != '/') {
            if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f)
                return pe_err_set(err, PE_EINVAL, 0, "%s must not contain control characters",
                                  what);
            comp++;
            continue;
        }
        const char *c = path + i - comp;
        if (comp == 0 || (comp == 1 && c[0] == '.') || (comp == 2 && c[0] == '.' && c[1] == '.'))
            return pe_err_set(err, PE_EINVAL, 0,
                              "%s must be normalized: no empty, '.' or '..' component", what);
        if (comp > 255)
            return pe_err_set(err, PE_EINVAL, 0, "%s has a component over 255 bytes", what);
        comp = 0;
    }
    return 0;
}

/* ---- environment ---- */

/* The sandbox layer computes it (lib/sandbox); these stay for the
 * daemon's files not moved to it yet. */
void pe_daemon_env_free(char **env)
{
    pe_sandbox_env_free(env);
}

int pe_daemon_sandbox_env(pe_daemon *d, pe_store *s, const char *sandbox_id, char ***env,
                          pe_err *err)
{
    return pe_sandbox_env(&d->sx, s, sandbox_id, env, err);
}

int pe_daemon_sandbox_start(pe_daemon *d, const pe_store_sandbox *sb, pe_err *err)
{
    pe_store *s = pe_daemon_store(d, err);

    return s ? pe_sandbox_start(&d->sx, s, sb, err) : -1;
}

/* ---- files ---- */

struct init_root {
    int root;  /* O_PATH of /proc/<pid>/root */
    uid_t uid; /* the sandbox's root, on the host */
};

/* The running init of sandbox id and its root directory. */
static int open_init_root(pe_daemon *d, const char *id, struct init_root *ir, pe_err *err)
{
    pe_runtime_init init;
    char path[64];
    int fd;

    ir->root = -1;
    if (pe_runtime_init_of(&d->rt, id, &init, err) < 0)
        return -1;
    ir->uid = (uid_t)init.id_base;
    if (!init.running)
        return pe_err_set(err, PE_ESTATE, 0, "sandbox is not running");
    snprintf(path, sizeof(path), "/proc/%d/root", (int)init.pid);
    fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pe_err_set(err, PE_ESTATE, errno, "sandbox is not running");
    /* Checked after the open: the fd is the root of that very init. */
    if (pe__proc_start_time(init.pid) != init.start_time) {
        close(fd);
        return pe_err_set(err, PE_ESTATE, 0, "sandbox is not running");
    }
    ir->root = fd;
    return 0;
}

static int open_in_root(int root, const char *path)
{
    struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int fd;

    do
        fd = (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
    while (fd < 0 && errno == EAGAIN);
    return fd;
}

int pe_daemon_open_sandbox_dir(pe_daemon *d, const char *id, const char *path, pe_err *err)
{
    struct init_root ir;
    int fd;

    if (open_init_root(d, id, &ir, err) < 0)
        return -1;
    fd = open_in_root(ir.root, path);
    if (fd < 0)
        pe_err_set(err, errno == ENOENT || errno == ENOTDIR ? PE_ENOENT : PE_ESYS, errno,
                   "open %s in the sandbox", path);
    close(ir.root);
    return fd;
}

/* The directory part of path (absolute, normalized) opened inside root,
 * creating missing directories (dir_mode, owned by the sandbox's root). */
static int open_parent(const struct init_root *ir, const char *path, mode_t dir_mode, pe_err *err)
{
    cleanup_free char *dir = pe_xstrdup(path);
    char *slash = strrchr(dir, '/');
    int fd;

    if (slash == dir) {
        fd = open_in_root(ir->root, "/");
        return fd < 0 ? pe_err_sys(err, "open the sandbox's root") : fd;
    }
    *slash = '\0';
    fd = open_in_root(ir->root, dir);
    if (fd >= 0 || errno != ENOENT) {
        if (fd < 0)
            return pe_err_set(err, PE_EINVAL, errno, "cannot open directory %s in the sandbox",
                              dir);
        return fd;
    }
    /* Make each missing component, resolving every prefix from the root
     * again: a component replaced by a symlink meanwhile stays inside. */
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        fd = open_in_root(ir->root, dir);
        if (fd < 0 && errno == ENOENT) {
            char *name = strrchr(dir, '/');
            int parent;
            *name = '\0';
            parent = open_in_root(ir->root, name == dir ? "/" : dir);
            *name = '/';
            if (parent < 0)
                return pe_err_set(err, PE_EINVAL, errno, "cannot open %s in the sandbox", dir);
            if (mkdirat(parent, name + 1, dir_mode) < 0 && errno != EEXIST) {
                int e = errno;
                close(parent);
                return pe_err_set(err, PE_EINVAL, e, "cannot create directory %s in the sandbox",
                                  dir);
            }
            close(parent);
            fd = open_in_root(ir->root, dir);
        }
        if (fd < 0)
            return pe_err_set(err, PE_EINVAL, errno, "cannot open directory %s in the sandbox",
                              dir);
        *p = saved;
        if (saved == '\0')
            return fd;
        close(fd);
    }
}

/* Pseudo filesystems whose files are kernel interfaces, not files. */
static bool pseudo_fs(int dirfd)
{
    static const long types[] = {PROC_SUPER_MAGIC,    SYSFS_MAGIC,        CGROUP_SUPER_MAGIC,
                                 CGROUP2_SUPER_MAGIC, DEVPTS_SUPER_MAGIC, DEBUGFS_MAGIC,
                                 TRACEFS_MAGIC,       SECURITYFS_MAGIC,   BPF_FS_MAGIC,
                                 EFIVARFS_MAGIC,      PSTOREFS_MAGIC};
    struct statfs sf;

    if (fstatfs(dirfd, &sf) < 0)
        return true;
    for (size_t i = 0; i < PE_ARRAY_LEN(types); i++)
        if ((long)sf.f_type == types[i])
            return true;
    return false;
}

/* tmp + rename inside parent; name is the final component. */
static int replace_file(const struct init_root *ir, int parent, const char *name,
                        const unsigned char *data, size_t len, mode_t want, bool sync, pe_err *err)
{
    char tmp[64];
    unsigned char rnd[8];
    struct stat old;
    mode_t mode = want ? want : 0600;
    uid_t uid = ir->uid;
    gid_t gid = ir->uid;
    int fd, e;

    if (fstatat(parent, name, &old, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(old.st_mode))
            return pe_err_set(err, PE_EINVAL, EISDIR, "a directory is in the way");
        if (S_ISREG(old.st_mode) && want == 0) {
            mode = old.st_mode & 0777;
            uid = old.st_uid;
            gid = old.st_gid;
        }
        /* want != 0 (keys): the file is the sandbox root's, with that mode. */
    }
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return pe_err_sys(err, "getrandom");
    snprintf(tmp, sizeof(tmp), ".pocketenv-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    fd = openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return pe_err_set(err, PE_EINVAL, errno, "cannot create the file");
    /* Keeping another owner needs CAP_CHOWN, which this thread dropped
     * with its fsuid: the file is then the sandbox root's. */
    if ((uid != ir->uid || gid != ir->uid) && fchown(fd, uid, gid) < 0)
        mode &= 0700;
    if (pe_fs_write_all(fd, data, len) < 0 || fchmod(fd, mode) < 0 || (sync && fsync(fd) < 0) ||
        renameat(parent, tmp, parent, name) < 0) {
        e = errno;
        close(fd);
        unlinkat(parent, tmp, 0);
        return pe_err_set(err, PE_EINVAL, e, "cannot write the file");
    }
    close(fd);
    return 0;
}

static int write_file(pe_daemon *d, const char *id, const char *path, const unsigned char *data,
                      size_t len, mode_t mode, bool sync, pe_err *err)
{
    struct init_root ir;
    int parent, r;

    if (pe_daemon_check_sandbox_path("path", path, err) < 0)
        return -1;
    if (open_init_root(d, id, &ir, err) < 0)
        return -1;
    /* As the sandbox's root for the filesystem (this thread only): the
     * overlay refuses ids its user namespace does not map, and a write
     * that escaped would still have none of host root's file powers. */
    setfsgid(ir.uid);
    setfsuid(ir.uid);
    parent = open_parent(&ir, path, mode ? 0700 : 0755, err);
    close(ir.root);
    if (parent < 0) {
        r = -1;
    } else if (pseudo_fs(parent)) {
        r = pe_err_set(err, PE_EINVAL, 0, "not a regular filesystem");
    } else {
        r = replace_file(&ir, parent, strrchr(path, '/') + 1, data, len, mode, sync, err);
    }
    if (parent >= 0)
        close(parent);
    setfsuid(0);
    setfsgid(0);
    return r < 0 ? pe_err_prefix(err, "write %s", path) : 0;
}

int pe_daemon_sandbox_write_file_mode(pe_daemon *d, const char *id, const char *path,
                                      const unsigned char *data, size_t len, mode_t mode,
                                      pe_err *err)
{
    return write_file(d, id, path, data, len, mode, true, err);
}

int pe_daemon_sandbox_place_file_mode(pe_daemon *d, const char *id, const char *path,
                                      const unsigned char *data, size_t len, mode_t mode,
                                      pe_err *err)
{
    return write_file(d, id, path, data, len, mode, false, err);
}

int pe_daemon_sandbox_write_file(pe_daemon *d, const char *id, const char *path,
                                 const unsigned char *data, size_t len, pe_err *err)
{
    return pe_daemon_sandbox_write_file_mode(d, id, path, data, len, 0, err);
}

int pe_daemon_sandbox_remove_file(pe_daemon *d, const char *id, const char *path, pe_err *err)
{
    cleanup_free char *dir = NULL;
    struct init_root ir;
    int parent, r = 0;

    if (pe_daemon_check_sandbox_path("path", path, err) < 0 || open_init_root(d, id, &ir, err) < 0)
        return -1;
    dir = pe_xasprintf("%.*s", (int)(strrchr(path, '/') - path), path);
    setfsgid(ir.uid);
    setfsuid(ir.uid);
    /* The directory resolved inside the root; unlinkat never follows the
     * final name, so a symlink there is removed, not its target. */
    parent = open_in_root(ir.root, dir[0] ? dir : "/");
    close(ir.root);
    if (parent < 0)
        r = errno == ENOENT ? 0 : pe_err_set(err, PE_EINVAL, errno, "remove %s", path);
    else if (unlinkat(parent, strrchr(path, '/') + 1, 0) < 0 && errno != ENOENT)
        r = pe_err_set(err, PE_EINVAL, errno, "remove %s", path);
    if (parent >= 0)
        close(parent);
    setfsuid(0);
    setfsgid(0);
    return r;
}

size_t pe_daemon_sandbox_place_files(pe_daemon *d, const pe_store_sandbox *sb)
{
    pe_store *s;
    pe_store_kv *list = NULL;
    size_t n = 0;
    pe_err err;

    pe_err_clear(&err);
    s = pe_daemon_store(d, &err);
    if (s == NULL || pe_store_kv_list(s, PE_STORE_FILE, sb->id, &list, &n, &err) < 0) {
        pe_log_warn("sandbox %s: files not placed: %s", sb->id, err.msg);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char *plain = NULL;
        size_t len = 0;

        if (pe_auth_unseal(d->auth, list[i].value, &plain, &len, &err) < 0 ||
            pe_daemon_sandbox_place_file_mode(d, sb->id, list[i].key, plain, len, 0, &err) < 0)
            pe_log_warn("sandbox %s: file %s not placed: %s", sb->id, list[i].key, err.msg);
        pe_auth_plain_free(plain);
        pe_err_clear(&err);
    }
    pe_store_kv_list_free(list, n);
    return n;
}

/* ---- createSandbox's envs and secrets ---- */

#define CREATE_MAX 64

static int check_list(pe_daemon *d, const json_t *a, const char *what, bool sealed, pe_err *err)
{
    size_t i;
    json_t *e;

    if (a == NULL)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > CREATE_MAX)
        return pe_err_set(err, PE_EINVAL, 0, "%s must be an array of at most %d {name, value}",
                          what, CREATE_MAX);
    json_array_foreach(a, i, e)
    {
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *value = json_string_value(json_object_get(e, "value"));
        unsigned char *plain = NULL;
        size_t len = 0;

        if (!json_is_object(e) || name == NULL || value == NULL)
            return pe_err_set(err, PE_EINVAL, 0, "%s[%zu] must be {name, value} strings", what, i);
        if (pe_daemon_check_env_name(what, name, err) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(json_string_value(json_object_get(json_array_get(a, j), "name")), name) == 0)
                return pe_err_set(err, PE_EINVAL, 0, "%s: %s given twice", what, name);
        if (!sealed)
            continue;
        if (pe_auth_unseal(d->auth, value, &plain, &len, err) < 0)
            return pe_err_prefix(err, "%s %s", what, name);
        pe_auth_plain_free(plain);
    }
    return 0;
}

int pe_daemon_create_resources_check(pe_daemon *d, const json_t *body, pe_err *err)
{
    if (check_list(d, json_object_get(body, "envs"), "envs", false, err) < 0 ||
        check_list(d, json_object_get(body, "secrets"), "secrets", true, err) < 0)
        return -1;
    return 0;
}

int pe_daemon_create_resources_store(pe_store *s, const char *sandbox_id, const json_t *body,
                                     pe_err *err)
{
    static const struct {
        const char *key;
        int kind;
    } lists[] = {{"envs", PE_STORE_VARIABLE}, {"secrets", PE_STORE_SECRET}};

    for (size_t k = 0; k < PE_ARRAY_LEN(lists); k++) {
        json_t *a = json_object_get(body, lists[k].key), *e;
        size_t i;

        json_array_foreach(a, i, e)
        {
            if (pe_store_res_add(s, lists[k].kind, sandbox_id,
                                 json_string_value(json_object_get(e, "name")),
                                 json_string_value(json_object_get(e, "value")), NULL, err) < 0)
                return -1;
        }
    }
    return 0;
}
