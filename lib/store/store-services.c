/* The store's typed operations for a sandbox's services (issue 5,
 * io.pocketenv.service.*): named commands and the ports they declare.
 *
 * Tables of migration 1: services (name unique per sandbox; status is the
 * state the owner asked for, RUNNING or STOPPED: what the service actually
 * does lives in the daemon's supervisor) and sandbox_ports, whose rows with
 * a service_id are the ports a service declares (deleted with it).
 *
 * get joins sandboxes on the owner: another user's service is PE_ENOENT
 * like a missing one. The others take ids the caller has fetched as owner.
 *
 * Threading: none here; a pe_store belongs to one thread at a time. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store-internal.h"

#define COLS                                                                                       \
    "v.id, v.sandbox_id, v.name, v.command, v.description, v.status, v.created_at, "               \
    "v.updated_at"

void pe_store_service_clear(pe_store_service *v)
{
    if (v == NULL)
        return;
    free((char *)v->id);
    free((char *)v->sandbox_id);
    free((char *)v->name);
    free((char *)v->command);
    free((char *)v->description);
    memset(v, 0, sizeof(*v));
}

void pe_store_service_list_free(pe_store_service *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pe_store_service_clear(&list[i]);
    free(list);
}

static void row_to_service(const pe__sql_res *r, size_t row, pe_store_service *v)
{
    v->id = pe__sql_dup(r, row, 0);
    v->sandbox_id = pe__sql_dup(r, row, 1);
    v->name = pe__sql_dup(r, row, 2);
    v->command = pe__sql_dup(r, row, 3);
    v->description = pe__sql_dup(r, row, 4);
    v->status = pe_store_status_parse(pe__sql_cell(r, row, 5));
    v->created_at = pe__sql_int(r, row, 6);
    v->updated_at = pe__sql_int(r, row, 7);
}

int pe_store_service_add(pe_store *s, const char *sandbox_id, const char *name, const char *command,
                         const char *description, int status, char **id_out, pe_err *err)
{
    cleanup_free char *id = pe_store_new_id("svc_");
    pe__sql_res r = {0};
    int64_t changes, now = pe_store_now_ms();

    if (pe__store_query(s,
                        "INSERT INTO services (id, sandbox_id, name, command, description, "
                        "status, created_at, updated_at) "
                        "SELECT $1, id, $3, $4, $5, $6, CAST($7 AS BIGINT), CAST($7 AS BIGINT) "
                        "FROM sandboxes WHERE id = $2",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_TEXT(name),
                                        SQL_TEXT(command), SQL_TEXT(description),
                                        SQL_TEXT(pe_store_status_name(status)), SQL_INT(now)},
                        7, &r, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "the sandbox already has a service named %s",
                              name);
        return pe_err_prefix(err, "add service to %s", sandbox_id);
    }
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "add service: sandbox %s not found", sandbox_id);
    if (id_out)
        *id_out = pe_steal_ptr(&id);
    return 0;
}

int pe_store_service_get(pe_store *s, const char *owner_did, const char *id, pe_store_service *out,
                         pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    /* owner_did NULL: the daemon's own lookups (supervisor, restarts). */
    if (pe__store_query(s,
                        "SELECT " COLS " FROM services v JOIN sandboxes sb ON sb.id = v.sandbox_id "
                        "WHERE v.id = $1 AND (CAST($2 AS TEXT) IS NULL OR sb.owner_did = $2)",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(owner_did)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "get service %s", id);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "service not found");
    }
    row_to_service(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_service_list(pe_store *s, const char *sandbox_id, int64_t limit, int64_t offset,
                          pe_store_service **out, size_t *n, int64_t *total, pe_err *err)
{
    pe__sql_res r = {0};
    pe_store_service *list;

    *out = NULL;
    *n = 0;
    if (limit <= 0 || offset < 0)
        return pe_err_set(err, PE_EINVAL, 0, "list services: limit >= 1, offset >= 0");
    if (total) {
        if (pe__store_query(s, "SELECT COUNT(*) FROM services WHERE sandbox_id = $1",
                            (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
            return pe_err_prefix(err, "count services of %s", sandbox_id);
        *total = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
        pe__sql_res_clear(&r);
    }
    if (pe__store_query(s,
                        "SELECT " COLS " FROM services v WHERE v.sandbox_id = $1 "
                        "ORDER BY v.name, v.id LIMIT $2 OFFSET $3",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_INT(limit), SQL_INT(offset)}, 3,
                        &r, err) < 0)
        return pe_err_prefix(err, "list services of %s", sandbox_id);
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_service(&r, i, &list[i]);
    *out = list;
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

static int changed_one(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                       const char *name, pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe__store_query(s, sql, args, nargs, &r, err) < 0) {
        if (err && err->code == PE_EEXIST && name)
            return pe_err_set(err, PE_EEXIST, 0, "the sandbox already has a service named %s",
                              name);
        return -1;
    }
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "service not found");
    return 0;
}

int pe_store_service_update(pe_store *s, const char *id, const char *name, const char *command,
                            const char *description, pe_err *err)
{
    return changed_one(s,
                       "UPDATE services SET name = $2, command = $3, description = $4, "
                       "updated_at = $5 WHERE id = $1",
                       (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(name), SQL_TEXT(command),
                                       SQL_TEXT(description), SQL_INT(pe_store_now_ms())},
                       5, name, err);
}

int pe_store_service_set_status(pe_store *s, const char *id, int status, pe_err *err)
{
    return changed_one(s, "UPDATE services SET status = $2, updated_at = $3 WHERE id = $1",
                       (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(pe_store_status_name(status)),
                                       SQL_INT(pe_store_now_ms())},
                       3, NULL, err);
}

int pe_store_service_delete(pe_store *s, const char *id, pe_err *err)
{
    /* Its port rows go with it (sandbox_ports.service_id ON DELETE CASCADE). */
    return changed_one(s, "DELETE FROM services WHERE id = $1", (pe__sql_arg[]){SQL_TEXT(id)}, 1,
                       NULL, err);
}

int pe_store_service_set_ports(pe_store *s, const char *sandbox_id, const char *service_id,
                               const char *service_name, const int64_t *ports, size_t n,
                               pe_err *err)
{
    if (pe__store_query(s, "DELETE FROM sandbox_ports WHERE service_id = $1",
                        (pe__sql_arg[]){SQL_TEXT(service_id)}, 1, NULL, err) < 0)
        return pe_err_prefix(err, "ports of service %s", service_id);
    for (size_t i = 0; i < n; i++) {
        cleanup_free char *id = pe_store_new_id("port_");
        cleanup_free char *desc = NULL;

        desc = pe_xasprintf("Port %lld for service %.80s", (long long)ports[i], service_name);
        if (pe__store_query(s,
                            "INSERT INTO sandbox_ports (id, sandbox_id, port, description, "
                            "service_id, created_at, updated_at) "
                            "VALUES ($1, $2, $3, $4, $5, $6, $6)",
                            (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_INT(ports[i]),
                                            SQL_TEXT(desc), SQL_TEXT(service_id),
                                            SQL_INT(pe_store_now_ms())},
                            6, NULL, err) < 0) {
            if (err && err->code == PE_EEXIST)
                return pe_err_set(err, PE_EEXIST, 0, "port %lld of the sandbox is already taken",
                                  (long long)ports[i]);
            return pe_err_prefix(err, "port %lld of service %s", (long long)ports[i], service_id);
        }
    }
    return 0;
}

int pe_store_service_ports(pe_store *s, const char *service_id, int64_t **ports, size_t *n,
                           pe_err *err)
{
    pe__sql_res r = {0};

    *ports = NULL;
    *n = 0;
    if (pe__store_query(s, "SELECT port FROM sandbox_ports WHERE service_id = $1 ORDER BY port",
                        (pe__sql_arg[]){SQL_TEXT(service_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "ports of service %s", service_id);
    *ports = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(int64_t));
    for (size_t i = 0; i < r.nrows; i++)
        (*ports)[i] = pe__sql_int(&r, i, 0);
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}
