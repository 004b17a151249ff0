/* Idle policies (pocketenv/store-idle.h): the idle_policies table, one
 * row per sandbox, gone with it (ON DELETE CASCADE). Threading: none. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-idle.h"
#include "store-internal.h"

bool pe_store_idle_action_valid(const char *action)
{
    return action && (strcmp(action, PE_IDLE_STOP) == 0 || strcmp(action, PE_IDLE_PAUSE) == 0 ||
                      strcmp(action, PE_IDLE_SNAPSHOT_STOP) == 0);
}

int pe_store_idle_put(pe_store *s, const char *sandbox_id, const char *action, int64_t timeout,
                      pe_err *err)
{
    pe__sql_res r = {0};
    bool known;

    if (!pe_store_idle_action_valid(action) || timeout < 0)
        return pe_err_set(err, PE_EINVAL, 0, "invalid idle policy");
    /* The sandbox first: a foreign key error reads differently on each
     * database, and an unknown id is the caller's mistake to name. */
    if (pe__store_query(s, "SELECT 1 FROM sandboxes WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "idle policy of %s", sandbox_id);
    known = r.nrows == 1;
    pe__sql_res_clear(&r);
    if (!known)
        return pe_err_set(err, PE_ENOENT, 0, "sandbox %s not found", sandbox_id);
    if (pe__store_query(s,
                        "INSERT INTO idle_policies (sandbox_id, action, timeout, updated_at) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (sandbox_id) DO UPDATE SET "
                        "action = excluded.action, timeout = excluded.timeout, "
                        "updated_at = excluded.updated_at",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(action), SQL_INT(timeout),
                                        SQL_INT(pe_store_now_ms())},
                        4, NULL, err) < 0)
        return pe_err_prefix(err, "set idle policy of %s", sandbox_id);
    return 0;
}

static void row_of(const pe__sql_res *r, size_t i, pe_store_idle *p)
{
    p->sandbox_id = pe__sql_dup(r, i, 0);
    p->action = pe__sql_dup(r, i, 1);
    p->timeout = pe__sql_int(r, i, 2);
}

int pe_store_idle_get(pe_store *s, const char *sandbox_id, pe_store_idle *out, pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (pe__store_query(s,
                        "SELECT sandbox_id, action, timeout FROM idle_policies "
                        "WHERE sandbox_id = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "idle policy of %s", sandbox_id);
    if (r.nrows != 1) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "sandbox %s has no idle policy", sandbox_id);
    }
    row_of(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_idle_list(pe_store *s, pe_store_idle **out, size_t *n, pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s, "SELECT sandbox_id, action, timeout FROM idle_policies", NULL, 0, &r,
                        err) < 0)
        return pe_err_prefix(err, "idle policies");
    *out = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++)
        row_of(&r, i, &(*out)[(*n)++]);
    pe__sql_res_clear(&r);
    return 0;
}

void pe_store_idle_clear(pe_store_idle *p)
{
    free(p->sandbox_id);
    free(p->action);
    memset(p, 0, sizeof(*p));
}

void pe_store_idle_list_free(pe_store_idle *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pe_store_idle_clear(&list[i]);
    free(list);
}
