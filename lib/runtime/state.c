/* Persistent sandbox state: DATA/sandboxes/<name>/state.json, written
 * atomically (tmp + fsync + rename), and the lock files that serialise
 * changes to one sandbox. Readers never need the lock: a state file is
 * always complete. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/util.h"
#include "runtime/internal.h"

#define STATE_MAX (1024 * 1024)

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

int pe__state_load(const char *dir, pe_state *st, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/state.json", dir);
    cleanup_free char *text = NULL;
    json_error_t jerr;
    json_t *o;
    int r;

    memset(st, 0, sizeof(*st));
    pe_sandbox_cfg_init(&st->cfg);
    if (pe_fs_read_file(path, STATE_MAX, &text, NULL, err) < 0)
        return -1;
    o = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL)
        return pe_err_set(err, PE_ESYS, 0, "%s: %s (line %d)", path, jerr.text, jerr.line);
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
    json_decref(o);
    if (r < 0 || st->id == NULL || st->status == NULL) {
        pe__state_clear(st);
        return r < 0 ? pe_err_prefix(err, "%s", path)
                     : pe_err_set(err, PE_ESYS, 0, "%s: incomplete state", path);
    }
    return 0;
}

static int state_write(const char *dir, const pe_state *st, bool durable, pe_err *err)
{
    cleanup_free char *path = pe_xasprintf("%s/state.json", dir);
    json_t *o = pe__state_to_json(st);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    int r;

    json_decref(o);
    if (text == NULL)
        return pe_err_set(err, PE_ESYS, ENOMEM, "encode state");
    r = durable ? pe_fs_write_atomic(path, text, strlen(text), 0600, err)
                : pe_fs_write_whole(path, text, strlen(text), 0600, err);
    free(text);
    return r;
}

int pe__state_save(const char *dir, const pe_state *st, pe_err *err)
{
    return state_write(dir, st, true, err);
}

int pe__state_save_started(const char *dir, const pe_state *st, pe_err *err)
{
    return state_write(dir, st, false, err);
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
