/* The store's typed operations for volumes (io.pocketenv.volume.*, issue
 * 5): a user's named volumes and their mounts into sandboxes.
 *
 * Tables of migration 1: volumes (owner_did, name unique per owner) and
 * sandbox_volumes (sandbox_id, volume_id, path unique per sandbox,
 * read_only). A volume belongs to its user, not to a sandbox: deleting a
 * sandbox cascades to its mounts only, so the volume (and its data, kept by
 * the daemon under DATA/volumes/<id>) survives until deleted itself.
 *
 * Every value is a bound parameter. Threading: none; one pe_store per
 * thread. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store-internal.h"

#define VOLUME_LIST_MAX 1000

void pe_store_volume_clear(pe_store_volume *v)
{
    if (v == NULL)
        return;
    free((char *)v->id);
    free((char *)v->owner_did);
    free((char *)v->name);
    free((char *)v->node);
    memset(v, 0, sizeof(*v));
}

void pe_store_volume_list_free(pe_store_volume *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_volume_clear(&list[i]);
    free(list);
}

void pe_store_mount_clear(pe_store_mount *m)
{
    if (m == NULL)
        return;
    free((char *)m->volume_id);
    free((char *)m->volume_name);
    free((char *)m->sandbox_id);
    free((char *)m->path);
    memset(m, 0, sizeof(*m));
}

void pe_store_mount_list_free(pe_store_mount *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_mount_clear(&list[i]);
    free(list);
}

/* ---- volumes ---- */

#define VOLUME_COLS "v.id, v.owner_did, v.name, v.created_at, v.updated_at, v.node"

static void row_to_volume(const pe__sql_res *r, size_t row, pe_store_volume *v)
{
    v->id = pe__sql_dup(r, row, 0);
    v->owner_did = pe__sql_dup(r, row, 1);
    v->name = pe__sql_dup(r, row, 2);
    v->created_at = pe__sql_int(r, row, 3);
    v->updated_at = pe__sql_int(r, row, 4);
    v->node = pe__sql_dup(r, row, 5);
}

int pe_store_volume_set_node(pe_store *s, const char *id, const char *node, pe_err *err)
{
    if (pe__store_query(s, "UPDATE volumes SET node = $2 WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(node)}, 2, NULL, err) < 0)
        return pe_err_prefix(err, "volume %s", id);
    return 0;
}

int pe_store_volume_add(pe_store *s, const char *owner_did, const char *name, char **id_out,
                        pe_err *err)
{
    cleanup_free char *id = pe_store_new_id("vol_");
    int64_t now = pe_store_now_ms();

    if (owner_did == NULL || name == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "add volume: owner and name are required");
    if (pe__store_query(
            s,
            "INSERT INTO volumes (id, owner_did, name, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, $4)",
            (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(owner_did), SQL_TEXT(name), SQL_INT(now)}, 4,
            NULL, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "you already have a volume named %s", name);
        if (err && err->code == PE_ENOENT)
            return pe_err_set(err, PE_ENOENT, 0, "add volume: user %s not found", owner_did);
        return pe_err_prefix(err, "add volume %s", name);
    }
    if (id_out)
        *id_out = pe_steal_ptr(&id);
    return 0;
}

static int get_one(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                   pe_store_volume *out, pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "get volume");
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "volume not found");
    }
    row_to_volume(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_volume_get(pe_store *s, const char *owner_did, const char *id, pe_store_volume *out,
                        pe_err *err)
{
    return get_one(s, "SELECT " VOLUME_COLS " FROM volumes v WHERE v.id = $1 AND v.owner_did = $2",
                   (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(owner_did)}, 2, out, err);
}

int pe_store_volume_get_by_name(pe_store *s, const char *owner_did, const char *name,
                                pe_store_volume *out, pe_err *err)
{
    return get_one(s,
                   "SELECT " VOLUME_COLS " FROM volumes v WHERE v.owner_did = $1 AND v.name = $2",
                   (pe__sql_arg[]){SQL_TEXT(owner_did), SQL_TEXT(name)}, 2, out, err);
}

int pe_store_volume_list(pe_store *s, const char *owner_did, int64_t limit, int64_t offset,
                         pe_store_volume **out, size_t *n, int64_t *total, pe_err *err)
{
    pe__sql_arg args[3] = {SQL_TEXT(owner_did), SQL_INT(limit), SQL_INT(offset)};
    pe__sql_res r = {0};
    pe_store_volume *list;

    *out = NULL;
    *n = 0;
    if (limit <= 0 || limit > VOLUME_LIST_MAX || offset < 0)
        return pe_err_set(err, PE_EINVAL, 0, "list volumes: limit must be 1..%d, offset >= 0",
                          VOLUME_LIST_MAX);
    if (total) {
        if (pe__store_query(s, "SELECT COUNT(*) FROM volumes WHERE owner_did = $1", args, 1, &r,
                            err) < 0)
            return pe_err_prefix(err, "count volumes");
        *total = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
        pe__sql_res_clear(&r);
    }
    if (pe__store_query(s,
                        "SELECT " VOLUME_COLS " FROM volumes v WHERE v.owner_did = $1 "
                        "ORDER BY v.name, v.id LIMIT $2 OFFSET $3",
                        args, 3, &r, err) < 0)
        return pe_err_prefix(err, "list volumes");
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_volume(&r, i, &list[i]);
    *out = list;
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

static int changed_one(pe_store *s, const char *what, const char *sql, const pe__sql_arg *args,
                       size_t nargs, pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "%s", what);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "%s: not found", what);
    return 0;
}

int pe_store_volume_rename(pe_store *s, const char *id, const char *name, pe_err *err)
{
    if (changed_one(s, "rename volume",
                    "UPDATE volumes SET name = $2, updated_at = $3 WHERE id = $1",
                    (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(name), SQL_INT(pe_store_now_ms())}, 3,
                    err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "you already have a volume named %s", name);
        return -1;
    }
    return 0;
}

int pe_store_volume_delete(pe_store *s, const char *id, pe_err *err)
{
    return changed_one(s, "delete volume", "DELETE FROM volumes WHERE id = $1",
                       (pe__sql_arg[]){SQL_TEXT(id)}, 1, err);
}

/* ---- mounts ---- */

#define MOUNT_COLS                                                                                 \
    "m.volume_id, v.name, m.sandbox_id, m.path, m.read_only, sb.status, m.created_at, "            \
    "m.updated_at"
#define MOUNT_FROM                                                                                 \
    "FROM sandbox_volumes m JOIN volumes v ON v.id = m.volume_id "                                 \
    "JOIN sandboxes sb ON sb.id = m.sandbox_id "

static void row_to_mount(const pe__sql_res *r, size_t row, pe_store_mount *m)
{
    m->volume_id = pe__sql_dup(r, row, 0);
    m->volume_name = pe__sql_dup(r, row, 1);
    m->sandbox_id = pe__sql_dup(r, row, 2);
    m->path = pe__sql_dup(r, row, 3);
    m->read_only = pe__sql_int(r, row, 4) != 0;
    m->sandbox_status = pe_store_status_parse(pe__sql_cell(r, row, 5));
    m->created_at = pe__sql_int(r, row, 6);
    m->updated_at = pe__sql_int(r, row, 7);
}

int pe_store_mount_put(pe_store *s, const char *sandbox_id, const char *volume_id, const char *path,
                       int read_only, pe_err *err)
{
    cleanup_free char *id = pe_store_new_id("mnt_");
    int64_t now = pe_store_now_ms();

    if (sandbox_id == NULL || volume_id == NULL || path == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "mount volume: sandbox, volume and path required");
    /* One mount of a volume per sandbox: a new path replaces the old. */
    if (pe__store_query(s, "DELETE FROM sandbox_volumes WHERE sandbox_id = $1 AND volume_id = $2",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(volume_id)}, 2, NULL,
                        err) < 0)
        return pe_err_prefix(err, "mount volume %s", volume_id);
    if (pe__store_query(s,
                        "INSERT INTO sandbox_volumes (id, sandbox_id, volume_id, path, read_only, "
                        "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_TEXT(volume_id),
                                        SQL_TEXT(path), SQL_INT(read_only ? 1 : 0), SQL_INT(now)},
                        6, NULL, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "another volume is mounted at %s", path);
        return pe_err_prefix(err, "mount volume %s", volume_id);
    }
    return 0;
}

int pe_store_mount_delete(pe_store *s, const char *sandbox_id, const char *volume_id, pe_err *err)
{
    return changed_one(s, "unmount volume",
                       "DELETE FROM sandbox_volumes WHERE sandbox_id = $1 AND volume_id = $2",
                       (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(volume_id)}, 2, err);
}

static int list_mounts(pe_store *s, const char *where, const char *id, int64_t limit,
                       int64_t offset, pe_store_mount **out, size_t *n, int64_t *total, pe_err *err)
{
    pe__sql_arg args[3] = {SQL_TEXT(id), SQL_INT(limit), SQL_INT(offset)};
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};
    pe_store_mount *list;

    *out = NULL;
    *n = 0;
    if (limit <= 0 || limit > VOLUME_LIST_MAX || offset < 0)
        return pe_err_set(err, PE_EINVAL, 0, "list mounts: limit must be 1..%d, offset >= 0",
                          VOLUME_LIST_MAX);
    if (total) {
        sql = pe_xasprintf("SELECT COUNT(*) " MOUNT_FROM "WHERE %s = $1", where);
        if (pe__store_query(s, sql, args, 1, &r, err) < 0)
            return pe_err_prefix(err, "count mounts");
        *total = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
        pe__sql_res_clear(&r);
        free(sql);
    }
    sql = pe_xasprintf("SELECT " MOUNT_COLS " " MOUNT_FROM "WHERE %s = $1 "
                       "ORDER BY m.path, m.sandbox_id LIMIT $2 OFFSET $3",
                       where);
    if (pe__store_query(s, sql, args, 3, &r, err) < 0)
        return pe_err_prefix(err, "list mounts");
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_mount(&r, i, &list[i]);
    *out = list;
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_mount_list_sandbox(pe_store *s, const char *sandbox_id, int64_t limit, int64_t offset,
                                pe_store_mount **out, size_t *n, int64_t *total, pe_err *err)
{
    return list_mounts(s, "m.sandbox_id", sandbox_id, limit, offset, out, n, total, err);
}

int pe_store_mount_list_volume(pe_store *s, const char *volume_id, pe_store_mount **out, size_t *n,
                               pe_err *err)
{
    return list_mounts(s, "m.volume_id", volume_id, VOLUME_LIST_MAX, 0, out, n, NULL, err);
}
