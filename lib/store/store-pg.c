/* PostgreSQL backend of the store: one libpq connection per pe_store.
 *
 * Every statement goes through PQexecParams with text parameters and text
 * results; values never enter the SQL string, and parameter types are
 * inferred by the server from the columns they meet (store.c casts where a
 * context gives none). Migrations are serialised across processes with a
 * transaction-scoped advisory lock, so concurrent daemons starting on one
 * database apply each version once.
 *
 * Errors report PostgreSQL's primary message only: the DETAIL line of a
 * constraint violation quotes the offending values, which may be sealed
 * secrets.
 *
 * A connection that breaks stays broken: queries fail with PE_ESYS and the
 * owner reopens the store. Reconnecting silently could run the rest of a
 * transaction outside it.
 *
 * Threading: one pe_store per thread (pocketenv/store.h). */
#include <stdio.h>
#include <string.h>
#include <libpq-fe.h>

#include "core/util.h"
#include "store-internal.h"

#define PG_MAX_ARGS 32
/* Any constant works as long as it is the same everywhere: "pocketen". */
#define MIGRATION_LOCK_KEY "8099304990573895022"

static PGconn *conn_of(pe_store *s)
{
    return s->impl;
}

static void quiet_notices(void *arg, const char *message)
{
    /* NOTICEs ("relation already exists, skipping") are not errors. */
}

/* Copy of msg without its trailing newline, into buf. */
static const char *one_line(const char *msg, char *buf, size_t size)
{
    size_t len;

    snprintf(buf, size, "%s", msg ? msg : "unknown error");
    len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    return buf;
}

static int fail(pe_store *s, PGresult *res, const char *what, pe_err *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char line[512];
    int code = PE_ESYS;

    if (state && strcmp(state, "23505") == 0)
        code = PE_EEXIST; /* unique_violation */
    else if (state && strcmp(state, "23503") == 0)
        code = PE_ENOENT; /* foreign_key_violation */
    else if (state && (strcmp(state, "23514") == 0 || strcmp(state, "23502") == 0))
        code = PE_EINVAL; /* check_violation, not_null_violation */
    one_line(primary ? primary : PQerrorMessage(conn_of(s)), line, sizeof(line));
    return pe_err_set(err, code, 0, "postgres %s: %s%s%s", what, line, state ? " " : "",
                      state ? state : "");
}

static int copy_result(PGresult *res, pe__sql_res *out)
{
    const char *tuples = PQcmdTuples(res);
    size_t nrows = (size_t)PQntuples(res), ncols = (size_t)PQnfields(res);

    out->changes = 0;
    for (const char *p = tuples; *p >= '0' && *p <= '9'; p++)
        out->changes = out->changes * 10 + (*p - '0');
    if (PQresultStatus(res) != PGRES_TUPLES_OK || ncols == 0)
        return 0;
    out->nrows = nrows;
    out->ncols = ncols;
    out->cells = pe_xcalloc(nrows ? nrows * ncols : 1, sizeof(char *));
    for (size_t r = 0; r < nrows; r++)
        for (size_t c = 0; c < ncols; c++)
            if (!PQgetisnull(res, (int)r, (int)c))
                out->cells[r * ncols + c] = pe_xstrdup(PQgetvalue(res, (int)r, (int)c));
    return 0;
}

static int pg_query(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                    pe__sql_res *out, pe_err *err)
{
    const char *values[PG_MAX_ARGS];
    char nums[PG_MAX_ARGS][24];
    PGresult *res;
    ExecStatusType st;

    memset(out, 0, sizeof(*out));
    if (nargs > PG_MAX_ARGS)
        return pe_err_set(err, PE_EINVAL, 0, "postgres: %zu parameters, at most %d", nargs,
                          PG_MAX_ARGS);
    for (size_t i = 0; i < nargs; i++) {
        switch (args[i].type) {
        case PE__SQL_TEXT:
            values[i] = args[i].text;
            break;
        case PE__SQL_INT:
            snprintf(nums[i], sizeof(nums[i]), "%lld", (long long)args[i].i);
            values[i] = nums[i];
            break;
        default:
            values[i] = NULL;
            break;
        }
    }
    res = PQexecParams(conn_of(s), sql, (int)nargs, NULL, values, NULL, NULL, 0);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fail(s, res, "query", err);
        PQclear(res);
        return -1;
    }
    copy_result(res, out);
    PQclear(res);
    return 0;
}

static int pg_exec_script(pe_store *s, const char *sql, pe_err *err)
{
    PGresult *res = PQexec(conn_of(s), sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fail(s, res, "exec", err);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

static int pg_begin_write(pe_store *s, pe_err *err)
{
    return pg_exec_script(s, "BEGIN", err);
}

static int pg_lock_migrations(pe_store *s, pe_err *err)
{
    /* Released at COMMIT or ROLLBACK; waiters then see the committed
     * schema_migrations rows (READ COMMITTED takes a new snapshot per
     * statement). */
    return pg_exec_script(s, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", err);
}

static void pg_close(pe_store *s)
{
    PQfinish(conn_of(s));
    s->impl = NULL;
}

static const struct pe__store_ops pg_ops = {
    .name = "postgres",
    .query = pg_query,
    .exec_script = pg_exec_script,
    .begin_write = pg_begin_write,
    .lock_migrations = pg_lock_migrations,
    .close = pg_close,
};

int pe__store_pg_open(pe_store *s, const char *url, pe_err *err)
{
    PGconn *conn = PQconnectdb(url);
    char line[512];

    if (conn == NULL)
        return pe_err_set(err, PE_ESYS, 0, "open store: libpq could not allocate a connection");
    if (PQstatus(conn) != CONNECTION_OK) {
        /* libpq's message names the host or socket, never the password. */
        pe_err_set(err, PE_ESYS, 0, "open store: %s",
                   one_line(PQerrorMessage(conn), line, sizeof(line)));
        PQfinish(conn);
        return -1;
    }
    PQsetNoticeProcessor(conn, quiet_notices, NULL);
    s->ops = &pg_ops;
    s->impl = conn;
    return 0;
}
