/* A sandbox's resources (issue 5): variables, secrets, files, volumes.
 *
 * The API handlers live in handlers/resources.c and handlers/volume.c; what
 * the sandbox lifecycle (handlers/sandbox.c) needs from them is here: the
 * environment of PID 1 and of every exec, files placed at start, volumes
 * mounted at start, and the envs/secrets inputs of createSandbox.
 *
 * Everything below except pe_daemon_create_resources_check runs on a
 * worker thread with that thread's store. */
#ifndef PE_DAEMON_RESOURCES_H
#define PE_DAEMON_RESOURCES_H

#include <jansson.h>
#include <sys/types.h>

#include "daemon.h"

/* Every handler of the four namespaces (volumes: pe_daemon_register_volumes). */
int pe_daemon_register_resources(pe_daemon *d, pe_err *err);
int pe_daemon_register_volumes(pe_daemon *d, pe_err *err);

/* The sandbox's environment from the store: "NAME=value" for every
 * variable, then every secret (opened here; a secret wins over a variable
 * of the same name). *env is NULL-terminated; release it with
 * pe_daemon_env_free, which wipes the strings. A secret that no longer
 * opens is left out and logged by name. */
int pe_daemon_sandbox_env(pe_daemon *d, pe_store *s, const char *sandbox_id, char ***env,
                          pe_err *err);
void pe_daemon_env_free(char **env);

/* Start the runtime sandbox of sb with its environment and volumes. */
int pe_daemon_sandbox_start(pe_daemon *d, const pe_store_sandbox *sb, pe_err *err);

/* Write every file of the running sandbox sb into it. A file that cannot
 * be written is logged (path and reason, never content) and skipped: a
 * bad file does not keep a sandbox from starting. */
void pe_daemon_sandbox_place_files(pe_daemon *d, const pe_store_sandbox *sb);

/* Write len bytes at the absolute path inside running sandbox id (see
 * handlers/env.c for how the path is resolved). PE_ESTATE if the sandbox
 * is not running. */
int pe_daemon_sandbox_write_file(pe_daemon *d, const char *id, const char *path,
                                 const unsigned char *data, size_t len, pe_err *err);
/* The same with a fixed mode (e.g. 0600 for a private key): the file is
 * the sandbox root's with exactly that mode, even if one was there, and
 * missing directories are made 0700. mode 0 is pe_daemon_sandbox_write_file. */
int pe_daemon_sandbox_write_file_mode(pe_daemon *d, const char *id, const char *path,
                                      const unsigned char *data, size_t len, mode_t mode,
                                      pe_err *err);
/* The same without the fsync, for what every start places again from the
 * store (files, keys): a write lost with the host is redone at the next
 * start, and each fsync cost a start 5-700 ms on a busy disk (issue 21). */
int pe_daemon_sandbox_place_file_mode(pe_daemon *d, const char *id, const char *path,
                                      const unsigned char *data, size_t len, mode_t mode,
                                      pe_err *err);
/* Remove the file at path inside running sandbox id (resolved as writes
 * are); a missing file is fine. */
int pe_daemon_sandbox_remove_file(pe_daemon *d, const char *id, const char *path, pe_err *err);

/* createSandbox's "envs" ([{name, value}]) and "secrets" ([{name, value
 * (sealed)}]): check (loop thread, before anything is stored), then store
 * as the new sandbox's rows. */
int pe_daemon_create_resources_check(pe_daemon *d, const json_t *body, pe_err *err);
int pe_daemon_create_resources_store(pe_store *s, const char *sandbox_id, const json_t *body,
                                     pe_err *err);

/* Directory path (absolute) of running sandbox id, opened O_PATH inside
 * it: resolved under /proc/<init>/root with RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS, so no symlink of the sandbox's leads out of it.
 * PE_ENOENT (no such directory), PE_ESTATE (not running). Workers. */
int pe_daemon_open_sandbox_dir(pe_daemon *d, const char *id, const char *path, pe_err *err);

/* Shared by the resource handlers: names of variables and secrets (as the
 * shell accepts them), absolute file and mount paths. */
int pe_daemon_check_env_name(const char *what, const char *name, pe_err *err);
int pe_daemon_check_sandbox_path(const char *what, const char *path, pe_err *err);

/* ---- keys, services, preferences (handlers/keys.c, service.c, prefs.c) ---- */

int pe_daemon_register_keys(pe_daemon *d, pe_err *err);
/* Also queues the re-adoption of services after a daemon restart. */
int pe_daemon_register_services(pe_daemon *d, pe_err *err);
int pe_daemon_register_prefs(pe_daemon *d, pe_err *err);

/* The caller did's sandbox by id (sbx_...) or name; another user's is
 * PE_ENOENT exactly like a missing one. */
int pe_daemon_find_sandbox(pe_store *s, const char *did, const char *id, pe_store_sandbox *out,
                           pe_err *err);
/* The same for a job: on failure the job is failed (SandboxNotFound). */
bool pe_daemon_job_sandbox(pe_daemon_job *job, pe_store *s, const char *id, pe_store_sandbox *sb);

/* What follows a sandbox's start, after its files are placed: its SSH key
 * pair (a default one generated if it has none), Tailscale if it has an
 * auth key and the image has tailscale, and its services. Failures are
 * logged, never fatal to the start. */
void pe_daemon_sandbox_started(pe_daemon *d, const pe_store_sandbox *sb);
/* handlers/netpolicy.c: the egress methods, and a started sandbox's DNS
 * forwarder when it has a policy. */
int pe_daemon_register_netpolicy(pe_daemon *d, pe_err *err);
void pe_daemon_netpolicy_started(pe_daemon *d, const pe_store_sandbox *sb);
/* createSandbox's networkPolicy: checked (and normalized in place) by the
 * handler, kept for sandbox id by the create, handed to the runtime once
 * it made the sandbox and before it first runs. */
int pe_daemon_netpolicy_create_check(json_t *in, pe_err *err);
int pe_daemon_netpolicy_create_store(pe_daemon *d, const char *id, const json_t *in, pe_err *err);
int pe_daemon_netpolicy_before_start(pe_daemon *d, const pe_store_sandbox *sb, pe_err *err);
/* For egress-proxy.c: does name (NULL: any name policy allows) resolve to
 * addr (host order) for sandbox id, by what its resolver answered while
 * the TTL runs, else (a name) by a fresh lookup upstream? */
bool pe_daemon_egress_resolves(pe_runtime *rt, const char *id, const json_t *policy,
                               const char *name, uint32_t addr);
/* An attempt of sandbox id that its policy denied: in the daemon's log and
 * in the sandbox's log of denials (getNetworkDenials). name "" or NULL:
 * none; addr 0: none (a DNS question); via "dns" or "proxy". */
void pe_daemon_egress_denied(pe_runtime *rt, const char *id, const char *name, uint32_t addr,
                             unsigned port, const char *via, const char *reason);
/* egress-proxy.c: sandbox id's name-checking proxy in netns (its init
 * pid), unless it has one; a policy change: cut its connections that the
 * new policy does not allow. */
void pe_daemon_egress_proxy_start(pe_daemon *d, const char *id, pid_t pid, int netns);
void pe_daemon_egress_proxy_recheck(pe_runtime *rt, const char *id);
/* The daemon exits: wait for a Tailscale bring-up in progress, start no
 * other (teardown, before the runtime and keys are freed). */
void pe_daemon_tailscale_quiesce(void);
/* Start every service of sb that its owner wants running. */
void pe_daemon_services_start(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb);

/* Upstream's redacted form of an OpenSSH private key (reference §5). */
char *pe_daemon_ssh_redact(const char *priv);

#endif
