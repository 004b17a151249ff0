/* Snapshots of sandboxes (issue 19): io.pocketenv.sandbox.createSnapshot,
 * getSnapshots, getSnapshot, deleteSnapshot (handlers/snapshot.c). */
#ifndef PE_DAEMON_SNAPSHOTS_H
#define PE_DAEMON_SNAPSHOTS_H

#include "daemon.h"

/* The four methods. Loop thread, at start. */
int pe_daemon_register_snapshots(pe_daemon *d, pe_err *err);

/* Housekeeping, on a worker (the tick): remove expired snapshots (row,
 * then the runtime's layer). */
void pe_daemon_snapshots_expire(pe_daemon *d, pe_store *s);

#endif
