/* The store's typed operations for a sandbox's keys and credentials
 * (issue 5): its SSH key pair, its Tailscale auth key, and the provider
 * credentials of sandboxProviderPref.
 *
 * Tables of migration 1: ssh_keys and tailscale_keys hold at most one row
 * per sandbox (sandbox_id UNIQUE), so a put is an upsert on sandbox_id;
 * provider_credentials one row per (sandbox, owner, provider). Secret
 * columns hold sealed text (crypto_box_seal, base64url) as the daemon
 * stores it; the redacted copy beside it is what listings show.
 *
 * No owner check here: the daemon looks the sandbox up as its owner first
 * and passes the sandbox's id. Every value is a bound parameter; the only
 * text formatted into SQL is a table or column name from key_tables.
 *
 * Threading: none here; a pe_store belongs to one thread at a time. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store-internal.h"

static const struct key_table {
    const char *table;
    const char *sealed;     /* column of the sealed secret */
    const char *public_key; /* column of the public part, or NULL */
    const char *id_prefix;
    const char *what;
} key_tables[] = {
    [PE_STORE_SSH_KEY] = {"ssh_keys", "private_key", "public_key", "sshkey_", "ssh key"},
    [PE_STORE_TAILSCALE_KEY] = {"tailscale_keys", "auth_key", NULL, "tskey_", "tailscale key"},
};

static const struct key_table *key_table(int kind, pe_err *err)
{
    if (kind < 0 || (size_t)kind >= PE_ARRAY_LEN(key_tables)) {
        pe_err_set(err, PE_EINVAL, 0, "unknown kind of sandbox key %d", kind);
        return NULL;
    }
    return &key_tables[kind];
}

void pe_store_key_clear(pe_store_key *k)
{
    if (k == NULL)
        return;
    free((char *)k->id);
    free((char *)k->sandbox_id);
    free((char *)k->public_key);
    free((char *)k->sealed);
    free((char *)k->redacted);
    memset(k, 0, sizeof(*k));
}

int pe_store_key_put(pe_store *s, int kind, const char *sandbox_id, const char *public_key,
                     const char *sealed, const char *redacted, pe_err *err)
{
    const struct key_table *t = key_table(kind, err);
    cleanup_free char *id = NULL;
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};
    int64_t changes;

    if (t == NULL)
        return -1;
    if (sealed == NULL || redacted == NULL || (t->public_key && public_key == NULL))
        return pe_err_set(err, PE_EINVAL, 0, "put %s: key and redacted copy are required", t->what);
    id = pe_store_new_id(t->id_prefix);
    /* One row per sandbox: a second put replaces the key and keeps the
     * row's id and created_at. An unknown sandbox inserts nothing. */
    /* $6 (the public key) only where the table has one: PostgreSQL wants
     * a type for every parameter it is given. */
    sql = pe_xasprintf("INSERT INTO %s (id, sandbox_id, %s, redacted, %s created_at, updated_at) "
                       "SELECT $1, id, $3, $4, %s CAST($5 AS BIGINT), CAST($5 AS BIGINT) "
                       "FROM sandboxes WHERE id = $2 "
                       "ON CONFLICT (sandbox_id) DO UPDATE SET %s = excluded.%s, "
                       "redacted = excluded.redacted, %s%s%s%s updated_at = excluded.updated_at",
                       t->table, t->sealed, t->public_key ? "public_key," : "",
                       t->public_key ? "$6," : "", t->sealed, t->sealed,
                       t->public_key ? t->public_key : "", t->public_key ? " = excluded." : "",
                       t->public_key ? t->public_key : "", t->public_key ? "," : "");
    if (pe__store_query(s, sql,
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_TEXT(sealed),
                                        SQL_TEXT(redacted), SQL_INT(pe_store_now_ms()),
                                        SQL_TEXT(public_key)},
                        t->public_key ? 6 : 5, &r, err) < 0)
        return pe_err_prefix(err, "put %s of %s", t->what, sandbox_id);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "put %s: sandbox %s not found", t->what, sandbox_id);
    return 0;
}

int pe_store_key_get(pe_store *s, int kind, const char *sandbox_id, pe_store_key *out, pe_err *err)
{
    const struct key_table *t = key_table(kind, err);
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (t == NULL)
        return -1;
    sql = pe_xasprintf("SELECT id, sandbox_id, %s, %s, redacted, created_at, updated_at "
                       "FROM %s WHERE sandbox_id = $1",
                       t->public_key ? t->public_key : "NULL", t->sealed, t->table);
    if (pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "get %s of %s", t->what, sandbox_id);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "%s not found", t->what);
    }
    out->id = pe__sql_dup(&r, 0, 0);
    out->sandbox_id = pe__sql_dup(&r, 0, 1);
    out->public_key = pe__sql_dup(&r, 0, 2);
    out->sealed = pe__sql_dup(&r, 0, 3);
    out->redacted = pe__sql_dup(&r, 0, 4);
    out->created_at = pe__sql_int(&r, 0, 5);
    out->updated_at = pe__sql_int(&r, 0, 6);
    pe__sql_res_clear(&r);
    return 0;
}

/* ---- provider credentials ---- */

void pe_store_cred_clear(pe_store_cred *c)
{
    if (c == NULL)
        return;
    free((char *)c->id);
    free((char *)c->sandbox_id);
    free((char *)c->owner_did);
    free((char *)c->provider);
    free((char *)c->sealed);
    free((char *)c->redacted);
    memset(c, 0, sizeof(*c));
}

void pe_store_cred_list_free(pe_store_cred *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pe_store_cred_clear(&list[i]);
    free(list);
}

int pe_store_cred_put(pe_store *s, const char *sandbox_id, const char *owner_did,
                      const char *provider, const char *sealed, const char *redacted, pe_err *err)
{
    cleanup_free char *id = pe_store_new_id("cred_");
    pe__sql_res r = {0};
    int64_t changes;

    if (provider == NULL || sealed == NULL || redacted == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "put credentials: provider, sealed and redacted");
    if (pe__store_query(
            s,
            "INSERT INTO provider_credentials "
            "(id, sandbox_id, owner_did, provider, sealed, redacted, created_at, updated_at) "
            "SELECT $1, id, $3, $4, $5, $6, CAST($7 AS BIGINT), CAST($7 AS BIGINT) "
            "FROM sandboxes WHERE id = $2 "
            "ON CONFLICT (sandbox_id, owner_did, provider) DO UPDATE SET sealed = excluded.sealed, "
            "redacted = excluded.redacted, updated_at = excluded.updated_at",
            (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_TEXT(owner_did),
                            SQL_TEXT(provider), SQL_TEXT(sealed), SQL_TEXT(redacted),
                            SQL_INT(pe_store_now_ms())},
            7, &r, err) < 0)
        return pe_err_prefix(err, "put %s credentials of %s", provider, sandbox_id);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "put credentials: sandbox %s not found", sandbox_id);
    return 0;
}

int pe_store_cred_list(pe_store *s, const char *sandbox_id, const char *owner_did,
                       pe_store_cred **out, size_t *n, pe_err *err)
{
    pe__sql_res r = {0};
    pe_store_cred *list;

    *out = NULL;
    *n = 0;
    if (pe__store_query(s,
                        "SELECT id, sandbox_id, owner_did, provider, sealed, redacted, created_at, "
                        "updated_at FROM provider_credentials "
                        "WHERE sandbox_id = $1 AND owner_did = $2 ORDER BY updated_at DESC, id",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(owner_did)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "list credentials of %s", sandbox_id);
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++) {
        list[i].id = pe__sql_dup(&r, i, 0);
        list[i].sandbox_id = pe__sql_dup(&r, i, 1);
        list[i].owner_did = pe__sql_dup(&r, i, 2);
        list[i].provider = pe__sql_dup(&r, i, 3);
        list[i].sealed = pe__sql_dup(&r, i, 4);
        list[i].redacted = pe__sql_dup(&r, i, 5);
        list[i].created_at = pe__sql_int(&r, i, 6);
        list[i].updated_at = pe__sql_int(&r, i, 7);
    }
    *out = list;
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_cred_delete_all(pe_store *s, const char *sandbox_id, const char *owner_did,
                             pe_err *err)
{
    if (pe__store_query(
            s, "DELETE FROM provider_credentials WHERE sandbox_id = $1 AND owner_did = $2",
            (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(owner_did)}, 2, NULL, err) < 0)
        return pe_err_prefix(err, "delete credentials of %s", sandbox_id);
    return 0;
}
