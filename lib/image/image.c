/* Image store: DATA/images/<name>/{rootfs/,image.json}.
 *
 * Owns the on-disk layout, the staging protocol every builder and importer
 * goes through (pe__image_stage_*), resolve/list/remove/gc.
 *
 * Concurrency. Images appear by rename(2) of a finished staging directory
 * .tmp-<name>-<pid> (RENAME_NOREPLACE, so two writers of one name cannot
 * replace each other's image) and disappear by rename to .tmp-rm-<name>-<pid>
 * before the tree is deleted, so readers see a whole image or none.
 * A staging directory is held with flock(LOCK_EX) while it is live; gc only
 * removes .tmp-* directories whose pid is dead and that nobody has locked.
 * pe_image_resolve() serialises build-on-demand with flock on
 * DATA/images/.lock, so two sandboxes asking for "debian" build it once.
 * All functions are blocking and thread-safe; run them on a worker, never
 * on the event loop. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/fs.h"
#include "core/log.h"
#include "core/util.h"
#include "image/image-internal.h"
#include "image/image.h"

/* Deeper trees are refused when measuring: each level holds an fd. */
#define TREE_MAX_DEPTH 512

/* $POCKETENV_IMAGES moves the images out of DATA: several data
 * directories (the test suite's daemons) then share one set of built
 * images, each built once (docs/templates.md, "Building"). */
static char *images_path(const char *data_dir)
{
    const char *env = getenv("POCKETENV_IMAGES");

    if (env != NULL && env[0] == '/')
        return pe_xstrdup(env);
    return pe_xasprintf("%s/images", data_dir);
}

static int invalid_name(const char *name, pe_err *err)
{
    return pe_err_set(err, PE_EINVAL, 0,
                      "invalid image name \"%s\": use 1-63 of [A-Za-z0-9_.-], starting with a "
                      "letter or digit",
                      name ? name : "");
}

/* DATA may not exist yet on first use; it is private to the daemon (0700),
 * images/ is readable so an unprivileged inspector can list it. */
static int ensure_images_dir(const char *data_dir, pe_err *err)
{
    cleanup_free char *images = images_path(data_dir);

    if (pe_fs_mkdir_p(data_dir, 0700, err) < 0)
        return -1;
    if (getenv("POCKETENV_IMAGES") != NULL && pe_fs_mkdir_p(images, 0755, err) < 0)
        return -1;
    if (mkdir(images, 0755) < 0 && errno != EEXIST)
        return pe_err_sys(err, "mkdir %s", images);
    return 0;
}

static void fsync_dir(const char *path)
{
    cleanup_fd int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd >= 0)
        (void)fsync(fd);
}

/* ---- measuring -------------------------------------------------------- */

static int tree_size_at(int dfd, int depth, int64_t *total, pe_err *err)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    int ret = 0;

    if (d == NULL) {
        pe_err_sys(err, "opendir");
        close(dfd);
        return -1;
    }
    while (ret == 0 && (errno = 0, de = readdir(d)) != NULL) {
        struct stat sb;
        int sub;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
            ret = pe_err_sys(err, "stat %s", de->d_name);
            break;
        }
        /* A file's links share its blocks: each counts its share (exact
         * when every link is in the tree, as in an npm package). */
        *total += (int64_t)sb.st_blocks * 512 / (sb.st_nlink > 1 ? (int64_t)sb.st_nlink : 1);
        if (!S_ISDIR(sb.st_mode))
            continue;
        if (depth >= TREE_MAX_DEPTH) {
            ret = pe_err_set(err, PE_EINVAL, ELOOP, "%s: more than %d levels deep", de->d_name,
                             TREE_MAX_DEPTH);
            break;
        }
        sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || tree_size_at(sub, depth + 1, total, err) < 0) {
            if (sub < 0)
                pe_err_sys(err, "open %s", de->d_name);
            ret = pe_err_prefix(err, "%s", de->d_name);
        }
    }
    if (ret == 0 && errno != 0)
        ret = pe_err_sys(err, "readdir");
    closedir(d);
    return ret;
}

/* Disk usage of a tree (st_blocks, so sparse files count what they use;
 * hard links once in all). */
static int tree_size(const char *path, int64_t *out, pe_err *err)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;

    *out = 0;
    if (fd < 0)
        return pe_err_sys(err, "open %s", path);
    if (fstat(fd, &sb) < 0) {
        pe_err_sys(err, "stat %s", path);
        close(fd);
        return -1;
    }
    *out = (int64_t)sb.st_blocks * 512;
    return tree_size_at(fd, 0, out, err);
}

/* ---- staging ---------------------------------------------------------- */

/* Serialises "create the staging dir and lock it" between threads of this
 * process, whose staging names for one image are identical: without it a
 * second thread could take a just-made, not-yet-locked directory for a
 * stale one and delete it. Other processes have other pids, so other names. */
static pthread_mutex_t stage_mutex = PTHREAD_MUTEX_INITIALIZER;

/* 1 if another open file description holds the lock on dir, 0 if not. */
static int dir_locked(int dfd, const char *name)
{
    cleanup_fd int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return 0;
    return flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

static int make_locked_dir(const char *path, const char *name, int *lock_fd, pe_err *err)
{
    cleanup_fd int fd = -1;

    if (mkdir(path, 0700) < 0) {
        if (errno != EEXIST)
            return pe_err_sys(err, "mkdir %s", path);
        if (dir_locked(AT_FDCWD, path))
            return pe_err_set(err, PE_EEXIST, 0, "image %s is already being made", name);
        /* Left by a dead process that had our pid. */
        if (pe_fs_rm_rf(path, err) < 0)
            return -1;
        if (mkdir(path, 0700) < 0)
            return pe_err_sys(err, "mkdir %s", path);
    }
    fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        pe_err_sys(err, "lock %s", path);
        rmdir(path);
        return -1;
    }
    *lock_fd = pe_steal_fd(&fd);
    return 0;
}

static int stage_dirs(pe__image_stage *st, pe_err *err)
{
    struct stat sb;
    int r;

    if (lstat(st->final_dir, &sb) == 0)
        return pe_err_set(err, PE_EEXIST, 0, "image %s already exists", st->name);
    if (errno != ENOENT)
        return pe_err_sys(err, "stat %s", st->final_dir);
    pthread_mutex_lock(&stage_mutex);
    r = make_locked_dir(st->tmp_dir, st->name, &st->lock_fd, err);
    pthread_mutex_unlock(&stage_mutex);
    if (r < 0)
        return -1;
    /* Explicit modes: the process umask must not decide what a sandbox's
     * root directory looks like. */
    if (chmod(st->tmp_dir, 0755) < 0 || mkdir(st->rootfs, 0755) < 0 || chmod(st->rootfs, 0755) < 0)
        return pe_err_sys(err, "create %s", st->rootfs);
    return 0;
}

int pe__image_stage_open(pe__image_stage *st, const char *data_dir, const char *name, pe_err *err)
{
    cleanup_free char *images = NULL;
    cleanup_free char *real = NULL;

    memset(st, 0, sizeof(*st));
    st->lock_fd = -1;
    if (!pe_name_valid(name))
        return invalid_name(name, err);
    if (ensure_images_dir(data_dir, err) < 0)
        return -1;
    images = images_path(data_dir);
    /* Canonical, so libarchive's symlink check, which walks every component
     * of the absolute paths we hand it, finds none in our own prefix. */
    real = realpath(images, NULL);
    if (real == NULL)
        return pe_err_sys(err, "resolve %s", images);
    st->name = pe_xstrdup(name);
    st->final_dir = pe_xasprintf("%s/%s", real, name);
    st->tmp_dir = pe_xasprintf("%s/.tmp-%s-%d", real, name, (int)getpid());
    st->rootfs = pe_xasprintf("%s/rootfs", st->tmp_dir);
    if (stage_dirs(st, err) < 0) {
        if (st->lock_fd < 0) {
            free(st->tmp_dir); /* not ours: do not remove it */
            st->tmp_dir = NULL;
        }
        pe__image_stage_close(st);
        return -1;
    }
    return 0;
}

/* The source string comes from user input (a tarball path, a mirror URL);
 * keep image.json valid UTF-8 whatever it contains. */
static char *printable(const char *s)
{
    char *out = pe_xstrdup(s);

    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    return out;
}

static int write_meta(const pe__image_stage *st, const char *source, int64_t size, pe_err *err)
{
    cleanup_free char *src = printable(source);
    cleanup_free char *path = pe_xasprintf("%s/image.json", st->tmp_dir);
    cleanup_free char *text = NULL;
    cleanup_free char *line = NULL;
    json_t *o, *env;

    o = json_pack("{s:s, s:I, s:s, s:I}", "name", st->name, "created", (json_int_t)time(NULL),
                  "source", src, "size", (json_int_t)size);
    if (o == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "build image.json");
    if (st->parent != NULL)
        json_object_set_new(o, "parent", json_string(st->parent));
    if (st->env != NULL) {
        env = json_array();
        for (char **e = st->env; *e; e++)
            json_array_append_new(env, json_string(*e));
        json_object_set_new(o, "env", env);
    }
    text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    if (text == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "format image.json");
    line = pe_xasprintf("%s\n", text);
    return pe_fs_write_atomic(path, line, strlen(line), 0644, err);
}

static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    /* Filesystem without RENAME_NOREPLACE: rename(2) still refuses to
     * replace a non-empty directory, and an image never is empty. */
    return rename(from, to);
}

int pe__image_stage_commit(pe__image_stage *st, const char *source, pe_err *err)
{
    cleanup_free char *parent = NULL;
    cleanup_fd int fd = -1;
    int64_t size = 0;

    if (tree_size(st->rootfs, &size, err) < 0)
        return pe_err_prefix(err, "measure image %s", st->name);
    if (write_meta(st, source, size, err) < 0)
        return -1;
    /* Files written by tar or mmdebstrap are not fsync'd one by one; flush
     * the filesystem once so the image never appears with holes after a
     * crash. */
    fd = open(st->rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) < 0)
        return pe_err_sys(err, "sync %s", st->rootfs);
    if (rename_noreplace(st->tmp_dir, st->final_dir) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            return pe_err_set(err, PE_EEXIST, 0, "image %s already exists", st->name);
        return pe_err_sys(err, "rename %s to %s", st->tmp_dir, st->final_dir);
    }
    free(st->tmp_dir);
    st->tmp_dir = NULL; /* committed: nothing to roll back */
    parent = pe_xstrdup(st->final_dir);
    *strrchr(parent, '/') = '\0';
    fsync_dir(parent);
    return 0;
}

void pe__image_stage_close(pe__image_stage *st)
{
    if (st->tmp_dir != NULL) {
        pe_err e = {0};
        if (pe_fs_rm_rf(st->tmp_dir, &e) < 0)
            pe_log_warn("remove %s: %s (pocketenv image gc retries)", st->tmp_dir, e.msg);
    }
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    free(st->name);
    free(st->tmp_dir);
    free(st->final_dir);
    free(st->rootfs);
    free(st->parent);
    for (char **e = st->env; e && *e; e++)
        free(*e);
    free(st->env);
    memset(st, 0, sizeof(*st));
    st->lock_fd = -1;
}

/* ---- resolve ---------------------------------------------------------- */

static int resolve_dir(const char *path, char **out, pe_err *err)
{
    struct stat sb;
    char *real;

    if (stat(path, &sb) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return pe_err_set(err, PE_ENOENT, 0, "image directory %s does not exist", path);
        return pe_err_sys(err, "stat image directory %s", path);
    }
    if (!S_ISDIR(sb.st_mode))
        return pe_err_set(err, PE_ENOENT, 0, "image directory %s is not a directory", path);
    real = realpath(path, NULL);
    if (real == NULL)
        return pe_err_sys(err, "resolve image directory %s", path);
    *out = real;
    return 0;
}

/* 1 and *out set if image name is there, 0 if not, -1 on error. */
static int find_rootfs(const char *data_dir, const char *name, char **out, pe_err *err)
{
    cleanup_free char *images = images_path(data_dir);
    cleanup_free char *path = pe_xasprintf("%s/%s/rootfs", images, name);
    struct stat sb;

    if (stat(path, &sb) < 0)
        return errno == ENOENT ? 0 : pe_err_sys(err, "stat %s", path);
    if (!S_ISDIR(sb.st_mode))
        return pe_err_set(err, PE_ESYS, ENOTDIR, "image %s: %s", name, path);
    *out = realpath(path, NULL);
    if (*out == NULL)
        return pe_err_sys(err, "resolve %s", path);
    return 1;
}

static int lock_images(const char *data_dir, int *fd_out, pe_err *err)
{
    cleanup_free char *images = images_path(data_dir);
    cleanup_free char *path = pe_xasprintf("%s/.lock", images);
    cleanup_fd int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

    if (fd < 0)
        return pe_err_sys(err, "open %s", path);
    while (flock(fd, LOCK_EX) < 0)
        if (errno != EINTR)
            return pe_err_sys(err, "lock %s", path);
    *fd_out = pe_steal_fd(&fd);
    return 0;
}

/* Called with DATA/images/.lock held: whoever held it before us may have
 * built the image already. */
static int build_on_demand(const char *data_dir, const char *name, char **out, pe_err *err)
{
    pe_err e = {0};
    int r = find_rootfs(data_dir, name, out, err);

    if (r != 0)
        return r < 0 ? -1 : 0;
    /* PE_EEXIST: an explicit `image build` of the same name won the race. */
    if (pe_image_build(data_dir, name, name, NULL, &e) < 0 && e.code != PE_EEXIST) {
        if (err != NULL)
            *err = e;
        return -1;
    }
    r = find_rootfs(data_dir, name, out, err);
    if (r == 0)
        return pe_err_set(err, PE_ENOENT, 0, "image %s disappeared after it was built", name);
    return r < 0 ? -1 : 0;
}

bool pe_image_known(const char *data_dir, const char *word)
{
    cleanup_free char *path = NULL;
    struct stat sb;

    if (word == NULL || *word == '\0')
        return false;
    if (strchr(word, '/') != NULL)
        return stat(word, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!pe_name_valid(word))
        return false;
    if (strcmp(word, "busybox") == 0 || strcmp(word, "debian") == 0)
        return true;
    path = pe_xasprintf("%s/images/%s/rootfs", data_dir, word);
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int pe_image_resolve(const char *data_dir, const char *image, char **rootfs_out, pe_err *err)
{
    cleanup_fd int lock = -1;
    int r;

    *rootfs_out = NULL;
    if (image == NULL || *image == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "no image given");
    if (strchr(image, '/') != NULL)
        return resolve_dir(image, rootfs_out, err);
    if (!pe_name_valid(image))
        return invalid_name(image, err);
    r = find_rootfs(data_dir, image, rootfs_out, err);
    if (r != 0)
        return r < 0 ? -1 : 0;
    if (strcmp(image, "busybox") != 0 && strcmp(image, "debian") != 0)
        return pe_err_set(err, PE_ENOENT, 0, "unknown image %s (see: pocketenv image ls)", image);
    if (ensure_images_dir(data_dir, err) < 0 || lock_images(data_dir, &lock, err) < 0)
        return -1;
    return build_on_demand(data_dir, image, rootfs_out, err);
}

/* ---- layers ----------------------------------------------------------- */

static int read_info(const char *images, const char *name, pe_image_info *info, pe_err *err);

void pe_image_stack_clear(pe_image_stack *st)
{
    for (size_t i = 0; i < st->n; i++)
        free(st->dirs[i]);
    for (char **e = st->env; e && *e; e++)
        free(*e);
    free(st->env);
    memset(st, 0, sizeof(*st));
}

/* Append layer env (base first overall: the caller walks top-down and
 * prepends). */
static void stack_prepend_env(pe_image_stack *st, char **env)
{
    size_t have = 0, add = 0;
    char **v;

    for (char **e = st->env; e && *e; e++)
        have++;
    for (char **e = env; e && *e; e++)
        add++;
    if (add == 0)
        return;
    v = pe_xcalloc(have + add + 1, sizeof(char *));
    for (size_t i = 0; i < add; i++)
        v[i] = pe_xstrdup(env[i]);
    for (size_t i = 0; i < have; i++)
        v[add + i] = st->env[i];
    free(st->env);
    st->env = v;
}

/* Add image `name` (its rootfs is dir, owned by the call) and read its
 * image.json: *parent gets its parent's name (malloc'd) or NULL. */
static int stack_push(const char *data_dir, const char *name, char *dir, pe_image_stack *st,
                      char **parent, pe_err *err)
{
    cleanup_free char *images = images_path(data_dir);
    pe_image_info info;

    *parent = NULL;
    if (st->n == PE_IMAGE_MAX_LAYERS) {
        free(dir);
        return pe_err_set(err, PE_EINVAL, ELOOP, "image %s: more than %d layers", name,
                          PE_IMAGE_MAX_LAYERS);
    }
    st->dirs[st->n++] = dir;
    if (read_info(images, name, &info, err) < 0)
        return pe_err_prefix(err, "image %s", name);
    stack_prepend_env(st, info.env);
    *parent = pe_steal_ptr(&info.parent);
    free(info.name);
    free(info.source);
    for (char **e = info.env; e && *e; e++)
        free(*e);
    free(info.env);
    return 0;
}

int pe_image_resolve_stack(const char *data_dir, const char *image, pe_image_stack *out,
                           pe_err *err)
{
    cleanup_free char *name = NULL;
    char *dir = NULL;

    memset(out, 0, sizeof(*out));
    if (image != NULL && strchr(image, '/') != NULL) {
        if (resolve_dir(image, &dir, err) < 0)
            return -1;
        out->dirs[out->n++] = dir;
        return 0;
    }
    if (pe_image_resolve(data_dir, image, &dir, err) < 0)
        return -1;
    name = pe_xstrdup(image);
    while (name != NULL) {
        char *parent = NULL;
        int r;

        if (stack_push(data_dir, name, dir, out, &parent, err) < 0)
            goto fail;
        free(name);
        name = parent;
        if (name == NULL)
            break;
        /* A parent may be a built-in image not built yet (debian). */
        r = pe_image_resolve(data_dir, name, &dir, err);
        if (r < 0) {
            pe_err_prefix(err, "image %s stands on image %s", image, name);
            goto fail;
        }
    }
    return 0;
fail:
    pe_image_stack_clear(out);
    return -1;
}

int pe_image_lock(const char *data_dir, const char *name, pe_err *err)
{
    cleanup_free char *images = NULL;
    cleanup_free char *path = NULL;
    cleanup_fd int fd = -1;

    if (!pe_name_valid(name))
        return invalid_name(name, err);
    if (ensure_images_dir(data_dir, err) < 0)
        return -1;
    images = images_path(data_dir);
    path = pe_xasprintf("%s/.lock-%s", images, name);
    fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return pe_err_sys(err, "open %s", path);
    while (flock(fd, LOCK_EX) < 0)
        if (errno != EINTR)
            return pe_err_sys(err, "lock %s", path);
    return pe_steal_fd(&fd);
}

bool pe_image_exists(const char *data_dir, const char *name)
{
    cleanup_free char *dir = NULL;

    return pe_name_valid(name) && find_rootfs(data_dir, name, &dir, NULL) == 1;
}

struct pe_image_layer {
    pe__image_stage st;
};

int pe_image_layer_begin(const char *data_dir, const char *name, const char *parent,
                         pe_image_layer **out, pe_err *err)
{
    pe_image_layer *l = pe_xcalloc(1, sizeof(*l));

    *out = NULL;
    if (parent != NULL && !pe_name_valid(parent)) {
        free(l);
        return invalid_name(parent, err);
    }
    if (pe__image_stage_open(&l->st, data_dir, name, err) < 0) {
        free(l);
        return -1;
    }
    l->st.parent = parent ? pe_xstrdup(parent) : NULL;
    *out = l;
    return 0;
}

const char *pe_image_layer_rootfs(const pe_image_layer *l)
{
    return l->st.rootfs;
}

int pe_image_layer_commit(pe_image_layer *l, const char *source, char *const *env, pe_err *err)
{
    size_t n = 0;

    for (char *const *e = env; e && *e; e++)
        n++;
    if (n > 0) {
        l->st.env = pe_xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            l->st.env[i] = pe_xstrdup(env[i]);
    }
    return pe__image_stage_commit(&l->st, source, err);
}

void pe_image_layer_free(pe_image_layer *l)
{
    if (l == NULL)
        return;
    pe__image_stage_close(&l->st);
    free(l);
}

/* ---- list ------------------------------------------------------------- */

/* image.json's env: "K=V" strings; anything else in it is ignored. */
static void read_env(const json_t *arr, char ***out)
{
    size_t n = 0, i;
    const json_t *e;

    *out = NULL;
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return;
    *out = pe_xcalloc(json_array_size(arr) + 1, sizeof(char *));
    json_array_foreach(arr, i, e)
    {
        const char *v = json_string_value(e);
        if (v != NULL && strchr(v, '=') != NULL && v[0] != '=')
            (*out)[n++] = pe_xstrdup(v);
    }
}

static int read_info(const char *images, const char *name, pe_image_info *info, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/%s/image.json", images, name);
    cleanup_free char *buf = NULL;
    size_t len = 0;
    json_error_t jerr;
    json_t *root;
    const char *source = NULL;
    json_int_t created = 0, size = 0;

    if (pe_fs_read_file(path, PE_IMAGE_JSON_MAX, &buf, &len, err) < 0)
        return -1;
    root = json_loadb(buf, len, 0, &jerr);
    if (root == NULL)
        return pe_err_set(err, PE_ESYS, 0, "%s:%d: %s", path, jerr.line, jerr.text);
    if (json_unpack(root, "{s:s, s:I, s:I}", "source", &source, "created", &created, "size",
                    &size) < 0) {
        json_decref(root);
        return pe_err_set(err, PE_ESYS, 0, "%s: missing source, created or size", path);
    }
    info->name = pe_xstrdup(name);
    info->source = pe_xstrdup(source);
    info->created = created;
    info->size = size;
    info->parent = NULL;
    info->env = NULL;
    if (json_is_string(json_object_get(root, "parent")))
        info->parent = pe_xstrdup(json_string_value(json_object_get(root, "parent")));
    read_env(json_object_get(root, "env"), &info->env);
    json_decref(root);
    return 0;
}

static int info_cmp(const void *a, const void *b)
{
    return strcmp(((const pe_image_info *)a)->name, ((const pe_image_info *)b)->name);
}

int pe_image_list(const char *data_dir, pe_image_info **out, size_t *n, pe_err *err)
{
    cleanup_free char *images = images_path(data_dir);
    pe_image_info *v = NULL;
    size_t len = 0, cap = 0;
    struct dirent *de;
    DIR *d;

    *out = NULL;
    *n = 0;
    d = opendir(images);
    if (d == NULL)
        return errno == ENOENT ? 0 : pe_err_sys(err, "open %s", images);
    while ((de = readdir(d)) != NULL) {
        pe_err e = {0};

        /* Skips ".", "..", ".lock" and every .tmp-* staging directory. */
        if (!pe_name_valid(de->d_name))
            continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 8;
            v = pe_xrealloc(v, cap * sizeof(*v));
        }
        if (read_info(images, de->d_name, &v[len], &e) < 0) {
            pe_log_warn("skipping image %s: %s", de->d_name, e.msg);
            continue;
        }
        len++;
    }
    closedir(d);
    if (len == 0) {
        free(v);
        return 0;
    }
    qsort(v, len, sizeof(*v), info_cmp);
    *out = v;
    *n = len;
    return 0;
}

static void info_clear(pe_image_info *info)
{
    free(info->name);
    free(info->source);
    free(info->parent);
    for (char **e = info->env; e && *e; e++)
        free(*e);
    free(info->env);
}

bool pe_image_listed(const char *data_dir, const char *name)
{
    cleanup_free char *images = images_path(data_dir);
    pe_image_info info;

    if (!pe_name_valid(name) || read_info(images, name, &info, NULL) < 0)
        return false;
    info_clear(&info);
    return true;
}

void pe_image_info_free(pe_image_info *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        info_clear(&v[i]);
    free(v);
}

/* ---- remove, gc ------------------------------------------------------- */

/* The name of an image whose parent is `name` (malloc'd), or NULL. */
static int child_of(const char *data_dir, const char *name, char **out)
{
    pe_image_info *v = NULL;
    size_t n = 0;

    *out = NULL;
    if (pe_image_list(data_dir, &v, &n, NULL) < 0)
        return 0; /* nothing listed: nothing stands on it */
    for (size_t i = 0; i < n && *out == NULL; i++)
        if (v[i].parent != NULL && strcmp(v[i].parent, name) == 0)
            *out = pe_xstrdup(v[i].name);
    pe_image_info_free(v, n);
    return 0;
}

int pe_image_remove(const char *data_dir, const char *name, pe_err *err)
{
    cleanup_free char *images = NULL;
    cleanup_free char *child = NULL;
    cleanup_free char *dir = NULL;
    cleanup_free char *gone = NULL;

    if (!pe_name_valid(name))
        return invalid_name(name, err);
    if (child_of(data_dir, name, &child) < 0)
        return -1;
    if (child != NULL)
        return pe_err_set(err, PE_ESTATE, 0,
                          "image %s is the parent layer of image %s; remove that first", name,
                          child);
    images = images_path(data_dir);
    dir = pe_xasprintf("%s/%s", images, name);
    gone = pe_xasprintf("%s/.tmp-rm-%s-%d", images, name, (int)getpid());
    /* A leftover of an earlier failed removal in a process with our pid
     * would make the rename fail with ENOTEMPTY. */
    if (pe_fs_rm_rf(gone, err) < 0)
        return pe_err_prefix(err, "remove image %s", name);
    if (rename(dir, gone) < 0) {
        if (errno == ENOENT)
            return pe_err_set(err, PE_ENOENT, 0, "unknown image %s (see: pocketenv image ls)",
                              name);
        return pe_err_sys(err, "remove image %s: rename %s", name, dir);
    }
    if (pe_fs_rm_rf(gone, err) < 0)
        return pe_err_prefix(err, "image %s is removed but its files remain in %s", name, gone);
    return 0;
}

/* pid from ".tmp-<name>-<pid>" or ".tmp-rm-<name>-<pid>"; -1 if none. */
static pid_t tmp_pid(const char *name)
{
    const char *p = strrchr(name, '-');
    long long v = 0;

    if (p == NULL || p[1] == '\0')
        return -1;
    for (p++; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX)
            return -1;
    }
    return v > 0 ? (pid_t)v : -1;
}

static int gc_entry(int dfd, const char *images, const char *name, pe_err *err)
{
    cleanup_free char *path = NULL;
    pid_t pid = tmp_pid(name);

    if (pid < 0) {
        pe_log_debug("gc: leaving %s/%s alone: no pid in its name", images, name);
        return 0;
    }
    if (kill(pid, 0) == 0 || errno != ESRCH)
        return 0;
    /* A dead pid may still be a live build in another pid namespace
     * sharing this directory: its stage lock says so. */
    if (dir_locked(dfd, name))
        return 0;
    path = pe_xasprintf("%s/%s", images, name);
    pe_log_info("gc: removing %s (pid %d is gone)", path, (int)pid);
    return pe_fs_rm_rf(path, err);
}

int pe_image_gc(const char *data_dir, pe_err *err)
{
    cleanup_free char *images = images_path(data_dir);
    struct dirent *de;
    int ret = 0;
    DIR *d = opendir(images);

    if (d == NULL)
        return errno == ENOENT ? 0 : pe_err_sys(err, "open %s", images);
    while ((de = readdir(d)) != NULL) {
        pe_err e = {0};

        if (strncmp(de->d_name, ".tmp-", 5) != 0)
            continue;
        if (gc_entry(dirfd(d), images, de->d_name, &e) < 0 && ret == 0) {
            /* Keep going: one stuck leftover must not keep the rest. */
            if (err != NULL)
                *err = e;
            ret = -1;
        }
    }
    closedir(d);
    return ret;
}

/* Kept here, not in image-import.c, so programs that do not import never
 * link libarchive (see cli/import-main.c). */
int pe__image_member_path(const char *name, char **out)
{
    char *res;
    size_t len = 0;

    *out = NULL;
    if (name == NULL || name[0] == '/')
        return -1;
    res = pe_xmalloc(strlen(name) + 1);
    for (const char *p = name; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);

        if (n == 2 && p[0] == '.' && p[1] == '.') {
            free(res);
            return -1;
        }
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (len > 0)
                res[len++] = '/';
            memcpy(res + len, p, n);
            len += n;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    res[len] = '\0';
    *out = res;
    return 0;
}
