/* The E2B API's rows (pocketenv/store-e2b.h): the e2b_sandboxes table.
 * Threading: none. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-e2b.h"
#include "store-internal.h"

static int upsert(pe_store *s, const char *sandbox_id, const char *metadata, int64_t end_ms,
                  bool with_metadata, pe_err *err)
{
    pe__sql_res r = {0};
    bool known;

    /* The sandbox first: a foreign key error reads differently on each
     * database. */
    if (pe__store_query(s, "SELECT 1 FROM sandboxes WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "e2b row of %s", sandbox_id);
    known = r.nrows == 1;
    pe__sql_res_clear(&r);
    if (!known)
        return pe_err_set(err, PE_ENOENT, 0, "sandbox %s not found", sandbox_id);
    if (pe__store_query(
            s,
            with_metadata ? "INSERT INTO e2b_sandboxes (sandbox_id, metadata, end_ms, updated_at) "
                            "VALUES ($1, $2, $3, $4) ON CONFLICT (sandbox_id) DO UPDATE SET "
                            "metadata = excluded.metadata, end_ms = excluded.end_ms, "
                            "updated_at = excluded.updated_at"
                          : "INSERT INTO e2b_sandboxes (sandbox_id, metadata, end_ms, updated_at) "
                            "VALUES ($1, $2, $3, $4) ON CONFLICT (sandbox_id) DO UPDATE SET "
                            "end_ms = excluded.end_ms, updated_at = excluded.updated_at",
            (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(metadata), SQL_INT(end_ms),
                            SQL_INT(pe_store_now_ms())},
            4, NULL, err) < 0)
        return pe_err_prefix(err, "set e2b row of %s", sandbox_id);
    return 0;
}

int pe_store_e2b_put(pe_store *s, const char *sandbox_id, const char *metadata, int64_t end_ms,
                     pe_err *err)
{
    return upsert(s, sandbox_id, metadata, end_ms, true, err);
}

int pe_store_e2b_set_end(pe_store *s, const char *sandbox_id, int64_t end_ms, pe_err *err)
{
    return upsert(s, sandbox_id, NULL, end_ms, false, err);
}

int pe_store_e2b_list(pe_store *s, const char *owner_did, pe_store_e2b **out, size_t *n,
                      pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s,
                        "SELECT e.sandbox_id, e.metadata, e.end_ms FROM e2b_sandboxes e "
                        "JOIN sandboxes x ON x.id = e.sandbox_id WHERE x.owner_did = $1",
                        (pe__sql_arg[]){SQL_TEXT(owner_did)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "e2b rows");
    *out = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++) {
        pe_store_e2b *e = &(*out)[(*n)++];
        e->sandbox_id = pe__sql_dup(&r, i, 0);
        e->metadata = pe__sql_dup(&r, i, 1);
        e->end_ms = pe__sql_int(&r, i, 2);
    }
    pe__sql_res_clear(&r);
    return 0;
}

void pe_store_e2b_list_free(pe_store_e2b *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].sandbox_id);
        free(list[i].metadata);
    }
    free(list);
}
