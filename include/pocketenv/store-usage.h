/* What a user holds, for the daemon's per-user quotas (docs/design/
 * resources.md): their sandboxes, the memory of those that run, the disk
 * their sandboxes are granted, and the archives of their backups.
 * Threading: none; one pe_store per thread. */
#ifndef POCKETENV_STORE_USAGE_H
#define POCKETENV_STORE_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

typedef struct pe_store_usage {
    int64_t sandboxes; /* rows, whatever their status */
    int64_t memory;    /* GB: sum over INITIALIZING and RUNNING rows */
    int64_t disk;      /* GB: sum over every row */
} pe_store_usage;

/* owner_did's usage. Rows made before sizes were recorded (memory or disk
 * NULL) count as default_memory / default_disk. except_id (may be NULL)
 * is left out of the memory sum: the sandbox a start is about to run. */
int pe_store_user_usage(pe_store *s, const char *owner_did, int64_t default_memory,
                        int64_t default_disk, const char *except_id, pe_store_usage *out,
                        pe_err *err);

/* The archive file names (backups.backup_id) of every backup of
 * owner_did's sandboxes: *names is an array of *n malloc'd strings, free
 * with pe_store_names_free. */
int pe_store_user_backup_archives(pe_store *s, const char *owner_did, char ***names, size_t *n,
                                  pe_err *err);
void pe_store_names_free(char **names, size_t n);

#endif
