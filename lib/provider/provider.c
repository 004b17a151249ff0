/* The provider registry and the calls every caller goes through
 * (provider.h): capability checks, the standard "not supported" error,
 * and the one-shot exec over a stream for adapters without their own.
 *
 * The wrappers exist so that a missing capability is refused in one place,
 * before anything is sent, with the same words on every provider. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "core/util.h"
#include "provider-internal.h"

extern const pe_provider_ops pe__provider_cloudflare;
extern const pe_provider_ops pe__provider_daytona;
extern const pe_provider_ops pe__provider_sprites;
extern const pe_provider_ops pe__provider_vercel;
extern const pe_provider_ops pe__provider_deno;
extern const pe_provider_ops pe__provider_local;
extern const pe_provider_ops pe__provider_e2b;
extern const pe_provider_ops pe__provider_runloop;
extern const pe_provider_ops pe__provider_hopx;
extern const pe_provider_ops pe__provider_blaxel;
extern const pe_provider_ops pe__provider_kubernetes;
extern const pe_provider_ops pe__provider_modal;

static const pe_provider_ops *const adapters[] = {
    &pe__provider_cloudflare, &pe__provider_daytona,    &pe__provider_sprites,
    &pe__provider_vercel,     &pe__provider_deno,       &pe__provider_local,
    &pe__provider_e2b,        &pe__provider_runloop,    &pe__provider_hopx,
    &pe__provider_blaxel,     &pe__provider_kubernetes, &pe__provider_modal,
};

const char *const pe_provider_adapters[] = {"blaxel",  "cloudflare", "daytona", "deno",  "e2b",
                                            "hopx",    "kubernetes", "local",   "modal", "runloop",
                                            "sprites", "vercel",     NULL};

static const char *const cap_names[] = {
    "stop",
    "pty",
    "stdin",
    "file-list",
    "file-remove",
    "tar",
    "preview",
    "pause",
    "snapshot",
    "volumes",
    "services",
    "snapshot-base",
    "snapshot-restore",
};

const char *pe_provider_cap_name(unsigned cap)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(cap_names); i++)
        if (cap == 1u << i)
            return cap_names[i];
    return "?";
}

const pe_provider_ops *pe_provider_lookup(const char *name)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(adapters); i++)
        if (strcmp(adapters[i]->name, name) == 0)
            return adapters[i];
    return NULL;
}

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0)
        abort();
}

static char *dup_or_null(const char *s)
{
    return s ? pe_xstrdup(s) : NULL;
}

int pe_provider_open(pe_provider **out, const char *name, const pe_provider_config *cfg,
                     pe_err *err)
{
    const pe_provider_ops *ops = name ? pe_provider_lookup(name) : NULL;
    pe_provider *p;

    pthread_once(&global_once, global_init);
    if (ops == NULL) {
        /* the list is pe_provider_adapters, so it never drifts from the table */
        char names[256] = "";
        size_t used = 0;
        for (const char *const *n = pe_provider_adapters; *n; n++)
            used += (size_t)snprintf(names + used, used < sizeof(names) ? sizeof(names) - used : 0,
                                     "%s%s", used ? ", " : "", *n);
        return pe_err_set(err, PE_EINVAL, 0, "unknown provider '%s'; adapters: %s",
                          name ? name : "", names);
    }
    if (!ops->keyless && (cfg->creds.key == NULL || cfg->creds.key[0] == '\0'))
        return pe_err_set(err, PE_EINVAL, 0, "%s: no API key given", name);
    p = pe_xcalloc(1, sizeof(*p));
    p->ops = ops;
    p->cfg = *cfg;
    p->cfg.creds.base_url = dup_or_null(cfg->creds.base_url);
    p->cfg.creds.key = dup_or_null(cfg->creds.key);
    p->cfg.creds.org = dup_or_null(cfg->creds.org);
    p->cfg.creds.project = dup_or_null(cfg->creds.project);
    p->cfg.preview_url = dup_or_null(cfg->preview_url);
    if (p->cfg.timeout_ms <= 0)
        p->cfg.timeout_ms = PE_PROVIDER_TIMEOUT_MS;
    if (p->cfg.create_timeout_ms <= 0)
        p->cfg.create_timeout_ms = PE_PROVIDER_CREATE_TIMEOUT_MS;
    if (ops->open && ops->open(p, err) < 0) {
        pe_provider_close(p);
        return -1;
    }
    *out = p;
    return 0;
}

void pe_provider_close(pe_provider *p)
{
    if (p == NULL)
        return;
    if (p->ops->close)
        p->ops->close(p);
    free((char *)p->cfg.creds.base_url);
    pe__secret_free((char *)p->cfg.creds.key);
    pe__secret_free((char *)p->cfg.creds.org);
    pe__secret_free((char *)p->cfg.creds.project);
    free((char *)p->cfg.preview_url);
    free(p);
}

/* Tar through the file calls, for adapters without an archive call. */
static bool tar_by_files(const pe_provider *p)
{
    return p->ops->tar_in == NULL && p->ops->file_list && p->ops->file_read && p->ops->file_write &&
           (p->ops->caps & PE_CAP_FILE_LIST);
}

unsigned pe_provider_caps(const pe_provider *p)
{
    return p->ops->caps | (tar_by_files(p) ? PE_CAP_TAR : 0);
}

int pe_provider_unsupported(const pe_provider *p, const char *capability, pe_err *err)
{
    return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: %s", p->ops->name, capability);
}

#define NEED(p, cap)                                                                               \
    do {                                                                                           \
        if (!(pe_provider_caps(p) & (cap)))                                                        \
            return pe_provider_unsupported(p, pe_provider_cap_name(cap), err);                     \
    } while (0)
#define HAVE(p, fn, what)                                                                          \
    do {                                                                                           \
        if ((p)->ops->fn == NULL)                                                                  \
            return pe_provider_unsupported(p, what, err);                                          \
    } while (0)

const char *pe_provider_spec_refused(const pe_provider_ops *ops, const pe_provider_spec *spec)
{
    if (spec->image && spec->image[0] && !(ops->takes & PE_TAKES_IMAGE))
        return "choice of image";
    if (spec->snapshot && !(ops->caps & PE_CAP_SNAPSHOT_BASE))
        return "snapshot-base";
    if (spec->cpu_millis > 0 && !(ops->takes & PE_TAKES_CPU))
        return "cpu size";
    if (spec->memory_bytes > 0 && !(ops->takes & PE_TAKES_MEMORY))
        return "memory size";
    if (spec->disk_bytes > 0 && !(ops->takes & PE_TAKES_DISK))
        return "disk size";
    return NULL;
}

int pe_provider_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err)
{
    const char *refused = pe_provider_spec_refused(p->ops, spec);

    if (refused)
        return pe_provider_unsupported(p, refused, err);
    return p->ops->create(p, spec, id, err);
}

int pe_provider_start(pe_provider *p, const char *id, pe_err *err)
{
    HAVE(p, start, "start");
    return p->ops->start(p, id, err);
}

int pe_provider_start_with(pe_provider *p, const char *id, const pe_provider_start_opts *o,
                           pe_err *err)
{
    if (o == NULL || ((o->env == NULL || o->env[0] == NULL) && o->n_mounts == 0))
        return pe_provider_start(p, id, err);
    if (o->n_mounts)
        NEED(p, PE_CAP_VOLUMES);
    HAVE(p, start_with, "start with environment");
    return p->ops->start_with(p, id, o, err);
}

int pe_provider_stop(pe_provider *p, const char *id, pe_err *err)
{
    HAVE(p, stop, "stop");
    return p->ops->stop(p, id, err);
}

int pe_provider_remove(pe_provider *p, const char *id, pe_err *err)
{
    return p->ops->remove(p, id, err);
}

int pe_provider_status_get(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err)
{
    memset(st, 0, sizeof(*st));
    return p->ops->status(p, id, st, err);
}

int pe_provider_pause(pe_provider *p, const char *id, pe_err *err)
{
    NEED(p, PE_CAP_PAUSE);
    return p->ops->pause(p, id, err);
}

int pe_provider_resume(pe_provider *p, const char *id, pe_err *err)
{
    NEED(p, PE_CAP_PAUSE);
    return p->ops->resume(p, id, err);
}

int pe_provider_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                                pe_err *err)
{
    *snap_id = NULL;
    NEED(p, PE_CAP_SNAPSHOT);
    return p->ops->snapshot_create(p, id, name, snap_id, err);
}

int pe_provider_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err)
{
    NEED(p, PE_CAP_SNAPSHOT);
    return p->ops->snapshot_delete(p, snap_id, err);
}

int pe_provider_snapshot_restore(pe_provider *p, const char *id, const char *snap_id, pe_err *err)
{
    NEED(p, PE_CAP_SNAPSHOT_RESTORE);
    return p->ops->snapshot_restore(p, id, snap_id, err);
}

int pe_provider_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                           pe_provider_proc *proc, pe_err *err)
{
    int r;

    if (o->tty)
        NEED(p, PE_CAP_PTY);
    if (o->stdin_pipe)
        NEED(p, PE_CAP_STDIN);
    if (o->argv == NULL || o->argv[0] == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "%s: exec: no command", p->ops->name);
    r = p->ops->exec_start(p, id, o, proc, err);
    if (r == 0)
        proc->owner = NULL; /* the caller's to set */
    return r;
}

/* Append what fd has to (*buf, *len), keeping at most max. false at EOF. */
static bool drain(int fd, char **buf, size_t *len, size_t max, bool *truncated)
{
    char tmp[16384];
    ssize_t n = read(fd, tmp, sizeof(tmp));

    if (n < 0 && errno == EINTR)
        return true;
    if (n <= 0)
        return false;
    if (*len + (size_t)n > max) {
        *truncated = true;
        n = (ssize_t)(max - *len);
    }
    *buf = pe_xrealloc(*buf, *len + (size_t)n + 1);
    memcpy(*buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
    (*buf)[*len] = '\0';
    return true;
}

/* How long a killed process may take to end before we stop waiting. */
#define KILL_GRACE_MS 5000

/* One-shot exec over exec_start: read both streams to EOF, then wait. On
 * o->timeout the process is asked to end; if it does not within the
 * grace, we stop waiting (closing the stream ends our side of it). */
static int exec_by_stream(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                          size_t max, pe_provider_exec_result *res, pe_err *err)
{
    pe_provider_exec_opts so = *o;
    int64_t start = pe_monotonic_ms();
    int64_t deadline = o->timeout > 0 ? start + (int64_t)(o->timeout * 1000) : -1;
    bool gave_up = false;
    pe_provider_proc proc;
    int r = 0;

    so.tty = false;
    so.stdin_pipe = false;
    if (p->ops->exec_start(p, id, &so, &proc, err) < 0)
        return -1;
    while (proc.stdout_fd >= 0 || proc.stderr_fd >= 0) {
        struct pollfd pfd[2] = {{.fd = proc.stdout_fd, .events = POLLIN},
                                {.fd = proc.stderr_fd, .events = POLLIN}};
        int64_t left = deadline < 0 ? -1 : deadline - pe_monotonic_ms();
        int n = poll(pfd, 2, left < 0 ? -1 : (int)left);
        if (n < 0 && errno != EINTR)
            break;
        if (n == 0 && !res->timed_out) {
            res->timed_out = true;
            pe_provider_proc_kill(&proc);
            deadline = pe_monotonic_ms() + KILL_GRACE_MS;
            continue;
        }
        if (n == 0) {
            gave_up = true;
            break;
        }
        if (pfd[0].revents &&
            !drain(proc.stdout_fd, &res->out, &res->out_len, max, &res->truncated)) {
            close(proc.stdout_fd);
            proc.stdout_fd = -1;
        }
        if (pfd[1].revents &&
            !drain(proc.stderr_fd, &res->err, &res->err_len, max, &res->truncated)) {
            close(proc.stderr_fd);
            proc.stderr_fd = -1;
        }
    }
    if (!gave_up)
        r = pe_provider_proc_wait(&proc, &res->exit_code, err);
    pe_provider_proc_close(&proc);
    /* past its timeout, however the end looked (the provider may have cut
     * the stream itself): a timed-out process, as the local runtime says */
    if (o->timeout > 0 && (gave_up || r < 0) &&
        pe_monotonic_ms() - start >= (int64_t)(o->timeout * 1000)) {
        res->timed_out = true;
        res->exit_code = 137;
        pe_err_clear(err);
        return 0;
    }
    return gave_up ? -1 : r;
}

int pe_provider_exec(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                     size_t max_output, pe_provider_exec_result *res, pe_err *err)
{
    memset(res, 0, sizeof(*res));
    if (o->argv == NULL || o->argv[0] == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "%s: exec: no command", p->ops->name);
    if (p->ops->exec)
        return p->ops->exec(p, id, o, max_output, res, err);
    if (exec_by_stream(p, id, o, max_output, res, err) < 0) {
        pe_provider_exec_free(res);
        if (err->code != PE_ENOEXEC)
            return -1;
        /* a command that is not there: 127 and why, as a shell (and every
         * remote provider) reports it */
        res->exit_code = 127;
        res->err = pe_xasprintf("%s\n", err->msg);
        res->err_len = strlen(res->err);
        pe_err_clear(err);
    }
    if (res->out == NULL)
        res->out = pe_xstrdup("");
    if (res->err == NULL)
        res->err = pe_xstrdup("");
    return 0;
}

void pe_provider_exec_free(pe_provider_exec_result *res)
{
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
}

int pe_provider_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                          size_t *len, pe_err *err)
{
    return p->ops->file_read(p, id, path, max, data, len, err);
}

int pe_provider_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                           size_t len, unsigned mode, pe_err *err)
{
    return p->ops->file_write(p, id, path, data, len, mode, err);
}

int pe_provider_file_list(pe_provider *p, const char *id, const char *path,
                          pe_provider_dirent **ents, size_t *n, pe_err *err)
{
    NEED(p, PE_CAP_FILE_LIST);
    *ents = NULL;
    *n = 0;
    return p->ops->file_list(p, id, path, ents, n, err);
}

int pe_provider_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                            pe_err *err)
{
    NEED(p, PE_CAP_FILE_REMOVE);
    return p->ops->file_remove(p, id, path, recursive, err);
}

int pe_provider_tar_in(pe_provider *p, const char *id, const char *dir, const void *tar, size_t len,
                       pe_err *err)
{
    NEED(p, PE_CAP_TAR);
    if (tar_by_files(p))
        return pe__provider_tar_in_by_files(p, id, dir, tar, len, err);
    return p->ops->tar_in(p, id, dir, tar, len, err);
}

int pe_provider_tar_out(pe_provider *p, const char *id, const char *dir, size_t max, char **tar,
                        size_t *len, pe_err *err)
{
    NEED(p, PE_CAP_TAR);
    if (tar_by_files(p))
        return pe__provider_tar_out_by_files(p, id, dir, max, tar, len, err);
    return p->ops->tar_out(p, id, dir, max, tar, len, err);
}

int pe_provider_preview(pe_provider *p, const char *id, uint16_t port,
                        pe_provider_preview_link *out, pe_err *err)
{
    NEED(p, PE_CAP_PREVIEW);
    memset(out, 0, sizeof(*out));
    if (p->ops->preview(p, id, port, out, err) < 0)
        return -1;
    out->forward = out->needs_credential && p->ops->port_open != NULL;
    return 0;
}

int pe_provider_port_open(pe_provider *p, const char *id, uint16_t port, int *fd, pe_err *err)
{
    *fd = -1;
    if (p->ops->port_open == NULL)
        return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: port-forward", p->ops->name);
    return p->ops->port_open(p, id, port, fd, err);
}

bool pe_provider_can_port_open(const pe_provider *p)
{
    return p->ops->port_open != NULL;
}

int pe__provider_remove_by_exec(pe_provider *p, const char *id, const char *path, bool recursive,
                                pe_err *err)
{
    char *argv[] = {(char *)"rm", (char *)"-r", (char *)path, NULL};
    pe_provider_exec_opts o = {.argv = recursive ? argv : argv + 1};
    pe_provider_exec_result res;
    int r;

    if (!recursive)
        argv[1] = (char *)"rm";
    if (pe_provider_exec(p, id, &o, 4096, &res, err) < 0)
        return -1;
    r = res.exit_code == 0 ? 0
                           : pe_err_set(err, strstr(res.err, "No such") ? PE_ENOENT : PE_EINVAL, 0,
                                        "%s: remove %s: %.300s", p->ops->name, path, res.err);
    pe_provider_exec_free(&res);
    return r;
}
