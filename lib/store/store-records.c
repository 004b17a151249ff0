/* The store's typed operations for the record outbox
 * (pocketenv/store-records.h), over the atproto_records table. Every value
 * is a bound parameter. Threading: none; one pe_store per thread. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "pocketenv/store-records.h"
#include "store-internal.h"

#define RECORD_COLS                                                                                \
    "sandbox, did, rkey, cid, want, gen, done_gen, attempts, next_at, error, updated_at"

void pe_store_record_clear(pe_store_record *r)
{
    if (r == NULL)
        return;
    free((char *)r->sandbox);
    free((char *)r->did);
    free((char *)r->rkey);
    free((char *)r->cid);
    free((char *)r->want);
    free((char *)r->error);
    memset(r, 0, sizeof(*r));
}

void pe_store_record_list_free(pe_store_record *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_record_clear(&list[i]);
    free(list);
}

static void row_to_record(const pe__sql_res *r, size_t row, pe_store_record *o)
{
    o->sandbox = pe__sql_dup(r, row, 0);
    o->did = pe__sql_dup(r, row, 1);
    o->rkey = pe__sql_dup(r, row, 2);
    o->cid = pe__sql_dup(r, row, 3);
    o->want = pe__sql_dup(r, row, 4);
    o->gen = pe__sql_int(r, row, 5);
    o->done_gen = pe__sql_int(r, row, 6);
    o->attempts = pe__sql_int(r, row, 7);
    o->next_at = pe__sql_int(r, row, 8);
    o->error = pe__sql_dup(r, row, 9);
    o->updated_at = pe__sql_int(r, row, 10);
}

int pe_store_record_want(pe_store *s, const char *sandbox, const char *did, const char *rkey,
                         const char *want, pe_err *err)
{
    int64_t now = pe_store_now_ms();

    if (sandbox == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "record: sandbox needed");
    if (want == NULL) /* a delete only concerns a record we have */
        return pe__store_query(s,
                               "UPDATE atproto_records SET want = NULL, gen = gen + 1, "
                               "attempts = 0, next_at = 0, updated_at = $2 WHERE sandbox = $1",
                               (pe__sql_arg[]){SQL_TEXT(sandbox), SQL_INT(now)}, 2, NULL, err) < 0
                   ? pe_err_prefix(err, "record of %s", sandbox)
                   : 0;
    if (did == NULL || rkey == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "record of %s: did and rkey needed", sandbox);
    if (pe__store_query(s,
                        "INSERT INTO atproto_records (sandbox, did, rkey, want, gen, updated_at) "
                        "VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (sandbox) DO UPDATE SET "
                        "want = excluded.want, gen = atproto_records.gen + 1, attempts = 0, "
                        "next_at = 0, updated_at = excluded.updated_at",
                        (pe__sql_arg[]){SQL_TEXT(sandbox), SQL_TEXT(did), SQL_TEXT(rkey),
                                        SQL_TEXT(want), SQL_INT(now)},
                        5, NULL, err) < 0)
        return pe_err_prefix(err, "record of %s", sandbox);
    return 0;
}

int pe_store_record_get(pe_store *s, const char *sandbox, pe_store_record *out, pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (pe__store_query(s, "SELECT " RECORD_COLS " FROM atproto_records WHERE sandbox = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "record of %s", sandbox);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "no record for %s", sandbox);
    }
    row_to_record(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_record_due(pe_store *s, int64_t now_ms, int64_t limit, pe_store_record **out,
                        size_t *n, pe_err *err)
{
    pe__sql_res r = {0};

    *out = NULL;
    *n = 0;
    if (pe__store_query(s,
                        "SELECT " RECORD_COLS " FROM atproto_records WHERE gen > done_gen AND "
                        "next_at <= $1 ORDER BY updated_at, sandbox LIMIT $2",
                        (pe__sql_arg[]){SQL_INT(now_ms), SQL_INT(limit)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "records due");
    if (r.nrows > 0)
        *out = pe_xcalloc(r.nrows, sizeof(**out));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_record(&r, i, &(*out)[i]);
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_record_written(pe_store *s, const char *sandbox, int64_t gen, const char *cid,
                            pe_err *err)
{
    int64_t now = pe_store_now_ms();

    if (cid == NULL &&
        pe__store_query(s,
                        "DELETE FROM atproto_records WHERE sandbox = $1 AND gen = $2 AND "
                        "want IS NULL",
                        (pe__sql_arg[]){SQL_TEXT(sandbox), SQL_INT(gen)}, 2, NULL, err) < 0)
        return pe_err_prefix(err, "record of %s", sandbox);
    if (pe__store_query(
            s,
            "UPDATE atproto_records SET cid = $3, done_gen = $2, attempts = 0, "
            "next_at = 0, error = NULL, updated_at = $4 WHERE sandbox = $1",
            (pe__sql_arg[]){SQL_TEXT(sandbox), SQL_INT(gen), SQL_TEXT(cid), SQL_INT(now)}, 4, NULL,
            err) < 0)
        return pe_err_prefix(err, "record of %s", sandbox);
    return 0;
}

int pe_store_record_failed(pe_store *s, const char *sandbox, const char *error, int64_t next_at,
                           pe_err *err)
{
    if (pe__store_query(s,
                        "UPDATE atproto_records SET error = $2, attempts = attempts + 1, "
                        "next_at = $3 WHERE sandbox = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox), SQL_TEXT(error), SQL_INT(next_at)}, 3,
                        NULL, err) < 0)
        return pe_err_prefix(err, "record of %s", sandbox);
    return 0;
}

int pe_store_record_set_cid(pe_store *s, const char *sandbox, const char *cid, pe_err *err)
{
    if (pe__store_query(s, "UPDATE atproto_records SET cid = $2 WHERE sandbox = $1",
                        (pe__sql_arg[]){SQL_TEXT(sandbox), SQL_TEXT(cid)}, 2, NULL, err) < 0)
        return pe_err_prefix(err, "record of %s", sandbox);
    return 0;
}
