/* Persistent sandbox state: DATA/sandboxes/<name>/state.json, with
 * run.json while a start's state is newer.
 *
 * state.json holds what must survive the host: made once at create, in the
 * sandbox's private staging directory (written and fsynced in place, then
 * renamed in with the directory), and replaced atomically (tmp + fsync +
 * rename + fsync of the directory) by every later change that must last: a
 * stop, a pause, a new name or config.
 *
 * What a start adds (running, init's pid and start time, the network lease)
 * lasts only as long as this boot: it goes to run.json, the whole state,
 * replaced atomically without any fsync. run.json names the state.json it
 * was written over (inode and mtime), and a load takes it only while that
 * very file is still in place: a durable save replaces state.json and so
 * outdates run.json at once (and then removes it), and a run.json that a
 * crash of the host left behind, stale, empty or partial, is ignored. The
 * state.json under it then reads as not running, which after a crash of
 * the host is the truth.
 *
 * run.json, the spawn socket and (--net nat) the resolv.conf and hosts a
 * start binds into the sandbox live in PE_RUN_DIR, a tmpfs (as runc keeps
 * its state in /run/runc), named by the sandbox directory's device and
 * inode, which a rename keeps: a new inode there costs nothing of the data
 * directory's filesystem (on ext4 without a journal, every new inode scans
 * the recently deleted ones). Where PE_RUN_DIR cannot be had, and for
 * sandboxes started by builds before it, they are in the sandbox's
 * directory: loads and execs look there second.
 *
 * Readers never need the lock: each file is always complete. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/internal.h"

#define STATE_MAX (1024 * 1024)
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6
#endif

static bool run_dir_ok;
static pthread_once_t run_dir_once = PTHREAD_ONCE_INIT;

static bool on_tmpfs(const char *path)
{
    struct statfs sf;

    return statfs(path, &sf) == 0 &&
           ((unsigned long)sf.f_type == TMPFS_MAGIC || (unsigned long)sf.f_type == RAMFS_MAGIC);
}

/* PE_RUN_DIR made, root's alone, and on tmpfs: where /run is not one (this
 * host's is on ext4), a tmpfs of its own is mounted there once per boot,
 * under a lock so that two processes never stack two. Never unmounted: it
 * holds the state of every running sandbox of every data directory. */
static void run_dir_setup(void)
{
    struct stat sb;
    int lock;

    mkdir("/run", 0755);
    mkdir("/run/pocketenv", 0700);
    mkdir(PE_RUN_DIR, 0700);
    if (lstat(PE_RUN_DIR, &sb) < 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != geteuid())
        return;
    if (!on_tmpfs(PE_RUN_DIR)) {
        lock = open(PE_RUN_DIR ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lock < 0 || flock(lock, LOCK_EX) < 0) {
            if (lock >= 0)
                close(lock);
            return;
        }
        if (!on_tmpfs(PE_RUN_DIR))
            mount("pocketenv-run", PE_RUN_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=0700");
        close(lock);
        /* Without the right to mount (a container), the directory as it is. */
    }
    run_dir_ok = lstat(PE_RUN_DIR, &sb) == 0 && S_ISDIR(sb.st_mode) && sb.st_uid == geteuid() &&
                 (sb.st_mode & 077) == 0;
}

char *pe__run_file(const char *dir, const char *ext)
{
    struct stat sb;

    pthread_once(&run_dir_once, run_dir_setup);
    if (!run_dir_ok || stat(dir, &sb) < 0)
        return NULL;
    return pe_xasprintf("%s/%llx-%llu.%s", PE_RUN_DIR, (unsigned long long)sb.st_dev,
                        (unsigned long long)sb.st_ino, ext);
}

/* dir's run.json: in the run directory, or (old, 1) in dir itself, as
 * builds before kept it and as it is kept where the run directory cannot
 * be had. */
static char *run_json_path(const char *dir, int old)
{
    char *p = old ? NULL : pe__run_file(dir, "json");

    return p != NULL ? p : pe_xasprintf("%s/run.json", dir);
}

static void unlink_run_json(const char *dir)
{
    for (int old = 0; old < 2; old++) {
        cleanup_free char *path = run_json_path(dir, old);
        unlink(path);
    }
}

void pe__run_files_remove(const char *dir)
{
    static const char *const exts[] = {"resolv.conf", "hosts"};

    for (size_t i = 0; i < PE_ARRAY_LEN(exts); i++) {
        cleanup_free char *path = pe__run_file(dir, exts[i]);
        if (path != NULL)
            unlink(path);
    }
    unlink_run_json(dir);
    pe__spawn_unlink(dir);
}

void pe__state_clear(pe_state *st)
{
    free(st->id);
    free(st->status);
    free(st->rootfs);
    for (char **l = st->layers; l && *l; l++)
        free(*l);
    free(st->layers);
    free(st->error);
    free(st->layer);
    pe_sandbox_cfg_clear(&st->cfg);
    memset(st, 0, sizeof(*st));
    pe_sandbox_cfg_init(&st->cfg);
}

json_t *pe__state_to_json(const pe_state *st)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", json_string(st->id));
    json_object_set_new(o, "name", json_string(st->cfg.name ? st->cfg.name : ""));
    json_object_set_new(o, "status", json_string(st->status));
    json_object_set_new(o, "image", json_string(st->cfg.image ? st->cfg.image : PE_DEFAULT_IMAGE));
    json_object_set_new(o, "rootfs", json_string(st->rootfs ? st->rootfs : ""));
    if (st->layers != NULL) {
        json_t *l = json_array();
        for (char **p = st->layers; *p; p++)
            json_array_append_new(l, json_string(*p));
        json_object_set_new(o, "layers", l);
    }
    json_object_set_new(o, "pid", json_integer(st->pid));
    json_object_set_new(o, "startTime", json_integer((json_int_t)st->start_time));
    json_object_set_new(o, "idBase", json_integer(st->id_base));
    json_object_set_new(o, "created", json_integer(st->created));
    json_object_set_new(o, "started", json_integer(st->started));
    json_object_set_new(o, "error", st->error ? json_string(st->error) : json_null());
    json_object_set_new(o, "layer", st->layer ? json_string(st->layer) : json_null());
    json_object_set_new(o, "config", pe__cfg_to_json(&st->cfg));
    json_object_set_new(o, "network", st->net.addr ? pe__net_lease_to_json(&st->net) : json_null());
    return o;
}

static char *dup_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? pe_xstrdup(s) : NULL;
}

static void load_layers(json_t *arr, pe_state *st)
{
    size_t i, n = 0;
    json_t *e;

    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > PE_MAX_LOWERS)
        return;
    st->layers = pe_xcalloc(json_array_size(arr) + 1, sizeof(char *));
    json_array_foreach(arr, i, e)
    {
        if (json_is_string(e))
            st->layers[n++] = pe_xstrdup(json_string_value(e));
    }
}

/* Fill st from o, one of the two files (path, for errors). */
static int state_from_json(json_t *o, const char *path, pe_state *st, pe_err *err)
{
    int r;

    st->id = dup_str(o, "id");
    st->status = dup_str(o, "status");
    st->rootfs = dup_str(o, "rootfs");
    load_layers(json_object_get(o, "layers"), st);
    st->error = dup_str(o, "error");
    st->layer = dup_str(o, "layer");
    st->id_base = (uint32_t)json_integer_value(json_object_get(o, "idBase"));
    st->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
    st->start_time = (uint64_t)json_integer_value(json_object_get(o, "startTime"));
    st->created = json_integer_value(json_object_get(o, "created"));
    st->started = json_integer_value(json_object_get(o, "started"));
    pe__net_lease_from_json(json_object_get(o, "network"), &st->net);
    r = pe__cfg_from_json(json_object_get(o, "config"), &st->cfg, err);
    if (r < 0 || st->id == NULL || st->status == NULL) {
        pe__state_clear(st);
        return r < 0 ? pe_err_prefix(err, "%s", path)
                     : pe_err_set(err, PE_ESYS, 0, "%s: incomplete state", path);
    }
    return 0;
}

/* dir/state.json's inode and mtime: the file a run.json is over. Not the
 * ctime, which a chown or chmod of the data directory would change: the
 * file is only ever replaced, never written again, so its mtime is the
 * time of its one write. */
static int state_stamp(const char *dir, char *out, size_t len)
{
    cleanup_free char *path = pe_xasprintf("%s/state.json", dir);
    struct stat sb;

    if (stat(path, &sb) < 0)
        return -1;
    snprintf(out, len, "%llu:%lld.%09ld", (unsigned long long)sb.st_ino,
             (long long)sb.st_mtim.tv_sec, (long)sb.st_mtim.tv_nsec);
    return 0;
}

/* The run.json of dir if it is over the state.json in place now, else
 * NULL; *path_out: the file read. It is read before state.json is looked
 * at: a durable save racing with this load either has not replaced
 * state.json yet (run.json is then the state before that save, complete)
 * or has (the stamp no longer matches). */
static json_t *load_run(const char *dir, char **path_out)
{
    char *paths[2] = {run_json_path(dir, 0), run_json_path(dir, 1)};
    cleanup_free char *text = NULL;
    const char *of;
    char stamp[64];
    pe_err tmp;
    json_t *o = NULL;
    int i;

    /* ENOENT at both: not started since the last durable save */
    for (i = 0; i < 2 && text == NULL; i++)
        if (paths[i] != NULL && pe_fs_read_file(paths[i], STATE_MAX, &text, NULL, &tmp) < 0)
            text = NULL;
    if (text != NULL) {
        o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        of = json_string_value(json_object_get(o, "of"));
        if (of == NULL || state_stamp(dir, stamp, sizeof(stamp)) < 0 || strcmp(of, stamp) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    *path_out = o != NULL ? paths[i - 1] : NULL;
    for (int k = 0; k < 2; k++)
        if (paths[k] != *path_out)
            free(paths[k]);
    return o;
}

int pe__state_load(const char *dir, pe_state *st, pe_err *err)
{
    cleanup_free char *path = NULL;
    cleanup_free char *text = NULL;
    json_error_t jerr;
    json_t *o;
    int r;

    memset(st, 0, sizeof(*st));
    pe_sandbox_cfg_init(&st->cfg);
    o = load_run(dir, &path);
    if (o != NULL) {
        r = state_from_json(o, path, st, err);
        json_decref(o);
        return r;
    }
    path = pe_xasprintf("%s/state.json", dir);
    if (pe_fs_read_file(path, STATE_MAX, &text, NULL, err) < 0)
        return -1;
    o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL)
        return pe_err_set(err, PE_ESYS, 0, "%s: %s (line %d)", path, jerr.text, jerr.line);
    r = state_from_json(o, path, st, err);
    json_decref(o);
    return r;
}

/* st as the text of one of the files; of: the stamp a run.json is over. */
static char *state_text(const pe_state *st, const char *of, pe_err *err)
{
    json_t *o = pe__state_to_json(st);
    char *text;

    if (of != NULL)
        json_object_set_new(o, "of", json_string(of));
    text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    if (text == NULL)
        pe_err_set(err, PE_ESYS, ENOMEM, "encode state");
    return text;
}

int pe__state_save(const char *dir, const pe_state *st, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/state.json", dir);
    cleanup_free char *text = state_text(st, NULL, err);

    if (text == NULL || pe_fs_write_atomic(path, text, strlen(text), 0600, err) < 0)
        return -1;
    /* Outdated by the new state.json already; removed so that loads read
     * one file again. */
    unlink_run_json(dir);
    return 0;
}

int pe__state_save_new(const char *dir, const pe_state *st, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/state.json", dir);
    cleanup_free char *text = state_text(st, NULL, err);

    if (text == NULL)
        return -1;
    return pe_fs_write_new_synced(path, text, strlen(text), 0600, err);
}

int pe__state_save_started(const char *dir, const pe_state *st, pe_err *err)
{
    cleanup_free char *path = run_json_path(dir, 0);
    cleanup_free char *text = NULL;
    char stamp[64];

    if (state_stamp(dir, stamp, sizeof(stamp)) < 0)
        return pe_err_sys(err, "stat %s/state.json", dir);
    text = state_text(st, stamp, err);
    if (text == NULL)
        return -1;
    return pe_fs_write_replace(path, text, strlen(text), 0600, err);
}

bool pe__state_alive(const pe_state *st)
{
    return st->pid > 0 && st->start_time != 0 && pe__proc_start_time(st->pid) == st->start_time;
}

int pe__lock_file(const char *path, int op, pe_err *err)
{
    /* A directory is locked through a read-only fd of its own. */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 && errno == ENOTDIR)
        fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0)
        return pe_err_sys(err, "open lock %s", path);
    while (flock(fd, op) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        errno = e;
        return e == EWOULDBLOCK ? -2 : pe_err_sys(err, "lock %s", path);
    }
    return fd;
}

void pe__random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[32];

    if (nbytes > sizeof(b))
        nbytes = sizeof(b);
    if (getrandom(b, nbytes, 0) != (ssize_t)nbytes)
        for (size_t i = 0; i < nbytes; i++)
            b[i] = (unsigned char)(rand() ^ getpid());
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * nbytes] = '\0';
}
