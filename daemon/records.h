/* Sandboxes as io.pocketenv.sandbox records in their owner's repository
 * (issue 18; daemon/records.c). */
#ifndef PE_DAEMON_RECORDS_H
#define PE_DAEMON_RECORDS_H

#include <jansson.h>

#include "daemon.h"

#define PE_RECORD_COLLECTION "io.pocketenv.sandbox"

/* A new record key (a TID: 13 characters of base32-sortable, microseconds
 * and a random clock id) into rkey. Any thread. */
void pe_daemon_record_tid(char rkey[14]);

/* The uri a new sandbox of did gets when did signed in with AT Protocol
 * here (malloc'd), else NULL: only such a sandbox has a record. */
char *pe_daemon_record_new_uri(pe_daemon *d, const char *did);

/* Worker thread: the record of sandbox id should now say what its row
 * says (created, details or ports changed); queued and written soon. A
 * sandbox without a record uri does nothing. Failures are logged: the
 * sandbox's own operation has succeeded already. */
void pe_daemon_record_sync(pe_daemon *d, pe_store *s, const char *id);
/* Worker thread: sandbox id is gone; its record is to be deleted. */
void pe_daemon_record_forget(pe_daemon *d, pe_store *s, const char *id);
/* The record's state for getSandbox ({state, uri, cid, error,
 * attempts}), or NULL for a sandbox without one. */
json_t *pe_daemon_record_view(pe_store *s, const char *id);

/* Start the writer (its timer); it catches up at once with what a
 * previous run left queued. */
int pe_daemon_records_start(pe_daemon *d, pe_err *err);

#endif
