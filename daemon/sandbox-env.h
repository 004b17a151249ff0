/* A sandbox's environment and files (sandbox-env.c), below the handlers:
 * the environment of PID 1 and of every exec, files placed at start and
 * written by the file resources and keys, volumes mounted at start, and
 * the envs/secrets inputs of createSandbox (issue 5).
 *
 * Everything below except pe_daemon_create_resources_check and the name
 * checks runs on a worker thread with that thread's store. */
#ifndef PE_DAEMON_SANDBOX_ENV_H
#define PE_DAEMON_SANDBOX_ENV_H

#include <jansson.h>
#include <sys/types.h>

#include "daemon.h"

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
 * bad file does not keep a sandbox from starting. Returns how many files
 * sb has stored (placed or not). */
size_t pe_daemon_sandbox_place_files(pe_daemon *d, const pe_store_sandbox *sb);

/* Write len bytes at the absolute path inside running sandbox id (see
 * sandbox-env.c for how the path is resolved). PE_ESTATE if the sandbox
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

#endif
