/* The store's typed operations for backups (pocketenv/store-backups.h).
 *
 * Rows of the backups table of migration 1: the archive's file name goes
 * in backup_id (upstream's provider backup id), expires_at and created_at
 * are unix milliseconds. Ownership is the sandbox's: a lookup by owner
 * joins sandboxes and answers another user's row as a missing one.
 *
 * Every value is a bound parameter. Threading: none; one pe_store per
 * thread. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-backups.h"
#include "store-internal.h"

#define BACKUP_COLS                                                                                \
    "b.id, b.sandbox_id, b.backup_id, b.directory, b.description, b.expires_at, b.created_at"

void pe_store_backup_clear(pe_store_backup *b)
{
    if (b == NULL)
        return;
    free((char *)b->id);
    free((char *)b->sandbox_id);
    free((char *)b->archive);
    free((char *)b->directory);
    free((char *)b->description);
    memset(b, 0, sizeof(*b));
}

void pe_store_backup_list_free(pe_store_backup *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_backup_clear(&list[i]);
    free(list);
}

static void row_to_backup(const pe__sql_res *r, size_t row, pe_store_backup *b)
{
    b->id = pe__sql_dup(r, row, 0);
    b->sandbox_id = pe__sql_dup(r, row, 1);
    b->archive = pe__sql_dup(r, row, 2);
    b->directory = pe__sql_dup(r, row, 3);
    b->description = pe__sql_dup(r, row, 4);
    b->expires_at = pe__sql_int(r, row, 5);
    b->created_at = pe__sql_int(r, row, 6);
}

int pe_store_backup_add(pe_store *s, const pe_store_backup *b, pe_err *err)
{
    int64_t created = b->created_at ? b->created_at : pe_store_now_ms();

    if (b->id == NULL || b->sandbox_id == NULL || b->archive == NULL || b->directory == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "add backup: id, sandbox, archive, directory needed");
    if (pe__store_query(s,
                        "INSERT INTO backups (id, sandbox_id, backup_id, directory, description, "
                        "expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        (pe__sql_arg[]){SQL_TEXT(b->id), SQL_TEXT(b->sandbox_id),
                                        SQL_TEXT(b->archive), SQL_TEXT(b->directory),
                                        SQL_TEXT(b->description), SQL_INT_OR_NULL(b->expires_at),
                                        SQL_INT(created)},
                        7, NULL, err) < 0) {
        if (err && err->code == PE_ENOENT)
            return pe_err_set(err, PE_ENOENT, 0, "add backup: sandbox %s not found", b->sandbox_id);
        return pe_err_prefix(err, "add backup %s", b->id);
    }
    return 0;
}

static int select_rows(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                       pe_store_backup **out, size_t *n, pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "list backups");
    if (r.nrows > 0)
        *out = pe_xcalloc(r.nrows, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_backup(&r, i, &(*out)[i]);
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_backup_get(pe_store *s, const char *owner_did, const char *id, pe_store_backup *out,
                        pe_err *err)
{
    pe_store_backup *list = NULL;
    size_t n = 0;
    int r;

    memset(out, 0, sizeof(*out));
    if (owner_did)
        r = select_rows(s,
                        "SELECT " BACKUP_COLS " FROM backups b JOIN sandboxes x ON x.id = "
                        "b.sandbox_id WHERE b.id = $1 AND x.owner_did = $2",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(owner_did)}, 2, &list, &n, err);
    else
        r = select_rows(s, "SELECT " BACKUP_COLS " FROM backups b WHERE b.id = $1",
                        (pe__sql_arg[]){SQL_TEXT(id)}, 1, &list, &n, err);
    if (r < 0)
        return -1;
    if (n == 0)
        return pe_err_set(err, PE_ENOENT, 0, "backup not found");
    *out = list[0];
    memset(&list[0], 0, sizeof(list[0]));
    pe_store_backup_list_free(list, n);
    return 0;
}

int pe_store_backup_list(pe_store *s, const char *sandbox_id, pe_store_backup **out, size_t *n,
                         pe_err *err)
{
    return select_rows(s,
                       "SELECT " BACKUP_COLS " FROM backups b WHERE b.sandbox_id = $1 "
                       "ORDER BY b.created_at DESC, b.id",
                       (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, out, n, err);
}

int pe_store_backup_count(pe_store *s, const char *sandbox_id, int64_t *count, pe_err *err)
{
    pe__sql_res r = {0};

    if (pe__store_query(s, "SELECT COUNT(*) FROM backups WHERE sandbox_id = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "count backups");
    *count = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_backup_expired(pe_store *s, int64_t now_ms, int64_t limit, pe_store_backup **out,
                            size_t *n, pe_err *err)
{
    return select_rows(s,
                       "SELECT " BACKUP_COLS " FROM backups b WHERE b.expires_at IS NOT NULL "
                       "AND b.expires_at <= $1 ORDER BY b.expires_at, b.id LIMIT $2",
                       (pe__sql_arg[]){SQL_INT(now_ms), SQL_INT(limit > 0 ? limit : 100)}, 2, out,
                       n, err);
}

int pe_store_backup_delete(pe_store *s, const char *id, pe_err *err)
{
    pe__sql_res r = {0};

    if (pe__store_query(s, "DELETE FROM backups WHERE id = $1", (pe__sql_arg[]){SQL_TEXT(id)}, 1,
                        &r, err) < 0)
        return pe_err_prefix(err, "delete backup %s", id);
    if (r.changes == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "backup not found");
    }
    pe__sql_res_clear(&r);
    return 0;
}
