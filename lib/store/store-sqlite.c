/* SQLite backend of the store: one sqlite3 connection per pe_store.
 *
 * The database runs in WAL mode so readers on other handles (other worker
 * threads, other processes) never block on a writer, with synchronous=NORMAL
 * (a crash may lose the last transactions, never corrupt the file) and
 * foreign keys on (SQLite leaves them off by default, and the cascades are
 * what keeps deleted sandboxes from leaving rows behind). Lock waits go
 * through busy_timeout rather than failing with SQLITE_BUSY.
 *
 * The file is created 0600 before SQLite opens it: it holds sealed secrets,
 * and SQLite gives its -wal and -shm files the database file's mode.
 *
 * Statements are prepared once per connection and kept (a small cache
 * keyed by the SQL text, SQLITE_PREPARE_PERSISTENT): the daemon runs the
 * same few queries for every request, and preparing one costs more than
 * running it.
 *
 * Threading: the connection is opened NOMUTEX; a pe_store is used by one
 * thread at a time (pocketenv/store.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>

#include "core/util.h"
#include "store-internal.h"

#define BUSY_TIMEOUT_MS 10000
#define STMT_CACHE 48

typedef struct sq_conn {
    sqlite3 *db;
    struct {
        char *sql; /* as given (before rewrite_params) */
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    unsigned next; /* slot to reuse when full (round robin) */
} sq_conn;

static sqlite3 *db_of(pe_store *s)
{
    return ((sq_conn *)s->impl)->db;
}

static int fail(sqlite3 *db, int rc, const char *what, pe_err *err)
{
    int code = PE_ESYS;

    switch (sqlite3_extended_errcode(db)) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        code = PE_EEXIST;
        break;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        code = PE_ENOENT;
        break;
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
        code = PE_EINVAL;
        break;
    default:
        break;
    }
    /* sqlite3_errmsg names tables and columns, never bound values. */
    return pe_err_set(err, code, 0, "sqlite %s: %s (%d)", what, sqlite3_errmsg(db), rc);
}

/* $N placeholders become ?N; everything else is copied, and quoted
 * literals are skipped so a '$' inside one is left alone. */
static char *rewrite_params(const char *sql)
{
    char *out = pe_xstrdup(sql);
    char quote = 0;

    for (char *p = out; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            *p = '?';
        }
    }
    return out;
}

static int bind_args(sqlite3_stmt *st, const pe__sql_arg *args, size_t nargs)
{
    for (size_t i = 0; i < nargs; i++) {
        int idx = (int)i + 1, rc;

        switch (args[i].type) {
        case PE__SQL_TEXT:
            rc = sqlite3_bind_text(st, idx, args[i].text, -1, SQLITE_STATIC);
            break;
        case PE__SQL_INT:
            rc = sqlite3_bind_int64(st, idx, args[i].i);
            break;
        default:
            rc = sqlite3_bind_null(st, idx);
            break;
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void append_row(sqlite3_stmt *st, pe__sql_res *res, size_t *cap)
{
    size_t base = res->nrows * res->ncols;

    if (res->ncols == 0)
        return;
    if (base + res->ncols > *cap) {
        *cap = *cap ? *cap * 2 : res->ncols * 8;
        while (*cap < base + res->ncols)
            *cap *= 2;
        res->cells = pe_xrealloc(res->cells, *cap * sizeof(char *));
    }
    for (size_t c = 0; c < res->ncols; c++) {
        char *cell = NULL;

        if (sqlite3_column_type(st, (int)c) != SQLITE_NULL) {
            const unsigned char *t = sqlite3_column_text(st, (int)c);
            size_t len = (size_t)sqlite3_column_bytes(st, (int)c);

            cell = pe_xmalloc(len + 1);
            memcpy(cell, t ? (const void *)t : "", len);
            cell[len] = '\0';
        }
        res->cells[base + c] = cell;
    }
    res->nrows++;
}

/* The prepared statement for sql, from the cache or made now. */
static int prepare(sq_conn *c, const char *sql, sqlite3_stmt **out, pe_err *err)
{
    cleanup_free char *text = NULL;
    unsigned slot;
    int rc;

    for (unsigned i = 0; i < STMT_CACHE && c->cache[i].sql; i++) {
        if (strcmp(c->cache[i].sql, sql) == 0) {
            *out = c->cache[i].st;
            return 0;
        }
    }
    text = rewrite_params(sql);
    rc = sqlite3_prepare_v3(c->db, text, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);
    if (rc != SQLITE_OK)
        return fail(c->db, rc, "prepare", err);
    slot = c->next;
    c->next = (c->next + 1) % STMT_CACHE;
    if (c->cache[slot].sql) {
        free(c->cache[slot].sql);
        sqlite3_finalize(c->cache[slot].st);
    }
    c->cache[slot].sql = pe_xstrdup(sql);
    c->cache[slot].st = *out;
    return 0;
}

static int sqlite_query(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                        pe__sql_res *res, pe_err *err)
{
    sq_conn *c = s->impl;
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int rc, ret = 0;

    memset(res, 0, sizeof(*res));
    if (prepare(c, sql, &st, err) < 0)
        return -1;
    rc = bind_args(st, args, nargs);
    if (rc != SQLITE_OK) {
        ret = fail(c->db, rc, "bind", err);
        goto out;
    }
    res->ncols = (size_t)sqlite3_column_count(st);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        append_row(st, res, &cap);
    if (rc != SQLITE_DONE) {
        ret = fail(c->db, rc, "step", err);
        pe__sql_res_clear(res);
        goto out;
    }
    res->changes = sqlite3_stmt_readonly(st) ? 0 : sqlite3_changes64(c->db);
out:
    /* Ready for the next use; bound text is SQLITE_STATIC: drop it now. */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

static int sqlite_exec_script(pe_store *s, const char *sql, pe_err *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db_of(s), sql, NULL, NULL, &msg);

    if (rc != SQLITE_OK) {
        pe_err_set(err, PE_ESYS, 0, "sqlite exec: %s (%d)", msg ? msg : sqlite3_errstr(rc), rc);
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int sqlite_begin_write(pe_store *s, pe_err *err)
{
    /* IMMEDIATE takes the write lock now (waiting through busy_timeout),
     * so two migrators cannot both read version N and both apply N+1. */
    return sqlite_exec_script(s, "BEGIN IMMEDIATE", err);
}

static int sqlite_lock_migrations(pe_store *s, pe_err *err)
{
    return 0; /* BEGIN IMMEDIATE already serialises writers */
}

static void sqlite_close(pe_store *s)
{
    sq_conn *c = s->impl;

    for (unsigned i = 0; i < STMT_CACHE; i++) {
        free(c->cache[i].sql);
        sqlite3_finalize(c->cache[i].st);
    }
    sqlite3_close_v2(c->db);
    free(c);
    s->impl = NULL;
}

static const struct pe__store_ops sqlite_ops = {
    .name = "sqlite",
    .query = sqlite_query,
    .exec_script = sqlite_exec_script,
    .begin_write = sqlite_begin_write,
    .lock_migrations = sqlite_lock_migrations,
    .close = sqlite_close,
};

/* Create the file 0600 if it is not there. An existing one is never
 * opened here: closing any descriptor of a file drops every POSIX lock
 * this process holds on it, so opening and closing it while another
 * connection of ours holds SQLite's locks would let a second process
 * checkpoint and delete the WAL under that connection (disk I/O errors). */
static int create_private(const char *path, pe_err *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat st;

    if (fd >= 0) {
        close(fd); /* new: nobody holds a lock on it yet */
        return 0;
    }
    if (errno != EEXIST)
        return pe_err_sys(err, "open store %s", path);
    if (lstat(path, &st) < 0)
        return pe_err_sys(err, "open store %s", path);
    if (!S_ISREG(st.st_mode))
        return pe_err_set(err, PE_EINVAL, 0, "open store %s: not a regular file", path);
    return 0;
}

/* Switching a new file to WAL needs an exclusive lock, and SQLite answers
 * SQLITE_BUSY at once, without the busy handler, when two connections
 * opening the same fresh file would otherwise deadlock on it. So retry
 * until the busy timeout has passed. */
static int set_wal(sqlite3 *db, pe_err *err)
{
    int64_t deadline = pe_monotonic_ms() + BUSY_TIMEOUT_MS;
    unsigned delay_us = 1000;

    for (;;) {
        char *msg = NULL;
        int rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, &msg);

        if (rc == SQLITE_OK)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY || pe_monotonic_ms() >= deadline) {
            pe_err_set(err, PE_ESYS, 0, "sqlite journal_mode: %s (%d)",
                       msg ? msg : sqlite3_errstr(rc), rc);
            sqlite3_free(msg);
            return -1;
        }
        sqlite3_free(msg);
        usleep(delay_us);
        if (delay_us < 50000)
            delay_us *= 2;
    }
}

int pe__store_sqlite_open(pe_store *s, const char *path, pe_err *err)
{
    sqlite3 *db = NULL;
    int rc;

    if (*path == '\0')
        return pe_err_set(err, PE_EINVAL, 0, "open store: empty SQLite path");
    if (strcmp(path, ":memory:") != 0 && create_private(path, err) < 0)
        return -1;
    rc = sqlite3_open_v2(path, &db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        pe_err_set(err, PE_ESYS, 0, "open store %s: %s", path,
                   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return -1;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    s->ops = &sqlite_ops;
    s->impl = pe_xcalloc(1, sizeof(sq_conn));
    ((sq_conn *)s->impl)->db = db;
    if (set_wal(db, err) < 0 ||
        sqlite_exec_script(s, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", err) < 0) {
        sqlite_close(s);
        return pe_err_prefix(err, "open store %s", path);
    }
    return 0;
}
