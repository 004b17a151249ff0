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

typedef struct pe_sandboxes {
    pe_auth *auth;      /* opens secrets (borrowed) */
    pe_provider *local; /* serves the sandboxes whose backend is "local" */
    char *data_dir;     /* the daemon's: volumes live in DATA/volumes/<id> */
} pe_sandboxes;

/* rt: the runtime local sandboxes run on (borrowed: it must outlive sx). */
int pe_sandboxes_open(pe_sandboxes *sx, pe_auth *auth, pe_runtime *rt, pe_err *err);
void pe_sandboxes_close(pe_sandboxes *sx);

/* ---- where this sandbox runs ---- */

/* The provider that serves sb (its row's backend), shared: do not close
 * it. PE_EUNSUP for a backend this daemon has no provider for. */
pe_provider *pe_sandbox_provider(pe_sandboxes *sx, const pe_store_sandbox *sb, pe_err *err);

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

/* Start sb where it runs, with its variables, secrets and volumes. */
int pe_sandbox_start(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb, pe_err *err);
/* Stop it (its processes get a grace period); its files stay. */
int pe_sandbox_stop(pe_sandboxes *sx, const pe_store_sandbox *sb, pe_err *err);
/* Remove it where it runs (a running one is killed first). */
int pe_sandbox_remove(pe_sandboxes *sx, const pe_store_sandbox *sb, pe_err *err);

/* ---- processes ---- */

/* Start o->argv in sb where it runs, with the sandbox's environment
 * (o->env must be NULL: it is the sandbox's). The caller watches proc's
 * fds (pe_provider_proc) and ends with pe_provider_proc_wait/close. */
int pe_sandbox_exec_start(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                          const pe_provider_exec_opts *o, pe_provider_proc *proc, pe_err *err);

#endif
