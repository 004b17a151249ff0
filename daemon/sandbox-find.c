/* The caller's sandbox: by id (sbx_...) or name; another user's is not
 * found (sandbox-find.h). pe_daemon_transfer_sandbox (was handlers/
 * backup.c's) also wants one this daemon runs, past INITIALIZING: what
 * backups, copies, ports and snapshots work on. */
#include <string.h>

#include "daemon.h"
#include "sandbox-find.h"

#define NOT_FOUND "SandboxNotFound"

int pe_daemon_find_sandbox(pe_store *s, const char *did, const char *id, pe_store_sandbox *out,
                           pe_err *err)
{
    memset(out, 0, sizeof(*out));
    if (id == NULL || id[0] == '\0')
        return pe_err_set(err, PE_ENOENT, 0, "sandbox not found");
    if (strncmp(id, "sbx_", 4) == 0) {
        if (pe_store_sandbox_get(s, id, out, err) == 0) {
            if (strcmp(out->owner_did, did) == 0)
                return 0;
            pe_store_sandbox_clear(out);
        } else if (err->code != PE_ENOENT) {
            return -1;
        }
    } else if (pe_store_sandbox_get_by_name(s, did, id, out, err) == 0) {
        return 0;
    } else if (err->code != PE_ENOENT) {
        return -1;
    }
    return pe_err_set(err, PE_ENOENT, 0, "sandbox not found");
}

bool pe_daemon_job_sandbox(pe_daemon_job *job, pe_store *s, const char *id, pe_store_sandbox *sb)
{
    if (pe_daemon_find_sandbox(s, job->did, id, sb, &job->err) == 0)
        return true;
    pe_daemon_job_fail(job, &job->err, job->err.code == PE_ENOENT ? NOT_FOUND : NULL);
    return false;
}

int pe_daemon_transfer_sandbox(pe_daemon *d, pe_store *s, const char *did, const char *id,
                               bool any_state, pe_store_sandbox *out, pe_err *err)
{
    int r = 0;

    if (pe_daemon_find_sandbox(s, did, id, out, err) < 0)
        return -1;
    if (any_state)
        return 0;
    if (!pe_sandbox_is_remote(out) && !pe_daemon_is_mine(d, out)) /* a remote one: its provider's */
        r = pe_err_set(err, PE_ESTATE, 0, "the sandbox is not run by this daemon");
    else if (out->status == PE_STORE_INITIALIZING)
        r = pe_err_set(err, PE_ESTATE, 0, "the sandbox is still being created");
    if (r < 0)
        pe_store_sandbox_clear(out);
    return r;
}
