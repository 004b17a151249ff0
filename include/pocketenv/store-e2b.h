/* What the E2B API keeps of a sandbox that our rows have no column for
 * (daemon/e2b.c): its metadata and the end of its timeout, one row per
 * sandbox made or timed through that API, gone with it (ON DELETE
 * CASCADE). The node that runs the sandbox writes it and arms the timer;
 * every node reads it, so a list through any node of a cluster has them
 * (docs/cluster.md). Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_E2B_H
#define POCKETENV_STORE_E2B_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_e2b {
    char *sandbox_id;
    char *metadata; /* JSON object text, or NULL */
    int64_t end_ms; /* the end of its timeout; 0: none */
} pe_store_e2b;

/* Set sandbox_id's metadata (NULL: none) and end. Unknown sandbox:
 * PE_ENOENT. */
int pe_store_e2b_put(pe_store *s, const char *sandbox_id, const char *metadata, int64_t end_ms,
                     pe_err *err);
/* Set only the end (a row without metadata if it had none). */
int pe_store_e2b_set_end(pe_store *s, const char *sandbox_id, int64_t end_ms, pe_err *err);
/* The rows of owner_did's sandboxes. *out: *n entries, free with
 * pe_store_e2b_list_free. */
int pe_store_e2b_list(pe_store *s, const char *owner_did, pe_store_e2b **out, size_t *n,
                      pe_err *err);
void pe_store_e2b_list_free(pe_store_e2b *list, size_t n);

#endif
