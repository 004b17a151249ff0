/* `pocketenv serve`: what the daemon's pieces share.
 *
 * One pe_daemon per process. Its loop thread runs the HTTP server and every
 * handler; store and runtime work runs on a worker pool as a
 * pe_daemon_job, whose done callback (loop thread again) answers the
 * request. Short jobs (store queries, lookups, the synchronous half of a
 * create) run on the loop's own pool; long ones (anything that waits for a
 * process or moves a directory: execs, clones, backups, copies, starts and
 * stops) on a second pool, each user within a share of it (job.c). Each
 * worker thread opens its own pe_store on first use (pe_daemon_store): a
 * store handle is not thread-safe. */
#ifndef PE_DAEMON_H
#define PE_DAEMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "pocketenv/auth.h"
#include "pocketenv/err.h"
#include "pocketenv/ev.h"
#include "pocketenv/http.h"
#include "pocketenv/runtime.h"
#include "pocketenv/store.h"
#include "sandbox/sandbox.h"

/* Lifetime of actor.getTerminalToken's tokens: enough to open a terminal. */
#define PE_DAEMON_TERMINAL_TOKEN_TTL 120

/* What the operator allows (serve flags; daemon/resource-limits.c). A sandbox's
 * sizes are in the lexicon's units: vCPUs, and GB (2^30 bytes) of memory
 * and disk; quotas of memory and disk are bytes. 0 for a user_* quota:
 * none. */
typedef struct pe_daemon_limits {
    int64_t default_vcpus, max_vcpus;
    int64_t default_memory, max_memory; /* GB */
    int64_t default_disk, max_disk;     /* GB */
    int64_t pids;                       /* per sandbox; 0: no limit */
    int64_t user_sandboxes;             /* rows, whatever their status */
    int64_t user_memory;                /* bytes: running (and starting) sandboxes */
    int64_t user_disk;                  /* bytes: sandboxes' disk, backups, /cp objects */
    unsigned user_jobs;                 /* long jobs of one user at once, per kind */
    unsigned user_queue;                /* long jobs of one user waiting, per kind */
    int64_t user_snapshots;             /* kept per user; the oldest go first */
    unsigned long_jobs;                 /* long jobs at once, every user's */
    bool disk_enforced;                 /* the runtime holds sandboxes to their disk (at start) */
} pe_daemon_limits;

/* Which backend serves each of upstream's provider names and ours
 * (kubernetes) (serve --provider; daemon/providers.h): indexed like
 * pe_provider_names. */
#define PE_PROVIDER_COUNT 11
enum pe_provider_backend {
    PE_PROVIDER_LOCAL = 0, /* this daemon's runtime */
    PE_PROVIDER_OFF,       /* turned off by the operator: creates refused */
    PE_PROVIDER_REMOTE,    /* the provider itself, through its adapter (lib/provider) */
};
typedef struct pe_daemon_providers {
    unsigned char backend[PE_PROVIDER_COUNT]; /* enum pe_provider_backend */
} pe_daemon_providers;

struct pe_daemon_lane;

typedef struct pe_daemon {
    pe_ev_loop *loop;
    pe_http_server *srv;
    pe_auth *auth;
    pe_runtime rt;
    pe_sandboxes sx; /* the sandbox layer over rt (lib/sandbox) */
    char *store_url;
    unsigned inflight; /* jobs submitted and not yet done (loop thread only) */
    bool draining;     /* SIGTERM/SIGINT seen: refuse new work, stop at inflight 0 */
    int stop_fd;       /* eventfd, readable once draining: running execs end (workers poll it) */
    double exec_timeout;
    struct pe_web *web;          /* the web page's files, NULL: text banner only */
    double terminal_idle;        /* end a terminal session this long without viewers */
    struct pe_terminals *terms;  /* terminal sessions (daemon/terminal.c) */
    unsigned terminals_per_user; /* sessions one user may have (--terminals-per-user) */
    double idle_timeout;         /* default seconds before an idle sandbox stops; 0 = never */
    double tick_s;               /* housekeeping period */
    int sandbox_net;             /* enum pe_net_mode for the sandboxes it runs */
    char *node;                  /* this daemon's node id (DATA/node-id) */
    bool tick_busy;              /* a housekeeping pass is queued or running */
    struct init_watch *watches;  /* inits of sandboxes we started (job.c) */
    pe_daemon_limits lim;
    pe_daemon_providers providers;
    pe_ev_pool *long_pool;        /* long jobs (job.c) */
    struct pe_daemon_lane *lanes; /* long jobs by user and kind (loop thread) */
    unsigned long_running;        /* long jobs on long_pool now */
    unsigned long_waiting;        /* long jobs waiting in a lane */
    struct pe_oauth *oauth;       /* AT Protocol sign-ins in progress (oauth.c) */
    struct pe_cluster *cluster;   /* nodes sharing a PostgreSQL store; NULL on SQLite */
    struct pe_daemon_pool *pool;  /* the warm pool (pool.c), NULL: none */
} pe_daemon;

/* What a job does, for where it runs (job.c). */
enum pe_daemon_job_kind {
    PE_JOB_SHORT = 0, /* store queries and the like: the loop's pool */
    PE_JOB_LONG,      /* waits for a process or moves data: exec, clone, backup, copy */
    PE_JOB_LIFECYCLE, /* makes, starts, stops or removes a sandbox */
};

typedef struct pe_daemon_job pe_daemon_job;
typedef void (*pe_daemon_work_fn)(pe_daemon_job *job, pe_store *store);

/* A unit of blocking work for one request (req may be NULL for background
 * work). work runs on a pool thread with that thread's store and fills
 * either out (steals into the reply) or err (+ err_name). Strings are
 * copied in on the loop thread: workers never read the request. */
struct pe_daemon_job {
    pe_daemon *d;
    pe_xrpc_request *req;
    pe_daemon_work_fn work;
    /* called on the loop after the answer was sent, e.g. to chain work */
    void (*after)(pe_daemon_job *job);
    char *did;   /* the caller */
    char *id;    /* sandbox id or name from the parameters */
    json_t *in;  /* copy of the body, or handler-specific input */
    json_t *out; /* reply on success (NULL: empty 200) */
    pe_err err;
    bool failed;
    const char *err_name; /* custom error name for err, or NULL */
    int init_pidfd;       /* a started sandbox's init, to reap (-1: none) */
    void *ud;             /* the handler's own (e.g. a raw HTTP request); not freed */
    /* Set before submit. A long or lifecycle job runs on the long pool
     * within its user's (did's) share: at most lim.user_jobs at once per
     * user and kind, lim.user_queue more waiting, 429 beyond. A background
     * job (what a create or start owes its sandbox) waits whatever the
     * bound; one without a did runs within the daemon's own share. */
    int kind; /* enum pe_daemon_job_kind */
    bool background;
    bool claimed; /* a create that took a warm sandbox from the pool (pool.h) */
    /* job.c's */
    bool started;
    uint64_t queued_ns, ran_ns; /* submitted; work started (0: not yet) */
    struct pe_daemon_lane *lane;
    pe_daemon_job *next_waiting;
};

/* New job for req (NULL: background) by the caller did (copied). */
pe_daemon_job *pe_daemon_job_new(pe_daemon *d, pe_xrpc_request *req, const char *did,
                                 pe_daemon_work_fn work);
/* The usual job: by did, for sandbox (or resource) id (copied; NULL:
 * none), input in (taken; NULL: none), queued at once. */
int pe_daemon_submit(pe_daemon *d, pe_xrpc_request *req, const char *did, pe_daemon_work_fn work,
                     const char *id, json_t *in);
/* The same for a job of another kind (enum pe_daemon_job_kind). */
int pe_daemon_submit_kind(pe_daemon *d, pe_xrpc_request *req, const char *did,
                          pe_daemon_work_fn work, const char *id, json_t *in, int kind);
/* Queue job; the request is answered when it is done. On a full queue or a
 * draining daemon the request is answered 503 at once (429 past the
 * user's share of long jobs), job is freed (its after callback is not
 * called) and -1 returned. */
int pe_daemon_job_submit(pe_daemon_job *job);
/* The same, and the reason of a refusal in *why (may be NULL): for jobs
 * whose caller answers (raw routes). */
int pe_daemon_job_submit_why(pe_daemon_job *job, pe_err *why);
/* The pool for long jobs (at start, before any submit). */
int pe_daemon_jobs_init(pe_daemon *d, pe_err *err);
/* Draining: every long job still waiting for its turn is answered 503
 * now (a background one is dropped and logged). Loop thread. */
void pe_daemon_jobs_drain(pe_daemon *d);
/* Long jobs running and waiting, for /metrics (loop thread). */
void pe_daemon_jobs_metrics(pe_daemon *d, FILE *out);
/* Fail job with err (copied) and an optional error name. Returns -1. */
int pe_daemon_job_fail(pe_daemon_job *job, const pe_err *err, const char *name);

/* This worker thread's store, opened on first use; NULL with err set if the
 * store cannot be opened. Closed when the thread ends. */
pe_store *pe_daemon_store(pe_daemon *d, pe_err *err);

/* Watch a sandbox's init (our child: the runtime clones it from the
 * daemon) and reap it when it exits. Takes ownership of pidfd. */
void pe_daemon_watch_init(pe_daemon *d, int pidfd);
/* Stop watching every init (shutdown, before the loop is freed). */
void pe_daemon_watch_free_all(pe_daemon *d);

/* Auth middleware: the caller's DID from "Authorization: Bearer <jwt>"
 * (API scope). On failure answers req with 401 and returns NULL. The
 * returned string is malloc'd. */
char *pe_daemon_auth(pe_daemon *d, pe_xrpc_request *req);
/* obj[field] as upstream's SDK may send a secret: in plain text (its
 * builder's .secret(), secret.update) where upstream's CLI and ours seal
 * it to the daemon's key. A value that opens with our key is left; any
 * other is text (at most max bytes, no NUL) and is sealed here, on
 * arrival, so only sealed values are checked, stored and passed on. A
 * value sealed to another key cannot be told from text and is taken as
 * text. No error quotes the value. */
int pe_daemon_seal_if_plain(pe_daemon *d, json_t *obj, const char *field, size_t max, pe_err *err);
/* Rate-limit key hook: the token's verified subject. */
int pe_daemon_rate_key(const char *authorization, char *key, size_t key_size, void *ud);
/* Copy the store's token revocations (users.tokens_valid_after) into auth:
 * at start, on every tick (another daemon or `pocketenv token revoke` may
 * have added one) and before `pocketenv token create` mints. */
int pe_daemon_auth_refresh(pe_auth *auth, pe_store *s, pe_err *err);

/* Serve the web page (d->web) at / (daemon/web-http.c); nothing without it. */
int pe_daemon_register_web(pe_daemon *d, pe_err *err);

/* ISO 8601 UTC with milliseconds, as upstream's createdAt; json null for 0. */
json_t *pe_daemon_time_json(int64_t ms);
/* o[key] = ms as pe_daemon_time_json, or s as a string; left out for 0 or
 * NULL: upstream's lexicons allow no null, and clients read a missing
 * field as unset. */
void pe_daemon_set_time(json_t *o, const char *key, int64_t ms);
void pe_daemon_set_str(json_t *o, const char *key, const char *s);

/* The JSON view of a sandbox that clients read (reference §1.4). */
json_t *pe_daemon_sandbox_view(const pe_store_sandbox *sb);

/* The caller's user row, created (handle "handle.invalid", as atproto
 * names an unknown handle) if this DID never called before (auth.c). */
int pe_daemon_user_ensure(pe_store *s, const char *did, pe_store_user *out, pe_err *err);

/* Handlers, registered on d->srv. */
int pe_daemon_register_actor(pe_daemon *d, pe_err *err);
/* Every handler of the four namespaces; volumes apart (handlers/volume.c). */
int pe_daemon_register_resources(pe_daemon *d, pe_err *err);
int pe_daemon_register_volumes(pe_daemon *d, pe_err *err);
int pe_daemon_register_keys(pe_daemon *d, pe_err *err);
/* Also queues the re-adoption of services after a daemon restart. */
int pe_daemon_register_services(pe_daemon *d, pe_err *err);
int pe_daemon_register_prefs(pe_daemon *d, pe_err *err);
/* handlers/netpolicy.c: the egress methods (the rest: netpolicy.h). */
int pe_daemon_register_netpolicy(pe_daemon *d, pe_err *err);
int pe_daemon_register_sandbox(pe_daemon *d, pe_err *err);
/* Terminal gateways /tty, /pty and /v1/sandboxes/:id/ws/terminal. */
int pe_daemon_register_terminal(pe_daemon *d, pe_err *err);
/* End every terminal session (shells killed, viewers closed). Before the
 * server is freed. */
void pe_daemon_terminal_shutdown(pe_daemon *d);
/* Streaming exec at /exec/:id/ws (exec-stream.c): register; close the
 * streams a revoked token opened (the tick); end every stream and kill its
 * process (shutdown, before the server is freed). */
int pe_daemon_register_exec_stream(pe_daemon *d, pe_err *err);
void pe_daemon_exec_stream_recheck(pe_daemon *d);
void pe_daemon_exec_stream_drain(pe_daemon *d);
void pe_daemon_exec_stream_shutdown(pe_daemon *d);
/* MCP over streamable HTTP at /mcp (mcp.c); end its sessions (shutdown,
 * before the server is freed). */
int pe_daemon_register_mcp(pe_daemon *d, pe_err *err);
void pe_daemon_mcp_shutdown(pe_daemon *d);
/* Close every terminal viewer, and every proxied stream or WebSocket,
 * whose token has been revoked since it was opened (the tick, after it
 * read the store's revocations). Loop thread. */
void pe_daemon_terminal_recheck(pe_daemon *d);
void pe_daemon_proxy_recheck(pe_daemon *d);

/* Sandbox runtime work, shared by create (background) and start
 * (sandbox-run.c, as the two below and pe_daemon_sandbox_view). */
int pe_daemon_sandbox_run(pe_daemon *d, const pe_store_sandbox *sb, int *init_pidfd, pe_err *err);
/* Queue the background half of a create (owner: whose share it runs in;
 * NULL at start, for an INITIALIZING row the daemon died while making). */
/* Remote sandboxes at start (housekeeping.c): interrupted creates made
 * again, running ones adopted, in a background job. */
void pe_daemon_reconcile_remote(pe_daemon *d);
void pe_daemon_sandbox_resume(pe_daemon *d, const char *owner, const char *id);
/* That background half's work: job->id's row INITIALIZING made into a
 * running sandbox (RUNNING, or FAILED with the reason); job->in then
 * names a repo to clone, if it has one. Worker. */
void pe_daemon_sandbox_run_work(pe_daemon_job *job, pe_store *s);
/* A job's after (loop thread): the clone of job->in's "repo" into the
 * now running sandbox job->id, unless the job failed. */
void pe_daemon_sandbox_clone_after(pe_daemon_job *job);

/* The E2B API (daemon/e2b.c, daemon/e2b-process.c, docs/e2b.md): its
 * control plane and each sandbox's envd, on this daemon's URL. */
int pe_daemon_register_e2b(pe_daemon *d, pe_err *err);
/* End every E2B process stream (shutdown, before the server is freed). */
void pe_daemon_e2b_shutdown(pe_daemon *d);

/* Repos (sandbox-repo.c). The git URL for a sandbox's `repo` (shorthands
 * expanded) and the directory it clones into, or NULL with err (PE_EINVAL)
 * for anything git could read as an option or a shell as syntax. */
char *pe_daemon_repo_url(const char *repo, char **dir_out, pe_err *err);
static inline bool pe_daemon_repo_check(const char *repo, pe_err *err)
{
    char *url = pe_daemon_repo_url(repo, NULL, err);
    free(url);
    return url != NULL;
}
/* Queue `git clone` of repo inside running sandbox id of owner (loop
 * thread): a long job in owner's share. */
void pe_daemon_repo_clone_later(pe_daemon *d, const char *owner, const char *sandbox_id,
                                const char *repo);

/* Housekeeping (housekeeping.c). */
int pe_daemon_node_id(pe_daemon *d, pe_err *err);
/* Is sb run by this daemon (a local sandbox of this node)? */
bool pe_daemon_is_mine(const pe_daemon *d, const pe_store_sandbox *sb);
/* Join store and runtime once, at start, before serving; ids of rows
 * whose create must be resumed are appended to resume (a JSON array). */
int pe_daemon_reconcile(pe_daemon *d, json_t *resume, pe_err *err);
/* The periodic tick (idle stops, dead inits, /metrics counts). */
int pe_daemon_housekeeping_start(pe_daemon *d, pe_err *err);
void pe_daemon_housekeeping_free(void);
/* Record use of sandbox id now (exec, terminal input): resets its idle
 * clock. Any thread. */
void pe_daemon_touch(pe_daemon *d, const char *id);
/* Mark sandbox id in use (an exec or terminal runs) until the matching
 * release: the idle stop never takes a sandbox that is in use. */
void pe_daemon_hold(pe_daemon *d, const char *id);
void pe_daemon_release(pe_daemon *d, const char *id);
/* Sandbox id was deleted: drop its last use (at once, or when the last
 * hold on it is released). */
void pe_daemon_forget(pe_daemon *d, const char *id);

int pe_daemon_serve_main(int argc, char **argv);
int pe_daemon_token_main(int argc, char **argv);

#endif
