/* Between the store's dispatch (store.c) and its backends.
 *
 * The typed functions of pocketenv/store.h are written once, in SQL both
 * databases accept: placeholders are $1..$N (the SQLite backend rewrites
 * them to ?N), types are TEXT, INTEGER and BIGINT, booleans are 0/1
 * integers. A backend only runs parameterised statements and hands back
 * every cell as text, so values never reach the SQL text. */
#ifndef PE_STORE_INTERNAL_H
#define PE_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pocketenv/err.h"
#include "pocketenv/store.h"

enum { PE__SQL_NULL = 0, PE__SQL_TEXT, PE__SQL_INT };

typedef struct pe__sql_arg {
    int type;
    const char *text;
    int64_t i;
} pe__sql_arg;

/* A NULL string binds SQL NULL. */
#define SQL_TEXT(s) ((pe__sql_arg){(s) ? PE__SQL_TEXT : PE__SQL_NULL, (s), 0})
#define SQL_INT(v) ((pe__sql_arg){PE__SQL_INT, NULL, (int64_t)(v)})
/* 0 binds SQL NULL: for optional numbers where 0 means unset. */
#define SQL_INT_OR_NULL(v) ((pe__sql_arg){(v) ? PE__SQL_INT : PE__SQL_NULL, NULL, (int64_t)(v)})

/* Rows of a query, materialised: cells[row * ncols + col], NULL for SQL
 * NULL. changes counts rows an INSERT/UPDATE/DELETE touched. */
typedef struct pe__sql_res {
    size_t nrows;
    size_t ncols;
    char **cells;
    int64_t changes;
} pe__sql_res;

void pe__sql_res_clear(pe__sql_res *r);
static inline const char *pe__sql_cell(const pe__sql_res *r, size_t row, size_t col)
{
    return r->cells[row * r->ncols + col];
}
/* Integer of a cell; NULL or junk reads as 0. */
int64_t pe__sql_int(const pe__sql_res *r, size_t row, size_t col);
/* malloc'd copy of a cell, NULL for SQL NULL. */
char *pe__sql_dup(const pe__sql_res *r, size_t row, size_t col);

struct pe__store_ops {
    const char *name;
    /* One statement with parameters. Constraint violations map to PE_EEXIST
     * (unique), PE_ENOENT (foreign key), PE_EINVAL (check, not null). */
    int (*query)(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                 pe__sql_res *res, pe_err *err);
    /* Several statements without parameters (migrations). */
    int (*exec_script)(pe_store *s, const char *sql, pe_err *err);
    /* Start a transaction that holds the write lock from its first
     * statement (SQLite BEGIN IMMEDIATE), then serialize migrators
     * (PostgreSQL advisory lock, a no-op for SQLite). */
    int (*begin_write)(pe_store *s, pe_err *err);
    int (*lock_migrations)(pe_store *s, pe_err *err);
    void (*close)(pe_store *s);
};

struct pe_store {
    const struct pe__store_ops *ops;
    void *impl;
};

/* Backends: fill s on success. */
int pe__store_sqlite_open(pe_store *s, const char *path, pe_err *err);
int pe__store_pg_open(pe_store *s, const char *url, pe_err *err);

/* Shorthand for s->ops->query with a compound-literal argument list. */
int pe__store_query(pe_store *s, const char *sql, const pe__sql_arg *args, size_t nargs,
                    pe__sql_res *res, pe_err *err);

/* Migrations: version i + 1 is migrations[i]; the list only grows. */
const char *const *pe__store_migrations(size_t *n);
int pe__store_migrate(pe_store *s, pe_err *err);

/* Tables whose rows belong to a sandbox (column sandbox_id, ON DELETE
 * CASCADE): the test checks the schema has no other. NULL-terminated. */
extern const char *const pe__store_sandbox_children[];

#endif
