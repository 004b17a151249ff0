/* The store's typed operations for snapshots (pocketenv/store-snapshots.h),
 * over the snapshots table of migration 5 and the snapshot_deletions of 9. Times are unix
 * milliseconds. Every value is a bound parameter. Threading: none; one pe_store per thread. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-snapshots.h"
#include "store-internal.h"

#define SNAPSHOT_COLS                                                                              \
    "id, owner_did, name, source_sandbox, layer, image, definition, description, size_bytes, "     \
    "frozen_us, expires_at, created_at, node, provider, credential, credential_shown"
/* A deletion in a snapshot's shape (the columns row_to_snapshot reads). */
#define DELETION_COLS                                                                              \
    "snapshot_id, owner_did, name, '', layer, '', NULL, NULL, 0, 0, NULL, requested_at, node, "    \
    "provider, credential, credential_shown"
/* Not moved to the deletions (a stop between delete_later's steps). */
#define NOT_DELETING " AND id NOT IN (SELECT snapshot_id FROM snapshot_deletions)"

void pe_store_snapshot_clear(pe_store_snapshot *v)
{
    if (v == NULL)
        return;
    free((char *)v->id);
    free((char *)v->owner_did);
    free((char *)v->name);
    free((char *)v->sandbox_id);
    free((char *)v->layer);
    free((char *)v->image);
    free((char *)v->definition);
    free((char *)v->description);
    free((char *)v->node);
    free((char *)v->provider);
    free((char *)v->credential);
    free((char *)v->credential_shown);
    memset(v, 0, sizeof(*v));
}

void pe_store_snapshot_list_free(pe_store_snapshot *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_snapshot_clear(&list[i]);
    free(list);
}

static void row_to_snapshot(const pe__sql_res *r, size_t row, pe_store_snapshot *v)
{
    v->id = pe__sql_dup(r, row, 0);
    v->owner_did = pe__sql_dup(r, row, 1);
    v->name = pe__sql_dup(r, row, 2);
    v->sandbox_id = pe__sql_dup(r, row, 3);
    v->layer = pe__sql_dup(r, row, 4);
    v->image = pe__sql_dup(r, row, 5);
    v->definition = pe__sql_dup(r, row, 6);
    v->description = pe__sql_dup(r, row, 7);
    v->size_bytes = pe__sql_int(r, row, 8);
    v->frozen_us = pe__sql_int(r, row, 9);
    v->expires_at = pe__sql_int(r, row, 10);
    v->created_at = pe__sql_int(r, row, 11);
    v->node = pe__sql_dup(r, row, 12);
    v->provider = pe__sql_dup(r, row, 13);
    v->credential = pe__sql_dup(r, row, 14);
    v->credential_shown = pe__sql_dup(r, row, 15);
}

int pe_store_snapshot_add(pe_store *s, const pe_store_snapshot *v, pe_err *err)
{
    int64_t created = v->created_at ? v->created_at : pe_store_now_ms();

    if (v->id == NULL || v->owner_did == NULL || v->name == NULL || v->sandbox_id == NULL ||
        v->layer == NULL || v->image == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "add snapshot: a field is missing");
    if (pe__store_query(
            s,
            "INSERT INTO snapshots (" SNAPSHOT_COLS
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            (pe__sql_arg[]){
                SQL_TEXT(v->id), SQL_TEXT(v->owner_did), SQL_TEXT(v->name), SQL_TEXT(v->sandbox_id),
                SQL_TEXT(v->layer), SQL_TEXT(v->image), SQL_TEXT(v->definition),
                SQL_TEXT(v->description), SQL_INT(v->size_bytes), SQL_INT(v->frozen_us),
                SQL_INT_OR_NULL(v->expires_at), SQL_INT(created), SQL_TEXT(v->node),
                SQL_TEXT(v->provider), SQL_TEXT(v->credential), SQL_TEXT(v->credential_shown)},
            16, NULL, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "a snapshot named %s exists", v->name);
        return pe_err_prefix(err, "add snapshot %s", v->id);
    }
    return 0;
}

static int select_rows(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                       pe_store_snapshot **out, size_t *n, pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "list snapshots");
    if (r.nrows > 0)
        *out = pe_xcalloc(r.nrows, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_snapshot(&r, i, &(*out)[i]);
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_snapshot_get(pe_store *s, const char *owner_did, const char *key,
                          pe_store_snapshot *out, pe_err *err)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;
    int r;

    memset(out, 0, sizeof(*out));
    if (owner_did)
        r = select_rows(s,
                        "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE owner_did = $2 AND "
                        "(id = $1 OR name = $1)" NOT_DELETING,
                        (pe__sql_arg[]){SQL_TEXT(key), SQL_TEXT(owner_did)}, 2, &list, &n, err);
    else
        r = select_rows(s, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE id = $1" NOT_DELETING,
                        (pe__sql_arg[]){SQL_TEXT(key)}, 1, &list, &n, err);
    if (r < 0)
        return -1;
    if (n == 0)
        return pe_err_set(err, PE_ENOENT, 0, "snapshot not found");
    *out = list[0];
    memset(&list[0], 0, sizeof(list[0]));
    pe_store_snapshot_list_free(list, n);
    return 0;
}

int pe_store_snapshot_list(pe_store *s, const char *owner_did, pe_store_snapshot **out, size_t *n,
                           pe_err *err)
{
    return select_rows(s,
                       "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE owner_did = $1" NOT_DELETING
                       " ORDER BY created_at DESC, id",
                       (pe__sql_arg[]){SQL_TEXT(owner_did)}, 1, out, n, err);
}

int pe_store_snapshot_expired(pe_store *s, int64_t now_ms, int64_t limit, pe_store_snapshot **out,
                              size_t *n, pe_err *err)
{
    return select_rows(s,
                       "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE expires_at IS NOT NULL "
                       "AND expires_at <= $1" NOT_DELETING " ORDER BY expires_at, id LIMIT $2",
                       (pe__sql_arg[]){SQL_INT(now_ms), SQL_INT(limit > 0 ? limit : 100)}, 2, out,
                       n, err);
}

int pe_store_snapshot_delete(pe_store *s, const char *id, pe_err *err)
{
    pe__sql_res r = {0};

    if (pe__store_query(s, "DELETE FROM snapshots WHERE id = $1", (pe__sql_arg[]){SQL_TEXT(id)}, 1,
                        &r, err) < 0)
        return pe_err_prefix(err, "delete snapshot %s", id);
    if (r.changes == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "snapshot not found");
    }
    pe__sql_res_clear(&r);
    return 0;
}

/* Two steps, in this order: a stop between them leaves both rows, and the
 * deletion hides the snapshot (NOT_DELETING) until deletion_done. */
int pe_store_snapshot_delete_later(pe_store *s, const pe_store_snapshot *v, pe_err *err)
{
    if (pe__store_query(s,
                        "INSERT INTO snapshot_deletions (layer, snapshot_id, owner_did, name, "
                        "requested_at, node, provider, credential, credential_shown) VALUES ($1, "
                        "$2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (layer) DO NOTHING",
                        (pe__sql_arg[]){SQL_TEXT(v->layer), SQL_TEXT(v->id), SQL_TEXT(v->owner_did),
                                        SQL_TEXT(v->name), SQL_INT(pe_store_now_ms()),
                                        SQL_TEXT(v->node), SQL_TEXT(v->provider),
                                        SQL_TEXT(v->credential), SQL_TEXT(v->credential_shown)},
                        9, NULL, err) < 0)
        return pe_err_prefix(err, "delete snapshot %s", v->id);
    return pe_store_snapshot_delete(s, v->id, err);
}

int pe_store_snapshot_deletions(pe_store *s, const char *node, int64_t limit,
                                pe_store_snapshot **out, size_t *n, pe_err *err)
{
    return select_rows(
        s,
        "SELECT " DELETION_COLS " FROM snapshot_deletions WHERE CAST($2 AS TEXT) IS NULL "
        "OR node IS NULL OR node = $2 ORDER BY requested_at, layer LIMIT $1",
        (pe__sql_arg[]){SQL_INT(limit > 0 ? limit : 100), SQL_TEXT(node)}, 2, out, n, err);
}

int pe_store_snapshot_deletion_get(pe_store *s, const char *owner_did, const char *key,
                                   pe_store_snapshot *out, pe_err *err)
{
    pe_store_snapshot *list = NULL;
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    if (select_rows(s,
                    "SELECT " DELETION_COLS " FROM snapshot_deletions WHERE owner_did = $2 AND "
                    "(snapshot_id = $1 OR name = $1) ORDER BY requested_at DESC LIMIT 1",
                    (pe__sql_arg[]){SQL_TEXT(key), SQL_TEXT(owner_did)}, 2, &list, &n, err) < 0)
        return -1;
    if (n == 0)
        return pe_err_set(err, PE_ENOENT, 0, "no snapshot being deleted");
    *out = list[0];
    memset(&list[0], 0, sizeof(list[0]));
    pe_store_snapshot_list_free(list, n);
    return 0;
}

int pe_store_snapshot_deletion_done(pe_store *s, const pe_store_snapshot *v, pe_err *err)
{
    if (pe__store_query(s, "DELETE FROM snapshots WHERE id = $1", (pe__sql_arg[]){SQL_TEXT(v->id)},
                        1, NULL, err) < 0 ||
        pe__store_query(s, "DELETE FROM snapshot_deletions WHERE layer = $1",
                        (pe__sql_arg[]){SQL_TEXT(v->layer)}, 1, NULL, err) < 0)
        return pe_err_prefix(err, "forget deleted snapshot %s", v->id);
    return 0;
}
