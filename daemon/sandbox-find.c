/* The caller's sandbox: by id (sbx_...) or name; another user's is not
 * found (sandbox-find.h). */
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
