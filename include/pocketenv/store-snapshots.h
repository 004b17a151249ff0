/* The store's typed operations for snapshots (io.pocketenv.sandbox.
 * createSnapshot / getSnapshots / getSnapshot / deleteSnapshot), over the
 * snapshots table of migration 5. A row names a runtime snapshot (layer)
 * and belongs to its owner, not to the sandbox it was taken of, which it
 * outlives. Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_SNAPSHOTS_H
#define POCKETENV_STORE_SNAPSHOTS_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_snapshot {
    const char *id;         /* "snp_..." */
    const char *owner_did;  /* users.did */
    const char *name;       /* unique per owner */
    const char *sandbox_id; /* the sandbox it was taken of (may be gone) */
    const char *layer;      /* the runtime's snapshot id */
    const char *image;      /* the image it lies over */
    const char *definition; /* JSON text, or NULL */
    const char *description;
    int64_t size_bytes;
    int64_t frozen_us;  /* how long the sandbox was frozen */
    int64_t expires_at; /* unix ms; 0 = never */
    int64_t created_at;
    const char *node; /* nodes.id whose runtime has the layer; NULL: not recorded */
    /* A remote sandbox's (migration 10): the adapter that keeps it (NULL:
     * the local runtime), then layer is its id there; the credential that
     * made it, sealed and redacted texts (NULL: the operator's). */
    const char *provider;
    const char *credential, *credential_shown;
} pe_store_snapshot;

void pe_store_snapshot_clear(pe_store_snapshot *v);
void pe_store_snapshot_list_free(pe_store_snapshot *list, size_t n);

/* Insert v (created_at 0 = now). A name the owner has already is
 * PE_EEXIST. */
int pe_store_snapshot_add(pe_store *s, const pe_store_snapshot *v, pe_err *err);
/* The owner's snapshot whose id or name is key (owner_did NULL: any
 * owner, by id only), else PE_ENOENT. */
int pe_store_snapshot_get(pe_store *s, const char *owner_did, const char *key,
                          pe_store_snapshot *out, pe_err *err);
/* The owner's snapshots, newest first. */
int pe_store_snapshot_list(pe_store *s, const char *owner_did, pe_store_snapshot **out, size_t *n,
                           pe_err *err);
/* Up to limit rows whose expires_at is set and <= now_ms, oldest first. */
int pe_store_snapshot_expired(pe_store *s, int64_t now_ms, int64_t limit, pe_store_snapshot **out,
                              size_t *n, pe_err *err);
/* PE_ENOENT if the row is gone already. */
int pe_store_snapshot_delete(pe_store *s, const char *id, pe_err *err);

/* Deleting in the background (migration 9). delete_later moves snapshot
 * v to the deletions (its layer still to remove) and frees its name: from
 * then on get, list and expired do not see it. PE_ENOENT if the row is
 * gone already. */
int pe_store_snapshot_delete_later(pe_store *s, const pe_store_snapshot *v, pe_err *err);
/* Up to limit deletions, oldest first, as snapshots with only id,
 * owner_did, name, layer, node, provider, credential, credential_shown and
 * created_at (when asked) set. node not NULL: only those whose layer is on
 * that node (or on no recorded one). */
int pe_store_snapshot_deletions(pe_store *s, const char *node, int64_t limit,
                                pe_store_snapshot **out, size_t *n, pe_err *err);
/* The owner's deletion whose snapshot id or name is key, else PE_ENOENT. */
int pe_store_snapshot_deletion_get(pe_store *s, const char *owner_did, const char *key,
                                   pe_store_snapshot *out, pe_err *err);
/* Layer gone: forget the deletion (and the snapshot row, if a stop
 * between the two steps of delete_later left it). */
int pe_store_snapshot_deletion_done(pe_store *s, const pe_store_snapshot *v, pe_err *err);

#endif
