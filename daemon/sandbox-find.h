/* The caller's sandbox by id or name (sandbox-find.c): how every handler
 * of a sandbox's things looks it up. */
#ifndef PE_DAEMON_SANDBOX_FIND_H
#define PE_DAEMON_SANDBOX_FIND_H

#include "daemon.h"

/* The caller did's sandbox by id (sbx_...) or name; another user's is
 * PE_ENOENT exactly like a missing one. */
int pe_daemon_find_sandbox(pe_store *s, const char *did, const char *id, pe_store_sandbox *out,
                           pe_err *err);
/* The same for a job: on failure the job is failed (SandboxNotFound). */
bool pe_daemon_job_sandbox(pe_daemon_job *job, pe_store *s, const char *id, pe_store_sandbox *sb);

/* The caller's sandbox by id or name (another user's answers PE_ENOENT
 * "sandbox not found"); unless any_state, also run by this daemon and
 * past INITIALIZING (PE_ESTATE otherwise). */
int pe_daemon_transfer_sandbox(pe_daemon *d, pe_store *s, const char *did, const char *id,
                               bool any_state, pe_store_sandbox *out, pe_err *err);

#endif
