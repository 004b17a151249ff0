/* The store's typed operations for a sandbox's resources as the API sees
 * them (io.pocketenv.variable/secret/file.*, issue 5): rows addressed by
 * their own id, scoped to the sandbox owner's DID, paged with a total.
 *
 * The tables are those of migration 1 (variables, secrets, files: one row
 * per (sandbox, name or path)); store.c's pe_store_kv_* address the same
 * rows by key for the daemon's own use. Every value is a bound parameter;
 * the only text formatted into SQL is a table or column name from the
 * constant res_tables below.
 *
 * Ownership: a row belongs to its sandbox's owner. get and list join
 * sandboxes and filter on owner_did, so another user's row is PE_ENOENT
 * exactly like a missing one. update and delete take an id the caller has
 * already fetched with get (the daemon does so in the same job).
 *
 * Threading: none here; a pe_store belongs to one thread at a time. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store-internal.h"

/* Identifiers only: these are the sole strings formatted into SQL. */
static const struct res_table {
    const char *table;
    const char *key;
    const char *value;
    const char *id_prefix;
    const char *what;
} res_tables[] = {
    [PE_STORE_VARIABLE] = {"variables", "name", "value", "var_", "variable"},
    [PE_STORE_SECRET] = {"secrets", "name", "value", "secret_", "secret"},
    [PE_STORE_FILE] = {"files", "path", "content", "file_", "file"},
};

#define RES_LIST_MAX 1000

static const struct res_table *res_table(int kind, pe_err *err)
{
    if (kind < 0 || (size_t)kind >= PE_ARRAY_LEN(res_tables)) {
        pe_err_set(err, PE_EINVAL, 0, "unknown kind of sandbox resource %d", kind);
        return NULL;
    }
    return &res_tables[kind];
}

static void row_to_kv(const pe__sql_res *r, size_t row, pe_store_kv *kv)
{
    kv->id = pe__sql_dup(r, row, 0);
    kv->sandbox_id = pe__sql_dup(r, row, 1);
    kv->key = pe__sql_dup(r, row, 2);
    kv->value = pe__sql_dup(r, row, 3);
    kv->created_at = pe__sql_int(r, row, 4);
    kv->updated_at = pe__sql_int(r, row, 5);
}

int pe_store_res_add(pe_store *s, int kind, const char *sandbox_id, const char *key,
                     const char *value, char **id_out, pe_err *err)
{
    const struct res_table *t = res_table(kind, err);
    cleanup_free char *id = NULL;
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};
    int64_t changes, now = pe_store_now_ms();

    if (t == NULL)
        return -1;
    if (sandbox_id == NULL || key == NULL || value == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "add %s: sandbox, key and value are required",
                          t->what);
    id = pe_store_new_id(t->id_prefix);
    /* INSERT ... SELECT: an unknown sandbox inserts nothing (PE_ENOENT)
     * instead of tripping the foreign key; a taken key is PE_EEXIST. */
    sql = pe_xasprintf("INSERT INTO %s (id, sandbox_id, %s, %s, created_at, updated_at) "
                       "SELECT $1, id, $3, $4, CAST($5 AS BIGINT), CAST($5 AS BIGINT) "
                       "FROM sandboxes WHERE id = $2",
                       t->table, t->key, t->value);
    if (pe__store_query(s, sql,
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_TEXT(key),
                                        SQL_TEXT(value), SQL_INT(now)},
                        5, &r, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "the sandbox already has a %s %s %s", t->what,
                              kind == PE_STORE_FILE ? "at" : "named", key);
        return pe_err_prefix(err, "add %s to %s", t->what, sandbox_id);
    }
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "add %s: sandbox %s not found", t->what, sandbox_id);
    if (id_out)
        *id_out = pe_steal_ptr(&id);
    return 0;
}

int pe_store_res_get(pe_store *s, int kind, const char *owner_did, const char *id, pe_store_kv *out,
                     pe_err *err)
{
    const struct res_table *t = res_table(kind, err);
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (t == NULL)
        return -1;
    sql = pe_xasprintf("SELECT r.id, r.sandbox_id, r.%s, r.%s, r.created_at, r.updated_at "
                       "FROM %s r JOIN sandboxes sb ON sb.id = r.sandbox_id "
                       "WHERE r.id = $1 AND sb.owner_did = $2",
                       t->key, t->value, t->table);
    if (pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(owner_did)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "get %s %s", t->what, id);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "%s not found", t->what);
    }
    row_to_kv(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_res_list(pe_store *s, int kind, const char *owner_did, const char *sandbox_id,
                      int64_t limit, int64_t offset, pe_store_kv **out, size_t *n, int64_t *total,
                      pe_err *err)
{
    const struct res_table *t = res_table(kind, err);
    cleanup_free char *where = NULL;
    cleanup_free char *sql = NULL;
    pe__sql_arg args[4] = {SQL_TEXT(owner_did), SQL_TEXT(sandbox_id), SQL_INT(limit),
                           SQL_INT(offset)};
    pe__sql_res r = {0};
    pe_store_kv *list;

    *out = NULL;
    *n = 0;
    if (t == NULL)
        return -1;
    if (limit <= 0 || limit > RES_LIST_MAX || offset < 0)
        return pe_err_set(err, PE_EINVAL, 0, "list %ss: limit must be 1..%d, offset >= 0", t->what,
                          RES_LIST_MAX);
    /* $2 NULL: every sandbox of the owner. */
    where =
        pe_xasprintf("FROM %s r JOIN sandboxes sb ON sb.id = r.sandbox_id "
                     "WHERE sb.owner_did = $1 AND (CAST($2 AS TEXT) IS NULL OR r.sandbox_id = $2)",
                     t->table);
    if (total) {
        sql = pe_xasprintf("SELECT COUNT(*) %s", where);
        if (pe__store_query(s, sql, args, 2, &r, err) < 0)
            return pe_err_prefix(err, "count %ss", t->what);
        *total = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
        pe__sql_res_clear(&r);
        free(sql);
    }
    sql = pe_xasprintf("SELECT r.id, r.sandbox_id, r.%s, r.%s, r.created_at, r.updated_at %s "
                       "ORDER BY r.%s, r.sandbox_id, r.id LIMIT $3 OFFSET $4",
                       t->key, t->value, where, t->key);
    if (pe__store_query(s, sql, args, 4, &r, err) < 0)
        return pe_err_prefix(err, "list %ss", t->what);
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_kv(&r, i, &list[i]);
    *out = list;
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_res_count(pe_store *s, int kind, const char *sandbox_id, int64_t *count, pe_err *err)
{
    const struct res_table *t = res_table(kind, err);
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};

    if (t == NULL)
        return -1;
    sql = pe_xasprintf("SELECT COUNT(*) FROM %s WHERE sandbox_id = $1", t->table);
    if (pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "count %ss of %s", t->what, sandbox_id);
    *count = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
    pe__sql_res_clear(&r);
    return 0;
}

static int changed_one(pe_store *s, const struct res_table *t, const char *verb, const char *id,
                       const char *sql, const pe__sql_arg *args, size_t nargs, const char *key,
                       pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe__store_query(s, sql, args, nargs, &r, err) < 0) {
        if (err && err->code == PE_EEXIST && key)
            return pe_err_set(err, PE_EEXIST, 0, "the sandbox already has a %s %s %s", t->what,
                              t->key[0] == 'p' ? "at" : "named", key);
        return pe_err_prefix(err, "%s %s %s", verb, t->what, id);
    }
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "%s not found", t->what);
    return 0;
}

int pe_store_res_update(pe_store *s, int kind, const char *id, const char *key, const char *value,
                        pe_err *err)
{
    const struct res_table *t = res_table(kind, err);
    cleanup_free char *sql = NULL;

    if (t == NULL)
        return -1;
    /* NULL keeps the current key or value. */
    sql = pe_xasprintf(
        "UPDATE %s SET %s = COALESCE(CAST($2 AS TEXT), %s), %s = COALESCE(CAST($3 AS TEXT), %s), "
        "updated_at = $4 WHERE id = $1",
        t->table, t->key, t->key, t->value, t->value);
    return changed_one(
        s, t, "update", id, sql,
        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(key), SQL_TEXT(value), SQL_INT(pe_store_now_ms())},
        4, key, err);
}

int pe_store_res_delete(pe_store *s, int kind, const char *id, pe_err *err)
{
    const struct res_table *t = res_table(kind, err);
    cleanup_free char *sql = NULL;

    if (t == NULL)
        return -1;
    sql = pe_xasprintf("DELETE FROM %s WHERE id = $1", t->table);
    return changed_one(s, t, "delete", id, sql, (pe__sql_arg[]){SQL_TEXT(id)}, 1, NULL, err);
}
