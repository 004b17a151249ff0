/* Nodes of daemons sharing a store (pocketenv/store-nodes.h). One row per
 * daemon, upserted on its tick. Every value is a bound parameter.
 * Threading: none. */
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <jansson.h>

#include "core/util.h"
#include "pocketenv/store-nodes.h"
#include "store-internal.h"

/* Any constant, the same in every daemon: "pe-place". */
#define PLACE_LOCK_KEY "8099304990573895023"

/* Does the JSON object text have key=value (label "key=value")? */
static bool labels_have(const char *labels, const char *label)
{
    const char *eq = strchr(label, '=');
    json_t *o = labels ? json_loads(labels, 0, NULL) : NULL;
    char *key;
    bool yes;

    if (o == NULL || eq == NULL) {
        json_decref(o);
        return false;
    }
    key = strndup(label, (size_t)(eq - label));
    yes = json_is_string(json_object_get(o, key)) &&
          strcmp(json_string_value(json_object_get(o, key)), eq + 1) == 0;
    free(key);
    json_decref(o);
    return yes;
}

#define NODE_COLS                                                                                  \
    "id, name, address, version, labels, mem_free, cpus, slots_free, sandboxes, draining, "        \
    "lease_until, started_at, updated_at"

/* Sandboxes a node holds room for: those it makes or runs. */
#define ACTIVE_ON_NODE                                                                             \
    "SELECT COUNT(*) FROM sandboxes WHERE provider_id = $1 AND backend = 'local' AND "             \
    "status IN ('INITIALIZING', 'RUNNING')"

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
    static const char sql[] =
        "INSERT INTO nodes (" NODE_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, "
        "$8 - (" ACTIVE_ON_NODE "), (" ACTIVE_ON_NODE
        "), 0, $9, $10, $10) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
        "address = excluded.address, version = excluded.version, labels = excluded.labels, "
        "mem_free = excluded.mem_free, cpus = excluded.cpus, "
        "slots_free = excluded.slots_free, sandboxes = excluded.sandboxes, "
        "lease_until = excluded.lease_until, updated_at = excluded.updated_at, "
        "started_at = CASE WHEN $11 = 1 THEN excluded.started_at ELSE nodes.started_at END "
        /* a node that left (lease 0) comes back only by a restart: a
         * renewal that was under way as it stopped keeps it down */
        "WHERE $11 = 1 OR nodes.lease_until <> 0";
    int64_t now = pe_store_now_ms();
    pe__sql_res r = {0};
    int ret;

    if (n->id == NULL || n->name == NULL || n->address == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "node: id, name and address are required");
    pe__sql_arg args[] = {SQL_TEXT(n->id),
                          SQL_TEXT(n->name),
                          SQL_TEXT(n->address),
                          SQL_TEXT(n->version ? n->version : ""),
                          SQL_TEXT(n->labels ? n->labels : "{}"),
                          SQL_INT(n->mem_free),
                          SQL_INT(n->cpus),
                          SQL_INT(n->slots_free),
                          SQL_INT(n->lease_until),
                          SQL_INT(now),
                          SQL_INT(restart ? 1 : 0)};
    /* A renewal leaves the write generation (pe_store_write_gen) alone:
     * no answer a daemon keeps reads its own node's row (views read the
     * rows of the nodes their sandboxes run on, which notify when it
     * matters), and a bump every lease/3 would drop all of them. A start
     * is a write like any other. */
    if (restart)
        ret = pe__store_query(s, sql, args, PE_ARRAY_LEN(args), NULL, err);
    else
        ret = s->ops->query(s, sql, args, PE_ARRAY_LEN(args), &r, err);
    pe__sql_res_clear(&r);
    if (ret < 0)
        return pe_err_prefix(err, "node %s", n->name);
    return 0;
}

int pe_store_node_leave(pe_store *s, const char *id, pe_err *err)
{
    if (pe__store_query(s, "UPDATE nodes SET lease_until = 0, updated_at = $2 WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_INT(pe_store_now_ms())}, 2, NULL,
                        err) < 0)
        /* the store's trigger sends id on PE_STORE_NODES_CHANNEL at commit */
        return pe_err_prefix(err, "node %s leaves", id);
    return 0;
}

int pe_store_node_free_name(pe_store *s, const char *name, int64_t now_ms, pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe__store_query(s,
                        "UPDATE nodes SET name = name || '~' || id WHERE name = $1 AND "
                        "lease_until < $2",
                        (pe__sql_arg[]){SQL_TEXT(name), SQL_INT(now_ms)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "node name %s", name);
    changes = r.changes;
    pe__sql_res_clear(&r);
    return changes > 0 ? 1 : 0;
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

int pe_store_node_place(pe_store *s, const char *label, char **id_out, pe_err *err)
{
    pe__sql_res r = {0};
    bool pg = strcmp(pe_store_backend(s), "postgres") == 0;
    size_t best = SIZE_MAX;
    int64_t now = pe_store_now_ms();

    *id_out = NULL;
    if (s->ops->begin_write(s, err) < 0)
        return pe_err_prefix(err, "place");
    /* One placement at a time across every daemon of the store: the
     * choice and the slot it takes commit together. */
    if ((pg && pe__store_query(s, "SELECT pg_advisory_xact_lock(" PLACE_LOCK_KEY ")", NULL, 0, NULL,
                               err) < 0) ||
        pe__store_query(s,
                        "SELECT id, labels FROM nodes WHERE lease_until > $1 AND draining = 0 "
                        "AND slots_free > 0 ORDER BY slots_free DESC, mem_free DESC, name",
                        (pe__sql_arg[]){SQL_INT(now)}, 1, &r, err) < 0)
        goto fail;
    for (size_t i = 0; i < r.nrows && best == SIZE_MAX; i++)
        if (label == NULL || labels_have(pe__sql_cell(&r, i, 1), label))
            best = i;
    if (best == SIZE_MAX) {
        pe_err_set(err, PE_ESTATE, 0,
                   "no node has room for a sandbox%s%s (every node is full, draining or down)",
                   label ? " with label " : "", label ? label : "");
        goto fail;
    }
    if (pe__store_query(s, "UPDATE nodes SET slots_free = slots_free - 1 WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(pe__sql_cell(&r, best, 0))}, 1, NULL, err) < 0 ||
        pe__store_query(s, "COMMIT", NULL, 0, NULL, err) < 0)
        goto fail;
    *id_out = pe__sql_dup(&r, best, 0);
    pe__sql_res_clear(&r);
    return 0;
fail:
    pe__sql_res_clear(&r);
    pe__store_query(s, "ROLLBACK", NULL, 0, NULL, NULL);
    return -1;
}
