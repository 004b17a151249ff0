/* Snapshots of sandboxes (issue 19): io.pocketenv.sandbox.createSnapshot,
 * getSnapshots, getSnapshot, deleteSnapshot, forkSandbox (the methods:
 * handlers/snapshot.c; the rest: sandbox-snapshots.c). */
#ifndef PE_DAEMON_SNAPSHOTS_H
#define PE_DAEMON_SNAPSHOTS_H

#include "daemon.h"
#include "pocketenv/store-snapshots.h"

/* createSandbox's base for a sandbox made from a snapshot:
 * "snapshot:NAME" (or an id) as the caller gives it, "snapshot:snp_..."
 * in the row. */
#define PE_SNAPSHOT_BASE "snapshot:"

/* A snapshot's life when its taker names none (seconds). */
#define PE_SNAPSHOT_TTL_DEFAULT (7 * 24 * 3600)
/* what a provider without PE_CAP_SNAPSHOT_BASE offers instead */
#define PE_SNAPSHOT_BASE_WHY                                                                       \
    "no new sandbox from a snapshot there: its snapshots restore their own sandbox "               \
    "(restoreSnapshot)"

/* The methods (and the idle policy's, kin). Loop thread, at start. */
int pe_daemon_register_snapshots(pe_daemon *d, pe_err *err);

/* Housekeeping, on a worker (the tick): remove expired snapshots (row,
 * then the runtime's layer). */
void pe_daemon_snapshots_expire(pe_daemon *d, pe_store *s);

/* Snapshot sandbox sb (held busy meanwhile) and record it as job->did's
 * snapshot name, kept ttl seconds, the oldest beyond the owner's
 * retention evicted; its view in *view_out. -1 with the job failed (and
 * nothing left of the snapshot). Worker thread. */
int pe_daemon_snapshot_take(pe_daemon_job *job, pe_store *s, const pe_store_sandbox *sb,
                            const char *name, int64_t ttl, const char *description,
                            json_t **view_out);
/* What getSnapshot answers for row v. */
json_t *pe_daemon_snapshot_view(pe_daemon *d, const pe_store_snapshot *v);
/* Move v to the store's deletions (its layer goes with the next purge).
 * Worker thread. */
int pe_daemon_snapshot_remove(pe_daemon *d, pe_store *s, const pe_store_snapshot *v, pe_err *err);
/* Loop thread: purge the deletions now, in the background. A refused job
 * (a full queue, a draining daemon) leaves them to the next tick. */
void pe_daemon_snapshots_purge_soon(pe_daemon *d);

/* createSandbox (on its worker, before the row is planned): a base
 * "snapshot:KEY" becomes "snapshot:<id>" of job->did's snapshot KEY (id
 * or name) in in; another user's or a missing one fails the job
 * (SnapshotNotFound). Any other base is left. 0, or -1 with the job
 * failed. */
int pe_daemon_snapshot_base(pe_daemon_job *job, pe_store *s, json_t *in);

/* pe_runtime_create for sandbox row sb: from its snapshot's layer when
 * its base is a snapshot (still there, still its owner's), else from its
 * image. From a snapshot, the sandbox also gets the variables, secrets,
 * files, services and exposed ports the snapshot's source had (those of
 * its own create win). Worker thread. */
int pe_daemon_snapshot_runtime_create(pe_daemon *d, const pe_store_sandbox *sb,
                                      const pe_sandbox_cfg *cfg, pe_err *err);

/* Make remote sandbox row sb (its base "snapshot:<id>", a snapshot its
 * provider keeps) at its provider from that snapshot, with the
 * definition the snapshot carries; the provider's id on the row and in
 * *remote_id (malloc'd). createSandbox's and a fork's. Worker thread. */
int pe_daemon_snapshot_remote_create(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb,
                                     char **remote_id, pe_err *err);

/* Remote sandbox sb was deleted (worker): where its provider's snapshots
 * go with their sandbox (snapshot but not snapshot-base: Sprites'
 * checkpoints go with their sprite), its snapshots' rows go too, to the
 * deletions as a deleteSnapshot's, rather than stay listed for nothing
 * there. Best effort: logged. */
void pe_daemon_snapshots_gone_with(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb);

/* The idle policy's snapshot-then-stop (housekeeping, worker): snapshot
 * sb as its owner's "<name>-idle-<UTC time>", with the default TTL and
 * retention. */
int pe_daemon_snapshot_idle(pe_daemon *d, pe_store *s, const pe_store_sandbox *sb, pe_err *err);

#endif
