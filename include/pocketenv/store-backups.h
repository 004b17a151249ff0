/* The store's typed operations for backups (io.pocketenv.sandbox.
 * createBackup / getBackups / restoreBackup, issue 5), over the backups
 * table of migration 1. A row names an archive the daemon keeps under
 * DATA/backups/; it belongs to a sandbox (ON DELETE CASCADE) and through
 * it to the sandbox's owner. Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_BACKUPS_H
#define POCKETENV_STORE_BACKUPS_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_backup {
    const char *id;         /* "bak_..." */
    const char *sandbox_id; /* the sandbox it was taken of */
    const char *archive;    /* file name under DATA/backups (column backup_id) */
    const char *directory;  /* absolute path inside the sandbox */
    const char *description;
    int64_t expires_at; /* unix ms; 0 = never */
    int64_t created_at;
} pe_store_backup;

void pe_store_backup_clear(pe_store_backup *b);
void pe_store_backup_list_free(pe_store_backup *list, size_t n);

/* Insert b (id, sandbox_id, archive, directory required; created_at 0 =
 * now). An unknown sandbox is PE_ENOENT. */
int pe_store_backup_add(pe_store *s, const pe_store_backup *b, pe_err *err);
/* Row id if its sandbox belongs to owner_did (NULL: any owner), else
 * PE_ENOENT. */
int pe_store_backup_get(pe_store *s, const char *owner_did, const char *id, pe_store_backup *out,
                        pe_err *err);
/* Every backup of a sandbox, newest first. Free with pe_store_backup_list_free. */
int pe_store_backup_list(pe_store *s, const char *sandbox_id, pe_store_backup **out, size_t *n,
                         pe_err *err);
int pe_store_backup_count(pe_store *s, const char *sandbox_id, int64_t *count, pe_err *err);
/* Up to limit rows whose expires_at is set and <= now_ms, oldest first. */
int pe_store_backup_expired(pe_store *s, int64_t now_ms, int64_t limit, pe_store_backup **out,
                            size_t *n, pe_err *err);
/* PE_ENOENT if the row is gone already. */
int pe_store_backup_delete(pe_store *s, const char *id, pe_err *err);

#endif
