/* The store's dispatch and its typed operations (see pocketenv/store.h).
 *
 * Owns: choosing a backend from the URL, ids, and the SQL of every typed
 * operation, written once for both backends (store-internal.h says which
 * SQL that allows). Every value is a bound parameter; the only text ever
 * formatted into SQL is a table or column name from the constant kv_tables
 * below.
 *
 * Threading: none here; a pe_store belongs to one thread at a time. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "core/util.h"
#include "store-internal.h"

/* ---- results ---- */

void pe__sql_res_clear(pe__sql_res *r)
{
    if (r == NULL || r->cells == NULL)
        return;
    for (size_t i = 0; i < r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    r->cells = NULL;
    r->nrows = r->ncols = 0;
}

int64_t pe__sql_int(const pe__sql_res *r, size_t row, size_t col)
{
    const char *c = pe__sql_cell(r, row, col);
    char *end = NULL;
    long long v;

    if (c == NULL)
        return 0;
    errno = 0;
    v = strtoll(c, &end, 10);
    if (errno != 0 || end == c || *end != '\0')
        return 0;
    return v;
}

char *pe__sql_dup(const pe__sql_res *r, size_t row, size_t col)
{
    const char *c = pe__sql_cell(r, row, col);
    return c ? pe_xstrdup(c) : NULL;
}

/* ---- the write generation ----
 *
 * Process-wide, bumped after every statement that may write (anything but
 * a SELECT, so COMMIT too) on any connection. A reader that takes the
 * generation before its read and finds it unchanged later knows no write
 * of this process has finished since: what readers on the daemon's loop
 * thread cache their answers by. */
static _Atomic uint64_t write_gen;

uint64_t pe_store_write_gen(void)
{
    return atomic_load_explicit(&write_gen, memory_order_acquire);
}

void pe_store_write_gen_bump(void)
{
    atomic_fetch_add_explicit(&write_gen, 1, memory_order_release);
}

static bool is_select(const char *sql)
{
    while (isspace((unsigned char)*sql))
        sql++;
    return strncasecmp(sql, "SELECT", 6) == 0;
}

int pe__store_query(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                    pe__sql_res *res, pe_err *err)
{
    pe__sql_res scratch = {0};
    int ret = s->ops->query(s, sql, args, nargs, res ? res : &scratch, err);

    /* After the statement, failed or not: bumped before, a reader could
     * take the new generation and still read the old row. */
    if (!is_select(sql))
        pe_store_write_gen_bump();
    pe__sql_res_clear(&scratch);
    return ret;
}

/* ---- open, ids, time ---- */

static int has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

pe_store *pe_store_open(const char *url, pe_err *err)
{
    cleanup_free pe_store *s = pe_xcalloc(1, sizeof(*s));
    int ret;

    if (url == NULL || *url == '\0') {
        pe_err_set(err, PE_EINVAL, 0, "open store: empty URL");
        return NULL;
    }
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        ret = pe__store_pg_open(s, url, err);
    else if (has_prefix(url, "sqlite:"))
        ret = pe__store_sqlite_open(s, url + strlen("sqlite:"), err);
    else if (strstr(url, "://") != NULL)
        ret = pe_err_set(err, PE_EINVAL, 0, "unknown store URL scheme (sqlite:PATH, postgres://)");
    else
        ret = pe__store_sqlite_open(s, url, err);
    if (ret < 0)
        return NULL;
    if (pe__store_migrate(s, err) < 0) {
        s->ops->close(s);
        return NULL;
    }
    return pe_steal_ptr(&s);
}

void pe_store_close(pe_store *s)
{
    if (s == NULL)
        return;
    s->ops->close(s);
    free(s);
}

const char *pe_store_backend(const pe_store *s)
{
    return s->ops->name;
}

int pe_store_schema_version(pe_store *s, pe_err *err)
{
    pe__sql_res r = {0};
    int v;

    if (pe__store_query(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL, 0, &r,
                        err) < 0)
        return -1;
    v = r.nrows == 1 ? (int)pe__sql_int(&r, 0, 0) : 0;
    pe__sql_res_clear(&r);
    return v;
}

int pe_store_schema_latest(void)
{
    size_t n;
    pe__store_migrations(&n);
    return (int)n;
}

int64_t pe_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *pe_store_new_id(const char *prefix)
{
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    enum { NBYTES = 16, NDIGITS = 22 }; /* 62^22 > 2^128 */
    unsigned char num[NBYTES];
    char out[NDIGITS + 1];
    size_t got = 0;

    while (got < sizeof(num)) {
        ssize_t n = getrandom(num + got, sizeof(num) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort(); /* no kernel entropy source: nothing sane to fall back to */
        got += (size_t)n;
    }
    /* Long division of the 128-bit big-endian number by 62, digit by digit
     * from the least significant; fixed width keeps ids the same length. */
    for (int d = NDIGITS - 1; d >= 0; d--) {
        unsigned rem = 0;
        for (size_t i = 0; i < sizeof(num); i++) {
            unsigned cur = rem * 256 + num[i];
            num[i] = (unsigned char)(cur / 62);
            rem = cur % 62;
        }
        out[d] = digits[rem];
    }
    out[NDIGITS] = '\0';
    return pe_xasprintf("%s%s", prefix ? prefix : "", out);
}

/* ---- users ---- */

void pe_store_user_clear(pe_store_user *u)
{
    if (u == NULL)
        return;
    free((char *)u->did);
    free((char *)u->handle);
    free((char *)u->display_name);
    free((char *)u->avatar);
    memset(u, 0, sizeof(*u));
}

int pe_store_user_upsert(pe_store *s, const pe_store_user *u, pe_err *err)
{
    int64_t now = pe_store_now_ms();

    if (u->did == NULL || u->handle == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "upsert user: did and handle are required");
    if (pe__store_query(s,
                        "INSERT INTO users (did, handle, display_name, avatar, created_at, "
                        "updated_at) VALUES ($1, $2, $3, $4, $5, $5) "
                        "ON CONFLICT (did) DO UPDATE SET handle = excluded.handle, "
                        "display_name = excluded.display_name, avatar = excluded.avatar, "
                        "updated_at = excluded.updated_at",
                        (pe__sql_arg[]){SQL_TEXT(u->did), SQL_TEXT(u->handle),
                                        SQL_TEXT(u->display_name), SQL_TEXT(u->avatar),
                                        SQL_INT(u->created_at ? u->created_at : now)},
                        5, NULL, err) < 0)
        return pe_err_prefix(err, "upsert user %s", u->did);
    return 0;
}

int pe_store_user_get(pe_store *s, const char *did, pe_store_user *out, pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (pe__store_query(s,
                        "SELECT did, handle, display_name, avatar, created_at, updated_at, "
                        "tokens_valid_after FROM users WHERE did = $1",
                        (pe__sql_arg[]){SQL_TEXT(did)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "get user %s", did);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "user %s not found", did);
    }
    out->did = pe__sql_dup(&r, 0, 0);
    out->handle = pe__sql_dup(&r, 0, 1);
    out->display_name = pe__sql_dup(&r, 0, 2);
    out->avatar = pe__sql_dup(&r, 0, 3);
    out->created_at = pe__sql_int(&r, 0, 4);
    out->updated_at = pe__sql_int(&r, 0, 5);
    out->tokens_valid_after = pe__sql_int(&r, 0, 6);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_user_revoke_tokens(pe_store *s, const char *did, int64_t before_ms, pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe__store_query(
            s, "UPDATE users SET tokens_valid_after = $2, updated_at = $3 WHERE did = $1",
            (pe__sql_arg[]){SQL_TEXT(did), SQL_INT(before_ms), SQL_INT(pe_store_now_ms())}, 3, &r,
            err) < 0)
        return pe_err_prefix(err, "revoke tokens of %s", did);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "user %s not found", did);
    return 0;
}

int pe_store_user_revocations(pe_store *s,
                              void (*fn)(const char *did, int64_t valid_after, void *ud), void *ud,
                              pe_err *err)
{
    pe__sql_res r = {0};

    if (pe__store_query(s, "SELECT did, tokens_valid_after FROM users WHERE tokens_valid_after > 0",
                        NULL, 0, &r, err) < 0)
        return pe_err_prefix(err, "list token revocations");
    for (size_t i = 0; i < r.nrows; i++) {
        cleanup_free char *did = pe__sql_dup(&r, i, 0);
        fn(did, pe__sql_int(&r, i, 1), ud);
    }
    pe__sql_res_clear(&r);
    return 0;
}

/* ---- sandboxes ---- */

static const char *const status_names[] = {"INITIALIZING", "RUNNING", "STOPPED", "FAILED"};

const char *pe_store_status_name(int status)
{
    if (status < 0 || (size_t)status >= PE_ARRAY_LEN(status_names))
        return NULL;
    return status_names[status];
}

int pe_store_status_parse(const char *name)
{
    for (size_t i = 0; name && i < PE_ARRAY_LEN(status_names); i++)
        if (strcmp(name, status_names[i]) == 0)
            return (int)i;
    return -1;
}

void pe_store_sandbox_clear(pe_store_sandbox *sb)
{
    const char **strs[] = {
        &sb->id,      &sb->owner_did,  &sb->name,        &sb->display_name,  &sb->description,
        &sb->base,    &sb->provider,   &sb->provider_id, &sb->status_reason, &sb->repo,
        &sb->topics,  &sb->logo,       &sb->readme,      &sb->uri,           &sb->public_key,
        &sb->backend, &sb->resumed_by, &sb->node};

    for (size_t i = 0; i < PE_ARRAY_LEN(strs); i++)
        free((char *)*strs[i]);
    memset(sb, 0, sizeof(*sb));
}

void pe_store_sandbox_list_free(pe_store_sandbox *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_sandbox_clear(&list[i]);
    free(list);
}

#define SANDBOX_COLS                                                                               \
    "id, owner_did, name, display_name, description, base, provider, provider_id, status, "        \
    "status_reason, repo, topics, logo, readme, uri, public_key, vcpus, memory, disk, "            \
    "keep_alive, idle_timeout, installs, created_at, updated_at, started_at, backend, node"
/* and what insert does not write (pe_store_sandbox_set_paused does) */
#define SANDBOX_SELECT "SELECT " SANDBOX_COLS ", paused, resumed_by, resumed_at"

static void row_to_sandbox(const pe__sql_res *r, size_t row, pe_store_sandbox *sb)
{
    const char **strs[] = {&sb->id,          &sb->owner_did, &sb->name,     &sb->display_name,
                           &sb->description, &sb->base,      &sb->provider, &sb->provider_id};
    const char **strs2[] = {&sb->status_reason, &sb->repo, &sb->topics,    &sb->logo,
                            &sb->readme,        &sb->uri,  &sb->public_key};
    int64_t *nums[] = {&sb->vcpus,        &sb->memory,   &sb->disk,       NULL,
                       &sb->idle_timeout, &sb->installs, &sb->created_at, &sb->updated_at,
                       &sb->started_at};
    size_t col = 0;

    memset(sb, 0, sizeof(*sb));
    for (size_t i = 0; i < PE_ARRAY_LEN(strs); i++)
        *strs[i] = pe__sql_dup(r, row, col++);
    sb->status = pe_store_status_parse(pe__sql_cell(r, row, col++));
    for (size_t i = 0; i < PE_ARRAY_LEN(strs2); i++)
        *strs2[i] = pe__sql_dup(r, row, col++);
    for (size_t i = 0; i < PE_ARRAY_LEN(nums); i++, col++) {
        if (nums[i] == NULL)
            sb->keep_alive = pe__sql_int(r, row, col) != 0;
        else
            *nums[i] = pe__sql_int(r, row, col);
    }
    sb->backend = pe__sql_dup(r, row, col++);
    sb->node = pe__sql_dup(r, row, col++);
    sb->paused = pe__sql_int(r, row, col++) != 0;
    sb->resumed_by = pe__sql_dup(r, row, col++);
    sb->resumed_at = pe__sql_int(r, row, col++);
}

static int check_sandbox_input(const pe_store_sandbox *sb, pe_err *err)
{
    if (sb->id == NULL || sb->name == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "sandbox id and name are required");
    if (pe_store_status_name(sb->status) == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "sandbox %s: invalid status %d", sb->id, sb->status);
    if (sb->vcpus < 0 || sb->memory < 0 || sb->disk < 0 || sb->idle_timeout < 0)
        return pe_err_set(err, PE_EINVAL, 0, "sandbox %s: negative resource limit", sb->id);
    return 0;
}

int pe_store_sandbox_insert(pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    int64_t now = pe_store_now_ms();
    int64_t created = sb->created_at ? sb->created_at : now;

    if (check_sandbox_input(sb, err) < 0)
        return pe_err_prefix(err, "insert sandbox");
    if (sb->owner_did == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "insert sandbox %s: owner is required", sb->id);
    if (pe__store_query(
            s,
            "INSERT INTO sandboxes (" SANDBOX_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, "
            "$26, $27)",
            (pe__sql_arg[]){SQL_TEXT(sb->id),
                            SQL_TEXT(sb->owner_did),
                            SQL_TEXT(sb->name),
                            SQL_TEXT(sb->display_name),
                            SQL_TEXT(sb->description),
                            SQL_TEXT(sb->base),
                            SQL_TEXT(sb->provider ? sb->provider : "cloudflare"),
                            SQL_TEXT(sb->provider_id),
                            SQL_TEXT(pe_store_status_name(sb->status)),
                            SQL_TEXT(sb->status_reason),
                            SQL_TEXT(sb->repo),
                            SQL_TEXT(sb->topics),
                            SQL_TEXT(sb->logo),
                            SQL_TEXT(sb->readme),
                            SQL_TEXT(sb->uri),
                            SQL_TEXT(sb->public_key),
                            SQL_INT_OR_NULL(sb->vcpus),
                            SQL_INT_OR_NULL(sb->memory),
                            SQL_INT_OR_NULL(sb->disk),
                            SQL_INT(sb->keep_alive ? 1 : 0),
                            SQL_INT(sb->idle_timeout),
                            SQL_INT(sb->installs),
                            SQL_INT(created),
                            SQL_INT(sb->updated_at ? sb->updated_at : created),
                            SQL_INT_OR_NULL(sb->started_at),
                            SQL_TEXT(sb->backend ? sb->backend : "local"),
                            SQL_TEXT(sb->node)},
            27, NULL, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "sandbox name %s is already taken", sb->name);
        if (err && err->code == PE_ENOENT)
            return pe_err_set(err, PE_ENOENT, 0, "insert sandbox %s: owner %s not found", sb->id,
                              sb->owner_did);
        return pe_err_prefix(err, "insert sandbox %s", sb->id);
    }
    return 0;
}

static int get_one_sandbox(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                           const char *what, pe_store_sandbox *out, pe_err *err)
{
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "get sandbox %s", what);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "sandbox %s not found", what);
    }
    row_to_sandbox(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_sandbox_get(pe_store *s, const char *id, pe_store_sandbox *out, pe_err *err)
{
    return get_one_sandbox(s, SANDBOX_SELECT " FROM sandboxes WHERE id = $1",
                           (pe__sql_arg[]){SQL_TEXT(id)}, 1, id, out, err);
}

int pe_store_sandbox_get_by_name(pe_store *s, const char *owner_did, const char *name,
                                 pe_store_sandbox *out, pe_err *err)
{
    return get_one_sandbox(s, SANDBOX_SELECT " FROM sandboxes WHERE owner_did = $1 AND name = $2",
                           (pe__sql_arg[]){SQL_TEXT(owner_did), SQL_TEXT(name)}, 2, name, out, err);
}

#define SANDBOX_LIST_MAX 1000

int pe_store_sandbox_list(pe_store *s, const char *owner_did, int64_t limit, int64_t offset,
                          pe_store_sandbox **out, size_t *n, int64_t *total, pe_err *err)
{
    pe__sql_res r = {0};
    pe__sql_arg args[3] = {SQL_INT(limit), SQL_INT(offset), SQL_TEXT(owner_did)};
    size_t nargs = owner_did ? 3 : 2;
    pe_store_sandbox *list;

    *out = NULL;
    *n = 0;
    if (limit <= 0 || limit > SANDBOX_LIST_MAX || offset < 0)
        return pe_err_set(err, PE_EINVAL, 0, "list sandboxes: limit must be 1..%d, offset >= 0",
                          SANDBOX_LIST_MAX);
    if (total) {
        if (pe__store_query(s,
                            owner_did ? "SELECT COUNT(*) FROM sandboxes WHERE owner_did = $1"
                                      : "SELECT COUNT(*) FROM sandboxes",
                            args + 2, nargs - 2, &r, err) < 0)
            return pe_err_prefix(err, "count sandboxes");
        *total = r.nrows ? pe__sql_int(&r, 0, 0) : 0;
        pe__sql_res_clear(&r);
    }
    if (pe__store_query(s,
                        owner_did
                            ? SANDBOX_SELECT " FROM sandboxes WHERE owner_did = $3 "
                                             "ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
                            : SANDBOX_SELECT " FROM sandboxes "
                                             "ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2",
                        args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "list sandboxes");
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_sandbox(&r, i, &list[i]);
    *n = r.nrows;
    *out = list;
    pe__sql_res_clear(&r);
    return 0;
}

/* After an UPDATE that touched nothing: tell a missing row from a failed
 * compare-and-set. */
static int explain_no_update(pe_store *s, const char *id, int expect, pe_err *err)
{
    pe__sql_res r = {0};
    int ret;

    if (pe__store_query(s, "SELECT status FROM sandboxes WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(id)}, 1, &r, err) < 0)
        return -1;
    if (r.nrows == 0)
        ret = pe_err_set(err, PE_ENOENT, 0, "sandbox %s not found", id);
    else
        ret = pe_err_set(err, PE_ESTATE, 0, "sandbox %s is %s, not %s", id, pe__sql_cell(&r, 0, 0),
                         pe_store_status_name(expect));
    pe__sql_res_clear(&r);
    return ret;
}

int pe_store_sandbox_set_status(pe_store *s, const char *id, int status, const char *reason,
                                int expect, pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe_store_status_name(status) == NULL || (expect >= 0 && !pe_store_status_name(expect)))
        return pe_err_set(err, PE_EINVAL, 0, "set status of %s: invalid status", id);
    if (pe__store_query(s,
                        "UPDATE sandboxes SET status = $2, status_reason = $3, updated_at = $4, "
                        "started_at = CASE WHEN $2 = 'RUNNING' THEN $4 ELSE started_at END "
                        "WHERE id = $1 AND ($5 = '' OR status = $5)",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(pe_store_status_name(status)),
                                        SQL_TEXT(reason), SQL_INT(pe_store_now_ms()),
                                        SQL_TEXT(expect >= 0 ? pe_store_status_name(expect) : "")},
                        5, &r, err) < 0)
        return pe_err_prefix(err, "set status of %s", id);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return explain_no_update(s, id, expect, err);
    return 0;
}

static int update_changed_one(pe_store *s, const char *what, const char *id, const char *sql,
                              const pe__sql_arg *args, size_t nargs, pe_err *err)
{
    pe__sql_res r = {0};
    int64_t changes;

    if (pe__store_query(s, sql, args, nargs, &r, err) < 0)
        return pe_err_prefix(err, "%s %s", what, id);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "%s: sandbox %s not found", what, id);
    return 0;
}

int pe_store_sandbox_claim_node(pe_store *s, const char *id, const char *node, pe_err *err)
{
    pe__sql_res r = {0};
    int ret;

    if (node == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "claim %s: node is required", id);
    if (pe__store_query(s, "UPDATE sandboxes SET node = $2 WHERE id = $1 AND node IS NULL",
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(node)}, 2, &r, err) < 0)
        return pe_err_prefix(err, "claim %s", id);
    pe__sql_res_clear(&r);
    if (pe__store_query(s, "SELECT node FROM sandboxes WHERE id = $1",
                        (pe__sql_arg[]){SQL_TEXT(id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "claim %s", id);
    if (r.nrows == 0)
        ret = pe_err_set(err, PE_ENOENT, 0, "claim: sandbox %s not found", id);
    else
        ret = pe__sql_cell(&r, 0, 0) && strcmp(pe__sql_cell(&r, 0, 0), node) == 0;
    pe__sql_res_clear(&r);
    return ret;
}

int pe_store_sandbox_set_paused(pe_store *s, const char *id, bool paused, const char *resumed_by,
                                int64_t resumed_at, pe_err *err)
{
    /* Not updated_at: the row's status stays RUNNING, as its description. */
    return update_changed_one(
        s, "set paused of", id,
        "UPDATE sandboxes SET paused = $2, resumed_by = COALESCE($3, resumed_by), "
        "resumed_at = CASE WHEN $5 = 1 THEN $4 ELSE resumed_at END WHERE id = $1",
        (pe__sql_arg[]){SQL_TEXT(id), SQL_INT(paused ? 1 : 0), SQL_TEXT(resumed_by),
                        SQL_INT(resumed_at), SQL_INT(resumed_by ? 1 : 0)},
        5, err);
}

int pe_store_sandbox_set_provider(pe_store *s, const char *id, const char *provider,
                                  const char *provider_id, pe_err *err)
{
    if (provider == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "set provider of %s: provider is required", id);
    return update_changed_one(
        s, "set provider of", id,
        "UPDATE sandboxes SET provider = $2, provider_id = $3, updated_at = $4 WHERE id = $1",
        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(provider), SQL_TEXT(provider_id),
                        SQL_INT(pe_store_now_ms())},
        4, err);
}

int pe_store_sandbox_set_keep_alive(pe_store *s, const char *id, bool keep_alive, pe_err *err)
{
    return update_changed_one(
        s, "set keepAlive of", id,
        "UPDATE sandboxes SET keep_alive = $2, updated_at = $3 WHERE id = $1",
        (pe__sql_arg[]){SQL_TEXT(id), SQL_INT(keep_alive ? 1 : 0), SQL_INT(pe_store_now_ms())}, 3,
        err);
}

int pe_store_sandbox_update(pe_store *s, const pe_store_sandbox *sb, pe_err *err)
{
    if (check_sandbox_input(sb, err) < 0)
        return pe_err_prefix(err, "update sandbox");
    if (update_changed_one(
            s, "update", sb->id,
            "UPDATE sandboxes SET name = $2, display_name = $3, description = $4, base = $5, "
            "repo = $6, topics = $7, logo = $8, readme = $9, uri = $10, vcpus = $11, "
            "memory = $12, disk = $13, keep_alive = $14, idle_timeout = $15, updated_at = $16 "
            "WHERE id = $1",
            (pe__sql_arg[]){SQL_TEXT(sb->id), SQL_TEXT(sb->name), SQL_TEXT(sb->display_name),
                            SQL_TEXT(sb->description), SQL_TEXT(sb->base), SQL_TEXT(sb->repo),
                            SQL_TEXT(sb->topics), SQL_TEXT(sb->logo), SQL_TEXT(sb->readme),
                            SQL_TEXT(sb->uri), SQL_INT_OR_NULL(sb->vcpus),
                            SQL_INT_OR_NULL(sb->memory), SQL_INT_OR_NULL(sb->disk),
                            SQL_INT(sb->keep_alive ? 1 : 0), SQL_INT(sb->idle_timeout),
                            SQL_INT(pe_store_now_ms())},
            16, err) < 0) {
        if (err && err->code == PE_EEXIST)
            return pe_err_set(err, PE_EEXIST, 0, "sandbox name %s is already taken", sb->name);
        return -1;
    }
    return 0;
}

int pe_store_sandbox_delete(pe_store *s, const char *id, pe_err *err)
{
    return update_changed_one(s, "delete", id, "DELETE FROM sandboxes WHERE id = $1",
                              (pe__sql_arg[]){SQL_TEXT(id)}, 1, err);
}

/* ---- variables, secrets, files ---- */

/* Identifiers only: these are the sole strings formatted into SQL. */
static const struct kv_table {
    const char *table;
    const char *key;
    const char *value;
    const char *id_prefix;
    const char *what;
} kv_tables[] = {
    [PE_STORE_VARIABLE] = {"variables", "name", "value", "var_", "variable"},
    [PE_STORE_SECRET] = {"secrets", "name", "value", "secret_", "secret"},
    [PE_STORE_FILE] = {"files", "path", "content", "file_", "file"},
};

static const struct kv_table *kv_table(int kind, pe_err *err)
{
    if (kind < 0 || (size_t)kind >= PE_ARRAY_LEN(kv_tables)) {
        pe_err_set(err, PE_EINVAL, 0, "unknown kind of sandbox value %d", kind);
        return NULL;
    }
    return &kv_tables[kind];
}

void pe_store_kv_clear(pe_store_kv *kv)
{
    if (kv == NULL)
        return;
    free((char *)kv->id);
    free((char *)kv->sandbox_id);
    free((char *)kv->key);
    free((char *)kv->value);
    memset(kv, 0, sizeof(*kv));
}

void pe_store_kv_list_free(pe_store_kv *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        pe_store_kv_clear(&list[i]);
    free(list);
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

int pe_store_kv_put(pe_store *s, int kind, const char *sandbox_id, const char *key,
                    const char *value, pe_err *err)
{
    const struct kv_table *t = kv_table(kind, err);
    cleanup_free char *id = NULL;
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};
    int64_t changes;

    if (t == NULL)
        return -1;
    if (key == NULL || value == NULL)
        return pe_err_set(err, PE_EINVAL, 0, "put %s: key and value are required", t->what);
    id = pe_store_new_id(t->id_prefix);
    /* INSERT ... SELECT from sandboxes: an unknown sandbox inserts nothing
     * (PE_ENOENT) instead of tripping the foreign key. */
    sql = pe_xasprintf("INSERT INTO %s (id, sandbox_id, %s, %s, created_at, updated_at) "
                       "SELECT $1, id, $3, $4, CAST($5 AS BIGINT), CAST($5 AS BIGINT) "
                       "FROM sandboxes WHERE id = $2 "
                       "ON CONFLICT (sandbox_id, %s) DO UPDATE SET %s = excluded.%s, "
                       "updated_at = excluded.updated_at",
                       t->table, t->key, t->value, t->key, t->value, t->value);
    if (pe__store_query(s, sql,
                        (pe__sql_arg[]){SQL_TEXT(id), SQL_TEXT(sandbox_id), SQL_TEXT(key),
                                        SQL_TEXT(value), SQL_INT(pe_store_now_ms())},
                        5, &r, err) < 0)
        return pe_err_prefix(err, "put %s %s of %s", t->what, key, sandbox_id);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "put %s %s: sandbox %s not found", t->what, key,
                          sandbox_id);
    return 0;
}

int pe_store_kv_get(pe_store *s, int kind, const char *sandbox_id, const char *key,
                    pe_store_kv *out, pe_err *err)
{
    const struct kv_table *t = kv_table(kind, err);
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};

    memset(out, 0, sizeof(*out));
    if (t == NULL)
        return -1;
    sql = pe_xasprintf("SELECT id, sandbox_id, %s, %s, created_at, updated_at FROM %s "
                       "WHERE sandbox_id = $1 AND %s = $2",
                       t->key, t->value, t->table, t->key);
    if (pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(key)}, 2, &r, err) <
        0)
        return pe_err_prefix(err, "get %s %s of %s", t->what, key, sandbox_id);
    if (r.nrows == 0) {
        pe__sql_res_clear(&r);
        return pe_err_set(err, PE_ENOENT, 0, "%s %s of %s not found", t->what, key, sandbox_id);
    }
    row_to_kv(&r, 0, out);
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_kv_list(pe_store *s, int kind, const char *sandbox_id, pe_store_kv **out, size_t *n,
                     pe_err *err)
{
    const struct kv_table *t = kv_table(kind, err);
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};
    pe_store_kv *list;

    *out = NULL;
    *n = 0;
    if (t == NULL)
        return -1;
    sql = pe_xasprintf("SELECT id, sandbox_id, %s, %s, created_at, updated_at FROM %s "
                       "WHERE sandbox_id = $1 ORDER BY %s",
                       t->key, t->value, t->table, t->key);
    if (pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(sandbox_id)}, 1, &r, err) < 0)
        return pe_err_prefix(err, "list %ss of %s", t->what, sandbox_id);
    list = pe_xcalloc(r.nrows ? r.nrows : 1, sizeof(*list));
    for (size_t i = 0; i < r.nrows; i++)
        row_to_kv(&r, i, &list[i]);
    *out = list;
    *n = r.nrows;
    pe__sql_res_clear(&r);
    return 0;
}

int pe_store_kv_delete(pe_store *s, int kind, const char *sandbox_id, const char *key, pe_err *err)
{
    const struct kv_table *t = kv_table(kind, err);
    cleanup_free char *sql = NULL;
    pe__sql_res r = {0};
    int64_t changes;

    if (t == NULL)
        return -1;
    sql = pe_xasprintf("DELETE FROM %s WHERE sandbox_id = $1 AND %s = $2", t->table, t->key);
    if (pe__store_query(s, sql, (pe__sql_arg[]){SQL_TEXT(sandbox_id), SQL_TEXT(key)}, 2, &r, err) <
        0)
        return pe_err_prefix(err, "delete %s %s of %s", t->what, key, sandbox_id);
    changes = r.changes;
    pe__sql_res_clear(&r);
    if (changes == 0)
        return pe_err_set(err, PE_ENOENT, 0, "%s %s of %s not found", t->what, key, sandbox_id);
    return 0;
}
