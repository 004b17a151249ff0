/* Per-user usage for quotas (pocketenv/store-usage.h): two aggregate
 * queries over the sandboxes of one owner and the backups that hang off
 * them. Every value is a bound parameter. Threading: none. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-usage.h"
#include "store-internal.h"

int pe_store_user_usage(pe_store *s, const char *owner_did, int64_t default_memory,
                        int64_t default_disk, const char *except_id, pe_store_usage *out,
                        pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    /* $4 may be NULL: "id <> NULL" is never true, so nothing is left out
     * then; COALESCE turns that into false explicitly. */
    if (pe__store_query(
            s,
            "SELECT COUNT(*), "
            "COALESCE(SUM(CASE WHEN status IN ('INITIALIZING', 'RUNNING') "
            "AND NOT COALESCE(id = $4, 0 = 1) THEN COALESCE(memory, $2) ELSE 0 END), 0), "
            "COALESCE(SUM(COALESCE(disk, $3)), 0) "
            "FROM sandboxes WHERE owner_did = $1",
            (pe__sql_arg[]){SQL_TEXT(owner_did), SQL_INT(default_memory), SQL_INT(default_disk),
                            SQL_TEXT(except_id)},
            4, &r, err) < 0)
        return pe_err_prefix(err, "usage of %s", owner_did);
    if (r.nrows == 1) {
        out->sandboxes = pe__sql_int(&r, 0, 0);
        out->memory = pe__sql_int(&r, 0, 1);
        out->disk = pe__sql_int(&r, 0, 2);
    }
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_user_backup_archives(pe_store *s, const char *owner_did, char ***names, size_t *n,
                                  pe_err *err)
{
    pe__sql_res r = {0};

    *names = NULL;
    *n = 0;
    if (pe__store_query(s,
                        "SELECT b.backup_id FROM backups b JOIN sandboxes x ON x.id = "
                        "b.sandbox_id WHERE x.owner_did = $1 ORDER BY b.id",
                        (pe__sql_arg[]){SQL_TEXT(owner_did)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "backups of %s", owner_did);
    *names = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(char *));
    for (size_t i = 0; i < r.nrows; i++)
        if (pe__sql_cell(&r, i, 0))
            (*names)[(*n)++] = pe__sql_dup(&r, i, 0);
    pe__sql_res_clear(&r);
    return 0;
}

void pe_store_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}
