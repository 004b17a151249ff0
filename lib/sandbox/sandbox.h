/* The sandbox layer: what a sandbox is, composed from the store, its
 * resources and the provider that runs it, between the daemon's handlers
 * and lib/provider (STYLE.md's layers: lifecycle over store + provider).
 *
 * A handler parses a request, asks this layer, and answers; it does not
 * compute a sandbox's environment or decide where it runs. So the same
 * sandbox behaves the same through every handler (exec, terminals, the
 * streaming exec, services), and a remote provider later is a new answer
 * of pe_sandbox_provider, not a change to each handler.
 *
 * Threading: pe_sandboxes is shared by every thread and read-only after
 * open; every other call blocks (the store, a provider) and runs on a
 * worker with that worker's store. */
#ifndef PE_SANDBOX_H
#define PE_SANDBOX_H

#include "pocketenv/auth.h"
#include "pocketenv/err.h"
#include "pocketenv/runtime.h"
#include "pocketenv/store.h"
#include "provider/provider.h"

/* Volumes one sandbox may mount. */
#define PE_SANDBOX_MOUNTS_MAX 16

/* Remote providers the operator configured (serve --provider-config). */
#define PE_SANDBOX_REMOTES_MAX 16
#define PE_SANDBOX_REMOTE_PORTS_MAX 8

/* The operator's settings of one remote provider: where its API is (only
 * ever from here, never from a client: a client-chosen URL would make the
 * daemon a request forger), and an operator-wide credential used for the
 * sandboxes whose owner sent none. key is wiped at close. */
typedef struct pe_sandbox_remote {
    char *name;     /* the adapter (lib/provider) */
    char *base_url; /* NULL: the provider's public endpoint */
    char *key, *org, *project;
    char *kubeconfig;  /* kubernetes: the operator's kubeconfig file */
    char *preview_url; /* hopx, runloop: a port's URL ({port}, {id}, {key}) */
    /* hopx, runloop: CAs (PEM) the preview proxy trusts for their https
     * preview hosts, besides the system's */
    char *preview_ca_file;
    int64_t timeout_ms, create_timeout_ms; /* 0: the adapter's defaults */
    /* ports every create asks the provider to route (Modal's tunnels,
     * Vercel's routes: taken at create only); the operator's choice, as
     * such a port may be public */
    uint16_t ports[PE_SANDBOX_REMOTE_PORTS_MAX];
    size_t n_ports;
} pe_sandbox_remote;

typedef struct pe_sandboxes {
    pe_auth *auth;      /* opens secrets (borrowed) */
    pe_provider *local; /* serves the sandboxes whose backend is "local" */
    char *data_dir;     /* the daemon's: volumes live in DATA/volumes/<id> */
    pe_runtime *rt;     /* local sandboxes' runtime: their egress policies (borrowed) */
    pe_sandbox_remote remotes[PE_SANDBOX_REMOTES_MAX];
    size_t n_remotes;
    /* The daemon's supervisor (daemon/supervise.c), for tailscaled in a
     * remote sandbox: run argv in sandbox_id as the unit named key (unless
     * it runs already), restarted with backoff when it fails, its output
     * kept; the caller has just seen the sandbox run, though its record
     * may not say RUNNING yet (its start is not done). Returns 0 or -1
     * with err. NULL: nothing supervises, tailscale is not brought up. */
    int (*unit_start)(void *ud, const char *key, const char *sandbox_id, char *const *argv,
                      pe_err *err);
    void *unit_ud;
} pe_sandboxes;

/* rt: the runtime local sandboxes run on (borrowed: it must outlive sx). */
int pe_sandboxes_open(pe_sandboxes *sx, pe_auth *auth, pe_runtime *rt, pe_err *err);
void pe_sandboxes_close(pe_sandboxes *sx);

/* Read the operator's remote providers from a JSON file (mode 0600 or
 * stricter: it holds credentials): {"daytona": {"url", "key", "org",
 * "project", "timeoutMs", "createTimeoutMs"}, ...}, every field optional,
 * each name an adapter; "kubernetes" also takes "kubeconfig" (an absolute
 * path) and needs it or a key (a token); "hopx" and "runloop" take
 * "previewUrl", the template of a port's URL (pe_provider_config), and "previewCaFile", an
 * absolute path to PEM CAs the preview proxy trusts for their https hosts besides the
 * system's. Errors name the file and the field, never a value. */
int pe_sandboxes_load_remotes(pe_sandboxes *sx, const char *path, pe_err *err);
/* The operator's settings of adapter `name`, or NULL. */
const pe_sandbox_remote *pe_sandboxes_remote(const pe_sandboxes *sx, const char *name);

/* ---- where this sandbox runs ---- */

/* A new sandbox name, adjective-noun-xxxx (4 base-36 characters from the
 * kernel's CSPRNG), as upstream draws one for a create without a name.
 * The caller frees it; a collision with a name in use is the caller's to
 * draw again. */
char *pe_sandbox_slug_name(void);

/* sb runs on a remote provider (its backend is an adapter's name, its
 * provider_id the provider's id of it). */
bool pe_sandbox_is_remote(const pe_store_sandbox *sb);

/* The provider that serves sb (its row's backend) into *p: the shared
 * local one, or a remote adapter opened for this call with the sandbox's
 * credential (unsealed into the adapter's memory only). Release with
 * pe_sandbox_provider_release. PE_EUNSUP for a backend this daemon has no
 * provider for; PE_EINVAL when a remote one has no credential. */
int pe_sandbox_provider_get(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                            pe_provider **p, pe_err *err);
void pe_sandbox_provider_release(pe_sandboxes *sx, pe_provider *p);

/* The provider's id of sb (the runtime's name for a local one). */
const char *pe_sandbox_remote_id(const pe_store_sandbox *sb);

/* ---- credentials of a remote sandbox ----
 *
 * As upstream's clients send them in createSandbox (daytonaApiKey,
 * e2bApiKey, vercelApiToken + vercelTeamId + vercelProjectId, ..., each key
 * sealed to this daemon's key), kept in the store's provider credentials
 * in putPreferences' sandboxProviderPref shape, so a later putPreferences
 * replaces them. Returns in *sealed / *redacted the two JSON texts to
 * store (both NULL when the request holds no key: then the operator's
 * must exist, else PE_EINVAL saying what to send). Unsealed only to check
 * it opens and to redact it. */
int pe_sandbox_creds_from_request(pe_sandboxes *sx, const char *backend, const void *json_in,
                                  char **sealed, char **redacted, pe_err *err);

/* Copies of remote sb's stored credential for its provider, the sealed
 * and redacted JSON texts as the store keeps them (both NULL: it has
 * none; the operator's serves it), for a row that must reach the
 * provider as sb does: its snapshots, its forks. Never unsealed here. */
int pe_sandbox_cred_copy(pe_store *s, const pe_store_sandbox *sb, char **sealed, char **redacted,
                         pe_err *err);

/* What sb runs without where it runs, for its record's statusReason
 * (malloc'd; NULL: nothing): the volumes a provider cannot mount. */
char *pe_sandbox_run_note(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb);

/* Once sb runs (created, started, or a Tailscale key put on it): apply
 * what a remote sandbox gets through exec, its Tailscale key (`tailscale
 * up` where the image has tailscale, the key in a file removed after,
 * never on a command line), then the statusReason to record: the run note
 * and why the key is not applied, if it is not (malloc'd; NULL: nothing).
 * Blocks for the bring-up (at most about a minute). */
char *pe_sandbox_started_note(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb);

/* Write a file into remote sb through its provider (the file resources;
 * a local sandbox's are written by the daemon, inside its root). */
int pe_sandbox_file_write(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const char *path, const void *data, size_t len, unsigned mode,
                          pe_err *err);

/* The same for reading (at most max bytes, malloc'd), listing (one level;
 * *ents malloc'd) and removing a path of remote sb through its provider:
 * the file calls of the E2B API. A capability the provider lacks is
 * PE_ENOTCAP naming it. */
int pe_sandbox_file_read(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                         const char *path, size_t max, char **data, size_t *len, pe_err *err);
int pe_sandbox_file_list(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                         const char *path, pe_provider_dirent **ents, size_t *n, pe_err *err);
int pe_sandbox_file_remove(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                           const char *path, bool recursive, pe_err *err);

/* Where a sandbox's SSH key pair lives (id_ed25519, id_ed25519.pub). */
#define PE_SANDBOX_SSH_DIR "/root/.ssh"

/* An SSH key pair's two files as ssh reads them: priv (priv_len bytes)
 * ends with a newline (ssh reads a key only up to a final one), pub is the
 * public key line with exactly one. priv is the caller's text, or a
 * guarded copy (owned) when a newline had to be added. */
typedef struct pe_sandbox_ssh_texts {
    const unsigned char *priv;
    size_t priv_len;
    char *pub;
    unsigned char *owned;
} pe_sandbox_ssh_texts;

void pe_sandbox_ssh_texts_make(pe_sandbox_ssh_texts *t, const char *priv, size_t len,
                               const char *pub);
void pe_sandbox_ssh_texts_free(pe_sandbox_ssh_texts *t);

/* Write an SSH key pair (private key priv, len bytes of plain text, and
 * public key line pub) into remote_id through p: id_ed25519 (0600) and
 * id_ed25519.pub (0644) under PE_SANDBOX_SSH_DIR. */
int pe_sandbox_ssh_write(pe_provider *p, const char *remote_id, const char *priv, size_t len,
                         const char *pub, pe_err *err);

/* Write remote sb's SSH key pair (pe_sandbox_ssh_write) through its
 * provider: putSshKeys on a running remote sandbox. */
int pe_sandbox_ssh_install(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                           const char *priv, size_t len, const char *pub, pe_err *err);

/* The provider's link to port of remote sb. */
int pe_sandbox_preview(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, uint16_t port,
                       pe_provider_preview_link *link, pe_err *err);

/* A connected stream socket to port of remote sb, through its provider
 * (pe_provider_port_open): what the preview proxy uses when the
 * provider's preview link says forward. */
int pe_sandbox_port_open(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, uint16_t port,
                         int *fd, pe_err *err);

/* A directory of remote sb packed as a tar (at most max bytes, malloc'd),
 * and a tar (plain or compressed) unpacked into one, through its provider
 * (a local sandbox's go through daemon/sandbox-archive.c). */
int pe_sandbox_tar_out(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                       size_t max, char **tar, size_t *len, pe_err *err);
int pe_sandbox_tar_in(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                      const void *tar, size_t len, pe_err *err);

/* An image reference a remote create may pass on as its provider's image,
 * template, snapshot or blueprint name ("ubuntu:22.04",
 * "blaxel/base-image:latest"): 1 to 255 of [A-Za-z0-9._/:@+-], starting
 * with a letter or digit. What it names is the provider's business. */
bool pe_sandbox_image_valid(const char *image);

/* The same with a file: dir of sb packed as a plain tar (at most max
 * bytes, built in memory by the adapter) written to fd; and the tar read
 * from fd (at most max bytes) unpacked into dir. Backups of remote
 * sandboxes. */
int pe_sandbox_tar_out_fd(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const char *dir, size_t max, int fd, pe_err *err);
int pe_sandbox_tar_in_fd(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, const char *dir,
                         int fd, size_t max, pe_err *err);

/* Create sb (a remote row, INITIALIZING) on its provider with its
 * variables and secrets as the environment and its files, on image (NULL:
 * the provider's default) with the row's sizes (vcpus, memory and disk in
 * GB; 0: the provider's default), and record the provider's id on the row
 * (and in *remote_id, malloc'd). An image or a size the provider cannot
 * take is PE_ENOTCAP naming the provider and the request's field, before
 * anything is sent. On failure nothing is left there. */
int pe_sandbox_create_remote(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                             const char *image, char **remote_id, pe_err *err);

/* The same made from snapshot (a snapshot id of sb's provider, from
 * pe_sandbox_snapshot_create; NULL: from image), on a provider that
 * declares PE_CAP_SNAPSHOT_BASE (else PE_ENOTCAP before anything is sent). */
int pe_sandbox_create_remote_from(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                                  const char *image, const char *snapshot, char **remote_id,
                                  pe_err *err);

/* ---- snapshots of remote sandboxes (sandbox-snapshot.c) ---- */

/* What a provider's snapshot is, for the daemon's snapshot row: its id
 * there, and its own copy of the credential that made it (the sandbox's
 * stored one, still sealed as pe_store_cred keeps it; both NULL when the
 * operator's served the sandbox). Strings malloc'd. */
typedef struct pe_sandbox_remote_snapshot {
    char *snap_id;
    char *cred_sealed, *cred_redacted;
    bool source_stopped; /* the provider stopped the sandbox to snapshot it */
} pe_sandbox_remote_snapshot;
void pe_sandbox_remote_snapshot_clear(pe_sandbox_remote_snapshot *v);

/* Snapshot remote sb at its provider, as name (the provider's name of
 * it, where it names them). PE_ENOTCAP naming the provider without
 * PE_CAP_SNAPSHOT. When the provider stops the sandbox to take it, the
 * row is set STOPPED too. */
int pe_sandbox_snapshot_create(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                               const char *name, pe_sandbox_remote_snapshot *out, pe_err *err);

/* Delete snapshot snap_id at provider backend with the credential the
 * snapshot keeps (cred_sealed NULL: the operator's). label names the
 * snapshot in errors. One already gone there is done (0). */
int pe_sandbox_snapshot_delete(pe_sandboxes *sx, const char *backend, const char *label,
                               const char *cred_sealed, const char *cred_redacted,
                               const char *snap_id, pe_err *err);

/* Remote sb's files back to snap_id, one of its own snapshots at its
 * provider, in place (PE_CAP_SNAPSHOT_RESTORE, else PE_ENOTCAP naming the
 * provider before anything is sent). Returns once the provider says it is
 * done; what sb wrote since is gone there. */
int pe_sandbox_snapshot_restore(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                                const char *snap_id, pe_err *err);

/* ---- the environment of an exec ---- */

/* "NAME=value" for every variable of the sandbox, then every secret
 * (opened here; a secret wins over a variable of the same name, the
 * runtime letting a later entry win). *env is NULL-terminated; release it
 * with pe_sandbox_env_free, which wipes the strings. A secret that no
 * longer opens is left out and logged by name, never by value. */
int pe_sandbox_env(pe_sandboxes *sx, pe_store *s, const char *sandbox_id, char ***env, pe_err *err);
void pe_sandbox_env_free(char **env);

/* ---- what to apply at start, and the lifecycle ---- */

/* The host directory of volume volume_id (malloc'd). */
char *pe_sandbox_volume_dir(const pe_sandboxes *sx, const char *volume_id);

/* What a start of sandbox_id applies: its environment (pe_sandbox_env)
 * and its volumes' mounts, for this run only. Release with
 * pe_sandbox_start_opts_free (wipes the environment). */
int pe_sandbox_start_opts(pe_sandboxes *sx, pe_store *s, const char *sandbox_id,
                          pe_provider_start_opts *o, pe_err *err);
void pe_sandbox_start_opts_free(pe_provider_start_opts *o);

/* Egress-only secrets (issue 20): a secret that the sandbox's egress
 * policy binds to hosts ("secrets" in the policy) is in the sandbox's
 * environment as its placeholder PE_SECRET_<id> (pe_sandbox_env), and
 * only the daemon's egress proxy puts the value in requests to the bound
 * hosts. */
#define PE_SANDBOX_PLACEHOLDER_MAX 96
/* where the sandbox's CA goes (the daemon writes them at start) */
#define PE_SANDBOX_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define PE_SANDBOX_CA_FILE "/etc/ssl/certs/pocketenv-egress-ca.pem"
#define PE_SANDBOX_CA_BUNDLE_MAX (8 * 1024 * 1024)
void pe_sandbox_secret_placeholder(const char *secret_id, char out[PE_SANDBOX_PLACEHOLDER_MAX]);

typedef struct pe_sandbox_egress_secret {
    char *name;
    char placeholder[PE_SANDBOX_PLACEHOLDER_MAX];
    unsigned char *value; /* wiped by pe_sandbox_egress_secrets_free */
    size_t len;
} pe_sandbox_egress_secret;

/* The egress-only secrets of sandbox_id under policy, with their values. */
int pe_sandbox_egress_secrets(pe_sandboxes *sx, pe_store *s, const char *sandbox_id,
                              const json_t *policy, pe_sandbox_egress_secret **out, size_t *n,
                              pe_err *err);
void pe_sandbox_egress_secrets_free(pe_sandbox_egress_secret *list, size_t n);

/* Start sb where it runs, with its variables, secrets and volumes. */
int pe_sandbox_start(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
/* Stop it (its processes get a grace period); its files stay. */
int pe_sandbox_stop(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
/* Pause it where it runs, memory kept (PE_CAP_PAUSE; else PE_ENOTCAP
 * "not supported by P: pause"), and resume it. */
int pe_sandbox_pause(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
int pe_sandbox_resume(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
/* Its state where it runs, in the provider's words (PE_ENOENT: the
 * provider has no such sandbox). */
int pe_sandbox_status(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                      pe_provider_status *st, pe_err *err);
/* Remove it where it runs (a running one is killed first). */
int pe_sandbox_remove(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err);

/* ---- processes ---- */

/* What the provider of sb can do (enum pe_provider_cap bits), without
 * opening it. */
unsigned pe_sandbox_caps(pe_sandboxes *sx, const pe_store_sandbox *sb);

/* Start o->argv in sb where it runs, with the sandbox's environment and
 * then o->env's "K=V" (which win). The caller watches proc's
 * fds (pe_provider_proc) and ends with pe_provider_proc_wait/close (which
 * also closes a remote provider opened for it). */
int pe_sandbox_exec_start(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const pe_provider_exec_opts *o, pe_provider_proc *proc, pe_err *err);

/* One-shot: o->argv run in sb where it runs with the sandbox's
 * environment (o->env is ignored), its output kept up to max_output bytes
 * per stream; res freed with pe_provider_exec_free. */
int pe_sandbox_exec(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                    const pe_provider_exec_opts *o, size_t max_output, pe_provider_exec_result *res,
                    pe_err *err);

/* ---- a sandbox of this host (sandbox-host.c) ----
 *
 * What only the local runtime has of a sandbox, for the daemon's
 * terminals, preview proxy, cp, backups and housekeeping, which ask here
 * rather than the runtime. Given a record, a remote sandbox is PE_ENOTCAP
 * "not supported by P: WHAT" (its provider keeps nothing of the kind we
 * can read); given an id, it is the runtime's name of a local sandbox (a
 * remote sandbox's id is none: PE_ENOENT, as for an unknown one). */

/* The runtime's JSON text (malloc'd) of sandbox_id: status, pid,
 * startTime, idBase, network.address, ... (pe_runtime_inspect). */
int pe_sandbox_inspect(pe_sandboxes *sx, const char *sandbox_id, char **json_out, pe_err *err);

/* The directory of sandbox_id's writable layer (upper/, work/; malloc'd):
 * read it only while the sandbox is stopped and its lock held. */
int pe_sandbox_layer_dir(pe_sandboxes *sx, const char *sandbox_id, char **dir, pe_err *err);

/* Start o's process in local sandbox_id as a pe_proc the caller's loop
 * watches itself (its pidfd, its PTY), for the local terminal and
 * code-server; a remote sandbox's processes start with
 * pe_sandbox_exec_start. */
int pe_sandbox_proc_start(pe_sandboxes *sx, const char *sandbox_id, const pe_proc_opts *o,
                          pe_proc *proc, pe_err *err);

/* The OOM kills counted in sb's memory cgroup since it started (-1:
 * unknown) and its memory limit in bytes (0: none); err may be NULL. */
int pe_sandbox_oom_kills(pe_sandboxes *sx, const pe_store_sandbox *sb, int64_t *kills,
                         int64_t *limit, pe_err *err);

/* The last limit connections our egress proxy refused for sb, newest
 * first (*list: a JSON array, the caller's reference). */
int pe_sandbox_egress_denials(pe_sandboxes *sx, const pe_store_sandbox *sb, size_t limit,
                              json_t **list, pe_err *err);

/* Every sandbox of this host's runtime, rows or not, as the runtime's
 * JSON array text (malloc'd): what housekeeping reconciles the store
 * with. */
int pe_sandboxes_local_list(pe_sandboxes *sx, char **json_out, pe_err *err);

/* Remove the runtime's sandbox name, which has no row (an orphan a
 * crash left): there is no record to route by. */
int pe_sandboxes_local_remove(pe_sandboxes *sx, const char *name, pe_err *err);

/* Could this host checkpoint memory (pe_runtime_checkpoint_probe: 1, or 0
 * with *reason; slow, call once)? A remote provider's snapshots are its
 * own business (pe_sandbox_snapshot_create). */
int pe_sandboxes_checkpoint_probe(char **reason);

#endif
