/* The provider interface: where a sandbox runs.
 *
 * One function-pointer table per backend (provider-local.c for the Linux
 * runtime, provider-<vendor>.c for each remote service), so that the
 * sandbox layer above (lib/sandbox/) and the daemon never name a provider.
 * docs/design/providers.md says why it has this shape.
 *
 * Threading: every call blocks (a remote call is an HTTP request with a
 * deadline), so callers run them on the worker pool, never on the event
 * loop. A pe_provider is shared by all threads; calls on distinct or the
 * same sandboxes may run at the same time. Streams (exec_start) hand the
 * loop file descriptors, the way pe_runtime_exec_start does, and pump the
 * remote side on a thread of their own.
 *
 * Errors: < 0 and err filled. err->msg always names the provider and never
 * holds a credential. Codes: PE_ENOTCAP for a capability the provider lacks
 * ("not supported by daytona: pause"; the daemon answers 501), PE_EAUTH
 * when the provider rejected the credential, PE_ETIMEDOUT when it did not
 * answer in time, PE_EREMOTE for a 5xx or an answer that is not its API,
 * PE_ENOENT for an unknown sandbox or path, PE_EINVAL for what it refused
 * as bad input. */
#ifndef PE_PROVIDER_H
#define PE_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"

typedef struct pe_provider pe_provider;

/* Optional capabilities an adapter declares (pe_provider_caps). A call to
 * one it lacks fails with pe_provider_unsupported's error and sends
 * nothing. The core set (lifecycle, exec, files, ports) is not optional
 * but an adapter may still lack a piece of it (Vercel v1 cannot delete a
 * file's listing): those are declared here too. */
enum pe_provider_cap {
    PE_CAP_STOP = 1u << 0,        /* stop/start keep the filesystem */
    PE_CAP_PTY = 1u << 1,         /* exec_start with tty */
    PE_CAP_STDIN = 1u << 2,       /* exec_start's stdin reaches the process */
    PE_CAP_FILE_LIST = 1u << 3,   /* file_list */
    PE_CAP_FILE_REMOVE = 1u << 4, /* file_remove */
    PE_CAP_TAR = 1u << 5,         /* tar_in / tar_out */
    PE_CAP_PREVIEW = 1u << 6,     /* preview (any port, or the one it routes) */
    /* pause / resume: no compute until the next use resumes it; memory
     * kept on E2B and Daytona, only the disk on Runloop (its suspend) */
    PE_CAP_PAUSE = 1u << 7,
    PE_CAP_SNAPSHOT = 1u << 8,  /* snapshot_create / snapshot_delete */
    PE_CAP_VOLUMES = 1u << 9,   /* volumes mounted at create */
    PE_CAP_SERVICES = 1u << 10, /* supervised services */
    /* A new sandbox from a snapshot (spec.snapshot), so a fork: the
     * snapshot outlives its sandbox. Sprites' checkpoints cannot. */
    PE_CAP_SNAPSHOT_BASE = 1u << 11,
    /* snapshot_restore: a sandbox back to one of its own snapshots, in
     * place (same id; what it wrote since is gone). */
    PE_CAP_SNAPSHOT_RESTORE = 1u << 12,
};
#define PE_CAP_LAST PE_CAP_SNAPSHOT_RESTORE

/* What a create can choose (pe_provider_ops.takes): a spec field set for
 * one an adapter does not take is refused by pe_provider_create ("not
 * supported by e2b: cpu size"), never dropped, so a sandbox never runs
 * smaller, larger or on another image than its record says. */
enum pe_provider_spec_field {
    PE_TAKES_IMAGE = 1u << 0,  /* spec.image: an image, template, snapshot or blueprint */
    PE_TAKES_CPU = 1u << 1,    /* spec.cpu_millis */
    PE_TAKES_MEMORY = 1u << 2, /* spec.memory_bytes */
    PE_TAKES_DISK = 1u << 3,   /* spec.disk_bytes */
};

/* The name of one capability bit ("pty", "pause"...), for errors and the
 * conformance matrix. */
const char *pe_provider_cap_name(unsigned cap);

/* What the caller knows of a provider account. The adapter copies what it
 * keeps, wipes its copy at pe_provider_close, and never logs any field but
 * base_url; the caller wipes its own. */
typedef struct pe_provider_creds {
    const char *base_url; /* API endpoint; NULL: the provider's public one */
    const char *key;      /* API key / token (secret) */
    const char *org;      /* Daytona organization, Vercel team (may be NULL) */
    const char *project;  /* Vercel project (may be NULL) */
} pe_provider_creds;

struct pe_runtime;

typedef struct pe_provider_config {
    pe_provider_creds creds;
    /* local only (no key): the runtime to use, borrowed for the provider's
     * life (the daemon's); NULL: one opened on data_dir (NULL: the
     * runtime's default), read at open. */
    struct pe_runtime *runtime;
    const char *data_dir;
    /* Deadline of one remote call, ms (0: 30 s), and of the whole create
     * including waiting for the sandbox to run (0: 120 s). */
    int64_t timeout_ms;
    int64_t create_timeout_ms;
    /* kubernetes: the operator's kubeconfig file (read at open; its
     * relative file names resolve beside it), used instead of the key. */
    const char *kubeconfig;
    /* hopx, runloop: the URL of a sandbox's port, a template with {port},
     * {id} (the provider's sandbox id) and {key} (Runloop's tunnel key);
     * NULL: the provider's documented public host. The operator's (a
     * self-hosted or test deployment); copied at open. */
    const char *preview_url;
    /* Credentials come only from creds and kubeconfig: a keyless adapter
     * never looks at this host's environment, home or service account
     * (the daemon sets it: a user's call must not reach those). */
    bool no_ambient;
} pe_provider_config;

/* What to create. image and the sizes go only to an adapter that takes
 * them (pe_provider_ops.takes; docs/providers.md lists which): another
 * refuses the create. The environment goes to every adapter that has one. */
typedef struct pe_provider_spec {
    const char *name;  /* our sandbox id: a label or the remote name */
    const char *image; /* image / snapshot / template; NULL: default */
    /* A snapshot of the provider's (snapshot_create's id) to make the
     * sandbox from, instead of image (PE_CAP_SNAPSHOT_BASE); NULL: none. */
    const char *snapshot;
    char *const *env;                             /* "K=V", NULL-terminated; may be NULL */
    int64_t memory_bytes, cpu_millis, disk_bytes; /* 0: provider default */
    const uint16_t *ports;                        /* ports to route (Vercel must know them now) */
    size_t n_ports;
    /* Called (on the create's thread) with the provider's id as soon as
     * the provider answered the create, before create waits for it to
     * run: so that a caller killed during that wait has written down what
     * may be left there. NULL: not told. */
    void (*made)(void *ud, const char *id);
    void *made_ud;
} pe_provider_spec;

/* A volume: a directory of the caller's mounted at path (PE_CAP_VOLUMES). */
typedef struct pe_provider_mount {
    const char *host_dir;
    const char *path;
    bool ro;
} pe_provider_mount;

/* What one start adds to a sandbox, for that run only: the provider keeps
 * none of it (the environment holds opened secrets). Every pointer is
 * borrowed for the call. */
typedef struct pe_provider_start_opts {
    char *const *env; /* "K=V", NULL-terminated; may be NULL */
    const pe_provider_mount *mounts;
    size_t n_mounts;
} pe_provider_start_opts;

enum pe_provider_state {
    PE_PSTATE_UNKNOWN = 0,
    PE_PSTATE_CREATING,
    PE_PSTATE_RUNNING,
    PE_PSTATE_STOPPED,
    PE_PSTATE_PAUSED,
    PE_PSTATE_ERROR,
};

typedef struct pe_provider_status {
    int state;    /* enum pe_provider_state */
    char raw[64]; /* the provider's own word for it ("started", "cold") */
} pe_provider_status;

/* A process started by exec_start. The caller's event loop watches the
 * fds like pe_proc's: stdout_fd/stderr_fd until EOF, status_fd readable
 * once the process has ended (then proc_wait does not block). With tty,
 * pty_fd carries both directions (a socket: read output, write input) and
 * stdout_fd/stderr_fd are -1. Closing stdin_fd is stdin's EOF. */
typedef struct pe_provider_proc {
    int stdin_fd, stdout_fd, stderr_fd, pty_fd, status_fd;
    struct pe_provider_stream *stream; /* the adapter's pump */
    /* A provider opened for this process alone (the sandbox layer opens a
     * remote one per call, with the sandbox's credential): closed by
     * pe_provider_proc_close after the pump. Set by the caller, after
     * exec_start; NULL otherwise. */
    pe_provider *owner;
    /* A local sandbox's OOM kill count and memory limit as the process
     * started (pe_proc's), when oom_known; a remote provider leaves them. */
    bool oom_known;
    int64_t oom_kills, oom_limit;
} pe_provider_proc;

typedef struct pe_provider_exec_opts {
    char *const *argv;   /* NULL-terminated */
    char *const *env;    /* extra "K=V", may be NULL */
    const char *workdir; /* NULL: the provider's */
    bool tty;            /* a PTY (PE_CAP_PTY) */
    bool stdin_pipe;     /* give the process a stdin (else it reads EOF) */
    unsigned short cols, rows;
    double timeout; /* seconds, 0 = none; one-shot exec ends the process then */
} pe_provider_exec_opts;

/* One-shot exec's result. Output is kept up to max_output bytes per stream
 * (more is dropped and truncated is set). Free with pe_provider_exec_free. */
typedef struct pe_provider_exec_result {
    int exit_code; /* 137 when the timeout ended it without an exit code */
    char *out, *err;
    size_t out_len, err_len;
    bool truncated;
    bool timed_out; /* o->timeout passed: the process was asked to end */
} pe_provider_exec_result;

typedef struct pe_provider_dirent {
    char name[256];
    bool is_dir;
    uint64_t size;
    unsigned mode;
} pe_provider_dirent;

/* A URL that reaches a port of a sandbox, and the headers (name and
 * value) a client must send with it when the provider protects it or a
 * shared host routes by them (else empty). */
typedef struct pe_provider_preview_link {
    char url[1024];
    char header_name[64];
    char header_value[256]; /* a preview token, never the API key */
    char header2_name[64];  /* a second one (E2B's shared host: id and port) */
    char header2_value[256];
    /* The URL wants the provider's credential itself (Sprites' private
     * URLs): hand it to no client; proxy it and add the credential there. */
    bool needs_credential;
    /* The adapter can open the port itself (ops->port_open): the daemon's
     * preview proxy serves it under its own preview URL, connecting
     * through the adapter, and url is for nobody. */
    bool forward;
    /* The provider's URL has no per-port visibility of its own (Hopx: every
     * port public; Runloop: one tunnel for all ports): hand it to no
     * client; our preview proxy serves it under the local rules (private
     * unless exposed public) and adds the headers itself. */
    bool proxy;
} pe_provider_preview_link;

/* ---- the table an adapter fills (provider-<name>.c) ---- */

typedef struct pe_provider_ops {
    const char *name;
    unsigned caps;  /* enum pe_provider_cap bits */
    unsigned takes; /* enum pe_provider_spec_field bits: what create can choose */
    bool keyless;   /* needs no credential (local) */
    int (*open)(pe_provider *p, pe_err *err);
    void (*close)(pe_provider *p);
    /* set on every curl handle of the provider's (TLS from a kubeconfig); may be NULL */
    void (*curl_setup)(pe_provider *p, void *curl);

    /* create returns once the sandbox runs; on any failure it removes
     * what it made remotely. *id: the provider's id (malloc'd). */
    int (*create)(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err);
    int (*start)(pe_provider *p, const char *id, pe_err *err);
    /* start with a run's extras (NULL: only a start without any) */
    int (*start_with)(pe_provider *p, const char *id, const pe_provider_start_opts *o, pe_err *err);
    int (*stop)(pe_provider *p, const char *id, pe_err *err);
    int (*remove)(pe_provider *p, const char *id, pe_err *err);
    int (*status)(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err);

    int (*exec)(pe_provider *p, const char *id, const pe_provider_exec_opts *o, size_t max_output,
                pe_provider_exec_result *res, pe_err *err);
    int (*exec_start)(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                      pe_provider_proc *proc, pe_err *err);

    int (*file_read)(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                     size_t *len, pe_err *err);
    int (*file_write)(pe_provider *p, const char *id, const char *path, const void *data,
                      size_t len, unsigned mode, pe_err *err);
    int (*file_list)(pe_provider *p, const char *id, const char *path, pe_provider_dirent **ents,
                     size_t *n, pe_err *err);
    int (*file_remove)(pe_provider *p, const char *id, const char *path, bool recursive,
                       pe_err *err);
    /* tar_in unpacks a tar into dir; tar_out packs dir (at most max bytes). */
    int (*tar_in)(pe_provider *p, const char *id, const char *dir, const void *tar, size_t len,
                  pe_err *err);
    int (*tar_out)(pe_provider *p, const char *id, const char *dir, size_t max, char **tar,
                   size_t *len, pe_err *err);

    int (*preview)(pe_provider *p, const char *id, uint16_t port, pe_provider_preview_link *out,
                   pe_err *err);
    /* A byte stream to port of the sandbox (NULL: none): *fd is one end
     * of a socket pair whose other end the adapter pumps to the port until
     * either side closes. For previews that need the provider's credential
     * (the daemon's proxy connects through it, no client sees it). */
    int (*port_open)(pe_provider *p, const char *id, uint16_t port, int *fd, pe_err *err);
    int (*pause)(pe_provider *p, const char *id, pe_err *err);
    int (*resume)(pe_provider *p, const char *id, pe_err *err);
    /* PE_CAP_SNAPSHOT: a snapshot of sandbox id's filesystem, named name
     * where the provider names them; *snap_id (malloc'd) is what
     * spec.snapshot and snapshot_delete take. snapshot_delete of one
     * already gone is PE_ENOENT. */
    int (*snapshot_create)(pe_provider *p, const char *id, const char *name, char **snap_id,
                           pe_err *err);
    int (*snapshot_delete)(pe_provider *p, const char *snap_id, pe_err *err);
    /* PE_CAP_SNAPSHOT_RESTORE: sandbox id's files back to snap_id (one of
     * its own snapshots), in place; returns once it runs again. */
    int (*snapshot_restore)(pe_provider *p, const char *id, const char *snap_id, pe_err *err);
} pe_provider_ops;

struct pe_provider {
    const pe_provider_ops *ops;
    pe_provider_config cfg; /* the adapter's own copies (creds wiped at close) */
    void *impl;             /* the adapter's state */
};

/* ---- what callers use ---- */

/* The adapter of a provider name, or NULL. */
const pe_provider_ops *pe_provider_lookup(const char *name);
/* Every adapter's name, NULL-terminated (for errors and listings). */
extern const char *const pe_provider_adapters[];

/* Make a provider of `name` with cfg (copied). PE_EINVAL naming the known
 * adapters for an unknown name, or for a remote one without a key. */
int pe_provider_open(pe_provider **out, const char *name, const pe_provider_config *cfg,
                     pe_err *err);
void pe_provider_close(pe_provider *p);

unsigned pe_provider_caps(const pe_provider *p);
/* PE_ENOTCAP "not supported by NAME: CAPABILITY". Returns -1. */
int pe_provider_unsupported(const pe_provider *p, const char *capability, pe_err *err);

/* PE_ENOTCAP, before anything is sent, for a spec field the adapter does
 * not take (pe_provider_spec_refused says which). */
int pe_provider_create(pe_provider *p, const pe_provider_spec *spec, char **id, pe_err *err);
/* The first field of spec that ops cannot take ("image", "cpu size",
 * "memory size", "disk size"), or NULL: what the sandbox layer checks
 * before it makes anything. */
const char *pe_provider_spec_refused(const pe_provider_ops *ops, const pe_provider_spec *spec);
int pe_provider_start(pe_provider *p, const char *id, pe_err *err);
/* start with o's extras (o NULL or empty: pe_provider_start). Mounts need
 * PE_CAP_VOLUMES; extras on an adapter that takes none are refused
 * ("not supported by P: start with environment"), never dropped. */
int pe_provider_start_with(pe_provider *p, const char *id, const pe_provider_start_opts *o,
                           pe_err *err);
int pe_provider_stop(pe_provider *p, const char *id, pe_err *err);
int pe_provider_remove(pe_provider *p, const char *id, pe_err *err);
int pe_provider_status_get(pe_provider *p, const char *id, pe_provider_status *st, pe_err *err);
int pe_provider_pause(pe_provider *p, const char *id, pe_err *err);
int pe_provider_resume(pe_provider *p, const char *id, pe_err *err);
/* PE_ENOTCAP "not supported by NAME: snapshot" without PE_CAP_SNAPSHOT. */
int pe_provider_snapshot_create(pe_provider *p, const char *id, const char *name, char **snap_id,
                                pe_err *err);
int pe_provider_snapshot_delete(pe_provider *p, const char *snap_id, pe_err *err);
/* PE_ENOTCAP "not supported by NAME: snapshot-restore" without
 * PE_CAP_SNAPSHOT_RESTORE. */
int pe_provider_snapshot_restore(pe_provider *p, const char *id, const char *snap_id, pe_err *err);

/* One-shot: run, collect output (bounded), return the exit code. Falls
 * back to exec_start when the adapter has no one-shot call of its own. */
int pe_provider_exec(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                     size_t max_output, pe_provider_exec_result *res, pe_err *err);
void pe_provider_exec_free(pe_provider_exec_result *res);

/* Streaming (and tty) exec; see pe_provider_proc. */
int pe_provider_exec_start(pe_provider *p, const char *id, const pe_provider_exec_opts *o,
                           pe_provider_proc *proc, pe_err *err);
/* tty: the terminal's new size. */
int pe_provider_proc_resize(pe_provider_proc *proc, unsigned short cols, unsigned short rows,
                            pe_err *err);
/* Ask the remote process to end (SIGTERM-like); best effort. */
void pe_provider_proc_kill(pe_provider_proc *proc);
/* End it now (SIGKILL-like: a deadline passed). The local runtime kills
 * its process group; a remote process is asked as by proc_kill. */
void pe_provider_proc_kill_now(pe_provider_proc *proc);
/* The exit code once status_fd is readable (blocks until then). A stream
 * that broke before an exit code arrived fails naming the provider. */
int pe_provider_proc_wait(pe_provider_proc *proc, int *exit_code, pe_err *err);
/* Stops the pump and closes every fd. */
void pe_provider_proc_close(pe_provider_proc *proc);

int pe_provider_file_read(pe_provider *p, const char *id, const char *path, size_t max, char **data,
                          size_t *len, pe_err *err);
int pe_provider_file_write(pe_provider *p, const char *id, const char *path, const void *data,
                           size_t len, unsigned mode, pe_err *err);
int pe_provider_file_list(pe_provider *p, const char *id, const char *path,
                          pe_provider_dirent **ents, size_t *n, pe_err *err);
int pe_provider_file_remove(pe_provider *p, const char *id, const char *path, bool recursive,
                            pe_err *err);
int pe_provider_tar_in(pe_provider *p, const char *id, const char *dir, const void *tar, size_t len,
                       pe_err *err);
int pe_provider_tar_out(pe_provider *p, const char *id, const char *dir, size_t max, char **tar,
                        size_t *len, pe_err *err);
int pe_provider_preview(pe_provider *p, const char *id, uint16_t port,
                        pe_provider_preview_link *out, pe_err *err);
/* A connected stream socket to port of sandbox id (ops->port_open), or
 * PE_ENOTCAP. */
int pe_provider_port_open(pe_provider *p, const char *id, uint16_t port, int *fd, pe_err *err);
bool pe_provider_can_port_open(const pe_provider *p);

#endif
