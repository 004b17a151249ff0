/* Snapshots of remote sandboxes (sandbox.h, docs/providers.md
 * "Snapshots"): taken and deleted by the sandbox's provider, through its
 * adapter's snapshot_create / snapshot_delete (PE_CAP_SNAPSHOT), and
 * restored in place by snapshot_restore (PE_CAP_SNAPSHOT_RESTORE).
 *
 * A snapshot outlives its sandbox, and the sandbox's credential goes with
 * the sandbox: so a snapshot keeps its own copy of the credential that
 * made it (still sealed, as the store keeps a sandbox's), to delete it at
 * the provider later. No log line or error here quotes a key.
 * Threading: worker threads, as the rest of the layer. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/log.h"
#include "core/util.h"
#include "sandbox/sandbox-internal.h"

void pe_sandbox_remote_snapshot_clear(pe_sandbox_remote_snapshot *v)
{
    free(v->snap_id);
    free(v->cred_sealed);
    free(v->cred_redacted);
    memset(v, 0, sizeof(*v));
}

/* Some providers stop a sandbox to snapshot it (Vercel): its row then
 * says so, as if stopSandbox had. */
static void note_stopped(pe_provider *p, pe_store *s, const pe_store_sandbox *sb,
                         pe_sandbox_remote_snapshot *out)
{
    pe_provider_status st;
    pe_err e;

    pe_err_clear(&e);
    if (pe_provider_status_get(p, pe_sandbox_remote_id(sb), &st, &e) < 0 ||
        st.state != PE_PSTATE_STOPPED)
        return;
    out->source_stopped = true;
    if (pe_store_sandbox_set_status(s, sb->id, PE_STORE_STOPPED, NULL, PE_STORE_RUNNING, &e) < 0)
        pe_log_warn("sandbox %s: stopped by its snapshot, not recorded: %s", sb->id, e.msg);
}

int pe_sandbox_snapshot_create(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                               const char *name, pe_sandbox_remote_snapshot *out, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    memset(out, 0, sizeof(*out));
    if (!(pe_sandbox_caps(sx, sb) & PE_CAP_SNAPSHOT))
        return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: snapshot", sb->backend);
    if (pe_sandbox_cred_copy(s, sb, &out->cred_sealed, &out->cred_redacted, err) < 0 ||
        pe__sandbox_remote_open(sx, s, sb, &p, err) < 0) {
        pe_sandbox_remote_snapshot_clear(out);
        return -1;
    }
    r = pe_provider_snapshot_create(p, pe_sandbox_remote_id(sb), name, &out->snap_id, err);
    if (r == 0)
        note_stopped(p, s, sb, out);
    pe_provider_close(p);
    if (r < 0) {
        pe_sandbox_remote_snapshot_clear(out);
        return pe_err_prefix(err, "snapshot sandbox %s", sb->name);
    }
    pe_log_info("event=remote_snapshot sandbox=%s backend=%s snapshot=%s", sb->id, sb->backend,
                out->snap_id);
    return 0;
}

int pe_sandbox_snapshot_delete(pe_sandboxes *sx, const char *backend, const char *label,
                               const char *cred_sealed, const char *cred_redacted,
                               const char *snap_id, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (pe__sandbox_remote_open_creds(sx, backend, label, cred_sealed, cred_redacted, &p, err) < 0)
        return -1;
    r = pe_provider_snapshot_delete(p, snap_id, err);
    pe_provider_close(p);
    if (r < 0 && err->code == PE_ENOENT) { /* gone there already: what we wanted */
        pe_err_clear(err);
        r = 0;
    }
    return r < 0 ? pe_err_prefix(err, "delete %s at %s", label, backend) : 0;
}

int pe_sandbox_snapshot_restore(pe_sandboxes *sx, pe_store *s, const pe_store_sandbox *sb,
                                const char *snap_id, pe_err *err)
{
    pe_provider *p = NULL;
    int r;

    if (!(pe_sandbox_caps(sx, sb) & PE_CAP_SNAPSHOT_RESTORE))
        return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: snapshot-restore", sb->backend);
    if (pe__sandbox_remote_open(sx, s, sb, &p, err) < 0)
        return -1;
    r = pe_provider_snapshot_restore(p, pe_sandbox_remote_id(sb), snap_id, err);
    pe_provider_close(p);
    if (r < 0)
        return pe_err_prefix(err, "restore sandbox %s", sb->name);
    pe_log_info("event=remote_snapshot_restore sandbox=%s backend=%s snapshot=%s", sb->id,
                sb->backend, snap_id);
    return 0;
}
