/* The sandbox layer's side of sandboxes on this host (sandbox.h, "a
 * sandbox of this host"): what only the local runtime has of a sandbox
 * (its init process, its writable layer, its memory cgroup's OOM count,
 * the egress proxy's log of denials, a process the daemon's loop watches
 * by its pidfd) and of the host (its sandboxes with no row, whether it can
 * checkpoint memory). The daemon's terminals, preview proxy, cp, backups
 * and housekeeping ask here, never the runtime, so the one place that
 * knows a sandbox may run elsewhere decides what such a call means there.
 *
 * Calls given a sandbox's record answer a remote one PE_ENOTCAP naming its
 * provider and what it lacks (its provider keeps no such thing, or none
 * we can read). Calls given only an id take the runtime's name of a local
 * sandbox: a remote sandbox's id is none (PE_ENOENT, as an unknown one).
 *
 * Threading: every call blocks (files of the runtime's state, a cgroup, a
 * fork); called from workers, like the runtime's own calls. */
#include <string.h>

#include "pocketenv/egress.h"
#include "sandbox/sandbox-internal.h"

static int no_runtime(pe_err *err)
{
    return pe_err_set(err, PE_ESTATE, 0, "no local runtime");
}

/* PE_ENOTCAP for what remote sb's provider has nothing of. */
static int remote_lacks(const pe_store_sandbox *sb, const char *what, pe_err *err)
{
    return pe_err_set(err, PE_ENOTCAP, 0, "not supported by %s: %s", sb->backend, what);
}

int pe_sandbox_inspect(pe_sandboxes *sx, const char *sandbox_id, char **json_out, pe_err *err)
{
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_inspect(sx->rt, sandbox_id, json_out, err);
}

int pe_sandbox_layer_dir(pe_sandboxes *sx, const char *sandbox_id, char **dir, pe_err *err)
{
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_layer_dir(sx->rt, sandbox_id, dir, err);
}

int pe_sandbox_proc_start(pe_sandboxes *sx, const char *sandbox_id, const pe_proc_opts *o,
                          pe_proc *proc, pe_err *err)
{
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_exec_start(sx->rt, sandbox_id, o, proc, err);
}

int pe_sandbox_oom_kills(pe_sandboxes *sx, const pe_store_sandbox *sb, int64_t *kills,
                         int64_t *limit, pe_err *err)
{
    if (pe_sandbox_is_remote(sb))
        return remote_lacks(sb, "OOM kill count", err);
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_oom_kills(sx->rt, sb->id, kills, limit, err);
}

int pe_sandbox_egress_denials(pe_sandboxes *sx, const pe_store_sandbox *sb, size_t limit,
                              json_t **list, pe_err *err)
{
    *list = NULL;
    /* Our egress proxy sees only local sandboxes' traffic: a remote
     * one's connections leave from its provider's network. */
    if (pe_sandbox_is_remote(sb))
        return remote_lacks(sb, "egress denials", err);
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_egress_denials(sx->rt, sb->id, limit, list, err);
}

int pe_sandboxes_local_list(pe_sandboxes *sx, char **json_out, pe_err *err)
{
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_list(sx->rt, json_out, err);
}

int pe_sandboxes_local_remove(pe_sandboxes *sx, const char *name, pe_err *err)
{
    if (sx->rt == NULL)
        return no_runtime(err);
    return pe_runtime_remove(sx->rt, name, err);
}

int pe_sandboxes_checkpoint_probe(char **reason)
{
    return pe_runtime_checkpoint_probe(reason);
}
