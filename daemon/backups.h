/* Backups of a sandbox's directories (issue 5):
 * io.pocketenv.sandbox.createBackup / getBackups / restoreBackup
 * (handlers/backup.c). docs/design/transfer.md says what a user sees.
 * Apart from transfer.h (handlers/copy.c's), so that neither handler
 * includes a header of the other's functions. */
#ifndef PE_DAEMON_BACKUPS_H
#define PE_DAEMON_BACKUPS_H

#include "daemon.h"

/* The three backup methods. Loop thread, at start. */
int pe_daemon_register_backups(pe_daemon *d, pe_err *err);

/* Housekeeping, on a worker (the tick): remove expired backups (row and
 * archive) and archives whose row is gone (a deleted sandbox). */
void pe_daemon_backups_expire(pe_daemon *d, pe_store *s);

#endif
