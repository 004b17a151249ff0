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
/* The same, at create, with the base strongRef ({uri, cid}) of a base
 * given as an at:// URI (NULL: keep the one the record has). */
void pe_daemon_record_sync_base(pe_daemon *d, pe_store *s, const char *id, const json_t *base_ref);
/* Worker thread: sandbox id is gone; its record is to be deleted. */
void pe_daemon_record_forget(pe_daemon *d, pe_store *s, const char *id);
/* The record's state for getSandbox ({state, uri, cid, error,
 * attempts}), or NULL for a sandbox without one. */
json_t *pe_daemon_record_view(pe_store *s, const char *id);

/* createSandbox.base as an at:// URI of an io.pocketenv.sandbox record
 * (worker thread): the record, fetched from its repository's PDS (cached
 * 10 minutes), names a base this daemon can run by its name or record key,
 * or through its own base strongRef (3 levels at most). *name gets that
 * base, *ref the {uri, cid} of the record asked for. A record that names
 * nothing we can run, or is not there: PE_EINVAL; a PDS answering garbage
 * or for another repository: PE_EREMOTE; too slow: PE_ETIMEDOUT. */
int pe_daemon_record_template(pe_daemon *d, const char *uri, char **name, json_t **ref,
                              pe_err *err);

/* Start the writer (its timer); it catches up at once with what a
 * previous run left queued. */
int pe_daemon_records_start(pe_daemon *d, pe_err *err);

#endif
