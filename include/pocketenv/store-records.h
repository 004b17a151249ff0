/* The outbox of io.pocketenv.sandbox records (issue 18): for each sandbox
 * of a user signed in with an AT Protocol handle, the record it should
 * have in the user's repository and what was written there last. The
 * daemon's writer (daemon/records.c) works through the rows that are due;
 * a row survives a daemon restart and a PDS that is down, and outlives its
 * sandbox until the record's deletion has been written.
 *
 * A row is "synced" when done_gen == gen, "pending" otherwise; want NULL
 * means the record is to be deleted (the row goes once it is). Every
 * change bumps gen, so a change made while a write is in flight is
 * written again. Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_RECORDS_H
#define POCKETENV_STORE_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_record {
    const char *sandbox; /* sandbox id */
    const char *did;     /* whose repository */
    const char *rkey;    /* record key, a TID chosen once */
    const char *cid;     /* of the last write; NULL: never written */
    const char *want;    /* the record's JSON; NULL: delete it */
    int64_t gen, done_gen;
    int64_t attempts;  /* failed writes since the last success */
    int64_t next_at;   /* unix ms: not before */
    const char *error; /* of the last failed write */
    int64_t updated_at;
} pe_store_record;

void pe_store_record_clear(pe_store_record *r);
void pe_store_record_list_free(pe_store_record *list, size_t n);

/* The record of sandbox should be want (JSON text; NULL: deleted). A new
 * row takes did and rkey; an existing one keeps its own. The row is due at
 * once. Deleting (want NULL) a sandbox without a row does nothing. */
int pe_store_record_want(pe_store *s, const char *sandbox, const char *did, const char *rkey,
                         const char *want, pe_err *err);
/* PE_ENOENT when sandbox has no row. */
int pe_store_record_get(pe_store *s, const char *sandbox, pe_store_record *out, pe_err *err);
/* Up to limit rows with gen > done_gen and next_at <= now_ms, oldest
 * change first. Free with pe_store_record_list_free. */
int pe_store_record_due(pe_store *s, int64_t now_ms, int64_t limit, pe_store_record **out,
                        size_t *n, pe_err *err);
/* Generation gen of the row was written with cid (NULL after a delete:
 * the row goes, unless it changed again since). */
int pe_store_record_written(pe_store *s, const char *sandbox, int64_t gen, const char *cid,
                            pe_err *err);
/* A write failed: error kept, attempts counted, due again at next_at. */
int pe_store_record_failed(pe_store *s, const char *sandbox, const char *error, int64_t next_at,
                           pe_err *err);
/* Only the cid (what the repository holds now, learnt from getRecord). */
int pe_store_record_set_cid(pe_store *s, const char *sandbox, const char *cid, pe_err *err);

#endif
