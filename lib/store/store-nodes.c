/* Nodes of daemons sharing a store (pocketenv/store-nodes.h). One row per
 * daemon, upserted on its tick. Every value is a bound parameter.
 * Threading: none. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-nodes.h"
#include "store-internal.h"

#define NODE_COLS                                                                                  \
    "id, name, address, version, labels, mem_free, cpus, slots_free, sandboxes, draining, "        \
    "lease_until, started_at, updated_at"

void pe_store_node_clear(pe_store_node *n)
{
    if (n == NULL)
        return;
    free((char *)n->id);
    free((char *)n->name);
    free((char *)n->address);
    free((char *)n->version);
    free((char *)n->labels);
    memset(n, 0, sizeof(*n));
}

void pe_store_node_list_free(pe_store_node *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_node_clear(&list[i]);
    free(list);
}

static void node_from_row(const pe__sql_res *r, size_t i, pe_store_node *out)
{
    out->id = pe__sql_dup(r, i, 0);
    out->name = pe__sql_dup(r, i, 1);
    out->address = pe__sql_dup(r, i, 2);
    out->version = pe__sql_dup(r, i, 3);
    out->labels = pe__sql_dup(r, i, 4);
    out->mem_free = pe__sql_int(r, i, 5);
    out->cpus = pe__sql_int(r, i, 6);
    out->slots_free = pe__sql_int(r, i, 7);
    out->sandboxes = pe__sql_int(r, i, 8);
    out->draining = (int)pe__sql_int(r, i, 9);
    out->lease_until = pe__sql_int(r, i, 10);
    out->started_at = pe__sql_int(r, i, 11);
    out->updated_at = pe__sql_int(r, i, 12);
}

int pe_store_node_put(pe_store *s, const pe_store_node *n, bool restart, pe_err *err)
{
    int64_t now = pe_store_now_ms();

    if (n->id == NULL || n->name == NULL || n->address == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "node: id, name and address are required");
    if (pe__store_query(
            s,
            "INSERT INTO nodes (" NODE_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, "
            "$10, $11, $11) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            "address = excluded.address, version = excluded.version, labels = excluded.labels, "
            "mem_free = excluded.mem_free, cpus = excluded.cpus, "
            "slots_free = excluded.slots_free, sandboxes = excluded.sandboxes, "
            "lease_until = excluded.lease_until, updated_at = excluded.updated_at, "
            "started_at = CASE WHEN $12 = 1 THEN excluded.started_at ELSE nodes.started_at END",
            (pe__sql_arg[]){SQL_TEXT(n->id), SQL_TEXT(n->name), SQL_TEXT(n->address),
                            SQL_TEXT(n->version ? n->version : ""),
                            SQL_TEXT(n->labels ? n->labels : "{}"), SQL_INT(n->mem_free),
                            SQL_INT(n->cpus), SQL_INT(n->slots_free), SQL_INT(n->sandboxes),
                            SQL_INT(n->lease_until), SQL_INT(now), SQL_INT(restart ? 1 : 0)},
            12, NULL, err) < 0)
        return pe_err_prefix(err, "node %s", n->name);
    return 0;
}

int pe_store_node_get(pe_store *s, const char *id, pe_store_node *out, pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (pe__store_query(s, "SELECT " NODE_COLS " FROM nodes WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "node %s", id);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "node %s: not registered", id);
    }
    node_from_row(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_node_list(pe_store *s, pe_store_node **out, size_t *n, pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s, "SELECT " NODE_COLS " FROM nodes ORDER BY name", NULL, 0, &r, err) < 0)
        return pe_err_prefix(err, "nodes");
    *out = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++)
        node_from_row(&r, i, &(*out)[i]);
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_node_set_draining(pe_store *s, const char *name, bool draining, char **id_out,
                               pe_err *err)
{
    pe__sql_res r = {0};

    if (id_out)
        *id_out = NULL;
    if (pe__store_query(s, "UPDATE nodes SET draining = $2 WHERE name = $1 OR id = $1 RETURNING id",
                        (pe__sql_arg[]){SQL_TEXT(name), SQL_INT(draining ? 1 : 0)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "drain node %s", name);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "node %s: no such node", name);
    }
    if (id_out)
        *id_out = pe__sql_dup(&r, 0, 0);
    pe__sql_res_clear(&r);
    return 0;
}
